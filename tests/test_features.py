"""Local features: batched extraction, canonical keypoint order, the feature store."""

from __future__ import annotations

import cv2
import h5py
import numpy as np
import pytest
from PIL import Image
from scipy.spatial import cKDTree

from reloc.datasets.base import read_image
from reloc.features.base import Features, FeatureStore, jpeg_reduction, prepare_image, resize_image
from reloc.features.extractors import EXTRACTORS, ExtractorConfig
from reloc.features.stages import XFeatFeatures, batches_of_same_size
from reloc.types import Camera, Frame


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
            f"{len(scores)} keypoints only in the {which} pass, scores up to {scores.max():.4f} above the cut "
            f"{other.min():.4f}"
        )


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
    batched = XFeatFeatures(XFeatFeatures.Config(max_keypoints=512, resize_max=0, save=False, batch_size=3)).run(
        frames, tmp_path
    )["features"]
    single = XFeatFeatures(XFeatFeatures.Config(max_keypoints=512, resize_max=0, save=False)).run(frames, tmp_path)[
        "features"
    ]
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
    resized = extractor.extract_batch(
        [cv2.resize(image, (480, 352), interpolation=cv2.INTER_LINEAR)], [np.array([448 / 480, 320 / 352])]
    )[0]
    assert_same_features(plain, extractor.extract_batch([image.copy()], [np.ones(2)])[0])
    for changed in (padded, resized):
        with pytest.raises(AssertionError):
            assert_same_features(changed, plain)


def test_extractors_return_keypoints_by_score_then_position(training_pair):
    """Descending score; equal scores by y, then x (SIFT's orientations of one point keep OpenCV's order)."""
    for name in ("sift", "xfeat", "aliked"):
        features = EXTRACTORS[name](ExtractorConfig(max_keypoints=300, resize_max=0)).extract_batch(
            [training_pair.image0], [np.ones(2)]
        )[0]
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


def test_a_large_jpeg_decoded_reduced_gives_the_full_decodes_keypoints(tmp_path, training_pair):
    """A JPEG four times the working size is decoded at 1/4 by libjpeg instead of in full and
    area-resized: the images agree to a few levels, and SIFT's keypoints, mapped back
    to original pixels by the returned scale, land where the full decode puts them."""
    large = cv2.resize(training_pair.image0, (1920, 1440), interpolation=cv2.INTER_CUBIC)
    path = tmp_path / "large.jpg"
    Image.fromarray(large).save(path, quality=95)
    Image.fromarray(large).save(tmp_path / "large.png")
    assert [jpeg_reduction(path, side) for side in (480, 481, 960, 1000, 0)] == [4, 2, 2, 1, 1]
    assert jpeg_reduction(tmp_path / "large.png", 480) == 1
    with pytest.raises(ValueError, match="large.png: reduced decoding needs a JPEG"):
        read_image(tmp_path / "large.png", reduction=2)

    reduced, reduced_scale = prepare_image(path, 480)
    full, full_scale = resize_image(read_image(path), 480)
    assert reduced.shape == full.shape == (360, 480, 3)
    np.testing.assert_array_equal(reduced_scale, [4, 4])
    np.testing.assert_allclose(full_scale, [4, 4])
    assert np.abs(reduced.astype(np.int16) - full).mean() < 2.0

    sift = EXTRACTORS["sift"](ExtractorConfig(max_keypoints=1000))
    from_reduced, from_full = sift.extract(reduced, reduced_scale), sift.extract(full, full_scale)
    distance, _ = cKDTree(from_full.keypoints).query(from_reduced.keypoints)
    assert np.mean(distance < 2.0) > 0.8, f"only {np.mean(distance < 2.0):.0%} within 2 original pixels"
