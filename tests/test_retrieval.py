"""Retrieval: spherical k-means, VLAD ranking through the mapping and query stages, the index file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reloc.errors import RelocError
from reloc.features.base import Features, FeatureStore
from reloc.retrieval.stages import BuildVladIndex, QueryVladIndex
from reloc.retrieval.vlad import RetrievalIndex, kmeans
from reloc.types import Frame

from .cameras import CAMERA, posed_frames

DIM = 32


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_spherical_kmeans_covers_separated_clusters_and_is_deterministic(rng):
    """A vocabulary larger than the data's structure (as VLAD's 256 words are) puts a unit
    centroid on every cluster; the same seed gives the same centroids."""
    centres = unit(rng.normal(size=(5, DIM)))
    points = unit(np.repeat(centres, 200, axis=0) + rng.normal(0, 0.05, (1000, DIM)))
    centroids = kmeans(points, 20, 20, seed=3)
    assert np.allclose(np.linalg.norm(centroids, axis=1), 1, atol=1e-5)
    assert np.all((centres @ centroids.T).max(axis=1) > 0.99)
    np.testing.assert_array_equal(kmeans(points, 20, 20, seed=3), centroids)


def image_descriptors(words: np.ndarray, histogram: np.ndarray, count: int, rng) -> np.ndarray:
    """``count`` unit descriptors drawn around visual ``words`` (W, D) with an image's word ``histogram``."""
    chosen = rng.choice(len(words), count, p=histogram)
    return unit(words[chosen] + rng.normal(0, 0.1, (count, DIM)))


def features_of(descriptors: np.ndarray) -> Features:
    return Features(np.zeros((len(descriptors), 2), np.float32), descriptors, np.ones(len(descriptors), np.float32))


def test_each_query_retrieves_the_mapping_image_it_shares_content_with(tmp_path, rng):
    """Ten mapping images, each with its own mix of 16 visual words; a query holds 300 descriptors
    of one of them (new noise). The stages must rank that image first for every query; the
    index round-trips through global.h5 with names and poses."""
    words = unit(rng.normal(size=(16, DIM)))
    histograms = rng.dirichlet(np.full(16, 0.3), size=10)
    keyframes = posed_frames(10)
    mapping, queries = FeatureStore("sift"), FeatureStore("sift")
    query_frames = []
    for index, (frame, histogram) in enumerate(zip(keyframes, histograms)):
        mapping.write(frame.name, features_of(image_descriptors(words, histogram, 600, rng)))
        query = Frame(f"q{index}.png", Path(f"q{index}.png"), CAMERA)
        queries.write(query.name, features_of(image_descriptors(words, histogram, 300, rng)))
        query_frames.append(query)
    BuildVladIndex(BuildVladIndex.Config(clusters=64)).run(keyframes, mapping, tmp_path)
    retrieved = QueryVladIndex(QueryVladIndex.Config(top_k=3)).run(query_frames, queries, tmp_path)["retrieved"]
    assert [names[0] for names in retrieved.values()] == [frame.name for frame in keyframes]
    assert all(len(names) == 3 and len(set(names)) == 3 for names in retrieved.values())
    index = RetrievalIndex.read(tmp_path / "global.h5")
    assert index.names == [frame.name for frame in keyframes]
    assert all(np.allclose(pose.matrix, frame.pose.matrix) for pose, frame in zip(index.poses, keyframes))


def test_a_missing_index_is_named(tmp_path):
    with pytest.raises(RelocError, match="global.h5: missing; the map has no retrieval index"):
        RetrievalIndex.read(tmp_path / "global.h5")
