"""``pairs_with_gt.txt``: image pairs with intrinsics and relative pose, for matcher evaluation.

Each line: ``name0 name1 rot0 rot1 K0(9) K1(9) T_0to1(16)`` where ``T_0to1`` is cam1_from_cam0
(row-major 4x4) and rot0/rot1 are EXIF-style rotations in multiples of 90 degrees.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..types import Pose
from .base import require_file

FIELDS = 2 + 2 + 9 + 9 + 16


@dataclass(frozen=True)
class PairWithGT:
    name0: str
    name1: str
    rotation0: int
    rotation1: int
    K0: np.ndarray  # (3, 3)
    K1: np.ndarray  # (3, 3)
    cam1_from_cam0: Pose


def read_pairs_with_gt(path: str | Path) -> list[PairWithGT]:
    path = Path(path)
    pairs = []
    for line_number, line in enumerate(require_file(path, "pairs file").read_text().splitlines(), start=1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if len(tokens) != FIELDS:
            raise DatasetError(f"{path}:{line_number}: expected {FIELDS} fields, got {len(tokens)}")
        try:
            values = np.array([float(v) for v in tokens[2:]])
            pose = Pose.from_matrix(values[20:].reshape(4, 4))
        except ValueError as error:
            raise DatasetError(f"{path}:{line_number}: {error}") from None
        pairs.append(
            PairWithGT(
                tokens[0],
                tokens[1],
                int(values[0]),
                int(values[1]),
                values[2:11].reshape(3, 3),
                values[11:20].reshape(3, 3),
                pose,
            )
        )
    return pairs
