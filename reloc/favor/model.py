"""FaVoR's map representation: one voxel descriptor field per landmark (``favor.pt``), and the
training rays built from the map's landmark patches.

Cube size follows the paper: the footprint of the descriptor patch at the landmark's nearest
observation, i.e. ``patch_size * spacing_px * depth / focal`` metres, centred on the
triangulated point.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import RelocError
from ..features.dense import patch_offsets
from ..mapping.patches import LandmarkPatches
from ..mapping.store import SparseMap
from ..types import Pose
from .train import TrainingRays


@dataclass
class LandmarkFields:
    backbone: str  # dense descriptor backbone the fields were trained on
    landmark_ids: np.ndarray  # (L,) ids into landmarks.h5
    centres: torch.Tensor  # (L, 3) world
    sides: torch.Tensor  # (L,) cube side, metres
    grids: torch.Tensor  # (L, C+1, G, G, G): density, then descriptor channels
    psnr_db: torch.Tensor  # (L,) training rendering PSNR

    def save(self, path: Path) -> None:
        torch.save(
            {
                "backbone": self.backbone,
                "landmark_ids": torch.from_numpy(self.landmark_ids),
                "centres": self.centres,
                "sides": self.sides,
                "grids": self.grids.half(),
                "psnr_db": self.psnr_db,
            },
            path,
        )

    @classmethod
    def load(cls, path: Path) -> LandmarkFields:
        if not path.is_file():
            raise RelocError(f"{path}: missing; the map has no FaVoR fields (add a favor.train node to mapping)")
        data = torch.load(path, map_location="cpu", weights_only=True)
        return cls(
            data["backbone"],
            data["landmark_ids"].numpy(),
            data["centres"],
            data["sides"],
            data["grids"].float(),
            data["psnr_db"],
        )


def training_rays(
    patches: LandmarkPatches, sparse_map: SparseMap, poses: dict[str, Pose]
) -> tuple[TrainingRays, torch.Tensor, torch.Tensor]:
    """Rays through every patch pixel of every observation, grouped by landmark in the order of
    ``patches.landmark_ids``; and the cubes' centres (L, 3) and sides (L,)."""
    size = patches.patch_size
    grid = patch_offsets(size)
    order = np.argsort(patches.landmark, kind="stable")
    landmark_of = patches.landmark[order]
    origins = np.zeros((len(order), 3))
    directions = np.zeros((len(order), size * size, 3))
    depth_px = np.full(len(order), np.inf)  # metres per pixel of footprint at each observation
    for image_index in np.unique(patches.image):
        name = patches.images[image_index]
        rows = np.flatnonzero(patches.image[order] == image_index)
        camera, pose = sparse_map.cameras[name], poses[name]
        observations = order[rows]
        pixels = patches.xy[observations][:, None] + grid[None] * patches.spacing_px[observations][:, None, None]
        rays_cam = np.concatenate([camera.unproject(pixels.reshape(-1, 2)), np.ones((pixels.size // 2, 1))], axis=1)
        rays_world = rays_cam @ pose.R  # R^T applied to each row
        directions[rows] = (rays_world / np.linalg.norm(rays_world, axis=1, keepdims=True)).reshape(len(rows), -1, 3)
        origins[rows] = pose.center
        depth = pose.transform(sparse_map.points[landmark_of[rows]])[:, 2]
        depth_px[rows] = depth / camera.focal_length[0] * patches.spacing_px[observations]
    ids, starts, counts = np.unique(landmark_of, return_index=True, return_counts=True)
    if not np.array_equal(ids, np.sort(patches.landmark_ids)):
        raise RelocError("patches.h5: observations and landmark_ids disagree; rebuild the map's patches")
    sides = np.minimum.reduceat(depth_px, starts) * size
    targets = torch.from_numpy(patches.patches[order].astype(np.float32)).reshape(-1, patches.patches.shape[-1])
    rays = TrainingRays(
        torch.from_numpy(np.repeat(origins, size * size, axis=0)).float(),
        torch.from_numpy(directions.reshape(-1, 3)).float(),
        torch.nn.functional.normalize(targets, dim=-1),
        torch.from_numpy(starts * size * size),
        torch.from_numpy(counts * size * size),
    )
    return rays, torch.from_numpy(sparse_map.points[ids]).float(), torch.from_numpy(sides).float()
