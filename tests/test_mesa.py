"""DMESA area matching: areas and their graph, splatting, the area matcher on a synthetic pair
with exact ground truth, and its fallbacks."""

from __future__ import annotations

import numpy as np
import pytest

from reloc.datasets.pairs import PairWithGT
from reloc.datasets.synthetic.pairs import PairSampler
from reloc.eval.matching import estimate_relative_pose, relative_pose_error
from reloc.matching.mesa.areas import AreaConfig, area_graph, iou, segment_boxes
from reloc.matching.mesa.dmesa import SplatConfig, splat_box
from reloc.matching.mesa.matcher import AreaMatcher, sampson_distances, square_crop
from reloc.matching.pairwise import PairMatcherConfig


def test_area_graph_levels_parents_and_adjacency_follow_the_boxes():
    boxes = np.array(
        [
            [0, 0, 560, 420],  # side 560: level 1
            [20, 20, 320, 300],  # 300: level 3 (between 256 and 390, nearer 256), inside the first
            [200, 40, 480, 300],  # 280: level 3, overlaps the second
            [40, 40, 160, 140],  # 120: level 4, inside the second (and the first)
        ],
        float,
    )
    graph = area_graph(boxes, (640, 480), AreaConfig())
    assert graph.level.tolist() == [0, 1, 3, 3, 4]
    assert graph.parent.tolist() == [-1, 0, 1, 1, 2]
    assert graph.adjacency == [(2, 3)]


def test_segmentation_finds_the_boxes_of_painted_regions():
    image = np.full((480, 640, 3), 200, np.uint8)
    image[60:260, 80:300] = (200, 30, 30)
    image[250:430, 380:600] = (20, 60, 220)
    boxes = segment_boxes(image, AreaConfig())
    for painted in ([80, 60, 300, 260], [380, 250, 600, 430]):
        assert iou(np.array([painted], float), boxes).max() > 0.85, boxes


def test_a_flat_image_has_no_areas():
    assert len(segment_boxes(np.full((240, 320, 3), 90, np.uint8), AreaConfig())) == 0


def test_splatting_boxes_the_dense_cluster_and_ignores_a_stray_match():
    rng = np.random.default_rng(0)
    cluster = rng.uniform([300, 200], [420, 300], (200, 2))
    points = np.vstack([cluster, [[30.0, 30.0]]])
    box = splat_box(points, np.ones(len(points)), (640, 480), SplatConfig())
    assert box[0] <= 300 and box[1] <= 200 and box[2] >= 420 and box[3] >= 300
    assert box[0] > 200 and box[1] > 100 and box[2] < 520 and box[3] < 400  # blur and a cell of margin, no stray


def test_square_crops_stay_inside_the_image_and_sampson_distance_is_zero_on_the_epipolar_line():
    assert square_crop(np.array([600.0, 400, 640, 480]), (640, 480), 0.1).tolist() == [552, 392, 640, 480]
    fundamental = np.array([[0, 0, 0], [0, 0, -1], [0, 1, 0]], float)  # pure x translation: same row
    distances = sampson_distances(np.array([[10.0, 50], [10, 50]]), np.array([[90.0, 50], [90, 53]]), fundamental)
    assert distances[0] == pytest.approx(0) and distances[1] == pytest.approx(3 / np.sqrt(2))


@pytest.fixture(scope="module")
def pair():
    sampler = PairSampler("room", seed=9, width=640, height=480, max_baseline_m=1.0, max_angle_deg=30, min_overlap=0.4)
    return sampler.sample(np.random.default_rng(1))


@pytest.mark.slow
def test_dmesa_area_pairs_cover_their_true_counterparts_and_its_matches_are_as_accurate(pair):
    matcher = AreaMatcher("sift", PairMatcherConfig(resize_max=640))
    points0, points1 = matcher.match(pair.image0, pair.image1)
    details = matcher.details
    assert details.fallback == "" and any(details.kept_pairs)
    precise = 0
    for box0, box1 in details.area_pairs:
        x0, y0, x1, y1 = (int(round(v)) for v in box1)
        seen = pair.flow1[y0:y1, x0:x1][pair.covisible1[y0:y1, x0:x1]]
        inside = (seen[:, 0] >= box0[0]) & (seen[:, 0] < box0[2]) & (seen[:, 1] >= box0[1]) & (seen[:, 1] < box0[3])
        precise += inside.mean() >= 0.5
    assert precise >= 0.75 * len(details.area_pairs)
    plain0, plain1 = matcher.matcher.match(pair.image0, pair.image1)
    assert len(points0) > len(plain0)
    truth = PairWithGT("0", "1", 0, 0, pair.camera0.K, pair.camera1.K, pair.cam1_from_cam0)
    errors = [
        relative_pose_error(estimate_relative_pose(p0, p1, truth, (640, 480), (640, 480), 1.0), pair.cam1_from_cam0)
        for p0, p1 in ((plain0, plain1), (points0, points1))
    ]
    assert errors[1] <= max(errors[0] * 1.5, 0.5), errors


def test_without_global_matches_the_plain_matches_come_back_and_the_details_say_why():
    matcher = AreaMatcher("sift", PairMatcherConfig(resize_max=320))
    flat = np.full((240, 320, 3), 128, np.uint8)
    points0, points1 = matcher.match(flat, flat)
    assert len(points0) == len(points1) == 0
    assert matcher.details.fallback == "0 global matches, fewer than 16"
