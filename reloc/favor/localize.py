"""FaVoR localization: from a prior pose, N iterations of render -> match -> PnP, then for the
answering round one refine -> PnP step; each step its own function chosen by config
(``matcher.name``: mnn, dual_softmax; ``refinement.name``: window, none; ``pnp``: the shared
PnP-RANSAC).

Each iteration projects the landmark centres with the current pose, renders one descriptor per
visible landmark from the current camera centre (one batched call; the ray through the landmark
centre), matches them to the query's dense descriptors sampled on a pixel grid (mutual nearest
neighbours above a cosine threshold) and estimates a new pose by PnP-RANSAC on the grid points
(at most half a grid step off: they steer the rendering viewpoint and rank the rounds). Once the
rounds have chosen their answer, its last matches move to the most similar point within half a
grid step (coarse to fine) and PnP-RANSAC with local refinement gives the pose: the costly
refinement runs once per query, not once per prior. Too few inliers fail the query; it never
keeps the prior. Grid steps and refinement steps are in pixels of the image the backbone sees
(``resize_max``), so they follow the descriptor map, not the camera's resolution.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import require_range
from ..features.dense import DescriptorField
from ..localization.pnp import PnPConfig, estimate_pose
from ..matching.mnn import MutualNNConfig, mutual_nn
from ..types import Camera, Pose, PoseEvidence
from .model import LandmarkFields
from .render import RenderConfig


@dataclass
class FavorMatchConfig:
    """How rendered landmark descriptors are matched to the query's grid descriptors.

    ``mnn``: mutual nearest neighbours whose cosine reaches ``min_similarity``. ``dual_softmax``:
    the product of the row and column softmaxes of the cosines divided by ``temperature``
    (LoFTR's dual softmax), mutual maxima reaching ``min_probability``."""

    name: str = "mnn"
    min_similarity: float = 0.7
    temperature: float = 0.1
    min_probability: float = 0.2

    def __post_init__(self):
        if self.name not in MATCHERS:
            raise ValueError(f"matcher.name must be one of {', '.join(MATCHERS)}, got {self.name!r}")
        require_range(self, "min_similarity", low=-1.0, high=1.0)
        require_range(self, "temperature", above=0.0)
        require_range(self, "min_probability", low=0.0, high=1.0)


@dataclass
class FavorRefineConfig:
    """Where the matched query points end up before PnP.

    ``window``: each match moves to the point within half a grid step whose query descriptor is
    most similar to its rendered one, searched coarse to fine (``coarse_step_px``, halving down
    to ``final_step_px``, in pixels of the image the backbone sees), after keeping the
    ``max_matches`` most similar matches (0: all). ``none``: the grid points as matched.
    The refinement runs once per query, on the last iteration's matches of the round that
    answers (``final_iteration``); ``every_iteration``: also in every iteration of every round."""

    name: str = "window"
    every_iteration: bool = False
    coarse_step_px: float = 2.0
    final_step_px: float = 0.5
    max_matches: int = 0

    def __post_init__(self):
        if self.name not in ("window", "none"):
            raise ValueError(f"refinement.name must be window or none, got {self.name!r}")
        require_range(self, "final_step_px", above=0.0)
        require_range(self, "coarse_step_px", low=self.final_step_px)
        require_range(self, "max_matches", low=0)


QUERY_POINTS = ("grid", "keypoints")


@dataclass
class FavorLocalizeConfig:
    """``query_points``: where the query's dense descriptors are sampled for matching: ``grid``,
    every ``grid_step_px``; ``keypoints``, at the keypoints of the localization graph's feature
    node (the detector the map's landmarks were triangulated from, so a match lands where the
    landmark's own keypoint is; ``refinement`` none keeps it there)."""

    iterations: int = 3
    query_points: str = "grid"
    grid_step_px: float = 8.0  # query descriptors sampled every this many pixels of the image the backbone sees
    border_px: float = 8.0  # landmarks projecting closer than this to the image border are skipped
    render: RenderConfig = field(default_factory=RenderConfig)
    matcher: FavorMatchConfig = field(default_factory=FavorMatchConfig)
    refinement: FavorRefineConfig = field(default_factory=FavorRefineConfig)
    pnp: PnPConfig = field(default_factory=PnPConfig)

    def __post_init__(self):
        require_range(self, "iterations", low=1)
        require_range(self, "grid_step_px", above=0.0)
        if self.query_points not in QUERY_POINTS:
            raise ValueError(f"query_points must be grid or keypoints, got {self.query_points!r}")


@dataclass
class Iteration:
    pose: Pose | None
    visible: int  # landmarks rendered
    matches: int
    inliers: int
    seconds: dict[str, float]  # render, matching, refinement, pnp
    reason: str = ""  # why this iteration found no pose
    inlier_points2d: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (K, 2) query pixels (COLMAP)
    inlier_landmarks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (K,) ids into landmarks.h5
    evidence: PoseEvidence | None = None  # of this iteration's pose (or of the pose refused)
    matched: MatchedGrid | None = None  # the matches, kept by the last iteration of a round for the final refinement


@dataclass
class MatchedGrid:
    """An iteration's matches: rendered descriptors (K, C), query grid indices (K,), landmark
    indices (K,) into the map's fields."""

    rendered: np.ndarray
    query_index: np.ndarray
    landmarks: np.ndarray


def query_grid(camera: Camera, step_px: float) -> np.ndarray:
    """(N, 2) pixel centres of a regular grid over the image, COLMAP convention."""
    xs = np.arange(step_px / 2, camera.width, step_px)
    ys = np.arange(step_px / 2, camera.height, step_px)
    return np.stack(np.meshgrid(xs, ys, indexing="xy"), axis=-1).reshape(-1, 2)


@dataclass
class QueryGrid:
    """A query's dense descriptors and their samples at its query points (a regular grid, or
    detected keypoints), computed once per query."""

    field: DescriptorField
    points: np.ndarray  # (N, 2) grid points or keypoints, original pixels (COLMAP)
    descriptors: np.ndarray  # (N, C) unit
    pixel: float  # original pixels per pixel of the image the backbone saw


def sample_query_grid(field_of_query: DescriptorField, camera: Camera, step_px: float) -> QueryGrid:
    """The query's descriptors every ``step_px`` pixels of the image the backbone saw."""
    return sample_query_points(field_of_query, query_grid(camera, step_px * float(np.mean(field_of_query.scale))))


def sample_query_points(field_of_query: DescriptorField, points: np.ndarray) -> QueryGrid:
    """The query's descriptors at ``points`` (N, 2; a grid or detected keypoints), original
    pixels (COLMAP)."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    return QueryGrid(field_of_query, points, field_of_query.sample(points), float(np.mean(field_of_query.scale)))


def best_in_window(
    field_of_query: DescriptorField, descriptors: np.ndarray, positions: np.ndarray, radius_px: float, step_px: float
) -> np.ndarray:
    """For each of ``positions`` (M, 2), the point of a square window (``radius_px``, sampled
    every ``step_px``) around it whose query descriptor is most similar to ``descriptors`` (M, C)."""
    offsets = np.arange(-radius_px, radius_px + 1e-9, step_px)
    window = np.stack(np.meshgrid(offsets, offsets, indexing="xy"), axis=-1).reshape(-1, 2)  # (W, 2)
    candidates = positions[:, None] + window[None]  # (M, W, 2)
    similarity = np.einsum(
        "mwc,mc->mw",
        field_of_query.sample(candidates.reshape(-1, 2)).reshape(len(positions), len(window), -1),
        descriptors,
    )
    return candidates[np.arange(len(positions)), similarity.argmax(axis=1)]


def refine_positions(
    field_of_query: DescriptorField,
    descriptors: np.ndarray,
    positions: np.ndarray,
    radius: float,
    coarse_step: float,
    final_step: float,
) -> np.ndarray:
    """Move each grid match (positions (M, 2)) to the point within ``radius`` whose query
    descriptor is most similar to its rendered descriptor (M, C), coarse to fine: the window
    every ``coarse_step``, then 3 x 3 windows around the best point at half the previous step,
    down to ``final_step`` (a radius of 4, steps 2 -> 0.5: 43 descriptors per match instead of
    the 289 of an exhaustive 0.5 search). Lengths in original pixels."""
    if len(positions) == 0:
        return positions
    best = best_in_window(field_of_query, descriptors, positions, radius, coarse_step)
    step = coarse_step / 2
    while step >= final_step - 1e-9:
        best = best_in_window(field_of_query, descriptors, best, step, step)
        step /= 2
    return best


def visible_landmarks(fields: LandmarkFields, pose: Pose, camera: Camera, border_px: float) -> np.ndarray:
    """Indices of the landmarks whose centre projects inside the image, in front of the camera."""
    in_camera = pose.transform(fields.centres.numpy().astype(np.float64))
    front = np.flatnonzero(in_camera[:, 2] > 1e-3)
    pixels = camera.project(in_camera[front])
    inside = (
        (pixels[:, 0] >= border_px)
        & (pixels[:, 0] <= camera.width - border_px)
        & (pixels[:, 1] >= border_px)
        & (pixels[:, 1] <= camera.height - border_px)
    )
    return front[inside]


def render_from(fields: LandmarkFields, landmarks: np.ndarray, centre: np.ndarray, config: RenderConfig) -> np.ndarray:
    """(V, C) descriptors of ``landmarks`` seen from camera ``centre`` (3,), one ray each."""
    if len(landmarks) == 0:
        return np.zeros((0, fields.descriptor_dim), np.float32)
    centres = fields.centres[landmarks]
    origins = torch.from_numpy(centre).float().expand(len(landmarks), 3)
    directions = torch.nn.functional.normalize(centres - origins, dim=1)
    with torch.inference_mode():
        rendering = fields.render(landmarks, origins[:, None], directions[:, None], config)
    return rendering.descriptors[:, 0].numpy()


def match_mnn(rendered: np.ndarray, query: np.ndarray, config: FavorMatchConfig) -> np.ndarray:
    """(K, 2) pairs (rendered index, query grid index): mutual nearest neighbours."""
    return mutual_nn(rendered, query, MutualNNConfig(min_similarity=config.min_similarity))


def match_dual_softmax(rendered: np.ndarray, query: np.ndarray, config: FavorMatchConfig) -> np.ndarray:
    """(K, 2) pairs (rendered index, query grid index): mutual maxima of the dual softmax."""
    if len(rendered) == 0 or len(query) == 0:
        return np.zeros((0, 2), np.int64)
    logits = torch.from_numpy(rendered) @ torch.from_numpy(query).T / config.temperature
    probability = (logits.softmax(dim=0) * logits.softmax(dim=1)).numpy()
    best = probability.argmax(axis=1)
    rows = np.arange(len(rendered))
    keep = (probability.argmax(axis=0)[best] == rows) & (probability[rows, best] >= config.min_probability)
    return np.stack([rows[keep], best[keep]], axis=1).astype(np.int64)


MATCHERS = {"mnn": match_mnn, "dual_softmax": match_dual_softmax}


def refined_points(
    query: QueryGrid, rendered: np.ndarray, matches: np.ndarray, config: FavorLocalizeConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The matches kept (K, 2) (rendered index, grid index) and their query points (K, 2),
    original pixels, by ``config.refinement``."""
    refinement = config.refinement
    if refinement.name == "none":
        return matches, query.points[matches[:, 1]]
    if 0 < refinement.max_matches < len(matches):
        similarity = np.einsum("mc,mc->m", rendered[matches[:, 0]], query.descriptors[matches[:, 1]])
        matches = matches[np.sort(np.argsort(-similarity, kind="stable")[: refinement.max_matches])]
    points = refine_positions(
        query.field,
        rendered[matches[:, 0]],
        query.points[matches[:, 1]],
        config.grid_step_px / 2 * query.pixel,
        refinement.coarse_step_px * query.pixel,
        refinement.final_step_px * query.pixel,
    )
    return matches, points


def pose_iteration(
    points2d: np.ndarray,
    landmarks: np.ndarray,
    fields: LandmarkFields,
    camera: Camera,
    pnp: PnPConfig,
    visible: int,
    seconds: dict[str, float],
) -> Iteration:
    """PnP-RANSAC on ``points2d`` (K, 2) matched to the fields ``landmarks`` (K,), as an iteration."""
    start = time.perf_counter()
    estimate = estimate_pose(points2d, fields.centres.numpy()[landmarks].astype(np.float64), camera, pnp)
    seconds["pnp"] = time.perf_counter() - start
    reason = "no landmark field is visible from the current pose" if visible == 0 else estimate.reason
    return Iteration(
        estimate.pose,
        visible,
        len(points2d),
        int(estimate.inliers.sum()),
        seconds,
        reason,
        points2d[estimate.inliers],
        fields.landmark_ids[landmarks][estimate.inliers],
        estimate.evidence,
    )


def localize_favor(
    query: QueryGrid, camera: Camera, prior: Pose, fields: LandmarkFields, config: FavorLocalizeConfig
) -> list[Iteration]:
    """A round: ``config.iterations`` of render -> match -> PnP from ``prior`` (refined only with
    ``refinement.every_iteration``; the PnP without local refinement). The last one holding a
    pose is the round's pose (none: failed); its matches are kept for ``final_iteration``."""
    pose, iterations = prior, []
    pnp = dataclasses.replace(config.pnp, refine=False)
    for _ in range(config.iterations):
        seconds = {}
        start = time.perf_counter()
        landmarks = visible_landmarks(fields, pose, camera, config.border_px)
        rendered = render_from(fields, landmarks, pose.center, config.render)
        seconds["render"] = time.perf_counter() - start
        start = time.perf_counter()
        matches = MATCHERS[config.matcher.name](rendered, query.descriptors, config.matcher)
        seconds["matching"] = time.perf_counter() - start
        start = time.perf_counter()
        if config.refinement.every_iteration:
            matches, points2d = refined_points(query, rendered, matches, config)
        else:
            points2d = query.points[matches[:, 1]]
        seconds["refinement"] = time.perf_counter() - start
        iteration = pose_iteration(points2d, landmarks[matches[:, 0]], fields, camera, pnp, len(landmarks), seconds)
        iterations.append(iteration)
        if iteration.pose is None:
            break
        pose = iteration.pose
    iterations[-1].matched = MatchedGrid(rendered[matches[:, 0]], matches[:, 1], landmarks[matches[:, 0]])
    return iterations


def final_iteration(
    query: QueryGrid, camera: Camera, last: Iteration, fields: LandmarkFields, config: FavorLocalizeConfig
) -> Iteration:
    """The answering round's final step: its last iteration's matches refined (``refinement``)
    and the pose estimated again, with PnP's local refinement."""
    matched = last.matched
    start = time.perf_counter()
    pairs = np.stack([np.arange(len(matched.query_index)), matched.query_index], axis=1)
    kept, points2d = refined_points(query, matched.rendered, pairs, config)
    seconds = {"refinement": time.perf_counter() - start}
    return pose_iteration(points2d, matched.landmarks[kept[:, 0]], fields, camera, config.pnp, last.visible, seconds)
