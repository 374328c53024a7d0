"""FaVoR localization: from a prior pose, N iterations of render -> match -> PnP.

Each iteration projects the landmark centres with the current pose, renders one descriptor per
visible landmark from the current camera centre (one batched call; the ray through the landmark
centre), matches them to the query's dense descriptors sampled on a pixel grid (mutual nearest
neighbours above a cosine threshold), moves each match to the most similar pixel within half a
grid step, and estimates a new pose by PnP-RANSAC (refined in the last
iteration only). Too few inliers stop the iterations and fail the query; it never keeps the prior.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..features.dense import DescriptorField
from ..localization.pnp import PnPConfig, estimate_pose
from ..matching.mnn import MutualNNConfig, mutual_nn
from ..types import Camera, Pose, PoseEvidence
from .model import LandmarkFields
from .render import RenderConfig, render_rays


@dataclass
class FavorLocalizeConfig:
    iterations: int = 3
    grid_step_px: float = 8.0  # query descriptors sampled every this many original pixels
    min_similarity: float = 0.7  # cosine a rendered / query descriptor match must reach
    border_px: float = 8.0  # landmarks projecting closer than this to the image border are skipped
    pnp: PnPConfig = field(default_factory=PnPConfig)
    render: RenderConfig = field(default_factory=RenderConfig)


@dataclass
class Iteration:
    pose: Pose | None
    visible: int  # landmarks rendered
    matches: int
    inliers: int
    seconds: dict[str, float]  # render, matching, pnp
    reason: str = ""  # why this iteration found no pose
    inlier_points2d: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (K, 2) query pixels (COLMAP)
    inlier_landmarks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (K,) ids into landmarks.h5
    evidence: PoseEvidence | None = None  # of this iteration's pose (or of the pose refused)


def query_grid(camera: Camera, step_px: float) -> np.ndarray:
    """(N, 2) pixel centres of a regular grid over the image, COLMAP convention."""
    xs = np.arange(step_px / 2, camera.width, step_px)
    ys = np.arange(step_px / 2, camera.height, step_px)
    return np.stack(np.meshgrid(xs, ys, indexing="xy"), axis=-1).reshape(-1, 2)


def refine_positions(
    field_of_query: DescriptorField,
    descriptors: np.ndarray,
    positions: np.ndarray,
    radius_px: float,
    step_px: float = 1.0,
) -> np.ndarray:
    """Move each grid match (positions (M, 2)) to the pixel within ``radius_px`` whose query
    descriptor is most similar to its rendered descriptor (M, C)."""
    if len(positions) == 0:
        return positions
    offsets = np.arange(-radius_px, radius_px + 1e-9, step_px)
    window = np.stack(np.meshgrid(offsets, offsets, indexing="xy"), axis=-1).reshape(-1, 2)  # (W, 2)
    candidates = positions[:, None] + window[None]  # (M, W, 2)
    similarity = np.einsum(
        "mwc,mc->mw",
        field_of_query.sample(candidates.reshape(-1, 2)).reshape(len(positions), len(window), -1),
        descriptors,
    )
    return candidates[np.arange(len(positions)), similarity.argmax(axis=1)]


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
        return np.zeros((0, fields.grids.shape[1] - 1), np.float32)
    centres = fields.centres[landmarks]
    origins = torch.from_numpy(centre).float().expand(len(landmarks), 3)
    directions = torch.nn.functional.normalize(centres - origins, dim=1)
    with torch.inference_mode():
        rendering = render_rays(
            fields.grids[landmarks], centres, fields.sides[landmarks], origins[:, None], directions[:, None], config
        )
    return rendering.descriptors[:, 0].numpy()


def localize_favor(
    field_of_query: DescriptorField, camera: Camera, prior: Pose, fields: LandmarkFields, config: FavorLocalizeConfig
) -> list[Iteration]:
    """Iterations from ``prior``; the last one holding a pose is the answer (none: failed)."""
    grid = query_grid(camera, config.grid_step_px)
    query_descriptors = field_of_query.sample(grid)
    pose, iterations = prior, []
    for index in range(config.iterations):
        seconds = {}
        start = time.perf_counter()
        landmarks = visible_landmarks(fields, pose, camera, config.border_px)
        rendered = render_from(fields, landmarks, pose.center, config.render)
        seconds["render"] = time.perf_counter() - start
        start = time.perf_counter()
        matches = mutual_nn(rendered, query_descriptors, MutualNNConfig(min_similarity=config.min_similarity))
        points2d = refine_positions(
            field_of_query, rendered[matches[:, 0]], grid[matches[:, 1]], config.grid_step_px / 2
        )
        seconds["matching"] = time.perf_counter() - start
        start = time.perf_counter()
        pnp = dataclasses.replace(config.pnp, refine=index == config.iterations - 1)
        estimate = estimate_pose(
            points2d, fields.centres.numpy()[landmarks[matches[:, 0]]].astype(np.float64), camera, pnp
        )
        seconds["pnp"] = time.perf_counter() - start
        reason = "no landmark field is visible from the current pose" if len(landmarks) == 0 else estimate.reason
        matched_ids = fields.landmark_ids[landmarks[matches[:, 0]]]
        iterations.append(
            Iteration(
                estimate.pose,
                len(landmarks),
                len(matches),
                int(estimate.inliers.sum()),
                seconds,
                reason,
                points2d[estimate.inliers],
                matched_ids[estimate.inliers],
                estimate.evidence,
            )
        )
        if estimate.pose is None:
            break
        pose = estimate.pose
    return iterations
