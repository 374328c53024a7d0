"""What SIFT without its upsampled first octave would score: runs ``reloc`` with the query
extractor keeping only keypoints of octave 0 and above (OpenCV's Python API cannot skip the
doubled octave, so this gives the accuracy, not the time, of such a detector; its pyramid is the
one OpenCV builds for a 512-px image, whose time is the 512-px row of BENCHMARKS.md).

    python benchmarks/sift_no_upsampling.py eval --config default --dataset cambridge \
        --root ../shared/data/strecha/castle-P19 --map runs/query-path/maps/castle-P19/map \
        --out runs/no-upsampling/castle-P19

Arguments are ``reloc``'s; the keypoints kept per query are printed to stderr.
"""

from __future__ import annotations

import sys

import cv2
import numpy as np

from reloc.cli import app
from reloc.features import extractors
from reloc.features.base import Features, canonical_order, to_original_pixels


def extract_without_upsampled_octave(self: extractors.SiftExtractor, image: np.ndarray, scale: np.ndarray) -> Features:
    """SiftExtractor.extract, keeping the strongest ``max_keypoints`` of octave >= 0."""
    gray = extractors.stretch_contrast(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    sift = cv2.SIFT_create(
        nOctaveLayers=self.config.octave_layers, contrastThreshold=self.config.detection_threshold or 0.02
    )
    keypoints, descriptors = sift.detectAndCompute(gray, None)
    native = np.array([keypoint.octave & 255 for keypoint in keypoints]) < 128
    keypoints = [keypoint for keypoint, keep in zip(keypoints, native) if keep]
    descriptors = descriptors[native]
    responses = np.array([keypoint.response for keypoint in keypoints], np.float32)
    points = cv2.KeyPoint_convert(keypoints).astype(np.float64)
    order = canonical_order(points, responses)[: self.config.max_keypoints]
    print(f"keypoints of octave >= 0 kept: {len(order)}", file=sys.stderr)
    root = np.sqrt(descriptors[order] / np.maximum(descriptors[order].sum(axis=1, keepdims=True), 1e-8))
    return Features(to_original_pixels(points[order], scale), root.astype(np.float32), responses[order])


if __name__ == "__main__":
    extractors.SiftExtractor.extract = extract_without_upsampled_octave
    app()
