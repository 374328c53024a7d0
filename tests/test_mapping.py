"""Mapping: tracks, triangulation with known poses and its filters, keyframes and covisible pairs."""

from __future__ import annotations

import numpy as np

from reloc.mapping.keyframes import covisible_pairs, select_keyframes
from reloc.mapping.tracks import build_tracks, epipolar_errors
from reloc.mapping.triangulation import TriangulationConfig, triangulate_tracks

from .cameras import posed_frames


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
    landmarks = triangulate_tracks(
        frames, keypoints, tracks, TriangulationConfig(max_reprojection_px=2.0, min_angle_deg=1.0)
    )
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


def test_tracks_come_in_the_order_of_their_first_match_each_sorted_by_image():
    pair_matches = {
        (1, 2): np.array([[5, 7]]),
        (0, 1): np.array([[3, 5], [4, 6]]),
        (0, 2): np.array([[9, 9]]),
        (2, 3): np.zeros((0, 2), int),
    }
    assert build_tracks(pair_matches) == [[(0, 3), (1, 5), (2, 7)], [(0, 4), (1, 6)], [(0, 9), (2, 9)]]
    assert build_tracks({(0, 1): np.zeros((0, 2), int)}) == [] == build_tracks({})
    chain = {(0, 1): np.array([[0, 0]]), (1, 2): np.array([[0, 0]]), (0, 2): np.array([[1, 0]])}
    assert build_tracks(chain) == [[(1, 0), (2, 0)]]  # image 0 twice in the chain: neither kept there
