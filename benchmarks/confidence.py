"""Pose confidence: how many wrong poses a pipeline accepts and how many right ones it refuses.

    python benchmarks/confidence.py --out runs/confidence --calibrate 1 2 --report 3 4 [--frames 150,40]

For every seed a synthetic 7-Scenes-layout scene (harsh query appearance) is generated and
mapped with the default config. Its queries are localized as given and in four kinds that must
not give a trusted pose: with the focal length scaled (x0.67, x0.8, x1.25, x1.5), mirrored
left-right, and the queries of the next seed's scene (another room). Every pose is scored
against the ground truth: right within 5 cm and 5 deg; for mirrored and other-scene queries
every pose is wrong.

Step 1 localizes every seed with PnP's refusals off (``min_inliers: 4``, no confidence or focal
check) and keeps each query's evidence. The thresholds are chosen on the calibration seeds only
(:func:`chosen_thresholds`). Step 2 scores the report seeds before (20 inliers, nothing else:
step 1's poses with 20 inliers, see :func:`inlier_rule`) and localizes them again after (20
inliers and the chosen thresholds), and prints per kind the wrong poses accepted (false accepts)
and the right poses refused (false rejects: queries whose pose without refusals was right).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from reloc.api import load_pipeline
from reloc.datasets import load_dataset
from reloc.geometry.errors import pose_error
from reloc.localization.pnp import focal_mismatch
from reloc.pipeline.runner import build_map, localize
from reloc.types import Camera, Frame, PoseEvidence

RIGHT_CM, RIGHT_DEG = 5.0, 5.0
FOCAL_SCALES = (0.67, 0.8, 1.25, 1.5)
FOCAL_DEVIATIONS = (0.05, 0.1, 0.15, 0.2)
FOCAL_GAINS = (1.0, 1.02, 1.05, 1.1, 1.15, 1.2, 1.3)
RAW = ["pnp.pnp.min_inliers=4", "pnp.pnp.min_confidence=0", "pnp.pnp.max_focal_deviation=0"]


def scene_root(out: Path, seed: int, frames: str) -> Path:
    root = out / f"scene-{seed}"
    if not (root / "synthetic.yaml").is_file():
        command = ["reloc", "synth", "--layout", "7scenes", "--out", str(root), "--seed", str(seed)]
        subprocess.run([*command, "--frames", frames, "--appearance", "harsh"], check=True)
    return root


def scaled_camera(camera: Camera, scale: float) -> Camera:
    params = np.array(camera.params)
    params[: 2 if camera.model == "PINHOLE" else 1] *= scale
    return dataclasses.replace(camera, params=tuple(params))


def mirrored(frames: list[Frame], folder: Path) -> list[Frame]:
    """The frames with their images flipped left-right (written under ``folder``)."""
    flipped = []
    for frame in frames:
        path = folder / frame.name
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.open(frame.image_path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(path)
        flipped.append(dataclasses.replace(frame, image_path=path))
    return flipped


def query_kinds(out: Path, seed: int, roots: dict[int, Path]) -> dict[str, tuple[list[Frame], bool]]:
    """Kind -> (queries, whether a pose can be right)."""
    queries = load_dataset("7scenes", roots[seed]).frames("test")
    other = load_dataset("7scenes", roots[seed + 1]).frames("test")
    kinds = {"as given": (queries, True)}
    for scale in FOCAL_SCALES:
        frames = [dataclasses.replace(f, camera=scaled_camera(f.camera, scale)) for f in queries]
        kinds[f"focal x{scale:g}"] = (frames, True)
    kinds["mirrored"] = (mirrored(queries, out / f"mirrored-{seed}"), False)
    kinds["other scene"] = (other, False)
    return kinds


def score(frames: list[Frame], results, can_be_right: bool) -> list[dict]:
    """Per query: accepted, right (within RIGHT_CM / RIGHT_DEG), the evidence of its pose."""
    rows = []
    for frame, result in zip(frames, results):
        evidence = result.record.evidence
        right = False
        if result.pose is not None and can_be_right:
            t_m, r_deg = pose_error(result.pose, frame.pose)
            right = 100 * t_m <= RIGHT_CM and r_deg <= RIGHT_DEG
        rows.append(
            {
                "name": frame.name,
                "accepted": result.pose is not None,
                "right": right,
                "reason": result.reason,
                "evidence": None if evidence is None else dataclasses.asdict(evidence),
            }
        )
    return rows


def run_seed(out: Path, seed: int, roots: dict[int, Path], overrides: list[str], tag: str) -> dict[str, list[dict]]:
    path = out / f"{tag}-{seed}.json"
    if path.is_file():
        return json.loads(path.read_text())
    pipeline = load_pipeline("default", overrides)
    map_dir = out / f"map-{seed}"
    scene = load_dataset("7scenes", roots[seed])
    if not (map_dir / "map.yaml").is_file():
        build_map(pipeline, scene.frames("train"), map_dir, scene.description())
    rows = {}
    for kind, (frames, can_be_right) in query_kinds(out, seed, roots).items():
        rows[kind] = score(frames, localize(map_dir, frames, pipeline=pipeline), can_be_right)
    path.write_text(json.dumps(rows, indent=1))
    return rows


def chosen_thresholds(raw: list[dict[str, list[dict]]], min_inliers: int) -> tuple[float, float, float]:
    """(max_focal_deviation, min_focal_gain, min_confidence) chosen on these seeds' poses
    without refusals: the focal pair that refuses no right pose and the most wrong ones (ties:
    the smaller values), then the smallest whole confidence above every pose of a query that
    has no right pose (mirrored, other scene)."""
    poses = [
        (kind, row)
        for rows in raw
        for kind, kind_rows in rows.items()
        for row in kind_rows
        if row["accepted"] and row["evidence"]["inliers"] >= min_inliers
    ]
    candidates = []
    for deviation in FOCAL_DEVIATIONS:
        for gain in FOCAL_GAINS:
            refused = [focal_mismatch(PoseEvidence(**row["evidence"]), deviation, gain) for _, row in poses]
            if not any(r and row["right"] for r, (_, row) in zip(refused, poses)):
                candidates.append((-sum(refused), deviation, gain))
    _, deviation, gain = min(candidates)
    unrelated = [row["evidence"]["confidence"] for kind, row in poses if kind in ("mirrored", "other scene")]
    return deviation, gain, float(np.floor(max(unrelated, default=0.0)) + 1.0)


def inlier_rule(raw: dict[str, list[dict]], min_inliers: int) -> dict[str, list[dict]]:
    """The queries as the inlier rule alone decides them: the same rounds and poses as without
    refusals (the rounds loop keeps the round with the most inliers either way), a pose kept
    when it has ``min_inliers``."""
    return {
        kind: [{**row, "accepted": row["accepted"] and row["evidence"]["inliers"] >= min_inliers} for row in rows]
        for kind, rows in raw.items()
    }


def rates(rows: dict[str, list[dict]], candidates: dict[str, list[dict]]) -> dict[str, tuple[int, int, int, int]]:
    """Kind -> (queries, right poses available, wrong accepted, right refused); ``candidates``
    are the same queries localized without refusals (the poses that could have been given)."""
    table = {}
    for kind, kind_rows in rows.items():
        available = {row["name"] for row in candidates[kind] if row["right"]}
        wrong_accepted = sum(row["accepted"] and not row["right"] for row in kind_rows)
        right_refused = sum(not row["accepted"] and row["name"] in available for row in kind_rows)
        table[kind] = (len(kind_rows), len(available), wrong_accepted, right_refused)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/confidence"))
    parser.add_argument("--calibrate", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--report", type=int, nargs="+", default=[3, 4])
    parser.add_argument("--frames", default="150,40")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = sorted({*args.calibrate, *args.report})
    roots = {seed: scene_root(args.out, seed, args.frames) for seed in sorted({*seeds, *(s + 1 for s in seeds)})}
    raw = {seed: run_seed(args.out, seed, roots, RAW, "raw") for seed in seeds}
    deviation, gain, confidence = chosen_thresholds([raw[s] for s in args.calibrate], 20)
    chosen = {"max_focal_deviation": deviation, "min_focal_gain": gain, "min_confidence": confidence}
    print(f"chosen on seeds {args.calibrate}: " + ", ".join(f"{k} {v:g}" for k, v in chosen.items()))
    after = [f"pnp.pnp.{key}={value:g}" for key, value in chosen.items()]
    print("| seed | queries | right poses | wrong accepted: before | after | right refused: before | after |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for seed in args.report:
        old = rates(inlier_rule(raw[seed], 20), raw[seed])
        new = rates(
            run_seed(args.out, seed, roots, after, "after-" + "-".join(f"{v:g}" for v in chosen.values())), raw[seed]
        )
        for kind, (count, available, wrong_old, refused_old) in old.items():
            _, _, wrong_new, refused_new = new[kind]
            cells = [seed, f"{kind} ({count})", available, wrong_old, wrong_new, refused_old, refused_new]
            print("| " + " | ".join(str(cell) for cell in cells) + " |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
