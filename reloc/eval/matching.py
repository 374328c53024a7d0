"""Matcher evaluation: relative pose AUC on ``pairs_with_gt.txt`` files and mean matching
accuracy against ground-truth homographies (HPatches layout).

Relative pose: essential matrix by LO-RANSAC (poselib) from the matches in original pixels and
the pairs' intrinsics, error = max(rotation angle error, angle between translation directions),
the translation angle taken as min(e, 180 - e) as in the LoFTR/XFeat protocol. A pair with fewer
than 5 matches or no model counts as infinite error. AUC@t is the area under the recall-error
curve up to t degrees, in percent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import poselib

from ..datasets.base import read_image, require_file
from ..datasets.pairs import PairWithGT, read_pairs_with_gt
from ..errors import DatasetError
from ..rotation import rotation_angle_deg
from ..types import Pose

AUC_THRESHOLDS_DEG = (5, 10, 20)
MMA_THRESHOLDS_PX = (1, 3, 5)


def pose_auc(errors: np.ndarray, thresholds=AUC_THRESHOLDS_DEG) -> list[float]:
    """AUC (percent) of the recall curve of ``errors`` (degrees; inf for failures) up to each threshold."""
    errors = np.sort(np.asarray(errors, np.float64))
    recall = (np.arange(len(errors)) + 1) / len(errors)
    errors, recall = np.concatenate([[0.0], errors]), np.concatenate([[0.0], recall])
    aucs = []
    for threshold in thresholds:
        last = np.searchsorted(errors, threshold)
        e = np.concatenate([errors[:last], [threshold]])
        r = np.concatenate([recall[:last], [recall[last - 1]]])
        aucs.append(100 * float(np.trapezoid(r, x=e) / threshold))
    return aucs


def relative_pose_error(estimate: Pose, truth: Pose) -> float:
    """max(rotation error, translation direction error) in degrees."""
    rotation_error = rotation_angle_deg(estimate.R @ truth.R.T)
    cosine = estimate.t @ truth.t / max(np.linalg.norm(estimate.t) * np.linalg.norm(truth.t), 1e-12)
    translation_error = np.degrees(np.arccos(np.clip(cosine, -1, 1)))
    return max(rotation_error, min(translation_error, 180 - translation_error))


def estimate_relative_pose(
    points0: np.ndarray, points1: np.ndarray, pair: PairWithGT, size0, size1, max_error_px: float
) -> Pose | None:
    """cam1_from_cam0 from matches (COLMAP pixels) or None."""
    if len(points0) < 5:
        return None

    def camera(K, size):
        return {"model": "PINHOLE", "width": size[0], "height": size[1], "params": [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]}

    pose, info = poselib.estimate_relative_pose(
        points0, points1, camera(pair.K0, size0), camera(pair.K1, size1), {"max_epipolar_error": max_error_px}
    )
    if info.get("num_inliers", 0) < 5:
        return None
    return Pose.from_matrix(np.vstack([pose.Rt, [0, 0, 0, 1]]))


@dataclass
class PairResult:
    name0: str
    name1: str
    matches: int
    seconds: float
    error_deg: float


def evaluate_pairs(
    matcher,
    pairs_file: Path,
    images_root: Path,
    max_error_px: float,
    on_pair: Callable[[PairResult], None] | None = None,
    resize_max: int = 0,
) -> list[PairResult]:
    """Match every pair of ``pairs_file`` (images relative to ``images_root``) and score its pose.
    ``max_error_px`` is the RANSAC threshold in pixels of the matcher's image (long side
    ``resize_max``; 0: original). ``seconds`` is the matcher's wall time on the decoded images
    (decoding excluded, resizing included)."""
    results = []
    for pair in read_pairs_with_gt(pairs_file):
        if pair.rotation0 or pair.rotation1:
            raise DatasetError(
                f"{pairs_file}: pair {pair.name0} {pair.name1} asks for an EXIF rotation; rotated pairs are not "
                "supported"
            )
        image0 = read_image(require_file(images_root / pair.name0, "image"))
        image1 = read_image(require_file(images_root / pair.name1, "image"))
        start = time.perf_counter()
        points0, points1 = matcher.match(image0, image1)
        seconds = time.perf_counter() - start
        size0, size1 = (image0.shape[1], image0.shape[0]), (image1.shape[1], image1.shape[0])
        to_original = max(*size0, *size1) / resize_max if resize_max else 1.0
        estimate = estimate_relative_pose(points0, points1, pair, size0, size1, max_error_px * to_original)
        error = relative_pose_error(estimate, pair.cam1_from_cam0) if estimate is not None else float("inf")
        result = PairResult(pair.name0, pair.name1, len(points0), seconds, error)
        results.append(result)
        if on_pair is not None:
            on_pair(result)
    return results


def pair_metrics(results: list[PairResult]) -> dict:
    """``auc_5``, ``auc_10``, ``auc_20`` (percent), ``matches_per_pair`` (mean), ``ms_per_pair``
    (median), ``n_pairs``, ``n_failed``."""
    errors = np.array([r.error_deg for r in results])
    aucs = pose_auc(errors)
    return {
        "n_pairs": len(results),
        "n_failed": int(np.isinf(errors).sum()),
        **{f"auc_{t}": auc for t, auc in zip(AUC_THRESHOLDS_DEG, aucs)},
        "matches_per_pair": float(np.mean([r.matches for r in results])),
        "ms_per_pair": 1000 * float(np.median([r.seconds for r in results])),
    }


def read_homography(path: Path) -> np.ndarray:
    try:
        homography = np.loadtxt(require_file(path, "homography"))
    except ValueError as error:
        raise DatasetError(f"{path}: not a 3x3 homography ({error})") from None
    if homography.shape != (3, 3) or not np.isfinite(homography).all():
        raise DatasetError(f"{path}: not a finite 3x3 homography")
    return homography


def homography_errors(points0: np.ndarray, points1: np.ndarray, homography: np.ndarray) -> np.ndarray:
    """Distances (N,) between ``points1`` and ``points0`` mapped by an HPatches homography. HPatches
    homographies act on pixel-index coordinates (pixel centres at integers); points are COLMAP."""
    mapped = np.hstack([points0 - 0.5, np.ones((len(points0), 1))]) @ homography.T
    return np.linalg.norm(mapped[:, :2] / mapped[:, 2:] + 0.5 - points1, axis=1)


def hpatches_sequence(root: Path) -> list[tuple[Path, Path, Path]]:
    """(image 1, image k, H_1_k) for k = 2..6 of an HPatches sequence folder."""
    reference = next(
        (root / f"1{suffix}" for suffix in (".ppm", ".png", ".jpg") if (root / f"1{suffix}").is_file()), None
    )
    if reference is None:
        raise DatasetError(f"{root}: no reference image 1.ppm/1.png/1.jpg (HPatches layout)")
    triples = []
    for k in range(2, 7):
        image = root / f"{k}{reference.suffix}"
        if image.is_file():
            triples.append((reference, image, root / f"H_1_{k}"))
    if not triples:
        raise DatasetError(f"{root}: no images 2-6 next to {reference.name}")
    return triples


def mean_matching_accuracy(errors_per_pair: list[np.ndarray], thresholds=MMA_THRESHOLDS_PX) -> dict:
    """``mma_1``, ``mma_3``, ``mma_5``: the share of matches within t px, averaged over pairs."""
    return {
        f"mma_{t}": float(np.mean([(e <= t).mean() if len(e) else 0.0 for e in errors_per_pair])) for t in thresholds
    }
