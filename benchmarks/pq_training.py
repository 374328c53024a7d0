"""Product-quantizer training (faiss, 32 sub-vectors of 256 centroids, as ``default.yaml`` codes
landmark descriptors) on real RootSIFT descriptors, with the faiss wheel's own BLAS threshold and
with reloc's (``reloc.features.quantize.faiss_blas_from``):

    python benchmarks/pq_training.py --images ../shared/data/strecha

Descriptors: 4000 RootSIFT per image at 1024 px of 24 Strecha images (shuffled, seed 0), 10000
held out. Prints, per training size and threshold, the training seconds, the held-out mean
squared quantization error and the share of held-out nearest neighbours kept.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import faiss
import numpy as np

from reloc.features.base import prepare_image
from reloc.features.extractors import ExtractorConfig, SiftExtractor
from reloc.features.quantize import BLAS_FROM_QUERIES, faiss_blas_from


def descriptors(folder: Path, count: int) -> np.ndarray:
    paths = sorted(folder.glob("*/seq1/*.jpg"))
    np.random.default_rng(0).shuffle(paths)
    extractor = SiftExtractor(ExtractorConfig(max_keypoints=4000, resize_max=1024))
    found = []
    for path in paths[:count]:
        image, scale = prepare_image(path, 1024, extractor.multiple)
        found.append(extractor.extract(image, scale).descriptors)
    every = np.concatenate(found).astype(np.float32)
    np.random.default_rng(0).shuffle(every)
    return every


def trained(train: np.ndarray, threshold: int | None) -> tuple[faiss.ProductQuantizer, float]:
    quantizer = faiss.ProductQuantizer(train.shape[1], 32, 8)
    quantizer.cp.seed, quantizer.cp.min_points_per_centroid = 0, 1
    started = time.perf_counter()
    if threshold is None:
        quantizer.train(train)
    else:
        with faiss_blas_from(threshold):
            quantizer.train(train)
    return quantizer, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, required=True, help="folder of the Strecha scenes")
    parser.add_argument("--sizes", type=int, nargs="+", default=[8192, 16384, 65536])
    args = parser.parse_args()
    every = descriptors(args.images, 24)
    test, train = every[:10000], every[10000:]
    print(f"{len(train)} training, {len(test)} held-out descriptors")
    print("| training descriptors | BLAS threshold | seconds | held-out MSE | nearest neighbours kept |")
    print("|---:|---|---:|---:|---:|")
    exact = (test[:2000] @ test[2000:].T).argmax(axis=1)
    for size in args.sizes:
        wheel = f"faiss's ({faiss.cvar.distance_compute_blas_threshold})"
        for label, threshold in ((wheel, None), (f"reloc's ({BLAS_FROM_QUERIES})", BLAS_FROM_QUERIES)):
            quantizer, seconds = trained(np.ascontiguousarray(train[:size]), threshold)
            decoded = quantizer.decode(quantizer.compute_codes(test))
            error = float(((decoded - test) ** 2).sum(axis=1).mean())
            kept = float(((test[:2000] @ decoded[2000:].T).argmax(axis=1) == exact).mean())
            print(f"| {size} | {label} | {seconds:.2f} | {error:.4f} | {kept:.3f} |")


if __name__ == "__main__":
    main()
