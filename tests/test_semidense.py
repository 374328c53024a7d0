"""Semi-dense matching trained here: CasP's selective attention and priors, HomoMatcher's
homographies, training, the shipped checkpoints, matcher evaluation and CasP relocalization."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from reloc.cli import app
from reloc.datasets import load_dataset
from reloc.datasets.pairs import read_pairs_with_gt
from reloc.datasets.synthetic.generate import SynthConfig, generate
from reloc.datasets.synthetic.textures import load_photo
from reloc.errors import RelocError
from reloc.eval.matching import homography_errors, pose_auc, relative_pose_error
from reloc.geometry.errors import pose_error
from reloc.io.results import read_results
from reloc.matching.casp.model import Casp, CaspConfig, SelectiveCrossAttention, candidate_ids, group_by_parent
from reloc.matching.casp.train import casp_step
from reloc.matching.homomatcher.model import HomoMatcher, HomoMatcherConfig, apply_homography, weighted_homography
from reloc.matching.homomatcher.train import homomatcher_step
from reloc.matching.pairwise import PairMatcherConfig, build_pair_matcher
from reloc.matching.trained import MODELS, load_trained, model_config_with, train_and_save
from reloc.matching.training import TrainConfig, load_checkpoint
from reloc.matching.training_pairs import PairBatch, TrainingDataConfig, TrainingPairs
from reloc.types import Pose
from reloc.weights import TRAINED_HERE, project_weights

from .overlap import mapped_share

ROOT = Path(__file__).resolve().parents[1]


def test_selective_attention_never_looks_outside_the_prior_regions():
    torch.manual_seed(0)
    attention = SelectiveCrossAttention(dim=16, heads=2).eval()
    children, others = torch.randn(1, 6, 4, 16), torch.randn(1, 10, 4, 16)
    prior = torch.tensor([[[0, 3, 7], [1, 2, 3], [9, 8, 0], [4, 5, 6], [2, 2, 2], [7, 1, 0]]])
    with torch.no_grad():
        before = attention(children, others, prior)
        assert before.shape == (1, 6, 4, 16)
        outside = torch.tensor([p for p in range(10) if p not in prior[0, 0]])
        changed = others.clone()
        changed[0, outside] = torch.randn(len(outside), 4, 16) * 10
        after = attention(children, changed, prior)
        torch.testing.assert_close(
            after[0, 0], before[0, 0], atol=1e-6, rtol=0
        )  # token 0 attends only to parents 0, 3, 7
        assert not torch.allclose(after[0, 1], before[0, 1])  # token 1 attends to parent 1 and 2, which changed
        inside = others.clone()
        inside[0, 7] = torch.randn(4, 16) * 10
        assert not torch.allclose(attention(children, inside, prior)[0, 0], before[0, 0])


def test_grouping_and_candidates_follow_the_parent_layout():
    eighth = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(1, 2, 4, 6)  # channels 2, 1/8 grid 4 x 6
    grouped = group_by_parent(eighth)  # 1/16 grid 2 x 3
    assert grouped.shape == (1, 6, 4, 2)
    # parent (1, 2) holds 1/8 cells (2..3, 4..5), children in (dr, dc) order
    assert grouped[0, 5, :, 0].tolist() == [
        eighth[0, 0, 2, 4],
        eighth[0, 0, 2, 5],
        eighth[0, 0, 3, 4],
        eighth[0, 0, 3, 5],
    ]
    assert candidate_ids(torch.tensor([[[5, 0]]])).tolist() == [[[20, 21, 22, 23, 0, 1, 2, 3]]]


def test_casp_candidates_are_the_children_of_each_tokens_top_k_priors():
    torch.manual_seed(0)
    model = Casp(CaspConfig(top_k=3)).eval()
    with torch.no_grad():
        output = model(torch.rand(1, 3, 64, 96), torch.rand(1, 3, 96, 64))
    assert output.log_prior.shape == (1, 4 * 6, 6 * 4) and output.grid0 == (4, 6) and output.grid1 == (6, 4)
    assert output.candidates01.shape == (1, 24, 12) and output.log_match01.shape == (1, 24, 4, 12)
    top = output.log_prior[0].topk(3, dim=1).indices
    assert torch.equal(output.candidates01[0].reshape(24, 3, 4)[:, :, 0] // 4, top)
    assert torch.allclose(output.log_match10.exp().sum(-1), torch.ones(1, 24, 4))


def test_weighted_dlt_recovers_a_homography_exactly():
    truth = torch.tensor([[1.08, 0.06, 0.3], [-0.04, 0.93, -0.2], [0.03, -0.02, 1.0]], dtype=torch.float64)
    source = torch.rand(64, 2, dtype=torch.float64) * 2 - 1
    weights = torch.rand(64, dtype=torch.float64) + 0.1
    estimate = weighted_homography(source, apply_homography(truth, source), weights)
    assert torch.allclose(estimate, truth, atol=1e-3)
    corners = torch.tensor([[-1.0, -1], [1, -1], [1, 1], [-1, 1]], dtype=torch.float64)
    assert (apply_homography(estimate, corners) - apply_homography(truth, corners)).abs().max() < 1e-3


def warped_photo_pair(homography: np.ndarray, size=(320, 256)) -> tuple[np.ndarray, np.ndarray]:
    photo = cv2.resize((load_photo("brick.png") * 255).astype(np.uint8), size, interpolation=cv2.INTER_AREA)
    # H acts on COLMAP pixels; OpenCV's warp on pixel indices.
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    warped = cv2.warpPerspective(photo, np.linalg.inv(shift) @ homography @ shift, size, flags=cv2.INTER_CUBIC)
    return photo, warped


def test_homomatcher_recovers_the_homography_of_a_warped_patch():
    """Shipped weights: coarse matches quantised to 1/8 cells (errors up to 4 px) come back within
    a fraction of a pixel of the true warp, and the patch corners follow it."""
    angle = np.radians(8)
    homography = np.array(
        [
            [1.1 * np.cos(angle), -1.1 * np.sin(angle), 12.0],
            [1.1 * np.sin(angle), 1.1 * np.cos(angle), -20.0],
            [2e-4, -1e-4, 1.0],
        ]
    )
    image0, image1 = warped_photo_pair(homography)
    model = load_trained("homomatcher")
    tensors = [torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255 for image in (image0, image1)]
    cells = np.stack(np.meshgrid(np.arange(6, 34), np.arange(6, 26)), -1).reshape(-1, 2) * 8 + 4.0
    truth = homography_errors_free(cells, homography)
    inside = (truth[:, 0] > 20) & (truth[:, 0] < 300) & (truth[:, 1] > 20) & (truth[:, 1] < 236)
    points0, truth = torch.tensor(cells[inside], dtype=torch.float32), truth[inside]
    points1 = torch.tensor(
        (truth // 8) * 8 + 4, dtype=torch.float32
    )  # the true cell's centre, as a coarse matcher gives
    fine0, fine1 = (model.fine_features(t) for t in tensors)
    refined, homographies, _ = model.refine(fine0, fine1, points0, points1, (320, 256), (320, 256))
    coarse_error = np.linalg.norm(points1.numpy() - truth, axis=1)
    error = np.linalg.norm(refined.numpy() - truth, axis=1)
    assert np.median(coarse_error) > 2.0 and np.median(error) < 0.5 and np.mean(error < 1.0) > 0.8, (
        np.median(error),
        np.mean(error < 1),
    )
    corners = points0[:, None, :].numpy() + np.array([[-8.0, -8], [8, -8], [8, 8], [-8, 8]])
    corner_error = np.linalg.norm(
        apply_homography(homographies.double(), torch.tensor(corners)).numpy()
        - homography_errors_free(corners.reshape(-1, 2), homography).reshape(corners.shape),
        axis=-1,
    )
    assert np.median(corner_error) < 1.0, np.median(corner_error)


def test_homomatcher_dense_output_follows_the_true_flow(training_pair):
    """Shipped weights on a synthetic room pair: every pixel of each matched patch, mapped through
    its patch homography (``dense``), lands near where the ground-truth depth and poses send it."""
    matcher = build_pair_matcher("casp", PairMatcherConfig(resize_max=0))
    prepared0, prepared1 = matcher.prepare_batch([training_pair.image0, training_pair.image1])
    matches = matcher.match_prepared(prepared0, prepared1)
    source, target = matcher.fine.dense(matches.homographies, matches.points0)  # (M, Q, 2) resized pixels
    assert len(matches.points0) > 100 and source.shape[1] == 16 * 16
    source = source.reshape(-1, 2).double().numpy() * prepared0.scale  # original COLMAP pixels
    target = target.reshape(-1, 2).double().numpy() * prepared1.scale
    height, width = training_pair.flow0.shape[:2]
    columns, rows = np.floor(source - 0.5).astype(int).T  # the pixel whose centre is nearest below
    inside = (columns >= 0) & (columns < width - 1) & (rows >= 0) & (rows < height - 1)
    covisible = np.zeros(len(source), bool)
    covisible[inside] = np.all(
        [training_pair.covisible0[rows[inside] + dy, columns[inside] + dx] for dy in (0, 1) for dx in (0, 1)], axis=0
    )
    fx, fy = (source[covisible] - 0.5 - np.stack([columns, rows], 1)[covisible]).T  # bilinear weights
    r, c, flow = rows[covisible], columns[covisible], training_pair.flow0
    truth = (
        flow[r, c] * ((1 - fx) * (1 - fy))[:, None]
        + flow[r, c + 1] * (fx * (1 - fy))[:, None]
        + flow[r + 1, c] * ((1 - fx) * fy)[:, None]
        + flow[r + 1, c + 1] * (fx * fy)[:, None]
    )
    error = np.linalg.norm(target[covisible] - truth, axis=1)
    assert covisible.mean() > 0.5 and np.median(error) < 1.5 and np.mean(error < 3.0) > 0.8, (
        covisible.mean(),
        np.median(error),
        np.mean(error < 3.0),
    )


def test_cached_preparation_gives_the_same_matches_and_prepares_each_image_once(training_pair):
    """With ``cached_images``, an image matched again (a query against several keyframes) reuses
    its backbone maps: the matches equal the uncached ones (to float rounding), and three pairs over three images
    run the networks three times, not six."""
    plain = build_pair_matcher("casp", PairMatcherConfig(resize_max=0))
    cached = build_pair_matcher("casp", PairMatcherConfig(resize_max=0, cached_images=4))
    calls = []
    networks = cached.prepare_resized
    cached.prepare_resized = lambda resized: calls.append(len(resized)) or networks(resized)
    image0, image1 = training_pair.image0, training_pair.image1
    image2 = np.ascontiguousarray(image1[:, ::-1])
    for pair in ((image0, image1), (image0, image2), (image1, image2)):
        for expected, got in zip(plain.match(*pair), cached.match(*pair)):
            np.testing.assert_allclose(got, expected, atol=1e-3)  # batched or not: float rounding only
    assert sum(calls) == 3, calls


def test_corner_head_starts_at_the_coarse_match_and_its_corners_define_the_homography():
    """The regression fit: a fresh head (zero last layer) keeps each coarse match (the patch moves
    by points1 - points0, nothing else); offsets it regresses move the patch corners exactly there."""
    torch.manual_seed(0)
    model = HomoMatcher(HomoMatcherConfig(fit="regression", iterations=1)).eval()
    image = torch.rand(1, 3, 96, 128)
    fine = model.fine_features(image)
    points0 = torch.tensor([[[40.0, 30.0], [70.5, 50.5]]])
    points1 = points0 + torch.tensor([3.0, -2.0])
    with torch.no_grad():
        output = model(fine, fine, points0, points1, (128, 96), (128, 96))
        assert torch.allclose(output.points1, points1, atol=1e-4)
        offsets = torch.tensor([0.1, 0.0, 0.1, 0.0, 0.1, 0.0, 0.1, 0.0])  # all four corners right by 0.1
        model.corner_heads[0].offsets.bias.copy_(offsets)
        shifted = model(fine, fine, points0, points1, (128, 96), (128, 96))
    scale = model.config.spacing_px * model.config.patch_size / 2
    assert torch.allclose(shifted.points1, points1 + torch.tensor([0.1 * scale, 0.0]), atol=1e-3)


def test_homomatcher_config_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="fit must be one of dlt, regression, not 'ransac'"):
        HomoMatcherConfig(fit="ransac")
    with pytest.raises(RelocError, match="HomoMatcherConfig has no field fitt"):
        model_config_with(HomoMatcherConfig, {"fitt": "regression"})
    with pytest.raises(RelocError, match="HomoMatcherConfig: fit must be one of"):
        model_config_with(HomoMatcherConfig, {"fit": "ransac"})
    result = CliRunner().invoke(app, ["train", "homomatcher", "--model-set", "fit", "--out", str(tmp_path / "x.pt")])
    assert result.exit_code == 2 and "expected KEY=VALUE" in result.output
    shipped = TrainConfig(init=str(project_weights("homomatcher.pt")), model={"fit": "regression"})
    with pytest.raises(RelocError, match="homomatcher.pt: a run from a checkpoint keeps its model config"):
        train_and_save("homomatcher", shipped, tmp_path / "y.pt")


def homography_errors_free(points: np.ndarray, homography: np.ndarray) -> np.ndarray:
    mapped = np.hstack([points, np.ones((len(points), 1))]) @ homography.T
    return mapped[:, :2] / mapped[:, 2:]


@pytest.fixture(scope="module")
def tiny_batch() -> PairBatch:
    data = TrainingPairs(
        TrainingDataConfig(width=128, height=96, scene_seeds=1, scenes=["room"], photo_fraction=0.5), seed=3
    )
    return data.batch(2, np.random.default_rng(0))


@pytest.mark.parametrize("name", ["casp", "homomatcher", "homomatcher-regression"])
def test_training_loss_falls_on_a_tiny_batch(tiny_batch, name):
    torch.manual_seed(0)
    if name == "casp":
        model, step = Casp(), casp_step
    else:
        model, step = HomoMatcher(HomoMatcherConfig(fit=name.partition("-")[2] or "dlt")), homomatcher_step
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(25):
        loss, _ = (
            step(model, tiny_batch, torch.Generator().manual_seed(0)) if name != "casp" else step(model, tiny_batch)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3]), losses


def test_shipped_checkpoints_load_offline_and_match(tmp_path):
    """No network: a subprocess with sockets disabled loads both checkpoints and matches two
    warped photographs with CasP + HomoMatcher, the matches following the true warp."""
    homography = np.array([[0.95, 0.05, 10.0], [-0.04, 1.0, 6.0], [0.0, 0.0, 1.0]])
    image0, image1 = warped_photo_pair(homography, (640, 480))
    np.save(tmp_path / "pair.npy", np.stack([image0, image1]))
    np.save(tmp_path / "h.npy", homography)
    script = f"""
import socket
def refuse(*args, **kwargs):
    raise OSError("network access attempted")
socket.socket.connect = refuse
socket.create_connection = refuse
import numpy as np
from reloc.matching.pairwise import build_pair_matcher, PairMatcherConfig
images = np.load({str(tmp_path / "pair.npy")!r})
h = np.load({str(tmp_path / "h.npy")!r})
p0, p1 = build_pair_matcher("casp", PairMatcherConfig(resize_max=0)).match(images[0], images[1])
mapped = np.hstack([p0, np.ones((len(p0), 1))]) @ h.T
error = np.linalg.norm(mapped[:, :2] / mapped[:, 2:] - p1, axis=1)
print(len(p0), float(np.mean(error < 1.0)))
"""
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert output.returncode == 0, output.stderr[-2000:]
    count, within_1px = output.stdout.split()
    assert int(count) > 300 and float(within_1px) > 0.6, output.stdout


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(RelocError, match="missing.pt: checkpoint not found"):
        load_checkpoint(Casp, CaspConfig, tmp_path / "missing.pt")
    state = torch.load(ROOT / "reloc" / "weights" / "homomatcher.pt", weights_only=True)
    torch.save(state, tmp_path / "wrong.pt")
    with pytest.raises(RelocError, match="wrong.pt: checkpoint does not fit Casp"):
        load_checkpoint(Casp, CaspConfig, tmp_path / "wrong.pt")


def test_pose_auc_and_relative_pose_error():
    assert pose_auc(np.array([1.0, 2, 3, 100, np.inf])) == pytest.approx([42.0, 51.0, 55.5])
    assert pose_auc(np.array([np.inf, np.inf])) == [0.0, 0.0, 0.0]
    truth = Pose.from_rotation_center(np.eye(3), np.array([-1.0, 0, 0]))
    flipped = Pose(truth.R, -truth.t)  # the essential matrix's sign ambiguity is not an error
    assert relative_pose_error(flipped, truth) == pytest.approx(0.0, abs=1e-6)
    assert relative_pose_error(Pose(truth.R, np.array([1.0, 1.0, 0])), truth) == pytest.approx(45.0)


def test_hpatches_homographies_act_on_pixel_indices():
    homography = np.array([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 1]])  # index 0 -> 0, i.e. COLMAP 0.5 -> 0.5
    assert (
        homography_errors(np.array([[0.5, 0.5], [10.5, 4.5]]), np.array([[0.5, 0.5], [20.5, 8.5]]), homography).max()
        == 0
    )


def test_match_eval_names_a_missing_pairs_file(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "match-eval",
            "--matcher",
            "sift",
            "--pairs",
            str(tmp_path / "nope.txt"),
            "--images",
            str(tmp_path),
            "--out",
            str(tmp_path / "m.json"),
        ],
    )
    assert result.exit_code == 2 and "nope.txt: missing pairs file" in result.output


def test_match_eval_on_real_strecha_pairs(tmp_path, strecha_fountain):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("\n".join((strecha_fountain / "pairs_with_gt.txt").read_text().splitlines()[:3]))
    result = CliRunner().invoke(
        app,
        [
            "match-eval",
            "--matcher",
            "casp",
            "--pairs",
            str(pairs),
            "--images",
            str(strecha_fountain),
            "--out",
            str(tmp_path / "m.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert (
        metrics["n_pairs"] == 3
        and metrics["n_failed"] == 0
        and metrics["auc_10"] > 70
        and metrics["matches_per_pair"] > 500
    )
    assert len(read_pairs_with_gt(pairs)) == len(metrics["per_pair"])


@pytest.mark.slow
@pytest.mark.parametrize("config", ["casp-carry", "mesa"])
def test_image_matching_configs_relocalize_a_synthetic_scene(tmp_path, config):
    """configs/casp-carry.yaml end to end: keyframe landmarks carried into the queries through the
    patch homographies; configs/mesa.yaml: DMESA area matches lifted to the nearest keyframe
    observation. The query that sees nothing mapped is reported failed. Measured with casp on the
    other 3: 2 within 1 cm; the third was given a wrong pose (2.4 m off with 23 inliers) until
    PnP refused poses without confidence (issue 18); it is now reported failed ("pose not
    confident: confidence 9.2 < 34 (23 of 638 matches are inliers, covering 8 % of the image)"). The default
    gets all 3 within 0.2 cm (test_baseline). The test holds for both: at least 2 of the 3 within
    2 cm, no wrong pose."""
    scene = tmp_path / "scene"
    generate(
        SynthConfig("7scenes", seed=8, mapping_frames=40, query_frames=4, mapping_sequences=2, query_sequences=1), scene
    )
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--config",
            str(ROOT / "configs" / f"{config}.yaml"),
            "--dataset",
            "7scenes",
            "--root",
            str(scene),
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    results = read_results(tmp_path / "run" / "results.txt")
    assert (tmp_path / "run" / "results.txt").read_text().count("# FAILED") == metrics["n_failed"]
    shares, truth = mapped_share(scene), load_dataset("7scenes", scene).ground_truth()
    within, wrong = [], []
    for name, outcome in results.items():
        if shares[name] < 0.05:
            assert outcome.pose is None, name  # a failed query is listed as failed, never given a prior
        elif outcome.pose is not None:
            dt, dr = pose_error(outcome.pose, truth[name].pose)
            (within if dt < 0.02 and dr < 2.0 else wrong).append(name)
            assert len(outcome.record.inlier_landmarks) == len(outcome.record.inlier_points2d) == outcome.num_inliers
    assert len(within) >= 2 and not wrong, (within, wrong)
    assert len(list((tmp_path / "run" / "map" / "keyframe_images").glob("*.jpg"))) > 5


@pytest.mark.slow
def test_train_command_writes_a_checkpoint_that_loads(tmp_path):
    out = tmp_path / "homomatcher.pt"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "homomatcher",
            "--steps",
            "2",
            "--batch-size",
            "1",
            "--width",
            "128",
            "--height",
            "96",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert isinstance(load_trained("homomatcher", out), HomoMatcher)
    log = json.loads(out.with_suffix(".log.json").read_text())
    assert len(log["history"]) == 2 and log["metadata"]["steps"] == 2 and log["metadata"]["image_size"] == [128, 96]
    result = CliRunner().invoke(app, ["train", "casp", "--width", "100", "--out", str(out)])
    assert result.exit_code == 2 and "multiples of 32" in result.output


def test_the_models_trained_here_are_the_ones_reloc_weights_lists():
    """``reloc train``'s choices come from reloc.weights.TRAINED_HERE, which must name every trainable model."""
    assert tuple(MODELS) == TRAINED_HERE and all(project_weights(f"{name}.pt").is_file() for name in MODELS)


def test_training_improves_the_loss_on_held_out_scenes_and_keeps_the_best(tmp_path):
    """A few steps of ``train_and_save`` score better on the validation pairs (synthetic scenes
    no training seed renders) than the fresh weights; the checkpoint holds the best weights and
    the validation curve, and a run started from it begins at its score."""
    data = TrainingDataConfig(width=128, height=96, scene_seeds=1, scenes=["room"], synthetic_pool=8)
    config = TrainConfig(
        steps=30, batch_size=2, learning_rate=2e-3, warmup_steps=5, validation_every=15, validation_pairs=4, data=data
    )
    path, _ = train_and_save("casp", config, tmp_path / "casp.pt")
    metadata = torch.load(path, weights_only=True)["metadata"]
    losses = [v["loss"] for v in metadata["validations"]]
    assert [v["step"] for v in metadata["validations"]] == [0, 15, 30]
    assert min(losses[1:]) < 0.8 * losses[0], losses
    assert metadata["best_validation"]["loss"] == min(losses)
    resumed = dataclasses.replace(config, steps=1, learning_rate=0.0, init=str(path))
    again, _ = train_and_save("casp", resumed, tmp_path / "again.pt")
    start = torch.load(again, weights_only=True)["metadata"]["validations"][0]["loss"]
    assert start == pytest.approx(min(losses), rel=1e-4)
