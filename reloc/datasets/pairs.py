"""``pairs_with_gt.txt``: image pairs with intrinsics and relative pose, for matcher evaluation.

Each line: ``name0 name1 rot0 rot1 K0(9) K1(9) T_0to1(16)`` where ``T_0to1`` is cam1_from_cam0
(row-major 4x4) and rot0/rot1 are EXIF-style rotations in multiples of 90 degrees. Published files
(SuperGlue, LoFTR) print the rotation to 5 decimals: it is projected to the nearest rotation and
the deviation kept; a matrix farther than ``MAX_ROTATION_DEVIATION`` from any rotation is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..rotation import project_to_so3
from ..types import Pose
from .base import read_lines

FIELDS = 2 + 2 + 9 + 9 + 16
MAX_ROTATION_DEVIATION = 1e-3  # Frobenius distance; 5-decimal printing gives about 1e-5


@dataclass(frozen=True)
class PairWithGT:
    name0: str
    name1: str
    rotation0: int
    rotation1: int
    K0: np.ndarray  # (3, 3)
    K1: np.ndarray  # (3, 3)
    cam1_from_cam0: Pose
    rotation_deviation: float = 0.0  # Frobenius distance of the file's rotation to the one used


def relative_pose(path: Path, line_number: int, matrix: np.ndarray) -> tuple[Pose, float]:
    """cam1_from_cam0 from a printed 4x4 matrix, its rotation projected to SO(3), and the deviation."""
    if not np.all(np.isfinite(matrix)):
        raise DatasetError(f"{path}:{line_number}: T_0to1 contains NaN or infinite values")
    if not np.allclose(matrix[3], [0, 0, 0, 1]):
        raise DatasetError(f"{path}:{line_number}: T_0to1's last row is {matrix[3].tolist()}, not [0, 0, 0, 1]")
    rotation, deviation = project_to_so3(matrix[:3, :3])
    if deviation > MAX_ROTATION_DEVIATION or np.linalg.det(matrix[:3, :3]) <= 0:
        raise DatasetError(f"{path}:{line_number}: T_0to1's upper-left 3x3 is not a rotation (off by {deviation:.3g})")
    return Pose(rotation, matrix[:3, 3]), deviation


def pair_line(name0: str, name1: str, K0: np.ndarray, K1: np.ndarray, cam1_from_cam0: np.ndarray) -> str:
    """One ``pairs_with_gt.txt`` line (rotations 0) for images ``name0`` and ``name1`` with
    intrinsics (3, 3) and the 4x4 ``cam1_from_cam0``."""
    values = [*K0.ravel(), *K1.ravel(), *cam1_from_cam0.ravel()]
    return f"{name0} {name1} 0 0 " + " ".join(f"{v:.9f}" for v in values)


def read_pairs_with_gt(path: str | Path) -> list[PairWithGT]:
    path = Path(path)
    pairs = []
    for line_number, line in enumerate(read_lines(path, "pairs file"), start=1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if len(tokens) != FIELDS:
            raise DatasetError(f"{path}:{line_number}: expected {FIELDS} fields, got {len(tokens)}")
        try:
            values = np.array([float(v) for v in tokens[2:]])
        except ValueError:
            raise DatasetError(f"{path}:{line_number}: values are not numbers") from None
        if not np.all(np.isfinite(values[:20])):
            raise DatasetError(f"{path}:{line_number}: rotations or intrinsics contain NaN or infinite values")
        if not all(float(v).is_integer() for v in values[:2]):
            rotations = f"{tokens[2]} {tokens[3]}"
            raise DatasetError(f"{path}:{line_number}: rot0 and rot1 must be whole numbers, not {rotations}")
        pose, deviation = relative_pose(path, line_number, values[20:].reshape(4, 4))
        pairs.append(
            PairWithGT(
                tokens[0],
                tokens[1],
                int(values[0]),
                int(values[1]),
                values[2:11].reshape(3, 3),
                values[11:20].reshape(3, 3),
                pose,
                deviation,
            )
        )
    return pairs
