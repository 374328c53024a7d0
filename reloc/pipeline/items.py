"""Per-item work of a stage (one image, one keyframe), spread over workers when the run has them.

A stage whose work on a list is item by item hands it to :func:`map_items`: ``work(chunk)``
computes the results of a chunk of items (a list, one result per item) without side effects, and
the stage writes them (``features.h5``, ``patches.h5``) in its own process, in item order, as they
come (a mapper keeps a bounded number of chunks in flight, so memory stays flat). So a new
per-item stage is spread over workers by calling ``map_items`` and nothing else, and its files are
the same bytes wherever the work ran.

By default the chunks run here one after another (with progress); inside ``spreading(mapper)``
(what ``reloc map --executor threads|ray`` opens, :mod:`.executors`) ``mapper`` runs them.
``work`` must then be picklable for Ray: a module-level function, or a ``functools.partial`` of one
over a config.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from ..errors import PipelineError
from .progress import track_results

ChunkWork = Callable[[list], list]
# (work, chunks, description) -> each chunk's results, in chunk order
Mapper = Callable[[ChunkWork, list[list], str], Iterator[list]]

_mapper: ContextVar[Mapper | None] = ContextVar("reloc_item_mapper", default=None)


@contextmanager
def spreading(mapper: Mapper) -> Iterator[None]:
    """Run the ``map_items`` calls made inside the block through ``mapper``."""
    token = _mapper.set(mapper)
    try:
        yield
    finally:
        _mapper.reset(token)


def run_here(work: ChunkWork, chunks: list[list], description: str) -> Iterator[list]:
    return track_results((work(chunk) for chunk in chunks), len(chunks), description)


def map_items(work: ChunkWork, items: Sequence, description: str, chunk_size: int = 1) -> Iterator[Any]:
    """``work`` over ``items`` in chunks of ``chunk_size`` (the unit a network batches): one
    result per item, yielded in item order."""
    chunk_size = max(1, chunk_size)
    chunks = [list(items[start : start + chunk_size]) for start in range(0, len(items), chunk_size)]
    mapper = _mapper.get() or run_here
    for chunk, chunk_results in zip(chunks, mapper(work, chunks, description), strict=True):
        if len(chunk_results) != len(chunk):
            raise PipelineError(f"{description}: the work returned {len(chunk_results)} results for {len(chunk)} items")
        yield from chunk_results
