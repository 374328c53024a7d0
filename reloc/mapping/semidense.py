"""Semi-dense maps: keyframes matched directly by CasP + HomoMatcher, no detector.

A keyframe's keypoints are the centres of its 1/8 cells at the matcher's resolution: a fixed
grid, cell ``(row, col)`` at ``(8 col + 4, 8 row + 4)`` resized pixels. Each covisible pair is
matched once at the coarse level and refined from both sides, so that every matched cell of
either image gets the sub-pixel point HomoMatcher finds for it in the other. A landmark is one
keyframe's cell (its reference) together with the refined points of that cell in every keyframe
it was matched with that fit the known poses (epipolar distance), triangulated with the known
poses as the sparse pipeline does.

So a landmark belongs to one keyframe's grid: the map keeps per keyframe the landmark id of each
of its cells (``landmarks.h5`` holds only these reference observations), and localization looks a
matched cell's landmark up directly. A surface point seen by several keyframes has one landmark
per keyframe; every observation's sub-pixel side is HomoMatcher's, never a snapped or averaged
position. The keyframes' features are stored (``keyframe_features.h5``) and mapping matches the
stored float16 copies, exactly what localization will match.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..datasets.base import read_image
from ..features.quantize import CodecConfig, fit_codec_on_chunks
from ..io.map_folder import GRID_EXTRACTOR, KEYFRAME_FEATURES, LANDMARKS_FILE, SFM_FOLDER
from ..matching.pairwise import CaspPairMatcher, PairMatcherConfig
from ..pipeline.progress import track
from ..pipeline.registry import Stage, register_stage
from ..types import Frame
from .keyframe_features import KeyframeFeatures, write_keyframe_features
from .keyframes import covisible_pairs, select_keyframes
from .store import KeyframeEntry, write_landmarks, write_reconstruction
from .tracks import epipolar_errors
from .triangulation import Landmarks, TriangulationConfig, triangulate_tracks


@dataclass
class SemiDenseMappingConfig:
    neighbours: int = 5  # covisible keyframes matched to each keyframe
    max_pair_angle_deg: float = 60.0
    max_epipolar_px: float = 2.0  # original pixels
    matcher: PairMatcherConfig = field(default_factory=PairMatcherConfig)
    triangulation: TriangulationConfig = field(default_factory=TriangulationConfig)
    cached_keyframes: int = 12  # stored keyframes kept in memory while the pairs are matched


def cell_centres(size: tuple[int, int]) -> np.ndarray:
    """(H/8 * W/8, 2) centres of the 1/8 cells of a resized image of ``size`` (W, H), row-major,
    in its COLMAP pixels."""
    width8, height8 = size[0] // 8, size[1] // 8
    rows, cols = np.meshgrid(np.arange(height8), np.arange(width8), indexing="ij")
    return np.stack([8 * cols.ravel() + 4, 8 * rows.ravel() + 4], axis=1).astype(np.float64)


def cell_indices(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Row-major 1/8 cell index (N,) of ``points`` (N, 2), resized COLMAP pixels of ``size``."""
    cells = np.floor(points / 8).astype(np.int64)
    return cells[:, 1] * (size[0] // 8) + cells[:, 0]


class ReferenceTracks:
    """Per keyframe: its grid keypoints (original pixels) followed by the refined points other
    keyframes' cells were matched at; per reference cell, the track it heads."""

    def __init__(self, grids: list[np.ndarray]):
        self.cells = [len(grid) for grid in grids]
        self.points: list[list[np.ndarray]] = [[grid] for grid in grids]
        self.counts = list(self.cells)
        self.tracks: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def add(self, reference: int, cells: np.ndarray, other: int, points: np.ndarray) -> None:
        """``reference``'s ``cells`` (N,) seen in keyframe ``other`` at ``points`` (N, 2)."""
        self.points[other].append(points)
        for n, cell in enumerate(cells):
            track = self.tracks.setdefault((reference, int(cell)), [(reference, int(cell))])
            track.append((other, self.counts[other] + n))
        self.counts[other] += len(points)

    def keypoints(self) -> list[np.ndarray]:
        return [np.concatenate(points) for points in self.points]

    def is_reference(self, image: int, index: int) -> bool:
        return index < self.cells[image]


def match_keyframes(keyframes: list[Frame], config: SemiDenseMappingConfig, features_path: Path) -> ReferenceTracks:
    """Store the keyframes' features at ``features_path``, match the covisible pairs both ways
    and return the reference tracks."""
    matcher = CaspPairMatcher(config.matcher)
    grids = []  # each keyframe's grid, original pixels

    def prepared_keyframes():
        for frame in track(keyframes, f"CasP + HomoMatcher features of {len(keyframes)} keyframes"):
            prepared = matcher.prepare(read_image(frame.image_path))
            grids.append(cell_centres(prepared.pyramid.size) * prepared.scale)
            yield frame.name, prepared

    write_keyframe_features(features_path, matcher, prepared_keyframes())
    stored = KeyframeFeatures(features_path, matcher)
    prepared = functools.lru_cache(maxsize=config.cached_keyframes)(lambda i: stored.read(keyframes[i].name))
    tracks = ReferenceTracks(grids)
    pairs = covisible_pairs(keyframes, config.neighbours, config.max_pair_angle_deg)
    for i, j in track(pairs, f"CasP + HomoMatcher matches of {len(pairs)} keyframe pairs"):
        image_i, image_j = prepared(i), prepared(j)
        for (a, image_a), (b, image_b), matches in zip(
            ((i, image_i), (j, image_j)), ((j, image_j), (i, image_i)), matcher.match_both_ways(image_i, image_j)
        ):
            cells = cell_indices(matches.points0.double().numpy(), image_a.pyramid.size)
            points_b = matches.points1.double().numpy() * image_b.scale
            keep = epipolar_errors(keyframes[a], keyframes[b], grids[a][cells], points_b) <= config.max_epipolar_px
            keep &= np.isfinite(points_b).all(axis=1)
            tracks.add(a, cells[keep], b, points_b[keep])
    return tracks


def triangulate_semidense(
    keyframes: list[Frame], config: SemiDenseMappingConfig, features_path: Path
) -> tuple[list[np.ndarray], Landmarks, ReferenceTracks]:
    """Each keyframe's keypoints (its grid, then points observing other keyframes' cells), the
    landmarks of the reference tracks whose reference observation survives triangulation, and the
    tracks."""
    tracks = match_keyframes(keyframes, config, features_path)
    keypoints = tracks.keypoints()
    landmarks = triangulate_tracks(keyframes, keypoints, list(tracks.tracks.values()), config.triangulation)
    keep = [
        any(tracks.is_reference(int(image), int(index)) for image, index in observations)
        for observations in landmarks.observations
    ]
    kept = Landmarks(
        landmarks.points[keep],
        [observations for observations, k in zip(landmarks.observations, keep) if k],
        landmarks.errors[keep],
    )
    return keypoints, kept, tracks


def reference_observations(
    landmarks: Landmarks, tracks: ReferenceTracks, images: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per keyframe: the grid keypoint indices (N,) of its reference cells that hold a landmark,
    ascending, and the landmark id (N,) of each."""
    found = [[] for _ in range(images)]
    for landmark, observations in enumerate(landmarks.observations):
        for image, index in observations:
            if tracks.is_reference(int(image), int(index)):
                found[int(image)].append((int(index), landmark))
    return [tuple(np.array(sorted(entries), np.int64).reshape(-1, 2).T) for entries in found]


@dataclass
class SemiDenseTriangulateConfig(SemiDenseMappingConfig):
    keyframe_distance_m: float = 0.0  # 0 and 0: every frame is a keyframe
    keyframe_angle_deg: float = 0.0


@register_stage
class SemiDenseTriangulate(Stage):
    """Keyframes matched by CasP + HomoMatcher on their 1/8 grids, reference tracks and landmarks;
    writes keyframe_features.h5, landmarks.h5 (each keyframe's grid keypoints that head a landmark,
    without descriptors: extractor ``casp-grid``) and sfm/."""

    name = "mapping.semidense_triangulate"
    Config = SemiDenseTriangulateConfig
    inputs = {"frames": list[Frame], "map_dir": Path}
    outputs = {"keyframes": list[Frame]}

    def run(self, frames: list[Frame], map_dir: Path) -> dict:
        keyframes = select_keyframes(frames, self.config.keyframe_distance_m, self.config.keyframe_angle_deg)
        keypoints, landmarks, tracks = triangulate_semidense(keyframes, self.config, map_dir / KEYFRAME_FEATURES)
        observed = reference_observations(landmarks, tracks, len(keyframes))
        codec = fit_codec_on_chunks(iter([np.zeros((0, 0), np.float32)]), 0, CodecConfig(kind="float16"))
        entries = (
            (frame.name, KeyframeEntry(frame.camera, points[index], ids, np.zeros((len(index), 0), np.float32)))
            for frame, points, (index, ids) in zip(keyframes, keypoints, observed)
        )
        write_landmarks(map_dir / LANDMARKS_FILE, GRID_EXTRACTOR, landmarks.points, landmarks.errors, codec, entries)
        write_reconstruction(map_dir / SFM_FOLDER, keyframes, keypoints, landmarks, None)
        return {"keyframes": keyframes}
