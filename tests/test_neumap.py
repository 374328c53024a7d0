"""NeuMap: labels, voxels, the map file, and code optimisation with the shipped decoder on a small
synthetic scene it never saw (training used seeds 11-16 and 21-23; this is seed 7)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from reloc.cli import app
from reloc.datasets import load_dataset, read_depth_mm
from reloc.datasets.synthetic.generate import SynthConfig, generate
from reloc.errors import RelocError
from reloc.features.base import FeatureStore
from reloc.geometry.errors import pose_error
from reloc.io.map_folder import NEUMAP_FILE, open_artifact
from reloc.io.results import read_results
from reloc.localization.pnp import PnPConfig
from reloc.neumap.labels import LabelledPoints, labels_from_depth
from reloc.neumap.localize import NeumapLocalizeConfig, judged_on_every_prediction, localize_neumap, regress
from reloc.neumap.model import DecoderConfig, TransDecoder
from reloc.neumap.store import FORMAT, NeumapMap
from reloc.neumap.train import (
    OptimiseConfig,
    SamplerConfig,
    TrainConfig,
    initial_state,
    optimise_codes,
    sample_batch,
    scene_samples,
    train_step,
)
from reloc.neumap.trained import load_decoder
from reloc.neumap.voxels import build_voxels
from reloc.types import Camera, Pose

OPTIMISE_STEPS = 1000
SAMPLER = {"voxels_per_step": 16, "points_per_voxel": 128}


def labelled(points: np.ndarray, frame: np.ndarray) -> LabelledPoints:
    descriptors = np.zeros((len(points), 4), np.float16)
    return LabelledPoints(descriptors, points.astype(np.float32), frame.astype(np.int32), ["a", "b", "c"])


def random_labels(seed: int, count: int, frames: int) -> LabelledPoints:
    """``count`` keypoints with random unit 64-d descriptors and points in a 2-m cube, in equal
    shares over ``frames`` frames."""
    rng = np.random.default_rng(seed)
    descriptors = rng.normal(size=(count, 64))
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    frame = np.repeat(np.arange(frames, dtype=np.int32), count // frames)
    names = [f"frame{index}" for index in range(frames)]
    return LabelledPoints(
        descriptors.astype(np.float16), rng.uniform(0, 2, (count, 3)).astype(np.float32), frame, names
    )


def test_voxels_keep_cells_seen_by_a_frame_with_enough_points_and_offsets_round_trip():
    rng = np.random.default_rng(0)
    dense = rng.uniform(0, 1, (30, 3))  # cell (0, 0, 0), all seen by frame 0
    sparse = rng.uniform(0, 1, (10, 3)) + [2, 0, 0]  # cell (2, 0, 0), 5 per frame: too few
    table, observers = build_voxels(
        labelled(np.vstack([dense, sparse]), np.r_[np.zeros(30), np.tile([1, 2], 5)]), 1.0, min_points=20
    )
    assert len(table) == 1 and table.cells.tolist() == [[0, 0, 0]] and observers[0].tolist() == [0]
    voxel = table.assign(np.vstack([dense[:3], sparse[:2]]))
    assert voxel.tolist() == [0, 0, 0, -1, -1]
    offsets = table.normalised_offsets(dense[:3], voxel[:3])
    np.testing.assert_allclose(table.world_points(offsets, voxel[:3]), dense[:3], atol=1e-6)
    np.testing.assert_allclose(table.median[0], np.median(dense, axis=0), atol=1e-6)


def test_a_scene_with_too_few_labelled_points_per_voxel_is_refused_with_the_numbers():
    points = np.random.default_rng(1).uniform(0, 3, (12, 3))
    with pytest.raises(RelocError, match=r"no voxel of side 1.00 m .* 20 or more labelled keypoints \(12 labelled"):
        build_voxels(labelled(points, np.zeros(12)), 1.0, min_points=20)


@pytest.fixture(scope="module")
def scene(module_folder) -> Path:
    root = module_folder / "scene"
    generate(
        SynthConfig("7scenes", seed=7, mapping_frames=40, query_frames=8, mapping_sequences=1, query_sequences=1),
        root,
    )
    return root


@pytest.fixture(scope="module")
def run(scene, module_folder) -> Path:
    """configs/neumap.yaml (a shorter code optimisation) evaluated on the scene."""
    folder = module_folder / "run-config"
    folder.mkdir()
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "neumap.yaml").read_text())
    config["mapping"]["nodes"]["codes"]["with"] = {"optimise": {"max_steps": OPTIMISE_STEPS, "sampler": SAMPLER}}
    config["mapping"]["keep"] = ["features.h5"]  # mapping's working file, read by the tests below
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    arguments = ["--dataset", "7scenes", "--root", str(scene), "--out", str(folder / "run")]
    result = CliRunner().invoke(app, ["eval", "--config", str(folder / "config.yaml"), *arguments])
    assert result.exit_code == 0, result.output
    return folder / "run"


def test_depth_labels_agree_with_another_frame_depth(scene, run):
    frames = load_dataset("7scenes", scene).frames("train")
    features = FeatureStore.open(run / "map" / "features.h5")
    labels = labels_from_depth(frames[:1], features)
    other = frames[3]
    cam = other.pose.transform(labels.points.astype(np.float64))
    pixels = other.camera.project(cam[cam[:, 2] > 0.1])
    depth = read_depth_mm(other.depth_path)
    inside = (pixels[:, 0] >= 0) & (pixels[:, 0] < 640) & (pixels[:, 1] >= 0) & (pixels[:, 1] < 480)
    seen = depth[pixels[inside, 1].astype(int), pixels[inside, 0].astype(int)]
    z = cam[cam[:, 2] > 0.1][inside, 2]
    visible = np.isfinite(seen) & (np.abs(seen - z) < 0.05)  # the rest is occluded in the other view
    assert inside.sum() > 100 and visible.mean() > 0.5
    assert np.median(np.abs(seen[visible] - z[visible])) < 0.01


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="issue 20 open: the regressed coordinates are too coarse for centimetre poses, and most queries of this "
    "unseen scene are refused by the pose-confidence rule (BENCHMARKS.md, NeuMap)",
)
def test_optimised_codes_localize_queries_of_a_scene_the_decoder_never_saw(scene, run):
    ground_truth = load_dataset("7scenes", scene).ground_truth()
    results = read_results(run / "results.txt")
    errors = [pose_error(r.pose, ground_truth[name].pose) for name, r in results.items() if r.pose is not None]
    assert len(errors) >= 6, {name: r.reason for name, r in results.items()}
    assert np.median([e[0] for e in errors]) < 0.05 and np.median([e[1] for e in errors]) < 2.0, errors
    record = NeumapMap.load(run / "map" / NEUMAP_FILE).record
    assert record["steps"] <= OPTIMISE_STEPS and record["stopped_by"] in ("plateau", "step budget")


@pytest.fixture(scope="module")
def optimised(scene, run):
    """The scene's labels and the map's codes, with the shipped decoder."""
    frames = load_dataset("7scenes", scene).frames("train")
    labels = labels_from_depth(frames, FeatureStore.open(run / "map" / "features.h5"))
    return labels, NeumapMap.load(run / "map" / NEUMAP_FILE), load_decoder()


@pytest.mark.slow
def test_labelled_keypoints_regress_near_their_points_and_outsiders_get_low_confidence(optimised):
    labels, neumap, checkpoint = optimised
    voxel = neumap.table.assign(labels.points)
    rows = np.flatnonzero(labels.frame == 5)
    with torch.inference_mode():
        tokens = checkpoint.decoder.embed(torch.from_numpy(labels.descriptors[rows].astype(np.float32)))
    target = int(np.bincount(voxel[rows][voxel[rows] >= 0]).argmax())
    points, confidence = regress(checkpoint.decoder, neumap, tokens, np.array([target]))
    inside = voxel[rows] == target
    errors = np.linalg.norm(points[0][inside] - labels.points[rows][inside], axis=1)
    assert np.median(errors) < 0.15 * neumap.table.size, np.median(errors)
    assert np.mean(confidence[0][inside] > 0.5) > 0.7 and np.mean(confidence[0][~inside] < 0.5) > 0.8


def voxel_errors(neumap: NeumapMap, decoder: TransDecoder, labels: LabelledPoints, frames: list[int]) -> np.ndarray:
    """Errors (m) of the labelled keypoints of ``frames`` regressed in their own voxel."""
    voxel = neumap.table.assign(labels.points)
    errors = []
    for index in frames:
        rows = np.flatnonzero((labels.frame == index) & (voxel >= 0))
        with torch.inference_mode():
            tokens = decoder.embed(torch.from_numpy(labels.descriptors[rows].astype(np.float32)))
        for v in np.unique(voxel[rows]):
            points, _ = regress(decoder, neumap, tokens[voxel[rows] == v], np.array([v]))
            errors.append(np.linalg.norm(points[0] - labels.points[rows][voxel[rows] == v], axis=1))
    return np.concatenate(errors)


@pytest.mark.slow
def test_pruning_lowers_the_bytes_and_keeps_the_regression_accuracy(run, optimised, tmp_path):
    labels, neumap, checkpoint = optimised
    pruned = neumap.pruned(float(torch.quantile(neumap.codes.weights.abs()[neumap.kept], 0.3)))
    pruned.save(tmp_path / "pruned.pt")
    assert (tmp_path / "pruned.pt").stat().st_size < 0.8 * (run / "map" / NEUMAP_FILE).stat().st_size
    full, fewer = (np.median(voxel_errors(m, checkpoint.decoder, labels, [5, 20, 35])) for m in (neumap, pruned))
    assert fewer < 1.2 * full + 0.01, (full, fewer)


def test_the_map_holds_neumap_pt_alone_and_it_opens_with_its_registered_reader(run):
    neumap = open_artifact(run / "map", NEUMAP_FILE)
    assert isinstance(neumap, NeumapMap) and neumap.extractor == "xfeat" and len(neumap.points) > 1000
    assert neumap.record["steps"] <= OPTIMISE_STEPS and neumap.record["stopped_by"] in ("plateau", "step budget")
    kept = {path.name for path in (run / "map").iterdir() if not path.name.startswith(".")}
    kept -= {"map.yaml", "cache", "features.h5"}  # features.h5: kept for these tests by mapping.keep
    assert kept == {NEUMAP_FILE}, kept


def test_a_truncated_or_other_format_map_is_refused_by_name(run, tmp_path):
    path = run / "map" / NEUMAP_FILE
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(RelocError, match=r"truncated.pt: not a readable NeuMap map .*rebuild the map"):
        NeumapMap.load(truncated)
    saved = torch.load(path, weights_only=True)
    saved["format"] = FORMAT + 1
    torch.save(saved, tmp_path / "newer.pt")
    with pytest.raises(RelocError, match=rf"newer.pt: NeuMap map format {FORMAT + 1}, but this reloc reads format"):
        NeumapMap.load(tmp_path / "newer.pt")


def test_a_query_of_another_scene_fails_with_its_reason_never_a_pose(run):
    """Random descriptors stand for keypoints of no voxel: whatever the decoder claims for them
    does not make a consistent pose."""
    neumap, checkpoint = NeumapMap.load(run / "map" / NEUMAP_FILE), load_decoder()
    rng = np.random.default_rng(0)
    descriptors = rng.normal(size=(300, 64)).astype(np.float32)
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    keypoints = rng.uniform(0, 480, (300, 2))
    found = localize_neumap(
        keypoints,
        descriptors,
        Camera.simple_pinhole(640, 480, 585),
        checkpoint.decoder,
        neumap,
        NeumapLocalizeConfig(),
    )
    assert found.result.pose is None
    reasons = ("no voxel has 40 confident scene coordinates", "too few 2D-3D matches", "too few inliers", "pose not")
    assert found.result.reason.startswith(reasons), found.result.reason


def test_code_optimisation_is_deterministic_and_leaves_the_decoder_alone():
    labels = random_labels(2, 400, 4)
    table, observers = build_voxels(labels, 1.0, min_points=5)
    samples = scene_samples(labels, table, observers)
    torch.manual_seed(0)
    decoder = TransDecoder(DecoderConfig(dim=32, codes=8, blocks=2, ffn_dim=64))
    before = {k: v.clone() for k, v in decoder.state_dict().items()}
    config = OptimiseConfig(max_steps=20, sampler=SamplerConfig(voxels_per_step=4, points_per_voxel=32))
    first, second = optimise_codes(decoder, samples, config), optimise_codes(decoder, samples, config)
    assert first.losses == second.losses and torch.equal(first.codes.codes, second.codes.codes)
    assert first.losses[-1] < first.losses[0]
    assert all(torch.equal(before[k], v) for k, v in decoder.state_dict().items())


def test_a_map_can_hold_more_codes_per_voxel_than_the_decoder_trained_with(tmp_path):
    """``codes_per_block``: the decoder attends over any number of codes, so a scene may get more
    (a larger map, BENCHMARKS issue 20); they are optimised, saved with their count, and decoded."""
    labels = random_labels(4, 400, 4)
    table, observers = build_voxels(labels, 1.0, min_points=5)
    torch.manual_seed(0)
    decoder = TransDecoder(DecoderConfig(dim=32, codes=8, blocks=2, ffn_dim=64))
    sampler = SamplerConfig(voxels_per_step=4, points_per_voxel=32)
    optimised = optimise_codes(
        decoder,
        scene_samples(labels, table, observers),
        OptimiseConfig(max_steps=5, codes_per_block=24, sampler=sampler),
    )
    assert optimised.codes.codes.shape == (len(table), 2, 24, 32)
    kept = torch.ones(len(table), 2, 24, dtype=torch.bool)
    saved = NeumapMap(table, optimised.codes, kept, "digest", decoder.config, "xfeat", {}, labels.points[:10])
    saved.save(tmp_path / NEUMAP_FILE)
    loaded = NeumapMap.load(tmp_path / NEUMAP_FILE)
    assert loaded.kept.shape == (len(table), 2, 24)
    embedded = decoder.embed(torch.from_numpy(labels.descriptors[:7].astype(np.float32)))
    points, confidence = regress(decoder, loaded, embedded, np.arange(len(table)))
    assert points.shape == (len(table), 7, 3) and confidence.shape == (len(table), 7)
    assert np.allclose(points, regress(decoder, saved, embedded, np.arange(len(table)))[0], atol=0.01)


def test_descriptor_noise_perturbs_the_sampled_descriptors_on_the_unit_sphere_and_leaves_padding_empty():
    labels = random_labels(5, 60, 1)
    table, observers = build_voxels(labels, 1.0, min_points=5)
    samples = scene_samples(labels, table, observers)
    plain_config = SamplerConfig(voxels_per_step=3, points_per_voxel=80)
    noisy_config = SamplerConfig(voxels_per_step=3, points_per_voxel=80, descriptor_noise=0.1)
    plain = sample_batch([samples], np.random.default_rng(0), plain_config)
    noisy = sample_batch([samples], np.random.default_rng(0), noisy_config)
    again = sample_batch([samples], np.random.default_rng(0), noisy_config)
    assert torch.equal(noisy.descriptors, again.descriptors) and torch.equal(noisy.valid, plain.valid)
    norms = noisy.descriptors.norm(dim=-1)
    assert torch.allclose(norms[noisy.valid], torch.ones(int(noisy.valid.sum())), atol=1e-5)
    assert not noisy.descriptors[~noisy.valid].any()
    cosine = (noisy.descriptors * plain.descriptors).sum(-1)[plain.valid]
    assert 0.5 < float(cosine.mean()) < 0.9  # 0.1 per dimension in 64 dims: about 0.8 of the length


@pytest.mark.parametrize("held_out_queries", [False, True])
def test_held_out_query_frames_train_the_decoder_but_not_the_codes(held_out_queries):
    """Frames 2 and 3 of 4 are queries. With ``held_out_queries``, a step whose samples all come
    from them changes the decoder and leaves every code and weight as it was; without, both move."""
    labels = random_labels(3, 400, 4)
    table, observers = build_voxels(labels, 1.0, min_points=5)
    queries_only = [frames[frames >= 2] for frames in observers]  # every sample from a query frame
    samples = scene_samples(labels, table, queries_only, mapping_frames=2)
    config = TrainConfig(
        steps=10,
        warmup_steps=1,
        held_out_queries=held_out_queries,
        decoder=DecoderConfig(dim=32, codes=8, blocks=2, ffn_dim=64),
        sampler=SamplerConfig(voxels_per_step=4, points_per_voxel=32),
    )
    state = initial_state([samples], config)
    codes, weights = (t.detach().clone() for t in (state.scene_codes[0].codes, state.scene_codes[0].weights))
    decoder = {k: v.clone() for k, v in state.decoder.state_dict().items()}
    train_step(state, [samples], config)
    assert not all(torch.equal(decoder[k], v) for k, v in state.decoder.state_dict().items())
    unchanged = torch.equal(codes, state.scene_codes[0].codes) and torch.equal(weights, state.scene_codes[0].weights)
    assert unchanged == held_out_queries


def test_the_pose_from_the_union_of_voxel_inliers_is_judged_on_every_confident_prediction():
    rng = np.random.default_rng(4)
    camera = Camera("PINHOLE", 640, 480, (500.0, 500.0, 320.0, 240.0))
    pose = Pose.from_matrix(np.eye(4))
    points3d = np.column_stack([rng.uniform(-1.5, 1.5, (500, 2)), rng.uniform(2, 4, 500)])
    points2d = camera.project(points3d)
    wrong = np.arange(100, 500)
    points3d[wrong] += rng.normal(0, 0.5, (len(wrong), 3))  # regressed far from where the keypoint looks
    union = np.arange(100)
    judged = judged_on_every_prediction(points2d, points3d, union, camera, PnPConfig(max_error_px=12.0))
    assert judged.pose is not None and pose_error(judged.pose, pose)[0] < 0.01
    assert judged.evidence.matches == 500 and 100 <= judged.evidence.inliers < 150
    assert judged.evidence.inlier_ratio < 0.3
    assert len(judged.inliers) == 500 and judged.inliers[union].all()
