"""NeuMap localization of one query: scene coordinates regressed for its keypoints in the active
voxels, each keypoint kept in its most confident voxel when that confidence passes the threshold
(a point lies in one voxel); a PnP-RANSAC per voxel with enough of them, then one PnP over the
union of their inliers (pycolmap), which gives the pose. That pose is judged on every confident
prediction, not on the union alone: the union holds only points some voxel's RANSAC already
agreed on, so its inlier ratio is high even for a wrong pose; against every prediction a wrong
pose explains few, and the confidence rules of :class:`PnPConfig` refuse it.

Active voxels: a small scene could run every keypoint against every voxel; to stay within a
CPU budget, ``probe_keypoints`` of the query's strongest keypoints run against every voxel
first, and only the ``max_active_voxels`` voxels with the most confident probe predictions
then see all keypoints.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..geometry.projection import project_points
from ..localization.confidence import pose_evidence
from ..localization.pnp import PnPConfig, PnPResult, estimate_pose, refusal
from ..types import Camera
from .model import TransDecoder
from .store import NeumapMap

# Regressed coordinates are not independent matches: a wrong pose still explains many of them
# (neighbouring mispredictions agree), so the significance threshold of feature matching (34) lets
# gross errors through. Chosen on seed 102 (the tuning scene, never reported): its wrong query
# poses off by 0.8 m or more scored 5-36 but one (123), its mapping frames localized to 3-28 cm
# scored 120-1381.
NEUMAP_MIN_CONFIDENCE = 100.0


@dataclass
class NeumapLocalizeConfig:
    min_confidence: float = 0.5  # sigmoid of the in-voxel logit; lower predictions are dropped
    probe_keypoints: int = 256
    max_active_voxels: int = 8
    min_voxel_points: int = 40  # a voxel gets its own PnP-RANSAC with this many confident predictions
    voxel_pnp_error_px: float = 12.0  # that PnP's inlier threshold
    pnp: PnPConfig = field(default_factory=lambda: PnPConfig(max_error_px=12.0, min_confidence=NEUMAP_MIN_CONFIDENCE))


@dataclass
class Predictions:
    """Confident scene coordinates: keypoint ``keypoint[i]`` lies at ``points[i]`` (world) per voxel ``voxel[i]``."""

    keypoint: np.ndarray  # (P,) int
    voxel: np.ndarray  # (P,) int
    points: np.ndarray  # (P, 3) float64
    confidence: np.ndarray  # (P,)


@torch.inference_mode()
def regress(
    decoder: TransDecoder, neumap: NeumapMap, descriptors: torch.Tensor, voxels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """World coordinates (V', N, 3) and in-voxel confidences (V', N) of N embedded keypoint
    descriptors (N, D) (``decoder.embed``) in each of ``voxels`` (V',)."""
    index = torch.from_numpy(voxels)
    offsets, logits = decoder.decode(
        descriptors.expand(len(voxels), -1, -1),
        neumap.codes.codes[index],
        neumap.codes.weights[index],
        neumap.kept[index],
    )
    table = neumap.table
    points = table.median[voxels][:, None] + offsets.numpy().astype(np.float64) * table.size
    return points, torch.sigmoid(logits).numpy()


def active_voxels(
    decoder: TransDecoder, neumap: NeumapMap, descriptors: torch.Tensor, config: NeumapLocalizeConfig
) -> np.ndarray:
    """The voxels with the most confident predictions of the probe keypoints (at least one)."""
    every = np.arange(len(neumap.table))
    if len(every) <= config.max_active_voxels:
        return every
    _, confidence = regress(decoder, neumap, descriptors[: config.probe_keypoints], every)
    votes = (confidence > config.min_confidence).sum(axis=1)
    ranked = np.argsort(-votes, kind="stable")[: config.max_active_voxels]
    return np.sort(ranked[votes[ranked] > 0])


def predict(
    decoder: TransDecoder, neumap: NeumapMap, descriptors: np.ndarray, config: NeumapLocalizeConfig
) -> Predictions:
    """Confident predictions of the query's keypoints (descriptors (N, C), strongest first)."""
    with torch.inference_mode():
        tensor = decoder.embed(torch.from_numpy(np.ascontiguousarray(descriptors, np.float32)))
    voxels = active_voxels(decoder, neumap, tensor, config)
    if not len(voxels):
        return Predictions(np.zeros(0, int), np.zeros(0, int), np.zeros((0, 3)), np.zeros(0))
    points, confidence = regress(decoder, neumap, tensor, voxels)
    best = confidence.argmax(axis=0)  # a point lies in one voxel: the most confident one claims it
    keypoint = np.flatnonzero(confidence[best, np.arange(len(best))] > config.min_confidence)
    voxel_index = best[keypoint]
    return Predictions(keypoint, voxels[voxel_index], points[voxel_index, keypoint], confidence[voxel_index, keypoint])


@dataclass
class NeumapPose:
    result: PnPResult
    predictions: int  # confident predictions
    voxels_with_pnp: int
    correspondences: int  # the union of the per-voxel inliers
    points2d: np.ndarray  # (P, 2) of every confident prediction (``result.inliers`` indexes them)
    points3d: np.ndarray  # (P, 3)
    seconds: dict[str, float]


def voxel_inliers(
    keypoints: np.ndarray, predictions: Predictions, camera: Camera, config: NeumapLocalizeConfig
) -> tuple[np.ndarray, int]:
    """Indices into ``predictions`` of the inliers of every voxel's own PnP-RANSAC, and how many
    voxels had one."""
    per_voxel = PnPConfig(
        max_error_px=config.voxel_pnp_error_px, min_inliers=4, min_confidence=0, max_focal_deviation=0, refine=False
    )
    chosen, voxels_with_pnp = [], 0
    for voxel in np.unique(predictions.voxel):
        rows = np.flatnonzero(predictions.voxel == voxel)
        if len(rows) < config.min_voxel_points:
            continue
        voxels_with_pnp += 1
        result = estimate_pose(keypoints[predictions.keypoint[rows]], predictions.points[rows], camera, per_voxel)
        if result.pose is not None:
            chosen.append(rows[result.inliers])
    return (np.concatenate(chosen) if chosen else np.zeros(0, int)), voxels_with_pnp


def judged_on_every_prediction(
    points2d: np.ndarray, points3d: np.ndarray, union: np.ndarray, camera: Camera, config: PnPConfig
) -> PnPResult:
    """PnP-RANSAC on the ``union`` rows of the confident predictions (N, 2) - (N, 3), its pose's
    inliers and evidence taken over all N, and refused by ``config``'s rules on that evidence."""
    unjudged = dataclasses.replace(config, min_inliers=4, min_confidence=0.0, max_focal_deviation=0.0)
    found = estimate_pose(points2d[union], points3d[union], camera, unjudged)
    if found.pose is None:
        return found
    pixels, _ = project_points(points3d, found.pose, camera)
    errors = np.linalg.norm(pixels - points2d, axis=1)
    inliers = np.isfinite(errors) & (errors <= config.max_error_px)
    evidence = pose_evidence(points2d, points3d, inliers, found.pose, camera, config.max_error_px)
    reason = refusal(evidence, camera, config)
    return PnPResult(None if reason else found.pose, inliers, reason, evidence)


def localize_neumap(
    keypoints: np.ndarray,
    descriptors: np.ndarray,
    camera: Camera,
    decoder: TransDecoder,
    neumap: NeumapMap,
    config: NeumapLocalizeConfig,
) -> NeumapPose:
    """Pose of a query from its keypoints (N, 2) (COLMAP pixels) and descriptors (N, C)."""
    started = time.perf_counter()
    predictions = predict(decoder, neumap, descriptors, config)
    regressed = time.perf_counter()
    rows, voxels_with_pnp = voxel_inliers(keypoints, predictions, camera, config)
    points2d, points3d = keypoints[predictions.keypoint], predictions.points
    if voxels_with_pnp == 0:
        most = np.bincount(predictions.voxel).max() if len(predictions.voxel) else 0
        result = PnPResult(
            None,
            np.zeros(0, bool),
            f"no voxel has {config.min_voxel_points} confident scene coordinates (most in one voxel: {most}, "
            f"{len(predictions.keypoint)} confident of {len(keypoints)} keypoints)",
        )
    else:
        result = judged_on_every_prediction(points2d, points3d, rows, camera, config.pnp)
    seconds = {"regression": regressed - started, "pnp": time.perf_counter() - regressed}
    return NeumapPose(result, len(predictions.keypoint), voxels_with_pnp, len(rows), points2d, points3d, seconds)
