"""Real indoor pairs with ground-truth relative pose from 7-Scenes frames, and the matchers on them.

    python benchmarks/sevenscenes_pairs.py make --root ../shared/data/7scenes-sample/stairs --out runs/7scenes-pairs
    python benchmarks/sevenscenes_pairs.py eval --pairs runs/7scenes-pairs --root ../shared/data/7scenes-sample/stairs

``make``: every two frames of the scene (both splits) at least ``--min-baseline`` apart (below
~10 cm the direction of the translation, half of the pose error, is not observable at 640 px) whose
views overlap by ``--min-overlap`` to ``--max-overlap`` of the first image's pixels, the overlap
measured with the Kinect depth maps and the poses (a pixel counts when its depth point projects
into the other image in front of it and agrees with that image's depth: not occluded); written as
``pairs_with_gt.txt`` (cam1_from_cam0, the dataset's intrinsics, image names relative to
``--root``). 7-Scenes' depth is not registered to its colour images, so the overlap is
approximate; the poses are the dataset's.
``eval``: ``reloc match-eval`` of each matcher at 640 px, the pose AUC table in Markdown. These
pairs are a validation set only: no model of this project trains on them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from reloc.datasets import load_dataset, read_depth_mm
from reloc.datasets.pairs import pair_line
from reloc.datasets.synthetic.pairs import correspondences

MATCHERS = ("sift", "xfeat-star", "aliked-lightglue", "casp")


def overlap(frame0, depth0: np.ndarray, frame1, depth1: np.ndarray) -> float:
    """Share of frame 0's pixels with valid depth whose point frame 1 sees unoccluded."""
    _, covisible = correspondences(depth0, frame0.camera, frame0.pose, depth1, frame1.camera, frame1.pose)
    valid = np.isfinite(depth0)
    return float(covisible[valid].mean()) if valid.any() else 0.0


def make_pairs(root: Path, out: Path, min_overlap: float, max_overlap: float, min_baseline: float) -> int:
    dataset = load_dataset("7scenes", root)
    frames = sorted(dataset.frames("train") + dataset.frames("test"), key=lambda frame: frame.name)
    depths = {frame.name: read_depth_mm(frame.depth_path) for frame in frames}
    lines = []
    for frame0, frame1 in itertools.combinations(frames, 2):
        relative = frame1.pose @ frame0.pose.inverse()
        if np.linalg.norm(relative.t) < min_baseline:
            continue
        share = overlap(frame0, depths[frame0.name], frame1, depths[frame1.name])
        if min_overlap <= share <= max_overlap:
            lines.append(pair_line(frame0.name, frame1.name, frame0.camera.K, frame1.camera.K, relative.matrix))
            angle = np.degrees(np.arccos(np.clip((np.trace(relative.R) - 1) / 2, -1, 1)))
            print(f"{frame0.name} {frame1.name}: overlap {share:.2f}, {np.linalg.norm(relative.t):.2f} m, {angle:.0f}°")
    out.mkdir(parents=True, exist_ok=True)
    (out / "pairs_with_gt.txt").write_text("\n".join(lines) + "\n")
    return len(lines)


def evaluate(pairs: Path, root: Path) -> None:
    print("| matcher | pairs | AUC@5 | AUC@10 | AUC@20 | ms per pair |")
    print("|---|---:|---:|---:|---:|---:|")
    for matcher in MATCHERS:
        out = pairs / f"{matcher}.json"
        command = [sys.executable, "-m", "reloc.cli", "match-eval", "--matcher", matcher, "--resize-max", "640"]
        command += ["--pairs", str(pairs / "pairs_with_gt.txt"), "--images", str(root), "--out", str(out)]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        metrics = json.loads(out.read_text())
        print(
            f"| {matcher} | {metrics['n_pairs']} | {metrics['auc_5']:.1f} | {metrics['auc_10']:.1f} | "
            f"{metrics['auc_20']:.1f} | {metrics['ms_per_pair']:.0f} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("make", "eval"))
    parser.add_argument("--root", type=Path, required=True, help="a 7-Scenes scene folder")
    parser.add_argument("--out", type=Path, help="make: folder for pairs_with_gt.txt")
    parser.add_argument("--pairs", type=Path, help="eval: the folder written by make")
    parser.add_argument("--min-overlap", type=float, default=0.2)
    parser.add_argument("--max-overlap", type=float, default=0.9)
    parser.add_argument("--min-baseline", type=float, default=0.1, help="metres")
    args = parser.parse_args()
    if args.command == "make":
        count = make_pairs(args.root, args.out, args.min_overlap, args.max_overlap, args.min_baseline)
        print(f"{count} pairs")
    else:
        evaluate(args.pairs, args.root)


if __name__ == "__main__":
    main()
