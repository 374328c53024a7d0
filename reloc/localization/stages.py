"""Localization stage ``pose.pnp``: match each query to its retrieved keyframes, lift the matches
to the keyframes' landmarks and estimate the pose with LO-RANSAC PnP. A query with too few
inliers is reported failed; it never receives its retrieval prior."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..features.base import Features, FeatureStore
from ..features.stages import FEATURES_FILE
from ..mapping.store import read_sparse_map
from ..matching import MatcherConfig, build_matcher
from ..pipeline.registry import Stage, register_stage
from ..pipeline.timing import query_timer
from ..types import Frame, QueryResult
from .pnp import PnPConfig, estimate_pose


@dataclass
class LocalizeConfig:
    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    pnp: PnPConfig = field(default_factory=PnPConfig)
    enough_correspondences: int = 0  # stop matching retrieved keyframes once this many (0: match all)


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
        for frame in frames:
            query = features.read(frame.name)
            size = (frame.camera.width, frame.camera.height)
            with query_timer("matching", frame.name):
                keypoint_index, landmark_index = correspondences_2d3d(
                    query, retrieved[frame.name], map_features, sparse_map.point_ids, matcher, size, sizes,
                    self.config.enough_correspondences)
            with query_timer("pnp", frame.name):
                estimate = estimate_pose(query.keypoints[keypoint_index], sparse_map.points[landmark_index], frame.camera, self.config.pnp)
            results.append(QueryResult(frame.name, estimate.pose, estimate.reason, int(estimate.inliers.sum()),
                                       details={"num_matches": int(len(keypoint_index)), "retrieved": retrieved[frame.name]}))
        return {"results": results}
