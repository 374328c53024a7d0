"""Tracks: matches between posed images, filtered by the epipolar geometry of the known poses,
joined into tracks as the connected components of the match graph."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..geometry.projection import fundamental_matrix
from ..types import Frame


def epipolar_errors(frame0: Frame, frame1: Frame, points0: np.ndarray, points1: np.ndarray) -> np.ndarray:
    """Symmetric point-to-epipolar-line distance in pixels (N,) under the known poses."""
    relative = frame1.pose @ frame0.pose.inverse()
    fundamental = fundamental_matrix(frame0.camera.K, frame1.camera.K, relative)
    h0 = np.c_[points0, np.ones(len(points0))]
    h1 = np.c_[points1, np.ones(len(points1))]
    lines1 = h0 @ fundamental.T  # epipolar lines in image 1
    lines0 = h1 @ fundamental  # epipolar lines in image 0
    numerator = np.abs(np.sum(h1 * lines1, axis=1))
    distance1 = numerator / np.maximum(np.linalg.norm(lines1[:, :2], axis=1), 1e-12)
    distance0 = numerator / np.maximum(np.linalg.norm(lines0[:, :2], axis=1), 1e-12)
    return np.maximum(distance0, distance1)


KEYPOINT_BITS = 32
KEYPOINT_MASK = (1 << KEYPOINT_BITS) - 1


def node_codes(image: int, keypoints: np.ndarray) -> np.ndarray:
    """One int64 per (image, keypoint) observation, ordered as the pairs are."""
    return (np.int64(image) << KEYPOINT_BITS) | np.asarray(keypoints, np.int64)


def build_tracks(pair_matches: dict[tuple[int, int], np.ndarray]) -> list[list[tuple[int, int]]]:
    """Tracks as lists of (image index, keypoint index), one keypoint per image: a track that
    reaches an image twice (an inconsistent chain) keeps neither observation there.

    The tracks are the connected components of the match graph (scipy), each sorted by (image,
    keypoint), in the order in which the first observation of their component appears in
    ``pair_matches`` ((image0, keypoint0), (image1, keypoint1) of each match in turn)."""
    sequence = np.concatenate(
        [np.zeros(0, np.int64)]
        + [
            np.stack([node_codes(image0, matches[:, 0]), node_codes(image1, matches[:, 1])], axis=1).ravel()
            for (image0, image1), matches in pair_matches.items()
        ]
    )
    if not len(sequence):
        return []
    codes, first_seen, node_of = np.unique(sequence, return_index=True, return_inverse=True)
    edges = node_of.reshape(-1, 2)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(len(codes), len(codes)))
    components, component = connected_components(graph, directed=False)
    component_first = np.full(components, len(sequence))
    np.minimum.at(component_first, component, first_seen)
    images = codes >> KEYPOINT_BITS
    _, at_image, per_image = np.unique(component * (images.max() + 1) + images, return_inverse=True, return_counts=True)
    nodes = np.flatnonzero(per_image[at_image] == 1)
    sizes = np.bincount(component[nodes], minlength=components)
    nodes = nodes[sizes[component[nodes]] >= 2]
    if not len(nodes):
        return []
    nodes = nodes[np.lexsort((codes[nodes], component[nodes]))]  # by component, then (image, keypoint)
    starts = np.flatnonzero(np.r_[True, np.diff(component[nodes]) != 0])
    first = component_first[component[nodes[starts]]]
    pairs = np.stack([images[nodes], codes[nodes] & KEYPOINT_MASK], axis=1).tolist()
    bounds = np.r_[starts, len(nodes)]
    return [
        [tuple(pair) for pair in pairs[bounds[track] : bounds[track + 1]]] for track in np.argsort(first, kind="stable")
    ]
