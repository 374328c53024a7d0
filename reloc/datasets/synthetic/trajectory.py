"""Hand-held camera trajectories: smooth paths through random waypoints with smooth heading
changes, plus low-frequency sway and per-frame shake in position and rotation.

World frame z up; cameras look along +z with y down (COLMAP), so a camera with yaw 0 and pitch 0
looks along world +x with its image x axis along world -y.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline

from ...rotation import axis_angle_to_rotmat
from ...types import Pose
from .scenes import CameraRegion

WORLD_UP = np.array([0.0, 0.0, 1.0])


@dataclass
class HandheldConfig:
    waypoints: int = 6
    yaw_step_deg: float = 70.0  # std of the heading change between waypoints
    sway_m: float = 0.03  # amplitude of low-frequency position sway
    sway_deg: float = 1.5  # amplitude of low-frequency rotation sway
    shake_m: float = 0.003  # per-frame position shake (std)
    shake_deg: float = 0.3  # per-frame rotation shake (std)
    height_margin_m: float = 0.0  # widen the region's height range (query paths pass elsewhere)


def look_rotation(yaw_rad: float, pitch_rad: float, roll_rad: float) -> np.ndarray:
    """World-to-camera rotation of a camera with the given heading (about z), pitch and roll."""
    forward = np.array([np.cos(pitch_rad) * np.cos(yaw_rad), np.cos(pitch_rad) * np.sin(yaw_rad), np.sin(pitch_rad)])
    right = np.cross(forward, WORLD_UP)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    return axis_angle_to_rotmat(np.array([0.0, 0.0, 1.0]), roll_rad) @ R


def smooth_noise(rng: np.random.Generator, count: int, dims: int, amplitude: float) -> np.ndarray:
    """(count, dims) sum of three random sinusoids of 1-4 cycles over the sequence."""
    t = np.linspace(0, 1, count)[:, None]
    noise = np.zeros((count, dims))
    for _ in range(3):
        frequency = rng.uniform(1, 4, dims)
        phase = rng.uniform(0, 2 * np.pi, dims)
        noise += np.sin(2 * np.pi * frequency * t + phase) / 3
    return amplitude * noise


def handheld_trajectory(
    region: CameraRegion, count: int, rng: np.random.Generator, config: HandheldConfig = HandheldConfig()
) -> list[Pose]:
    """``count`` cam_from_world poses along one smooth hand-held path inside ``region``."""
    low, high = region.low.copy(), region.high.copy()
    low[2] -= config.height_margin_m
    high[2] += config.height_margin_m
    knots = np.linspace(0, 1, config.waypoints)
    positions = rng.uniform(low, high, (config.waypoints, 3))
    yaw_low, yaw_high = np.radians(region.yaw_deg)
    yaws = [rng.uniform(yaw_low, yaw_high)]
    for _ in range(config.waypoints - 1):
        yaws.append(np.clip(yaws[-1] + rng.normal(0, np.radians(config.yaw_step_deg)), yaw_low, yaw_high))
    pitches = rng.uniform(*np.radians(region.pitch_deg), config.waypoints)
    t = np.linspace(0, 1, count)
    path = CubicSpline(knots, positions, bc_type="natural")(t)
    path = np.clip(
        path + smooth_noise(rng, count, 3, config.sway_m) + rng.normal(0, config.shake_m, (count, 3)), low, high
    )
    angles = np.stack(
        [CubicSpline(knots, yaws, bc_type="natural")(t), CubicSpline(knots, pitches, bc_type="natural")(t)], 1
    )
    angles += smooth_noise(rng, count, 2, np.radians(config.sway_deg)) + rng.normal(
        0, np.radians(config.shake_deg), (count, 2)
    )
    rolls = smooth_noise(rng, count, 1, np.radians(config.sway_deg))[:, 0] + rng.normal(
        0, np.radians(config.shake_deg), count
    )
    return [
        Pose.from_rotation_center(look_rotation(yaw, pitch, roll), centre)
        for (yaw, pitch), roll, centre in zip(angles, rolls, path)
    ]
