"""Localization stage ``pose.area_pnp``: each query matched to its retrieved keyframes' images by
an area matcher (MESA or DMESA around any pair matcher, :mod:`reloc.matching.mesa`), the matches
lifted to the map's landmarks, PnP in keyframe rounds.

**Lifting.** The map's landmarks are observed at keyframe keypoints. A match (query point ``q``,
keyframe point ``k``) lifts to the landmark observed nearest to ``k`` when that observation ``o``
lies within ``lift_px`` (pixels at a 640-px long side of the keyframe); the query point is moved by
the same offset, ``q + (o - k)·s``, with ``s`` the ratio of the two images' long sides (a local
translation model, exact up to the local scale change over at most ``lift_px``). A landmark lifted
more than once keeps its nearest lift; one already found in an earlier keyframe keeps that one.
A query without a confident pose after its rounds is reported failed, never given its prior.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from ..datasets.base import read_image
from ..errors import RelocError
from ..io.map_folder import KEYFRAME_IMAGES, LANDMARKS_FILE
from ..mapping.keyframe_images import keyframe_image_path
from ..mapping.store import read_sparse_map
from ..matching.mesa.matcher import AreaMatcher, AreaMatcherConfig
from ..matching.pairwise import PairMatcherConfig
from ..pipeline.progress import track
from ..pipeline.registry import Stage, register_stage
from ..types import Frame, QueryResult
from .pnp import PnPConfig
from .rounds import FirstCorrespondences, query_in_rounds


@dataclass
class AreaLocalizeConfig:
    matcher: str = "casp"  # any pair matcher of reloc.matching.pairwise.build_pair_matcher
    pair: PairMatcherConfig = field(default_factory=lambda: PairMatcherConfig(cached_images=8))  # query + keyframes
    areas: AreaMatcherConfig = field(default_factory=AreaMatcherConfig)
    lift_px: float = 3.0  # pixels at a 640-px long side of the keyframe
    pnp: PnPConfig = field(default_factory=PnPConfig)
    keyframes_per_round: int = 3
    confident_inliers: int = 100  # a pose with fewer inliers goes on to the next round
    cached_keyframes: int = 32  # keyframe images and observation trees kept between queries


@dataclass
class Keyframe:
    image: np.ndarray  # (H, W, 3) the map's stored copy
    scale: float  # keyframe camera pixels per pixel of the copy
    long_side: int  # of the keyframe camera, pixels
    tree: cKDTree  # of the observations (camera pixels)
    landmark_ids: np.ndarray  # (N,) landmark of each observation
    observations: np.ndarray  # (N, 2) COLMAP pixels of the keyframe camera


def lift_matches(
    query_points: np.ndarray, keyframe_points: np.ndarray, keyframe: Keyframe, query_long_side: int, lift_px: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Query pixels (M, 2), landmark ids (M,) and lift distances (M,) of the matches
    ``query_points`` ↔ ``keyframe_points`` (N, 2, camera pixels) that lift (module docstring),
    one per landmark (its nearest lift)."""
    radius = lift_px * keyframe.long_side / 640
    if len(keyframe_points) == 0 or len(keyframe.observations) == 0:
        return np.zeros((0, 2)), np.zeros(0, np.int64), np.zeros(0)
    distances, nearest = keyframe.tree.query(keyframe_points, distance_upper_bound=radius)
    found = np.isfinite(distances)
    offsets = keyframe.observations[nearest[found]] - keyframe_points[found]
    lifted = query_points[found] + offsets * query_long_side / keyframe.long_side
    ids, distances = keyframe.landmark_ids[nearest[found]], distances[found]
    order = np.lexsort((distances, ids))
    first = order[np.r_[True, ids[order][1:] != ids[order][:-1]]] if len(order) else order
    return lifted[first], ids[first], distances[first]


@register_stage
class AreaLocalize(Stage):
    name = "pose.area_pnp"
    Config = AreaLocalizeConfig
    needs = (LANDMARKS_FILE, KEYFRAME_IMAGES)
    inputs = {"frames": list[Frame], "retrieved": dict[str, list[str]], "map_dir": Path}
    outputs = {"results": list[QueryResult]}
    cacheable = False

    def run(self, frames: list[Frame], retrieved: dict[str, list[str]], map_dir: Path) -> dict:
        config = self.config
        sparse_map = read_sparse_map(map_dir)
        matcher = AreaMatcher(config.matcher, config.pair, config.areas)

        @functools.lru_cache(maxsize=config.cached_keyframes)
        def keyframe(name: str) -> Keyframe:
            path = keyframe_image_path(map_dir, name)
            if not path.is_file():
                raise RelocError(f"{path}: keyframe image missing; the map needs the mapping.keyframe_images stage")
            image = read_image(path)
            camera = sparse_map.cameras[name]
            observations, ids = sparse_map.located_observations(name)
            observations = observations.astype(np.float64)
            scale = max(camera.width, camera.height) / max(image.shape[:2])
            return Keyframe(image, scale, max(camera.width, camera.height), cKDTree(observations), ids, observations)

        results = []
        for frame in track(frames, f"area matching and PnP for {len(frames)} queries"):
            query = read_image(frame.image_path)
            results.append(self.localize(frame, query, retrieved[frame.name], matcher, keyframe, sparse_map))
        return {"results": results}

    def localize(self, frame: Frame, query: np.ndarray, names: list[str], matcher, keyframe, sparse_map) -> QueryResult:
        """Keyframe rounds (:mod:`.rounds`) whose correspondences are the lifted area matches."""
        found = FirstCorrespondences()
        query_long_side = max(query.shape[:2])

        def correspondences(keyframes: list[str]) -> tuple[np.ndarray, np.ndarray]:
            for name in keyframes:
                stored = keyframe(name)
                query_points, keyframe_points = matcher.match(query, stored.image)  # timed by the rounds
                lifted, ids, _ = lift_matches(
                    query_points, keyframe_points * stored.scale, stored, query_long_side, self.config.lift_px
                )
                found.add(lifted, ids)
            return found.arrays()

        return query_in_rounds(frame, names, correspondences, sparse_map.points, self.config)
