"""Semi-dense localization stages: CasP + HomoMatcher match each query to its retrieved keyframes.

``pose.semidense_lookup`` (semi-dense maps, :mod:`reloc.mapping.semidense`): each keyframe is
matched from its stored features, its 1/8 cells as the source side, so that a match is a keyframe
cell and HomoMatcher's sub-pixel point for it in the query; the cell's landmark is looked up
directly in the map's per-keyframe table.

``pose.semidense_pnp`` (sparse maps with keyframe images): a keyframe landmark is observed at a
keypoint of the keyframe; when CasP matched the 1/8 cell that holds the keypoint, HomoMatcher's
homography of that cell's patch maps the keypoint into the query, giving a 2D-3D correspondence
at the landmark's own observation (no keypoint detection in the query).

Both match keyframes in rounds, PnP after each, until a confident pose; a query that ends without
one is reported failed, never given its prior.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..datasets.base import read_image
from ..errors import RelocError
from ..io.map_folder import KEYFRAME_FEATURES, KEYFRAME_IMAGES, LANDMARKS_FILE
from ..mapping.keyframe_features import KeyframeFeatures
from ..mapping.keyframe_images import keyframe_image_path
from ..mapping.semidense import cell_indices
from ..mapping.store import read_sparse_map
from ..matching.pairwise import CaspPairMatcher, PairMatcherConfig, PreparedImage
from ..pipeline.progress import track
from ..pipeline.registry import Stage, register_stage
from ..pipeline.timing import query_timer
from ..types import Frame, QueryResult
from .pnp import PnPConfig
from .rounds import FirstCorrespondences, query_in_rounds


@dataclass
class SemiDenseLocalizeConfig:
    matcher: PairMatcherConfig = field(default_factory=PairMatcherConfig)
    pnp: PnPConfig = field(default_factory=PnPConfig)
    keyframes_per_round: int = 3
    confident_inliers: int = 100  # a pose with fewer inliers goes on to the next round
    cached_keyframes: int = 32  # prepared keyframes (backbone and fine maps) kept between queries


@register_stage
class SemiDenseLocalize(Stage):
    name = "pose.semidense_pnp"
    Config = SemiDenseLocalizeConfig
    needs = (LANDMARKS_FILE, KEYFRAME_IMAGES)
    inputs = {"frames": list[Frame], "retrieved": dict[str, list[str]], "map_dir": Path}
    outputs = {"results": list[QueryResult]}
    cacheable = False

    def run(self, frames: list[Frame], retrieved: dict[str, list[str]], map_dir: Path) -> dict:
        sparse_map = read_sparse_map(map_dir)
        matcher = CaspPairMatcher(self.config.matcher)
        observations = {name: sparse_map.located_observations(name) for name in sparse_map.cameras}

        @functools.lru_cache(maxsize=self.config.cached_keyframes)
        def prepared_keyframe(name: str) -> PreparedImage:
            path = keyframe_image_path(map_dir, name)
            if not path.is_file():
                raise RelocError(f"{path}: keyframe image missing; the map needs the mapping.keyframe_images stage")
            keyframe = matcher.prepare(read_image(path))
            camera = sparse_map.cameras[name]  # the stored copy is smaller than the keyframe its keypoints are in
            keyframe.scale = np.array([camera.width, camera.height]) / np.array(keyframe.pyramid.size)
            return keyframe

        results = []
        for frame in track(frames, f"semi-dense matching and PnP for {len(frames)} queries"):
            with query_timer("matching", frame.name):
                query = matcher.prepare(read_image(frame.image_path))
            results.append(
                self.localize(frame, query, retrieved[frame.name], matcher, prepared_keyframe, sparse_map, observations)
            )
        return {"results": results}

    def localize(
        self,
        frame: Frame,
        query: PreparedImage,
        names: list[str],
        matcher: CaspPairMatcher,
        prepared_keyframe: Callable[[str], PreparedImage],
        sparse_map,
        observations,
    ) -> QueryResult:
        """Keyframe rounds (:mod:`.rounds`) whose correspondences are each keyframe's landmark
        observations carried into the query, the first carried copy of a landmark kept."""
        found = FirstCorrespondences()

        def correspondences(keyframes: list[str]) -> tuple[np.ndarray, np.ndarray]:
            for name in keyframes:
                keypoints, ids = observations[name]
                mapped, valid = matcher.transfer(prepared_keyframe(name), query, keypoints.astype(np.float64))
                found.add(mapped[valid], ids[valid])
            return found.arrays()

        return query_in_rounds(frame, names, correspondences, sparse_map.points, self.config)


@dataclass
class SemiDenseLookupConfig(SemiDenseLocalizeConfig):
    keyframes_per_round: int = 1


@register_stage
class SemiDenseLookup(Stage):
    name = "pose.semidense_lookup"
    Config = SemiDenseLookupConfig
    needs = (LANDMARKS_FILE, KEYFRAME_FEATURES)
    inputs = {"frames": list[Frame], "retrieved": dict[str, list[str]], "map_dir": Path}
    outputs = {"results": list[QueryResult]}
    cacheable = False

    def run(self, frames: list[Frame], retrieved: dict[str, list[str]], map_dir: Path) -> dict:
        sparse_map = read_sparse_map(map_dir)
        matcher = CaspPairMatcher(self.config.matcher)
        stored = KeyframeFeatures(map_dir / KEYFRAME_FEATURES, matcher)

        @functools.lru_cache(maxsize=self.config.cached_keyframes)
        def keyframe(name: str) -> tuple[PreparedImage, np.ndarray]:
            """The stored keyframe and the landmark id of each of its 1/8 cells (-1: none)."""
            prepared = stored.read(name)
            width, height = prepared.pyramid.size
            landmark_of_cell = np.full((height // 8) * (width // 8), -1, np.int64)
            keypoints, ids = sparse_map.located_observations(name)
            landmark_of_cell[cell_indices(keypoints / prepared.scale, prepared.pyramid.size)] = ids
            return prepared, landmark_of_cell

        results = []
        for frame in track(frames, f"semi-dense matching and PnP for {len(frames)} queries"):
            with query_timer("matching", frame.name):
                query = matcher.prepare(read_image(frame.image_path))
            results.append(self.localize(frame, query, retrieved[frame.name], matcher, keyframe, sparse_map.points))
        return {"results": results}

    def localize(
        self,
        frame: Frame,
        query: PreparedImage,
        names: list[str],
        matcher: CaspPairMatcher,
        keyframe: Callable[[str], tuple[PreparedImage, np.ndarray]],
        points: np.ndarray,
    ) -> QueryResult:
        """Keyframe rounds (:mod:`.rounds`) whose correspondences are each keyframe's matched cells'
        landmarks at their HomoMatcher points in the query, the first found copy of a landmark kept.
        Only coarse matches from cells that hold a landmark are refined."""
        found = FirstCorrespondences()

        def correspondences(keyframes: list[str]) -> tuple[np.ndarray, np.ndarray]:
            for name in keyframes:
                prepared, landmark_of_cell = keyframe(name)
                points0, points1 = matcher.coarse_matches(prepared, query)
                ids = landmark_of_cell[cell_indices(points0.double().numpy(), prepared.pyramid.size)]
                mapped = ids >= 0
                matches = matcher.refine(prepared, query, points0[mapped], points1[mapped])
                points2d = matches.points1.double().numpy() * query.scale
                valid = np.isfinite(points2d).all(axis=1)
                found.add(points2d[valid], ids[mapped][valid])
            return found.arrays()

        return query_in_rounds(frame, names, correspondences, points, self.config)
