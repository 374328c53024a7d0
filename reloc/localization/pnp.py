"""Absolute pose from 2D-3D correspondences: pycolmap LO-RANSAC PnP with non-linear refinement."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pycolmap

from ..errors import require_range
from ..types import Camera, Pose


@dataclass
class PnPConfig:
    max_error_px: float = 4.0  # RANSAC inlier threshold
    min_inliers: int = 20  # fewer inliers: the query is reported failed
    refine: bool = True

    def __post_init__(self) -> None:
        require_range(self, "max_error_px", above=0.0)
        require_range(self, "min_inliers", low=1)


@dataclass
class PnPResult:
    pose: Pose | None
    inliers: np.ndarray  # (N,) bool
    reason: str = ""


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
    if inliers.sum() < config.min_inliers:
        return PnPResult(None, inliers, f"too few inliers ({int(inliers.sum())} < {config.min_inliers})")
    return PnPResult(Pose.from_pycolmap(result["cam_from_world"]), inliers)
