"""Projection of world points into posed cameras, and the epipolar geometry of two of them."""

from __future__ import annotations

import numpy as np

from ..types import Camera, Pose


def project_points(points_world: np.ndarray, pose: Pose, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) -> pixels (N, 2) in COLMAP convention and a visibility mask (N,).

    A point is visible when it lies in front of the camera (z > 0) and inside the image
    rectangle [0, width) x [0, height).
    """
    points_cam = pose.transform(points_world)
    in_front = points_cam[:, 2] > 1e-9
    pixels = np.full((len(points_cam), 2), np.nan)
    pixels[in_front] = camera.project(points_cam[in_front])
    inside = (
        in_front
        & (pixels[:, 0] >= 0)
        & (pixels[:, 0] < camera.width)
        & (pixels[:, 1] >= 0)
        & (pixels[:, 1] < camera.height)
    )
    return pixels, inside


def backproject_depth(pixels: np.ndarray, depth: np.ndarray, pose: Pose, camera: Camera) -> np.ndarray:
    """Pixels (N, 2) with depths (N,) (metres along the optical axis) -> world points (N, 3)."""
    xy = camera.unproject(pixels)
    points_cam = np.concatenate([xy, np.ones((len(xy), 1))], axis=1) * np.asarray(depth)[:, None]
    return pose.inverse().transform(points_cam)


def fundamental_matrix(K0: np.ndarray, K1: np.ndarray, cam1_from_cam0: Pose) -> np.ndarray:
    """F (3, 3) with x1^T F x0 = 0 for homogeneous pixels x0 of camera ``K0`` (3, 3) and x1 of
    ``K1`` seeing the same point, from the relative pose ``cam1_from_cam0``."""
    t = cam1_from_cam0.t
    essential = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]]) @ cam1_from_cam0.R
    return np.linalg.inv(K1).T @ essential @ np.linalg.inv(K0)
