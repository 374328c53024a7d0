"""Tracks: matches between posed images, filtered by the epipolar geometry of the known poses,
joined into tracks by union-find."""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..types import Frame


def skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])


def epipolar_errors(frame0: Frame, frame1: Frame, points0: np.ndarray, points1: np.ndarray) -> np.ndarray:
    """Symmetric point-to-epipolar-line distance in pixels (N,) under the known poses."""
    relative = frame1.pose @ frame0.pose.inverse()
    essential = skew(relative.t) @ relative.R
    K0inv, K1inv = np.linalg.inv(frame0.camera.K), np.linalg.inv(frame1.camera.K)
    fundamental = K1inv.T @ essential @ K0inv
    h0 = np.c_[points0, np.ones(len(points0))]
    h1 = np.c_[points1, np.ones(len(points1))]
    lines1 = h0 @ fundamental.T  # epipolar lines in image 1
    lines0 = h1 @ fundamental  # epipolar lines in image 0
    numerator = np.abs(np.sum(h1 * lines1, axis=1))
    distance1 = numerator / np.maximum(np.linalg.norm(lines1[:, :2], axis=1), 1e-12)
    distance0 = numerator / np.maximum(np.linalg.norm(lines0[:, :2], axis=1), 1e-12)
    return np.maximum(distance0, distance1)


class UnionFind:
    def __init__(self) -> None:
        self.parent: dict[tuple[int, int], tuple[int, int]] = {}

    def find(self, node: tuple[int, int]) -> tuple[int, int]:
        root = node
        while self.parent.setdefault(root, root) != root:
            root = self.parent[root]
        while self.parent[node] != root:
            self.parent[node], node = root, self.parent[node]
        return root

    def union(self, a: tuple[int, int], b: tuple[int, int]) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[max(root_a, root_b)] = min(root_a, root_b)


def build_tracks(pair_matches: dict[tuple[int, int], np.ndarray]) -> list[list[tuple[int, int]]]:
    """Tracks as lists of (image index, keypoint index), one keypoint per image: a track that
    reaches an image twice (an inconsistent chain) keeps neither observation there."""
    union_find = UnionFind()
    for (image0, image1), matches in pair_matches.items():
        for k0, k1 in matches:
            union_find.union((image0, int(k0)), (image1, int(k1)))
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for node in list(union_find.parent):
        groups.setdefault(union_find.find(node), []).append(node)
    tracks = []
    for observations in groups.values():
        per_image = Counter(image for image, _ in observations)
        unique = [obs for obs in observations if per_image[obs[0]] == 1]
        if len(unique) >= 2:
            tracks.append(sorted(unique))
    return tracks
