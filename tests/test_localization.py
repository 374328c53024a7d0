"""Localization: PnP against exact synthetic correspondences, 2D-3D matching in retrieval order, the
keyframe-rounds loop."""

from __future__ import annotations

import numpy as np

from reloc.features.base import Features
from reloc.features.quantize import Float16Codec
from reloc.geometry.errors import pose_error
from reloc.geometry.projection import backproject_depth
from reloc.localization.guided import ViewedKeyframes
from reloc.localization.pnp import PnPConfig, estimate_pose
from reloc.localization.rounds import localize_in_rounds
from reloc.localization.stages import correspondences_2d3d
from reloc.mapping.store import KeyframeEntry, read_sparse_map, write_landmarks
from reloc.matching import MatcherConfig, build_matcher
from reloc.types import Camera

from .cameras import CAMERA, look_at


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


def test_correspondences_follow_retrieval_order_and_stop_when_enough(tmp_path):
    descriptors = np.eye(6, dtype=np.float32)
    query = Features(np.zeros((6, 2), np.float32), descriptors, np.ones(6, np.float32))
    camera = Camera("PINHOLE", 640, 480, (500.0, 500.0, 320.0, 240.0))
    keyframes = [
        ("a", KeyframeEntry(camera, np.zeros((2, 2), np.float32), np.array([10, 12]), descriptors[[0, 2]])),
        ("b", KeyframeEntry(camera, np.zeros((3, 2), np.float32), np.array([20, 21, 22]), descriptors[3:])),
    ]
    write_landmarks(tmp_path / "landmarks.h5", "sift", np.zeros((23, 3)), np.zeros(23), Float16Codec(), keyframes)
    sparse_map = read_sparse_map(tmp_path / "landmarks.h5")
    matcher = build_matcher(MatcherConfig(), "sift")
    keypoints, landmarks = correspondences_2d3d(query, ["a", "b"], sparse_map, matcher, (640, 480))
    assert sorted(zip(keypoints.tolist(), landmarks.tolist())) == [(0, 10), (2, 12), (3, 20), (4, 21), (5, 22)]
    keypoints, landmarks = correspondences_2d3d(query, ["a", "b"], sparse_map, matcher, (640, 480), enough=2)
    assert sorted(landmarks.tolist()) == [10, 12]  # "a" gives two correspondences; "b" is never matched


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


def keyframe_spans(seed: int, eye_x: float, spans: dict[str, int]):
    """A query at (``eye_x``, -3, 0.5) looking at (0, 0, 0.5), 300 landmarks in the unit cube seen
    by it, and per keyframe of ``spans`` matches (keypoint index, landmark id) to the next
    ``spans[name]`` landmarks, keyframe after keyframe. Returns the generator (for the test's own
    draws), the true pose, the landmarks, the query keypoints and the matches."""
    rng = np.random.default_rng(seed)
    truth = look_at(np.array([eye_x, -3.0, 0.5]), [0, 0, 0.5])
    points = rng.uniform(-1, 1, (300, 3))
    keypoints = CAMERA.project(truth.transform(points))
    ends = np.cumsum(list(spans.values()))
    matches = {name: (np.arange(end - n, end),) * 2 for (name, n), end in zip(spans.items(), ends)}
    return rng, truth, points, keypoints, matches


def test_localization_rounds_go_on_only_while_pnp_fails():
    rng = np.random.default_rng(0)
    truth = look_at(np.array([0.0, -3.0, 0.5]), [0, 0, 0.5])
    points = rng.uniform(-1, 1, (200, 3))
    keypoints = CAMERA.project(truth.transform(points))
    wrong = rng.permutation(200)[:100]  # keypoints 0-99 matched to the wrong landmarks
    matches = {
        "a": (np.arange(50), wrong[:50]),
        "b": (np.arange(50, 100), wrong[50:]),
        "c": (np.arange(100, 150), np.arange(100, 150)),
        "d": (np.arange(150, 200), np.arange(150, 200)),
        "e": None,
    }
    pnp = PnPConfig(max_error_px=2.0, min_inliers=30)
    calls = []
    outcome = localize_in_rounds(
        "q", ["a", "b", "c", "d", "e"], cumulative(matches, keypoints, calls), points, CAMERA, pnp, 2
    )
    assert calls == [["a", "b"], ["c", "d"]]  # "e" is never matched: round 2 found the pose
    assert outcome.rounds[0].inliers < 30 <= outcome.rounds[1].inliers
    assert outcome.rounds[1].correspondences == 200 and len(outcome.landmark_ids) == 200
    dt, dr = pose_error(outcome.estimate.pose, truth)
    assert dt < 1e-3 and dr < 0.01
    calls.clear()
    outcome = localize_in_rounds(
        "q", ["c", "d", "a", "b"], cumulative(matches, keypoints, calls), points, CAMERA, pnp, 2
    )
    assert calls == [["c", "d"]] and outcome.estimate.pose is not None


def test_localization_rounds_go_on_until_a_confident_pose():
    _, _, points, keypoints, matches = keyframe_spans(2, 0.5, {"a": 40, "b": 100, "c": 160})
    outcome = localize_in_rounds(
        "q",
        ["a", "b", "c"],
        cumulative(matches, keypoints, []),
        points,
        CAMERA,
        PnPConfig(max_error_px=2.0, min_inliers=20),
        keyframes_per_round=1,
        confident_inliers=100,
    )
    assert [r.inliers for r in outcome.rounds] == [40, 140]  # 40 inliers is a pose, not yet a confident one
    assert outcome.estimate.inliers.sum() == 140 and len(outcome.points2d) == 140


def test_localization_rounds_keep_the_round_with_the_most_inliers():
    rng, _, points, keypoints, matches = keyframe_spans(3, 0.2, {"a": 60, "b": 240})
    keypoints[60:] += rng.uniform(-200, 200, (240, 2))  # round 2 adds only outliers
    outcome = localize_in_rounds(
        "q",
        ["a", "b"],
        cumulative(matches, keypoints, []),
        points,
        CAMERA,
        PnPConfig(max_error_px=2.0, min_inliers=20),
        keyframes_per_round=1,
        confident_inliers=100,
    )
    assert len(outcome.rounds) == 2 and outcome.estimate.inliers.sum() == 60 and len(outcome.points2d) == 60
    result = outcome.query_result("q", ["a", "b"])  # the answer's round, and every round in the record
    assert result.num_inliers == 60 and result.record.num_matches == 60 and len(result.record.inlier_landmarks) == 60
    assert [r.correspondences for r in result.record.rounds] == [60, 300] and result.record.retrieved == ["a", "b"]


def test_localization_rounds_report_failure_after_the_last_round():
    rng = np.random.default_rng(1)
    points = rng.uniform(-1, 1, (100, 3))
    keypoints = rng.uniform(0, 480, (100, 2))
    matches = {name: (np.arange(100), rng.permutation(100)) for name in "abc"}
    outcome = localize_in_rounds(
        "q", ["a", "b", "c"], cumulative(matches, keypoints, []), points, CAMERA, PnPConfig(min_inliers=30), 1
    )
    assert outcome.estimate.pose is None and outcome.estimate.reason.startswith(("too few inliers", "PnP RANSAC"))
    assert len(outcome.rounds) == 3


def visible_points(pose, rng, count: int, depth=(2.0, 6.0)) -> np.ndarray:
    """World points (count, 3) in front of ``pose`` spread over CAMERA's image at the given depths."""
    pixels = rng.uniform([0, 0], [CAMERA.width, CAMERA.height], (count, 2))
    depths = rng.uniform(*depth, count)
    return backproject_depth(pixels, depths, pose, CAMERA)


def test_a_right_pose_is_confident_and_chance_inliers_are_not(rng):
    """Exact matches spread over the image: confidence in the hundreds, the focal they fit is the
    given one. Matches of another scene (random pixels) that PnP still fits with 20+ inliers
    bunched in a corner: refused as not confident, naming the evidence."""
    pose = look_at(np.array([0.3, -3.0, 1.2]), [0, 0, 1.0])
    points = visible_points(pose, rng, 300)
    pixels = CAMERA.project(pose.transform(points)) + rng.normal(0, 0.5, (300, 2))
    right = estimate_pose(pixels, points, CAMERA, PnPConfig(min_confidence=20))
    evidence = right.evidence
    assert right.pose is not None and evidence.inliers > 280 and evidence.matches == 300
    assert evidence.confidence > 500 and evidence.coverage > 0.9 and abs(evidence.focal_ratio - 1) < 0.01
    assert evidence.median_error_px < 1.0
    bunched = rng.uniform([0, 0], [90, 70], (25, 2))  # true matches in one corner (a shared poster)...
    landmarks = backproject_depth(bunched, rng.uniform(2, 6, 25), pose, CAMERA)
    random_pixels = rng.uniform([0, 0], [CAMERA.width, CAMERA.height], (275, 2))  # ...among wrong ones
    other = estimate_pose(
        np.concatenate([bunched, random_pixels]),
        np.concatenate([landmarks, points[:275]]),
        CAMERA,
        PnPConfig(min_confidence=20),
    )
    assert other.evidence.inliers >= 20 and other.evidence.coverage < 0.1 and other.pose is None
    assert other.reason.startswith("pose not confident: confidence") and "covering" in other.reason


def test_pnp_refuses_a_pose_from_a_wrong_focal_length(rng):
    """Matches seen by a 500 px camera, localized with a 400 px focal: PnP still finds a pose
    with many inliers, but the matches fit 500 px far better; the pose is refused naming that
    focal. With the right focal the same matches give an accepted pose."""
    pose = look_at(np.array([0.3, -3.0, 1.2]), [0, 0, 1.0])
    points = visible_points(pose, rng, 400, depth=(1.5, 8.0))
    pixels = CAMERA.project(pose.transform(points)) + rng.normal(0, 0.5, (400, 2))
    wrong_focal = Camera.simple_pinhole(640, 480, 400)
    refused = estimate_pose(pixels, points, wrong_focal, PnPConfig())
    assert refused.pose is None and refused.evidence.inliers >= 20, refused.reason
    assert (
        "the matches fit a focal length of 498 px (x1.25)" in refused.reason
        and "check the query's intrinsics" in refused.reason
    )
    assert estimate_pose(pixels, points, CAMERA, PnPConfig()).pose is not None


def test_a_guided_round_follows_only_unconfident_rounds_and_can_give_the_answer():
    """Retrieval's keyframes give a pose with 30 inliers (not confident at 100): the guided round
    gets that pose and the keyframes already matched, and its keyframe's 200 matches give the
    answer. A confident first round never calls it."""
    _, truth, points, keypoints, matches = keyframe_spans(4, 0.3, {"a": 30, "b": 30, "g": 200})
    asked = []

    def guided(pose, matched):
        asked.append((pose, set(matched)))
        return ["g", "a"]  # more than a round: cut to keyframes_per_round

    calls = []
    pnp = PnPConfig(max_error_px=2.0, min_inliers=20, min_confidence=0)
    outcome = localize_in_rounds(
        "q", ["a", "b"], cumulative(matches, keypoints, calls), points, CAMERA, pnp, 1, 100, guided
    )
    assert calls == [["a"], ["b"], ["g"]] and len(asked) == 1
    pose, matched = asked[0]
    assert matched == {"a", "b"} and pose_error(pose, truth)[0] < 1e-3
    assert [r.inliers for r in outcome.rounds] == [30, 60, 260] and outcome.estimate.inliers.sum() == 260
    asked.clear()
    outcome = localize_in_rounds(
        "q", ["g", "a"], cumulative(matches, keypoints, []), points, CAMERA, pnp, 1, 100, guided
    )
    assert asked == [] and len(outcome.rounds) == 1


def test_viewed_keyframes_rank_by_the_landmarks_a_pose_sees(tmp_path):
    """Keyframe "most" observes 40 landmarks in the query's view, "some" 10 (and 30 behind the
    camera), "none" only landmarks behind it: ranked most, some; "none" and excluded ones are left out."""
    rng = np.random.default_rng(5)
    query = look_at(np.array([0.0, -3.0, 0.5]), [0, 0, 0.5])
    seen = visible_points(query, rng, 50)
    behind = query.inverse().transform(np.column_stack([rng.uniform(-1, 1, (40, 2)), rng.uniform(-5, -1, 40)]))
    points = np.vstack([seen, behind])  # ids 0-49 in view, 50-89 behind the camera
    observed = {"none": np.arange(50, 90), "some": np.r_[40:50, 50:80], "most": np.arange(40)}
    entries = [
        (
            name,
            KeyframeEntry(CAMERA, np.zeros((len(ids), 2), np.float32), ids, np.eye(128, dtype=np.float32)[: len(ids)]),
        )
        for name, ids in observed.items()
    ]
    write_landmarks(tmp_path / "landmarks.h5", "sift", points, np.zeros(len(points)), Float16Codec(), entries)
    viewed = ViewedKeyframes(read_sparse_map(tmp_path / "landmarks.h5"))
    assert viewed.rank(query, set(), CAMERA) == ["most", "some"]
    assert viewed.rank(query, {"most"}, CAMERA) == ["some"]
