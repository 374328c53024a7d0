"""Localization against a split map (:mod:`reloc.mapping.submaps`): each query goes to the
submaps that hold its top keyframes.

1. Here, the router: the nodes of the localization graph that read no map artifact (the query's
   features) run on every query once, and the router's whitened retrieval index ranks all
   keyframes; a submap's vote is the sum of ``1 / rank`` over its keyframes among the top
   ``top_k``.
2. Each query goes to its best submap. The queries of a submap run the rest of the graph there
   (retrieval in the submap, matching, PnP) with the router's features given, in chunks spread
   over the executor's workers: a worker reads only the submaps of its chunks.
3. A query that failed, or found fewer than ``retry_below_inliers`` inliers, is tried in its next
   submap, up to ``max_submaps``; the result with the most inliers is kept. Its record names the
   submap (``record.extra["submap"]``), whose landmark ids its inlier ids are; its timings add up
   the work in every submap it was tried in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import PipelineError
from ..features.base import FeatureStore
from ..io.map_folder import GLOBAL_FILE
from ..io.memo import read_once
from ..mapping.submaps import ROUTER_FILE, read_split
from ..pipeline.engine import run_graph
from ..pipeline.executors import Chunk, ExecutorConfig, QueryTimings, chunk_count, deal, run_chunks
from ..pipeline.spec import Pipeline
from ..pipeline.timing import add_query_time, recording
from ..retrieval.vlad import RetrievalIndex
from ..types import Frame, QueryResult


@dataclass
class RoutingConfig:
    top_k: int = 30  # keyframes of the router's retrieval that vote
    max_submaps: int = 2  # submaps a query is tried in
    retry_below_inliers: int = 100  # a result with fewer inliers is tried in the next submap


def query_only_nodes(pipeline: Pipeline) -> list[str]:
    """The localization nodes that read no map artifact and only sources or each other (the
    query's features): what the router runs once for every submap."""
    graph = pipeline.localization
    chosen: list[str] = []
    for name in graph.order:
        node = graph.nodes[name]
        producers = {ref.split(".")[0] for ref in node.inputs.values() if ref not in graph.sources}
        if not node.stage.needs and producers <= set(chosen):
            chosen.append(name)
    return chosen


def routed_features(pipeline: Pipeline, front: list[str]) -> str:
    """The "node.output" holding the query features that the graph's retrieval node reads."""
    graph = pipeline.localization
    for name in graph.order:
        node = graph.nodes[name]
        if GLOBAL_FILE in node.stage.needs and "features" in node.inputs:
            ref = node.inputs["features"]
            if ref.split(".")[0] in front:
                return ref
    raise PipelineError(
        f"pipeline '{pipeline.name}': a split map routes queries by retrieval; its localization graph needs a "
        "retrieval node reading the query features"
    )


def submap_votes(ranked: list[int], submap_of: list[list[int]], parts: int) -> list[int]:
    """Submaps by the sum of 1 / (rank + 1) of their keyframes among ``ranked`` (keyframe
    indices, best first), best first; submaps without a vote are left out."""
    votes = np.zeros(parts)
    for rank, keyframe in enumerate(ranked):
        for part in submap_of[keyframe]:
            votes[part] += 1.0 / (rank + 1)
    order = np.argsort(-votes, kind="stable")
    return [int(part) for part in order if votes[part] > 0]


def more_inliers(result: QueryResult, than: QueryResult) -> bool:
    """A pose beats a failure; of two poses, the one with more inliers wins."""
    return (result.pose is not None, result.num_inliers) > (than.pose is not None, than.num_inliers)


def subset(value, names: set[str]):
    """The part of a router output that concerns the queries ``names``: an in-memory feature
    store or a dict keyed by query name is cut down, anything else passed whole."""
    if isinstance(value, FeatureStore) and value.path is None:
        store = FeatureStore(value.extractor)
        for name in names:
            store.write(name, value.read(name))
        return store
    if isinstance(value, dict) and set(value) >= names:
        return {name: value[name] for name in names}
    return value


def localize_split(
    pipeline: Pipeline,
    split_dir: Path,
    frames: list[Frame],
    executor: ExecutorConfig,
    config: RoutingConfig | None = None,
) -> tuple[list[QueryResult], QueryTimings]:
    """Results (one per query, in query order) and per-stage timings of ``frames`` against the
    split map ``split_dir``; see the module docstring."""
    config = config or RoutingConfig()
    split = read_split(split_dir)
    folders = [split_dir / entry["folder"] for entry in split["submaps"]]
    front = query_only_nodes(pipeline)
    features_ref = routed_features(pipeline, front)
    with recording() as timings:
        run = run_graph(pipeline.localization, {"queries.frames": frames, "map.dir": folders[0]}, only=front)
        routes = route(split_dir, split, run.output(features_ref), frames, config)
    given = {ref: value for ref, value in run.values.items() if ref.split(".")[0] in front}
    chunks_in_all = chunk_count(executor)
    best: dict[str, QueryResult] = {}
    worker_timings: QueryTimings = {}
    for attempt in range(config.max_submaps):
        todo = [
            frame
            for frame in frames
            if len(routes[frame.name]) > attempt
            and (frame.name not in best or best[frame.name].num_inliers < config.retry_below_inliers)
        ]
        chunks = []
        for part in sorted({routes[frame.name][attempt] for frame in todo}):
            queries = [frame for frame in todo if routes[frame.name][attempt] == part]
            for chunk in deal(queries, max(1, chunks_in_all * len(queries) // len(todo))):
                names = {frame.name for frame in chunk}
                chunks.append(Chunk(folders[part], chunk, {ref: subset(value, names) for ref, value in given.items()}))
        results, attempt_timings = run_chunks(pipeline, chunks, executor)
        for result in results:
            result.record.extra["submap"] = folders[routes[result.name][attempt]].name  # whose landmark ids it has
            if result.name not in best or more_inliers(result, best[result.name]):
                best[result.name] = result
            spent = worker_timings.setdefault(result.name, {})  # every submap tried counts, not only the kept one
            for stage, seconds in attempt_timings.get(result.name, {}).items():
                spent[stage] = spent.get(stage, 0.0) + seconds
    outputs = []
    for frame in frames:
        result = best.get(frame.name) or QueryResult(frame.name, None, "no submap holds any of its retrieved keyframes")
        outputs.append(result)
    merged = {name: {**timings.get(name, {}), **worker_timings.get(name, {})} for name in {f.name for f in frames}}
    return outputs, merged


def route(split_dir: Path, split: dict, features: FeatureStore, frames: list[Frame], config: RoutingConfig) -> dict:
    """Query name -> its submaps (indices), best first, at most ``config.max_submaps``."""
    index = read_once(RetrievalIndex.read, split_dir / ROUTER_FILE)
    position = {name: i for i, name in enumerate(index.names)}
    submap_of: list[list[int]] = [[] for _ in index.names]
    for part, entry in enumerate(split["submaps"]):
        for name in entry["keyframes"]:
            submap_of[position[name]].append(part)
    routes = {}
    for frame in frames:
        started = time.perf_counter()
        ranked = index.query(features.read(frame.name).descriptors, config.top_k)
        routes[frame.name] = submap_votes(ranked, submap_of, len(split["submaps"]))[: config.max_submaps]
        add_query_time("routing", [frame.name], time.perf_counter() - started)
    return routes
