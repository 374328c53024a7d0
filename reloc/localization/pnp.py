"""Absolute pose from 2D-3D correspondences: pycolmap LO-RANSAC PnP with non-linear refinement,
and the evidence for the pose (:mod:`.confidence`); a pose without enough is refused."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pycolmap

from ..errors import require_range
from ..types import Camera, Pose, PoseEvidence
from .confidence import pose_evidence


@dataclass
class PnPConfig:
    """RANSAC threshold and the refusals. ``min_confidence``, ``max_focal_deviation`` and
    ``min_focal_gain`` were chosen by ``benchmarks/confidence.py`` on synthetic seeds 1 and 2,
    which BENCHMARKS.md does not report."""

    max_error_px: float = 4.0  # RANSAC inlier threshold
    min_inliers: int = 20  # fewer inliers: the query is reported failed
    min_confidence: float = 34.0  # a pose whose confidence (see .confidence) is lower is refused
    max_focal_deviation: float = 0.05  # refused when the matches fit a focal this far off the given one (0: no check)
    min_focal_gain: float = 1.1  # ... and that focal explains this many times the inliers
    refine: bool = True

    def __post_init__(self) -> None:
        require_range(self, "max_error_px", above=0.0)
        require_range(self, "min_inliers", low=1)
        require_range(self, "min_confidence", low=0.0)
        require_range(self, "max_focal_deviation", low=0.0)
        require_range(self, "min_focal_gain", low=1.0)


@dataclass
class PnPResult:
    pose: Pose | None
    inliers: np.ndarray  # (N,) bool
    reason: str = ""
    evidence: PoseEvidence | None = None  # of the pose found, also when it was refused
    found: Pose | None = None  # the pose RANSAC found, also when it was refused


def estimate_pose(points2d: np.ndarray, points3d: np.ndarray, camera: Camera, config: PnPConfig) -> PnPResult:
    """``points2d`` (N, 2) COLMAP pixels, ``points3d`` (N, 3) world -> cam_from_world or failure."""
    none = np.zeros(len(points2d), bool)
    if len(points2d) < max(4, config.min_inliers):
        return PnPResult(None, none, f"too few 2D-3D matches ({len(points2d)} < {max(4, config.min_inliers)})")
    estimation = pycolmap.AbsolutePoseEstimationOptions()
    estimation.ransac.max_error = config.max_error_px
    estimation.ransac.random_seed = 0
    refinement = pycolmap.AbsolutePoseRefinementOptions()
    if config.refine:
        result = pycolmap.estimate_and_refine_absolute_pose(
            points2d.astype(np.float64), points3d.astype(np.float64), camera.to_pycolmap(), estimation, refinement
        )
    else:
        result = pycolmap.estimate_absolute_pose(
            points2d.astype(np.float64), points3d.astype(np.float64), camera.to_pycolmap(), estimation
        )
    if result is None:
        return PnPResult(None, none, "PnP RANSAC found no pose")
    inliers = np.asarray(result["inlier_mask"], bool)
    pose = Pose.from_pycolmap(result["cam_from_world"])
    evidence = pose_evidence(points2d, points3d, inliers, pose, camera, config.max_error_px)
    reason = refusal(evidence, camera, config)
    return PnPResult(None if reason else pose, inliers, reason, evidence, found=pose)


def focal_mismatch(evidence: PoseEvidence, max_deviation: float, min_gain: float) -> bool:
    """The matches fit a focal more than ``max_deviation`` off the given one, with ``min_gain``
    times the inliers (see :mod:`.confidence`)."""
    return abs(evidence.focal_ratio - 1) > max_deviation and evidence.focal_inliers >= min_gain * evidence.inliers


def refusal(evidence: PoseEvidence, camera: Camera, config: PnPConfig) -> str:
    """Why a pose with this evidence is refused ("" when it is accepted)."""
    if evidence.inliers < config.min_inliers:
        return f"too few inliers ({evidence.inliers} < {config.min_inliers})"
    if evidence.confidence < config.min_confidence:
        return (
            f"pose not confident: confidence {evidence.confidence:.1f} < {config.min_confidence:g} "
            f"({evidence.inliers} of {evidence.matches} matches are inliers, "
            f"covering {100 * evidence.coverage:.0f} % of the image)"
        )
    if config.max_focal_deviation and focal_mismatch(evidence, config.max_focal_deviation, config.min_focal_gain):
        given = float(np.mean(camera.focal_length))
        return (
            f"the matches fit a focal length of {given * evidence.focal_ratio:.0f} px (x{evidence.focal_ratio:.2f}) "
            f"with {evidence.focal_inliers} inliers, better than the given {given:.0f} px with {evidence.inliers}: "
            "check the query's intrinsics"
        )
    return ""
