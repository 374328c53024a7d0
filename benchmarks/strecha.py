"""Relocalization on the Strecha scenes (Cambridge layout) for several pipelines.

    python benchmarks/strecha.py --data ../shared/data/strecha --out runs/strecha [--harder] [--peer] \\
        [--configs default sift ...] [--set KEY=VALUE ... --label NAME]

Runs `reloc eval` for every config and scene (fresh maps), then prints a markdown table of
median errors, recall and median ms per query per stage. ``--peer`` also runs COLMAP's own
pipeline (benchmarks/colmap_peer.py) on the same scenes and queries in the same run. ``--harder``
first writes a copy of each scene whose query images are darker (gamma 2.2), colour-cast, noisy,
JPEG quality 40 and at half resolution with their NVM focal halved, and evaluates on that copy.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from colmap_peer import run_scene
from PIL import Image

from reloc.datasets.cambridge import Cambridge, image_key, read_split
from reloc.datasets.synthetic.appearance import Appearance, apply_appearance

SCENES = ("fountain-P11", "Herz-Jesus-P8", "castle-P19")
HARDER = Appearance(gamma=2.2, white_balance=(1.15, 1.0, 0.8), noise=0.02, jpeg_quality=40)


def write_harder_copy(scene: Path, out: Path) -> Path:
    """A copy of ``scene`` whose query images are degraded and halved (focal halved in the NVM)."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(scene, out)
    queries = {name for name, _, _ in read_split(scene / "dataset_test.txt")}
    query_keys = {image_key(name) for name in queries}  # NVM names may differ in extension (Cambridge, synthetic)
    rng = np.random.default_rng(0)
    for name in sorted(queries):
        image = Image.open(scene / name).convert("RGB")
        half = image.resize((image.width // 2, image.height // 2), Image.LANCZOS)
        degraded = apply_appearance(np.asarray(half, np.float32) / 255.0, HARDER, rng)
        Image.fromarray(degraded).save(out / name, quality=95)
    lines = (scene / "reconstruction.nvm").read_text().splitlines()
    count = int(lines[2])
    for index in range(3, 3 + count):
        tokens = lines[index].split()
        if image_key(tokens[0]) in query_keys:
            tokens[1] = f"{float(tokens[1]) / 2:.6f}"
            lines[index] = " ".join(tokens)
    (out / "reconstruction.nvm").write_text("\n".join(lines) + "\n")
    Cambridge(out).frames("test")  # the copy must load
    return out


def cell(value: float | None) -> str:
    return "failed" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--configs", nargs="+", default=["default", "sift", "xfeat", "xfeat-lighterglue", "aliked-lightglue"]
    )
    parser.add_argument("--harder", action="store_true")
    parser.add_argument("--set", action="append", default=[], help="override for every config (as reloc eval --set)")
    parser.add_argument("--label", default="", help="appended to the pipeline name in the table and run folder")
    parser.add_argument("--peer", action="store_true", help="also run COLMAP's pipeline (pycolmap) on the same scenes")
    args = parser.parse_args()
    configs = Path(__file__).resolve().parents[1] / "configs"
    rows = [
        "| pipeline | scene | failed | median t (cm) | median R (deg) | recall 5cm/5deg | map MB "
        "| ms/query (features + "
        "retrieval + matching + pnp) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for config in args.configs:
        for scene in SCENES:
            root = args.data / scene
            if args.harder:
                root = write_harder_copy(root, args.out / "harder-data" / scene)
            name = f"{config}{'-' + args.label if args.label else ''}"
            run = args.out / ("harder" if args.harder else "original") / name / scene
            shutil.rmtree(run, ignore_errors=True)
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "reloc.cli",
                    "eval",
                    "--config",
                    str(configs / f"{config}.yaml"),
                    "--dataset",
                    "cambridge",
                    "--root",
                    str(root),
                    "--out",
                    str(run),
                    *(part for override in args.set for part in ("--set", override)),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            m = json.loads((run / "metrics.json").read_text())
            timing = m["timing_s"]
            stages = " + ".join(f"{1000 * timing.get(s, 0):.0f}" for s in ("features", "retrieval", "matching", "pnp"))
            rows.append(
                f"| {name} | {scene} | {m['n_failed']}/{m['n_queries']} | {cell(m['median_t_cm'])} | "
                f"{cell(m['median_r_deg'])} | {100 * m['recall']['5cm_5deg']:.0f} % | {m['map_bytes'] / 1e6:.1f} "
                f"| {1000 * sum(timing.values()):.0f} ({stages}) |"
            )
            print(rows[-1], flush=True)
    if args.peer:
        rows += [
            "",
            "| pipeline | scene | failed | median t (cm) | median R (deg) | ms/query (extraction + matching + pnp) |",
            "|---|---|---:|---:|---:|---|",
        ]
        for scene in SCENES:
            root = args.out / "harder-data" / scene if args.harder else args.data / scene
            rows.append(run_scene(root, args.out / ("harder" if args.harder else "original") / "colmap" / scene))
            print(rows[-1], flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
