"""FaVoR's map representation (``favor.pt``): one voxel descriptor field per landmark or one
hash-grid field per scene, and the training rays built from the map's landmark patches.

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
from .hashgrid import HashGridField
from .render import RenderConfig, Rendering, render_field_rays, render_rays
from .train import TrainingRays

FORMAT_VERSION = 2  # 2: backends (voxel, hashgrid); 1: voxel grids only, no version key


@dataclass
class LandmarkFields:
    """The FaVoR fields of a map: one voxel grid per landmark (``grids``) or one hash-grid field
    for the scene (``hash_field``), and per landmark its cube and training PSNR."""

    backbone: str  # dense descriptor backbone the fields were trained on
    landmark_ids: np.ndarray  # (L,) ids into landmarks.h5
    centres: torch.Tensor  # (L, 3) world
    sides: torch.Tensor  # (L,) cube side, metres
    psnr_db: torch.Tensor  # (L,) training rendering PSNR
    grids: torch.Tensor | None = None  # voxel backend: (L, C+1, G, G, G), density then descriptor channels
    hash_field: HashGridField | None = None  # hashgrid backend

    @property
    def backend(self) -> str:
        return "voxel" if self.grids is not None else "hashgrid"

    @property
    def descriptor_dim(self) -> int:
        return self.grids.shape[1] - 1 if self.grids is not None else self.hash_field.descriptor_dim

    def stored_bytes_per_landmark(self) -> float:
        """Bytes of the field parameters as stored (half precision) per landmark."""
        total = 2 * self.grids.numel() if self.grids is not None else self.hash_field.parameter_bytes()
        return total / max(len(self.landmark_ids), 1)

    def render(
        self, landmarks: np.ndarray, origins: torch.Tensor, directions: torch.Tensor, config: RenderConfig
    ) -> Rendering:
        """Render rays ``origins``, unit ``directions`` (V, R, 3), world, through the fields of
        ``landmarks`` (V,) (indices into this map's landmarks)."""
        centres, sides = self.centres[landmarks], self.sides[landmarks]
        if self.grids is not None:
            return render_rays(self.grids[landmarks], centres, sides, origins, directions, config)
        return render_field_rays(self.hash_field, centres, sides, origins, directions, config)

    def save(self, path: Path) -> None:
        field = {"grids": self.grids.half()} if self.grids is not None else {"hash_field": self.hash_field.state()}
        torch.save(
            {
                "format": FORMAT_VERSION,
                "backend": self.backend,
                "backbone": self.backbone,
                "landmark_ids": torch.from_numpy(self.landmark_ids),
                "centres": self.centres,
                "sides": self.sides,
                "psnr_db": self.psnr_db,
                **field,
            },
            path,
        )

    @classmethod
    def load(cls, path: Path, backend: str = "auto") -> LandmarkFields:
        """The fields in ``path``; ``backend`` (voxel, hashgrid) is required of the file unless auto."""
        if not path.is_file():
            raise RelocError(f"{path}: missing; the map has no FaVoR fields (add a favor.train node to mapping)")
        data = torch.load(path, map_location="cpu", weights_only=True)
        version = data.get("format", 1)
        if version != FORMAT_VERSION:
            raise RelocError(
                f"{path}: FaVoR fields of format version {version}; this reloc reads version {FORMAT_VERSION}: "
                "rebuild the map's fields (rerun the mapping)"
            )
        if backend != "auto" and data["backend"] != backend:
            raise RelocError(
                f"{path}: FaVoR fields of the {data['backend']} backend, but the localization expects {backend}: "
                f"set favor.train's backend to {backend} and rebuild the map, "
                f"or localize with backend {data['backend']}"
            )
        common = (data["backbone"], data["landmark_ids"].numpy(), data["centres"], data["sides"], data["psnr_db"])
        if data["backend"] == "voxel":
            return cls(*common, grids=data["grids"].float())
        return cls(*common, hash_field=HashGridField.from_state(data["hash_field"]).eval())


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
