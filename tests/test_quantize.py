"""Descriptor codecs of the sparse map, on real SIFT descriptors of two views of a synthetic room:
round-trip error and agreement of nearest neighbours and of the localizer's matches with float32."""

from __future__ import annotations

import faiss
import h5py
import numpy as np
import pytest

from reloc.features.extractors import ExtractorConfig, SiftExtractor
from reloc.features.quantize import CodecConfig, ScalarCodec, faiss_blas_from, fit_codec, load_codec
from reloc.matching.mnn import MutualNNConfig, mutual_nn


@pytest.fixture(scope="module")
def sift_pair(training_pair):
    """RootSIFT descriptors (N, 128) of the two views: the first plays the map, the second the query."""
    extractor = SiftExtractor(ExtractorConfig(max_keypoints=2000, resize_max=0))
    first = extractor.extract(training_pair.image0, np.ones(2))
    second = extractor.extract(training_pair.image1, np.ones(2))
    return first.descriptors, second.descriptors


# Measured: sq8 NN 99.6 %, MNN+ratio matches kept 100 %; pq 32 bytes: NN 83.8 %, matches kept 95.8 %;
# pq 16 bytes: NN 75.5 %, matches kept 84.9 %.
@pytest.mark.parametrize(
    ("kind", "subvectors", "max_mean_error", "min_nn_agreement", "min_matches_kept"),
    [
        ("float16", 1, 1e-3, 0.99, 0.99),
        ("sq8", 1, 0.005, 0.98, 0.98),
        ("pq", 32, 0.15, 0.78, 0.92),
        ("pq", 16, 0.22, 0.7, 0.8),
    ],
)
def test_codec_round_trip_and_nearest_neighbours_agree_with_float32(
    tmp_path, sift_pair, kind, subvectors, max_mean_error, min_nn_agreement, min_matches_kept
):
    mapped, queries = sift_pair
    codec = fit_codec(mapped, CodecConfig(kind=kind, pq_subvectors=subvectors))
    decoded = codec.decode(codec.encode(mapped))
    assert decoded.dtype == np.float32 and decoded.shape == mapped.shape
    assert np.linalg.norm(decoded - mapped, axis=1).mean() < max_mean_error
    with h5py.File(tmp_path / "codec.h5", "w") as file:
        codec.save(file.create_group("codec"))
    with h5py.File(tmp_path / "codec.h5", "r") as file:
        assert np.array_equal(load_codec(file["codec"]).decode(codec.encode(mapped)), decoded)
    exact = (queries @ mapped.T).argmax(axis=1)
    assert ((queries @ decoded.T).argmax(axis=1) == exact).mean() >= min_nn_agreement
    ratio = MutualNNConfig(ratio=0.8)
    reference = set(map(tuple, mutual_nn(queries, mapped, ratio).tolist()))
    kept = reference & set(map(tuple, mutual_nn(queries, decoded, ratio).tolist()))
    assert len(reference) > 500 and len(kept) >= min_matches_kept * len(reference)


def test_scalar_codec_error_is_at_most_half_a_step_inside_its_range(sift_pair):
    mapped, queries = sift_pair
    codec = fit_codec(mapped, CodecConfig(kind="sq8"))
    assert isinstance(codec, ScalarCodec)
    inside = np.clip(queries, codec.low, codec.low + 255 * codec.step)
    assert np.all(np.abs(codec.decode(codec.encode(inside)) - inside) <= codec.step / 2 + 1e-6)


def test_codec_settings_are_checked():
    with pytest.raises(ValueError, match="'pq8' is not a descriptor codec"):
        CodecConfig(kind="pq8")
    with pytest.raises(ValueError, match="pq_subvectors: 48 does not divide the descriptor dimension 128"):
        fit_codec(np.ones((300, 128), np.float32), CodecConfig(kind="pq", pq_subvectors=48))


def test_faiss_blas_threshold_is_restored_after_fitting_and_after_an_error(sift_pair):
    """Product quantization is fitted on faiss's matrix-product path; faiss's process-wide
    setting is its own again afterwards, also when the block raised."""
    before = faiss.cvar.distance_compute_blas_threshold
    fit_codec(sift_pair[0], CodecConfig(kind="pq"))
    assert faiss.cvar.distance_compute_blas_threshold == before
    with pytest.raises(RuntimeError, match="inside"):
        with faiss_blas_from(before + 1):
            assert faiss.cvar.distance_compute_blas_threshold == before + 1
            raise RuntimeError("inside")
    assert faiss.cvar.distance_compute_blas_threshold == before
