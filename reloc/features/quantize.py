"""Descriptor codecs for the sparse map's stored descriptors: float16, 8-bit scalar quantization
with a per-dimension range, or product quantization (faiss). Matching runs on the decoded
float32 descriptors (the map side is reconstructed; the query side is exact).

Every codec encodes (N, D) float32 descriptors into a (N, B) array and decodes them back, and
saves its parameters into (and loads them from) an HDF5 group.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import faiss
import h5py
import numpy as np

from ..errors import RelocError

CODECS = ("float16", "sq8", "pq")
BLAS_FROM_QUERIES = 20
"""faiss computes k-means assignments with a matrix product (BLAS) from this many points on. The
faiss wheel's own threshold is 128000 points; under it, each point's distances are computed one
by one, several times slower for codebooks of 256 centroids (16384 RootSIFT descriptors: 6.3 s
-> 0.85 s on two cores, benchmarks/pq_training.py)."""


@contextmanager
def faiss_blas_from(queries: int) -> Iterator[None]:
    """faiss's BLAS threshold set to ``queries`` inside the block, restored after it."""
    previous = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = queries
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = previous


@dataclass
class CodecConfig:
    kind: str = "float16"  # float16 (2 bytes per dimension), sq8 (1 byte), pq (pq_subvectors bytes per descriptor)
    pq_subvectors: int = 32  # pq: bytes per descriptor; the dimension must be a multiple of it
    training_descriptors: int = 100_000  # sq8 and pq are fitted on at most this many descriptors
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in CODECS:
            raise ValueError(f"kind: '{self.kind}' is not a descriptor codec; one of {', '.join(CODECS)}")
        if self.pq_subvectors < 1 or self.training_descriptors < 1:
            raise ValueError("pq_subvectors and training_descriptors must be at least 1")


class Float16Codec:
    kind = "float16"

    def encode(self, descriptors: np.ndarray) -> np.ndarray:
        return descriptors.astype(np.float16)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return codes.astype(np.float32)

    def save(self, group: h5py.Group) -> None:
        group.attrs["kind"] = self.kind


@dataclass
class ScalarCodec:
    """8-bit codes: dimension d of a descriptor is ``low[d] + code * step[d]``, its range the
    training descriptors' minimum to maximum (values outside are clipped)."""

    low: np.ndarray  # (D,) float32
    step: np.ndarray  # (D,) float32
    kind = "sq8"

    @classmethod
    def fit(cls, descriptors: np.ndarray) -> ScalarCodec:
        low, high = descriptors.min(axis=0), descriptors.max(axis=0)
        return cls(low.astype(np.float32), (np.maximum(high - low, 1e-12) / 255).astype(np.float32))

    def encode(self, descriptors: np.ndarray) -> np.ndarray:
        return np.clip(np.rint((descriptors - self.low) / self.step), 0, 255).astype(np.uint8)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return self.low + codes.astype(np.float32) * self.step

    def save(self, group: h5py.Group) -> None:
        group.attrs["kind"] = self.kind
        group.create_dataset("low", data=self.low)
        group.create_dataset("step", data=self.step)


@dataclass
class ProductCodec:
    """Product quantization (Jégou et al.): a descriptor is cut into M sub-vectors, each coded
    by the index of its nearest of 256 centroids (one byte) fitted by faiss k-means."""

    codebooks: np.ndarray  # (M, 256, D / M) float32
    kind = "pq"

    @classmethod
    def fit(cls, descriptors: np.ndarray, subvectors: int, seed: int) -> ProductCodec:
        dim = descriptors.shape[1]
        if dim % subvectors:
            raise ValueError(f"pq_subvectors: {subvectors} does not divide the descriptor dimension {dim}")
        quantizer = faiss.ProductQuantizer(dim, subvectors, 8)
        quantizer.cp.seed = seed
        quantizer.cp.min_points_per_centroid = 1  # small maps: fit on what there is, without faiss's warning
        with faiss_blas_from(BLAS_FROM_QUERIES):
            quantizer.train(np.ascontiguousarray(descriptors, np.float32))
        codebooks = faiss.vector_to_array(quantizer.centroids).reshape(subvectors, 256, dim // subvectors)
        return cls(codebooks)

    def encode(self, descriptors: np.ndarray) -> np.ndarray:
        """Each sub-vector's nearest centroid (faiss), (N, M) uint8."""
        subvectors, _, width = self.codebooks.shape
        quantizer = faiss.ProductQuantizer(subvectors * width, subvectors, 8)
        faiss.copy_array_to_vector(np.ascontiguousarray(self.codebooks, np.float32).ravel(), quantizer.centroids)
        return quantizer.compute_codes(np.ascontiguousarray(descriptors, np.float32))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """The centroids of ``codes`` (N, M) side by side, (N, D) float32, by one gather (numpy:
        faiss's own decode is faster alone, but its OpenMP threads then spin beside the matching's
        matrix products, 130 -> 167 ms of matching per demo query)."""
        subvectors, centroids, width = self.codebooks.shape
        rows = codes.astype(np.intp) + np.arange(subvectors) * centroids
        return self.codebooks.reshape(-1, width)[rows].reshape(len(codes), subvectors * width)

    def save(self, group: h5py.Group) -> None:
        group.attrs["kind"] = self.kind
        group.create_dataset("codebooks", data=self.codebooks)


Codec = Float16Codec | ScalarCodec | ProductCodec


def fit_codec(descriptors: np.ndarray, config: CodecConfig) -> Codec:
    """A codec of ``config.kind`` fitted on (a seeded sample of) ``descriptors`` (N, D) float32."""
    if config.kind == "float16":
        return Float16Codec()
    if len(descriptors) > config.training_descriptors:
        sample = np.random.default_rng(config.seed).choice(len(descriptors), config.training_descriptors, replace=False)
        descriptors = descriptors[np.sort(sample)]
    if config.kind == "sq8":
        return ScalarCodec.fit(descriptors)
    return ProductCodec.fit(descriptors, config.pq_subvectors, config.seed)


def fit_codec_on_chunks(chunks: Iterable[np.ndarray], total: int, config: CodecConfig) -> Codec:
    """A codec of ``config.kind`` fitted on a seeded share of ``chunks`` (each (N_i, D) float32,
    ``total`` rows in all) that keeps about ``config.training_descriptors`` rows, so that the
    descriptors of a whole map never sit in memory at once. ``chunks`` is not read for float16
    (nothing to fit) or when ``total`` is 0 (float16 then too)."""
    if config.kind == "float16" or total == 0:
        return Float16Codec()
    rng = np.random.default_rng(config.seed)
    share = min(1.0, config.training_descriptors / total)
    return fit_codec(np.concatenate([chunk[rng.random(len(chunk)) < share] for chunk in chunks]), config)


def load_codec(group: h5py.Group) -> Codec:
    """The codec saved in ``group`` by its ``save``."""
    kind = group.attrs.get("kind")
    if kind == "float16":
        return Float16Codec()
    if kind == "sq8":
        return ScalarCodec(group["low"][()], group["step"][()])
    if kind == "pq":
        return ProductCodec(group["codebooks"][()])
    raise RelocError(f"{group.file.filename}: unknown descriptor codec {kind!r} in {group.name}")
