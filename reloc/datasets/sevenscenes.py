"""Microsoft 7-Scenes, in its original folder layout.

A scene folder holds ``TrainSplit.txt`` / ``TestSplit.txt`` (lines ``sequenceN``) and ``seq-0N/``
folders (``seq-10`` for N = 10) of ``frame-XXXXXX.color.png`` (or ``.color.jpg``),
``frame-XXXXXX.depth.png`` (uint16 mm, 65535 invalid) and ``frame-XXXXXX.pose.txt`` (4x4
camera-to-world, inverted on load). All frames share focal 585 and principal point (320, 240).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..rotation import project_to_so3
from ..types import Camera, Frame, Pose
from .base import Dataset, read_lines, require_file

FOCAL = 585.0
WIDTH, HEIGHT = 640, 480
SPLIT_FILES = {"train": "TrainSplit.txt", "test": "TestSplit.txt"}
COLOR_SUFFIXES = (".color.png", ".color.jpg")
MAX_ROTATION_DEVIATION = 1e-2


def sequence_folder(line: str, split_file: Path, line_number: int) -> str:
    """``sequence3`` -> ``seq-03``; ``sequence10`` -> ``seq-10``."""
    match = re.fullmatch(r"sequence(\d+)", line.strip())
    if match is None:
        raise DatasetError(f"{split_file}:{line_number}: expected a line 'sequenceN', got {line.strip()!r}")
    return f"seq-{int(match.group(1)):02d}"


def read_split(split_file: Path) -> list[str]:
    """Sequence folders of a split file; a sequence listed twice is an error (its frames would be
    mapped or scored twice)."""
    lines = read_lines(split_file, "7-Scenes split file")
    first: dict[str, int] = {}
    for line_number, line in enumerate(lines, start=1):
        if line.strip():
            folder = sequence_folder(line, split_file, line_number)
            if folder in first:
                raise DatasetError(
                    f"{split_file}:{line_number}: {line.strip()} is listed twice (first on line {first[folder]})"
                )
            first[folder] = line_number
    return list(first)


def read_camera_to_world(path: Path) -> Pose:
    """Read a ``frame-*.pose.txt`` (4x4 camera-to-world) and return cam_from_world."""
    try:
        matrix = np.loadtxt(require_file(path, "7-Scenes pose file"), dtype=np.float64)
    except ValueError as error:
        raise DatasetError(f"{path}: not a 4x4 matrix of numbers ({error})") from None
    if matrix.shape != (4, 4):
        raise DatasetError(f"{path}: expected a 4x4 matrix, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise DatasetError(f"{path}: pose contains NaN or infinite values")
    rotation, deviation = project_to_so3(matrix[:3, :3])
    if deviation > MAX_ROTATION_DEVIATION:
        raise DatasetError(f"{path}: upper-left 3x3 block is not a rotation (off by {deviation:.3g})")
    return Pose(rotation, matrix[:3, 3]).inverse()


def sequence_frames(root: Path, sequence: str, camera: Camera) -> list[Frame]:
    folder = root / sequence
    if not folder.is_dir():
        raise DatasetError(f"{folder}: sequence folder listed in the split file does not exist")
    color_files = sorted(p for p in folder.iterdir() if p.name.endswith(COLOR_SUFFIXES))
    if not color_files:
        raise DatasetError(f"{folder}: no frame-*.color.png or frame-*.color.jpg images")
    frames = []
    for color in color_files:
        stem = color.name.split(".")[0]
        depth = folder / f"{stem}.depth.png"
        frames.append(
            Frame(
                name=f"{sequence}/{color.name}",
                image_path=color,
                camera=camera,
                pose=read_camera_to_world(folder / f"{stem}.pose.txt"),
                depth_path=depth if depth.is_file() else None,
            )
        )
    return frames


class SevenScenes(Dataset):
    """One 7-Scenes scene folder (e.g. ``.../7scenes/chess``)."""

    kind = "7scenes"
    camera = Camera.simple_pinhole(WIDTH, HEIGHT, FOCAL, 320.0, 240.0)

    def frames(self, split: str) -> list[Frame]:
        self._check_split(split)
        sequences = read_split(self.root / SPLIT_FILES[split])
        return [frame for sequence in sequences for frame in sequence_frames(self.root, sequence, self.camera)]
