"""Mapping stages. ``mapping.triangulate``: keyframes -> covisible pairs -> matches with an
epipolar check under the known poses -> tracks -> triangulated landmarks (sfm/ + landmarks.h5).
``mapping.patches``: dense-descriptor patches around the observations of persistent landmarks
(patches.h5, FaVoR's training data)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..features.base import FeatureStore
from ..features.quantize import CodecConfig
from ..io.map_folder import PATCHES_FILE
from ..matching import MatcherConfig, build_matcher
from ..pipeline.progress import track
from ..pipeline.registry import Stage, register_stage
from ..types import Frame
from .keyframes import covisible_pairs, select_keyframes
from .patches import PatchesConfig, write_landmark_patches
from .store import read_sparse_map, write_sparse_map
from .tracks import build_tracks, epipolar_errors
from .triangulation import Landmarks, TriangulationConfig, triangulate_tracks


@dataclass
class TriangulateConfig:
    keyframe_distance_m: float = 0.0  # 0 and 0: every frame is a keyframe
    keyframe_angle_deg: float = 0.0
    neighbours: int = 5  # covisible keyframes matched to each keyframe
    max_pair_angle_deg: float = 60.0
    max_epipolar_px: float = 2.0
    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    triangulation: TriangulationConfig = field(default_factory=TriangulationConfig)
    descriptors: CodecConfig = field(default_factory=CodecConfig)  # how landmarks.h5 stores observation descriptors
    colmap_tracks: bool = False  # sfm/ also holds keyframe keypoints and point tracks (a full COLMAP model)


@register_stage
class Triangulate(Stage):
    name = "mapping.triangulate"
    version = "3"  # 2: landmark colours in the COLMAP model; 3: landmarks.h5 format 2 (observations only, coded)
    Config = TriangulateConfig
    inputs = {"frames": list[Frame], "features": FeatureStore, "map_dir": Path}
    outputs = {"keyframes": list[Frame]}

    def run(self, frames: list[Frame], features: FeatureStore, map_dir: Path) -> dict:
        config = self.config
        keyframes = select_keyframes(frames, config.keyframe_distance_m, config.keyframe_angle_deg)
        keypoints, landmarks = triangulate_keyframes(keyframes, features, config)
        write_sparse_map(map_dir, keyframes, keypoints, features, landmarks, config.descriptors, config.colmap_tracks)
        return {"keyframes": keyframes}


def triangulate_keyframes(
    keyframes: list[Frame], features: FeatureStore, config: TriangulateConfig
) -> tuple[list[np.ndarray], Landmarks]:
    """Match covisible keyframes, keep matches that fit the known poses, chain them into tracks
    and triangulate: the keyframes' keypoints (N_i, 2) and the landmarks observing them."""
    matcher = build_matcher(config.matcher, features.extractor)
    # Pairs come sorted by their first keyframe: a small cache avoids re-reading it for each pair.
    read = functools.lru_cache(maxsize=2 * config.neighbours + 2)(features.read)
    pair_matches = {}
    pairs = covisible_pairs(keyframes, config.neighbours, config.max_pair_angle_deg)
    for i, j in track(pairs, f"matches of {len(pairs)} covisible keyframe pairs"):
        f0, f1 = read(keyframes[i].name), read(keyframes[j].name)
        c0, c1 = keyframes[i].camera, keyframes[j].camera
        matches = matcher.match(f0, f1, (c0.width, c0.height), (c1.width, c1.height))
        if len(matches):
            errors = epipolar_errors(
                keyframes[i], keyframes[j], f0.keypoints[matches[:, 0]], f1.keypoints[matches[:, 1]]
            )
            pair_matches[(i, j)] = matches[errors <= config.max_epipolar_px]
    keypoints = [features.read_keypoints(frame.name) for frame in keyframes]
    return keypoints, triangulate_tracks(keyframes, keypoints, build_tracks(pair_matches), config.triangulation)


@register_stage
class LandmarkPatchesStage(Stage):
    name = "mapping.patches"
    Config = PatchesConfig
    version = "3"  # 2: observations read from landmarks.h5 format 2; 3: landmarks chosen to cover every keyframe
    inputs = {"keyframes": list[Frame], "map_dir": Path}
    outputs = {"patches": Path}

    def run(self, keyframes: list[Frame], map_dir: Path) -> dict:
        write_landmark_patches(map_dir, keyframes, read_sparse_map(map_dir), self.config)
        return {"patches": map_dir / PATCHES_FILE}
