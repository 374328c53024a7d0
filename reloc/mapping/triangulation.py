"""Multi-view triangulation of tracks with the known poses (pycolmap LO-RANSAC), filtered by
reprojection error, triangulation angle and track length."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pycolmap

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


def reprojection_errors(point: np.ndarray, frames: list[Frame], pixels: np.ndarray) -> np.ndarray:
    errors = np.empty(len(frames))
    for i, frame in enumerate(frames):
        in_camera = frame.pose.transform(point[None])[0]
        errors[i] = (
            np.inf if in_camera[2] <= 0 else np.linalg.norm(frame.camera.project(in_camera[None])[0] - pixels[i])
        )
    return errors


def max_triangulation_angle_deg(point: np.ndarray, centres: np.ndarray) -> float:
    rays = centres - point
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    cosines = np.clip(rays @ rays.T, -1, 1)
    return float(np.degrees(np.arccos(cosines.min())))


def triangulate_tracks(
    frames: list[Frame], keypoints: list[np.ndarray], tracks: list[list[tuple[int, int]]], config: TriangulationConfig
) -> Landmarks:
    """Triangulate each track; keep the inlier observations of points that pass the filters."""
    cameras = [frame.camera.to_pycolmap() for frame in frames]
    poses = [frame.pose.to_pycolmap() for frame in frames]
    focal = np.mean([frame.camera.focal_length[0] for frame in frames])
    options = pycolmap.EstimateTriangulationOptions()
    options.ransac.max_error = config.max_reprojection_px / focal  # angular error, radians
    options.ransac.random_seed = 0
    points, observations, errors = [], [], []
    for track in tracks:
        if len(track) < config.min_track_length:
            continue
        images = np.array([image for image, _ in track])
        pixels = np.array([keypoints[image][index] for image, index in track], dtype=np.float64)
        result = pycolmap.estimate_triangulation(
            pixels, [poses[i] for i in images], [cameras[i] for i in images], options
        )
        if result is None:
            continue
        inliers = np.asarray(result["inliers"], bool)
        if inliers.sum() < config.min_track_length:
            continue
        point = np.asarray(result["xyz"], dtype=np.float64).reshape(3)
        track_frames = [frames[i] for i in images[inliers]]
        error = reprojection_errors(point, track_frames, pixels[inliers])
        if error.max() > config.max_reprojection_px:
            continue
        if max_triangulation_angle_deg(point, np.stack([f.pose.center for f in track_frames])) < config.min_angle_deg:
            continue
        points.append(point)
        observations.append(np.array(track)[inliers])
        errors.append(error.mean())
    return Landmarks(np.array(points).reshape(-1, 3), observations, np.array(errors))
