"""Progress of the work inside a node (images, queries, training steps).

Stages loop over ``track(items, description)``; work handed on as it is computed (a per-item
mapper's results) goes through ``track_results``. A front end that shows progress (the CLI's rich
display) opens ``reporting(start_task)`` around the graph, where ``start_task(description, total)``
returns the function that advances that task by one. Outside ``reporting`` both only yield.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

Item = TypeVar("Item")
StartTask = Callable[[str, int], Callable[[], None]]

_start_task: ContextVar[StartTask | None] = ContextVar("reloc_progress", default=None)


@contextmanager
def reporting(start_task: StartTask) -> Iterator[None]:
    """Show the ``track`` loops run inside the block through ``start_task``."""
    token = _start_task.set(start_task)
    try:
        yield
    finally:
        _start_task.reset(token)


def track(items: Sequence[Item], description: str) -> Iterator[Item]:
    """Yield ``items``, advancing a progress task after each when a front end reports progress."""
    start_task = _start_task.get()
    if start_task is None:
        yield from items
        return
    advance = start_task(description, len(items))
    for item in items:
        yield item
        advance()


def track_results(results: Iterable[Item], total: int, description: str) -> Iterator[Item]:
    """Yield the ``total`` ``results``, advancing a progress task as each is computed, before it is
    handed on: the task completes even when the consumer stops at the last result (``zip`` over a
    shorter list), where ``track``, which advances when the loop asks for the next item, would
    stay one short."""
    start_task = _start_task.get()
    if start_task is None:
        yield from results
        return
    advance = start_task(description, total)
    for result in results:
        advance()
        yield result
