"""The scoring protocol: `reloc score` on real ground truth, exact perturbations, failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from reloc.cli import app
from reloc.datasets import load_dataset
from reloc.errors import ResultsError
from reloc.eval.metrics import compute_metrics
from reloc.io.results import read_results, write_results
from reloc.rotation import axis_angle_to_rotmat
from reloc.types import Camera, Pose, QueryRecord, QueryResult, Round

from .layouts import write_cambridge


def perturbed(pose: Pose, rng, shift_m: float, angle_deg: float) -> Pose:
    """Camera centre moved by `shift_m` in a random direction, rotation off by `angle_deg`."""
    direction = rng.normal(size=3)
    delta = axis_angle_to_rotmat(rng.normal(size=3), np.radians(angle_deg))
    return Pose.from_rotation_center(delta @ pose.R, pose.center + shift_m * direction / np.linalg.norm(direction))


def score(results_file, dataset, root, out):
    result = CliRunner().invoke(
        app, ["score", str(results_file), "--dataset", dataset, "--root", str(root), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()), result.output


@pytest.mark.parametrize("kind, scene_fixture", [("cambridge", "strecha_fountain"), ("7scenes", "sevenscenes_stairs")])
def test_score_exact_errors_on_real_ground_truth(kind, scene_fixture, request, tmp_path, rng):
    root = request.getfixturevalue(scene_fixture)
    queries = load_dataset(kind, root).frames("test")

    write_results(tmp_path / "exact.txt", [QueryResult(f.name, f.pose) for f in queries])
    metrics, output = score(tmp_path / "exact.txt", kind, root, tmp_path / "exact.json")
    assert metrics["n_queries"] == len(queries) and metrics["n_failed"] == 0
    assert f"{metrics['median_t_cm']:.2f}" == "0.00" and f"{metrics['median_r_deg']:.2f}" == "0.00"
    assert metrics["recall"]["1cm_1deg"] == 1.0
    assert "median translation error (cm)" in output

    moved = [QueryResult(f.name, perturbed(f.pose, rng, 0.10, 1.0)) for f in queries]
    write_results(tmp_path / "moved.txt", moved)
    metrics, _ = score(tmp_path / "moved.txt", kind, root, tmp_path / "moved.json")
    assert f"{metrics['median_t_cm']:.2f}" == "10.00" and f"{metrics['median_r_deg']:.2f}" == "1.00"
    assert metrics["recall"]["5cm_5deg"] == 0.0 and metrics["recall"]["25cm_2deg"] == 1.0

    write_results(tmp_path / "partial.txt", moved[1:])
    metrics, _ = score(tmp_path / "partial.txt", kind, root, tmp_path / "partial.json")
    assert metrics["n_failed"] == 1 and metrics["n_queries"] == len(queries)
    assert metrics["recall"]["500cm_10deg"] == pytest.approx((len(queries) - 1) / len(queries))
    assert set(metrics) == {"n_queries", "n_failed", "median_t_cm", "median_r_deg", "recall", "timing_s", "map_bytes"}
    assert list(metrics["recall"]) == ["1cm_1deg", "2cm_2deg", "5cm_5deg", "25cm_2deg", "50cm_5deg", "500cm_10deg"]


@pytest.fixture
def generated_scene(tmp_path) -> Path:
    """A Cambridge-layout scene written here: one mapping image and four queries."""
    write_cambridge(tmp_path / "scene", sizes=[(64, 48)] * 5)
    return tmp_path / "scene"


def test_failed_queries_round_trip_and_count_as_infinite(tmp_path, generated_scene):
    queries = load_dataset("cambridge", generated_scene).frames("test")
    results = [QueryResult(queries[0].name, None, "too few inliers (3 < 12)", timings={"pnp": 0.5})]
    results += [QueryResult(f.name, f.pose, num_inliers=100, timings={"pnp": 0.1}) for f in queries[1:]]
    write_results(tmp_path / "r.txt", results)
    loaded = read_results(tmp_path / "r.txt")
    assert loaded[queries[0].name].pose is None and loaded[queries[0].name].reason == "too few inliers (3 < 12)"
    assert loaded[queries[1].name].num_inliers == 100
    metrics, errors = compute_metrics(loaded, {f.name: f for f in queries})
    assert metrics["n_failed"] == 1 and errors[0].failed and errors[0].reason.startswith("too few inliers")
    assert metrics["timing_s"] == {"pnp": pytest.approx(0.1)}


def test_all_failed_writes_strict_json(tmp_path, generated_scene):
    (tmp_path / "empty.txt").write_text("")
    metrics, output = score(tmp_path / "empty.txt", "cambridge", generated_scene, tmp_path / "m.json")
    assert metrics["median_t_cm"] is None and metrics["n_failed"] == metrics["n_queries"]
    assert "failed" in output


@pytest.mark.parametrize(
    "content, message",
    [
        ("q.jpg 1 0 0\n", r"r.txt:1: expected 'name qw qx qy qz tx ty tz', got 4 fields"),
        ("q.jpg 1 0 0 0 nan 0 0\n", r"r.txt:1: pose of q.jpg contains NaN"),
        ("q.jpg 1 0 0 0 a 0 0\n", r"r.txt:1: pose values of q.jpg are not numbers"),
        ("q.jpg 0 0 0 0 0 0 0\n", r"r.txt:1: quaternion .* is not a valid rotation"),
        ("q.jpg 1 0 0 0 0 0 0\nq.jpg 1 0 0 0 0 0 0\n", r"r.txt:2: query q.jpg appears twice"),
    ],
)
def test_results_file_errors(tmp_path, content, message):
    (tmp_path / "r.txt").write_text(content)
    with pytest.raises(ResultsError, match=message):
        read_results(tmp_path / "r.txt")


def test_score_rejects_names_not_in_dataset_and_missing_files(tmp_path, generated_scene):
    (tmp_path / "r.txt").write_text("seq1/9999.jpg 1 0 0 0 0 0 0\n")
    result = CliRunner().invoke(
        app, ["score", str(tmp_path / "r.txt"), "--dataset", "cambridge", "--root", str(generated_scene)]
    )
    assert result.exit_code == 2 and "not queries of this dataset, e.g. 'seq1/9999.jpg'" in result.output
    result = CliRunner().invoke(
        app, ["score", str(tmp_path / "nope.txt"), "--dataset", "cambridge", "--root", str(generated_scene)]
    )
    assert result.exit_code == 2 and "nope.txt: results file does not exist" in result.output


def test_query_records_round_trip_through_the_details_sidecar(tmp_path):
    camera = Camera("SIMPLE_PINHOLE", 640, 480, (500.0, 320.0, 240.0))
    record = QueryRecord(
        retrieved=["a.png", "b.png"],
        rounds=[Round(["a.png"], 12, 0), Round(["b.png"], 80, 61)],
        num_matches=80,
        inlier_points2d=np.array([[10.25, 20.5], [30.0, 40.75]]),
        inlier_landmarks=np.array([7, 9]),
        image=tmp_path / "q.png",
        camera=camera,
        extra={"iterations": [{"inliers": 61}]},
    )
    pose = Pose.from_qvec_tvec([1.0, 0, 0, 0], [0.1, 0.2, 0.3])
    write_results(
        tmp_path / "r.txt",
        [
            QueryResult("q.png", pose, num_inliers=61, record=record),
            QueryResult("f.png", None, "too few inliers (3 < 20)"),
        ],
    )
    loaded = read_results(tmp_path / "r.txt")
    back = loaded["q.png"].record
    assert back.retrieved == record.retrieved and back.rounds == record.rounds and back.num_matches == 80
    np.testing.assert_array_equal(back.inlier_points2d, record.inlier_points2d)
    np.testing.assert_array_equal(back.inlier_landmarks, record.inlier_landmarks)
    assert back.image == record.image and back.camera == camera and back.extra == record.extra
    assert loaded["f.png"].pose is None and loaded["f.png"].record.rounds == []


def test_a_name_with_spaces_reads_back_whole(tmp_path):
    pose = Pose.from_qvec_tvec([1.0, 0, 0, 0], [0.5, -1.0, 2.0])
    write_results(
        tmp_path / "r.txt", [QueryResult("my photos/IMG 1.jpg", pose), QueryResult("b c.jpg", None, "too few")]
    )
    loaded = read_results(tmp_path / "r.txt")
    assert set(loaded) == {"my photos/IMG 1.jpg", "b c.jpg"} and loaded["b c.jpg"].reason == "too few"
    np.testing.assert_allclose(loaded["my photos/IMG 1.jpg"].pose.matrix, pose.matrix)
