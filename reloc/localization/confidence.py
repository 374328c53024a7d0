"""How much a PnP pose can be trusted, from what the estimator saw.

Every pose gets a :class:`~reloc.types.PoseEvidence`: its inliers among the 2D-3D matches, how
much of the image they cover, their reprojection errors, and an a-contrario significance (Moisan
and Stival's number of false alarms for the inlier set): how unlikely it is that this many of the
matches fall this close to their projections by chance, if the matches were wrong.

For ``n`` matches of which ``k`` are inliers within ``e`` pixels of their projection, a wrong
match lands that close with probability ``p = pi e^2 / (W H)`` (its projection anywhere in the
W x H image), and RANSAC tried the C(n, 3) minimal samples at most, so

    NFA = C(n, 3) C(n - 3, k - 3) p^(k - 3),    significance = -log10 NFA.

Inliers bunched in one corner of the image (a poster that another room shares) are one piece
of evidence, not many: the confidence is the significance scaled down by the inliers' spread,
``significance * min(1, coverage / FULL_COVERAGE)``. A pose whose confidence is below
``PnPConfig.min_confidence`` is refused.

A wrong focal length still gives hundreds of inliers, on a wrong pose. So the pose is refined
once more with the focal length free, on the matches within 3x the inlier threshold: the ratio
of the focal length they fit to the given one is ``focal_ratio``, the matches within the inlier
threshold under it ``focal_inliers``. A pose is refused, naming the focal the matches fit, when
that focal is farther from the given one than ``PnPConfig.max_focal_deviation`` and explains
``PnPConfig.min_focal_gain`` times the inliers: a view of one wall leaves the focal loose (it
trades against the distance to the wall), and there a far focal explains hardly more matches.
Thresholds and the false-accept / false-reject rates they give are in BENCHMARKS.md.
"""

from __future__ import annotations

import math

import numpy as np
import pycolmap

from ..geometry.projection import project_points
from ..types import Camera, Pose, PoseEvidence

COVERAGE_GRID = 8  # inlier coverage: share of the cells of an 8 x 8 grid over the image holding one
FULL_COVERAGE = 0.25  # inliers in a quarter of the cells or more count fully
MIN_ERROR_RADIUS_PX = 0.5  # a few inliers fitted exactly by the pose do not make chance vanish
FOCAL_CHECK_SPAN = 3.0  # the focal check refines on the matches within this many inlier thresholds


def log10_binomial(n: int, k: int) -> float:
    """log10 of the binomial coefficient C(n, k), 0 <= k <= n."""
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(10)


def significance(matches: int, inliers: int, max_error_px: float, camera: Camera) -> float:
    """-log10 of the number of false alarms of ``inliers`` of ``matches`` within ``max_error_px``."""
    if inliers < 4 or matches < inliers:
        return 0.0
    radius = max(max_error_px, MIN_ERROR_RADIUS_PX)
    chance = min(1.0, math.pi * radius**2 / (camera.width * camera.height))
    nfa = log10_binomial(matches, 3) + log10_binomial(matches - 3, inliers - 3) + (inliers - 3) * math.log10(chance)
    return -nfa


def coverage(points2d: np.ndarray, camera: Camera) -> float:
    """Share of the cells of a COVERAGE_GRID x COVERAGE_GRID grid over the image holding a point
    of ``points2d`` (K, 2, COLMAP pixels)."""
    if len(points2d) == 0:
        return 0.0
    cells = np.floor(points2d / [camera.width, camera.height] * COVERAGE_GRID).astype(np.int64)
    cells = np.clip(cells, 0, COVERAGE_GRID - 1)
    return len(np.unique(cells[:, 0] * COVERAGE_GRID + cells[:, 1])) / COVERAGE_GRID**2


def fitted_focal(
    points2d: np.ndarray, points3d: np.ndarray, errors: np.ndarray, pose: Pose, camera: Camera, max_error_px: float
) -> tuple[float, int]:
    """The focal length the matches fit: the pose refined with the focal free on the matches
    within FOCAL_CHECK_SPAN * ``max_error_px`` of their projection (``errors`` (N,) px). Returns
    its ratio to the given focal (1.0: they agree; NaN: the matches fit no positive focal) and
    the matches within ``max_error_px`` under it (its inliers)."""
    near = errors < FOCAL_CHECK_SPAN * max_error_px
    if near.sum() < 6:
        return math.nan, 0
    options = pycolmap.AbsolutePoseRefinementOptions()
    options.refine_focal_length = True
    refined_camera = camera.to_pycolmap()
    result = pycolmap.refine_absolute_pose(
        pose.to_pycolmap(), points2d.astype(np.float64), points3d.astype(np.float64), near, refined_camera, options
    )
    focals = (refined_camera.focal_length_x, refined_camera.focal_length_y)
    if result is None or not all(math.isfinite(focal) and focal > 0 for focal in focals):
        return math.nan, 0
    fitted = Camera.from_pycolmap(refined_camera)
    pixels, _ = project_points(points3d, Pose.from_pycolmap(result["cam_from_world"]), fitted)
    inliers = int(np.sum(np.linalg.norm(pixels - points2d, axis=1) < max_error_px))
    return float(np.mean(np.asarray(fitted.focal_length) / np.asarray(camera.focal_length))), inliers


def pose_evidence(
    points2d: np.ndarray, points3d: np.ndarray, inliers: np.ndarray, pose: Pose, camera: Camera, max_error_px: float
) -> PoseEvidence:
    """Evidence for ``pose`` (cam_from_world) from the matches ``points2d`` (N, 2, COLMAP
    pixels) - ``points3d`` (N, 3, world), RANSAC's ``inliers`` (N,) bool and its threshold."""
    pixels, _ = project_points(points3d, pose, camera)
    errors = np.linalg.norm(pixels - points2d, axis=1)
    errors = np.where(np.isfinite(errors), errors, np.inf)
    count = int(inliers.sum())
    inlier_errors = errors[inliers]
    spread = coverage(points2d[inliers], camera)
    chance = significance(len(points2d), count, float(inlier_errors.max()) if count else 0.0, camera)
    focal_ratio, focal_inliers = fitted_focal(points2d, points3d, errors, pose, camera, max_error_px)
    return PoseEvidence(
        inliers=count,
        matches=len(points2d),
        inlier_ratio=count / max(len(points2d), 1),
        coverage=spread,
        median_error_px=float(np.median(inlier_errors)) if count else math.inf,
        significance=chance,
        focal_ratio=focal_ratio,
        focal_inliers=focal_inliers,
        confidence=chance * min(1.0, spread / FULL_COVERAGE),
    )
