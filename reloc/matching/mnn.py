"""Mutual nearest-neighbour matching of L2-normalised descriptors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..features.base import Features


@dataclass
class MutualNNConfig:
    min_similarity: float = 0.0  # cosine similarity a match must reach (0: off)
    ratio: float = 1.0  # Lowe's ratio on distances, first / second nearest (1: off)


def mutual_nn(descriptors0: np.ndarray, descriptors1: np.ndarray, config: MutualNNConfig) -> np.ndarray:
    """Index pairs (K, 2) of mutual nearest neighbours that pass the similarity and ratio tests."""
    if len(descriptors0) == 0 or len(descriptors1) == 0:
        return np.zeros((0, 2), np.int64)
    similarity = torch.from_numpy(descriptors0) @ torch.from_numpy(descriptors1).T
    top = similarity.topk(min(2, similarity.shape[1]), dim=1)
    best01, best_similarity = top.indices[:, 0], top.values[:, 0]
    best10 = similarity.argmax(dim=0)
    index0 = torch.arange(len(descriptors0))
    keep = (best10[best01] == index0) & (best_similarity >= config.min_similarity)
    if config.ratio < 1.0 and similarity.shape[1] > 1:
        distances = torch.sqrt(torch.clamp(2 - 2 * top.values, min=0))  # unit descriptors: |a-b|^2 = 2 - 2 a.b
        keep &= distances[:, 0] <= config.ratio * distances[:, 1]
    return torch.stack([index0[keep], best01[keep]], 1).numpy()


class MutualNNMatcher:
    name = "mnn"

    def __init__(self, config: MutualNNConfig):
        self.config = config

    def match(self, features0: Features, features1: Features, size0: tuple[int, int], size1: tuple[int, int]) -> np.ndarray:
        return mutual_nn(features0.descriptors, features1.descriptors, self.config)
