"""Presenting metrics: a rich table in the terminal, ``metrics.json`` and ``report.md``."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .metrics import RECALL_THRESHOLDS, QueryError
from .plots import Plot

WORST_SHOWN = 10


def json_safe(value):
    """Infinite or NaN floats become null, so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    return value


def write_metrics(path: str | Path, metrics: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(metrics), indent=2) + "\n")


def _fmt(value: float | None, digits: int = 2) -> str:
    return "failed" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def summary_rows(metrics: dict) -> list[tuple[str, str]]:
    rows = [
        ("queries", str(metrics["n_queries"])),
        ("failed", str(metrics["n_failed"])),
        ("median translation error (cm)", _fmt(metrics["median_t_cm"])),
        ("median rotation error (deg)", _fmt(metrics["median_r_deg"])),
    ]
    rows += [
        (f"recall {key.replace('_', ' / ')}", f"{100 * metrics['recall'][key]:.1f} %") for key in RECALL_THRESHOLDS
    ]
    rows += [(f"time {stage} (ms/query, median)", f"{1000 * s:.1f}") for stage, s in metrics["timing_s"].items()]
    if metrics.get("map_bytes") is not None:
        rows.append(("map size (MB)", f"{metrics['map_bytes'] / 1e6:.2f}"))
    return rows


def print_metrics(metrics: dict, title: str, console: Console | None = None) -> None:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in summary_rows(metrics):
        table.add_row(name, value)
    (console or Console()).print(table)


def write_report(
    path: str | Path, metrics: dict, errors: list[QueryError], title: str, plots: Sequence[Plot] = ()
) -> None:
    """Markdown report: the summary table, the worst queries and the figures (paths relative to the report)."""
    lines = [f"# {title}", "", "| metric | value |", "|---|---:|"]
    lines += [f"| {name} | {value} |" for name, value in summary_rows(metrics)]
    worst = sorted(errors, key=lambda e: (e.t_cm, e.r_deg), reverse=True)[:WORST_SHOWN]
    lines += ["", f"## Worst {len(worst)} queries", "", "| query | t (cm) | R (deg) | note |", "|---|---:|---:|---|"]
    lines += [f"| {e.name} | {_fmt(e.t_cm)} | {_fmt(e.r_deg)} | {e.reason} |" for e in worst]
    for plot in plots:
        lines += ["", f"## {plot.title}", "", f"![{plot.title}]({plot.path.as_posix()})"]
    Path(path).write_text("\n".join(lines) + "\n")
