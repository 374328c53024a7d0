"""Pose errors as the 7-Scenes and Cambridge protocols define them."""

from __future__ import annotations

import math

import numpy as np

from ..rotation import rotation_angle_deg
from ..types import Pose


def pose_error(estimate: Pose, ground_truth: Pose) -> tuple[float, float]:
    """(translation error in metres, rotation error in degrees).

    Translation error is the distance between camera centres; rotation error is the angle of
    ``R_est @ R_gt.T``.
    """
    dt = float(np.linalg.norm(estimate.center - ground_truth.center))
    dr = rotation_angle_deg(estimate.R @ ground_truth.R.T)
    return dt, dr


def scored_errors(estimate: Pose | None, ground_truth: Pose) -> tuple[float, float]:
    """The scoring rule for one query: (translation error in cm, rotation error in degrees), and
    (inf, inf) for a query without a pose: a failed query counts as infinitely wrong."""
    if estimate is None:
        return math.inf, math.inf
    t_m, r_deg = pose_error(estimate, ground_truth)
    return 100.0 * t_m, r_deg
