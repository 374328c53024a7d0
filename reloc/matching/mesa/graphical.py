"""MESA's graphical area matching: candidates by a graph cut over the other image's area graph,
re-ranked by a global energy over the area graphs' relations.

**Self-energy.** MESA-free (the training-free MESA) scores an area pair by a coarse dense matcher's
patch matches between the two areas. Here the coarse matches are the wrapped matcher's matches of
the whole pair, already computed for the global result, so no matcher runs per candidate: with
``n_ab`` the (weighted) matches that start in area ``a`` of image 0 and end in area ``b`` of image
1, and ``n_a``, ``n_b`` those that start in ``a`` / end in ``b``, the similarity is their Dice
coefficient ``S(a, b) = 2 n_ab / (n_a + n_b)`` (1 when the two areas hold exactly the same
matches).

**Graph cut.** For a source area ``a``, every area ``v`` of the other image's graph gets a label
(1: a candidate for ``a``) by an exact binary graph cut (:mod:`.graphcut`): unary costs
``U_v(1) = 1 - S'(a, v)`` and ``U_v(0) = S'(a, v)`` with ``S'`` the similarity divided by its best
value for ``a``, and Potts terms of weight ``smoothness`` on the graph's edges (adjacency edges
weighted by the boxes' IoU, parent–child edges), so that overlapping and nested areas are
labelled together instead of one by one.

**Global energy.** Each candidate ``v`` of ``a`` is ranked by
``G(a, v) = S(a, v) + relation_weight · mean(relations)``, the relations being those that exist:
the parents' similarity ``S(parent(a), parent(v))`` (when neither parent is the root), the
children's ``mean over children c of a of max over children d of v of S(c, d)``, and the same
over the adjacency neighbours. The best candidate of each source area, in both directions, gives an
area pair; pairs found from both sides are fused (kept once, with the larger energy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .areas import AreaConfig, AreaGraph, area_graph, iou
from .dmesa import inside_box
from .graphcut import minimum_cut_labels


@dataclass
class GraphicalConfig:
    smoothness: float = 0.25  # Potts weight of the area graph's edges in the graph cut
    relation_weight: float = 0.5  # weight of the parents / children / neighbours in the global energy
    min_matches: int = 12  # an area pair needs this many coarse matches between its two areas


def area_similarity(
    graph0: AreaGraph, graph1: AreaGraph, points0: np.ndarray, points1: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Dice similarity (A0 + 1, A1 + 1) of every pair of nodes (root included) from the coarse
    matches ``points0`` ↔ ``points1`` (N, 2) with ``weights`` (N,), and the weighted match
    counts ``n_ab`` of the same shape."""
    inside0 = np.stack([inside_box(points0, box) for box in graph0.boxes]).astype(np.float64)  # (A0 + 1, N)
    inside1 = np.stack([inside_box(points1, box) for box in graph1.boxes]).astype(np.float64)
    between = (inside0 * weights) @ inside1.T
    totals0, totals1 = inside0 @ weights, inside1 @ weights
    similarity = 2 * between / np.maximum(totals0[:, None] + totals1[None], 1e-9)
    return similarity, between


def relatives(graph: AreaGraph) -> tuple[list[list[int]], list[list[int]]]:
    """Children and adjacency neighbours of every node."""
    children: list[list[int]] = [[] for _ in graph.boxes]
    neighbours: list[list[int]] = [[] for _ in graph.boxes]
    for node, parent in enumerate(graph.parent):
        if parent >= 0:
            children[parent].append(node)
    for i, j in graph.adjacency:
        neighbours[i].append(j)
        neighbours[j].append(i)
    return children, neighbours


def potts_edges(graph: AreaGraph, smoothness: float) -> list[tuple[int, int, float]]:
    """The graph cut's pairwise terms over the areas of ``graph`` (indices without the root):
    adjacency edges weighted by ``smoothness`` times the boxes' IoU, parent-child edges by
    ``smoothness``."""
    overlap = iou(graph.boxes, graph.boxes)
    edges = [(i - 1, j - 1, smoothness * float(overlap[i, j])) for i, j in graph.adjacency]
    return edges + [(node - 1, int(parent) - 1, smoothness) for node, parent in enumerate(graph.parent) if parent > 0]


def candidate_nodes(similarity: np.ndarray, edges: list[tuple[int, int, float]]) -> np.ndarray:
    """Nodes (areas, not the root) of the graph whose :func:`potts_edges` are ``edges``, labelled
    candidates by the graph cut, for one source area's ``similarity`` (A + 1,) to every node."""
    scores = similarity[1:] / max(float(similarity[1:].max()), 1e-9)
    unary = np.stack([scores, 1 - scores], axis=1)
    return 1 + np.flatnonzero(minimum_cut_labels(unary, edges))


def global_energy(
    similarity: np.ndarray, source: AreaGraph, target: AreaGraph, a: int, v: int, relations, relation_weight: float
) -> float:
    """``G(a, v)`` of the module docstring; ``relations`` are both graphs' (children, neighbours)."""
    (children0, neighbours0), (children1, neighbours1) = relations
    terms = []
    if source.parent[a] > 0 and target.parent[v] > 0:
        terms.append(similarity[source.parent[a], target.parent[v]])
    for near0, near1 in ((children0[a], children1[v]), (neighbours0[a], neighbours1[v])):
        if near0 and near1:
            terms.append(float(similarity[np.ix_(near0, near1)].max(axis=1).mean()))
    return float(similarity[a, v]) + (float(np.mean(terms)) if terms else 0.0) * relation_weight


def graphical_area_pairs(
    boxes0: np.ndarray,
    boxes1: np.ndarray,
    points0: np.ndarray,
    points1: np.ndarray,
    weights: np.ndarray,
    sizes: tuple[tuple[int, int], tuple[int, int]],
    areas: AreaConfig,
    config: GraphicalConfig,
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Area pairs (box0, box1, global energy), best first, from areas ``boxes0`` (A0, 4) and
    ``boxes1`` (A1, 4) and the coarse matches ``points0`` ↔ ``points1`` (N, 2) with ``weights``
    (N,); ``sizes`` are the images' (width, height)."""
    if len(boxes0) == 0 or len(boxes1) == 0:
        return []
    graphs = (area_graph(boxes0, sizes[0], areas), area_graph(boxes1, sizes[1], areas))
    similarity, between = area_similarity(*graphs, points0, points1, weights)
    relations = (relatives(graphs[0]), relatives(graphs[1]))
    best: dict[tuple[int, int], float] = {}
    for forward in (True, False):
        source, target = (graphs[0], graphs[1]) if forward else (graphs[1], graphs[0])
        oriented = similarity if forward else similarity.T
        counts = between if forward else between.T
        links = relations if forward else relations[::-1]
        edges = potts_edges(target, config.smoothness)  # once per target graph, not per source area
        for a in range(1, len(source.boxes)):
            if oriented[a, 1:].max() <= 0:
                continue
            cut = candidate_nodes(oriented[a], edges)
            candidates = [v for v in cut if counts[a, v] >= config.min_matches]
            if not candidates:
                continue
            energies = [
                global_energy(oriented, source, target, a, v, links, config.relation_weight) for v in candidates
            ]
            v = candidates[int(np.argmax(energies))]
            key = (a, v) if forward else (v, a)
            best[key] = max(best.get(key, -np.inf), max(energies))
    ranked = sorted(best.items(), key=lambda item: -item[1])
    return [(graphs[0].boxes[i], graphs[1].boxes[j], energy) for (i, j), energy in ranked]
