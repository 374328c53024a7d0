"""Cambridge Landmarks, in its original layout.

A scene folder holds ``dataset_train.txt`` / ``dataset_test.txt`` (header lines, three in the
release, then ``name X Y Z W P Q R``: camera centre and the world-to-camera quaternion), the images, and
``reconstruction.nvm`` (NVM_V3) which gives each image's focal length. The principal point is the
image centre and the image size is read from each file, so images may have any resolution.
The NVM radial distortion term is not used (the images are treated as pinhole, as the common
Cambridge evaluation pipelines do).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import DatasetError
from ..types import Camera, Frame, Pose
from .base import Dataset, image_size, read_lines

SPLIT_FILES = {"train": "dataset_train.txt", "test": "dataset_test.txt"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def image_key(name: str) -> str:
    """Name without extension: Cambridge's NVM lists ``.jpg`` for images stored as ``.png``."""
    return str(PurePosixPath(name).with_suffix(""))


def read_nvm_focals(path: Path) -> dict[str, float]:
    """Focal length per image (keyed by :func:`image_key`) from the first model of an NVM_V3 file."""
    lines = read_lines(path, "NVM reconstruction")
    if not lines or not lines[0].startswith("NVM_V3"):
        raise DatasetError(
            f"{path}: not an NVM_V3 file (first line {lines[0][:40]!r})" if lines else f"{path}: empty file"
        )
    body = [(i + 1, line.split()) for i, line in enumerate(lines[1:], start=1) if line.strip()]
    if not body:
        raise DatasetError(f"{path}: no camera count after the NVM_V3 header")
    count_line, count_tokens = body[0]
    try:
        num_cameras = int(count_tokens[0])
    except ValueError:
        raise DatasetError(f"{path}:{count_line}: expected the number of cameras, got {count_tokens[0]!r}") from None
    if len(body) < 1 + num_cameras:
        raise DatasetError(f"{path}: header announces {num_cameras} cameras but only {len(body) - 1} lines follow")
    focals = {}
    for line_number, tokens in body[1 : 1 + num_cameras]:
        try:
            focal = float(tokens[1])
        except (IndexError, ValueError):
            raise DatasetError(f"{path}:{line_number}: expected 'name focal qw qx qy qz cx cy cz radial 0'") from None
        if not np.isfinite(focal) or focal <= 0:
            raise DatasetError(f"{path}:{line_number}: focal length must be positive, got {tokens[1]}")
        focals[image_key(tokens[0])] = focal
    return focals


def is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def looks_like_row(tokens: list[str]) -> bool:
    """A line meant as a row: it names an image, it has a name and seven numbers, or it is
    numbers only (a row that lost its name)."""
    if tokens[0].lower().endswith(IMAGE_SUFFIXES) or all(is_number(token) for token in tokens):
        return True
    return len(tokens) == 8 and all(is_number(token) for token in tokens[1:])


def read_split(path: Path) -> list[tuple[str, Pose, int]]:
    """(image name, cam_from_world, line number) for each row of a ``dataset_*.txt`` file. Lines
    before the first row that do not look like a row (:func:`looks_like_row`) are the header; from
    then on every line must be a row, so no data line is ever skipped."""
    rows = []
    first_line: dict[str, int] = {}
    lines = read_lines(path, "Cambridge split file")
    for line_number, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens or (not rows and not looks_like_row(tokens)):
            continue  # blank, or a header line before the first row (any number of them, or none)
        if len(tokens) != 8:
            raise DatasetError(f"{path}:{line_number}: expected 'name X Y Z W P Q R', got {len(tokens)} fields")
        try:
            values = np.array([float(v) for v in tokens[1:]])
        except ValueError:
            raise DatasetError(f"{path}:{line_number}: pose values are not numbers: {line.strip()!r}") from None
        if not np.all(np.isfinite(values)):
            raise DatasetError(f"{path}:{line_number}: pose of {tokens[0]} contains NaN or infinite values")
        try:
            pose = Pose.from_rotation_center(Pose.from_qvec_tvec(values[3:], np.zeros(3)).R, values[:3])
        except ValueError as error:
            raise DatasetError(f"{path}:{line_number}: {error}") from None
        if tokens[0] in first_line:
            raise DatasetError(
                f"{path}:{line_number}: {tokens[0]} is listed twice (first on line {first_line[tokens[0]]})"
            )
        first_line[tokens[0]] = line_number
        rows.append((tokens[0], pose, line_number))
    return rows


class Cambridge(Dataset):
    """One Cambridge Landmarks scene folder (e.g. ``.../KingsCollege``)."""

    kind = "cambridge"

    def __init__(self, root: str | Path):
        super().__init__(root)
        self._focals: dict[str, float] | None = None

    @property
    def focals(self) -> dict[str, float]:
        if self._focals is None:
            self._focals = read_nvm_focals(self.root / "reconstruction.nvm")
        return self._focals

    def frames(self, split: str) -> list[Frame]:
        self._check_split(split)
        split_file = self.root / SPLIT_FILES[split]
        frames = []
        for name, pose, line_number in read_split(split_file):
            focal = self.focals.get(image_key(name))
            if focal is None:
                raise DatasetError(
                    f"{split_file}:{line_number}: image {name} has no camera in {self.root / 'reconstruction.nvm'}"
                )
            image_path = self.root / name
            width, height = image_size(image_path)
            frames.append(Frame(name, image_path, Camera.simple_pinhole(width, height, focal), pose))
        return frames
