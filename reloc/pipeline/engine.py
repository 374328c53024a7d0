"""Topological execution of a validated graph, with per-node timing and caching.

A node is served from the cache only when its key matches (stage, version, resolved config,
input keys) and every file it wrote into the artifact folder (the map folder) is still there
with the content it had when the node ran: a cached return value never stands for files that
another run has since replaced.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PipelineError
from .cache import CacheEntry, DiskCache, file_digests, fingerprint, folder_state, node_key
from .spec import Graph


@dataclass
class GraphRun:
    """Outputs by "node.output" (and sources by name), seconds per node, nodes served from cache,
    and the files each node wrote, cached or not (path relative to the artifact folder -> SHA-256)."""

    values: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    cached: set[str] = field(default_factory=set)
    written: dict[str, dict[str, str | None]] = field(default_factory=dict)

    def output(self, ref: str) -> Any:
        return self.values[ref]


def run_graph(
    graph: Graph,
    sources: dict[str, Any],
    cache: DiskCache | None = None,
    on_node: Callable[[str, int, int], None] | None = None,
    artifacts: Path | None = None,
    only: Collection[str] | None = None,
    given: dict[str, Any] | None = None,
) -> GraphRun:
    """Run every node in topological order. ``on_node(name, index, total)`` is called before each.
    ``artifacts``: the folder nodes write files into (the map folder), watched so that a cached
    node is reused only while its files are unchanged. ``only``: run these nodes (their inputs
    must come from sources or from each other). ``given``: outputs ("node.output") computed
    elsewhere (the router of a split map); a node whose outputs are all given is not run."""
    missing = sorted(set(graph.sources) - set(sources))
    if missing:
        raise PipelineError(f"{graph.section}: source '{missing[0]}' was not provided")
    given = given or {}
    keys = {name: fingerprint(value) for name, value in sources.items() if name in graph.sources}
    keys.update({ref: fingerprint(["given", ref]) for ref in given})
    run = GraphRun(values={**sources, **given})
    order = [name for name in graph.order if only is None or name in only]
    for index, name in enumerate(order):
        node = graph.nodes[name]
        if given and node.stage.outputs and all(f"{name}.{output}" in given for output in node.stage.outputs):
            continue
        if on_node is not None:
            on_node(name, index, len(order))
        absent = sorted(ref for ref in node.inputs.values() if ref not in keys)
        if absent:
            raise PipelineError(
                f"{graph.section}: node '{name}' reads '{absent[0]}', which this run neither ran nor was given"
            )
        input_keys = {port: keys[ref] for port, ref in node.inputs.items()}
        key = node_key(node.stage.name, node.stage.version, node.config, input_keys)
        start = time.perf_counter()
        entry = cache.load(name, key) if cache is not None and node.stage.cacheable else None
        if entry is not None and artifacts is not None and file_digests(artifacts, list(entry.files)) != entry.files:
            entry = None
        if entry is not None:
            run.cached.add(name)
        else:
            before = folder_state(artifacts) if artifacts is not None else {}
            unwired = dict.fromkeys(node.stage.optional_inputs - node.inputs.keys())
            outputs = node.build().run(**unwired, **{port: run.values[ref] for port, ref in node.inputs.items()})
            _check_outputs(name, node.stage, outputs)
            after = folder_state(artifacts) if artifacts is not None else {}
            written = sorted(path for path, state in after.items() if before.get(path) != state)
            entry = CacheEntry(outputs, file_digests(artifacts, written) if artifacts is not None else {})
            if cache is not None and node.stage.cacheable:
                cache.store(name, key, entry)
        run.seconds[name] = time.perf_counter() - start
        run.written[name] = dict(sorted(entry.files.items()))
        for output, value in entry.outputs.items():
            run.values[f"{name}.{output}"] = value
            keys[f"{name}.{output}"] = fingerprint([key, output])
    return run


def _check_outputs(name: str, stage, outputs: Any) -> None:
    if not isinstance(outputs, dict) or set(outputs) != set(stage.outputs):
        got = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
        raise PipelineError(f"node '{name}': stage '{stage.name}' returned {got}, declared {sorted(stage.outputs)}")
