"""Query SIFT at a 1024-px long side on one Strecha image: OpenCV (which doubles the image
first) against pycolmap's CPU SIFT with ``first_octave`` -1 and 0, 3000 features, 1 and 2 threads.

    python benchmarks/query_sift.py --image ../shared/data/strecha/fountain-P11/seq1/0001.jpg

Prints the median milliseconds of 7 runs and the keypoint count of each.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import pycolmap
from PIL import Image

from reloc.features.extractors import stretch_contrast


def median_ms(function, repeats: int = 7):
    function()
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times)), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--side", type=int, default=1024)
    args = parser.parse_args()
    image = Image.open(args.image).convert("L")
    scale = args.side / max(image.size)
    size = (round(image.width * scale), round(image.height * scale))
    gray = stretch_contrast(np.asarray(image.resize(size, Image.BILINEAR)))
    sift = cv2.SIFT_create(nfeatures=3000, contrastThreshold=0.02)
    ms, (keypoints, _) = median_ms(lambda: sift.detectAndCompute(gray, None))
    print(f"OpenCV SIFT (image doubled first): {ms:.0f} ms, {len(keypoints)} keypoints")
    for first_octave in (-1, 0):
        for threads in (1, 2):
            options = pycolmap.FeatureExtractionOptions()
            options.num_threads = threads
            options.sift.max_num_features = 3000
            options.sift.first_octave = first_octave
            options.sift.peak_threshold = 0.02 / 3
            extract = pycolmap.Sift(options, pycolmap.Device.cpu).extract
            ms, (points, _) = median_ms(lambda: extract(gray.astype(np.float32) / 255.0))  # noqa: B023 - called here
            setting = f"first_octave {first_octave}, {threads} thread(s)"
            print(f"pycolmap SIFT {setting}: {ms:.0f} ms, {len(points)} keypoints")


if __name__ == "__main__":
    main()
