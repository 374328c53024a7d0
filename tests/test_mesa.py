"""MESA and DMESA area matching: areas and their graph, the graph cut, splatting and graphical
area matching, the area matcher on a synthetic pair with exact ground truth, and its fallbacks."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from reloc.datasets.pairs import PairWithGT
from reloc.datasets.synthetic.pairs import PairSampler
from reloc.eval.matching import estimate_relative_pose, relative_pose_error
from reloc.features.base import resize_image
from reloc.features.extractors import images_to_tensor
from reloc.localization.area_matching import Keyframe, lift_matches
from reloc.matching.mesa.areas import AreaConfig, area_graph, covers_image, iou, segment_boxes
from reloc.matching.mesa.dmesa import SplatConfig, area_pairs, refine_box, splat_box
from reloc.matching.mesa.graphcut import binary_energy, minimum_cut_labels
from reloc.matching.mesa.graphical import GraphicalConfig, graphical_area_pairs
from reloc.matching.mesa.matcher import AreaMatcher, AreaMatcherConfig, sampson_distances, smaller_share, square_crop
from reloc.matching.pairwise import PairMatcherConfig, XFeatStarMatcher


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


def test_the_graph_cut_finds_the_hand_computed_optimum():
    # A chain 0 - 1 - 2: node 0 wants label 1 strongly, node 2 wants 0 strongly, node 1 leans to 0
    # (0.4 against 0.6) but is tied to node 0 by 0.5 and to node 2 by 0.1: (1, 1, 0) costs
    # 0 + 0.6 + 0 + 0.1 = 0.7, (1, 0, 0) costs 0 + 0.4 + 0 + 0.5 = 0.9, so the optimum is (1, 1, 0).
    unary = np.array([[1.0, 0.0], [0.4, 0.6], [0.0, 1.0]])
    edges = [(0, 1, 0.5), (1, 2, 0.1)]
    labels = minimum_cut_labels(unary, edges)
    assert labels.tolist() == [1, 1, 0]
    assert binary_energy(unary, edges, labels) == pytest.approx(0.7)


def test_the_graph_cut_matches_brute_force_on_random_small_graphs():
    rng = np.random.default_rng(3)
    for _ in range(30):
        count = int(rng.integers(2, 7))
        unary = rng.uniform(0, 1, (count, 2))
        edges = [
            (i, j, float(rng.uniform(0, 0.6))) for i in range(count) for j in range(i + 1, count) if rng.random() < 0.5
        ]
        every = np.array(np.meshgrid(*[[0, 1]] * count)).reshape(count, -1).T
        optimum = min(binary_energy(unary, edges, labels) for labels in every)
        assert binary_energy(unary, edges, minimum_cut_labels(unary, edges)) == pytest.approx(optimum, abs=1e-3)
    with pytest.raises(ValueError, match="non-negative"):
        minimum_cut_labels(np.zeros((2, 2)), [(0, 1, -1.0)])


def test_graphical_area_matching_pairs_each_area_with_the_one_its_matches_land_in():
    rng = np.random.default_rng(0)
    boxes0 = np.array([[0, 0, 300, 240], [320, 200, 620, 460]], float)
    boxes1 = np.array([[340, 20, 640, 260], [0, 220, 300, 480], [100, 100, 260, 200]], float)
    shift = [np.array([340.0, 20]), np.array([-320.0, 20])]  # area 0 moves right, area 1 moves left
    points0 = np.vstack([rng.uniform(box[:2] + 5, box[2:] - 30, (80, 2)) for box in boxes0])
    points1 = np.vstack([points0[:80] + shift[0], points0[80:] + shift[1]])
    pairs = graphical_area_pairs(
        boxes0, boxes1, points0, points1, np.ones(160), ((640, 480), (640, 480)), AreaConfig(), GraphicalConfig()
    )
    found = {(tuple(box0), tuple(box1)) for box0, box1, _ in pairs}
    assert found == {(tuple(boxes0[0]), tuple(boxes1[0])), (tuple(boxes0[1]), tuple(boxes1[1]))}


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


def test_an_area_whose_matches_spread_over_the_whole_other_image_gets_no_partner():
    """Area A's matches land all over image 1: its splatted box is the root (the whole image), not
    an area, and is dropped; area C's compact matches give C its partner."""
    rng = np.random.default_rng(0)
    in_a, in_c = rng.uniform([60, 60], [200, 200], (300, 2)), rng.uniform([80, 300], [220, 440], (150, 2))
    points0 = np.vstack([in_a, in_c])
    points1 = np.vstack([rng.uniform([0, 0], [640, 480], (300, 2)), in_c + [320, -20]])
    boxes0, sizes = np.array([[50.0, 50, 210, 210], [70.0, 290, 230, 450]]), ((640, 480), (640, 480))
    found = {
        root_side: area_pairs(boxes0, np.zeros((0, 4)), points0, points1, np.ones(450), sizes, SplatConfig(), root_side)
        for root_side in (0.9, 1.0)
    }
    assert len(found[0.9]) == 1 and np.array_equal(found[0.9][0][0], boxes0[1])
    assert len(found[1.0]) == 2 and covers_image(found[1.0][0][1][None], (640, 480), 0.9)[0]


def test_em_refinement_recovers_the_cluster_that_scattered_wrong_matches_hid_from_splatting():
    rng = np.random.default_rng(0)
    cluster = rng.normal([350, 250], [30, 20], (200, 2))  # the true counterpart: mean ± 2 std = [290, 210, 410, 290]
    points = np.vstack([cluster, rng.uniform([0, 0], [640, 480], (60, 2))])
    config = SplatConfig(em_iterations=10)
    splatted = splat_box(points, np.ones(len(points)), (640, 480), config)
    assert splatted.tolist() == [0, 0, 640, 480]  # the strays join everything into one region
    refined = refine_box(points, np.ones(len(points)), (640, 480), splatted, config)
    np.testing.assert_allclose(refined, [290, 210, 410, 290], atol=12)


def test_square_crops_stay_inside_the_image_and_sampson_distance_is_zero_on_the_epipolar_line():
    assert square_crop(np.array([600.0, 400, 640, 480]), (640, 480), 0.1).tolist() == [552, 392, 640, 480]
    fundamental = np.array([[0, 0, 0], [0, 0, -1], [0, 1, 0]], float)  # pure x translation: same row
    distances = sampson_distances(np.array([[10.0, 50], [10, 50]]), np.array([[90.0, 50], [90, 53]]), fundamental)
    assert distances[0] == pytest.approx(0) and distances[1] == pytest.approx(3 / np.sqrt(2))


def test_zoom_compares_the_crops_resolution_with_the_global_pass():
    """1280 x 960 images matched globally at 640 (scale 1/2): a 100-px box crops a 110-px window,
    matched at 256 px, 2.33x its pixels, 4.65x the global pass's; the larger window decides."""
    matcher = AreaMatcher("sift", PairMatcherConfig(resize_max=640), AreaMatcherConfig(crop_size=256, pad=0.1))
    sizes = ((1280, 960), (1280, 960))
    small, large = np.array([500.0, 400, 600, 500]), np.array([100.0, 100, 700, 700])
    assert matcher.zoom(matcher.crop_windows(small, small, sizes), sizes) == pytest.approx(256 / 110 * 2)
    assert matcher.zoom(matcher.crop_windows(small, large, sizes), sizes) == pytest.approx(256 / 660 * 2)
    unscaled = AreaMatcher("sift", PairMatcherConfig(resize_max=0))
    assert unscaled.zoom(unscaled.crop_windows(small, small, sizes), sizes) == pytest.approx(256 / 110)


def test_dmesa_keeps_one_of_the_area_pairs_found_from_both_sides():
    """Area A of image 0 and area B of image 1 hold the same matches (a shift of 300 px): A
    splats onto B and B back onto A, two pairs with the same crops; C, matched elsewhere, stays."""
    rng = np.random.default_rng(0)
    in_a, in_c = rng.uniform([60, 60], [200, 200], (150, 2)), rng.uniform([80, 300], [220, 440], (150, 2))
    points0 = np.vstack([in_a, in_c])
    points1 = np.vstack([in_a + [300, 0], in_c + [320, -20]])
    box_a, box_b = np.array([50.0, 50, 210, 210]), np.array([350.0, 50, 510, 210])
    box_c = np.array([70.0, 290, 230, 450])
    sizes = ((640, 480), (640, 480))
    matcher = AreaMatcher("sift", PairMatcherConfig(resize_max=640), AreaMatcherConfig(method="dmesa"))
    every = AreaMatcher("sift", PairMatcherConfig(resize_max=640), AreaMatcherConfig(duplicate_overlap=1.01))
    both_sides = every.area_pairs(np.stack([box_a, box_c]), box_b[None], points0, points1, sizes)
    kept = matcher.area_pairs(np.stack([box_a, box_c]), box_b[None], points0, points1, sizes)
    assert len(both_sides) == 3 and len(kept) == 2
    ((found0, found1), _), ((other0, _), _) = kept
    assert smaller_share(found0, box_a) > 0.99 and smaller_share(found1, box_b) > 0.99
    assert iou(other0[None], box_c[None])[0, 0] > 0.99


@pytest.fixture(scope="module")
def pair():
    sampler = PairSampler("room", seed=9, width=640, height=480, max_baseline_m=1.0, max_angle_deg=30, min_overlap=0.4)
    return sampler.sample(np.random.default_rng(1))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dmesa", "mesa"])
def test_area_pairs_cover_their_true_counterparts_and_the_matches_are_as_accurate(pair, method):
    matcher = AreaMatcher("sift", PairMatcherConfig(resize_max=640), AreaMatcherConfig(method=method))
    points0, points1 = matcher.match(pair.image0, pair.image1)
    details = matcher.details
    assert details.fallback == "" and any(details.kept_pairs)
    rows, columns = np.nonzero(pair.covisible1)
    seen_at = pair.flow1[rows, columns]  # where each covisible pixel of image 1 is in image 0
    precise, overlaps = 0, []
    for box0, box1 in details.area_pairs:
        x0, y0, x1, y1 = (int(round(v)) for v in box1)
        seen = pair.flow1[y0:y1, x0:x1][pair.covisible1[y0:y1, x0:x1]]
        inside = (seen[:, 0] >= box0[0]) & (seen[:, 0] < box0[2]) & (seen[:, 1] >= box0[1]) & (seen[:, 1] < box0[3])
        precise += inside.mean() >= 0.5
        footprint = (seen_at[:, 0] >= box0[0]) & (seen_at[:, 0] < box0[2])
        footprint &= (seen_at[:, 1] >= box0[1]) & (seen_at[:, 1] < box0[3])
        xs, ys = columns[footprint], rows[footprint]
        true_box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], float)  # box0's true counterpart
        overlaps.append(iou(np.array([box1], float), true_box)[0, 0])
    assert precise >= 0.75 * len(details.area_pairs)
    assert np.median(overlaps) >= 0.4, overlaps  # measured: dmesa 0.45 / 0.55 / 0.69, mesa 0.61 / 0.47 / 0.29
    plain0, plain1 = matcher.matcher.match(pair.image0, pair.image1)
    assert len(points0) > len(plain0)
    truth = PairWithGT("0", "1", 0, 0, pair.camera0.K, pair.camera1.K, pair.cam1_from_cam0)
    errors = [
        relative_pose_error(estimate_relative_pose(p0, p1, truth, (640, 480), (640, 480), 1.0), pair.cam1_from_cam0)
        for p0, p1 in ((plain0, plain1), (points0, points1))
    ]
    assert errors[1] <= max(errors[0] * 1.5, 0.5), errors


def test_xfeat_star_at_two_scales_is_kornias_and_at_one_scale_its_matches_follow_the_true_flow(pair):
    """The two-scale matcher gives exactly kornia's ``match_xfeat_star`` (whose helpers it calls,
    with reloc's numpy mutual NN in place of kornia's);
    the one-scale matcher of XFeat*'s area crops lands on the true flow as often (measured: 87 % of
    1628 covisible matches within 3 px of it, two scales 84 % of 1857; the flow read at the pixel
    holding the match)."""
    both = XFeatStarMatcher(PairMatcherConfig(resize_max=640))
    points0, points1 = both.match(pair.image0, pair.image1)
    images = (pair.image0, pair.image1)
    (resized0, scale0), (resized1, scale1) = (resize_image(image, 640, 32, enlarge=True) for image in images)
    kornia0, kornia1 = both.model.match_xfeat_star(images_to_tensor([resized0]), images_to_tensor([resized1]), 4096)
    assert np.array_equal(points0, (kornia0.double().numpy() + 0.5) * scale0)
    assert np.array_equal(points1, (kornia1.double().numpy() + 0.5) * scale1)
    one0, one1 = XFeatStarMatcher(PairMatcherConfig(resize_max=640, multiscale=False)).match(pair.image0, pair.image1)
    columns, rows = np.clip(one1.astype(int), 0, [639, 479]).T
    covisible = pair.covisible1[rows, columns]
    errors = np.linalg.norm(pair.flow1[rows, columns][covisible] - one0[covisible], axis=1)
    assert covisible.sum() >= 300 and np.mean(errors < 3) >= 0.8


def test_area_crops_come_from_the_wrapped_matchers_defaults_unless_the_config_sets_them():
    xfeat, sift, casp = AreaMatcher("xfeat-star"), AreaMatcher("sift"), AreaMatcher("casp")
    assert (xfeat.max_area_pairs, xfeat.crop_size, xfeat.crop_matcher.config.multiscale) == (1, 640, False)
    assert xfeat.crop_matcher.config.max_keypoints == xfeat.matcher.config.max_keypoints
    assert xfeat.matcher.config.multiscale and (sift.max_area_pairs, sift.crop_size) == (3, 256)
    assert (sift.crop_matcher.config.max_keypoints, sift.matcher.config.max_keypoints) == (512, 4096)
    assert (casp.max_area_pairs, casp.crop_size) == (3, 256)
    assert casp.crop_matcher.config.max_keypoints == casp.matcher.config.max_keypoints
    chosen = AreaMatcher("xfeat-star", config=AreaMatcherConfig(max_area_pairs=2, crop_size=384, crop_keypoints=1024))
    crop_config = chosen.crop_matcher.config
    assert (chosen.max_area_pairs, crop_config.resize_max, crop_config.max_keypoints) == (2, 384, 1024)


@pytest.mark.parametrize("method", ["dmesa", "mesa"])
def test_area_pairs_below_the_minimum_zoom_are_skipped_and_the_details_say_so(pair, method):
    config = AreaMatcherConfig(method=method, min_zoom=50.0)
    matcher = AreaMatcher("sift", PairMatcherConfig(resize_max=640), config)
    points0, _ = matcher.match(pair.image0, pair.image1)
    plain0, _ = matcher.matcher.match(pair.image0, pair.image1)
    assert matcher.details.area_pairs == [] and len(points0) == len(plain0)
    assert re.fullmatch(
        r"none of \d+ area pairs is matched at 50.0x the global resolution or more", matcher.details.fallback
    )


def test_without_global_matches_the_plain_matches_come_back_and_the_details_say_why():
    matcher = AreaMatcher("sift", PairMatcherConfig(resize_max=320))
    flat = np.full((240, 320, 3), 128, np.uint8)
    points0, points1 = matcher.match(flat, flat)
    assert len(points0) == len(points1) == 0
    assert matcher.details.fallback == "0 global matches, fewer than 16"


def test_a_flat_image_against_a_textured_one_falls_back_to_the_plain_matches():
    textured = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    matcher = AreaMatcher("sift", PairMatcherConfig(resize_max=320), AreaMatcherConfig(method="mesa"))
    points0, _ = matcher.match(textured, np.full((240, 320, 3), 128, np.uint8))
    assert len(points0) == 0 and matcher.details.fallback.startswith("0 global matches")


def test_an_unknown_area_matching_method_is_refused():
    with pytest.raises(ValueError, match="'sam'.*dmesa or mesa"):
        AreaMatcher("sift", config=AreaMatcherConfig(method="sam"))


def test_matches_lift_to_the_nearest_observation_once_per_landmark():
    observations = np.array([[100.0, 100], [200, 200], [300, 300]])
    keyframe = Keyframe(
        np.zeros((480, 640, 3), np.uint8), 2.0, 1280, cKDTree(observations), np.array([7, 8, 9]), observations
    )
    keyframe_points = np.array([[101.0, 100], [200, 202], [199, 200], [320, 300]])  # radius: 3 px at 640 = 6 px
    query_points = np.array([[51.0, 50], [100, 101], [99, 100], [160, 150]])
    lifted, ids, distances = lift_matches(query_points, keyframe_points, keyframe, 640, 3.0)
    assert ids.tolist() == [7, 8]  # the fourth is 20 px from any observation; landmark 8 keeps its nearest lift
    np.testing.assert_allclose(lifted, [[50.5, 50], [99.5, 100]])  # offsets halved: the query is half the size
    np.testing.assert_allclose(distances, [1, 1])


def test_an_image_met_again_is_not_segmented_again_and_gets_the_same_areas():
    matcher = AreaMatcher("sift", config=AreaMatcherConfig(cached_images=1))
    painted = np.full((480, 640, 3), 200, np.uint8)
    painted[60:260, 80:300] = (200, 30, 30)
    other = painted.copy()
    other[250:430, 380:600] = (20, 60, 220)
    first = matcher.segment(painted)
    again = matcher.segment(painted.copy())
    assert matcher.details.segmented == 1 and np.array_equal(first, again)
    matcher.segment(other)
    matcher.segment(painted)  # the cache holds one image: the other one pushed this one out
    assert matcher.details.segmented == 3


@pytest.mark.parametrize("method, reason", [("dmesa", "every area pair disagreed"), ("mesa", "no area pair")])
def test_a_pair_without_overlap_falls_back_to_the_plain_matches_and_says_why(pair, method, reason):
    other = PairSampler("room", seed=4, width=640, height=480, max_baseline_m=1.0, max_angle_deg=30, min_overlap=0.4)
    unrelated = other.sample(np.random.default_rng(2)).image1  # another room: the few matches are wrong
    matcher = AreaMatcher("sift", PairMatcherConfig(resize_max=640), AreaMatcherConfig(method=method))
    points0, _ = matcher.match(pair.image0, unrelated)
    assert matcher.details.fallback.startswith(reason)
    assert len(points0) == matcher.details.global_matches and matcher.details.area_matches == 0


@pytest.mark.parametrize("name, threads, overlapped", [("sift", 2, True), ("sift", 1, False), ("xfeat-star", 2, False)])
def test_around_rootsift_on_two_threads_areas_are_segmented_while_the_global_pass_runs(pair, name, threads, overlapped):
    """The global pass waits (up to 5 s) for a segmentation to have started: around RootSIFT on
    two torch threads one has; on one thread, or around XFeat* (whose global pass takes every
    torch thread), none starts before the global pass ends. The matches are the same."""
    matcher = AreaMatcher(name)
    segmentation_started = threading.Event()
    segment, global_match = matcher.segment, matcher.matcher.match
    seen_during_global_pass = []

    def recording_segment(image):
        segmentation_started.set()
        return segment(image)

    def waiting_global_match(image0, image1):
        seen_during_global_pass.append(segmentation_started.wait(5 if overlapped else 0.5))
        return global_match(image0, image1)

    matcher.segment, matcher.matcher.match = recording_segment, waiting_global_match
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        points0, points1 = matcher.match(pair.image0, pair.image1)
        reference = AreaMatcher(name).match(pair.image0, pair.image1)
    finally:
        torch.set_num_threads(before)
    assert seen_during_global_pass == [overlapped]
    assert matcher.details.areas[0] > 0 and not matcher.details.fallback
    assert np.array_equal(points0, reference[0]) and np.array_equal(points1, reference[1])
