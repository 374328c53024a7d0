"""Local features: the common type, image preparation and the HDF5 feature store.

Keypoints are always in the COLMAP pixel convention of the original image (centre of the
top-left pixel at (0.5, 0.5)), whatever resizing the extractor did.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import h5py
import numpy as np

from ..datasets.base import JPEG_REDUCTIONS, open_image, read_image
from ..errors import RelocError


@dataclass
class Features:
    """One image's local features; extractors return them in canonical order (descending score,
    ties by position)."""

    keypoints: np.ndarray  # (N, 2) float32, COLMAP convention, original image pixels
    descriptors: np.ndarray  # (N, D) float32, L2-normalised
    scores: np.ndarray  # (N,) float32

    def __len__(self) -> int:
        return len(self.keypoints)

    def in_canonical_order(self) -> Features:
        """The same features sorted by descending score, ties broken by position (y, then x), so
        that one image always gives the same arrays whatever order the extractor produced."""
        order = canonical_order(self.keypoints, self.scores)
        return Features(self.keypoints[order], self.descriptors[order], self.scores[order])


def canonical_order(keypoints: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Indices (N,) sorting keypoints (N, 2) by descending ``scores`` (N,), then by y, then by x."""
    return np.lexsort((keypoints[:, 0], keypoints[:, 1], -scores))


def resize_image(
    image: np.ndarray, resize_max: int, multiple: int = 1, enlarge: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 image resized so that its long side is ``resize_max`` (0: no limit; at most
    ``resize_max`` unless ``enlarge``) and both sides are multiples of ``multiple``; and the
    per-axis scale (2,) from resized to original pixels."""
    height, width = image.shape[:2]
    factor = resize_max / max(height, width) if resize_max > 0 else 1.0
    if not enlarge:
        factor = min(1.0, factor)
    new_width = max(multiple, int(round(width * factor / multiple)) * multiple)
    new_height = max(multiple, int(round(height * factor / multiple)) * multiple)
    if (new_width, new_height) != (width, height):
        interpolation = cv2.INTER_LINEAR if enlarge and factor >= 1 else cv2.INTER_AREA
        image = cv2.resize(image, (new_width, new_height), interpolation=interpolation)
    return image, np.array([width / new_width, height / new_height], dtype=np.float64)


def prepare_image(
    path: Path, resize_max: int, multiple: int = 1, enlarge: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The RGB image at ``path``, resized by :func:`resize_image` (shrunk only, unless
    ``enlarge``), and the per-axis scale (2,) from its pixels to the original's. A JPEG at least
    twice ``resize_max`` is decoded at 1/2, 1/4 or 1/8 of its size first (never below
    ``resize_max``): a 12-MP photo decodes several times faster, and the DCT-domain reduction
    averages pixels as :func:`resize_image`'s area interpolation does."""
    reduction = jpeg_reduction(path, resize_max)
    image, scale = resize_image(read_image(path, reduction), resize_max, multiple, enlarge)
    return image, scale * reduction


def jpeg_reduction(path: Path, resize_max: int) -> int:
    """The largest of 1, 2, 4, 8 that keeps the long side of the JPEG at ``path`` at least
    ``resize_max`` (1 for other formats or when ``resize_max`` is 0)."""
    if resize_max <= 0:
        return 1
    with open_image(path) as image:  # the header only
        if image.format != "JPEG":
            return 1
        long_side = max(image.size)
    return max((r for r in (1, *JPEG_REDUCTIONS) if long_side >= r * resize_max), default=1)


def to_original_pixels(keypoints_centered: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Keypoints of a resized image in the 'pixel centre at integer' convention (OpenCV,
    kornia) -> COLMAP convention in the original image."""
    return ((keypoints_centered + 0.5) * scale).astype(np.float32)


class FeatureStore:
    """Features by image name from one extractor, in an HDF5 file (``path``) or in memory
    (``path=None``). The extractor's name is kept as a file attribute. On disk, descriptors are
    float16 (half the map size; unit descriptors lose under 1e-3 of cosine similarity) and are
    read back as float32."""

    def __init__(self, extractor: str, path: Path | None = None):
        self.extractor = extractor
        self.path = path
        self._memory: dict[str, Features] = {}
        if path is not None and not path.is_file():
            with h5py.File(path, "w") as file:
                file.attrs["extractor"] = extractor

    @classmethod
    def open(cls, path: Path) -> FeatureStore:
        if not path.is_file():
            raise RelocError(f"{path}: feature file missing; the map was not built with a features stage")
        with h5py.File(path, "r") as file:
            return cls(str(file.attrs["extractor"]), path)

    def write(self, name: str, features: Features) -> None:
        if self.path is None:
            self._memory[name] = features
            return
        with h5py.File(self.path, "a") as file:
            if name in file:
                del file[name]
            group = file.create_group(name)
            group.create_dataset("keypoints", data=features.keypoints)
            group.create_dataset("descriptors", data=features.descriptors.astype(np.float16))
            group.create_dataset("scores", data=features.scores)

    def read(self, name: str) -> Features:
        if self.path is None:
            return self._memory[name]
        with h5py.File(self.path, "r") as file:
            group = file[name]
            return Features(group["keypoints"][()], group["descriptors"][()].astype(np.float32), group["scores"][()])

    def read_keypoints(self, name: str) -> np.ndarray:
        """Keypoints (N, 2) only, without loading the descriptors."""
        if self.path is None:
            return self._memory[name].keypoints
        with h5py.File(self.path, "r") as file:
            return file[name]["keypoints"][()]
