"""``reloc eval`` as a function: map the training split (or reuse a map), localize the test split,
score it and write the run folder (results, ground truth, metrics, report and its figures)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..datasets.base import Dataset
from ..errors import DatasetError
from ..io.lock import writing
from ..io.results import GROUND_TRUTH_FILE, write_poses, write_results
from ..pipeline.engine import GraphRun
from ..pipeline.executors import ExecutorConfig
from ..pipeline.runner import build_map, folder_bytes, localize, map_is_current, recorded_pipeline
from ..pipeline.spec import Pipeline
from ..types import QueryResult
from ..viz.scene import has_sparse_model, load_scene
from .metrics import QueryError, compute_metrics
from .plots import Plot, write_plots
from .report import write_metrics, write_report

RESULTS_FILE = "results.txt"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
NodeCallback = Callable[[str, int, int], None]


@dataclass
class Evaluation:
    """What one evaluation produced; its files are in ``out``."""

    out: Path
    map_dir: Path
    mapping: GraphRun | None  # node seconds and cache hits of the mapping run; None when a map was reused or given
    results: list[QueryResult]
    metrics: dict
    errors: list[QueryError]
    plots: list[Plot]


def evaluate(
    pipeline: Pipeline,
    scene: Dataset,
    out: Path,
    map_dir: Path | None = None,
    on_mapping_node: NodeCallback | None = None,
    on_localization_node: NodeCallback | None = None,
    executor: ExecutorConfig | None = None,
) -> Evaluation:
    """Evaluate ``pipeline`` on ``scene``. Without ``map_dir`` the map is ``out/map``, built from
    the training split unless the one there has the same mapping key; with ``map_dir`` only the
    localization graph runs, against that map. The callbacks report each graph's nodes; ``executor``
    says where mapping's per-item work and localization run (:mod:`reloc.pipeline.executors`)."""
    queries = scene.frames("test")
    if not queries:
        raise DatasetError(f"{scene.root}: the test split has no queries; nothing to evaluate")
    with writing(out):
        map_dir, mapping = map_to_use(pipeline, scene, out, map_dir, on_mapping_node, executor)
        results = localize(map_dir, queries, on_localization_node, pipeline, executor)
        metrics, errors, plots = write_run(out, pipeline, scene, map_dir, results)
    return Evaluation(out, map_dir, mapping, results, metrics, errors, plots)


def map_to_use(
    pipeline: Pipeline,
    scene: Dataset,
    out: Path,
    map_dir: Path | None,
    on_node: NodeCallback | None,
    executor: ExecutorConfig | None = None,
) -> tuple[Path, GraphRun | None]:
    """The given map (checked to be one), or ``out/map`` built unless current; and the mapping
    run's timings when one ran."""
    if map_dir is not None:
        recorded_pipeline(map_dir)  # a folder that is not a map fails here, by name; its own localization is not used
        return map_dir, None
    frames, map_dir = scene.frames("train"), out / "map"
    if map_is_current(map_dir, pipeline, frames):
        return map_dir, None
    run = build_map(pipeline, frames, map_dir, scene.description(), on_node, executor)
    return map_dir, dataclasses.replace(run, values={})  # the timings; the outputs are in the map folder


def write_run(
    out: Path, pipeline: Pipeline, scene: Dataset, map_dir: Path, results: list[QueryResult]
) -> tuple[dict, list[QueryError], list[Plot]]:
    """Results, ground truth, metrics, figures and report of a run in ``out``."""
    write_results(out / RESULTS_FILE, results)
    ground_truth = scene.ground_truth()
    write_poses(out / GROUND_TRUTH_FILE, {name: frame.pose for name, frame in ground_truth.items()})
    metrics, errors = compute_metrics({r.name: r for r in results}, ground_truth, folder_bytes(map_dir))
    write_metrics(out / METRICS_FILE, metrics)
    map_scene = load_scene(map_dir, out / RESULTS_FILE, out / GROUND_TRUTH_FILE) if has_sparse_model(map_dir) else None
    plots = write_plots(out, errors, map_scene)
    write_report(out / REPORT_FILE, metrics, errors, f"{pipeline.name} on {scene.root}", plots)
    return metrics, errors, plots
