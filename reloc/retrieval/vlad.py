"""Image retrieval with VLAD over the map's own local descriptors (the DenseVLAD idea: no
downloaded weights). The vocabulary is fit by k-means on the mapping images' descriptors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from ..errors import RelocError, require_range
from ..features.quantize import ScalarCodec, load_codec
from ..types import Pose


@dataclass
class VladConfig:
    clusters: int = 64
    iterations: int = 20
    max_training_descriptors: int = 100_000
    seed: int = 0
    whitened_dims: int = 0  # PCA-whiten VLAD to this many dimensions, fitted on the keyframes (0: keep C * D)

    def __post_init__(self) -> None:
        for key in ("clusters", "iterations", "max_training_descriptors"):
            require_range(self, key, low=1)
        require_range(self, "whitened_dims", low=0)


@dataclass
class VladQueryConfig:
    top_k: int = 5

    def __post_init__(self) -> None:
        require_range(self, "top_k", low=1)


def kmeans(descriptors: np.ndarray, clusters: int, iterations: int, seed: int) -> np.ndarray:
    """Spherical k-means (cosine) centroids (C, D) float32, deterministic for a seed."""
    data = torch.from_numpy(descriptors)
    generator = torch.Generator().manual_seed(seed)
    clusters = min(clusters, len(data))
    centroids = data[torch.randperm(len(data), generator=generator)[:clusters]].clone()
    for _ in range(iterations):
        assignment = (data @ centroids.T).argmax(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, data)
        counts = torch.bincount(assignment, minlength=clusters)
        empty = counts == 0
        sums[empty] = centroids[empty]
        centroids = torch.nn.functional.normalize(sums, dim=1)
    return centroids.numpy()


def vlad(descriptors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """VLAD (C * D,) with intra-normalisation, signed square root and L2 normalisation."""
    if len(descriptors) == 0:
        return np.zeros(centroids.size, np.float32)
    assignment = np.argmax(descriptors @ centroids.T, axis=1)
    order = np.argsort(assignment, kind="stable")
    words, starts, counts = np.unique(assignment[order], return_index=True, return_counts=True)
    residuals = np.zeros_like(centroids)
    # Per-word sums of the sorted descriptors (np.add.at, unbuffered, is ~10x slower).
    residuals[words] = np.add.reduceat(descriptors[order], starts) - counts[:, None] * centroids[words]
    residuals /= np.maximum(np.linalg.norm(residuals, axis=1, keepdims=True), 1e-12)
    vector = residuals.ravel()
    vector = np.sign(vector) * np.sqrt(np.abs(vector))
    return (vector / max(np.linalg.norm(vector), 1e-12)).astype(np.float32)


@dataclass
class Whitening:
    """PCA whitening of VLAD vectors: ``x -> normalise((x - mean) @ projection)``."""

    mean: np.ndarray  # (C * D,) float32
    projection: np.ndarray  # (C * D, K) float32, principal axes divided by their standard deviations

    @classmethod
    def fit(cls, vectors: np.ndarray, dims: int) -> Whitening:
        """Fit on (M, C * D) vectors; K = min(dims, M - 1) (at least 1)."""
        mean = vectors.mean(axis=0)
        _, singular, axes = np.linalg.svd(vectors - mean, full_matrices=False)
        kept = max(1, min(dims, len(vectors) - 1, len(singular)))
        deviation = singular[:kept] / np.sqrt(max(len(vectors) - 1, 1))
        projection = axes[:kept].T / np.maximum(deviation, 1e-6 * max(deviation[0], 1e-12))
        return cls(mean.astype(np.float32), projection.astype(np.float32))

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """(N, C * D) -> (N, K) unit vectors."""
        projected = (vectors - self.mean) @ self.projection
        return (projected / np.maximum(np.linalg.norm(projected, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


@dataclass
class RetrievalIndex:
    centroids: np.ndarray  # (C, D)
    names: list[str]  # mapping image names
    vectors: np.ndarray  # (M, C * D), or (M, K) whitened; 8-bit codes per dimension on disk
    poses: list[Pose]  # cam_from_world of each mapping image (the prior of a retrieved image)
    whitening: Whitening | None = None

    def query(self, descriptors: np.ndarray, top_k: int) -> list[int]:
        """Indices of the ``top_k`` most similar mapping images, best first."""
        vector = vlad(descriptors, self.centroids)
        if self.whitening is not None:
            vector = self.whitening.apply(vector[None])[0]
        scores = self.vectors @ vector
        return list(np.argsort(-scores, kind="stable")[:top_k])

    def write(self, path: Path) -> None:
        with h5py.File(path, "w") as file:
            file.create_dataset("centroids", data=self.centroids)
            codec = ScalarCodec.fit(self.vectors)  # a quarter of the bytes; demo map: same top-5 for every keyframe
            file.create_dataset("vectors", data=codec.encode(self.vectors))
            codec.save(file.create_group("vector_codec"))
            file.create_dataset("names", data=np.array(self.names, dtype=h5py.string_dtype()))
            file.create_dataset("poses", data=np.stack([pose.matrix for pose in self.poses]))
            if self.whitening is not None:
                file.create_dataset("whitening_mean", data=self.whitening.mean)
                file.create_dataset("whitening_projection", data=self.whitening.projection)

    @classmethod
    def read(cls, path: Path) -> RetrievalIndex:
        if not path.is_file():
            raise RelocError(f"{path}: missing; the map has no retrieval index (add a retrieval.vlad node to mapping)")
        with h5py.File(path, "r") as file:
            names = [name.decode() if isinstance(name, bytes) else name for name in file["names"][()]]
            whitening = (
                Whitening(file["whitening_mean"][()], file["whitening_projection"][()])
                if "whitening_projection" in file
                else None
            )
            return cls(
                file["centroids"][()],
                names,
                load_codec(file["vector_codec"]).decode(file["vectors"][()]),
                [Pose.from_matrix(T) for T in file["poses"][()]],
                whitening,
            )
