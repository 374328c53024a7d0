"""FaVoR stages. ``favor.train`` (mapping): descriptor fields of all persistent landmarks (a voxel
grid each, or one hash-grid field for the scene), trained together from the map's landmark
patches, written to ``favor.pt``. ``favor.localize``:
iterative render-match-PnP from prior poses (the retrieved keyframes' or another localizer's,
:mod:`reloc.localization.priors`), one per round."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import RelocError, require_range
from ..features.base import FeatureStore, prepare_image
from ..features.dense import dense_backbone
from ..io.map_folder import FAVOR_FILE, LANDMARKS_FILE, MAP_FILE, read_map_record
from ..io.memo import read_once
from ..localization.priors import Prior, PriorSet
from ..mapping.patches import read_landmark_patches
from ..mapping.store import keyframe_poses, read_sparse_map
from ..pipeline.progress import track
from ..pipeline.registry import Stage, register_stage
from ..pipeline.timing import add_query_time, query_timer
from ..types import Camera, Frame, Pose, QueryRecord, QueryResult, Round
from .localize import (
    FavorLocalizeConfig,
    Iteration,
    final_iteration,
    localize_favor,
    sample_query_grid,
    sample_query_points,
)
from .model import LandmarkFields, training_rays
from .train import BACKENDS, TrainConfig, train_grids, train_hash_field


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
        seeds = ids + self.config.seed * 1_000_003
        train = train_grids if self.config.backend == "voxel" else train_hash_field
        trained = train(centres, sides, rays, seeds, self.config)
        kept = (trained.psnr_db >= self.config.min_psnr_db).numpy()  # landmarks whose field learned its patches
        fields = LandmarkFields(
            landmark_patches.backbone,
            ids[kept],
            centres[kept],
            sides[kept],
            trained.psnr_db[kept],
            **trained.stored(kept),
        )
        fields.save(map_dir / FAVOR_FILE)
        return {"fields": map_dir / FAVOR_FILE}


@dataclass
class FavorQueryConfig(FavorLocalizeConfig):
    """``match_map_scale``: the backbone sees the query at the scale of the map's keyframes as the
    fields' patches were sampled (long side the mapping's ``mapping.patches`` ``resize_max``, read
    from the map's ``map.yaml``): the query's focal length in backbone pixels is made the
    keyframes' median, so a half-resolution query is enlarged 2x and its descriptors describe the
    same image neighbourhoods as the fields'; never above ``resize_max``. Off: the query is only
    shrunk to ``resize_max``."""

    resize_max: int = 1024  # long side of the query image the backbone sees, at most
    match_map_scale: bool = True
    confident_inliers: int = 100  # a prior whose iterations end with this many inliers ends the rounds (0: first pose)
    backend: str = "auto"  # the field backend the map's favor.pt must hold: voxel, hashgrid, or auto (either)

    def __post_init__(self):
        super().__post_init__()
        require_range(self, "confident_inliers", low=0)
        if self.backend not in ("auto", *BACKENDS):
            raise ValueError(f"backend must be auto, {' or '.join(BACKENDS)}, got {self.backend!r}")


def patch_resize_max(map_dir: Path) -> int:
    """Long side of the keyframe images the map's landmark patches were sampled from: the
    ``resize_max`` of the ``mapping.patches`` node in the pipeline ``map.yaml`` recorded."""
    path = map_dir / MAP_FILE
    nodes = ((read_map_record(map_dir).get("pipeline") or {}).get("mapping") or {}).get("nodes") or {}
    sides = [
        (node.get("with") or {}).get("resize_max")
        for node in nodes.values()
        if isinstance(node, dict) and node.get("stage") == "mapping.patches"
    ]
    if len(sides) != 1 or not isinstance(sides[0], int):
        raise RelocError(
            f"{path}: the map's pipeline should hold one mapping.patches node with an integer resize_max "
            f"(the scale FaVoR's fields were trained at), found {sides}; rebuild the map with a FaVoR config"
        )
    return sides[0]


def keyframe_focal(map_dir: Path, resize_max: int) -> float:
    """Median focal length (pixels) of the map's keyframes in images of long side at most
    ``resize_max``, the scale the fields' patches were sampled at."""
    cameras = read_once(read_sparse_map, map_dir / LANDMARKS_FILE).cameras.values()
    return float(np.median([np.mean(c.focal_length) * min(1.0, resize_max / max(c.width, c.height)) for c in cameras]))


def backbone_side(camera: Camera, resize_max: int, map_focal: float | None) -> int:
    """Long side of the query image the backbone sees: the side giving the query the focal length
    ``map_focal`` (None: the query's own side), at most ``resize_max``."""
    long_side = max(camera.width, camera.height)
    wanted = long_side if map_focal is None else round(long_side * map_focal / np.mean(camera.focal_length))
    return max(1, min(wanted, resize_max))


@dataclass
class PriorRound:
    """FaVoR's iterations from one prior pose, named by its source (a keyframe, ``results:NAME``)."""

    source: str
    iterations: list[Iteration]

    @property
    def inliers(self) -> int:
        """Inliers of the final pose (0 when the iterations ended without one)."""
        last = self.iterations[-1]
        return last.inliers if last.pose is not None else 0


def best_prior_round(
    priors: list[Prior], localize_from: Callable[[Pose], list[Iteration]], confident_inliers: int
) -> tuple[PriorRound, list[PriorRound]]:
    """Rounds of FaVoR iterations, ``localize_from(pose)`` from each of ``priors`` in order, until
    one ends with ``confident_inliers`` inliers (0: with any pose). Returns the round whose final
    pose has the most inliers (without any pose: the first round) and every round run."""
    rounds: list[PriorRound] = []
    best = None
    for prior in priors:
        round_ = PriorRound(prior.source, localize_from(prior.pose))
        rounds.append(round_)
        if best is None or round_.inliers > best.inliers:
            best = round_
        if round_.iterations[-1].pose is not None and round_.inliers >= confident_inliers:
            break
    return best, rounds


def iterations_record(round_: PriorRound) -> dict:
    """The answer's round for the query record: its prior's source and each iteration."""
    return {
        "prior": round_.source,
        "iterations": [
            {
                "pose": None if it.pose is None else [*it.pose.qvec.tolist(), *it.pose.t.tolist()],
                "visible": it.visible,
                "matches": it.matches,
                "inliers": it.inliers,
                "ms": {k: 1000 * v for k, v in it.seconds.items()},
            }
            for it in round_.iterations
        ],
    }


@register_stage
class LocalizeFavor(Stage):
    """Priors (``priors.keyframes``: the retrieved keyframes' poses; ``priors.results``: another
    localizer's poses), in order, one per round; from each, FaVoR's render-match-PnP iterations,
    until a round ends confident. The answer is the round whose final pose has the most inliers;
    its per-iteration poses, matches, inliers and seconds go to the query record's extra entries,
    every round to the record's rounds."""

    name = "favor.localize"
    Config = FavorQueryConfig
    needs = (FAVOR_FILE,)
    inputs = {"frames": list[Frame], "priors": dict[str, PriorSet], "map_dir": Path, "features": FeatureStore}
    optional_inputs = frozenset({"features"})  # the query keypoints, for query_points: keypoints
    outputs = {"results": list[QueryResult]}
    cacheable = False

    def run(
        self, frames: list[Frame], priors: dict[str, PriorSet], map_dir: Path, features: FeatureStore | None = None
    ) -> dict:
        if self.config.query_points == "keypoints" and features is None:
            raise RelocError(
                "favor.localize: query_points is keypoints but the node's input 'features' is not wired "
                "(add features: NODE.features, the query's feature node, to its inputs)"
            )
        fields = LandmarkFields.load(map_dir / FAVOR_FILE, self.config.backend)
        backbone = dense_backbone(fields.backbone)
        map_focal = keyframe_focal(map_dir, patch_resize_max(map_dir)) if self.config.match_map_scale else None
        results = [
            self.localize_query(frame, priors[frame.name], fields, backbone, features, map_focal)
            for frame in track(frames, f"FaVoR localization of {len(frames)} queries")
        ]
        return {"results": results}

    def localize_query(
        self,
        frame: Frame,
        prior_set: PriorSet,
        fields: LandmarkFields,
        backbone,
        features: FeatureStore | None,
        map_focal: float | None,
    ) -> QueryResult:
        """One query's rounds over its priors."""
        if not prior_set.priors:
            return QueryResult(frame.name, None, f"no prior pose: {prior_set.missing}", 0)
        side = backbone_side(frame.camera, self.config.resize_max, map_focal)
        with query_timer("features", frame.name):
            field_of_query = backbone(*prepare_image(frame.image_path, side, backbone.multiple, enlarge=True))
        with query_timer("grid", frame.name):
            if self.config.query_points == "keypoints":
                query = sample_query_points(field_of_query, features.read(frame.name).keypoints)
            else:
                query = sample_query_grid(field_of_query, frame.camera, self.config.grid_step_px)

        def localize_from(prior: Pose) -> list[Iteration]:
            iterations = localize_favor(query, frame.camera, prior, fields, self.config)
            for iteration in iterations:
                for stage, seconds in iteration.seconds.items():
                    add_query_time(stage, [frame.name], seconds)
            return iterations

        best, rounds = best_prior_round(prior_set.priors, localize_from, self.config.confident_inliers)
        if best.iterations[-1].pose is not None:
            final = final_iteration(query, frame.camera, best.iterations[-1], fields, self.config)
            for stage, seconds in final.seconds.items():
                add_query_time(stage, [frame.name], seconds)
            best.iterations.append(final)
        last = best.iterations[-1]
        record = QueryRecord(
            [round_.source for round_ in rounds],
            [Round([round_.source], round_.iterations[-1].matches, round_.inliers) for round_ in rounds],
            num_matches=last.matches,
            inlier_points2d=last.inlier_points2d,
            inlier_landmarks=last.inlier_landmarks,
            evidence=last.evidence,
            extra=iterations_record(best),
        )
        step = "final refinement" if last.matched is None else f"iteration {len(best.iterations)}"
        reason = "" if last.pose is not None else f"FaVoR {step}: {last.reason}"
        if last.pose is None and len(rounds) > 1:
            reason = f"no pose from any of {len(rounds)} priors; the first ({best.source}): {reason}"
        return QueryResult(frame.name, last.pose, reason, last.inliers, record=record)
