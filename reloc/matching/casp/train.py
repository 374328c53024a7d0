"""``reloc train casp``: CasP's heads on synthetic view pairs and warped photographs."""

from __future__ import annotations

import torch

from ..training import ground_truth_at
from ..training_pairs import PairBatch
from .loss import casp_loss
from .model import Casp, mutual_matches


def casp_step(model: Casp, batch: PairBatch) -> tuple[torch.Tensor, dict]:
    output = model(batch.images0, batch.images1)
    loss, metrics = casp_loss(output, batch.flow0, batch.flow1)
    with torch.no_grad():
        metrics.update(match_precision(output, batch.flow0, model.config.match_threshold))
    return loss, metrics


@torch.no_grad()
def match_precision(output, flow0: torch.Tensor, threshold: float) -> dict:
    """Matches per pair and the share whose cell holds the true match (within 8 px) among those
    with ground truth."""
    counts, correct, checked = 0, 0, 0
    for b, (points0, points1, _) in enumerate(mutual_matches(output, threshold)):
        counts += len(points0)
        truth = ground_truth_at(flow0[b : b + 1], points0[None])[0]
        known = torch.isfinite(truth[:, 0])
        checked += int(known.sum())
        correct += int(((truth[known] - points1[known]).abs().max(dim=1).values <= 8).sum())
    return {"matches": counts / flow0.shape[0], "precision": correct / max(checked, 1)}
