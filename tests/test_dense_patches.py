"""Dense descriptor fields of the pretrained backbones and the landmark patches kept for FaVoR,
checked against sparse descriptors of the same networks and exact synthetic ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from reloc.cli import app
from reloc.datasets import load_dataset
from reloc.datasets.synthetic.generate import SynthConfig, generate
from reloc.datasets.synthetic.pairs import PairSampler
from reloc.errors import RelocError
from reloc.features.base import prepare_image
from reloc.features.dense import dense_backbone
from reloc.features.extractors import EXTRACTORS, ExtractorConfig, images_to_tensor
from reloc.mapping.patches import observations_to_keep, persistent_landmarks, read_landmark_patches
from reloc.mapping.store import read_sparse_map


@pytest.fixture(scope="module")
def pair():
    return PairSampler(
        "room", seed=4, width=480, height=352, max_baseline_m=0.3, max_angle_deg=10, min_overlap=0.6
    ).sample(np.random.default_rng(1))


def test_aliked_head_as_matrix_products_equals_kornias_head_up_to_the_borders(pair):
    """The channels-last evaluation of ALIKED's descriptor head against kornia's own
    ``extract_dense_map`` + ``SDDH``, at points spread over the image and within a pixel of
    (and beyond) its borders, where patches are clamped and samples zero-padded."""
    backbone = dense_backbone("aliked")
    images = images_to_tensor([pair.image0])
    height, width = pair.image0.shape[:2]
    generator = torch.Generator().manual_seed(0)
    points = torch.cat(
        [
            torch.rand(300, 2, generator=generator) * torch.tensor([width - 1.0, height - 1.0]),
            torch.rand(40, 2, generator=generator) * 2 - 1,
            torch.tensor([width - 1.0, height - 1.0]) + torch.rand(40, 2, generator=generator) * 2 - 1,
        ]
    )
    with torch.inference_mode():
        ours = backbone.sample(backbone.feature_map(images), points, (width, height))
        dense, _ = backbone.model.extract_dense_map(images)
        normalised = 2 * points / torch.tensor([width - 1.0, height - 1.0]) - 1
        theirs = torch.nn.functional.normalize(backbone.model.desc_head(dense, [normalised])[0][0], dim=-1)
    torch.testing.assert_close(ours, theirs, atol=5e-5, rtol=0)


def test_aliked_levels_give_kornias_dense_map_pixel_by_pixel(pair):
    """The pixels computed from ALIKED's levels where they are read equal kornia's whole dense
    map (upsampled, concatenated, L2-normalised), on an image padded to a multiple of 32."""
    backbone = dense_backbone("aliked")
    images = images_to_tensor([np.ascontiguousarray(pair.image0[:-7, :-13])])
    height, width = images.shape[-2:]
    with torch.inference_mode():
        levels = backbone.feature_map(images)
        ours = levels.pixels(torch.arange(height * width)).reshape(height, width, -1)
        dense, _ = backbone.model.extract_dense_map(images)
        theirs = torch.nn.functional.normalize(dense[0], dim=0).permute(1, 2, 0)
        index = torch.tensor([5, 5, width * height - 1, 77])
        table, rows = levels.gather(index)
    assert (height % 32, width % 32) != (0, 0), "the crop must need padding"
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    assert len(table) == 3
    torch.testing.assert_close(table[rows], ours.reshape(height * width, -1)[index])


@pytest.mark.parametrize("name", ["xfeat", "aliked"])
def test_dense_field_reproduces_sparse_descriptors_and_matches_across_views(pair, name):
    backbone = dense_backbone(name)
    scale = np.ones(2)
    sparse = EXTRACTORS[name](ExtractorConfig(max_keypoints=300, resize_max=0)).extract_batch([pair.image0], [scale])[0]
    field0 = backbone(pair.image0, scale)
    similarity = np.sum(field0.sample(sparse.keypoints) * sparse.descriptors, axis=1)
    assert similarity.min() > 0.999, "the field must give the network's own keypoint descriptors"
    # Ground-truth correspondences (flow of covisible pixels) look alike; random pixels do not.
    rows, cols = np.nonzero(pair.covisible0[8:-8, 8:-8])
    pick = np.random.default_rng(0).choice(len(rows), 500, replace=False)
    points0 = np.stack([cols[pick] + 8.5, rows[pick] + 8.5], axis=1)
    points1 = pair.flow0[rows[pick] + 8, cols[pick] + 8]
    descriptors0, descriptors1 = field0.sample(points0), backbone(pair.image1, scale).sample(points1)
    corresponding = np.sum(descriptors0 * descriptors1, axis=1)
    shuffled = np.sum(descriptors0 * np.roll(descriptors1, 1, axis=0), axis=1)
    assert np.median(corresponding) > np.median(shuffled) + 0.3


def test_patches_sample_a_grid_around_each_centre(pair):
    field = dense_backbone("xfeat")(pair.image0, np.ones(2))
    centres = np.array([[100.5, 80.5], [240.25, 200.75]])
    patches = field.patches(centres, 5, 2.0)
    assert patches.shape == (2, 5, 5, 64)
    for row in range(5):
        for col in range(5):
            expected = field.sample(centres + [(col - 2) * 2.0, (row - 2) * 2.0])
            np.testing.assert_allclose(patches[:, row, col], expected, atol=1e-5)


def test_persistent_landmarks_cover_every_image_longest_tracks_first():
    point_ids = [np.array([0, 1, 2, -1]), np.array([1, 2, 3]), np.array([2, 1, -1]), np.array([2, 4])]
    assert persistent_landmarks(point_ids, 3, 0).tolist() == [2, 1]
    # Landmark 4 (one image) is the second best of image 3, which would keep only landmark 2
    # among the three longest tracks 2, 1, 0: it goes before 0, the third of image 0.
    assert persistent_landmarks(point_ids, 1, 3).tolist() == [2, 1, 4]
    assert persistent_landmarks(point_ids, 1, 0).tolist() == [2, 1, 4, 0, 3]
    assert persistent_landmarks([np.array([-1])], 2, 0).tolist() == []


def test_observations_spread_over_the_keyframes_that_see_a_landmark():
    point_ids = [
        np.array([7, -1, 3]) if image % 2 == 0 else np.array([-1, 7]) for image in range(10)
    ]  # 7 in all, 3 in even
    kept = observations_to_keep(point_ids, np.array([7, 3]), 3)
    seeing_7 = [image for image, index in enumerate(kept) if any(point_ids[image][index] == 7)]
    seeing_3 = [image for image, index in enumerate(kept) if any(point_ids[image][index] == 3)]
    assert seeing_7 == [0, 4, 9] or seeing_7 == [0, 5, 9]
    assert seeing_3 == [0, 4, 8]
    assert [len(index) for index in observations_to_keep(point_ids, np.array([3]), 0)] == [1, 0] * 5


def test_unknown_backbone_is_named():
    with pytest.raises(RelocError, match="unknown dense backbone 'dino'"):
        dense_backbone("dino")


@pytest.mark.slow
def test_map_keeps_patches_of_persistent_landmarks(tmp_path):
    scene = tmp_path / "scene"
    generate(
        SynthConfig("7scenes", seed=3, mapping_frames=30, query_frames=2, mapping_sequences=1, query_sequences=1), scene
    )
    # The FaVoR mapping graph (patches are built only where favor.train reads them), its patches
    # node set to every landmark of 3+ keyframes, its training cut to one step.
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "favor.yaml").read_text())
    config["mapping"]["nodes"]["patches"]["with"] = {"backbone": "xfeat", "patch_size": 7, "min_track_length": 3}
    config["mapping"]["nodes"]["fields"]["with"]["steps"] = 1
    config["mapping"]["keep"] = ["patches.h5"]  # favor.train's input, removed when mapping ends unless kept
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(
        app,
        [
            "map",
            "--config",
            str(tmp_path / "config.yaml"),
            "--dataset",
            "7scenes",
            "--root",
            str(scene),
            "--out",
            str(tmp_path / "map"),
        ],
    )
    assert result.exit_code == 0, result.output
    patches = read_landmark_patches(tmp_path / "map")
    sparse_map = read_sparse_map(tmp_path / "map")
    assert patches.patches.shape == (len(patches.landmark), 7, 7, 64) and len(patches.landmark) > 500
    lengths = np.bincount(np.concatenate([sparse_map.located_observations(name)[1] for name in sparse_map.cameras]))
    assert lengths[patches.landmark_ids].min() >= 3 and set(patches.landmark.tolist()) == set(
        patches.landmark_ids.tolist()
    )
    # Each observation is where its landmark projects in its (ground-truth posed) keyframe.
    frames = {frame.name: frame for frame in load_dataset("7scenes", scene).frames("train")}
    for index in np.random.default_rng(0).choice(len(patches.landmark), 50, replace=False):
        frame = frames[patches.images[patches.image[index]]]
        projected = frame.camera.project(frame.pose.transform(sparse_map.points[patches.landmark[index]][None]))[0]
        assert np.linalg.norm(projected - patches.xy[index]) < 2.0
    # Patches are cut from the XFeat field of their image, at the stored spacing.
    first = patches.image == patches.image[0]
    frame = frames[patches.images[patches.image[0]]]
    field = dense_backbone("xfeat")(*prepare_image(frame.image_path, 1024, 32))
    expected = field.patches(patches.xy[first], 7, float(patches.spacing_px[first][0]))
    np.testing.assert_allclose(patches.patches[first].astype(np.float32), expected, atol=2e-3)
    # Observations of one landmark look alike across keyframes, more than those of others.
    centres = patches.patches[:, 3, 3].astype(np.float32)
    order = np.argsort(patches.landmark, kind="stable")
    grouped, by_landmark = centres[order], patches.landmark[order]
    same = [grouped[i] @ grouped[i + 1] for i in range(len(grouped) - 1) if by_landmark[i] == by_landmark[i + 1]]
    different = [
        grouped[i] @ grouped[-1 - i] for i in range(len(grouped) // 2) if by_landmark[i] != by_landmark[-1 - i]
    ]
    assert np.median(same) > np.median(different) + 0.3
