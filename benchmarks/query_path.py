"""Query-path variants on the Strecha scenes: each localizes against the same default map of each
scene (built once, or reused), three runs per variant, and the table gives the median of the
three runs' median ms per query for each stage and the median translation error.

    python benchmarks/query_path.py --data ../shared/data/strecha --out runs/query-path

A variant is a list of ``reloc eval --set`` overrides of the localization graph.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

SCENES = ("fountain-P11", "Herz-Jesus-P8", "castle-P19")
STAGES = ("features", "retrieval", "matching", "pnp")
VARIANTS = {
    "SIFT 1024 px, 3 scales per octave (default)": [],
    "SIFT 1024 px, contrast 0.04": ["localization.features.detection_threshold=0.04"],
    "SIFT 1024 px, 2 scales": ["localization.features.octave_layers=2"],
    "SIFT 1024 px, 2 scales, contrast 0.04": [
        "localization.features.octave_layers=2",
        "localization.features.detection_threshold=0.04",
    ],
    "SIFT 1024 px, 2000 keypoints": ["localization.features.max_keypoints=2000"],
    "SIFT 768 px": ["localization.features.resize_max=768"],
    "SIFT 1024 px, 2 scales, contrast 0.03": [
        "localization.features.octave_layers=2",
        "localization.features.detection_threshold=0.03",
    ],
    "SIFT 1024 px, 2 scales, contrast 0.04, 2000 keypoints": [
        "localization.features.octave_layers=2",
        "localization.features.detection_threshold=0.04",
        "localization.features.max_keypoints=2000",
    ],
    "SIFT 1024 px, contrast 0.04, 2000 keypoints": [
        "localization.features.detection_threshold=0.04",
        "localization.features.max_keypoints=2000",
    ],
    "SIFT 896 px": ["localization.features.resize_max=896"],
    "SIFT 896 px, contrast 0.04": [
        "localization.features.resize_max=896",
        "localization.features.detection_threshold=0.04",
    ],
}


def evaluate(root: Path, out: Path, map_dir: Path | None, overrides: list[str]) -> dict:
    command = [sys.executable, "-m", "reloc.cli", "eval", "--config", "default", "--dataset", "cambridge"]
    command += ["--root", str(root), "--out", str(out), *(["--map", str(map_dir)] if map_dir else [])]
    command += [part for override in overrides for part in ("--set", override)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--variants", nargs="*", help="names of VARIANTS to run (default: all)")
    args = parser.parse_args()
    print("| variant | scene | median t (cm) | failed | ms/query: total (features + retrieval + matching + pnp) |")
    print("|---|---|---:|---:|---|")
    for name, overrides in VARIANTS.items():
        if args.variants and name not in args.variants:
            continue
        for scene in SCENES:
            map_run = args.out / "maps" / scene
            if not (map_run / "map" / "map.yaml").is_file():
                evaluate(args.data / scene, map_run, None, [])
            runs = [
                evaluate(args.data / scene, args.out / "runs" / scene, map_run / "map", overrides)
                for _ in range(args.runs)
            ]
            stage_ms = {s: float(np.median([1000 * run["timing_s"].get(s, 0) for run in runs])) for s in STAGES}
            error = float(np.median([run["median_t_cm"] for run in runs]))
            parts = " + ".join(f"{stage_ms[s]:.0f}" for s in STAGES)
            print(
                f"| {name} | {scene} | {error:.2f} | {runs[0]['n_failed']}/{runs[0]['n_queries']} "
                f"| {sum(stage_ms.values()):.0f} ({parts}) |",
                flush=True,
            )


if __name__ == "__main__":
    main()
