"""Labelled keypoints: mapping keypoints with known world coordinates, NeuMap's training and
code-optimisation data. From depth where every mapping frame has a depth image (7-Scenes, the
synthetic scenes), otherwise from landmarks triangulated with the known poses (Cambridge).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..datasets.base import read_depth_mm
from ..errors import DatasetError
from ..features.base import FeatureStore
from ..mapping.stages import TriangulateConfig, triangulate_keyframes
from ..types import Frame


@dataclass
class LabelledPoints:
    """Keypoints of mapping frames with world coordinates; row ``i`` was seen in ``frames[frame[i]]``."""

    descriptors: np.ndarray  # (M, C) float16, the extractor's descriptors
    points: np.ndarray  # (M, 3) float32, world coordinates in metres
    frame: np.ndarray  # (M,) int32, index into ``frames``
    frames: list[str]  # frame names

    def __len__(self) -> int:
        return len(self.points)


def concatenate(parts: list[tuple[np.ndarray, np.ndarray]], frames: list[Frame], dim: int) -> LabelledPoints:
    """``parts[i]``: frame i's (descriptors (n_i, C), world points (n_i, 3))."""
    counts = [len(points) for _, points in parts]
    if not parts or sum(counts) == 0:
        return LabelledPoints(
            np.zeros((0, dim), np.float16),
            np.zeros((0, 3), np.float32),
            np.zeros(0, np.int32),
            [f.name for f in frames],
        )
    return LabelledPoints(
        np.concatenate([descriptors for descriptors, _ in parts]).astype(np.float16),
        np.concatenate([points for _, points in parts]).astype(np.float32),
        np.repeat(np.arange(len(parts), dtype=np.int32), counts),
        [frame.name for frame in frames],
    )


def depth_at(depth_m: np.ndarray, keypoints: np.ndarray, max_step: float) -> np.ndarray:
    """(N,) depth under each COLMAP-convention keypoint (N, 2), NaN where it is invalid or the 3×3
    neighbourhood jumps by more than ``max_step`` of the depth (an occluding edge)."""
    height, width = depth_m.shape
    columns = np.clip(np.floor(keypoints[:, 0]).astype(int), 1, width - 2)
    rows = np.clip(np.floor(keypoints[:, 1]).astype(int), 1, height - 2)
    window = np.stack([depth_m[rows + dy, columns + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=1)
    centre = window[:, 4]
    spread = np.nanmax(window, axis=1) - np.nanmin(window, axis=1) if len(window) else np.zeros(0)
    steep = ~(spread <= max_step * centre) | np.isnan(window).any(axis=1)
    return np.where(steep, np.nan, centre)


def labels_from_depth(frames: list[Frame], features: FeatureStore, max_depth_step: float = 0.05) -> LabelledPoints:
    """Every keypoint with a valid, smooth depth, back-projected with its frame's pose."""
    parts, dim = [], 0
    for frame in frames:
        if frame.depth_path is None:
            raise DatasetError(f"{frame.image_path}: no depth image; label from triangulated landmarks instead")
        extracted = features.read(frame.name)
        dim = extracted.descriptors.shape[1]
        depth = depth_at(read_depth_mm(frame.depth_path), extracted.keypoints, max_depth_step)
        valid = np.isfinite(depth) & (depth > 0)
        rays = frame.camera.unproject(extracted.keypoints[valid])
        points_cam = np.concatenate([rays, np.ones((len(rays), 1))], axis=1) * depth[valid, None]
        parts.append((extracted.descriptors[valid], frame.pose.inverse().transform(points_cam)))
    return concatenate(parts, frames, dim)


def labels_from_landmarks(frames: list[Frame], features: FeatureStore, config: TriangulateConfig) -> LabelledPoints:
    """Every keypoint that observes a landmark triangulated from the frames with their known poses
    (all frames are used as keyframes)."""
    keypoints, landmarks = triangulate_keyframes(frames, features, config)
    point_of = [np.full(len(k), -1, np.int64) for k in keypoints]
    for landmark, observations in enumerate(landmarks.observations):
        for image, keypoint in observations:
            point_of[image][keypoint] = landmark
    parts, dim = [], 0
    for frame, ids in zip(frames, point_of):
        descriptors = features.read(frame.name).descriptors
        dim = descriptors.shape[1]
        parts.append((descriptors[ids >= 0], landmarks.points[ids[ids >= 0]]))
    return concatenate(parts, frames, dim)


def label_keypoints(frames: list[Frame], features: FeatureStore, source: str, triangulation: TriangulateConfig):
    """Labels from ``source``: ``depth``, ``landmarks``, or ``auto`` (depth when every frame has one)."""
    if source == "auto":
        source = "depth" if all(frame.depth_path is not None for frame in frames) else "landmarks"
    if source == "depth":
        return labels_from_depth(frames, features)
    return labels_from_landmarks(frames, features, triangulation)
