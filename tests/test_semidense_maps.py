"""Semi-dense maps: keyframes' 1/8 grids matched by CasP + HomoMatcher and triangulated with the
known poses lie on the true surface; queries localize against them; stored keyframe features
that are missing or from other checkpoints are refused by name."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from reloc import api
from reloc.datasets import load_dataset, read_depth_mm
from reloc.datasets.synthetic.generate import SynthConfig, generate
from reloc.errors import RelocError
from reloc.geometry.errors import pose_error
from reloc.mapping.keyframe_features import KeyframeFeatures, write_keyframe_features
from reloc.mapping.semidense import SemiDenseMappingConfig, cell_centres, cell_indices, triangulate_semidense
from reloc.matching.pairwise import CaspPairMatcher, PairMatcherConfig

from .overlap import mapped_share


def test_cell_centres_and_indices_agree():
    centres = cell_centres((32, 16))
    assert centres.shape == (8, 2) and centres[5].tolist() == [12.0, 12.0]
    jittered = centres + np.random.default_rng(0).uniform(-3.9, 3.9, centres.shape)
    assert cell_indices(jittered, (32, 16)).tolist() == list(range(8))


@pytest.mark.slow
def test_semidense_landmarks_lie_on_the_true_surface(tmp_path):
    config = SynthConfig("7scenes", seed=8, mapping_frames=12, query_frames=1, mapping_sequences=1, query_sequences=1)
    generate(config, tmp_path / "scene")
    frames = load_dataset("7scenes", tmp_path / "scene").frames("train")
    keypoints, landmarks, _ = triangulate_semidense(
        frames, SemiDenseMappingConfig(neighbours=3), tmp_path / "keyframe_features.h5"
    )
    assert len(landmarks.points) > 500
    relative_errors = []
    for point, observations in zip(landmarks.points, landmarks.observations):
        frame = frames[int(observations[0][0])]
        x, y = keypoints[int(observations[0][0])][int(observations[0][1])]
        depth = read_depth_mm(frame.depth_path)[int(y), int(x)]
        relative_errors.append(abs(frame.pose.transform(point[None])[0, 2] - depth) / depth)
    relative_errors = np.array(relative_errors)
    assert np.median(relative_errors) < 0.01 and np.mean(relative_errors < 0.05) > 0.9, (
        np.median(relative_errors),
        np.mean(relative_errors < 0.05),
    )


@pytest.mark.slow
def test_a_semidense_map_localizes_the_synthetic_queries(tmp_path):
    """``configs/casp.yaml`` end to end on a small synthetic room: queries the mapping
    frames saw are localized within 5 cm and 2 degrees."""
    config = SynthConfig("7scenes", seed=8, mapping_frames=30, query_frames=8, mapping_sequences=1, query_sequences=1)
    generate(config, tmp_path / "scene")
    evaluation = api.evaluate("casp", "7scenes", tmp_path / "scene", tmp_path / "run")
    truth = load_dataset("7scenes", tmp_path / "scene").ground_truth()
    shares = mapped_share(tmp_path / "scene")
    seen = [result for result in evaluation.results if shares[result.name] > 0.3]
    assert len(seen) >= 2
    for result in seen:
        assert result.pose is not None, result.reason
        dt, dr = pose_error(result.pose, truth[result.name].pose)
        assert dt < 0.05 and dr < 2.0, (result.name, dt, dr)


def test_keyframe_features_missing_or_from_other_checkpoints_are_refused_by_name(tmp_path):
    matcher = CaspPairMatcher(PairMatcherConfig(resize_max=320))
    path = tmp_path / "keyframe_features.h5"
    with pytest.raises(RelocError, match=f"{path}: keyframe features missing"):
        KeyframeFeatures(path, matcher)
    image = (np.random.default_rng(0).uniform(0, 255, (240, 320, 3))).astype(np.uint8)
    write_keyframe_features(path, matcher, [("room/frame-000000.color.png", matcher.prepare(image))])
    stored = KeyframeFeatures(path, matcher).read("room/frame-000000.color.png")
    assert stored.fine.shape == (1, matcher.fine.config.fine_dim, 128, 160) and stored.pyramid.size == (320, 256)
    with h5py.File(path, "a") as file:
        file.attrs["digest"] = "0123456789abcdef"
    with pytest.raises(RelocError, match=f"{path}: keyframe features computed by checkpoints 0123456789abcdef"):
        KeyframeFeatures(path, matcher)
    with pytest.raises(RelocError, match="rebuild the map with this matcher"):
        KeyframeFeatures(path, CaspPairMatcher(PairMatcherConfig(resize_max=640)))
