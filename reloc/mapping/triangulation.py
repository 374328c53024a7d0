"""Multi-view triangulation of tracks with the known poses (pycolmap LO-RANSAC), filtered by
reprojection error, triangulation angle and track length."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pycolmap

from ..pipeline.progress import track
from ..types import Frame


@dataclass
class TriangulationConfig:
    max_reprojection_px: float = 2.0
    min_angle_deg: float = 1.5
    min_track_length: int = 2


@dataclass
class Landmarks:
    """Triangulated points and, per point, its observations (image index, keypoint index)."""

    points: np.ndarray  # (L, 3) world coordinates
    observations: list[np.ndarray]  # L arrays of shape (n, 2) int
    errors: np.ndarray  # (L,) mean reprojection error in pixels


def rows_by_image(images: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Each image index of ``images`` (N,) with the rows (indices into ``images``) that hold it."""
    order = np.argsort(images, kind="stable")
    bounds = np.flatnonzero(np.r_[True, np.diff(images[order]) != 0, True])
    for start, stop in zip(bounds[:-1], bounds[1:]):
        yield int(images[order[start]]), order[start:stop]


def reprojection_errors(
    points: np.ndarray, frames: list[Frame], keypoints: list[np.ndarray], observations: np.ndarray
) -> np.ndarray:
    """Pixel distances (N,) between the keypoints of ``observations`` (N, 2: image, keypoint index
    into ``keypoints[image]``) and the projections of their ``points`` (N, 3, world) into
    ``frames[image]``; inf for a point behind its camera. One pass per image."""
    errors = np.full(len(points), np.inf)
    for image, rows in rows_by_image(observations[:, 0]):
        in_camera = frames[image].pose.transform(points[rows])
        front = in_camera[:, 2] > 0
        pixels = np.asarray(keypoints[image][observations[rows[front], 1]], np.float64)
        errors[rows[front]] = np.linalg.norm(frames[image].camera.project(in_camera[front]) - pixels, axis=1)
    return errors


def max_triangulation_angles_deg(points: np.ndarray, centres: list[np.ndarray]) -> np.ndarray:
    """The widest angle (L,) in degrees between the rays from each of ``points`` (L, 3) to the
    camera ``centres`` (L arrays (n_i, 3)) that observe it; tracks of one length at a time."""
    angles = np.empty(len(points))
    lengths = np.array([len(c) for c in centres])
    for length in np.unique(lengths):
        chosen = np.flatnonzero(lengths == length)
        rays = np.stack([centres[i] for i in chosen]) - points[chosen, None]
        rays /= np.linalg.norm(rays, axis=2, keepdims=True)
        cosines = np.clip(np.einsum("lid,ljd->lij", rays, rays), -1, 1)
        angles[chosen] = np.degrees(np.arccos(cosines.min(axis=(1, 2))))
    return angles


def triangulate_tracks(
    frames: list[Frame], keypoints: list[np.ndarray], tracks: list[list[tuple[int, int]]], config: TriangulationConfig
) -> Landmarks:
    """Triangulate each track (pycolmap, one track at a time); keep the inlier observations of the
    points that pass the filters (applied to all points at once)."""
    cameras = [frame.camera.to_pycolmap() for frame in frames]
    poses = [frame.pose.to_pycolmap() for frame in frames]
    focal = np.mean([frame.camera.focal_length[0] for frame in frames])
    options = pycolmap.EstimateTriangulationOptions()
    options.ransac.max_error = config.max_reprojection_px / focal  # angular error, radians
    options.ransac.random_seed = 0
    points, observations = [], []
    for observed in track(tracks, f"triangulation of {len(tracks)} tracks"):
        if len(observed) < config.min_track_length:
            continue
        images = np.array([image for image, _ in observed])
        pixels = np.array([keypoints[image][index] for image, index in observed], dtype=np.float64)
        result = pycolmap.estimate_triangulation(
            pixels, [poses[i] for i in images], [cameras[i] for i in images], options
        )
        if result is None:
            continue
        inliers = np.asarray(result["inliers"], bool)
        if inliers.sum() < config.min_track_length:
            continue
        points.append(np.asarray(result["xyz"], dtype=np.float64).reshape(3))
        observations.append(np.array(observed)[inliers])
    if not points:
        return Landmarks(np.zeros((0, 3)), [], np.zeros(0))
    return filtered_landmarks(frames, keypoints, np.array(points), observations, config)


def filtered_landmarks(
    frames: list[Frame],
    keypoints: list[np.ndarray],
    points: np.ndarray,
    observations: list[np.ndarray],
    config: TriangulationConfig,
) -> Landmarks:
    """The ``points`` (L, 3) whose ``observations`` (L arrays (n_i, 2): image, keypoint) all
    reproject within ``max_reprojection_px`` and whose rays span ``min_angle_deg`` or more."""
    every = np.concatenate(observations)
    lengths = np.array([len(o) for o in observations])
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    errors = reprojection_errors(np.repeat(points, lengths, axis=0), frames, keypoints, every)
    keep = np.maximum.reduceat(errors, starts) <= config.max_reprojection_px
    centres = np.stack([frame.pose.center for frame in frames])
    kept = np.flatnonzero(keep)
    keep[kept] = max_triangulation_angles_deg(points[kept], [centres[observations[i][:, 0]] for i in kept]) >= (
        config.min_angle_deg
    )
    kept = np.flatnonzero(keep)
    mean_errors = np.add.reduceat(errors, starts) / lengths
    return Landmarks(points[kept], [observations[i] for i in kept], mean_errors[kept])
