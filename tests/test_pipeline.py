"""Pipeline graph: validation messages, topological execution, caching, map/localize/eval plumbing.

The stages here are test fixtures for the engine (the engine is what is under test); the real
stages arrive with their issues and are tested with their own modules.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from reloc.cli import app
from reloc.configs import config_path
from reloc.errors import PipelineError
from reloc.features.base import FeatureStore
from reloc.features.stages import XFeatFeatures
from reloc.io.lock import writing
from reloc.io.map_folder import FAVOR_FILE
from reloc.mapping.compact import CompactConfig, export_compact
from reloc.mapping.submaps import SPLIT_FILE
from reloc.pipeline.cache import DiskCache
from reloc.pipeline.engine import run_graph
from reloc.pipeline.progress import reporting, track
from reloc.pipeline.registry import PLANNED_STAGES, Stage, register_stage, unregister_stage
from reloc.pipeline.runner import load_map_pipeline
from reloc.pipeline.spec import apply_localization_overrides, apply_overrides, load_pipeline, read_yaml
from reloc.types import Frame, QueryResult

from .layouts import write_cambridge

CALLS: list[str] = []
RELOC = str(Path(sys.executable).with_name("reloc"))


@dataclass
class ScaleConfig:
    factor: float = 1.0
    label: str = "x"


class CountFrames(Stage):
    name = "test.count"
    inputs = {"frames": list[Frame]}
    outputs = {"count": int}

    def run(self, frames):
        CALLS.append(self.name)
        return {"count": len(frames)}


class Scale(Stage):
    name = "test.scale"
    Config = ScaleConfig
    inputs = {"value": int}
    outputs = {"value": int}

    def run(self, value):
        CALLS.append(self.name)
        return {"value": int(value * self.config.factor)}


class WriteCount(Stage):
    name = "test.write_count"
    inputs = {"value": int, "map_dir": Path}
    outputs = {}
    cacheable = False

    def run(self, value, map_dir):
        (map_dir / "count.json").write_text(json.dumps(value))
        return {}


@dataclass
class LabelConfig:
    label: str = "a"


class WriteLabel(Stage):
    """Cacheable, and writes its label into the map folder: what a cached node must not fake."""

    name = "test.write_label"
    Config = LabelConfig
    inputs = {"value": int, "map_dir": Path}
    outputs = {"label": str}

    def run(self, value, map_dir):
        CALLS.append(self.name)
        (map_dir / "label.txt").write_text(self.config.label)
        return {"label": self.config.label}


@dataclass
class FailAllConfig:
    verb: str = "localize"


class FailAll(Stage):
    """Reports every query failed, with the map's frame count in the reason."""

    name = "test.fail_all"
    Config = FailAllConfig
    inputs = {"frames": list[Frame], "map_dir": Path}
    outputs = {"results": list[QueryResult]}

    def run(self, frames, map_dir):
        count = json.loads((map_dir / "count.json").read_text())
        return {
            "results": [
                QueryResult(f.name, None, f"map of {count} frames cannot {self.config.verb}") for f in frames[1:]
            ]
        }


class AddOptional(Stage):
    """``value`` plus ``extra`` when a graph wires it (an optional input), else plus nothing."""

    name = "test.add_optional"
    inputs = {"value": int, "extra": int}
    optional_inputs = frozenset({"extra"})
    outputs = {"value": int}

    def run(self, value, extra):
        return {"value": value + (0 if extra is None else extra)}


TEST_STAGES = (CountFrames, Scale, WriteCount, WriteLabel, FailAll, AddOptional)


@pytest.fixture(autouse=True)
def test_stages():
    for stage in TEST_STAGES:
        register_stage(stage)
    CALLS.clear()
    yield
    for stage in TEST_STAGES:
        unregister_stage(stage.name)


def pipeline_dict(**mapping_nodes) -> dict:
    nodes = {
        "count": {"stage": "test.count", "inputs": {"frames": "dataset.frames"}},
        "double": {"stage": "test.scale", "with": {"factor": 2.0}, "inputs": {"value": "count.count"}},
        "write": {"stage": "test.write_count", "inputs": {"value": "double.value", "map_dir": "map.dir"}},
    }
    nodes.update(mapping_nodes)
    return {
        "name": "toy",
        "mapping": {"nodes": nodes},
        "localization": {
            "nodes": {"loc": {"stage": "test.fail_all", "inputs": {"frames": "queries.frames", "map_dir": "map.dir"}}},
            "output": "loc.results",
        },
    }


def write_yaml(tmp_path, content) -> Path:
    path = tmp_path / "pipe.yaml"
    path.write_text(yaml.safe_dump(content) if isinstance(content, dict) else content)
    return path


def cambridge_args(config: Path, scene: Path, out: Path, command: str = "eval") -> list[str]:
    """Arguments of `reloc eval` (or `map`) on a Cambridge-layout scene."""
    return [command, "--config", str(config), "--dataset", "cambridge", "--root", str(scene), "--out", str(out)]


def load_error(tmp_path, content) -> str:
    with pytest.raises(PipelineError) as info:
        load_pipeline(write_yaml(tmp_path, content))
    return str(info.value)


def test_valid_pipeline_order_and_edges(tmp_path):
    pipeline = load_pipeline(write_yaml(tmp_path, pipeline_dict()))
    assert pipeline.mapping.order == ["count", "double", "write"]
    assert pipeline.mapping.nodes["double"].config == ScaleConfig(factor=2.0)
    assert ("count.count", "double", "value") in pipeline.mapping.edges()


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda p: p["mapping"]["nodes"]["count"].update(stage="test.nope"),
            r"pipe.yaml: mapping: node 'count': unknown stage 'test.nope' \(known stages: .*test.count",
        ),
        (
            lambda p: p["mapping"]["nodes"]["count"].update(stage="test.planned"),
            r"node 'count': stage 'test.planned' is not implemented yet \(planned in docs/design.md \(a plan",
        ),
        (
            lambda p: p["mapping"]["nodes"]["double"]["with"].update(factr=3),
            r"node 'double': unknown config key 'with.factr' for stage 'test.scale' \(valid keys: factor, label\)",
        ),
        (
            lambda p: p["mapping"]["nodes"]["double"]["with"].update(factor="big"),
            r"node 'double': config key 'with.factor': .*big",
        ),
        (
            lambda p: p["mapping"]["nodes"]["double"].update(inputs={}),
            r"node 'double': missing input 'value' \(stage 'test.scale' needs value: int\)",
        ),
        (
            lambda p: p["mapping"]["nodes"]["double"]["inputs"].update(extra="count.count"),
            r"node 'double': stage 'test.scale' has no input 'extra' \(inputs: value\)",
        ),
        (
            lambda p: p["mapping"]["nodes"]["double"].update(inputs={"value": "dataset.frames"}),
            r"node 'double': input 'value' expects int but 'dataset.frames' is list\[Frame\]",
        ),
        (
            lambda p: p["mapping"]["nodes"]["double"].update(inputs={"value": "ghost.count"}),
            r"node 'double': input 'value' refers to unknown node 'ghost'",
        ),
        (
            lambda p: p["mapping"]["nodes"]["double"].update(inputs={"value": "count.total"}),
            r"node 'double': input 'value' refers to 'count.total' but node 'count' has no output 'total' "
            r"\(outputs: count\)",
        ),
        (
            lambda p: p["mapping"]["nodes"]["double"].update(inputs={"value": "count"}),
            r"node 'double': input 'value' must be written 'node.output', got 'count'",
        ),
        (
            lambda p: p["mapping"]["nodes"]["double"].update(stge="x"),
            r"node 'double': unknown key 'stge' in a node \(allowed: inputs, stage, with\)",
        ),
        (lambda p: p["mapping"]["nodes"]["double"].pop("stage"), r"node 'double': missing key 'stage'"),
        (lambda p: p["localization"].pop("output"), r"localization: missing key 'output'"),
        (
            lambda p: p["localization"].update(output="loc.nothing"),
            r"localization: key 'output': input 'output' refers to 'loc.nothing' but node 'loc' has no output "
            r"'nothing'",
        ),
        (lambda p: p.update(extra=1), r"pipe.yaml: unknown key 'extra' in the pipeline file"),
        (lambda p: p.pop("localization"), r"pipe.yaml: missing section 'localization'"),
        (
            lambda p: p["mapping"]["nodes"].update(dataset={"stage": "test.count"}),
            r"node 'dataset': the name is reserved for a source",
        ),
    ],
)
def test_validation_errors_name_node_and_key(tmp_path, monkeypatch, change, message):
    monkeypatch.setitem(PLANNED_STAGES, "test.planned", "docs/design.md (a plan)")
    content = pipeline_dict()
    change(content)
    assert re.search(message, load_error(tmp_path, content))


USER_STAGE = """
from dataclasses import dataclass
from reloc.pipeline.registry import Stage

@dataclass
class TripleConfig:
    offset: int = 0

class Triple(Stage):
    name = "user.triple"
    Config = TripleConfig
    inputs = {"value": int}
    outputs = {"value": int}

    def run(self, value):
        return {"value": 3 * value + self.config.offset}
"""


def test_a_stage_from_a_module_outside_reloc_plugs_in_by_its_import_path(tmp_path, monkeypatch):
    (tmp_path / "user_stages.py").write_text(USER_STAGE)
    monkeypatch.syspath_prepend(str(tmp_path))
    content = pipeline_dict(
        triple={"stage": "user_stages:Triple", "with": {"offset": 1}, "inputs": {"value": "double.value"}}
    )
    pipeline = load_pipeline(write_yaml(tmp_path, content))
    run = run_graph(pipeline.mapping, {"dataset.frames": frames(2), "map.dir": tmp_path})
    assert run.output("triple.value") == 13  # 2 frames, doubled, tripled, plus 1
    assert pipeline.resolved()["mapping"]["nodes"]["triple"]["stage"] == "user_stages:Triple"  # what map.yaml keeps
    content["mapping"]["nodes"]["triple"]["stage"] = "user_stages:Missing"
    assert "stage 'user_stages:Missing': module 'user_stages' has no Stage subclass 'Missing'" in load_error(
        tmp_path, content
    )
    content["mapping"]["nodes"]["triple"]["stage"] = "no_such_module:Triple"
    assert "stage 'no_such_module:Triple': cannot import module 'no_such_module'" in load_error(tmp_path, content)


def test_an_optional_input_may_be_left_unwired_but_is_checked_when_wired(tmp_path):
    content = pipeline_dict(add={"stage": "test.add_optional", "inputs": {"value": "double.value"}})
    sources = {"dataset.frames": frames(2), "map.dir": tmp_path}
    assert run_graph(load_pipeline(write_yaml(tmp_path, content)).mapping, sources).output("add.value") == 4
    content["mapping"]["nodes"]["add"]["inputs"]["extra"] = "count.count"
    assert run_graph(load_pipeline(write_yaml(tmp_path, content)).mapping, sources).output("add.value") == 6
    content["mapping"]["nodes"]["add"]["inputs"]["extra"] = "dataset.frames"
    assert "node 'add': input 'extra' expects int but 'dataset.frames' is list[Frame]" in load_error(tmp_path, content)


def test_wrong_type_at_output_and_cycle(tmp_path):
    content = pipeline_dict()
    content["localization"]["nodes"]["n"] = {"stage": "test.count", "inputs": {"frames": "queries.frames"}}
    content["localization"]["output"] = "n.count"
    assert "key 'output': 'n.count' is int, expected list[QueryResult]" in load_error(tmp_path, content)

    content = pipeline_dict(
        a={"stage": "test.scale", "inputs": {"value": "b.value"}},
        b={"stage": "test.scale", "inputs": {"value": "a.value"}},
    )
    message = load_error(tmp_path, content)
    assert (
        "mapping: cycle in the graph: node 'a' input 'value' <- 'b.value' -> node 'b' input 'value' <- 'a.value'"
        in message
    )


def test_yaml_loading_is_safe_and_errors_name_the_file(tmp_path):
    message = load_error(tmp_path, "mapping: !!python/object/apply:os.system ['echo owned']\n")
    assert "pipe.yaml: not valid (safe) YAML" in message
    assert "pipe.yaml: a pipeline file must be a mapping" in load_error(tmp_path, "- a\n- b\n")
    with pytest.raises(PipelineError, match="missing.yaml: pipeline file does not exist"):
        load_pipeline(tmp_path / "missing.yaml")


def frames(n: int) -> list[Frame]:
    from reloc.types import Camera, Pose

    camera = Camera.simple_pinhole(64, 48, 50)
    return [Frame(f"f{i}.png", Path(f"/nonexistent/f{i}.png"), camera, Pose.identity()) for i in range(n)]


def test_a_graph_runs_only_some_nodes_or_takes_given_outputs(tmp_path):
    """``only`` runs a prefix of the graph; ``given`` outputs stand for their node, which does not
    run; a node reading an output that was neither run nor given is refused by name."""
    pipeline = load_pipeline(write_yaml(tmp_path, pipeline_dict()))
    sources = {"dataset.frames": frames(3), "map.dir": tmp_path}
    CALLS.clear()
    run = run_graph(pipeline.mapping, sources, only=["count"])
    assert CALLS == ["test.count"] and run.output("count.count") == 3 and not (tmp_path / "count.json").exists()
    CALLS.clear()
    run = run_graph(pipeline.mapping, sources, given={"count.count": 5})
    assert CALLS == ["test.scale"] and run.output("double.value") == 10
    assert json.loads((tmp_path / "count.json").read_text()) == 10  # a node without outputs still runs
    with pytest.raises(PipelineError, match="node 'double' reads 'count.count', which this run neither ran nor"):
        run_graph(pipeline.mapping, sources, only=["double"])


def test_execution_timing_and_cache_invalidation(tmp_path):
    pipeline = load_pipeline(write_yaml(tmp_path, pipeline_dict()))
    cache = DiskCache(tmp_path / "cache")
    sources = {"dataset.frames": frames(3), "map.dir": tmp_path}
    run = run_graph(pipeline.mapping, sources, cache)
    assert run.output("double.value") == 6 and json.loads((tmp_path / "count.json").read_text()) == 6
    assert CALLS == ["test.count", "test.scale"] and set(run.seconds) == {"count", "double", "write"}

    CALLS.clear()
    run = run_graph(pipeline.mapping, sources, cache)
    assert CALLS == [] and run.cached == {"count", "double"} and run.output("double.value") == 6

    content = pipeline_dict()
    content["mapping"]["nodes"]["double"]["with"]["factor"] = 3.0
    changed = load_pipeline(write_yaml(tmp_path, content))
    CALLS.clear()
    run = run_graph(changed.mapping, sources, cache)
    assert CALLS == ["test.scale"] and run.output("double.value") == 9  # count reused, scale rerun

    CALLS.clear()
    run = run_graph(changed.mapping, {**sources, "dataset.frames": frames(4)}, cache)
    assert CALLS == ["test.count", "test.scale"] and run.output("double.value") == 12


def labelled_pipeline(label: str) -> dict:
    return pipeline_dict(
        label={
            "stage": "test.write_label",
            "with": {"label": label},
            "inputs": {"value": "count.count", "map_dir": "map.dir"},
        }
    )


def test_cached_node_is_not_reused_over_files_another_run_wrote(tmp_path):
    """Config A, then B, then A again into one map folder: the third run finds A's cache entry,
    but label.txt is B's, so the node runs again and the folder holds A's files."""
    cache, sources = DiskCache(tmp_path / "map" / "cache"), {"dataset.frames": frames(3), "map.dir": tmp_path / "map"}
    (tmp_path / "map").mkdir()
    graphs = {label: load_pipeline(write_yaml(tmp_path, labelled_pipeline(label))).mapping for label in "ab"}
    for label in "aba":
        CALLS.clear()
        run = run_graph(graphs[label], sources, cache, artifacts=tmp_path / "map")
        assert "label" not in run.cached and "test.write_label" in CALLS
        assert (tmp_path / "map" / "label.txt").read_text() == label and list(run.written["label"]) == ["label.txt"]
    run = run_graph(graphs["a"], sources, cache, artifacts=tmp_path / "map")
    assert "label" in run.cached and run.output("label.label") == "a"  # files unchanged: served from cache


def test_eval_a_b_a_leaves_the_map_of_a(tmp_path):
    scene = tmp_path / "scene"
    write_cambridge(scene, sizes=[(64, 48)] * 3)
    args = ["eval", "--dataset", "cambridge", "--root", str(scene), "--out", str(tmp_path / "run")]
    configs = {}
    for label in "ab":
        configs[label] = tmp_path / f"{label}.yaml"
        configs[label].write_text(yaml.safe_dump(labelled_pipeline(label)))
    for label in "aba":
        result = CliRunner().invoke(app, [*args, "--config", str(configs[label])])
        assert result.exit_code == 0, result.output
        record = yaml.safe_load((tmp_path / "run" / "map" / "map.yaml").read_text())
        assert record["pipeline"]["mapping"]["nodes"]["label"]["with"] == {"label": label}
        assert (tmp_path / "run" / "map" / "label.txt").read_text() == label
    files = {
        name: {name: {"bytes": 1, "sha256": hashlib.sha256(content).hexdigest()}}
        for name, content in (("count.json", b"2"), ("label.txt", b"a"))
    }
    assert record["artifacts"] == {
        "count.json": {"node": "write", "stage": "test.write_count", "version": "1", "files": files["count.json"]},
        "label.txt": {"node": "label", "stage": "test.write_label", "version": "1", "files": files["label.txt"]},
    }


def test_changed_stage_default_rebuilds_the_map_and_the_map_keeps_its_settings(tmp_path, monkeypatch):
    scene, config = map_toy_scene(tmp_path, 3)
    args = cambridge_args(config, scene, tmp_path / "run")
    assert CliRunner().invoke(app, args).exit_code == 0
    assert "reusing the map" in CliRunner().invoke(app, args).output

    @dataclass
    class NewDefaults:
        factor: float = 1.0
        label: str = "y"  # was "x", and the stage's version did not change

    monkeypatch.setattr(Scale, "Config", NewDefaults)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "reusing the map" not in result.output
    record = yaml.safe_load((tmp_path / "run" / "map" / "map.yaml").read_text())
    assert record["pipeline"]["mapping"]["nodes"]["double"]["with"] == {"factor": 2.0, "label": "y"}
    assert load_map_pipeline(tmp_path / "run" / "map").mapping.nodes["double"].config.label == "y"


def test_localization_overrides_of_a_recorded_pipeline_change_its_localization_graph_only():
    """What `reloc localize --set` and `reloc serve --set` apply to a map's recorded pipeline: a node
    of both graphs (features) means the localization one, the section may be named, the mapping
    graph is untouched; a mapping node, the mapping section and an unknown node are refused by name."""
    path = config_path("default")
    content = read_yaml(path)
    changed = apply_localization_overrides(
        path, content, ["features.resize_max=768", "localization.pnp.pnp.min_inliers=50"]
    )
    nodes = changed["localization"]["nodes"]
    assert nodes["features"]["with"]["resize_max"] == 768 and nodes["pnp"]["with"]["pnp"]["min_inliers"] == 50
    assert (
        changed["mapping"] == content["mapping"]
        and content["localization"]["nodes"]["features"]["with"]["resize_max"] == 1024
    )
    assert load_pipeline(path, changed, built=True).localization.nodes["features"].config.resize_max == 768
    for override in ("landmarks.neighbours=3", "mapping.features.resize_max=768"):
        with pytest.raises(PipelineError, match="a built map's localization settings can change, not its mapping"):
            apply_localization_overrides(path, content, [override])
    with pytest.raises(PipelineError, match="the map's localization graph has no node 'pnpp' \\(its nodes: features, "):
        apply_localization_overrides(path, content, ["pnpp.pnp.min_inliers=50"])


def test_a_map_recording_a_setting_this_reloc_dropped_says_to_rebuild_it(tmp_path):
    scene, config = map_toy_scene(tmp_path, 3)
    assert CliRunner().invoke(app, cambridge_args(config, scene, tmp_path / "run")).exit_code == 0
    path = tmp_path / "run" / "map" / "map.yaml"
    record = yaml.safe_load(path.read_text())
    record["pipeline"]["mapping"]["nodes"]["double"]["with"]["retired"] = 3
    path.write_text(yaml.safe_dump(record, sort_keys=False))
    with pytest.raises(PipelineError) as error:
        load_map_pipeline(tmp_path / "run" / "map")
    message = str(error.value)
    assert f"{path}: mapping: node 'double': unknown config key 'with.retired'" in message
    assert message.endswith("rebuild the map with 'reloc map' (or 'reloc eval' without --map)")
    with pytest.raises(PipelineError) as exported:
        export_compact(tmp_path / "run" / "map", tmp_path / "compact", CompactConfig())
    assert str(exported.value) == message


def test_query_features_of_another_extractor_than_the_map_are_refused(tmp_path):
    FeatureStore("sift", tmp_path / "features.h5")
    stage = XFeatFeatures(XFeatFeatures.Config(save=False))
    with pytest.raises(
        PipelineError,
        match=r"features.h5: the map's features are sift, but the localization graph extracts "
        r"xfeat \(stage features.xfeat\)",
    ):
        stage.run(frames(1), tmp_path)


def test_eval_builds_reuses_map_and_reports_failures(tmp_path, monkeypatch):
    scene = tmp_path / "scene"
    write_cambridge(scene, sizes=[(64, 48)] * 5)
    config = write_yaml(tmp_path, pipeline_dict())
    args = cambridge_args(config, scene, tmp_path / "run")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "map" / "count.json").read_text()) == 2  # 1 mapping frame doubled
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_queries"] == 4 and metrics["n_failed"] == 4 and metrics["map_bytes"] > 0
    results = (tmp_path / "run" / "results.txt").read_text()
    assert "# FAILED seq1/frame00001.png: no result from the pipeline" in results
    assert "# FAILED seq1/frame00004.png: map of 2 frames cannot localize" in results
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Worst 4 queries" in report and "](plots/cumulative_errors.png)" in report
    assert "matches" not in report  # a map without landmarks has no matches to draw

    content = pipeline_dict()
    content["localization"]["nodes"]["loc"]["with"] = {"verb": "place"}
    write_yaml(tmp_path, content)
    result = CliRunner().invoke(app, args)
    assert "reusing the map" in result.output  # only the localization graph changed
    assert "map of 2 frames cannot place" in (tmp_path / "run" / "results.txt").read_text()
    content = pipeline_dict()
    content["mapping"]["nodes"]["double"]["with"]["factor"] = 3.0
    write_yaml(tmp_path, content)
    result = CliRunner().invoke(app, args)
    assert "reusing the map" not in result.output
    assert json.loads((tmp_path / "run" / "map" / "count.json").read_text()) == 3
    assert "reusing the map" in CliRunner().invoke(app, args).output
    monkeypatch.setattr(Scale, "version", "2")  # a stage whose outputs changed: maps built before are rebuilt
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "reusing the map" not in result.output
    assert "count (cached)" in result.output and "double (cached)" not in result.output


def map_toy_scene(tmp_path, frames: int) -> tuple[Path, Path]:
    """A Cambridge-layout scene of ``frames`` tiny images mapped by the toy pipeline into
    ``tmp_path / "map"``; returns the scene folder and the pipeline file."""
    scene = tmp_path / "scene"
    write_cambridge(scene, sizes=[(64, 48)] * frames)
    config = write_yaml(tmp_path, pipeline_dict())
    result = CliRunner().invoke(
        app,
        cambridge_args(config, scene, tmp_path / "map", "map"),
    )
    assert result.exit_code == 0, result.output
    return scene, config


def test_eval_against_a_given_map_runs_only_the_localization_graph(tmp_path):
    scene, config = map_toy_scene(tmp_path, 5)
    content = pipeline_dict()
    content["mapping"]["nodes"]["double"]["with"]["factor"] = 5.0  # would write count 5 if mapping ran
    content["localization"]["nodes"]["loc"]["with"] = {"verb": "place"}
    write_yaml(tmp_path, content)
    args = cambridge_args(config, scene, tmp_path / "run")
    result = CliRunner().invoke(app, [*args, "--map", str(tmp_path / "map")])
    assert result.exit_code == 0, result.output
    assert "localizing against the given map" in result.output and not (tmp_path / "run" / "map").exists()
    assert json.loads((tmp_path / "map" / "count.json").read_text()) == 2
    assert "map of 2 frames cannot place" in (tmp_path / "run" / "results.txt").read_text()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["map_bytes"] > 0
    result = CliRunner().invoke(app, [*args, "--map", str(scene)])
    assert result.exit_code == 2 and "not a reloc map folder (no map.yaml" in result.output


def test_a_map_without_an_artifact_the_localizer_reads_is_refused_before_anything_runs(tmp_path, monkeypatch):
    scene, _ = map_toy_scene(tmp_path, 3)
    monkeypatch.setattr(FailAll, "needs", (FAVOR_FILE,))
    args = ["localize", str(tmp_path / "map"), str(scene / "seq1" / "frame00001.png"), "--focal", "50"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "r.txt")])
    assert result.exit_code == 2 and not (tmp_path / "r.txt").exists()
    assert (
        f"{tmp_path / 'map' / 'favor.pt'}: missing, and localization node 'loc' reads it; it is built by a mapping "
        "node with stage favor.train (as in configs/favor-aliked.yaml, configs/favor-hashgrid.yaml, "
        "configs/favor-refine.yaml, configs/favor-seeded.yaml, configs/favor.yaml)"
    ) in result.output
    (tmp_path / "map" / "favor.pt").write_bytes(b"fields")  # present, but written in an older format
    record = yaml.safe_load((tmp_path / "map" / "map.yaml").read_text())
    record["artifacts"]["favor.pt"] = {"node": "fields", "stage": "favor.train", "version": "1", "format": 0}
    (tmp_path / "map" / "map.yaml").write_text(yaml.safe_dump(record))
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "r.txt")])
    assert result.exit_code == 2 and "favor.pt: format 0, but this reloc reads format 2" in result.output


def test_track_reports_each_loop_to_the_front_end_only_inside_reporting():
    started, advanced = [], []

    def start_task(description, total):
        started.append((description, total))
        return lambda: advanced.append(description)

    assert list(track([1, 2, 3], "outside")) == [1, 2, 3] and not started
    with reporting(start_task):
        assert list(track(range(4), "steps")) == [0, 1, 2, 3]
        assert list(track([], "nothing")) == []
    assert started == [("steps", 4), ("nothing", 0)] and advanced == ["steps"] * 4
    assert list(track("ab", "after")) == ["a", "b"] and len(started) == 2


def test_localize_command_on_image_folder(tmp_path):
    scene, _ = map_toy_scene(tmp_path, 3)
    result = CliRunner().invoke(
        app,
        [
            "localize",
            str(tmp_path / "map"),
            str(scene / "seq1" / "frame00001.png"),
            str(scene / "seq1" / "frame00002.png"),
            "--focal",
            "50",
            "--out",
            str(tmp_path / "r.txt"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.txt").read_text().count("# FAILED") == 2
    result = CliRunner().invoke(
        app, ["localize", str(tmp_path), str(scene / "seq1"), "--focal", "1", "--out", str(tmp_path / "x.txt")]
    )
    assert result.exit_code == 2 and "not a reloc map folder (no map.yaml" in result.output


def test_graph_command_prints_nodes_edges_and_planned_stages(tmp_path, monkeypatch):
    monkeypatch.setitem(PLANNED_STAGES, "test.planned", "docs/design.md (a plan)")
    result = CliRunner().invoke(app, ["graph", str(write_yaml(tmp_path, pipeline_dict()))])
    assert result.exit_code == 0, result.output
    assert (
        "count → double → write" in result.output
        and "value ← count.count" in result.output
        and "valid" in result.output
    )
    content = pipeline_dict()
    content["mapping"]["nodes"]["count"]["stage"] = "test.planned"
    result = CliRunner().invoke(app, ["graph", str(write_yaml(tmp_path, content))])
    assert result.exit_code == 0 and "not implemented yet:" in result.output and "test.planned" in result.output
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--config",
            str(tmp_path / "pipe.yaml"),
            "--dataset",
            "7scenes",
            "--root",
            str(tmp_path),
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 2 and "stage 'test.planned' is not implemented yet" in result.output


@pytest.mark.parametrize("config", sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")))
def test_shipped_configs_are_valid(config):
    pipeline = load_pipeline(config)
    assert pipeline.localization.output is not None


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_mapping_image_stops_mapping_by_name_and_a_truncated_query_fails_alone(tmp_path):
    scene = tmp_path / "scene"
    write_cambridge(scene, sizes=[(64, 48)] * 4)
    config = write_yaml(tmp_path, pipeline_dict())
    args = cambridge_args(config, scene, tmp_path / "run")
    truncate(scene / "seq1" / "frame00000.png")  # the mapping image
    result = CliRunner().invoke(app, args)
    assert (
        result.exit_code == 2 and f"{scene / 'seq1' / 'frame00000.png'}: truncated PNG (no IEND chunk)" in result.output
    )
    assert not (tmp_path / "run" / "map" / "map.yaml").exists() and CALLS == []
    write_cambridge(tmp_path / "fresh", sizes=[(64, 48)] * 4)
    (scene / "seq1" / "frame00000.png").write_bytes((tmp_path / "fresh" / "seq1" / "frame00000.png").read_bytes())
    truncate(scene / "seq1" / "frame00002.png")  # a query
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "run" / "results.txt").read_text()
    assert f"# FAILED seq1/frame00002.png: {scene / 'seq1' / 'frame00002.png'}: truncated PNG (no IEND chunk)" in lines
    assert "# FAILED seq1/frame00003.png: map of 2 frames cannot localize" in lines  # the others ran in the graph


@pytest.mark.parametrize(
    "content, message",
    [
        ("pipeline: !!python/object/apply:os.system ['echo owned']\n", r"map.yaml: not valid \(safe\) YAML"),
        ("- a\n- b\n", r"map.yaml: not a map record"),
    ],
)
def test_a_damaged_map_record_is_one_clear_line(tmp_path, content, message):
    scene, _ = map_toy_scene(tmp_path, 3)
    (tmp_path / "map" / "map.yaml").write_text(content)
    result = CliRunner().invoke(
        app, ["localize", str(tmp_path / "map"), str(scene / "seq1"), "--focal", "50", "--out", str(tmp_path / "r.txt")]
    )
    assert result.exit_code == 2 and re.search(message, result.output) and "Traceback" not in result.output


def test_outputs_of_the_wrong_kind_are_refused_before_any_work(tmp_path):
    scene, _ = map_toy_scene(tmp_path, 3)
    (tmp_path / "taken").write_text("x")
    localize = ["localize", str(tmp_path / "map"), str(scene / "seq1"), "--focal", "50", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, localize, env={"COLUMNS": "400"})
    assert result.exit_code == 2 and "is a directory" in result.output
    result = CliRunner().invoke(
        app,
        cambridge_args(tmp_path / "pipe.yaml", scene, tmp_path / "taken", "map"),
        env={"COLUMNS": "400"},
    )
    assert result.exit_code == 2 and "is a file" in result.output


def test_an_empty_test_split_stops_eval_before_mapping(tmp_path):
    scene = tmp_path / "scene"
    write_cambridge(scene, sizes=[(64, 48)] * 3)
    (scene / "dataset_test.txt").write_text(
        "Visual Landmark Dataset V1\nImageFile, Camera Position [X Y Z W P Q R]\n\n"
    )
    args = cambridge_args(write_yaml(tmp_path, pipeline_dict()), scene, tmp_path / "run")
    result = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert result.exit_code == 2 and f"{scene}: the test split has no queries; nothing to evaluate" in result.output
    assert CALLS == [] and not (tmp_path / "run" / "map").exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("mapping.retrieval.clusters=0", r"node 'retrieval': config key 'clusters' must be >= 1, got 0"),
        ("localization.pnp.pnp.max_error_px=-1", r"node 'pnp': config key 'max_error_px' must be > 0.0, got -1"),
        ("localization.pnp.pnp.min_inliers=-3", r"node 'pnp': config key 'min_inliers' must be >= 1, got -3"),
        ("localization.pnp.matcher.ratio=7.5", r"node 'pnp': config key 'ratio' must be > 0.0 and <= 1.0, got 7.5"),
        ("mapping.features.max_keypoints=0", r"node 'features': config key 'max_keypoints' must be >= 1, got 0"),
        ("localization.retrieval.top_k=0", r"node 'retrieval': config key 'top_k' must be >= 1, got 0"),
    ],
)
def test_config_values_out_of_range_are_refused_when_the_graph_loads(override, message):
    """`reloc graph` used to call these valid; they failed with a traceback after mapping had started."""
    with pytest.raises(PipelineError, match=message):
        load_pipeline("default", overrides=[override])


def test_a_second_run_on_a_folder_being_written_is_refused(tmp_path):
    scene = tmp_path / "scene"
    write_cambridge(scene, sizes=[(64, 48)] * 3)
    args = cambridge_args(write_yaml(tmp_path, pipeline_dict()), scene, tmp_path / "run")
    with writing(tmp_path / "run"):  # another run holds the folder
        result = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
        assert result.exit_code == 2 and f"{tmp_path / 'run'}: another reloc run (pid " in result.output
        assert "is writing this folder; wait for it to end or write elsewhere" in result.output
        assert CALLS == [] and not (tmp_path / "run" / "map").exists()
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and (tmp_path / "run" / "map" / "map.yaml").is_file()


def test_an_interrupted_run_says_what_was_kept_and_resumes(tmp_path, monkeypatch):
    scene = tmp_path / "scene"
    write_cambridge(scene, sizes=[(64, 48)] * 3)
    args = cambridge_args(write_yaml(tmp_path, pipeline_dict()), scene, tmp_path / "run")

    def interrupt(self, value, map_dir):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(WriteCount, "run", interrupt)  # Ctrl-C in the last mapping node
        result = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert (
        result.exit_code == 130
        and "interrupted:" in result.output
        and "run the same command again to resume" in result.output
    )
    assert not (tmp_path / "run" / "map" / "map.yaml").exists() and CALLS == ["test.count", "test.scale"]
    CALLS.clear()
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and CALLS == [] and "count (cached)" in result.output  # finished nodes reused
    assert (tmp_path / "run" / "map" / "map.yaml").is_file()


def test_check_finds_a_truncated_or_changed_map_file(tmp_path):
    map_toy_scene(tmp_path, 3)
    check = ["check", str(tmp_path / "map")]
    result = CliRunner().invoke(app, check, env={"COLUMNS": "400"})
    assert result.exit_code == 0 and "is as it was built" in result.output and "test.write_count" in result.output
    (tmp_path / "map" / "count.json").write_text("")  # truncated
    result = CliRunner().invoke(app, check, env={"COLUMNS": "400"})
    assert (
        result.exit_code == 2 and "count.json: 0 bytes where the map recorded 1 (truncated or changed" in result.output
    )
    (tmp_path / "map" / "count.json").write_text("7")  # same size, other content
    result = CliRunner().invoke(app, check, env={"COLUMNS": "400"})
    assert result.exit_code == 2 and "count.json: its content differs from the map's record" in result.output


def test_localize_refuses_a_needed_artifact_of_another_size_before_running(tmp_path, monkeypatch):
    scene, _ = map_toy_scene(tmp_path, 3)
    monkeypatch.setattr(FailAll, "needs", (FAVOR_FILE,))
    (tmp_path / "map" / "favor.pt").write_bytes(b"half")
    record = yaml.safe_load((tmp_path / "map" / "map.yaml").read_text())
    record["artifacts"]["favor.pt"] = {"format": 2, "files": {"favor.pt": {"bytes": 8, "sha256": "0"}}}
    (tmp_path / "map" / "map.yaml").write_text(yaml.safe_dump(record))
    args = ["localize", str(tmp_path / "map"), str(scene / "seq1"), "--focal", "50", "--out", str(tmp_path / "r.txt")]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert result.exit_code == 2 and "favor.pt: 4 bytes where the map recorded 8" in result.output
    assert not (tmp_path / "r.txt").exists()


SLOW_STAGES = """
import time
from dataclasses import dataclass
from pathlib import Path

from reloc.pipeline.registry import Stage
from reloc.types import Frame, QueryResult


@dataclass
class SlowConfig:
    seconds: float = 3.0


class SlowWrite(Stage):
    name = "user.slow_write"
    Config = SlowConfig
    inputs = {"frames": list[Frame], "map_dir": Path}
    outputs = {"count": int}

    def run(self, frames, map_dir):
        (map_dir / "part.txt").write_text("half written")
        time.sleep(self.config.seconds)
        (map_dir / "part.txt").write_text(" ".join(frame.name for frame in frames))
        return {"count": len(frames)}


class NoPose(Stage):
    name = "user.no_pose"
    inputs = {"frames": list[Frame]}
    outputs = {"results": list[QueryResult]}

    def run(self, frames):
        return {"results": [QueryResult(frame.name, None, "no pose") for frame in frames]}
"""


def test_two_runs_on_one_folder_one_is_refused_and_the_map_equals_a_single_runs(tmp_path):
    """Two `reloc map` processes started together on one folder: one writes, the other is refused
    at once; the finished map's files equal those of a run alone, byte for byte."""
    (tmp_path / "slow_stages.py").write_text(SLOW_STAGES)
    scene = tmp_path / "scene"
    write_cambridge(scene, sizes=[(64, 48)] * 3)
    config = write_yaml(
        tmp_path,
        {
            "mapping": {
                "nodes": {
                    "slow": {
                        "stage": "slow_stages:SlowWrite",
                        "inputs": {"frames": "dataset.frames", "map_dir": "map.dir"},
                    }
                }
            },
            "localization": {
                "nodes": {"loc": {"stage": "slow_stages:NoPose", "inputs": {"frames": "queries.frames"}}},
                "output": "loc.results",
            },
        },
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "COLUMNS": "400"}

    def start(out: Path) -> subprocess.Popen:
        command = [RELOC, *cambridge_args(config, scene, out, "map")]
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    runs = [start(tmp_path / "shared"), start(tmp_path / "shared")]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    codes = sorted(run.returncode for run in runs)
    assert codes == [0, 2], outputs
    assert any("another reloc run (pid" in output and "is writing this folder" in output for output in outputs)
    alone = start(tmp_path / "alone")
    assert alone.wait(timeout=120) == 0
    assert (tmp_path / "shared" / "part.txt").read_bytes() == (tmp_path / "alone" / "part.txt").read_bytes()
    assert (tmp_path / "shared" / "map.yaml").is_file()


def test_a_mapping_node_whose_artifact_nothing_reads_is_refused(tmp_path):
    """FaVoR's patches in a pipeline that never trains FaVoR: the graph is refused naming the node
    and the file (the default config built 145 MB of them for nothing on the demo scene)."""
    content = yaml.safe_load(config_path("default").read_text())
    content["mapping"]["nodes"]["patches"] = {
        "stage": "mapping.patches",
        "inputs": {"keyframes": "landmarks.keyframes", "map_dir": "map.dir"},
    }
    with pytest.raises(PipelineError, match=r"mapping node 'patches' \(mapping.patches\) builds patches.h5, which no"):
        load_pipeline(tmp_path / "with-patches.yaml", content)
    assert "patches" in load_pipeline("favor").mapping.nodes  # read there by favor.train
    assert "patches" in load_pipeline(tmp_path / "map.yaml", content, built=True).mapping.nodes  # an older map loads


def test_mapping_keep_names_map_artifacts_and_is_set_from_the_command_line(tmp_path):
    content = yaml.safe_load(config_path("default").read_text())
    pipeline = load_pipeline(tmp_path / "p.yaml", apply_overrides(tmp_path, content, ["mapping.keep=[features.h5]"]))
    assert pipeline.mapping.keep == ("features.h5",) and pipeline.resolved()["mapping"]["keep"] == ["features.h5"]
    content["mapping"]["keep"] = ["features.hdf5"]
    with pytest.raises(PipelineError, match="key 'keep': 'features.hdf5' is not a map artifact"):
        load_pipeline(tmp_path / "p.yaml", content)


def test_export_asks_for_compact_and_a_new_folder(tmp_path):
    map_toy_scene(tmp_path, 3)
    result = CliRunner().invoke(app, ["export", str(tmp_path / "map"), str(tmp_path / "out")])
    assert result.exit_code == 2 and "only --compact export exists" in result.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    result = CliRunner().invoke(app, ["export", str(tmp_path / "map"), str(tmp_path / "full"), "--compact"])
    assert result.exit_code == 2 and f"{tmp_path / 'full'}: not empty; export into a new folder" in result.output
    result = CliRunner().invoke(
        app, ["export", str(tmp_path / "map"), str(tmp_path / "out"), "--compact", "--descriptors", "pq4"]
    )
    assert result.exit_code == 2 and "'pq4' is not a descriptor codec" in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


def test_compact_export_names_a_record_without_pipeline_and_refuses_a_split_map(tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "map.yaml").write_text("reloc_version: 0.1\n")
    with pytest.raises(PipelineError, match=r"bare/map.yaml: has no 'pipeline' entry; rebuild the map"):
        export_compact(bare, tmp_path / "out-bare", CompactConfig())
    split = tmp_path / "split"
    split.mkdir()
    (split / SPLIT_FILE).write_text("submaps: []\n")
    with pytest.raises(PipelineError, match=r"split: a split map \('reloc split'\); export each of its submap folders"):
        export_compact(split, tmp_path / "out-split", CompactConfig())
    assert not (tmp_path / "out-bare").exists() and not (tmp_path / "out-split").exists()
