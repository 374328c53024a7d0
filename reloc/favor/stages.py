"""FaVoR mapping stage ``favor.train``: voxel descriptor fields of all persistent landmarks,
trained together from the map's landmark patches, written to ``favor.pt``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..mapping.patches import read_landmark_patches
from ..mapping.store import read_sparse_map
from ..pipeline.registry import Stage, register_stage
from .model import FAVOR_FILE, LandmarkFields, keyframe_poses, training_rays
from .train import TrainConfig, train_grids


@register_stage
class TrainFavor(Stage):
    name = "favor.train"
    Config = TrainConfig
    inputs = {"patches": Path, "map_dir": Path}
    outputs = {"fields": Path}

    def run(self, patches: Path, map_dir: Path) -> dict:
        landmark_patches = read_landmark_patches(map_dir)
        sparse_map = read_sparse_map(map_dir)
        rays, centres, sides = training_rays(landmark_patches, sparse_map, keyframe_poses(map_dir))
        ids = np.unique(landmark_patches.landmark)
        trained = train_grids(centres, sides, rays, ids + self.config.seed * 1_000_003, self.config)
        kept = trained.kept(self.config.min_psnr_db).numpy()
        fields = LandmarkFields(landmark_patches.backbone, ids[kept], centres[kept], sides[kept], trained.grids[kept],
                                trained.psnr_db[kept])
        fields.save(map_dir / FAVOR_FILE)
        return {"fields": map_dir / FAVOR_FILE}
