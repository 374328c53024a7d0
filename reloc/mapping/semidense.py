"""Semi-dense maps (issue 23, work in progress on branch ``casp-semidense-maps``): keyframes matched
directly by CasP + HomoMatcher, no detector.

Each covisible keyframe pair is matched at the matcher's resolution; matches that fit the known
poses (epipolar distance) are snapped to a grid of ``grid_px`` original pixels, so that the matches
of one image from all its pairs merge into one keypoint per cell (as detector-free SfM does); a
cell's keypoint is the mean of the match positions that fell into it. Tracks and triangulation
with the known poses are the sparse pipeline's.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..datasets.base import read_image
from ..features.quantize import CodecConfig, fit_codec_on_chunks
from ..io.map_folder import GRID_EXTRACTOR, LANDMARKS_FILE, SFM_FOLDER
from ..matching.pairwise import CaspPairMatcher, PairMatcherConfig
from ..pipeline.progress import track
from ..pipeline.registry import Stage, register_stage
from ..types import Frame
from .keyframes import covisible_pairs, select_keyframes
from .store import KeyframeEntry, observed_keypoints, write_landmarks, write_reconstruction
from .tracks import build_tracks, epipolar_errors
from .triangulation import Landmarks, TriangulationConfig, triangulate_tracks


@dataclass
class SemiDenseMappingConfig:
    neighbours: int = 5  # covisible keyframes matched to each keyframe
    max_pair_angle_deg: float = 60.0
    max_epipolar_px: float = 2.0
    grid_px: float = 4.0  # side of the cells (original pixels) matches are snapped to
    matcher: PairMatcherConfig = field(default_factory=PairMatcherConfig)
    triangulation: TriangulationConfig = field(default_factory=TriangulationConfig)
    cached_keyframes: int = 12  # prepared keyframes kept while the pairs are matched


class GridKeypoints:
    """Per image, the grid cells its matches fell into and the mean position in each."""

    def __init__(self, images: int, grid_px: float):
        self.grid_px = grid_px
        self.cells: list[dict[tuple[int, int], int]] = [{} for _ in range(images)]
        self.sums: list[list[np.ndarray]] = [[] for _ in range(images)]
        self.counts: list[list[int]] = [[] for _ in range(images)]

    def add(self, image: int, points: np.ndarray) -> np.ndarray:
        """Indices (N,) of the keypoints of ``image`` holding ``points`` (N, 2, COLMAP pixels)."""
        cells, sums, counts = self.cells[image], self.sums[image], self.counts[image]
        indices = np.empty(len(points), np.int64)
        for n, (cell, point) in enumerate(zip(map(tuple, np.floor(points / self.grid_px).astype(int)), points)):
            index = cells.setdefault(cell, len(cells))
            if index == len(sums):
                sums.append(np.zeros(2))
                counts.append(0)
            sums[index] += point
            counts[index] += 1
            indices[n] = index
        return indices

    def keypoints(self, image: int) -> np.ndarray:
        """(K, 2) float32: the mean match position of each cell of ``image``."""
        if not self.sums[image]:
            return np.zeros((0, 2), np.float32)
        return (np.stack(self.sums[image]) / np.array(self.counts[image])[:, None]).astype(np.float32)


def match_keyframes(
    keyframes: list[Frame], config: SemiDenseMappingConfig
) -> tuple[list[np.ndarray], dict[tuple[int, int], np.ndarray]]:
    """Grid keypoints (K_i, 2) of each keyframe and, per covisible pair, the keypoint index pairs
    (M, 2) of its matches that fit the known poses."""
    matcher = CaspPairMatcher(config.matcher)
    prepared = functools.lru_cache(maxsize=config.cached_keyframes)(
        lambda index: matcher.prepare(read_image(keyframes[index].image_path))
    )
    grid = GridKeypoints(len(keyframes), config.grid_px)
    pair_matches = {}
    pairs = covisible_pairs(keyframes, config.neighbours, config.max_pair_angle_deg)
    for i, j in track(pairs, f"CasP matches of {len(pairs)} keyframe pairs"):
        image0, image1 = prepared(i), prepared(j)
        matches = matcher.match_prepared(image0, image1)
        points0 = matches.points0.double().numpy() * image0.scale
        points1 = matches.points1.double().numpy() * image1.scale
        keep = epipolar_errors(keyframes[i], keyframes[j], points0, points1) <= config.max_epipolar_px
        if keep.any():
            index_pairs = np.stack([grid.add(i, points0[keep]), grid.add(j, points1[keep])], axis=1)
            pair_matches[(i, j)] = np.unique(index_pairs, axis=0)
    return [grid.keypoints(i) for i in range(len(keyframes))], pair_matches


def triangulate_semidense(keyframes: list[Frame], config: SemiDenseMappingConfig) -> tuple[list[np.ndarray], Landmarks]:
    """The keyframes' grid keypoints and the landmarks triangulated from their tracks."""
    keypoints, pair_matches = match_keyframes(keyframes, config)
    return keypoints, triangulate_tracks(keyframes, keypoints, build_tracks(pair_matches), config.triangulation)


@dataclass
class SemiDenseTriangulateConfig(SemiDenseMappingConfig):
    keyframe_distance_m: float = 0.0  # 0 and 0: every frame is a keyframe
    keyframe_angle_deg: float = 0.0


@register_stage
class SemiDenseTriangulate(Stage):
    """Keyframes matched by CasP + HomoMatcher, grid keypoints, tracks and landmarks; writes
    landmarks.h5 (observations without descriptors, extractor ``casp-grid``) and sfm/."""

    name = "mapping.semidense_triangulate"
    Config = SemiDenseTriangulateConfig
    inputs = {"frames": list[Frame], "map_dir": Path}
    outputs = {"keyframes": list[Frame]}

    def run(self, frames: list[Frame], map_dir: Path) -> dict:
        keyframes = select_keyframes(frames, self.config.keyframe_distance_m, self.config.keyframe_angle_deg)
        keypoints, landmarks = triangulate_semidense(keyframes, self.config)
        observed = observed_keypoints(landmarks, len(keyframes))
        codec = fit_codec_on_chunks(iter([np.zeros((0, 0), np.float32)]), 0, CodecConfig(kind="float16"))
        entries = (
            (frame.name, KeyframeEntry(frame.camera, points[index], ids, np.zeros((len(index), 0), np.float32)))
            for frame, points, (index, ids) in zip(keyframes, keypoints, observed)
        )
        write_landmarks(map_dir / LANDMARKS_FILE, GRID_EXTRACTOR, landmarks.points, landmarks.errors, codec, entries)
        write_reconstruction(map_dir / SFM_FOLDER, keyframes, keypoints, landmarks, None)
        return {"keyframes": keyframes}
