"""The 7-Scenes / Cambridge protocol: per-query pose errors, medians and recalls.

A query missing from the results, or reported failed, has infinite error: it counts in
``n_failed``, in the medians and against every recall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ResultsError
from ..geometry.errors import scored_errors
from ..types import Frame, QueryResult

RECALL_THRESHOLDS = {  # key: (translation in cm, rotation in degrees)
    "1cm_1deg": (1.0, 1.0),
    "2cm_2deg": (2.0, 2.0),
    "5cm_5deg": (5.0, 5.0),
    "25cm_2deg": (25.0, 2.0),
    "50cm_5deg": (50.0, 5.0),
    "500cm_10deg": (500.0, 10.0),
}


@dataclass
class QueryError:
    name: str
    t_cm: float
    r_deg: float
    reason: str = ""

    @property
    def failed(self) -> bool:
        return not math.isfinite(self.t_cm)


def query_errors(results: dict[str, QueryResult], ground_truth: dict[str, Frame]) -> list[QueryError]:
    """One error per ground-truth query, in the order of the ground truth."""
    unknown = sorted(set(results) - set(ground_truth))
    if unknown:
        raise ResultsError(f"{len(unknown)} result names are not queries of this dataset, e.g. {unknown[0]!r}")
    errors = []
    for name, frame in ground_truth.items():
        if frame.pose is None:
            raise ResultsError(f"query {name} has no ground-truth pose; it cannot be scored")
        result = results.get(name)
        reason = "missing from results" if result is None else "" if result.success else result.reason or "failed"
        errors.append(QueryError(name, *scored_errors(result.pose if result else None, frame.pose), reason))
    return errors


def median_timings(results: dict[str, QueryResult]) -> dict[str, float]:
    """Per stage, the median over queries of its seconds per query."""
    per_stage: dict[str, list[float]] = {}
    for result in results.values():
        for stage, seconds in result.timings.items():
            per_stage.setdefault(stage, []).append(seconds)
    return {stage: float(np.median(values)) for stage, values in per_stage.items()}


def compute_metrics(
    results: dict[str, QueryResult], ground_truth: dict[str, Frame], map_bytes: int | None = None
) -> tuple[dict, list[QueryError]]:
    """``metrics.json`` content (keys as in docs/design.md) and the per-query errors."""
    errors = query_errors(results, ground_truth)
    if not errors:
        raise ResultsError("the dataset has no queries to score")
    t_cm = np.array([e.t_cm for e in errors])
    r_deg = np.array([e.r_deg for e in errors])
    metrics = {
        "n_queries": len(errors),
        "n_failed": int(sum(e.failed for e in errors)),
        "median_t_cm": float(np.median(t_cm)),
        "median_r_deg": float(np.median(r_deg)),
        "recall": {key: float(np.mean((t_cm <= t) & (r_deg <= r))) for key, (t, r) in RECALL_THRESHOLDS.items()},
        "timing_s": median_timings(results),
        "map_bytes": map_bytes,
    }
    return metrics, errors
