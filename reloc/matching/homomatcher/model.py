"""HomoMatcher fine stage (AAAI 2025): sub-pixel matches from patch-to-patch homographies.

For each coarse match (x0 in image 0, x1 in image 1) a P x P patch of fine features around x0 is
correlated with a search window around x1. Each patch sample's correspondence is the
soft-argmax of its correlation row, weighted by its peak probability; a weighted DLT turns these
into the homography of the patch pair, i.e. its four corner offsets. Later iterations correlate
each sample with a small window around where the current homography sends it, and re-fit. The
refined match is x0 mapped through the homography; ``dense`` maps every patch sample the same way.

``fit`` chooses how an iteration turns the correlation into the homography: ``"dlt"`` is the
weighted DLT above; ``"regression"`` is the paper's learned head, a small CNN over the patch's
correlation volume (each sample's probabilities over its search positions as channels) that
regresses the four corner offsets, whose 4-point homography is solved exactly.

Coordinates are COLMAP pixels (pixel centres at +0.5) of the images the network sees. Fine
features live at 1/2 resolution, so the patch samples are ``spacing_px`` = 2 pixels apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import Pyramid, XFeatPyramid


@dataclass
class HomoMatcherConfig:
    fine_dim: int = 32
    patch_size: int = 8  # P: samples per side of the source patch
    search_size: int = 14  # samples per side of the first iteration's search window around x1
    search_radius_px: float = 7.0  # first iteration: a sample at offset o from x0 looks within this of x1 + o
    refine_radius: int = 1  # later iterations search (2r + 1)^2 samples around the estimate
    iterations: int = 3  # the first (search window) and refinements
    spacing_px: float = 2.0  # pixels between samples
    chunk: int = 1024  # matches per chunk at inference (memory)
    fit: str = "dlt"  # per iteration: "dlt" (weighted fit to the soft-argmax points) or "regression" (corner head)
    head_width: int = 32  # regression: channels of the corner head's convolutions

    def __post_init__(self):
        if self.fit not in FITS:
            raise ValueError(f"fit must be one of {', '.join(FITS)}, not {self.fit!r}")


FITS = ("dlt", "regression")


def grid_offsets(size: int, spacing: float) -> torch.Tensor:
    """(size * size, 2) offsets (x, y) of a centred square grid, row by row."""
    steps = (torch.arange(size, dtype=torch.float32) - (size - 1) / 2) * spacing
    y, x = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack([x, y], dim=-1).reshape(-1, 2)


def sample_features(features: torch.Tensor, points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear samples (B, N, C) of ``features`` (B, C, h, w) at ``points`` (B, N, 2), COLMAP
    pixels of an image of ``size`` (W, H) (any map resolution; outside: zeros)."""
    width, height = size
    grid = points / points.new_tensor([width, height]) * 2 - 1
    return F.grid_sample(features, grid[:, :, None, :], mode="bilinear", align_corners=False)[..., 0].transpose(1, 2)


def weighted_homography(source: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Homographies (..., 3, 3) with h33 = 1 mapping ``source`` (..., N, 2) to ``target`` (..., N, 2)
    by weighted linear least squares (the DLT with a fixed scale); ``weights`` (..., N) >= 0.
    Use normalised coordinates (about unit size) for conditioning."""
    x, y = source.unbind(-1)
    u, v = target.unbind(-1)
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], dim=-1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], dim=-1)
    design = torch.cat([rows_u, rows_v], dim=-2)  # (..., 2N, 8)
    rhs = torch.cat([u, v], dim=-1)
    w = torch.cat([weights, weights], dim=-1)
    normal = design.transpose(-1, -2) @ (design * w[..., None]) + 1e-4 * torch.eye(8, device=source.device)
    solution = torch.linalg.solve(normal, (design.transpose(-1, -2) @ (w * rhs)[..., None]))[..., 0]
    return torch.cat([solution, torch.ones_like(solution[..., :1])], dim=-1).unflatten(-1, (3, 3))


def apply_homography(homography: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``homography`` (..., 3, 3) applied to ``points`` (..., N, 2)."""
    mapped = points @ homography[..., :2, :2].transpose(-1, -2) + homography[..., None, :2, 2]
    scale = points @ homography[..., 2:, :2].transpose(-1, -2) + homography[..., None, 2:, 2]
    return mapped / scale


class FineFeatures(nn.Module):
    """(B, fine_dim, H/2, W/2) unit fine features: a small CNN on the grey image fused with
    XFeat's 1/4 map."""

    def __init__(self, dim: int):
        super().__init__()
        self.local = nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, dim, 3, padding=1)
        )
        self.context = nn.Conv2d(24, dim, 1)
        self.fuse = nn.Sequential(
            nn.ReLU(), nn.Conv2d(dim, dim, 3, padding=1), nn.ReLU(), nn.Conv2d(dim, dim, 3, padding=1)
        )

    def forward(self, images: torch.Tensor, pyramid: Pyramid) -> torch.Tensor:
        grey = images.mean(dim=1, keepdim=True)
        grey = (grey - grey.mean(dim=(2, 3), keepdim=True)) / (grey.std(dim=(2, 3), keepdim=True) + 1e-4)
        local = self.local(grey)
        context = F.interpolate(
            self.context(pyramid.quarter), size=local.shape[-2:], mode="bilinear", align_corners=False
        )
        # Channels-last memory: faster convolutions on CPU, and the per-pixel norm runs over
        # contiguous memory (about 15x faster than over dim 1 of a channels-first map).
        features = self.fuse((local + context).contiguous(memory_format=torch.channels_last))
        return F.normalize(features.permute(0, 2, 3, 1), dim=-1).permute(0, 3, 1, 2)


class CornerRegressor(nn.Module):
    """HomoMatcher's homography head: correlation probabilities (B, M, P², C) of the P x P patch
    samples over C search positions -> offsets (B, M, 4, 2) of the patch's four corners, in the
    normalised patch units of the fit. The last layer starts at zero (no offset)."""

    def __init__(self, channels: int, patch_size: int, width: int):
        super().__init__()
        self.patch_size = patch_size
        self.convs = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        reduced = (patch_size + 3) // 4
        self.offsets = nn.Linear(width * reduced * reduced, 8)
        nn.init.zeros_(self.offsets.weight)
        nn.init.zeros_(self.offsets.bias)

    def forward(self, probability: torch.Tensor) -> torch.Tensor:
        batch, matches, _, channels = probability.shape
        volume = probability.reshape(batch * matches, self.patch_size, self.patch_size, channels).permute(0, 3, 1, 2)
        return self.offsets(self.convs(volume).flatten(1)).reshape(batch, matches, 4, 2)


@dataclass
class PatchHomographies:
    """Per match (B, M): ``homographies`` (B, M, 3, 3) map image-0 pixels to image-1 pixels, one
    per iteration in ``per_iteration``, fitted to the soft-argmax correspondences (B, M, P², 2)
    of the patch samples in ``estimates``; ``points1`` (B, M, 2) the refined match of
    ``points0``; ``confidence`` (B, M) the mean peak probability of the last iteration (plus 0.05)."""

    homographies: torch.Tensor
    per_iteration: list[torch.Tensor]
    estimates: list[torch.Tensor]
    points1: torch.Tensor
    confidence: torch.Tensor


class HomoMatcher(nn.Module):
    """Fine stage after any coarse matcher."""

    def __init__(self, config: HomoMatcherConfig = HomoMatcherConfig()):
        super().__init__()
        self.config = config
        self.backbone = XFeatPyramid()
        self.fine = FineFeatures(config.fine_dim)
        self.log_temperature = nn.Parameter(torch.tensor(-3.0))
        if config.fit == "regression":  # one head for the search window, one for the refinements
            patch = grid_offsets(config.patch_size, config.spacing_px)
            positions = self.search_positions(patch, grid_offsets(config.search_size, config.spacing_px)).shape[1]
            refine = (2 * config.refine_radius + 1) ** 2
            self.corner_heads = nn.ModuleList(
                [CornerRegressor(c, config.patch_size, config.head_width) for c in (positions, refine)]
            )

    def fine_features(self, images: torch.Tensor, pyramid: Pyramid | None = None) -> torch.Tensor:
        return self.fine(images, pyramid if pyramid is not None else self.backbone(images))

    def forward(
        self,
        fine0: torch.Tensor,
        fine1: torch.Tensor,
        points0: torch.Tensor,
        points1: torch.Tensor,
        size0: tuple[int, int],
        size1: tuple[int, int],
    ) -> PatchHomographies:
        """``fine0``/``fine1`` from :meth:`fine_features`; coarse matches ``points0``/``points1``
        (B, M, 2); ``size`` (W, H) of each image."""
        config = self.config
        batch, matches, _ = points0.shape
        scale = config.spacing_px * config.patch_size / 2  # normalises patch coordinates to about [-1, 1]
        patch = grid_offsets(config.patch_size, config.spacing_px).to(points0)
        source = (points0[:, :, None, :] + patch).reshape(batch, -1, 2)
        descriptors0 = sample_features(fine0, source, size0).reshape(batch, matches, patch.shape[0], -1)
        corner_samples = patch[[0, config.patch_size - 1, -config.patch_size, -1]]
        corners = (corner_samples / scale).expand(batch, matches, 4, 2)  # the patch corners, normalised
        per_iteration, estimates, weights, local_homography = [], [], None, None
        for iteration in range(config.iterations):
            if iteration == 0:  # one search window around points1, shared by the patch's samples
                window = grid_offsets(config.search_size, config.spacing_px).to(points0)
                descriptors1 = sample_features(fine1, (points1[:, :, None, :] + window).reshape(batch, -1, 2), size1)
                allowed = self.search_positions(patch, window)  # (P², A) window indices each sample may match
                correlation = descriptors0 @ descriptors1.reshape(batch, matches, window.shape[0], -1).transpose(-1, -2)
                correlation = torch.gather(correlation, 3, allowed.expand(batch, matches, -1, -1))  # (B, M, P², A)
                base, offsets = points1[:, :, None, :], window[allowed]  # targets: base + offsets (P², A, 2)
            else:  # a small window around where the current homography sends each sample
                base = apply_homography(
                    per_iteration[-1].detach(), points0[:, :, None, :] + patch
                )  # no gradient through the seed
                offsets = grid_offsets(2 * config.refine_radius + 1, config.spacing_px).to(points0)  # (R², 2)
                targets = base[:, :, :, None, :] + offsets
                descriptors1 = sample_features(fine1, targets.reshape(batch, -1, 2), size1).reshape(
                    *targets.shape[:-1], -1
                )
                correlation = (descriptors0[..., None, :] @ descriptors1.transpose(-1, -2))[..., 0, :]  # (B, M, P², R²)
            probability = (correlation / self.log_temperature.exp()).softmax(dim=-1)
            estimate = (
                base + (probability[..., None, :] @ offsets.expand(*probability.shape[:-1], -1, -1))[..., 0, :]
            )  # (B, M, P², 2)
            weights = probability.max(dim=-1).values + 0.05  # the floor keeps the fit well-posed
            if config.fit == "regression":
                start = corners if local_homography is None else apply_homography(local_homography.detach(), corners)
                moved = start + self.corner_heads[min(iteration, 1)](probability)
                local_homography = weighted_homography(corners, moved, torch.ones_like(moved[..., 0]))
            else:
                local_homography = weighted_homography(
                    (patch / scale).expand(batch, matches, -1, -1), (estimate - points1[:, :, None, :]) / scale, weights
                )
            per_iteration.append(self.to_image(local_homography, points0, points1, scale))
            estimates.append(estimate)
        refined = apply_homography(per_iteration[-1], points0[:, :, None, :])[:, :, 0]
        return PatchHomographies(per_iteration[-1], per_iteration, estimates, refined, weights.mean(-1))

    def search_positions(self, patch: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        """(P², A) indices of the window positions within ``search_radius_px`` of each patch
        sample's shifted position (the same count A for every sample)."""
        inside = (window[None, :, :] - patch[:, None, :]).abs().amax(-1) <= self.config.search_radius_px + 1e-6
        counts = inside.sum(1)
        if not torch.all(counts == counts[0]):
            raise ValueError("search window and radius must give every patch sample the same number of positions")
        return torch.nonzero(inside)[:, 1].reshape(len(patch), -1)

    @staticmethod
    def to_image(local: torch.Tensor, points0: torch.Tensor, points1: torch.Tensor, scale: float) -> torch.Tensor:
        """Homography of normalised patch coordinates -> of image pixels (B, M, 3, 3)."""
        eye = torch.eye(3, device=local.device, dtype=local.dtype).expand(*points0.shape[:2], 3, 3)
        normalise0 = eye.clone()
        normalise0[..., :2, :2] /= scale
        normalise0[..., :2, 2] = -points0 / scale
        denormalise1 = eye.clone()
        denormalise1[..., :2, :2] *= scale
        denormalise1[..., :2, 2] = points1
        return denormalise1 @ local @ normalise0

    @torch.inference_mode()
    def refine(
        self,
        fine0: torch.Tensor,
        fine1: torch.Tensor,
        points0: torch.Tensor,
        points1: torch.Tensor,
        size0: tuple[int, int],
        size1: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Single image pair, in chunks: ``points0``/``points1`` (M, 2) -> refined points1 (M, 2),
        homographies (M, 3, 3), confidence (M,)."""
        outputs = [
            self(fine0, fine1, p0[None], p1[None], size0, size1)
            for p0, p1 in zip(points0.split(self.config.chunk), points1.split(self.config.chunk))
        ]
        if not outputs:
            return points1.clone(), torch.zeros(0, 3, 3), torch.zeros(0)
        return (
            torch.cat([o.points1[0] for o in outputs]),
            torch.cat([o.homographies[0] for o in outputs]),
            torch.cat([o.confidence[0] for o in outputs]),
        )

    def dense(self, homographies: torch.Tensor, points0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense output: every pixel centre of each P x P source patch (spacing 1 px, the patch's
        full extent) and its match through the patch homography: two (M, Q, 2) tensors."""
        extent = int(self.config.patch_size * self.config.spacing_px)
        pixels = grid_offsets(extent, 1.0).to(points0)
        source = points0[:, None, :] + pixels
        return source, apply_homography(homographies, source)
