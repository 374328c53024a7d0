"""Micro-benchmarks of the query-path choices in the default pipeline, each against the
alternative it replaced, on one Strecha image; pycolmap's CPU SIFT with and without the
upsampled first octave; and XFeat batched extraction.

    python benchmarks/query_parts.py --image ../shared/data/strecha/fountain-P11/seq1/0001.jpg \
        --batch-images data/synthetic-7scenes-seed0/seq-01

Prints the median milliseconds of 10 runs of each.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import cv2
import numpy as np
import pycolmap
import torch
from PIL import Image

from reloc.datasets.base import read_image
from reloc.features.base import prepare_image
from reloc.features.extractors import ExtractorConfig, XFeatExtractor, stretch_contrast
from reloc.matching.mnn import MutualNNConfig, mutual_nn
from reloc.pipeline.memory import keep_freed_memory
from reloc.retrieval.vlad import vlad


def median_ms(function, repeats: int = 10) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def pycolmap_sift(first_octave: int) -> pycolmap.FeatureExtractor:
    """pycolmap's CPU SIFT keeping 3000 features, COLMAP's default peak threshold (0.02 / 3, as
    OpenCV's contrast 0.02 over 3 layers) and ``first_octave`` (-1: the image doubled first)."""
    options = pycolmap.FeatureExtractionOptions()
    options.num_threads = cv2.getNumberOfCPUs()
    options.max_image_size = 8192
    options.sift.max_num_features = 3000
    options.sift.first_octave = first_octave
    options.sift.peak_threshold = 0.02 / 3
    return pycolmap.FeatureExtractor.create(options, device=pycolmap.Device.cpu)


def percentile_stretch(gray: np.ndarray) -> np.ndarray:
    low, high = np.percentile(gray, (1, 99))
    return np.clip((gray.astype(np.float32) - low) * (255.0 / (high - low)), 0, 255).astype(np.uint8)


def torch_mutual_nn(descriptors0: np.ndarray, descriptors1: np.ndarray) -> torch.Tensor:
    similarity = torch.from_numpy(descriptors0) @ torch.from_numpy(descriptors1).T
    top = similarity.topk(2, dim=1)
    return (similarity.argmax(dim=0)[top.indices[:, 0]] == torch.arange(len(descriptors0))) & (top.values[:, 0] > 0)


def vlad_add_at(descriptors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """VLAD's residual sums per word as ``reloc.retrieval.vlad`` had them, by np.add.at."""
    assignment = np.argmax(descriptors @ centroids.T, axis=1)
    residuals = np.zeros_like(centroids)
    np.add.at(residuals, assignment, descriptors - centroids[assignment])
    return residuals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument(
        "--batch-images", type=Path, required=True, help="folder of same-size images for the batching figure"
    )
    args = parser.parse_args()
    keep_freed_memory()  # as mapping and localization do (BENCHMARKS.md: the malloc change)
    rows = [
        ("decode, PIL", median_ms(lambda: np.asarray(Image.open(args.image).convert("RGB")))),
        ("decode, OpenCV (reloc)", median_ms(lambda: read_image(args.image))),
    ]
    image, _ = prepare_image(args.image, 1024)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    rows += [
        ("contrast stretch, np.percentile", median_ms(lambda: percentile_stretch(gray))),
        ("contrast stretch, histogram (reloc)", median_ms(lambda: stretch_contrast(gray))),
    ]
    keypoints = cv2.SIFT_create(nfeatures=3000, contrastThreshold=0.02).detect(stretch_contrast(gray), None)
    rows += [
        ("keypoints to array, Python loop", median_ms(lambda: np.array([k.pt for k in keypoints]))),
        ("keypoints to array, cv2.KeyPoint_convert (reloc)", median_ms(lambda: cv2.KeyPoint_convert(keypoints))),
    ]
    rng = np.random.default_rng(0)
    descriptors0, descriptors1 = (rng.normal(size=(n, 128)).astype(np.float32) for n in (3000, 1500))
    descriptors0 /= np.linalg.norm(descriptors0, axis=1, keepdims=True)
    descriptors1 /= np.linalg.norm(descriptors1, axis=1, keepdims=True)
    rows += [
        ("mutual NN 3000 x 1500, torch argmax/topk", median_ms(lambda: torch_mutual_nn(descriptors0, descriptors1))),
        (
            "mutual NN 3000 x 1500, numpy max reductions (reloc)",
            median_ms(lambda: mutual_nn(descriptors0, descriptors1, MutualNNConfig(ratio=0.8))),
        ),
    ]
    square = rng.normal(size=(3000, 128)).astype(np.float32)
    rows += [
        (
            "similarity product 3000 x 3000 x 128, torch",
            median_ms(lambda: torch.from_numpy(descriptors0) @ torch.from_numpy(square).T),
        ),
        ("similarity product 3000 x 3000 x 128, numpy (reloc)", median_ms(lambda: descriptors0 @ square.T)),
    ]
    centroids = rng.normal(size=(256, 128)).astype(np.float32)
    rows += [
        ("VLAD 3000 descriptors, 256 words, np.add.at", median_ms(lambda: vlad_add_at(descriptors0, centroids))),
        ("VLAD 3000 descriptors, 256 words, sorted reduceat (reloc)", median_ms(lambda: vlad(descriptors0, centroids))),
    ]
    stretched = stretch_contrast(gray)
    sift = cv2.SIFT_create(nfeatures=3000, contrastThreshold=0.02)
    kept = sift.detect(stretched, None)
    rows += [
        ("SIFT 1024 px: detect and compute (reloc)", median_ms(lambda: sift.detectAndCompute(stretched, None))),
        ("SIFT 1024 px: detect only", median_ms(lambda: sift.detect(stretched, None))),
        (
            "SIFT 1024 px: compute 3000 given keypoints (pyramid built again)",
            median_ms(lambda: sift.compute(stretched, kept)),
        ),
    ]
    for threads in (1, 2):
        cv2.setNumThreads(threads)
        rows.append(
            (
                f"SIFT 1024 px, detect and compute, {threads} OpenCV thread(s)",
                median_ms(lambda: sift.detectAndCompute(stretched, None)),
            )
        )
    cv2.setNumThreads(-1)
    native = cv2.cvtColor(read_image(args.image), cv2.COLOR_RGB2GRAY)
    for name, pixels, first_octave in (
        ("1024 px, first octave doubled", gray, -1),
        ("1024 px, no upsampling", gray, 0),
        (f"{max(native.shape)} px (the file's), no upsampling", native, 0),
    ):
        run = functools.partial(pycolmap_sift(first_octave).extract, pycolmap.Bitmap.from_array(pixels))
        rows.append((f"SIFT, pycolmap CPU, {name}", median_ms(run, 3)))
    paths = sorted(p for p in args.batch_images.iterdir() if p.suffix in (".png", ".jpg"))[:8]
    prepared = [prepare_image(path, 1024, XFeatExtractor.multiple) for path in paths]
    extractor = XFeatExtractor(ExtractorConfig(max_keypoints=4096, resize_max=1024))
    for batch in (1, 4, 8):

        def run(batch=batch):
            for start in range(0, len(prepared), batch):
                chunk = prepared[start : start + batch]
                extractor.extract_batch([image for image, _ in chunk], [scale for _, scale in chunk])

        rows.append(
            (
                f"XFeat {prepared[0][0].shape[1]}x{prepared[0][0].shape[0]}, batch {batch}, per image",
                median_ms(run, 3) / len(prepared),
            )
        )
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} |")


if __name__ == "__main__":
    main()
