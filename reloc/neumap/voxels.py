"""NeuMap's voxel grid: the scene cut into cubes of side ``size``; a voxel is kept when at least
one mapping frame sees ``min_points`` of its labelled points. Per voxel the median, minimum and
maximum of its points; the decoder regresses a point's offset from the median in units of the
voxel side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import RelocError
from .labels import LabelledPoints


@dataclass
class VoxelTable:
    """Voxel ``v`` is the cube ``origin + size * cells[v]`` to ``origin + size * (cells[v] + 1)``."""

    size: float  # side in metres
    origin: np.ndarray  # (3,) world
    cells: np.ndarray  # (V, 3) int32 grid coordinates
    median: np.ndarray  # (V, 3) float32 world, median of the voxel's labelled points
    low: np.ndarray  # (V, 3) float32 world, their minimum
    high: np.ndarray  # (V, 3) float32 world, their maximum

    def __len__(self) -> int:
        return len(self.cells)

    def assign(self, points: np.ndarray) -> np.ndarray:
        """(M,) index of the voxel holding each world point (M, 3), -1 outside every kept voxel."""
        cells = np.floor((points - self.origin) / self.size).astype(np.int64)
        index = {tuple(cell): v for v, cell in enumerate(self.cells.tolist())}
        return np.array([index.get(tuple(cell), -1) for cell in cells.tolist()], np.int64)

    def normalised_offsets(self, points: np.ndarray, voxel: np.ndarray) -> np.ndarray:
        """(M, 3) offsets of world points (M, 3) from their voxel's median (M,), in voxel sides."""
        return (points - self.median[voxel]) / self.size

    def world_points(self, offsets: np.ndarray, voxel: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`normalised_offsets`."""
        return self.median[voxel] + offsets * self.size


def automatic_voxel_size(points: np.ndarray, voxels_per_side: int) -> float:
    """The longest side of the box holding the central 96 % of the points, over ``voxels_per_side``."""
    low, high = np.percentile(points, [2, 98], axis=0)
    return float(max(high - low)) / voxels_per_side


def build_voxels(labels: LabelledPoints, size: float, min_points: int) -> tuple[VoxelTable, list[np.ndarray]]:
    """The kept voxels and, per voxel, the frames (indices into ``labels.frames``) that see at
    least ``min_points`` of its points. Fails when no voxel is kept."""
    if len(labels) == 0:
        raise RelocError("no labelled keypoints: the mapping frames have no valid depth and no landmarks")
    origin = np.floor(labels.points.min(axis=0) / size) * size
    cells = np.floor((labels.points - origin) / size).astype(np.int64)
    unique_cells, cell_of_point = np.unique(cells, axis=0, return_inverse=True)
    cell_of_point = cell_of_point.reshape(-1)
    kept_cells, observers = [], []
    for c in range(len(unique_cells)):
        in_cell = cell_of_point == c
        frames, counts = np.unique(labels.frame[in_cell], return_counts=True)
        seen_by = frames[counts >= min_points]
        if len(seen_by):
            kept_cells.append(c)
            observers.append(seen_by.astype(np.int32))
    if not kept_cells:
        raise RelocError(
            f"no voxel of side {size:.2f} m is seen by a mapping frame with {min_points} or more labelled keypoints "
            f"({len(labels)} labelled keypoints in {len(unique_cells)} voxels): lower min_points_per_voxel or "
            "use larger voxels"
        )
    stats = [[fn(labels.points[cell_of_point == c], axis=0) for fn in (np.median, np.min, np.max)] for c in kept_cells]
    median, low, high = (np.array([s[i] for s in stats], np.float32) for i in range(3))
    table = VoxelTable(size, origin.astype(np.float64), unique_cells[kept_cells].astype(np.int32), median, low, high)
    return table, observers
