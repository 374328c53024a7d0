"""Localization stage ``pose.pnp``: match each query to its retrieved keyframes, lift the matches
to the keyframes' landmarks and estimate the pose with LO-RANSAC PnP, in rounds of retrieved
keyframes until a pose is found. A query with too few inliers after the last round is reported
failed; it never receives its retrieval prior."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..features.base import Features, FeatureStore
from ..features.stages import FEATURES_FILE
from ..mapping.store import read_sparse_map
from ..matching import MatcherConfig, build_matcher
from ..pipeline.progress import track
from ..pipeline.registry import Stage, register_stage
from ..pipeline.timing import query_timer
from ..types import Camera, Frame, QueryResult
from .pnp import PnPConfig, PnPResult, estimate_pose, inlier_record


@dataclass
class LocalizeConfig:
    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    pnp: PnPConfig = field(default_factory=PnPConfig)
    enough_correspondences: int = 0  # a round stops matching keyframes once it found this many (0: no stop)
    keyframes_per_round: int = 0  # retrieved keyframes per round; 0: all of them in one round
    confident_inliers: int = 0  # a pose with fewer inliers than this goes on to the next round (0: any pose stops)


def correspondences_2d3d(query: Features, retrieved: list[str], map_features: FeatureStore, point_ids: dict[str, np.ndarray],
                         matcher, query_size: tuple[int, int], reference_sizes: dict[str, tuple[int, int]],
                         enough: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unique (query keypoint index, landmark id) pairs from matches to the keypoints of the
    retrieved keyframes that have a landmark (the others could not give a 2D-3D match), in
    retrieval order, stopping once there are ``enough`` of them (0: all keyframes)."""
    pairs: set[tuple[int, int]] = set()
    for name in retrieved:
        if enough and len(pairs) >= enough:
            break
        features = map_features.read(name)
        with_landmark = np.flatnonzero(point_ids[name] >= 0)
        reference = Features(features.keypoints[with_landmark], features.descriptors[with_landmark], features.scores[with_landmark])
        matches = matcher.match(query, reference, query_size, reference_sizes[name])
        ids = point_ids[name][with_landmark[matches[:, 1]]] if len(matches) else np.zeros(0, np.int64)
        pairs.update(zip(matches[:, 0].tolist(), ids.tolist()))
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    keypoint_index, landmark_index = np.array(sorted(pairs)).T
    return keypoint_index, landmark_index


@dataclass
class RoundsResult:
    estimate: PnPResult
    keypoint_index: np.ndarray  # (N,) query keypoint of each 2D-3D correspondence given to the last PnP
    landmark_index: np.ndarray  # (N,) landmark id of each
    rounds: list[dict]  # per round: keyframes matched, correspondences so far, PnP inliers


def localize_in_rounds(name: str, keypoints: np.ndarray, points: np.ndarray, camera: Camera, retrieved: list[str],
                       match_keyframes: Callable[[list[str]], tuple[np.ndarray, np.ndarray]],
                       config: LocalizeConfig) -> RoundsResult:
    """Estimate the pose of query ``name`` (keypoints (N, 2), COLMAP pixels) against landmarks
    ``points`` (L, 3, world): PnP on the correspondences of the first ``keyframes_per_round``
    retrieved keyframes; while PnP fails or finds fewer than ``confident_inliers`` inliers, add
    the next round's correspondences and estimate again. The answer is the pose of the round with
    the most inliers. ``match_keyframes(names)`` returns (keypoint index, landmark index) arrays
    for keyframes."""
    per_round = config.keyframes_per_round or max(1, len(retrieved))
    keypoint_index, landmark_index = np.zeros(0, np.int64), np.zeros(0, np.int64)
    estimate = PnPResult(None, np.zeros(0, bool), "no keyframe was retrieved")
    best = RoundsResult(estimate, keypoint_index, landmark_index, [])
    rounds = []
    for start in range(0, len(retrieved), per_round):
        keyframes = retrieved[start:start + per_round]
        with query_timer("matching", name):
            new_keypoints, new_landmarks = match_keyframes(keyframes)
            if len(new_keypoints):
                pairs = np.unique(np.stack([np.concatenate([keypoint_index, new_keypoints]),
                                            np.concatenate([landmark_index, new_landmarks])], axis=1), axis=0)
                keypoint_index, landmark_index = pairs[:, 0], pairs[:, 1]
        with query_timer("pnp", name):
            estimate = estimate_pose(keypoints[keypoint_index], points[landmark_index], camera, config.pnp)
        rounds.append({"keyframes": keyframes, "correspondences": int(len(keypoint_index)), "inliers": int(estimate.inliers.sum())})
        if best.estimate.pose is None or (estimate.pose is not None and estimate.inliers.sum() > best.estimate.inliers.sum()):
            best = RoundsResult(estimate, keypoint_index, landmark_index, rounds)
        if estimate.pose is not None and estimate.inliers.sum() >= config.confident_inliers:
            break
    best.rounds = rounds
    return best


@register_stage
class LocalizePnP(Stage):
    name = "pose.pnp"
    Config = LocalizeConfig
    inputs = {"frames": list[Frame], "features": FeatureStore, "retrieved": dict[str, list[str]], "map_dir": Path}
    outputs = {"results": list[QueryResult]}
    cacheable = False

    def run(self, frames: list[Frame], features: FeatureStore, retrieved: dict[str, list[str]], map_dir: Path) -> dict:
        sparse_map = read_sparse_map(map_dir)
        sizes = {name: (camera.width, camera.height) for name, camera in sparse_map.cameras.items()}
        map_features = FeatureStore.open(map_dir / FEATURES_FILE)
        matcher = build_matcher(self.config.matcher, map_features.extractor)
        results = []
        for frame in track(frames, f"matching and PnP for {len(frames)} queries"):
            query = features.read(frame.name)
            size = (frame.camera.width, frame.camera.height)

            def match_keyframes(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
                return correspondences_2d3d(query, names, map_features, sparse_map.point_ids, matcher, size, sizes,
                                            self.config.enough_correspondences)

            outcome = localize_in_rounds(frame.name, query.keypoints, sparse_map.points, frame.camera,
                                         retrieved[frame.name], match_keyframes, self.config)
            inliers = outcome.estimate.inliers
            details = {"num_matches": int(len(outcome.keypoint_index)), "retrieved": retrieved[frame.name],
                       "rounds": outcome.rounds, "inliers": inlier_record(query.keypoints[outcome.keypoint_index[inliers]],
                                                                          outcome.landmark_index[inliers])}
            results.append(QueryResult(frame.name, outcome.estimate.pose, outcome.estimate.reason,
                                       int(outcome.estimate.inliers.sum()), details=details))
        return {"results": results}
