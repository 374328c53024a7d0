"""Mapping time in one process, on threads and on Ray workers, same scene and config.

    OMP_NUM_THREADS=1 OPENCV_FOR_THREADS_NUM=1 python benchmarks/mapping_executors.py \\
        --dataset 7scenes --root data/synthetic-7scenes-seed0 --out /tmp/mapping-executors

Each configuration builds the map of ``--config`` from scratch (no cache) into its own folder;
only the per-image work (feature extraction) is spread, triangulation and the retrieval fit run
in the driver. Prints each node's seconds and whether every map file has the SHA-256 of the
local map's.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import ray

from reloc import api
from reloc.io.map_folder import read_map_record
from reloc.pipeline.executors import ExecutorConfig

RUNS = [("local", 1), ("threads", 2), ("ray", 1), ("ray", 2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--config", default="default")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    reference = None
    print("| executor | workers | total (s) | per node (s) | same map files |")
    print("|---|---:|---:|---|---|")
    for kind, workers in RUNS:
        folder = args.out / f"{kind}-{workers}"
        shutil.rmtree(folder, ignore_errors=True)
        started = time.perf_counter()
        run = api.map(args.config, args.dataset, args.root, folder, executor=ExecutorConfig(kind, workers))
        total = time.perf_counter() - started
        artifacts = read_map_record(folder)["artifacts"]
        reference = reference or artifacts
        nodes = ", ".join(f"{name} {seconds:.1f}" for name, seconds in run.seconds.items())
        same = "yes" if artifacts == reference else "NO"
        print(f"| {kind} | {workers} | {total:.1f} | {nodes} | {same} |", flush=True)


if __name__ == "__main__":
    main()
