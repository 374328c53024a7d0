"""Issue 19's figures in one run, this checkout against an earlier one (``--before``, e.g. a
``git worktree`` of the commit before the issue's work), each run by its own reloc:

    git worktree add ../before a5a6dd6
    python benchmarks/lean_maps.py --before ../before --demo data/synthetic-7scenes-seed0 \\
        --strecha ../shared/data/strecha --out runs/lean-maps

Demo scene: map bytes, mapping seconds, accuracy, ms per query by stage; then ``reloc localize``
of 10 query images (wall time and peak memory) and the map's load time (benchmarks/map_load.py).
Strecha: per scene a fresh map and 3 localization runs against it; the median of the 3 runs'
median ms per stage and the median error. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

SCENES = ("fountain-P11", "Herz-Jesus-P8", "castle-P19")
STAGES = ("features", "retrieval", "matching", "pnp")
HERE = Path(__file__).resolve().parent


def reloc(checkout: Path, *args: str) -> None:
    """``reloc ARGS`` with the reloc package of ``checkout`` (its folder comes first on the path)."""
    subprocess.run([sys.executable, "-m", "reloc.cli", *args], cwd=checkout, check=True, stdout=subprocess.DEVNULL)


def evaluate(checkout: Path, dataset: str, root: Path, out: Path, map_dir: Path | None = None) -> dict:
    args = ["eval", "--config", "default", "--dataset", dataset, "--root", str(root), "--out", str(out)]
    reloc(checkout, *args, *(["--map", str(map_dir)] if map_dir else []))
    return json.loads((out / "metrics.json").read_text())


def stage_ms(metrics: list[dict]) -> dict[str, float]:
    return {s: float(np.median([1000 * m["timing_s"].get(s, 0) for m in metrics])) for s in STAGES}


def timing_cell(ms: dict[str, float]) -> str:
    return f"{sum(ms.values()):.0f} ({' + '.join(f'{ms[s]:.0f}' for s in STAGES)})"


def localize_usage(checkout: Path, map_dir: Path, images: list[Path], out: Path) -> tuple[float, float]:
    """Wall seconds and peak resident MB of ``reloc localize MAP IMAGES`` (GNU time)."""
    command = ["/usr/bin/time", "-f", "%e %M", sys.executable, "-m", "reloc.cli", "localize", str(map_dir)]
    command += [*map(str, images), "--focal", "585", "--out", str(out)]
    done = subprocess.run(command, cwd=checkout, check=True, capture_output=True, text=True)
    wall, peak_kb = done.stderr.strip().splitlines()[-1].split()
    return float(wall), float(peak_kb) / 1024


def map_load(checkout: Path, map_dir: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(HERE / "map_load.py"), str(map_dir)],
        cwd=checkout,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip().split(": ", 1)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--demo", type=Path, required=True)
    parser.add_argument("--strecha", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    checkouts = {"before": args.before.resolve(), "after": HERE.parent}
    demo, strecha, out = args.demo.resolve(), args.strecha.resolve(), args.out.resolve()
    queries = sorted((demo / "seq-04").glob("*.color.png"))[:10]
    print("| demo scene | map MB | mapping s | failed | within 5 cm / 5° | median | ms/query | localize 10 | load |")
    print("|---|---:|---:|---:|---:|---|---|---|---|")
    for name, checkout in checkouts.items():
        run = out / name / "demo"
        m = evaluate(checkout, "7scenes", demo, run)
        seconds = sum(yaml.safe_load((run / "map" / "map.yaml").read_text())["mapping_seconds"].values())
        wall, peak = localize_usage(checkout, run / "map", queries, out / name / "localize.txt")
        accuracy = f"{100 * m['recall']['5cm_5deg']:.0f} % | {m['median_t_cm']:.2f} cm / {m['median_r_deg']:.2f}°"
        usage = f"{wall:.1f} s, {peak:.0f} MB peak | {map_load(checkout, run / 'map')}"
        size = f"{m['map_bytes'] / 1e6:.1f} | {seconds:.1f} | {m['n_failed']}/{m['n_queries']}"
        print(f"| {name} | {size} | {accuracy} | {timing_cell(stage_ms([m]))} | {usage} |", flush=True)
    print()
    print("| Strecha | scene | map MB | failed | median t (cm) | ms/query, median of 3 runs |")
    print("|---|---|---:|---:|---:|---|")
    for name, checkout in checkouts.items():
        for scene in SCENES:
            run = out / name / scene
            first = evaluate(checkout, "cambridge", strecha / scene, run / "build")
            again = [
                evaluate(checkout, "cambridge", strecha / scene, run / f"run{i}", run / "build" / "map") for i in (1, 2)
            ]
            errors = [m["median_t_cm"] for m in (first, *again)]
            print(
                f"| {name} | {scene} | {first['map_bytes'] / 1e6:.1f} | {first['n_failed']}/{first['n_queries']} "
                f"| {np.median(errors):.2f} | {timing_cell(stage_ms([first, *again]))} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
