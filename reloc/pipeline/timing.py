"""Per-query, per-stage timings collected while a localization graph runs.

Stages wrap the work they do for one query in ``with query_timer("stage", query_name):``; the
runner opens ``recording()`` around the graph and attaches the seconds to each QueryResult.
Outside a recording the timer only measures nothing and costs nothing.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_timings: ContextVar[dict[str, dict[str, float]] | None] = ContextVar("reloc_query_timings", default=None)


@contextmanager
def recording() -> Iterator[dict[str, dict[str, float]]]:
    """Collect {query name: {stage: seconds}} for the duration of the block."""
    timings: dict[str, dict[str, float]] = defaultdict(dict)
    token = _timings.set(timings)
    try:
        yield timings
    finally:
        _timings.reset(token)


def add_query_time(stage: str, queries: list[str], seconds: float) -> None:
    """Share ``seconds`` of work done for several queries at once (a batch) equally among them."""
    timings = _timings.get()
    if timings is not None:
        for query in queries:
            timings[query][stage] = timings[query].get(stage, 0.0) + seconds / len(queries)


@contextmanager
def query_timer(stage: str, query: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        add_query_time(stage, [query], time.perf_counter() - start)
