"""Many evaluations at once: scenes × configs, each a ``reloc eval`` run folder, and one table.

``reloc eval --root A --root B --config default --config mesa --out RUNS`` evaluates every
(scene, config) pair into ``RUNS/<scene>-<config>/`` and writes ``RUNS/summary.md`` and
``RUNS/summary.csv``: one row per run with its accuracy, per-stage milliseconds per query, map
size and wall time, or the error that stopped it (a failed run never stops the others).

The runs go one after another (``local``), on threads, or as Ray tasks of one CPU each (``ray``: a
local Ray with ``workers`` CPUs, or a cluster at ``address``); inside a run everything is local,
so a run's figures are those of one core.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..datasets import load_dataset
from ..errors import PipelineError, RelocError
from ..pipeline.executors import EXECUTORS, ExecutorConfig, ray_session
from ..pipeline.progress import track
from ..pipeline.spec import load_pipeline
from .metrics import RECALL_THRESHOLDS
from .run import evaluate

SUMMARY_MD = "summary.md"
SUMMARY_CSV = "summary.csv"
SUMMARY_RECALLS = ("1cm_1deg", "5cm_5deg", "25cm_2deg")


@dataclass
class PlannedRun:
    """One evaluation: the pipeline ``config`` (YAML path or shipped name) on the scene at ``root``."""

    name: str  # the run folder's name under the batch's output folder
    config: str
    dataset: str
    root: Path
    overrides: list[str] = field(default_factory=list)
    dataset_options: dict = field(default_factory=dict)


@dataclass
class RunSummary:
    """One row of the summary: the run's metrics, or the error that stopped it."""

    run: PlannedRun
    wall_s: float
    metrics: dict | None = None
    error: str | None = None


def plan_runs(
    configs: list[str], dataset: str, roots: list[Path], overrides: list[str] | None = None, **dataset_options
) -> list[PlannedRun]:
    """Every (scene, config) pair, scene-major, named ``<scene folder>-<config name>`` (a number
    appended where two would share a name)."""
    runs, used = [], set()
    for root in roots:
        for config in configs:
            name = base = f"{Path(root).name}-{Path(config).stem}"
            copy = 2
            while name in used:
                name, copy = f"{base}-{copy}", copy + 1
            used.add(name)
            runs.append(PlannedRun(name, str(config), dataset, Path(root), list(overrides or []), dataset_options))
    return runs


def evaluate_planned(run: PlannedRun, out: Path) -> RunSummary:
    """Evaluate ``run`` into ``out / run.name``; an error of its config or data is its summary's."""
    started = time.perf_counter()
    try:
        pipeline = load_pipeline(run.config, overrides=run.overrides)
        scene = load_dataset(run.dataset, run.root, **run.dataset_options)
        evaluation = evaluate(pipeline, scene, out / run.name)
    except RelocError as error:
        return RunSummary(run, time.perf_counter() - started, error=str(error))
    except Exception as error:  # noqa: BLE001 - a failed run is reported in its row and never stops the others
        return RunSummary(run, time.perf_counter() - started, error=f"{type(error).__name__}: {error}")
    return RunSummary(run, time.perf_counter() - started, metrics=evaluation.metrics)


def evaluate_all(runs: list[PlannedRun], out: Path, executor: ExecutorConfig | None = None) -> list[RunSummary]:
    """Evaluate every run into ``out`` as ``executor`` says; the summaries in run order, also
    written as ``out/summary.md`` and ``out/summary.csv``."""
    executor = executor or ExecutorConfig()
    if executor.kind not in EXECUTORS:
        raise PipelineError(f"unknown executor {executor.kind!r}; choose one of {', '.join(EXECUTORS)}")
    out.mkdir(parents=True, exist_ok=True)
    summaries = list(track_summaries(spread_runs(runs, out.resolve(), executor), len(runs)))
    write_summary(out, summaries)
    return summaries


def track_summaries(summaries: Iterator[RunSummary], count: int) -> Iterator[RunSummary]:
    for _, summary in zip(track(range(count), f"evaluating {count} runs"), summaries):
        yield summary


def spread_runs(runs: list[PlannedRun], out: Path, executor: ExecutorConfig) -> Iterator[RunSummary]:
    if executor.kind == "local":
        yield from (evaluate_planned(run, out) for run in runs)
    elif executor.kind == "threads":
        with ThreadPoolExecutor(max_workers=executor.worker_count(), thread_name_prefix="reloc-eval") as pool:
            yield from pool.map(evaluate_planned, runs, [out] * len(runs))
    else:
        ray = ray_session(executor)
        task = ray.remote(num_cpus=1, max_retries=1)(evaluate_planned)
        references = [task.remote(run, out) for run in runs]
        for run, reference in zip(runs, references):
            try:
                yield ray.get(reference)
            except ray.exceptions.RayError as error:
                yield RunSummary(run, 0.0, error=f"ray worker failed: {str(error).splitlines()[0]}")


COLUMNS: list[tuple[str, Callable[[RunSummary], str]]] = [
    ("run", lambda s: s.run.name),
    ("scene", lambda s: str(s.run.root)),
    ("config", lambda s: s.run.config),
    ("queries", lambda s: f"{s.metrics['n_queries']}"),
    ("failed", lambda s: f"{s.metrics['n_failed']}"),
    ("median t (cm)", lambda s: f"{s.metrics['median_t_cm']:.2f}"),
    ("median R (deg)", lambda s: f"{s.metrics['median_r_deg']:.2f}"),
    *[
        (f"{t:g} cm {r:g}° (%)", lambda s, key=key: f"{100 * s.metrics['recall'][key]:.1f}")
        for key, (t, r) in RECALL_THRESHOLDS.items()
        if key in SUMMARY_RECALLS
    ],
    ("ms per query", lambda s: f"{1000 * sum(s.metrics['timing_s'].values()):.0f}"),
    (
        "ms per stage",
        lambda s: " ".join(f"{stage} {1000 * sec:.0f}" for stage, sec in s.metrics["timing_s"].items()),
    ),
    ("map (MB)", lambda s: f"{(s.metrics.get('map_bytes') or 0) / 1e6:.1f}"),
]


def summary_rows(summaries: list[RunSummary]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary: a failed run keeps its name, scene and config, its error in the last column."""
    header = [name for name, _ in COLUMNS] + ["wall (s)", "error"]
    rows = []
    for summary in summaries:
        if summary.metrics is None:
            cells = [cell(summary) for _, cell in COLUMNS[:3]] + [""] * (len(COLUMNS) - 3)
        else:
            cells = [cell(summary) for _, cell in COLUMNS]
        rows.append(cells + [f"{summary.wall_s:.0f}", summary.error or ""])
    return header, rows


def write_summary(out: Path, summaries: list[RunSummary]) -> None:
    header, rows = summary_rows(summaries)
    with open(out / SUMMARY_CSV, "w", newline="") as file:
        csv.writer(file).writerows([header, *rows])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    (out / SUMMARY_MD).write_text("\n".join(lines) + "\n")
