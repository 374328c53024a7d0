"""Localization stage ``pose.pnp``: match each query to its retrieved keyframes, lift the matches
to the keyframes' landmarks and estimate the pose with LO-RANSAC PnP, in keyframe rounds
(:mod:`.rounds`). A query with too few inliers after the last round is reported failed; it never
receives its retrieval prior."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import require_range
from ..features.base import Features, FeatureStore
from ..io.map_folder import LANDMARKS_FILE
from ..io.memo import read_once
from ..mapping.store import SparseMap, read_sparse_map
from ..matching import MatcherConfig, build_matcher
from ..pipeline.progress import track
from ..pipeline.registry import Stage, register_stage
from ..types import Frame, QueryResult
from .guided import ViewedKeyframes
from .pnp import PnPConfig
from .rounds import Correspondences, query_in_rounds


@dataclass
class LocalizeConfig:
    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    pnp: PnPConfig = field(default_factory=PnPConfig)
    enough_correspondences: int = 0  # a round stops matching keyframes once it found this many (0: no stop)
    keyframes_per_round: int = 0  # retrieved keyframes per round; 0: all of them in one round
    confident_inliers: int = 0  # a pose with fewer inliers than this goes on to the next round (0: any pose stops)
    guided_round: bool = False  # no confident round: one more, keyframes seeing most in the best pose's view

    def __post_init__(self) -> None:
        for key in ("enough_correspondences", "keyframes_per_round", "confident_inliers"):
            require_range(self, key, low=0)


def correspondences_2d3d(
    query: Features,
    retrieved: list[str],
    sparse_map: SparseMap,
    matcher,
    query_size: tuple[int, int],
    enough: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Unique (query keypoint index, landmark id) pairs from matches to the landmark observations
    of the retrieved keyframes, in retrieval order, stopping once there are ``enough`` of them
    (0: all keyframes)."""
    pairs: set[tuple[int, int]] = set()
    for name in retrieved:
        if enough and len(pairs) >= enough:
            break
        observations = sparse_map.observations(name)
        camera = sparse_map.cameras[name]
        matches = matcher.match(query, observations.features(), query_size, (camera.width, camera.height))
        ids = observations.point_ids[matches[:, 1]] if len(matches) else np.zeros(0, np.int64)
        pairs.update(zip(matches[:, 0].tolist(), ids.tolist()))
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    keypoint_index, landmark_index = np.array(sorted(pairs)).T
    return keypoint_index, landmark_index


@register_stage
class LocalizePnP(Stage):
    name = "pose.pnp"
    Config = LocalizeConfig
    needs = (LANDMARKS_FILE,)
    inputs = {"frames": list[Frame], "features": FeatureStore, "retrieved": dict[str, list[str]], "map_dir": Path}
    outputs = {"results": list[QueryResult]}
    cacheable = False

    def run(self, frames: list[Frame], features: FeatureStore, retrieved: dict[str, list[str]], map_dir: Path) -> dict:
        sparse_map = read_once(read_sparse_map, map_dir / LANDMARKS_FILE)
        matcher = build_matcher(self.config.matcher, sparse_map.extractor)
        viewed = ViewedKeyframes(sparse_map) if self.config.guided_round else None
        results = []
        for frame in track(frames, f"matching and PnP for {len(frames)} queries"):
            query = features.read(frame.name)
            correspondences = self.keyframe_matches(
                query, (frame.camera.width, frame.camera.height), sparse_map, matcher
            )
            guided = functools.partial(viewed.rank, camera=frame.camera) if viewed else None
            results.append(
                query_in_rounds(frame, retrieved[frame.name], correspondences, sparse_map.points, self.config, guided)
            )
        return {"results": results}

    def keyframe_matches(
        self, query: Features, size: tuple[int, int], sparse_map: SparseMap, matcher
    ) -> Correspondences:
        """The rounds' correspondence source: matches of the query's keypoints to each round's
        keyframes, accumulated as unique (keypoint, landmark) pairs in sorted order."""
        pairs: set[tuple[int, int]] = set()

        def correspondences(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
            keypoint_index, landmark_ids = correspondences_2d3d(
                query, names, sparse_map, matcher, size, self.config.enough_correspondences
            )
            pairs.update(zip(keypoint_index.tolist(), landmark_ids.tolist()))
            keypoint_index, landmark_ids = np.array(sorted(pairs), np.int64).reshape(-1, 2).T
            return query.keypoints[keypoint_index], landmark_ids

        return correspondences
