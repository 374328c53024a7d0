"""Localization spread over threads and Ray workers gives byte for byte the results of one
process, mapping spread over them writes the same map files, a worker that dies loses no query,
and a worker reads an unchanged map file once."""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import os
import sys
import time
from pathlib import Path

import pytest
import yaml

from reloc import api
from reloc.datasets import load_dataset
from reloc.errors import PipelineError
from reloc.eval.batch import SUMMARY_CSV, SUMMARY_MD, evaluate_all, plan_runs
from reloc.io.map_folder import read_map_record
from reloc.io.memo import read_once
from reloc.io.results import write_results
from reloc.pipeline.executors import ExecutorConfig, deal, item_mapper, run_localization
from reloc.pipeline.items import map_items, spreading
from reloc.pipeline.progress import reporting
from reloc.pipeline.runner import load_map_pipeline, localize
from reloc.pipeline.spec import load_pipeline

from .scenes import mapped_room

GATE_STAGE = '''
import os
from dataclasses import dataclass
from reloc.pipeline.registry import Stage
from reloc.types import QueryResult

@dataclass
class GateConfig:
    fatal_query: str = ""

class Gate(Stage):
    """Passes the results on; the process dies (as a killed worker would) on ``fatal_query``."""
    name = "test.gate"
    Config = GateConfig
    inputs = {"results": list[QueryResult]}
    outputs = {"results": list[QueryResult]}
    cacheable = False

    def run(self, results):
        if any(result.name == self.config.fatal_query for result in results):
            os._exit(1)
        return {"results": results}
'''


def test_queries_are_dealt_to_the_workers_in_turn():
    assert deal(list(range(7)), 3) == [[0, 3, 6], [1, 4], [2, 5]]
    assert deal([1, 2], 5) == [[1], [2]]
    assert deal([], 4) == [[]]


def test_an_unknown_executor_is_refused_by_name():
    with pytest.raises(PipelineError, match="unknown executor 'dask'; choose one of local, threads, ray"):
        run_localization(None, Path("."), [], ExecutorConfig("dask"))


@pytest.fixture(scope="module")
def mapped_scene(module_folder) -> tuple[Path, Path]:
    """A synthetic room (seed 8, 40 mapping and 6 query frames) and its default map."""
    return mapped_room(module_folder / "room", query_frames=6)


@pytest.fixture(scope="module")
def ray_cluster(module_folder):
    """A local Ray with 2 CPUs whose workers can import the test's stage module."""
    ray = pytest.importorskip("ray")
    modules = module_folder / "modules"
    modules.mkdir()
    (modules / "reloc_test_gate.py").write_text(GATE_STAGE)
    sys.path.insert(0, str(modules))
    python_path = os.pathsep.join(filter(None, [str(modules), os.environ.get("PYTHONPATH")]))
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": python_path}},
    )
    yield ray
    ray.shutdown()
    sys.path.remove(str(modules))


def results_bytes(path: Path, results) -> bytes:
    write_results(path, results)
    return path.read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["threads", "ray"])
def test_spread_localization_writes_the_same_results_file_as_one_process(tmp_path, request, mapped_scene, kind):
    if kind == "ray":
        request.getfixturevalue("ray_cluster")
    scene, map_dir = mapped_scene
    queries = load_dataset("7scenes", scene).frames("test")
    local = localize(map_dir, queries)
    spread = localize(map_dir, queries, executor=ExecutorConfig(kind, workers=2))
    assert sum(result.pose is not None for result in local) >= 4
    assert results_bytes(tmp_path / "spread.txt", spread) == results_bytes(tmp_path / "local.txt", local)
    assert all(set(result.timings) == {"features", "retrieval", "matching", "pnp"} for result in spread if result.pose)


@pytest.mark.slow
def test_a_worker_that_dies_loses_no_query(mapped_scene, ray_cluster):
    """The chunk whose worker dies (twice: Ray retries it once) comes back as failed results
    naming the failure; the other chunk is localized; every query has its result, in order."""
    scene, map_dir = mapped_scene
    queries = load_dataset("7scenes", scene).frames("test")
    content = load_map_pipeline(map_dir).resolved()
    fatal = queries[0].name
    content["localization"]["nodes"]["gate"] = {
        "stage": "reloc_test_gate:Gate",
        "with": {"fatal_query": fatal},
        "inputs": {"results": "pnp.results"},
    }
    content["localization"]["output"] = "gate.results"
    pipeline = load_pipeline(map_dir / "map.yaml", content, built=True)
    executor = ExecutorConfig("ray", workers=2, chunks_per_worker=1)
    results = localize(map_dir, queries, pipeline=pipeline, executor=executor)
    assert [result.name for result in results] == [frame.name for frame in queries]
    first_chunk = {frame.name for frame in deal(queries, 2)[0]}  # holds the fatal query
    for result in results:
        if result.name in first_chunk:
            assert result.pose is None and result.reason.startswith("ray worker failed"), result.reason
    assert sum(result.pose is not None for result in results if result.name not in first_chunk) >= 2


def squares_slowly(delays: dict[int, float], chunk: list[int]) -> list[int]:
    """Squares of ``chunk``, after the delay of its first item (later chunks finish first)."""
    time.sleep(delays.get(chunk[0], 0.0))
    return [item * item for item in chunk]


@pytest.mark.parametrize("kind", ["local", "threads"])
def test_per_item_work_comes_back_in_item_order_whatever_finishes_first(kind):
    items = list(range(23))
    work = functools.partial(squares_slowly, {0: 0.2, 3: 0.1})
    mapper = item_mapper(ExecutorConfig(kind, workers=3))
    with spreading(mapper) if mapper else contextlib.nullcontext():
        assert list(map_items(work, items, "squares", chunk_size=3)) == [item * item for item in items]


@pytest.mark.parametrize("kind", ["local", "threads"])
def test_per_item_progress_completes_when_the_stage_stops_at_its_last_item(kind):
    """A stage zips its items with their results, so it never asks the mapper past the last one;
    the progress task must still reach its total (it stayed at 299/300 in ``make demo``)."""
    advanced = []
    items = list(range(7))
    mapper = item_mapper(ExecutorConfig(kind, workers=2))
    with reporting(lambda description, total: lambda: advanced.append(total)):
        with spreading(mapper) if mapper else contextlib.nullcontext():
            pairs = list(zip(items, map_items(functools.partial(squares_slowly, {}), items, "squares", chunk_size=2)))
    assert pairs == [(item, item * item) for item in items]
    assert advanced == [4] * 4


def test_per_item_work_that_miscounts_its_results_is_refused():
    with pytest.raises(PipelineError, match="squares: the work returned 0 results for 2 items"):
        list(map_items(lambda chunk: [], [1, 2], "squares", chunk_size=2))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["threads", "ray"])
def test_spread_mapping_writes_the_same_map_files_as_one_process(tmp_path, request, mapped_scene, kind):
    """Feature extraction runs on the workers; every file of the map (landmarks, retrieval
    index, COLMAP model) has the SHA-256 of the map built in one process."""
    if kind == "ray":
        request.getfixturevalue("ray_cluster")
    scene, map_dir = mapped_scene
    api.map("default", "7scenes", scene, tmp_path / "map", executor=ExecutorConfig(kind, workers=2))
    spread, local = (read_map_record(folder)["artifacts"] for folder in (tmp_path / "map", map_dir))
    assert set(local) >= {"landmarks.h5", "global.h5", "sfm"}
    assert spread == local


def test_a_map_file_is_read_once_while_it_is_unchanged_and_again_when_rebuilt(tmp_path):
    path = tmp_path / "index.txt"
    path.write_text("first")
    reads = []

    def reader(file: Path) -> list[str]:
        reads.append(file)
        return [file.read_text()]

    first = read_once(reader, path)
    assert read_once(reader, path) is first and len(reads) == 1
    path.write_text("second, longer")  # a rebuilt map: another size and time
    assert read_once(reader, path) == ["second, longer"] and len(reads) == 2
    with pytest.raises(FileNotFoundError):
        read_once(reader, tmp_path / "missing.txt")  # the reader's own error names the file


@pytest.mark.slow
def test_scenes_times_configs_run_as_ray_tasks_into_one_table(tmp_path, mapped_scene, ray_cluster):
    """Two configs on a scene and on a missing folder: four runs as Ray tasks, one table; the
    scene's rows carry the metrics of their own run folders, the missing scene's rows its error."""
    scene, _ = mapped_scene
    fewer_keyframes = tmp_path / "top10.yaml"
    content = yaml.safe_load((Path(api.__file__).parent / "configs" / "default.yaml").read_text())
    content["localization"]["nodes"]["retrieval"]["with"]["top_k"] = 10
    fewer_keyframes.write_text(yaml.safe_dump(content))
    runs = plan_runs(["default", str(fewer_keyframes)], "7scenes", [scene, tmp_path / "missing"])
    assert [run.name for run in runs] == ["scene-default", "scene-top10", "missing-default", "missing-top10"]
    summaries = evaluate_all(runs, tmp_path / "runs", ExecutorConfig("ray", workers=2))
    with open(tmp_path / "runs" / SUMMARY_CSV) as file:
        rows = list(csv.DictReader(file))
    assert [row["run"] for row in rows] == [run.name for run in runs]
    for row, summary in zip(rows[:2], summaries):
        metrics = json.loads((tmp_path / "runs" / row["run"] / "metrics.json").read_text())
        assert summary.metrics == metrics and row["error"] == ""
        assert row["queries"] == "6" and float(row["median t (cm)"]) == pytest.approx(metrics["median_t_cm"], abs=0.01)
    for row in rows[2:]:
        assert "missing" in row["error"] and row["queries"] == ""
    assert (tmp_path / "runs" / SUMMARY_MD).read_text().count("\n") == 2 + len(runs)
