"""A query's inlier matches as a figure: the query image beside the keyframe that observes most of
its inlier landmarks, a line per inlier from the query keypoint to the landmark's keypoint in the
keyframe. With ground truth, each inlier landmark's projection under the true pose is drawn too,
so that wrong correspondences stand out (the red tick from keypoint to true projection)."""

from __future__ import annotations

import math

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..datasets.base import read_image
from ..errors import RelocError
from .scene import MapScene, QueryView

PANEL_HEIGHT = 480
MAX_LINES = 300
TITLE_HEIGHT = 40  # pixels above the images for the two title lines


def scaled_image(path, height: int) -> tuple[np.ndarray, float]:
    """The image resized to ``height`` rows, and the scale factor applied to pixel coordinates."""
    image = read_image(path)
    scale = height / image.shape[0]
    return cv2.resize(image, (max(1, round(image.shape[1] * scale)), height), interpolation=cv2.INTER_AREA), scale


def matches_figure(scene: MapScene, query: QueryView, height: int = PANEL_HEIGHT) -> Figure:
    """Query (left) and its best keyframe (right) with inlier matches; titles give the errors or the
    reason of a failure. Raises RelocError when the query image cannot be read."""
    if query.image_path is None:
        raise RelocError(f"query {query.name}: the results' details do not name its image file")
    left, scale = scaled_image(query.image_path, height)
    keyframe = scene.keyframe(scene.best_keyframe(query) or "")
    right, key_scale = (
        scaled_image(keyframe.image_path, height)
        if keyframe and keyframe.image_path
        else (np.full((height, height, 3), 255, np.uint8), 1.0)
    )
    canvas = np.concatenate([left, right], axis=1)
    figure = Figure(figsize=(canvas.shape[1] / 100, (canvas.shape[0] + TITLE_HEIGHT) / 100), dpi=100)
    axes = figure.add_axes((0, 0, 1, canvas.shape[0] / (canvas.shape[0] + TITLE_HEIGHT)))
    axes.imshow(canvas)
    axes.set_axis_off()
    inliers = query.inlier_points2d * scale - 0.5  # COLMAP pixels to matplotlib's pixel-centre coordinates
    if keyframe is not None and len(query.inlier_landmarks):
        observed, ids = scene.observations(keyframe.name)
        position = {int(i): xy for i, xy in zip(ids, observed)}
        pairs = [(q, position[int(i)]) for q, i in zip(inliers, query.inlier_landmarks) if int(i) in position]
        for q, k in pairs[:: max(1, math.ceil(len(pairs) / MAX_LINES))]:
            k = k * key_scale - 0.5 + [left.shape[1], 0]
            axes.plot([q[0], k[0]], [q[1], k[1]], color=(0.1, 0.8, 0.2), linewidth=0.6, alpha=0.7)
    axes.scatter(inliers[:, 0], inliers[:, 1], s=4, color=(0.1, 0.8, 0.2))
    if query.ground_truth is not None and query.camera is not None and len(query.inlier_landmarks):
        in_camera = query.ground_truth.transform(scene.points[query.inlier_landmarks])
        front = in_camera[:, 2] > 0
        projected = query.camera.project(in_camera[front]) * scale - 0.5
        for q, p in zip(inliers[front], projected):
            axes.plot([q[0], p[0]], [q[1], p[1]], color=(0.9, 0.1, 0.1), linewidth=0.8)
    axes.set_xlim(0, canvas.shape[1])
    axes.set_ylim(canvas.shape[0], 0)
    figure.suptitle(match_title(query, keyframe.name if keyframe else None), fontsize=9, y=0.995, va="top")
    return figure


def match_title(query: QueryView, keyframe: str | None) -> str:
    if query.failed:
        outcome = f"FAILED: {query.reason}"
    elif math.isnan(query.t_cm):
        outcome = f"{len(query.inlier_landmarks)} inliers"
    else:
        outcome = f"{query.t_cm:.1f} cm, {query.r_deg:.2f}°, {len(query.inlier_landmarks)} inliers"
    return f"{query.name}: {outcome}\nmapping image: {keyframe or 'none'}"


def figure_to_array(figure: Figure) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a matplotlib figure (Agg)."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
