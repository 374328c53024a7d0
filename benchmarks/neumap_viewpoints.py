"""NeuMap's code optimisation on viewpoint-augmented mapping frames (BENCHMARKS.md, issue 20,
"Viewpoint-augmented code optimisation"): each mapping frame of a 7-Scenes-layout scene with depth
is also seen through ``--copies`` homographies of a random camera rotation (axis uniform, angle up
to ``--max-angle``) and focal change (log-uniform within ``--zoom``); XFeat runs on each warped
image, and each keypoint is labelled from the frame's own depth and pose through the inverse warp
(exact for a rotating camera, up to resampling). The copies join the mapping frames as frames of
their own; voxels, sampler, shipped decoder and localization settings are ``configs/neumap.yaml``'s.
The queries of each ``--queries`` scene are localized in process and scored:

    OMP_NUM_THREADS=1 python benchmarks/neumap_viewpoints.py --scene data/neumap/7scenes-seed102 \\
        --out runs/q20aug/copies1 --copies 1 --max-angle 20 --zoom 1.4 \\
        --queries data/neumap/7scenes-seed102 data/neumap/7scenes-seed102-clean

``--copies 0`` is the shipped optimisation; ``--steps`` its step budget (2000 in the config).
Writes ``OUT/summary.json`` and prints it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from reloc.datasets import load_dataset
from reloc.datasets.base import read_depth_mm
from reloc.features.base import FeatureStore
from reloc.features.stages import FeatureStageConfig, XFeatFeatures
from reloc.geometry.errors import pose_error
from reloc.neumap.labels import concatenate, depth_at, labels_from_depth
from reloc.neumap.localize import NeumapLocalizeConfig, localize_neumap
from reloc.neumap.scenes import VoxelConfig, voxels_of
from reloc.neumap.store import NeumapMap
from reloc.neumap.train import OptimiseConfig, optimise_codes, scene_samples
from reloc.neumap.trained import QUERY_FEATURES, load_decoder
from reloc.rotation import axis_angle_to_rotmat
from reloc.types import Frame

WARP_SEED = 7


def extract(frames: list[Frame], folder: Path, config: FeatureStageConfig = QUERY_FEATURES) -> FeatureStore:
    folder.mkdir(parents=True, exist_ok=True)
    return XFeatFeatures(config).run(frames, folder)["features"]


def opencv_homography(homography: np.ndarray) -> np.ndarray:
    """``homography`` (3, 3) between COLMAP pixels (centres at +0.5) as one between OpenCV's (at 0)."""
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    return np.linalg.inv(shift) @ homography @ shift


def warped_copies(
    frames: list[Frame], copies: int, folder: Path, max_angle: float, zoom: float
) -> tuple[list[Frame], list[tuple[int, np.ndarray]]]:
    """The warped frames (images written into ``folder``) and, for each, (index of its frame,
    homography (3, 3) from the frame's COLMAP pixels to the copy's)."""
    folder.mkdir(parents=True, exist_ok=True)
    warped, warps = [], []
    for index, frame in enumerate(frames):
        image = cv2.imread(str(frame.image_path), cv2.IMREAD_COLOR)
        for copy in range(copies):
            rng = np.random.default_rng([WARP_SEED, index, copy])
            rotation = axis_angle_to_rotmat(rng.normal(size=3), np.radians(rng.uniform(0, max_angle)))
            focal = np.diag([np.exp(rng.uniform(np.log(1 / zoom), np.log(zoom)))] * 2 + [1.0])
            calibration = frame.camera.K
            homography = calibration @ focal @ rotation @ np.linalg.inv(calibration)
            path = folder / f"{index:05d}-{copy}.png"
            size = (frame.camera.width, frame.camera.height)
            cv2.imwrite(str(path), cv2.warpPerspective(image, opencv_homography(homography), size))
            warped.append(dataclasses.replace(frame, name=f"copy{copy}/{frame.name}", image_path=path))
            warps.append((index, homography))
    return warped, warps


def copy_labels(frame: Frame, features, homography: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors (n, C) and world points (n, 3) of a warped copy's keypoints whose position
    mapped back into ``frame`` has a valid, smooth depth."""
    back = np.c_[features.keypoints, np.ones(len(features.keypoints))] @ np.linalg.inv(homography).T
    back = back[:, :2] / back[:, 2:]
    width, height = frame.camera.width, frame.camera.height
    inside = (back[:, 0] >= 1) & (back[:, 1] >= 1) & (back[:, 0] < width - 1) & (back[:, 1] < height - 1)
    depth = np.full(len(back), np.nan)
    depth[inside] = depth_at(read_depth_mm(frame.depth_path), back[inside], 0.05)
    valid = np.isfinite(depth) & (depth > 0)
    rays = frame.camera.unproject(back[valid])
    points_camera = np.concatenate([rays, np.ones((len(rays), 1))], axis=1) * depth[valid, None]
    return features.descriptors[valid], frame.pose.inverse().transform(points_camera)


def scores(neumap: NeumapMap, decoder, root: Path, folder: Path) -> dict:
    """Refusals and recalls of the queries of scene ``root`` against ``neumap``."""
    queries = load_dataset("7scenes", root).frames("test")
    store = extract(queries, folder, dataclasses.replace(QUERY_FEATURES, save=False))
    errors = []
    for frame in queries:
        features = store.read(frame.name)
        found = localize_neumap(
            features.keypoints, features.descriptors, frame.camera, decoder, neumap, NeumapLocalizeConfig()
        )
        errors.append(pose_error(found.result.pose, frame.pose) if found.result.pose is not None else (np.inf, np.inf))
    translation, rotation = np.array(errors).T
    return {
        "refused": int(np.isinf(translation).sum()),
        "queries": len(queries),
        "5cm5deg": float(np.mean((translation < 0.05) & (rotation < 5))),
        "50cm5deg": float(np.mean((translation < 0.5) & (rotation < 5))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scene", type=Path, required=True, help="7-Scenes-layout scene with depth")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--copies", type=int, default=1, help="warped copies per mapping frame (0: none)")
    parser.add_argument("--max-angle", type=float, default=20.0, help="largest camera rotation, degrees")
    parser.add_argument("--zoom", type=float, default=1.4, help="focal changes within this factor either way")
    parser.add_argument("--steps", type=int, default=OptimiseConfig().max_steps, help="code optimisation step budget")
    parser.add_argument("--queries", type=Path, nargs="+", required=True, help="scenes whose queries are localized")
    args = parser.parse_args()
    frames = load_dataset("7scenes", args.scene).frames("train")
    store = extract(frames, args.out / "features")
    labels = labels_from_depth(frames, store)
    parts = [(labels.descriptors[labels.frame == i], labels.points[labels.frame == i]) for i in range(len(frames))]
    copies, warps = warped_copies(frames, args.copies, args.out / "copies", args.max_angle, args.zoom)
    if copies:
        copy_store = extract(copies, args.out / "copy-features")
        parts += [copy_labels(frames[i], copy_store.read(c.name), h) for c, (i, h) in zip(copies, warps)]
    labels = concatenate(parts, frames + copies, labels.descriptors.shape[1])
    table, observers = voxels_of(labels, VoxelConfig())
    checkpoint = load_decoder(None)
    started = time.perf_counter()
    optimised = optimise_codes(
        checkpoint.decoder, scene_samples(labels, table, observers), OptimiseConfig(max_steps=args.steps)
    )
    seconds = time.perf_counter() - started
    every_code = torch.ones_like(optimised.codes.weights, dtype=torch.bool)
    decoder_config, extractor = checkpoint.decoder.config, store.extractor
    neumap = NeumapMap(
        table, optimised.codes, every_code, checkpoint.digest, decoder_config, extractor, {}, labels.points[:0]
    ).pruned(0.05)
    summary = {
        "labelled keypoints": len(labels),
        "voxels": len(table),
        "steps": optimised.steps,
        "stopped by": optimised.stopped_by,
        "optimisation s": round(seconds, 1),
    }
    for root in args.queries:
        summary[root.name] = scores(neumap, checkpoint.decoder, root, args.out / f"queries-{root.name}")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
