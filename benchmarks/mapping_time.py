"""Mapping time of the default pipeline by node, this checkout against an earlier one
(``--before``, e.g. a ``git worktree`` of an earlier commit), each run by its own reloc, one
process at a time, and whether the two maps localize the same:

    git worktree add ../before f79b98a
    python benchmarks/mapping_time.py --before ../before --demo data/synthetic-7scenes-seed0 \\
        --strecha ../shared/data/strecha --out runs/mapping-time

Each scene is mapped and localized with ``reloc eval --config default``; the table gives the
seconds of each mapping node (``map.yaml``'s ``mapping_seconds``), the landmark count, the
queries that failed and the median translation error (``metrics.json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import yaml
from lean_maps import SCENES, evaluate

NODES = ("features", "landmarks", "retrieval")


def mapping_row(label: str, scene: str, out: Path, metrics: dict) -> str:
    seconds = yaml.safe_load((out / "map" / "map.yaml").read_text())["mapping_seconds"]
    with h5py.File(out / "map" / "landmarks.h5", "r") as landmarks:
        count = len(landmarks["points"])
    nodes = " + ".join(f"{seconds[node]:.1f}" for node in NODES)
    failed = f"{metrics['n_failed']}/{metrics['n_queries']}"
    return (
        f"| {label} | {scene} | {sum(seconds[n] for n in NODES):.1f} ({nodes}) | {count} | {failed} | "
        f"{metrics['median_t_cm']:.4f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="checkout of the earlier commit")
    parser.add_argument("--demo", type=Path, help="the make-demo scene (7-Scenes layout)")
    parser.add_argument("--strecha", type=Path, help="folder of the Strecha scenes")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1]
    scenes = [("demo", "7scenes", args.demo)] if args.demo else []
    scenes += [(scene, "cambridge", args.strecha / scene) for scene in SCENES] if args.strecha else []
    rows = []
    for scene, dataset, root in scenes:
        for label, checkout in (("before", args.before.resolve()), ("after", here)):
            out = (args.out / label / scene).resolve()
            metrics = evaluate(checkout, dataset, root.resolve(), out)
            rows.append(mapping_row(label, scene, out, metrics))
            print(rows[-1], flush=True)
    print(f"| checkout | scene | mapping s ({' + '.join(NODES)}) | landmarks | failed | median t (cm) |")
    print("|---|---|---|---:|---:|---:|")
    print("\n".join(rows))
    (args.out / "table.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
