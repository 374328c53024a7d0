"""Figures of an evaluation run, written beside ``report.md``: cumulative error curves, per-query
errors, and the inlier matches of the worst queries. Matplotlib (Agg), PNG."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..viz.matches import matches_figure
from ..viz.scene import MapScene
from .metrics import RECALL_THRESHOLDS, QueryError

PLOTS_FOLDER = "plots"
WORST_FIGURES = 4
FAILED_COLOR = (0.85, 0.05, 0.05)


@dataclass
class Plot:
    title: str
    path: Path  # relative to the run folder


def cumulative_errors(errors: list[QueryError]) -> Figure:
    """Fraction of queries within an error, translation (cm) and rotation (deg), log axes. Failed
    queries never enter, so a curve tops out at the fraction localized."""
    figure = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    for axes, values, unit, column in zip(
        figure.subplots(1, 2),
        ([e.t_cm for e in errors], [e.r_deg for e in errors]),
        ("translation error (cm)", "rotation error (deg)"),
        (0, 1),
    ):
        values = np.sort(np.asarray(values))
        finite = values[np.isfinite(values)]
        if len(finite):
            fraction = np.arange(0, len(finite) + 1) / len(values)
            axes.step(np.maximum(np.r_[finite[:1], finite], 1e-3), fraction, where="post", color="tab:blue")
        for threshold in sorted({t[column] for t in RECALL_THRESHOLDS.values()}):
            axes.axvline(threshold, color="0.8", linewidth=0.8, zorder=0)
        axes.set_xscale("log")
        axes.set_ylim(0, 1.02)
        axes.set_xlabel(unit)
        axes.set_ylabel("fraction of queries")
        axes.grid(alpha=0.3, which="both")
    figure.suptitle(f"Cumulative errors ({sum(e.failed for e in errors)} of {len(errors)} queries failed)")
    return figure


def per_query_errors(errors: list[QueryError]) -> Figure:
    """Bars per query in query order: translation (top) and rotation (bottom); failed queries as red
    bars to the top of the axis."""
    figure = Figure(figsize=(max(8, min(30, 0.12 * len(errors))), 5), dpi=100, layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True)
    positions = np.arange(len(errors))
    failed = np.array([e.failed for e in errors])
    for axes, values, label in (
        (top, [e.t_cm for e in errors], "translation (cm)"),
        (bottom, [e.r_deg for e in errors], "rotation (deg)"),
    ):
        values = np.asarray(values)
        ceiling = max(float(values[~failed].max()) * 2 if (~failed).any() else 1.0, 1e-2)
        axes.bar(positions[~failed], np.maximum(values[~failed], 1e-3), width=1.0, color="tab:blue")
        axes.bar(positions[failed], ceiling, width=1.0, color=FAILED_COLOR, label="failed")
        axes.set_yscale("log")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3, axis="y")
    if failed.any():
        top.legend(loc="upper right")
    bottom.set_xlabel("query (in dataset order)")
    if len(errors) <= 40:
        bottom.set_xticks(positions, [e.name for e in errors], rotation=90, fontsize=7)
    figure.suptitle("Per-query pose error")
    return figure


def worst_queries(errors: list[QueryError], count: int) -> list[str]:
    """Names of the ``count`` worst queries: failed first, then by translation and rotation error."""
    ranked = sorted(
        errors, key=lambda e: (not e.failed, -e.t_cm if not e.failed else 0.0, -e.r_deg if not e.failed else 0.0)
    )
    return [e.name for e in ranked[:count]]


def write_plots(run_dir: Path, errors: list[QueryError], scene: MapScene | None) -> list[Plot]:
    """Write the figures under ``run_dir/plots``; returns them in report order. Without a scene
    (a map with no landmarks to draw) the matches figures are left out."""
    folder = run_dir / PLOTS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    plots = [
        Plot("Cumulative error curves", save(cumulative_errors(errors), folder / "cumulative_errors.png")),
        Plot("Per-query errors", save(per_query_errors(errors), folder / "per_query_errors.png")),
    ]
    if scene is not None:
        by_name = {q.name: q for q in scene.queries}
        for rank, name in enumerate(worst_queries(errors, WORST_FIGURES), start=1):
            if name not in by_name:
                continue
            figure = matches_figure(scene, by_name[name])
            plots.append(Plot(f"Worst query {rank}: {name}", save(figure, folder / f"worst_{rank}_matches.png")))
    return [Plot(plot.title, plot.path.relative_to(run_dir)) for plot in plots]


def save(figure: Figure, path: Path) -> Path:
    figure.savefig(path)
    return path
