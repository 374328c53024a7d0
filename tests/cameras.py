"""Cameras and posed frames for geometry tests with exact ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reloc.types import Camera, Frame, Pose

CAMERA = Camera.simple_pinhole(640, 480, 500)


def look_at(centre, target) -> Pose:
    forward = np.asarray(target, float) - centre
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0, 0, 1.0])
    right /= np.linalg.norm(right)
    return Pose.from_rotation_center(np.stack([right, np.cross(forward, right), forward]), centre)


def posed_frames(count: int) -> list[Frame]:
    centres = [np.array([x, -4.0, 1.5]) for x in np.linspace(-1, 1, count)]
    return [Frame(f"f{i}.png", Path(f"f{i}.png"), CAMERA, look_at(c, [0, 0, 1.5])) for i, c in enumerate(centres)]
