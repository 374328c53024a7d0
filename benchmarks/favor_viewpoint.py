"""FaVoR against the baseline feature-matching localizer on the same maps and queries, where the
queries see the scene from viewpoints the map does not have.

    python benchmarks/favor_viewpoint.py --strecha ../shared/data/strecha --out runs/favor-viewpoint \\
        [--configs favor favor-aliked]

Scenes:

- the three Strecha scenes with a sparse map: every second mapping image dropped;
- a synthetic courtyard (``reloc synth --layout cambridge --seed 1 --frames 120,40 --sequences 2,2
  --query-offset 2.0``) whose queries leave the mapping trajectory: each follows a mapping path
  moved 2 m sideways and re-aimed at what the mapping camera saw.

For every scene the first FaVoR config builds the map (``reloc eval``); the baseline
(``configs/default.yaml``, whose mapping is the same graph without ``favor.train``) localizes
against that same map (``reloc eval --map``). Both then run on the harder copy of the queries
(darker, colour cast, noise, JPEG 40, half resolution; benchmarks/strecha.py) against the same map
again. Further FaVoR configs (e.g. the ALIKED backbone) build maps of their own.

Prints, per pipeline and scene: failures, median errors, recalls and ms per query per stage; per
FaVoR iteration (then the final refinement of the answering round): median errors, localized
queries, median inliers and ms (render + matching + refinement + PnP); the viewpoint change of
the queries (distance and viewing-axis angle to the nearest mapping camera); and per FaVoR map
its field backend, training seconds and size in bytes per landmark.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from strecha import SCENES, write_harder_copy

from reloc.datasets.cambridge import Cambridge
from reloc.favor.model import LandmarkFields
from reloc.geometry.errors import pose_error
from reloc.io.map_folder import FAVOR_FILE, read_map_record
from reloc.pipeline.runner import folder_bytes
from reloc.types import Pose

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SYNTHETIC = [
    "--layout",
    "cambridge",
    "--seed",
    "1",
    "--frames",
    "120,40",
    "--sequences",
    "2,2",
    "--query-offset",
    "2.0",
]
SPLIT_HEADER_LINES = 3


def write_sparse_copy(scene: Path, out: Path) -> Path:
    """``scene`` with every second mapping image dropped from ``dataset_train.txt``; the image
    folders are linked, the other files copied."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for entry in scene.iterdir():
        if entry.is_dir():
            (out / entry.name).symlink_to(entry.resolve(), target_is_directory=True)
        elif entry.name != "dataset_train.txt":
            shutil.copy(entry, out / entry.name)
    lines = (scene / "dataset_train.txt").read_text().splitlines()
    kept = lines[:SPLIT_HEADER_LINES] + [line for line in lines[SPLIT_HEADER_LINES:] if line.strip()][::2]
    (out / "dataset_train.txt").write_text("\n".join(kept) + "\n")
    return out


def synthetic_scene(out: Path) -> Path:
    if not (out / "synthetic.yaml").is_file():
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run(
            [sys.executable, "-m", "reloc.cli", "synth", *SYNTHETIC, "--out", str(out)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return out


def evaluate(config: str, root: Path, run: Path, map_dir: Path | None = None) -> dict:
    shutil.rmtree(run, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "reloc.cli",
        "eval",
        "--config",
        str(CONFIGS / f"{config}.yaml"),
        "--dataset",
        "cambridge",
        "--root",
        str(root),
        "--out",
        str(run),
    ]
    subprocess.run(command + (["--map", str(map_dir)] if map_dir else []), check=True, stdout=subprocess.DEVNULL)
    return json.loads((run / "metrics.json").read_text())


def cell(value: float | None) -> str:
    return "failed" if value is None else f"{value:.2f}"


def summary_row(pipeline: str, scene: str, metrics: dict) -> str:
    timing = metrics["timing_s"]
    stages = " + ".join(f"{name} {1000 * seconds:.0f}" for name, seconds in timing.items())
    return (
        f"| {pipeline} | {scene} | {metrics['n_failed']}/{metrics['n_queries']} | {cell(metrics['median_t_cm'])} "
        f"| {cell(metrics['median_r_deg'])} | {100 * metrics['recall']['2cm_2deg']:.0f} % | "
        f"{100 * metrics['recall']['5cm_5deg']:.0f} % "
        f"| {1000 * sum(timing.values()):.0f} ({stages}) |"
    )


def iteration_rows(pipeline: str, scene: str, run: Path, root: Path) -> list[str]:
    """One row per FaVoR iteration of each query's answering round (its prior keyframe's pose
    first), from the run's per-query details, and a row of the rounds run per query."""
    dataset = Cambridge(root)
    truth = dataset.ground_truth()
    keyframes = {frame.name: frame.pose for frame in dataset.frames("train")}
    details = json.loads((run / "results.details.json").read_text())
    steps_by_iteration = [  # the prior row: keyframe priors only (another localizer's pose is not in the record)
        {
            name: {"pose": keyframes[d["prior"]], "inliers": None, "ms": {}}
            for name, d in details.items()
            if d["prior"] in keyframes
        }
    ]
    for index in range(max(len(d["iterations"]) for d in details.values())):
        steps_by_iteration.append(
            {
                name: {
                    "pose": Pose.from_qvec_tvec(step["pose"][:4], step["pose"][4:]),
                    "inliers": step["inliers"],
                    "ms": step["ms"],
                }
                for name, d in details.items()
                if index < len(d["iterations"])
                for step in [d["iterations"][index]]
                if step["pose"] is not None
            }
        )
    rows = []
    for index, steps in enumerate(steps_by_iteration):
        errors = np.array([pose_error(step["pose"], truth[name].pose) for name, step in steps.items()]).reshape(-1, 2)
        inliers = [step["inliers"] for step in steps.values() if step["inliers"] is not None]
        ms = [sum(step["ms"].values()) for step in steps.values() if step["ms"]]
        final = index > 0 and steps and all("render" not in step["ms"] for step in steps.values())
        rows.append(
            f"| {pipeline} | {scene} | {'final' if final else index or 'prior'} | {len(steps)}/{len(details)} "
            f"| {cell(100 * np.median(errors[:, 0]) if len(errors) else None)} | "
            f"{cell(np.median(errors[:, 1]) if len(errors) else None)} "
            f"| {f'{np.median(inliers):.0f}' if inliers else '-'} | {f'{np.median(ms):.0f}' if ms else '-'} |"
        )
    rounds = [len(d.get("rounds") or [None]) for d in details.values()]
    later = sum(1 for d in details.values() if d.get("retrieved") and d["prior"] != d["retrieved"][0])
    rows.append(
        f"| {pipeline} | {scene} | rounds | {later}/{len(details)} answered from a later prior | - | - | - "
        f"| median {np.median(rounds):.0f}, max {max(rounds)} rounds per query |"
    )
    return rows


def viewpoint_change(root: Path) -> str:
    """Median over queries of the distance and viewing-axis angle to the nearest mapping camera."""
    dataset = Cambridge(root)
    mapping = dataset.frames("train")
    centres = np.array([frame.pose.center for frame in mapping])
    axes = np.array([frame.pose.R[2] for frame in mapping])
    distances, angles = [], []
    for query in dataset.frames("test"):
        offsets = np.linalg.norm(centres - query.pose.center, axis=1)
        nearest = offsets.argmin()
        distances.append(offsets[nearest])
        angles.append(np.degrees(np.arccos(np.clip(axes[nearest] @ query.pose.R[2], -1, 1))))
    return f"{np.median(distances):.2f} m, {np.median(angles):.1f} deg"


def map_size_row(scene: str, config: str, map_dir: Path) -> str:
    fields = LandmarkFields.load(map_dir / FAVOR_FILE)
    size = (map_dir / FAVOR_FILE).stat().st_size
    training_s = read_map_record(map_dir)["mapping_seconds"]["fields"]
    return (
        f"| {config} | {scene} | {fields.backend} | {training_s:.0f} | {len(fields.landmark_ids)} | "
        f"{fields.descriptor_dim} | "
        f"{fields.stored_bytes_per_landmark():.0f} | {size / len(fields.landmark_ids):.0f} "
        f"| {size / 1e6:.2f} | {folder_bytes(map_dir) / 1e6:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--strecha", type=Path, required=True, help="folder of the Strecha scenes (../shared/data/strecha)"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--configs", nargs="+", default=["favor"], help="FaVoR configs; the first one's map also serves the baseline"
    )
    parser.add_argument("--scenes", nargs="+", default=[*SCENES, "synthetic-offtrack"])
    parser.add_argument(
        "--maps",
        type=Path,
        help="localize only, against the maps an earlier run of this script built under this folder "
        "(MAPS/original/CONFIG/SCENE/map; a config without its own there, e.g. favor-seeded, uses the first "
        "config's), on its data copies",
    )
    args = parser.parse_args()
    summary = [
        "| pipeline | scene | failed | median t (cm) | median R (deg) | recall 2cm/2deg | recall 5cm/5deg | "
        "ms/query (stages) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    iterations = [
        "| pipeline | scene | iteration | localized | median t (cm) | median R (deg) | median inliers | ms (render "
        "+ matching + refinement + pnp) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    viewpoints = ["| scene | nearest mapping camera to the queries (median distance, axis angle) |", "|---|---|"]
    sizes = [
        "| config | scene | backend | training (s) | landmarks | channels | field bytes/landmark "
        "| favor.pt bytes/landmark | favor.pt (MB) | map (MB) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    data = (args.maps or args.out) / "data"
    for scene in args.scenes:
        if scene == "synthetic-offtrack":
            original = synthetic_scene(data / scene)
        else:
            original = write_sparse_copy(args.strecha / scene, data / f"{scene}-sparse")
        harder = write_harder_copy(original, data / f"{scene}-harder")
        viewpoints.append(f"| {scene} | {viewpoint_change(original)} |")  # the harder copy has the same poses
        for variant, root in (("original", original), ("harder", harder)):
            label = f"{scene} ({variant})"
            maps = args.maps or args.out
            map_of_first = maps / "original" / args.configs[0] / scene / "map"
            for config in args.configs:
                own_map = maps / "original" / config / scene / "map"
                borrowed = args.maps is not None and not own_map.is_dir()
                if borrowed:
                    own_map = map_of_first
                run = args.out / variant / config / scene
                built = args.maps is None and variant == "original"
                metrics = evaluate(config, root, run, None if built else own_map)
                summary.append(summary_row(config, label, metrics))
                iterations.extend(iteration_rows(config, label, run, root))
                if variant == "original" and not borrowed:
                    sizes.append(map_size_row(scene, config, own_map))
                print(summary[-1], flush=True)
            metrics = evaluate("default", root, args.out / variant / "baseline" / scene, map_of_first)
            summary.append(summary_row(f"baseline on the {args.configs[0]} map", label, metrics))
            print(summary[-1], flush=True)
    print("\n".join(["", *summary, "", *iterations, "", *viewpoints, "", *sizes]))


if __name__ == "__main__":
    main()
