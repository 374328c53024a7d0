"""The default pipeline end to end: a synthetic scene with exact ground truth, real Strecha and 7-Scenes
data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from reloc.cli import app
from reloc.datasets import load_dataset
from reloc.datasets.synthetic.generate import SynthConfig, generate
from reloc.geometry.errors import pose_error
from reloc.io.results import read_results

from .overlap import mapped_share

pytestmark = pytest.mark.slow


def test_relocalize_synthetic_scene_end_to_end(tmp_path, monkeypatch):
    """eval writes the run folder with per-stage timings and localizes every query that the
    mapping images saw to within 1 cm and 0.5 degrees (measured: at most 0.17 cm, 0.05 degrees);
    the query that looks where no mapping camera looked is reported failed, never given a pose.
    Mapping images localize to their own ground-truth pose through `reloc localize`; an image of
    noise is reported failed."""
    scene = tmp_path / "scene"
    generate(
        SynthConfig("7scenes", seed=8, mapping_frames=40, query_frames=4, mapping_sequences=2, query_sequences=1), scene
    )
    config = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
    result = CliRunner().invoke(
        app,
        ["eval", "--config", str(config), "--dataset", "7scenes", "--root", str(scene), "--out", str(tmp_path / "run")],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_queries"] == 4 and set(metrics["timing_s"]) == {"features", "retrieval", "matching", "pnp"}
    assert (tmp_path / "run" / "map" / "sfm" / "points3D.bin").is_file() and metrics["map_bytes"] > 0
    shares = mapped_share(scene)
    assert sorted(share > 0.25 for share in shares.values()) == [
        False,
        True,
        True,
        True,
    ]  # one query sees (almost) nothing mapped
    truth = load_dataset("7scenes", scene).ground_truth()
    for name, outcome in read_results(tmp_path / "run" / "results.txt").items():
        if shares[name] < 0.05:
            assert outcome.pose is None and outcome.reason.startswith(("too few", "PnP")), (name, outcome.reason)
        else:
            assert outcome.pose is not None, (name, outcome.reason)
            dt, dr = pose_error(outcome.pose, truth[name].pose)
            assert dt < 0.01 and dr < 0.5, (name, dt, dr)
    xfeat = Path(__file__).resolve().parents[1] / "configs" / "xfeat.yaml"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--config",
            str(xfeat),
            "--dataset",
            "7scenes",
            "--root",
            str(scene),
            "--out",
            str(tmp_path / "xfeat-run"),
            "--map",
            str(tmp_path / "run" / "map"),
        ],
    )
    assert (
        result.exit_code == 2
        and "the map's features are sift, but the localization graph extracts xfeat" in result.output
    )

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(
        tmp_path / "noise.png"
    )
    mapping = {f.name: f for f in load_dataset("7scenes", scene).frames("train")}
    names = ["seq-01/frame-000005.color.png", "seq-02/frame-000012.color.png"]
    monkeypatch.chdir(tmp_path)  # query names are paths relative to the working folder
    result = CliRunner().invoke(
        app,
        [
            "localize",
            str(tmp_path / "run" / "map"),
            str(tmp_path / "noise.png"),
            *(str(scene / name) for name in names),
            "--focal",
            "585",
            "--out",
            str(tmp_path / "r.txt"),
        ],
    )
    assert result.exit_code == 0, result.output
    results = read_results(tmp_path / "r.txt")
    assert results["noise.png"].pose is None and results["noise.png"].reason.startswith(("too few", "PnP"))
    for name in names:
        dt, dr = pose_error(results[f"scene/{name}"].pose, mapping[name].pose)
        assert dt < 0.02 and dr < 0.5, (name, dt, dr)


def test_default_pipeline_on_real_strecha_fountain(tmp_path, strecha_fountain):
    """Real images with LIDAR-grade ground truth: every query localized to well under a cm."""
    config = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--config",
            str(config),
            "--dataset",
            "cambridge",
            "--root",
            str(strecha_fountain),
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_failed"] == 0 and metrics["median_t_cm"] < 0.5 and metrics["median_r_deg"] < 0.1


def test_eval_runs_on_the_real_7scenes_sample(tmp_path, sevenscenes_stairs):
    """Its sequences are three frames at most 1 cm apart: nothing can be triangulated, so every
    query must come back failed with its reason, never with a pose."""
    config = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--config",
            str(config),
            "--dataset",
            "7scenes",
            "--root",
            str(sevenscenes_stairs),
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    queries = load_dataset("7scenes", sevenscenes_stairs).frames("test")
    assert metrics["n_queries"] == len(queries) == 6
    results = read_results(tmp_path / "run" / "results.txt")
    for query in queries:
        outcome = results[query.name]
        if outcome.pose is None:
            assert outcome.reason.startswith(("too few", "PnP")), outcome.reason
        else:
            assert pose_error(outcome.pose, query.pose)[0] < 0.25
