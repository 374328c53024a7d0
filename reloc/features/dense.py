"""Dense descriptor fields: a backbone's descriptor at any point of an image, and square
patches of them around points (the training targets of FaVoR's landmark voxel grids).

Points are in the COLMAP pixel convention of the original image (centre of the top-left pixel
at (0.5, 0.5)); descriptors come back L2-normalised, float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import RelocError
from .extractors import images_to_tensor, load_aliked, load_xfeat


def patch_offsets(patch_size: int) -> np.ndarray:
    """(P*P, 2) offsets (x, y) of a P x P patch's samples from its centre, in sample spacings,
    row by row (row index along y, column along x)."""
    offsets = np.arange(patch_size) - (patch_size - 1) / 2
    return np.stack(np.meshgrid(offsets, offsets, indexing="xy"), axis=-1).reshape(-1, 2)


@dataclass
class DescriptorField:
    """The backbone output of one image, sampled on demand.

    ``features`` (1, C, h, w) is the backbone's map; ``scale`` (2,) maps resized-image pixels to
    original pixels; ``size`` (W, H) is the resized image the backbone saw."""

    backbone: DenseBackbone
    features: torch.Tensor
    scale: np.ndarray
    size: tuple[int, int]

    def sample(self, points: np.ndarray) -> np.ndarray:
        """Descriptors (N, C) at ``points`` (N, 2), COLMAP pixels of the original image."""
        if len(points) == 0:
            return np.zeros((0, self.backbone.dim), np.float32)
        centred = torch.from_numpy((np.asarray(points, np.float64) / self.scale - 0.5).astype(np.float32))
        with torch.inference_mode():
            return self.backbone.sample(self.features, centred, self.size).numpy()

    def patches(self, centres: np.ndarray, patch_size: int, spacing_px: float) -> np.ndarray:
        """Patches (N, P, P, C) of descriptors on a P x P grid with ``spacing_px`` original
        pixels between samples, centred on ``centres`` (N, 2); row index follows y, column x."""
        points = (np.asarray(centres, np.float64)[:, None, :] + patch_offsets(patch_size)[None] * spacing_px).reshape(
            -1, 2
        )
        return self.sample(points).reshape(len(centres), patch_size, patch_size, -1)


class DenseBackbone:
    """A network that turns an RGB image into a descriptor field."""

    name: str
    dim: int
    multiple: int = 1  # the resized image's sides are multiples of this

    @torch.inference_mode()
    def __call__(self, image: np.ndarray, scale: np.ndarray) -> DescriptorField:
        """``image`` (H, W, 3) uint8 resized RGB, ``scale`` (2,) resized -> original pixels."""
        return DescriptorField(
            self, self.feature_map(images_to_tensor([image])), scale, (image.shape[1], image.shape[0])
        )

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, features: torch.Tensor, points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(N, C) unit descriptors at ``points`` (N, 2), pixel-centre-at-integer coordinates of
        the resized image of ``size`` (W, H)."""
        raise NotImplementedError


class XFeatDense(DenseBackbone):
    """XFeat's 64-d descriptor map at 1/8 resolution, sampled bicubically as XFeat samples its
    own keypoint descriptors."""

    name = "xfeat"
    dim = 64
    multiple = 32

    def __init__(self):
        self.model = load_xfeat()

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        features, _, _ = self.model.net(images)
        return F.normalize(features, dim=1)

    def sample(self, features: torch.Tensor, points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        width, height = size
        descriptors = self.model.interpolator(features, points[None], H=height, W=width)[0]
        return F.normalize(descriptors, dim=-1)


class AlikedDense(DenseBackbone):
    """ALIKED-N16's 128-d descriptors: its sparse deformable descriptor head (SDDH) evaluated at
    arbitrary points of its full-resolution feature map."""

    name = "aliked"
    dim = 128
    multiple = 1

    def __init__(self):
        self.model = load_aliked()

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        features, _ = self.model.extract_dense_map(images)
        return features

    def sample(self, features: torch.Tensor, points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        width, height = size
        normalised = 2 * points / torch.tensor([width - 1, height - 1], dtype=points.dtype) - 1  # ALIKED's [-1, 1]
        descriptors, _ = self.model.desc_head(features, [normalised])
        return F.normalize(descriptors[0], dim=-1)


DENSE_BACKBONES = {cls.name: cls for cls in (XFeatDense, AlikedDense)}


def dense_backbone(name: str) -> DenseBackbone:
    if name not in DENSE_BACKBONES:
        raise RelocError(f"unknown dense backbone {name!r}; choose one of {sorted(DENSE_BACKBONES)}")
    return DENSE_BACKBONES[name]()
