"""Submap routing against the single map: accuracy, time per query and memory per worker.

    reloc synth --layout cambridge --frames 2000,200 --seed 3 --out data/synthetic-large
    reloc eval --config default --dataset cambridge --root data/synthetic-large --out runs/q22/large --executor ray
    python benchmarks/submaps.py --scene data/synthetic-large --map runs/q22/large/map --parts 4 --out runs/q22/split4

The map is split into ``--parts`` submaps (``reloc split``); the test split is localized against
the single map and against the split map (routing), in this process, and both are scored. Memory
per worker: each worker is a fresh process (``python -m`` this file's ``worker`` command) that
localizes the queries routed to one submap, or the same number of queries against the single
map, and reports its peak resident memory; a process that only imports reloc and extracts the
features of those queries gives the floor that every worker pays (Python, torch, OpenCV).
Set OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from reloc.datasets import load_dataset
from reloc.eval.metrics import compute_metrics
from reloc.mapping.submaps import ROUTER_FILE, SplitConfig, read_split, split_map
from reloc.pipeline.runner import folder_bytes, localize


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: ``ru_maxrss`` would carry the parent's from the fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def worker(map_dir: Path, dataset: str, root: Path, names: list[str], features_only: bool) -> None:
    """Localize the queries ``names`` against ``map_dir`` (or only extract their features) and
    print the peak resident memory of this process as JSON."""
    from reloc.features.base import FeatureStore
    from reloc.features.stages import FeatureStageConfig, extract_chunk

    queries = [frame for frame in load_dataset(dataset, root).frames("test") if frame.name in set(names)]
    started = time.perf_counter()
    if features_only:
        store = FeatureStore("sift")
        for frame, features in zip(queries, extract_chunk("sift", FeatureStageConfig(max_keypoints=3000), queries)):
            store.write(frame.name, features)
    else:
        localize(map_dir, queries)
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "seconds": time.perf_counter() - started}))


def run_worker(map_dir: Path, dataset: str, root: Path, names: list[str], features_only: bool = False) -> dict:
    command = [sys.executable, __file__, "worker", str(map_dir), dataset, str(root), ",".join(names)]
    if features_only:
        command.append("--features-only")
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def scored(results, ground_truth) -> dict:
    metrics, _ = compute_metrics({r.name: r for r in results}, ground_truth)
    return metrics


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        map_dir, dataset, root, names = sys.argv[2:6]
        worker(Path(map_dir), dataset, Path(root), names.split(","), "--features-only" in sys.argv)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scene", type=Path, required=True)
    parser.add_argument("--dataset", default="cambridge")
    parser.add_argument("--map", type=Path, required=True)
    parser.add_argument("--parts", type=int, default=4)
    parser.add_argument("--out", type=Path, required=True, help="folder for the split map")
    args = parser.parse_args()
    dataset = load_dataset(args.dataset, args.scene)
    queries, truth = dataset.frames("test"), dataset.ground_truth()
    if not args.out.exists():
        started = time.perf_counter()
        split_map(args.map, args.out, SplitConfig(parts=args.parts))
        print(f"split in {time.perf_counter() - started:.1f} s")
    rows = []
    for label, folder in (("single map", args.map), (f"{args.parts} submaps, routed", args.out)):
        started = time.perf_counter()
        results = localize(folder, queries)
        seconds = time.perf_counter() - started
        metrics = scored(results, truth)
        rows.append((label, metrics, seconds, folder_bytes(folder)))
        if folder == args.out:
            routed = results
    print(f"{len(queries)} queries of {args.scene}")
    print("| map | localized | median t (cm) | median R (°) | 1 cm 1° (%) | 5 cm 5° (%) | s per query | map MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, metrics, seconds, size in rows:
        recall = metrics["recall"]
        print(
            f"| {label} | {metrics['n_queries'] - metrics['n_failed']}/{metrics['n_queries']} | "
            f"{metrics['median_t_cm']:.2f} | {metrics['median_r_deg']:.3f} | {100 * recall['1cm_1deg']:.1f} | "
            f"{100 * recall['5cm_5deg']:.1f} | {seconds / len(queries):.2f} | {size / 1e6:.1f} |"
        )
    split = read_split(args.out)
    by_submap: dict[str, list[str]] = {}
    for result in routed:
        by_submap.setdefault(result.record.extra.get("submap", "none"), []).append(result.name)
    print(f"router index: {(args.out / ROUTER_FILE).stat().st_size / 1e6:.1f} MB on disk")
    print()
    print("| worker | queries | peak memory (MB) | above the floor (MB) |")
    print("|---|---:|---:|---:|")
    names = [frame.name for frame in queries][:25]
    floor = run_worker(args.map, args.dataset, args.scene, names, features_only=True)["peak_rss_mb"]
    whole = run_worker(args.map, args.dataset, args.scene, names)["peak_rss_mb"]
    print(f"| floor (imports + features) | {len(names)} | {floor:.0f} | 0 |")
    print(f"| single map | {len(names)} | {whole:.0f} | {whole - floor:.0f} |")
    for entry in split["submaps"]:
        mine = by_submap.get(entry["folder"], [])[:25]
        if mine:
            peak = run_worker(args.out / entry["folder"], args.dataset, args.scene, mine)["peak_rss_mb"]
            print(f"| {entry['folder']} | {len(mine)} | {peak:.0f} | {peak - floor:.0f} |")


if __name__ == "__main__":
    main()
