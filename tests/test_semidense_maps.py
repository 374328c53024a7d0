"""Semi-dense maps (work in progress): CasP matches between keyframes snapped to a grid and
triangulated with the known poses lie on the true surface."""

from __future__ import annotations

import numpy as np
import pytest

from reloc import api
from reloc.datasets import load_dataset, read_depth_mm
from reloc.datasets.synthetic.generate import SynthConfig, generate
from reloc.geometry.errors import pose_error
from reloc.mapping.semidense import GridKeypoints, SemiDenseMappingConfig, triangulate_semidense

from .overlap import mapped_share


def test_matches_in_one_cell_merge_into_one_keypoint_at_their_mean():
    grid = GridKeypoints(images=1, grid_px=4.0)
    first = grid.add(0, np.array([[1.0, 1.0], [5.0, 1.0]]))
    second = grid.add(0, np.array([[3.0, 3.0], [6.0, 2.0]]))
    assert first.tolist() == [0, 1] and second.tolist() == [0, 1]
    np.testing.assert_allclose(grid.keypoints(0), [[2.0, 2.0], [5.5, 1.5]])


@pytest.mark.slow
def test_semidense_landmarks_lie_on_the_true_surface(tmp_path):
    config = SynthConfig("7scenes", seed=8, mapping_frames=12, query_frames=1, mapping_sequences=1, query_sequences=1)
    generate(config, tmp_path / "scene")
    frames = load_dataset("7scenes", tmp_path / "scene").frames("train")
    keypoints, landmarks = triangulate_semidense(frames, SemiDenseMappingConfig(neighbours=3))
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
    """``configs/casp-semidense.yaml`` end to end on a small synthetic room: queries the mapping
    frames saw are localized within 5 cm and 2 degrees."""
    config = SynthConfig("7scenes", seed=8, mapping_frames=30, query_frames=8, mapping_sequences=1, query_sequences=1)
    generate(config, tmp_path / "scene")
    evaluation = api.evaluate("casp-semidense", "7scenes", tmp_path / "scene", tmp_path / "run")
    truth = load_dataset("7scenes", tmp_path / "scene").ground_truth()
    shares = mapped_share(tmp_path / "scene")
    seen = [result for result in evaluation.results if shares[result.name] > 0.3]
    assert len(seen) >= 2
    for result in seen:
        assert result.pose is not None, result.reason
        dt, dr = pose_error(result.pose, truth[result.name].pose)
        assert dt < 0.05 and dr < 2.0, (result.name, dt, dr)
