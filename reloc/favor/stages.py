"""FaVoR stages. ``favor.train`` (mapping): voxel descriptor fields of all persistent landmarks,
trained together from the map's landmark patches, written to ``favor.pt``. ``favor.localize``:
iterative render-match-PnP from the retrieval prior."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..features.base import prepare_image
from ..features.dense import dense_backbone
from ..io.map_folder import FAVOR_FILE, SFM_FOLDER
from ..mapping.patches import read_landmark_patches
from ..mapping.store import read_sparse_map
from ..pipeline.progress import track
from ..pipeline.registry import Stage, register_stage
from ..pipeline.timing import add_query_time, query_timer
from ..types import Frame, QueryRecord, QueryResult
from .localize import FavorLocalizeConfig, localize_favor
from .model import LandmarkFields, keyframe_poses, training_rays
from .train import TrainConfig, train_grids


@register_stage
class TrainFavor(Stage):
    name = "favor.train"
    Config = TrainConfig
    inputs = {"patches": Path, "map_dir": Path}
    outputs = {"fields": Path}

    def run(self, patches: Path, map_dir: Path) -> dict:
        landmark_patches = read_landmark_patches(patches)
        sparse_map = read_sparse_map(map_dir)
        rays, centres, sides = training_rays(landmark_patches, sparse_map, keyframe_poses(map_dir))
        ids = np.unique(landmark_patches.landmark)
        trained = train_grids(centres, sides, rays, ids + self.config.seed * 1_000_003, self.config)
        kept = trained.kept(self.config.min_psnr_db).numpy()
        fields = LandmarkFields(
            landmark_patches.backbone, ids[kept], centres[kept], sides[kept], trained.grids[kept], trained.psnr_db[kept]
        )
        fields.save(map_dir / FAVOR_FILE)
        return {"fields": map_dir / FAVOR_FILE}


@dataclass
class FavorQueryConfig(FavorLocalizeConfig):
    resize_max: int = 1024  # long side of the query image the backbone sees


@register_stage
class LocalizeFavor(Stage):
    """Prior: the pose of the top retrieved keyframe; then FaVoR's render-match-PnP iterations.
    Per-iteration poses, matches, inliers and seconds go to the query record's extra entries."""

    name = "favor.localize"
    Config = FavorQueryConfig
    needs = (FAVOR_FILE, SFM_FOLDER)
    inputs = {"frames": list[Frame], "retrieved": dict[str, list[str]], "map_dir": Path}
    outputs = {"results": list[QueryResult]}
    cacheable = False

    def run(self, frames: list[Frame], retrieved: dict[str, list[str]], map_dir: Path) -> dict:
        fields = LandmarkFields.load(map_dir / FAVOR_FILE)
        backbone = dense_backbone(fields.backbone)
        poses = keyframe_poses(map_dir)
        results = []
        for frame in track(frames, f"FaVoR localization of {len(frames)} queries"):
            with query_timer("features", frame.name):
                field_of_query = backbone(*prepare_image(frame.image_path, self.config.resize_max, backbone.multiple))
            iterations = localize_favor(
                field_of_query, frame.camera, poses[retrieved[frame.name][0]], fields, self.config
            )
            for iteration in iterations:
                for stage, seconds in iteration.seconds.items():
                    add_query_time(stage, [frame.name], seconds)
            last = iterations[-1]
            iterations_record = {
                "iterations": [
                    {
                        "pose": None if it.pose is None else [*it.pose.qvec.tolist(), *it.pose.t.tolist()],
                        "visible": it.visible,
                        "matches": it.matches,
                        "inliers": it.inliers,
                        "ms": {k: 1000 * v for k, v in it.seconds.items()},
                    }
                    for it in iterations
                ]
            }
            record = QueryRecord(
                [retrieved[frame.name][0]],
                num_matches=last.matches,
                inlier_points2d=last.inlier_points2d,
                inlier_landmarks=last.inlier_landmarks,
                evidence=last.evidence,
                extra=iterations_record,
            )
            reason = "" if last.pose is not None else f"FaVoR iteration {len(iterations)}: {last.reason}"
            results.append(QueryResult(frame.name, last.pose, reason, last.inliers, record=record))
        return {"results": results}
