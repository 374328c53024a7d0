"""Where the pipeline's work runs: in this process, on a pool of threads, or on Ray workers.

Localization:

A localization stage works query by query: a query's result depends on that query and the map
only, not on which other queries share the run (``tests/test_executors.py`` checks it), so the
queries are dealt into chunks (query i to chunk i mod n: the hard stretches of a sequence are
shared out), each worker runs the whole graph on a chunk (reading the map once per process) and
the runner puts the results back in query order. Threads get one chunk each; Ray gets
``chunks_per_worker`` chunks per worker, pulled by whichever worker is free, so that a slow chunk
does not leave the other workers idle.

- ``local``: the graph on every query in this process.
- ``threads``: one thread per chunk in this process. pycolmap, PoseLib, OpenCV and torch release
  the GIL in their heavy calls, and nothing is copied.
- ``ray``: one Ray task per chunk, on a Ray cluster at ``address`` or on a local Ray started with
  ``workers`` CPUs; the pipeline travels as its resolved YAML content, the map is read by path.

Mapping: the graph runs in this process, and the per-item work of its stages (feature extraction,
FaVoR's patches, keyframe copies: :mod:`.items`) is spread over the threads or Ray tasks (one chunk
per worker at a time, two queued per thread); the stages that need everything (tracks, triangulation, the
retrieval fit) run here. The results come back in item order and are written here, so the map is
byte-identical to a local one (``tests/test_executors.py``).
"""

from __future__ import annotations

import contextvars
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PipelineError
from ..io.map_folder import MAP_FILE
from ..types import Frame, QueryResult
from .engine import run_graph
from .items import ChunkWork, Mapper
from .memory import keep_freed_memory
from .progress import track_results
from .spec import Pipeline, load_pipeline
from .timing import recording

EXECUTORS = ("local", "threads", "ray")

QueryTimings = dict[str, dict[str, float]]


@dataclass
class ExecutorConfig:
    kind: str = "local"  # local, threads or ray
    workers: int = 0  # chunks run at once (0: the machine's cores)
    address: str | None = None  # ray: a running cluster ("auto", "ray://host:10001"); None starts a local one
    chunks_per_worker: int = 8  # ray: query chunks per worker (more balance the load, each costs a task)

    def worker_count(self) -> int:
        return self.workers if self.workers > 0 else (os.cpu_count() or 1)


def deal(items: Sequence, parts: int) -> list[list]:
    """``items`` dealt into ``parts`` chunks (item i to chunk i mod parts; no empty chunk)."""
    parts = max(1, min(parts, len(items)))
    return [list(items[index::parts]) for index in range(parts)]


def localize_chunk(
    content: dict, map_dir: Path, frames: list[Frame], given: dict | None = None
) -> tuple[list[QueryResult], QueryTimings]:
    """The localization graph of the pipeline ``content`` (resolved YAML data) on ``frames``
    against ``map_dir``, with outputs ``given`` (computed elsewhere): its results and their per-stage
    seconds. Runs in a worker process: glibc is told to keep freed buffers there too (:mod:`.memory`)."""
    keep_freed_memory()
    pipeline = load_pipeline(map_dir / MAP_FILE, content, built=True)
    return run_localization_graph(pipeline, map_dir, frames, given=given)


def run_localization_graph(
    pipeline: Pipeline, map_dir: Path, frames: list[Frame], on_node=None, given: dict | None = None
) -> tuple[list[QueryResult], QueryTimings]:
    with recording() as timings:
        sources = {"queries.frames": frames, "map.dir": map_dir}
        run = run_graph(pipeline.localization, sources, on_node=on_node, given=given)
    return list(run.output(pipeline.localization.output)), {name: dict(t) for name, t in timings.items()}


@dataclass
class Chunk:
    """Queries localized together against one map folder, with outputs computed before (or None)."""

    map_dir: Path
    frames: list[Frame]
    given: dict | None = None


def run_localization(
    pipeline: Pipeline, map_dir: Path, frames: list[Frame], config: ExecutorConfig, on_node=None
) -> tuple[list[QueryResult], QueryTimings]:
    """Results (chunk by chunk: the caller puts them in query order) and timings of the
    localization graph on ``frames``, run as ``config`` says. ``on_node`` reports the graph's nodes of a local run."""
    check_executor(config)
    if config.kind == "local" or not frames:
        return run_localization_graph(pipeline, map_dir, frames, on_node)
    return run_chunks(pipeline, [Chunk(map_dir, chunk) for chunk in deal(frames, chunk_count(config))], config)


def check_executor(config: ExecutorConfig) -> None:
    if config.kind not in EXECUTORS:
        raise PipelineError(f"unknown executor {config.kind!r}; choose one of {', '.join(EXECUTORS)}")


def chunk_count(config: ExecutorConfig) -> int:
    """Query chunks to deal a run's queries into: 1 here, one per thread, ``chunks_per_worker``
    per Ray worker (the cluster's CPUs when ``workers`` is 0)."""
    check_executor(config)
    if config.kind == "local":
        return 1
    if config.kind == "threads":
        return config.worker_count()
    return ray_workers(config, ray_session(config)) * config.chunks_per_worker


def run_chunks(
    pipeline: Pipeline, chunks: list[Chunk], config: ExecutorConfig
) -> tuple[list[QueryResult], QueryTimings]:
    """The localization graph on each chunk, in this process, on threads or as Ray tasks; the
    results chunk after chunk and the timings of all."""
    check_executor(config)
    if config.kind == "local":
        outcomes = [run_localization_graph(pipeline, c.map_dir, c.frames, given=c.given) for c in chunks]
    elif config.kind == "threads":
        with ThreadPoolExecutor(max_workers=config.worker_count(), thread_name_prefix="reloc-localize") as pool:
            futures = [
                pool.submit(
                    contextvars.copy_context().run, run_localization_graph, pipeline, c.map_dir, c.frames, None, c.given
                )
                for c in chunks
            ]
            outcomes = [future.result() for future in futures]
    else:
        outcomes = run_on_ray(pipeline.resolved(), chunks, config)
    results: list[QueryResult] = []
    timings: QueryTimings = {}
    for chunk_results, chunk_timings in outcomes:
        results += chunk_results
        timings.update(chunk_timings)
    return results, timings


def run_on_ray(
    content: dict, chunks: list[Chunk], config: ExecutorConfig
) -> list[tuple[list[QueryResult], QueryTimings]]:
    """One Ray task per chunk, at most ``config.workers`` at once (0: the cluster's CPUs), the next
    chunk going to the first worker free (outcomes in the order they finish: the caller puts the
    results in query order), retried once when its worker dies; a chunk that fails again comes
    back as failed results naming the error, so that no query is lost."""
    ray = ray_session(config)
    task = ray.remote(num_cpus=1, max_retries=1)(localize_chunk)
    content_reference = ray.put(content)
    in_flight = ray_workers(config, ray)

    def submit(chunk: Chunk):
        return task.remote(content_reference, chunk.map_dir.resolve(), chunk.frames, chunk.given)

    outcomes = []
    pending: dict = {}  # reference -> its chunk
    upcoming = iter(chunks)
    while True:
        while len(pending) < in_flight and (chunk := next(upcoming, None)) is not None:
            pending[submit(chunk)] = chunk
        if not pending:
            return outcomes
        (done,), _ = ray.wait(list(pending), num_returns=1)
        chunk = pending.pop(done)
        try:
            outcomes.append(ray.get(done))
        except ray.exceptions.RayError as error:
            reason = f"ray worker failed: {type(error).__name__}: {str(error).splitlines()[0]}"
            outcomes.append(([QueryResult(frame.name, None, reason) for frame in chunk.frames], {}))


def ray_session(config: ExecutorConfig):
    """The ``ray`` module, connected to the cluster at ``config.address`` or to a local Ray with
    ``config.worker_count()`` CPUs started on first use."""
    try:
        import ray
    except ImportError:
        raise PipelineError("the ray executor needs Ray: pip install 'reloc[ray]'") from None
    if not ray.is_initialized():
        if config.address:
            ray.init(address=config.address, log_to_driver=False)
        else:
            ray.init(num_cpus=config.worker_count(), include_dashboard=False, log_to_driver=False)
    return ray


def ray_workers(config: ExecutorConfig, ray) -> int:
    """Ray tasks to run at once: ``config.workers``, or every CPU of the cluster."""
    return config.workers if config.workers > 0 else max(1, int(ray.cluster_resources().get("CPU", 1)))


def item_mapper(config: ExecutorConfig) -> Mapper | None:
    """What runs the per-item work of mapping stages under ``config`` (None: this process)."""
    check_executor(config)
    if config.kind == "local":
        return None
    if config.kind == "threads":
        window = 2 * config.worker_count()  # the pool runs worker_count at once; the others wait, read

        def on_threads(work: ChunkWork, chunks: list[list], description: str) -> Iterator[list]:
            with ThreadPoolExecutor(max_workers=config.worker_count(), thread_name_prefix="reloc-map") as pool:

                def submit(chunk: list) -> Future:
                    return pool.submit(contextvars.copy_context().run, work, chunk)

                yield from in_order(submit, Future.result, chunks, window, description)

        return on_threads

    def on_ray(work: ChunkWork, chunks: list[list], description: str) -> Iterator[list]:
        ray = ray_session(config)
        window = ray_workers(config, ray)  # Ray runs every task submitted while it has CPUs: submitted = running
        task = ray.remote(num_cpus=1, max_retries=1)(run_chunk)

        def result(reference) -> list:
            try:
                return ray.get(reference)
            except ray.exceptions.RayError as error:
                raise PipelineError(f"{description}: a Ray worker failed twice: {str(error).splitlines()[0]}") from None

        yield from in_order(lambda chunk: task.remote(work, chunk), result, chunks, window, description)

    return on_ray


def run_chunk(work: ChunkWork, chunk: list) -> list:
    keep_freed_memory()
    return work(chunk)


def in_order(
    submit: Callable[[list], Any], result: Callable[[Any], list], chunks: list[list], window: int, description: str
) -> Iterator[list]:
    """Each chunk's results in chunk order, with at most ``window`` chunks submitted and not yet
    consumed (memory stays bounded); progress advances as results come."""
    pending: deque = deque()
    upcoming = iter(chunks)

    def results() -> Iterator[list]:
        for _ in chunks:
            while len(pending) < window and (chunk := next(upcoming, None)) is not None:
                pending.append(submit(chunk))
            yield result(pending.popleft())

    yield from track_results(results(), len(chunks), description)
