"""CasP's training losses: the one-to-many prior at 1/16 and the one-to-one matches at 1/8."""

from __future__ import annotations

import torch

from ..training import ground_truth_at
from .model import CaspOutput, grouped_to_points


def cell_targets(flow: torch.Tensor, grid: tuple[int, int], other_grid: tuple[int, int]) -> torch.Tensor:
    """Ground-truth match (B, 4N) of every 1/8 cell centre, as a grouped id of the other image's
    1/8 cell that contains it; -1 where there is none. ``flow`` (B, H, W, 2)."""
    batch = flow.shape[0]
    points = grouped_to_points(torch.arange(4 * grid[0] * grid[1]), grid).expand(batch, -1, -1)
    target = ground_truth_at(flow, points)
    col8, row8 = torch.nan_to_num(target / 8, nan=-1.0).floor().long().unbind(-1)
    height16, width16 = other_grid
    inside = torch.isfinite(target[..., 0]) & (col8 >= 0) & (row8 >= 0) & (col8 < 2 * width16) & (row8 < 2 * height16)
    ids = 4 * ((row8 // 2) * width16 + col8 // 2) + 2 * (row8 % 2) + col8 % 2
    return torch.where(inside, ids, -1)


def prior_loss(log_prior: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """One-to-many prior: each 1/16 token should put its dual-softmax mass on the tokens that
    hold its children's matches. ``log_prior`` (B, N, M) rows of this image, ``targets`` (B, 4N)."""
    batch, parents, others = log_prior.shape
    valid = targets >= 0
    target_parent = targets.clamp(min=0) // 4
    own_parent = torch.arange(4 * parents, device=targets.device).expand(batch, -1) // 4
    mask = torch.zeros(batch, parents, others, dtype=torch.bool, device=log_prior.device)
    b = torch.arange(batch, device=targets.device)[:, None].expand_as(targets)
    mask[b[valid], own_parent[valid], target_parent[valid]] = True
    rows = mask.any(dim=2)
    if not rows.any():
        return log_prior.sum() * 0
    return -log_prior.masked_fill(~mask, float("-inf")).logsumexp(dim=2)[rows].mean()


def one_to_one_loss(
    log_match: torch.Tensor, candidates: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """Negative log-likelihood of each child's true match among its prior candidates, and the
    prior recall (share of children with a true match whose match is among the candidates).
    ``log_match`` (B, N, 4, 4k), ``candidates`` (B, N, 4k), ``targets`` (B, 4N)."""
    batch, parents = candidates.shape[:2]
    hit = candidates[:, :, None, :] == targets.reshape(batch, parents, 4, 1)
    covered = hit.any(dim=-1)
    has_target = targets.reshape(batch, parents, 4) >= 0
    recall = float(covered.sum() / has_target.sum().clamp(min=1))
    if not covered.any():
        return log_match.sum() * 0, recall
    return -(log_match * hit).sum(-1)[covered].mean(), recall


def casp_loss(output: CaspOutput, flow0: torch.Tensor, flow1: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Total loss (both directions of both phases) and metrics."""
    targets01 = cell_targets(flow0, output.grid0, output.grid1)
    targets10 = cell_targets(flow1, output.grid1, output.grid0)
    prior = prior_loss(output.log_prior, targets01) + prior_loss(output.log_prior.transpose(1, 2), targets10)
    match01, recall01 = one_to_one_loss(output.log_match01, output.candidates01, targets01)
    match10, recall10 = one_to_one_loss(output.log_match10, output.candidates10, targets10)
    return prior + match01 + match10, {
        "prior": prior.item(),
        "one_to_one": (match01 + match10).item(),
        "prior_recall": 0.5 * (recall01 + recall10),
    }
