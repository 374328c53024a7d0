"""Keyframes and covisible pairs from known poses."""

from __future__ import annotations

import numpy as np

from ..rotation import rotation_angle_deg
from ..types import Frame


def select_keyframes(frames: list[Frame], min_distance_m: float, min_angle_deg: float) -> list[Frame]:
    """Greedy in sequence order: a frame becomes a keyframe when it moved at least
    ``min_distance_m`` or turned at least ``min_angle_deg`` since the last keyframe (0, 0 keeps all)."""
    keyframes: list[Frame] = []
    for frame in frames:
        if keyframes:
            last = keyframes[-1].pose
            moved = np.linalg.norm(frame.pose.center - last.center)
            turned = rotation_angle_deg(frame.pose.R @ last.R.T)
            if moved < min_distance_m and turned < min_angle_deg:
                continue
        keyframes.append(frame)
    return keyframes


def viewing_directions(frames: list[Frame]) -> np.ndarray:
    """Optical axes in world coordinates (N, 3)."""
    return np.stack([frame.pose.R[2] for frame in frames])


def covisible_pairs(frames: list[Frame], neighbours: int, max_angle_deg: float) -> list[tuple[int, int]]:
    """For each frame, its ``neighbours`` nearest frames (camera centre distance) whose optical axes
    differ by at most ``max_angle_deg``. Pairs (i, j) with i < j, each once."""
    centres = np.stack([frame.pose.center for frame in frames])
    axes = viewing_directions(frames)
    distances = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    angles = np.degrees(np.arccos(np.clip(axes @ axes.T, -1, 1)))
    distances[(angles > max_angle_deg) | np.eye(len(frames), dtype=bool)] = np.inf
    pairs = set()
    for i in range(len(frames)):
        for j in np.argsort(distances[i])[:neighbours]:
            if np.isfinite(distances[i, j]):
                pairs.add((min(i, int(j)), max(i, int(j))))
    return sorted(pairs)
