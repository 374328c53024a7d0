"""``reloc train homomatcher``: the fine stage on ground-truth coarse matches (1/8 cell centres
matched to the cell that holds their true correspondence, as a coarse matcher returns them)."""

from __future__ import annotations

import torch

from ..casp.loss import cell_targets
from ..casp.model import grouped_to_points
from ..training import ground_truth_at
from ..training_pairs import PairBatch
from .model import HomoMatcher, apply_homography, grid_offsets

MATCHES_PER_PAIR = 96


def coarse_ground_truth(flow0: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``MATCHES_PER_PAIR`` true coarse matches per pair: points0, points1 (B, M, 2) cell centres."""
    batch, height, width, _ = flow0.shape
    grid = (height // 16, width // 16)
    targets = cell_targets(flow0, grid, grid)
    points0, points1 = [], []
    for b in range(batch):
        valid = torch.nonzero(targets[b] >= 0)[:, 0]
        if len(valid) == 0:
            valid = torch.zeros(1, dtype=torch.long)
        chosen = valid[torch.randint(len(valid), (MATCHES_PER_PAIR,), generator=generator)]
        points0.append(grouped_to_points(chosen, grid))
        points1.append(grouped_to_points(targets[b][chosen].clamp(min=0), grid))
    return torch.stack(points0), torch.stack(points1)


def charbonnier(error: torch.Tensor) -> torch.Tensor:
    return (error.pow(2).sum(-1) + 0.25).sqrt() - 0.5


def homomatcher_step(
    model: HomoMatcher, batch: PairBatch, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, dict]:
    """Robust pixel error, against the ground truth, of every patch sample's soft-argmax match and
    of its image under each iteration's homography; metrics: the refined centre's median error and within-1-px share."""
    generator = generator if generator is not None else torch.Generator().manual_seed(int(torch.randint(1 << 30, ())))
    height, width = batch.images0.shape[-2:]
    points0, points1 = coarse_ground_truth(batch.flow0, generator)
    fine0, fine1 = model.fine_features(batch.images0), model.fine_features(batch.images1)
    output = model(fine0, fine1, points0, points1, (width, height), (width, height))
    patch = grid_offsets(model.config.patch_size, model.config.spacing_px)
    samples = points0[:, :, None, :] + patch
    truth = ground_truth_at(batch.flow0, samples.flatten(1, 2)).reshape(samples.shape)
    known = torch.isfinite(truth[..., 0])
    truth = torch.nan_to_num(truth)
    losses = [
        charbonnier(apply_homography(homography, samples) - truth)[known].mean()
        + charbonnier(estimate - truth)[known].mean()
        for homography, estimate in zip(output.per_iteration, output.estimates)
    ]
    with torch.no_grad():
        centre_truth = ground_truth_at(batch.flow0, points0)
        centre_known = torch.isfinite(centre_truth[..., 0])
        error = (output.points1 - centre_truth).norm(dim=-1)[centre_known]
        coarse_error = (points1 - centre_truth).norm(dim=-1)[centre_known]
    return sum(losses), {
        "centre_error_px": float(error.median()),
        "within_1px": float((error < 1).float().mean()),
        "coarse_error_px": float(coarse_error.median()),
    }
