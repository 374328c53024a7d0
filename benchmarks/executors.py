"""Queries per second of localization in one process, on threads and on Ray workers, same map and queries.

    python benchmarks/executors.py --map runs/demo/map --dataset 7scenes --root data/synthetic-7scenes-seed0

Every configuration localizes the whole test split against the same map; its results must be
byte-identical to the local run's (checked, printed). Ray is started once before its rows
(``ray.init(num_cpus=2)``, its start-up printed apart), so a Ray row holds what each run pays:
shipping the chunks, starting the worker processes' imports, reading the map once per worker.
Set OMP_NUM_THREADS=1 so that one worker is one core.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from reloc.datasets import load_dataset
from reloc.io.results import write_results
from reloc.pipeline.executors import ExecutorConfig
from reloc.pipeline.runner import localize

RUNS = [("local", 1), ("threads", 1), ("threads", 2), ("ray", 1), ("ray", 2)]


def results_text(results) -> str:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "results.txt"
        write_results(path, results)
        return path.read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--map", type=Path, required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=2, help="runs per configuration; the fastest is kept")
    args = parser.parse_args()
    queries = load_dataset(args.dataset, args.root).frames("test")
    reference = None
    print(f"{len(queries)} queries, map {args.map}")
    print("| executor | workers | s (best of runs) | queries/s | × local | same results |")
    print("|---|---:|---:|---:|---:|---|")
    local_seconds = None
    for kind, workers in RUNS:
        if kind == "ray":
            import ray

            if not ray.is_initialized():
                started = time.perf_counter()
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
                print(f"(ray.init: {time.perf_counter() - started:.1f} s, not in the rows)")
        best, text = float("inf"), ""
        for _ in range(args.repeats):
            started = time.perf_counter()
            results = localize(args.map, queries, executor=ExecutorConfig(kind, workers))
            best = min(best, time.perf_counter() - started)
            text = results_text(results)
        reference = reference if reference is not None else text
        local_seconds = local_seconds or best
        print(
            f"| {kind} | {workers} | {best:.1f} | {len(queries) / best:.2f} | {local_seconds / best:.2f} | "
            f"{'yes' if text == reference else 'NO'} |",
            flush=True,
        )

    print_task_overhead()


def print_task_overhead(tasks: int = 200) -> None:
    """Ray's own cost per task, for the projection to N machines: empty tasks one after another
    (a round trip each) and all at once (the scheduler's throughput)."""
    import ray

    @ray.remote(num_cpus=1)
    def empty() -> None:
        return None

    ray.get(empty.remote())
    started = time.perf_counter()
    for _ in range(tasks):
        ray.get(empty.remote())
    round_trip = (time.perf_counter() - started) / tasks
    started = time.perf_counter()
    ray.get([empty.remote() for _ in range(tasks)])
    batched = (time.perf_counter() - started) / tasks
    print(f"ray empty task: {1000 * round_trip:.2f} ms one at a time, {1000 * batched:.2f} ms each of {tasks} at once")


if __name__ == "__main__":
    main()
