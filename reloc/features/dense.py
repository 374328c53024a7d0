"""Dense descriptor fields: a backbone's descriptor at any point of an image, and square
patches of them around points (the training targets of FaVoR's landmark voxel grids).

Points are in the COLMAP pixel convention of the original image (centre of the top-left pixel
at (0.5, 0.5)); descriptors come back L2-normalised, float32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F
from kornia.feature.aliked.aliked import InputPadder

from ..errors import RelocError
from .extractors import images_to_tensor, load_aliked, load_xfeat

RowGather = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""Flat pixel indices (M,) -> (distinct rows of a channels-last map (U, C), the row of each index (M,))."""


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
    arbitrary points of its full-resolution feature map.

    The head is evaluated here as matrix products over channels-last features (the same
    arithmetic as kornia's ``SDDH.forward``, which samples a channels-first map point by point
    and spends most of its time there): per point, the 3 x 3 feature patch at its integer pixel
    predicts 16 sampling offsets (conv 3x3, SELU, conv 1x1); the features bilinearly sampled at
    point + offset (zero outside the map, ``align_corners=True``) go through a 1x1 conv and a
    SELU and are aggregated by one (16 * 128) x 128 product."""

    name = "aliked"
    dim = 128
    multiple = 1

    def __init__(self):
        self.model = load_aliked().to(memory_format=torch.channels_last)
        head = self.model.desc_head
        if head.kernel_size != 3 or head.mask or head.conv2d:
            raise RelocError("the ALIKED weights do not hold the N16 descriptor head this backbone evaluates")
        first, _, second = head.offset_conv
        self.offset_weights = first.weight.detach().permute(2, 3, 1, 0).reshape(-1, first.out_channels)  # (9C, 2P)
        self.offset_bias = first.bias.detach()
        self.offset_weights2 = second.weight.detach()[:, :, 0, 0].T
        self.offset_bias2 = second.bias.detach()
        self.sample_weights = head.sf_conv.weight.detach()[:, :, 0, 0].T  # (C, C)
        self.aggregate = head.agg_weights.detach().reshape(-1, head.agg_weights.shape[-1])  # (P * C, D)
        self.positions = head.n_pos
        upsampling = [
            (m.mode, m.align_corners, m.scale_factor)
            for m in (self.model.upsample2, self.model.upsample8, self.model.upsample32)
        ]
        if upsampling != [("bilinear", True, float(f)) for f in (2, 8, 32)]:
            raise RelocError(f"ALIKED's upsampling {upsampling} is not the bilinear x2, x8, x32 AlikedLevels evaluates")

    def feature_map(self, images: torch.Tensor) -> AlikedLevels:
        """ALIKED's four feature levels (``extract_dense_map`` without the score head, which
        descriptors do not need) before they are upsampled to full resolution and concatenated:
        that dense (h, w, 128) map costs more than the network's blocks, so its pixels are
        computed where the head reads them (``AlikedLevels``). Run in channels-last memory format
        so that each pixel's features come out contiguous."""
        model = self.model
        height, width = images.shape[-2:]
        padder = InputPadder(height, width, 32)
        x1 = model.block1(padder.pad(images).contiguous(memory_format=torch.channels_last))
        x2 = model.block2(model.pool2(x1))
        x3 = model.block3(model.pool4(x2))
        x4 = model.block4(model.pool4(x3))
        coarse = [model.gate(conv(x)) for conv, x in ((model.conv2, x2), (model.conv3, x3), (model.conv4, x4))]
        return AlikedLevels(
            fine=x1[0].permute(1, 2, 0).contiguous(),
            fine_weights=model.conv1.weight.detach()[:, :, 0, 0].T,
            coarse=[level[0].permute(1, 2, 0).contiguous() for level in coarse],
            factors=(2, 8, 32),
            offset=(padder._pad[0], padder._pad[2]),
            size=(width, height),
        )

    def sample(self, features: AlikedLevels, points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        width, height = size
        corner = points.long() - 1  # the 3 x 3 patch around the integer pixel, kept inside the map
        corner_x = corner[:, 0].clamp(0, width - 4)
        corner_y = corner[:, 1].clamp(0, height - 4)
        steps = torch.arange(3)
        rows = (corner_y[:, None, None] + steps[None, :, None]) * width + corner_x[:, None, None] + steps[None, None, :]
        table, rows_in_table = features.gather(rows.reshape(-1))
        patches = table[rows_in_table].reshape(len(points), -1)  # (N, 9C) in (dy, dx, c)
        hidden = F.selu(patches @ self.offset_weights + self.offset_bias)
        offsets = (hidden @ self.offset_weights2 + self.offset_bias2).clamp(
            -max(height, width) / 4, max(height, width) / 4
        )
        offsets = offsets.view(len(points), 2, self.positions).transpose(1, 2)  # (N, P, 2) x, y
        sampled = bilinear_channels_last(features.gather, width, height, (points[:, None] + offsets).reshape(-1, 2))
        transformed = F.selu(sampled @ self.sample_weights)  # (N * P, C)
        descriptors = transformed.reshape(len(points), -1) @ self.aggregate
        return F.normalize(descriptors, dim=-1)


@dataclass
class AlikedLevels:
    """ALIKED's feature levels of one image; ``pixels`` gives rows of its dense map.

    The dense map (h, w, 128), L2-normalised per pixel, is the concatenation of the fine level
    through its 1x1 conv and SELU (32 channels) and of the three gated coarse levels (32 each)
    bilinearly upsampled by ``factors`` (``align_corners=True``), all on the image padded to a
    multiple of 32 and cropped at ``offset`` (left, top) to ``size`` (w, h). Levels are
    channels-last: ``fine`` (H, W, 16) at the padded size, ``coarse[i]`` (H / f, W / f, 32)."""

    fine: torch.Tensor
    fine_weights: torch.Tensor  # (16, 32)
    coarse: list[torch.Tensor]
    factors: tuple[int, ...]
    offset: tuple[int, int]
    size: tuple[int, int]

    def gather(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The dense map's rows that flat indices ``index`` (M,) = y * w + x read, each computed
        once: (U, 128) distinct rows and (M,) the row of each index among them; the whole map
        (``dense``) when there are more indices than pixels."""
        if len(index) >= self.size[0] * self.size[1]:
            return self.dense, index
        distinct, inverse = torch.unique(index, return_inverse=True)
        return self.pixels(distinct), inverse

    @cached_property
    def dense(self) -> torch.Tensor:
        """(h * w, 128) the whole dense map, computed on first use."""
        return self.pixels(torch.arange(self.size[0] * self.size[1]))

    def pixels(self, index: torch.Tensor) -> torch.Tensor:
        """(M, 128) rows of the dense map at flat indices ``index`` (M,) = y * w + x."""
        width = self.size[0]
        x = index % width + self.offset[0]
        y = index // width + self.offset[1]
        fine = self.fine.reshape(-1, self.fine.shape[-1]).index_select(0, y * self.fine.shape[1] + x)
        widths = [self.fine_weights.shape[1], *(level.shape[-1] for level in self.coarse)]
        rows = torch.empty(len(index), sum(widths))
        parts = rows.split(widths, dim=1)  # views of rows, one per level
        parts[0][:] = F.selu(fine @ self.fine_weights)
        for part, level, factor in zip(parts[1:], self.coarse, self.factors):
            part[:] = upsampled_at(level, factor, x, y)
        return rows.mul_(torch.linalg.vector_norm(rows, dim=1, keepdim=True).clamp_(min=1e-12).reciprocal_())


def upsampled_at(level: torch.Tensor, factor: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(M, C) values at integer pixels (``x``, ``y``) (M,) of ``level`` (h, w, C) bilinearly
    upsampled by ``factor`` as ``F.interpolate(mode="bilinear", align_corners=True)`` does:
    output pixel i of f * n reads source coordinate i * (n - 1) / (f * n - 1)."""
    height, width, channels = level.shape
    source_x = x * ((width - 1) / (factor * width - 1))
    source_y = y * ((height - 1) / (factor * height - 1))
    x0, y0 = source_x.long(), source_y.long()
    x1, y1 = (x0 + 1).clamp(max=width - 1), (y0 + 1).clamp(max=height - 1)
    fx, fy = source_x - x0, source_y - y0
    index = torch.stack([y0 * width + x0, y0 * width + x1, y1 * width + x0, y1 * width + x1], dim=1)
    weights = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], dim=1)
    return F.embedding_bag(index, level.reshape(-1, channels), per_sample_weights=weights, mode="sum")


def bilinear_channels_last(gather: RowGather, width: int, height: int, points: torch.Tensor) -> torch.Tensor:
    """(M, C) bilinear samples at ``points`` (M, 2), pixel centres at integers, of a (height,
    width, C) map whose rows ``gather(flat_index)`` gives as (distinct rows, row of each index);
    neighbours outside the map count as zero (``grid_sample``'s zero padding with
    ``align_corners=True``). One weighted ``embedding_bag`` of 4 rows per point."""
    lower = points.floor()
    fraction = points - lower
    x = lower[:, 0, None].long() + torch.tensor([0, 1, 0, 1])  # (M, 4) neighbours
    y = lower[:, 1, None].long() + torch.tensor([0, 0, 1, 1])
    weight_x = torch.stack([1 - fraction[:, 0], fraction[:, 0]], dim=1)[:, [0, 1, 0, 1]]
    weight_y = torch.stack([1 - fraction[:, 1], fraction[:, 1]], dim=1)[:, [0, 0, 1, 1]]
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    table, rows = gather((y.clamp(0, height - 1) * width + x.clamp(0, width - 1)).reshape(-1))
    return F.embedding_bag(rows.view(-1, 4), table, per_sample_weights=weight_x * weight_y * inside, mode="sum")


DENSE_BACKBONES = {cls.name: cls for cls in (XFeatDense, AlikedDense)}


def dense_backbone(name: str) -> DenseBackbone:
    if name not in DENSE_BACKBONES:
        raise RelocError(f"unknown dense backbone {name!r}; choose one of {sorted(DENSE_BACKBONES)}")
    return DENSE_BACKBONES[name]()
