"""Exact minimisation of a binary energy with Potts pairwise terms, by a minimum s-t cut.

    E(l) = Σ_i U_i(l_i) + Σ_(i,j) w_ij · [l_i ≠ l_j],   l_i ∈ {0, 1},  w_ij ≥ 0

Construction (Kolmogorov & Zabih): source s and sink t; a node on the source side of the cut is
labelled 1. The edge s→i carries U_i(0) (cut when i ends labelled 0), the edge i→t carries U_i(1),
and i↔j carries w_ij both ways. The maximum flow is SciPy's (integer capacities, so costs are
scaled by ``resolution`` and rounded); the source side is what the residual graph still reaches
from s.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_array
from scipy.sparse.csgraph import breadth_first_order, maximum_flow


def binary_energy(unary: np.ndarray, edges: list[tuple[int, int, float]], labels: np.ndarray) -> float:
    """E(labels) for ``unary`` (N, 2) costs of labels 0 and 1 and Potts ``edges`` (i, j, w)."""
    labels = np.asarray(labels, int)
    energy = float(unary[np.arange(len(unary)), labels].sum())
    return energy + sum(weight for i, j, weight in edges if labels[i] != labels[j])


def minimum_cut_labels(unary: np.ndarray, edges: list[tuple[int, int, float]], resolution: float = 1e4) -> np.ndarray:
    """Labels (N,) in {0, 1} minimising :func:`binary_energy`; costs are exact to 1/``resolution``."""
    count = len(unary)
    if count == 0:
        return np.zeros(0, int)
    if any(weight < 0 for _, _, weight in edges):
        raise ValueError("graph cut needs non-negative pairwise weights (a submodular energy)")
    unary = np.asarray(unary, np.float64)
    unary = unary - unary.min(axis=1, keepdims=True)  # the same minimiser, non-negative capacities
    source, sink = count, count + 1
    rows, columns, capacities = [], [], []
    for node in range(count):
        rows += [source, node]
        columns += [node, sink]
        capacities += [unary[node, 0], unary[node, 1]]
    for i, j, weight in edges:
        rows += [i, j]
        columns += [j, i]
        capacities += [weight, weight]
    scaled = np.round(np.asarray(capacities) * resolution).astype(np.int32)
    capacity = csr_array((scaled, (rows, columns)), shape=(count + 2, count + 2))
    capacity.sum_duplicates()
    flow = maximum_flow(capacity, source, sink).flow
    residual = (capacity - flow).tocsr()  # reverse edges get the flow back
    residual.data[residual.data < 0] = 0
    residual.eliminate_zeros()
    reached = breadth_first_order(residual, source, directed=True, return_predecessors=False)
    labels = np.zeros(count, int)
    labels[reached[reached < count]] = 1
    return labels
