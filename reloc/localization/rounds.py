"""The keyframe-rounds loop every keyframe-matching localizer shares.

Retrieved keyframes are matched a round at a time; after each round PnP runs on every 2D-3D
correspondence found so far. The rounds go on until a pose has ``confident_inliers`` inliers;
the answer is the round with the most inliers. When no round was confident but one found a pose
(accepted with few inliers, or refused), a **guided round** may follow: the keyframes that see
the most landmarks in the view of that pose (``guided_keyframes``), when retrieval missed them.
A query whose best round has no pose is reported failed with PnP's reason, never given a prior.
What varies between localizers is how a round's keyframes give correspondences: the
``correspondences`` callback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..pipeline.timing import query_timer
from ..types import Camera, Frame, Pose, QueryRecord, QueryResult, Round
from .pnp import PnPConfig, PnPResult, estimate_pose

Correspondences = Callable[[list[str]], tuple[np.ndarray, np.ndarray]]
GuidedKeyframes = Callable[[Pose, set[str]], list[str]]
"""Keyframes (not in the given set) that see the most landmarks in the view of a pose."""


class RoundsSettings(Protocol):
    """The fields of a keyframe-matching localizer's config that the rounds read."""

    pnp: PnPConfig
    keyframes_per_round: int
    confident_inliers: int


@dataclass
class RoundsResult:
    estimate: PnPResult  # of the round with the most inliers
    points2d: np.ndarray  # (N, 2) query pixels (COLMAP) of that round's correspondences
    landmark_ids: np.ndarray  # (N,) landmark id of each
    rounds: list[Round]  # every round run, the answer's and the others

    def query_result(self, name: str, retrieved: list[str]) -> QueryResult:
        """Query ``name``'s result: the answer's pose (or PnP's reason), its inliers, and the
        record of the rounds."""
        inliers = self.estimate.inliers
        record = QueryRecord(
            retrieved,
            self.rounds,
            len(self.landmark_ids),
            self.points2d[inliers],
            self.landmark_ids[inliers],
            evidence=self.estimate.evidence,
        )
        return QueryResult(name, self.estimate.pose, self.estimate.reason, int(inliers.sum()), record=record)


class FirstCorrespondences:
    """2D-3D correspondences gathered keyframe after keyframe for one query; a landmark keeps the
    first query point it was found at."""

    def __init__(self) -> None:
        self.points2d: list[np.ndarray] = []
        self.landmark_ids: list[int] = []
        self.seen: set[int] = set()

    def add(self, points2d: np.ndarray, landmark_ids: np.ndarray) -> None:
        """Add query pixels (N, 2) observing ``landmark_ids`` (N,), skipping landmarks already found."""
        for point, landmark in zip(points2d, landmark_ids):
            if int(landmark) not in self.seen:
                self.seen.add(int(landmark))
                self.points2d.append(point)
                self.landmark_ids.append(int(landmark))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Every correspondence so far: query pixels (N, 2) and landmark ids (N,)."""
        return np.array(self.points2d).reshape(-1, 2), np.array(self.landmark_ids, np.int64)


def localize_in_rounds(
    name: str,
    retrieved: list[str],
    correspondences: Correspondences,
    points: np.ndarray,
    camera: Camera,
    pnp: PnPConfig,
    keyframes_per_round: int = 0,
    confident_inliers: int = 0,
    guided_keyframes: GuidedKeyframes | None = None,
) -> RoundsResult:
    """Estimate the pose of query ``name`` against landmarks ``points`` (L, 3, world).

    ``correspondences(keyframes)`` matches the query to a round's keyframes and returns every
    correspondence so far (this round's and the earlier ones'): query pixels (N, 2, COLMAP) and
    landmark ids (N,). ``keyframes_per_round`` 0 puts all retrieved keyframes in one round;
    ``confident_inliers`` 0 stops at the first pose. ``guided_keyframes`` (optional) gives the
    keyframes of the guided round from the unconfident pose with the most inliers. Matching and
    PnP time go to the query's "matching" and "pnp" timings."""
    per_round = keyframes_per_round or max(1, len(retrieved))
    empty = (np.zeros((0, 2)), np.zeros(0, np.int64))
    best = RoundsResult(PnPResult(None, np.zeros(0, bool), "no keyframe was retrieved"), *empty, [])
    rounds: list[Round] = []
    tentative: PnPResult | None = None  # the found pose (accepted or refused) with the most inliers

    def run_round(keyframes: list[str]) -> bool:
        """Match and PnP one round; True when its pose is confident."""
        nonlocal best, tentative
        with query_timer("matching", name):
            points2d, landmark_ids = correspondences(keyframes)
        with query_timer("pnp", name):
            estimate = estimate_pose(points2d, points[landmark_ids], camera, pnp)
        rounds.append(Round(keyframes, int(len(landmark_ids)), int(estimate.inliers.sum())))
        if best.estimate.pose is None or (
            estimate.pose is not None and estimate.inliers.sum() > best.estimate.inliers.sum()
        ):
            best = RoundsResult(estimate, points2d, landmark_ids, rounds)
        if estimate.found is not None and (tentative is None or estimate.inliers.sum() > tentative.inliers.sum()):
            tentative = estimate
        return estimate.pose is not None and estimate.inliers.sum() >= confident_inliers

    confident = False
    for start in range(0, len(retrieved), per_round):
        if confident := run_round(retrieved[start : start + per_round]):
            break
    if not confident and guided_keyframes is not None and tentative is not None:
        matched = {keyframe for finished in rounds for keyframe in finished.keyframes}
        with query_timer("matching", name):
            keyframes = guided_keyframes(tentative.found, matched)[:per_round]
        if keyframes:
            run_round(keyframes)
    best.rounds = rounds
    return best


def query_in_rounds(
    frame: Frame,
    retrieved: list[str],
    correspondences: Correspondences,
    points: np.ndarray,
    settings: RoundsSettings,
    guided_keyframes: GuidedKeyframes | None = None,
) -> QueryResult:
    """Query ``frame``'s result from :func:`localize_in_rounds` over its ``retrieved`` keyframes,
    with a localizer config's rounds ``settings``."""
    outcome = localize_in_rounds(
        frame.name,
        retrieved,
        correspondences,
        points,
        frame.camera,
        settings.pnp,
        settings.keyframes_per_round,
        settings.confident_inliers,
        guided_keyframes,
    )
    return outcome.query_result(frame.name, retrieved)
