"""Pipeline YAML: loading (safe YAML only) and validation before anything runs.

A pipeline file has two graphs::

    name: default                # optional, defaults to the file stem
    description: ...             # optional
    seed: 0                      # optional
    mapping:
      nodes:
        features:
          stage: features.xfeat  # a registered stage
          with: {max_keypoints: 2048}   # its config; unknown keys are errors
          inputs: {frames: dataset.frames}   # input port -> "node.output" or a source
    localization:
      nodes: {...}
      output: pnp.results        # the port holding the list[QueryResult]

Sources are supplied by the runner: mapping gets ``dataset.frames`` (the posed mapping frames)
and ``map.dir`` (the map folder being written); localization gets ``queries.frames`` and
``map.dir`` (the finished map). Every error names the file, the node and the key.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..configs import config_path, shipped_names
from ..errors import PipelineError
from ..io.map_folder import ARTIFACTS
from ..types import Frame, QueryResult
from .registry import Stage, port_accepts, stage_class, type_name

SOURCES = {
    "mapping": {"dataset.frames": list[Frame], "map.dir": Path},
    "localization": {"queries.frames": list[Frame], "map.dir": Path},
}
RESULTS_TYPE = list[QueryResult]
TOP_LEVEL_KEYS = {"name", "description", "seed", "mapping", "localization"}
SECTION_KEYS = {"mapping": {"nodes", "keep"}, "localization": {"nodes", "output"}}
NODE_KEYS = {"stage", "with", "inputs"}


@dataclass
class Node:
    """A validated node: its stage class, resolved config and input wiring."""

    name: str
    stage: type[Stage]
    config: Any
    inputs: dict[str, str]  # input port -> "node.output" or source name
    stage_ref: str  # as the pipeline names it: a registered name or "package.module:Class"

    def build(self) -> Stage:
        return self.stage(self.config)


@dataclass
class Graph:
    """A validated graph: nodes in topological order, the sources it reads, its output port."""

    section: str
    nodes: dict[str, Node]
    order: list[str]
    sources: dict[str, Any]
    output: str | None
    keep: tuple[str, ...] = ()  # mapping: artifacts kept although no localization node reads them

    def artifacts_read(self) -> set[str]:
        """The map artifacts the graph's nodes read (their stages' ``needs``)."""
        return {artifact for node in self.nodes.values() for artifact in node.stage.needs}

    def edges(self) -> list[tuple[str, str, str]]:
        """(producer "node.output" or source, consumer node, consumer input)."""
        return [(ref, name, port) for name in self.order for port, ref in self.nodes[name].inputs.items()]


@dataclass
class Pipeline:
    name: str
    description: str
    seed: int
    mapping: Graph
    localization: Graph
    raw: dict  # the YAML content as read

    def resolved(self) -> dict:
        """The pipeline as YAML-safe data with every node's config written out in full, defaults
        included: what a map records, so that it keeps its settings when stage defaults change."""
        content: dict[str, Any] = {"name": self.name, "description": self.description, "seed": self.seed}
        for graph in (self.mapping, self.localization):
            nodes = {
                name: {"stage": node.stage_ref, "with": plain_config(node.config), "inputs": dict(node.inputs)}
                for name, node in graph.nodes.items()
            }
            content[graph.section] = {
                "nodes": nodes,
                **({"output": graph.output} if graph.output else {}),
                **({"keep": list(graph.keep)} if graph.keep else {}),
            }
        return content


def plain_config(config: Any) -> dict:
    """A resolved dataclass config as plain data (tuples as lists, paths as strings)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def read_yaml(path: Path) -> dict:
    """Safe-load a YAML mapping; python tags and other unsafe constructs are rejected."""
    if not path.is_file():
        raise PipelineError(f"{path}: pipeline file does not exist (shipped configs: {', '.join(shipped_names())})")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise PipelineError(f"{path}: not valid (safe) YAML: {error}") from None
    if not isinstance(content, dict):
        raise PipelineError(f"{path}: a pipeline file must be a mapping with 'mapping' and 'localization'")
    return content


def _check_keys(where: str, content: Any, allowed: set[str], what: str) -> None:
    if not isinstance(content, dict):
        raise PipelineError(f"{where}: {what} must be a mapping, got {type(content).__name__}")
    unknown = sorted(set(content) - allowed)
    if unknown:
        raise PipelineError(f"{where}: unknown key '{unknown[0]}' in {what} (allowed: {', '.join(sorted(allowed))})")


def resolve_config(where: str, stage: type[Stage], values: Any) -> Any:
    """Merge ``with:`` values into the stage's dataclass config, checking keys and types."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise PipelineError(f"{where}: key 'with' must be a mapping of config values")
    fields = {f.name for f in dataclasses.fields(stage.Config)}
    for key in values:
        if key not in fields:
            valid = ", ".join(sorted(fields)) or "none"
            raise PipelineError(
                f"{where}: unknown config key 'with.{key}' for stage '{stage.name}' (valid keys: {valid})"
            )
    try:
        merged = OmegaConf.merge(OmegaConf.structured(stage.Config), values)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", "") or "?"
        reason = str(getattr(error, "msg", error)).splitlines()[0]
        raise PipelineError(f"{where}: config key 'with.{key}': {reason}") from None
    except ValueError as error:  # a config's own range check (reloc.errors.require_range)
        raise PipelineError(f"{where}: {error}") from None


def _check_inputs(where: str, stage: type[Stage], wiring: dict) -> None:
    for port in wiring:
        if port not in stage.inputs:
            valid = ", ".join(stage.inputs) or "none"
            raise PipelineError(f"{where}: stage '{stage.name}' has no input '{port}' (inputs: {valid})")
    for port, port_type in stage.inputs.items():
        if port not in wiring:
            if port in stage.optional_inputs:
                continue
            raise PipelineError(
                f"{where}: missing input '{port}' (stage '{stage.name}' needs {port}: {type_name(port_type)})"
            )
        if not isinstance(wiring[port], str) or "." not in wiring[port]:
            raise PipelineError(f"{where}: input '{port}' must be written 'node.output', got {wiring[port]!r}")


def _port_type(where: str, port: str, ref: str, nodes: dict[str, Node], sources: dict[str, Any]) -> Any:
    if ref in sources:
        return sources[ref]
    producer, _, output = ref.partition(".")
    if producer not in nodes:
        known = ", ".join([*nodes, *sources])
        raise PipelineError(f"{where}: input '{port}' refers to unknown node '{producer}' (known: {known})")
    outputs = nodes[producer].stage.outputs
    if output not in outputs:
        raise PipelineError(
            f"{where}: input '{port}' refers to '{ref}' but node '{producer}' has no output '{output}' "
            f"(outputs: {', '.join(outputs) or 'none'})"
        )
    return outputs[output]


def _find_cycle(nodes: dict[str, Node], remaining: set[str]) -> list[tuple[str, str, str]]:
    """A cycle among ``remaining`` nodes as (node, input port, producer) steps."""
    start = min(remaining)
    path: list[tuple[str, str, str]] = []
    seen = {start: 0}
    current = start
    while True:
        port, ref = next((p, r) for p, r in sorted(nodes[current].inputs.items()) if r.partition(".")[0] in remaining)
        producer = ref.partition(".")[0]
        path.append((current, port, ref))
        if producer in seen:
            return path[seen[producer] :]
        seen[producer] = len(path)
        current = producer


def topological_order(where: str, nodes: dict[str, Node]) -> list[str]:
    producers = {
        name: {ref.partition(".")[0] for ref in node.inputs.values()} & set(nodes) for name, node in nodes.items()
    }
    order: list[str] = []
    remaining = set(nodes)
    while remaining:
        ready = sorted(name for name in remaining if not producers[name] & remaining)
        if not ready:
            steps = " -> ".join(
                f"node '{node}' input '{port}' <- '{ref}'" for node, port, ref in _find_cycle(nodes, remaining)
            )
            raise PipelineError(f"{where}: cycle in the graph: {steps}")
        order += ready
        remaining -= set(ready)
    return order


def build_graph(path: Path, section: str, content: Any) -> Graph:
    where = f"{path}: {section}"
    _check_keys(where, content, SECTION_KEYS[section], f"section '{section}'")
    raw_nodes = content.get("nodes")
    if not isinstance(raw_nodes, dict) or not raw_nodes:
        raise PipelineError(f"{where}: key 'nodes' must map node names to nodes")
    sources = SOURCES[section]
    nodes: dict[str, Node] = {}
    for name, raw in raw_nodes.items():
        node_where = f"{where}: node '{name}'"
        if name in {ref.partition(".")[0] for ref in sources}:
            raise PipelineError(f"{node_where}: the name is reserved for a source")
        _check_keys(node_where, raw, NODE_KEYS, "a node")
        if "stage" not in raw:
            raise PipelineError(f"{node_where}: missing key 'stage'")
        stage = stage_class(str(raw["stage"]), node_where)
        wiring = raw.get("inputs") or {}
        if not isinstance(wiring, dict):
            raise PipelineError(f"{node_where}: key 'inputs' must map input names to 'node.output'")
        _check_inputs(node_where, stage, wiring)
        nodes[name] = Node(
            name, stage, resolve_config(node_where, stage, raw.get("with")), dict(wiring), str(raw["stage"])
        )
    for name, node in nodes.items():
        for port, ref in node.inputs.items():
            provided = _port_type(f"{where}: node '{name}'", port, ref, nodes, sources)
            expected = node.stage.inputs[port]
            if not port_accepts(expected, provided):
                raise PipelineError(
                    f"{where}: node '{name}': input '{port}' expects {type_name(expected)} "
                    f"but '{ref}' is {type_name(provided)}"
                )
    order = topological_order(where, nodes)
    output = content.get("output")
    if section == "localization":
        if output is None:
            raise PipelineError(f"{where}: missing key 'output' (the node.output holding the query results)")
        provided = _port_type(f"{where}: key 'output'", "output", str(output), nodes, {})
        if not port_accepts(RESULTS_TYPE, provided):
            raise PipelineError(
                f"{where}: key 'output': '{output}' is {type_name(provided)}, expected {type_name(RESULTS_TYPE)}"
            )
    return Graph(section, nodes, order, sources, output, _kept_artifacts(where, content.get("keep")))


def _kept_artifacts(where: str, keep: Any) -> tuple[str, ...]:
    """The mapping section's ``keep``: a list of map artifact names (features.h5, patches.h5...)."""
    if keep is None:
        return ()
    if not isinstance(keep, list) or not all(isinstance(name, str) for name in keep):
        raise PipelineError(f"{where}: key 'keep' must be a list of map artifacts, got {keep!r}")
    unknown = sorted(set(keep) - set(ARTIFACTS))
    if unknown:
        raise PipelineError(
            f"{where}: key 'keep': '{unknown[0]}' is not a map artifact (one of {', '.join(sorted(ARTIFACTS))})"
        )
    return tuple(keep)


OVERRIDE_FORM = "[section.]node.key=value, e.g. localization.pnp.confident_inliers=50"


def parse_setting(setting: str, form: str = "KEY=VALUE") -> tuple[str, Any]:
    """``KEY=VALUE`` -> (KEY, VALUE parsed as YAML, so numbers, booleans and lists keep their
    types). Raises ValueError saying what is wrong: no ``=`` or no key ("expected ``form``"), or a
    value that is not YAML."""
    key, separator, text = setting.partition("=")
    if not separator or not key:
        raise ValueError(f"expected {form}")
    try:
        return key, yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"the value is not valid YAML ({error})") from None


def apply_overrides(path: Path, content: dict, overrides: list[str]) -> dict:
    """``content`` with ``[section.]node.key[.subkey]=value`` overrides (:func:`parse_setting`)
    set in the nodes' ``with``, and ``mapping.keep=[...]``. The section may be left out when the
    node name is in one graph only. The result is validated like the file."""
    content = copy.deepcopy(content)
    for override in overrides:
        where = f"{path}: --set {override!r}"
        try:
            target, value = parse_setting(override, OVERRIDE_FORM)
        except ValueError as error:
            raise PipelineError(f"{where}: {error}") from None
        if not all(target.split(".")):
            raise PipelineError(f"{where}: expected {OVERRIDE_FORM}")
        if target == "mapping.keep":  # the mapping section's own key, not a node's
            values, key = content.setdefault("mapping", {}), "keep"
        else:
            values, key = override_slot(where, content, target.split("."))
        values[key] = value
    return content


def override_slot(where: str, content: dict, parts: list[str]) -> tuple[dict, str]:
    """The ``with`` mapping (or nested config mapping) an override writes into, and its key."""
    sections = [name for name in SECTION_KEYS if parts[0] in ((content.get(name) or {}).get("nodes") or {})]
    if parts[0] in SECTION_KEYS:
        sections, parts = [parts[0]], parts[1:]
    if len(sections) != 1 or len(parts) < 2:
        found = " and ".join(sections) or "neither graph"
        raise PipelineError(f"{where}: node '{parts[0]}' is in {found}; name the graph: mapping.NODE.KEY=VALUE")
    node = ((content.get(sections[0]) or {}).get("nodes") or {}).get(parts[0])
    if not isinstance(node, dict):
        raise PipelineError(f"{where}: {sections[0]} has no node '{parts[0]}'")
    values = node.get("with") or {}
    node["with"] = values
    for key in parts[1:-1]:
        values = values.setdefault(key, {})
        if not isinstance(values, dict):
            raise PipelineError(f"{where}: 'with.{key}' is not a mapping of config values")
    return values, parts[-1]


def load_pipeline(
    path: str | Path, content: dict | None = None, overrides: list[str] | None = None, built: bool = False
) -> Pipeline:
    """Load and validate a pipeline file (or ``content`` already read from ``path``). ``path`` may
    name a shipped config (``default``); ``overrides`` are ``--set`` values (:func:`apply_overrides`).
    ``built``: the pipeline recorded in a map already built, whose mapping graph is not checked
    again for artifacts nothing reads (maps built before that check still load)."""
    path = config_path(path)
    content = read_yaml(path) if content is None else content
    if overrides:
        content = apply_overrides(path, content, overrides)
    _check_keys(str(path), content, TOP_LEVEL_KEYS, "the pipeline file")
    for section in ("mapping", "localization"):
        if section not in content:
            raise PipelineError(f"{path}: missing section '{section}'")
    seed = content.get("seed", 0)
    if not isinstance(seed, int):
        raise PipelineError(f"{path}: key 'seed' must be an integer, got {seed!r}")
    mapping = build_graph(path, "mapping", content["mapping"])
    localization = build_graph(path, "localization", content["localization"])
    if not built:
        check_every_map_artifact_is_read(path, mapping, localization)
    return Pipeline(
        name=str(content.get("name", path.stem)),
        description=str(content.get("description", "")),
        seed=seed,
        mapping=mapping,
        localization=localization,
        raw=content,
    )


def apply_localization_overrides(path: Path, content: dict, overrides: list[str]) -> dict:
    """A map's recorded pipeline ``content`` with ``[localization.]node.key=value`` overrides of
    its localization graph (:func:`apply_overrides`; a node in both graphs, such as ``features``,
    means the localization one). The map is built, so an override of the mapping graph is refused."""
    localization = content.get("localization") or {}
    localization_nodes = localization.get("nodes") or {}
    mapping_nodes = (content.get("mapping") or {}).get("nodes") or {}
    nodes = ", ".join(localization_nodes)
    for override in overrides:
        first = override.split("=", 1)[0].split(".")[0]
        if first == "localization" or first in localization_nodes:
            continue
        where = f"{path}: --set {override!r}"
        if first == "mapping" or first in mapping_nodes:
            raise PipelineError(
                f"{where}: a built map's localization settings can change, not its mapping (localization nodes: "
                f"{nodes}); rebuild the map with 'reloc map' to change how it is built"
            )
        raise PipelineError(f"{where}: the map's localization graph has no node '{first}' (its nodes: {nodes})")
    return {**content, "localization": apply_overrides(path, {"localization": localization}, overrides)["localization"]}


def load_recorded_pipeline(path: Path, content: dict, overrides: list[str] | None = None) -> Pipeline:
    """The pipeline in a map's record (``content``, the ``pipeline`` entry of ``path``), with
    ``overrides`` of its localization graph (:func:`apply_localization_overrides`). A record
    this reloc does not accept (a map built by a version with other settings or stages) fails
    naming the key, and says to rebuild the map."""
    if overrides:
        content = apply_localization_overrides(path, content, overrides)
    try:
        return load_pipeline(path, content, built=True)
    except PipelineError as error:
        raise PipelineError(
            f"{error}; the map records the pipeline of the reloc that built it, which this version does not "
            "accept: rebuild the map with 'reloc map' (or 'reloc eval' without --map)"
        ) from None


def check_every_map_artifact_is_read(path: Path, mapping: Graph, localization: Graph) -> None:
    """A mapping node that writes map artifacts (reloc.io.map_folder) must be read: by another
    mapping node's inputs, or through an artifact a localization node needs. A map holds only
    what its pipeline reads (FaVoR's patches only where favor.train consumes them)."""
    needed = localization.artifacts_read()
    read_by_mapping = {ref.split(".")[0] for node in mapping.nodes.values() for ref in node.inputs.values()}
    for name, node in mapping.nodes.items():
        written = sorted(a.name for a in ARTIFACTS.values() if node.stage.name in a.built_by)
        if written and name not in read_by_mapping and not needed & set(written):
            raise PipelineError(
                f"{path}: mapping node '{name}' ({node.stage.name}) builds {', '.join(written)}, which no "
                "localization node reads and no mapping node uses; remove it from the mapping graph"
            )
