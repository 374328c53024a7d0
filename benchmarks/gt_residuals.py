"""Reprojection residuals, under the ground-truth pose, of the inlier correspondences that a
localization run kept for each query (its ``results.details.json``), and for a second run of the
same queries against the same map, those of the correspondences only it kept:

    python benchmarks/gt_residuals.py --root ../shared/data/strecha/Herz-Jesus-P8 --dataset cambridge \
        --map runs/q19b/maps/Herz-Jesus-P8/map --run runs/q19b/runs/Herz-Jesus-P8 --other runs/q19c/runs/Herz-Jesus-P8

Prints, per query, the inlier count and the median and 90th percentile residual in pixels.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from reloc.datasets import load_dataset
from reloc.io.map_folder import LANDMARKS_FILE
from reloc.mapping.store import read_sparse_map


def inlier_residuals(details: dict, frame, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Landmark ids (N,) of a query's inliers and their residuals (N,) in pixels under ``frame``'s
    ground-truth pose."""
    inliers = details["inliers"]
    ids = np.asarray(inliers["landmarks"], np.int64)
    projected = frame.camera.project(frame.pose.transform(points[ids]))
    return ids, np.linalg.norm(projected - np.asarray(inliers["points2d"]), axis=1)


def summary(residuals: np.ndarray) -> str:
    if not len(residuals):
        return "0"
    return f"{len(residuals)}, {np.median(residuals):.2f} / {np.percentile(residuals, 90):.2f} px"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--dataset", default="cambridge")
    parser.add_argument("--map", type=Path, required=True)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--other", type=Path, required=True)
    args = parser.parse_args()
    frames = {frame.name: frame for frame in load_dataset(args.dataset, args.root).frames("test")}
    points = read_sparse_map(args.map / LANDMARKS_FILE).points
    run, other = (json.loads((folder / "results.details.json").read_text()) for folder in (args.run, args.other))
    print("| query | run: inliers, median / 90th pct residual | other run: all | other run: only its own |")
    print("|---|---|---|---|")
    for name in sorted(set(run) & set(other)):
        ids, residuals = inlier_residuals(run[name], frames[name], points)
        other_ids, other_residuals = inlier_residuals(other[name], frames[name], points)
        own = ~np.isin(other_ids, ids)
        print(f"| {name} | {summary(residuals)} | {summary(other_residuals)} | {summary(other_residuals[own])} |")


if __name__ == "__main__":
    main()
