"""Open3D geometry of a map scene, in layers the viewer toggles, and an automatic viewpoint.

World coordinates are the map's; cameras are drawn from their cam_from_world pose and pinhole
intrinsics (image corners unprojected to ``frustum_depth`` metres in front of the centre).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import open3d as o3d
from matplotlib import colormaps

from ..types import Camera, Pose
from .scene import MapScene, QueryView

MAPPING_COLOR = (0.20, 0.35, 0.85)
GROUND_TRUTH_COLOR = (0.10, 0.65, 0.20)
ESTIMATE_COLOR = (1.00, 0.50, 0.00)
FAILED_COLOR = (0.85, 0.05, 0.05)
BACKGROUND = (1.0, 1.0, 1.0)
ERROR_RANGE_CM = (1.0, 100.0)  # error lines: green at or below the first, red at or above the second (log scale)


@dataclass
class Layer:
    name: str
    geometry: o3d.geometry.Geometry3D
    kind: str  # "points" or "lines"


@dataclass
class ViewCamera:
    """A pinhole view for rendering: ``K`` (3, 3) and ``pose`` cam_from_world (x right, y down, z forward)."""

    K: np.ndarray
    pose: Pose
    width: int
    height: int

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 2) pixels (array indices + 0.5, COLMAP) of world ``points`` (N, 3), and (N,) depths."""
        in_camera = self.pose.transform(points)
        depth = in_camera[:, 2]
        pixels = (in_camera @ self.K.T)[:, :2] / depth[:, None]
        return pixels, depth


def frustum_corners(camera: Camera, pose: Pose, depth: float) -> np.ndarray:
    """(5, 3) world points: the camera centre, then the image corners at ``depth`` metres."""
    corners = np.array([[0, 0], [camera.width, 0], [camera.width, camera.height], [0, camera.height]], np.float64)
    rays = np.c_[corners, np.ones(4)] @ np.linalg.inv(camera.K).T
    return np.vstack([pose.center, pose.inverse().transform(rays * depth)])


FRUSTUM_EDGES = np.array([[0, 1], [0, 2], [0, 3], [0, 4], [1, 2], [2, 3], [3, 4], [4, 1]])


def line_set(points: np.ndarray, edges: np.ndarray, colors: np.ndarray) -> o3d.geometry.LineSet:
    """``points`` (P, 3), ``edges`` (E, 2) indices, ``colors`` (E, 3) in [0, 1]."""
    lines = o3d.geometry.LineSet()
    lines.points = o3d.utility.Vector3dVector(np.asarray(points, np.float64).reshape(-1, 3))
    lines.lines = o3d.utility.Vector2iVector(np.asarray(edges, np.int32).reshape(-1, 2))
    lines.colors = o3d.utility.Vector3dVector(np.asarray(colors, np.float64).reshape(-1, 3))
    return lines


def frustums(cameras: list[tuple[Camera, Pose]], depth: float, color) -> o3d.geometry.LineSet:
    """All frustums in one line set, one colour."""
    points = [frustum_corners(camera, pose, depth) for camera, pose in cameras]
    edges = [FRUSTUM_EDGES + 5 * index for index in range(len(points))]
    return line_set(np.reshape(points, (-1, 3)), np.reshape(edges, (-1, 2)), np.tile(color, (8 * len(points), 1)))


def error_color(t_cm: float) -> np.ndarray:
    """RGB of a translation error: green (small) to red (large) on a log scale over ERROR_RANGE_CM."""
    low, high = np.log10(ERROR_RANGE_CM)
    value = (math.log10(max(t_cm, 1e-6)) - low) / (high - low) if math.isfinite(t_cm) else 1.0
    return np.asarray(colormaps["RdYlGn_r"](float(np.clip(value, 0, 1)))[:3])


def box_edges(centres: np.ndarray, sides: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned cubes: (8 V, 3) corners and (12 V, 2) edges."""
    unit = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    edges = np.array([[0, 1], [2, 3], [4, 5], [6, 7], [0, 2], [1, 3], [4, 6], [5, 7], [0, 4], [1, 5], [2, 6], [3, 7]])
    corners = centres[:, None] + sides[:, None, None] * unit[None]
    return corners.reshape(-1, 3), (edges[None] + 8 * np.arange(len(centres))[:, None, None]).reshape(-1, 2)


def value_colors(values: np.ndarray) -> np.ndarray:
    """(V, 3) viridis colours spanning the range of ``values`` (V,) (FaVoR: training PSNR)."""
    low, high = np.percentile(values, [2, 98]) if len(values) else (0.0, 1.0)
    return colormaps["viridis"](np.clip((values - low) / max(high - low, 1e-6), 0, 1))[:, :3]


def frustum_depth(scene: MapScene) -> float:
    """Frustum size: 6 % of the map's radius."""
    return 0.06 * scene.focus()[1]


def build_layers(scene: MapScene, depth: float | None = None) -> list[Layer]:
    """Landmarks, mapping cameras, query cameras (ground truth, estimate, error lines, failed) and
    FaVoR or NeuMap voxels, each a layer; layers with nothing to draw are left out."""
    depth = depth or frustum_depth(scene)
    layers = []
    finite = np.isfinite(scene.points).all(axis=1)
    if finite.any():
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(scene.points[finite]))
        cloud.colors = o3d.utility.Vector3dVector(scene.colors[finite])
        layers.append(Layer("landmarks", cloud, "points"))
    if scene.keyframes:
        layers.append(
            Layer(
                "mapping cameras",
                frustums([(k.camera, k.pose) for k in scene.keyframes], depth, MAPPING_COLOR),
                "lines",
            )
        )
    drawable = [q for q in scene.queries if q.camera is not None]
    with_truth = [q for q in drawable if q.ground_truth is not None and not q.failed]
    if with_truth:
        layers.append(
            Layer(
                "ground truth",
                frustums([(q.camera, q.ground_truth) for q in with_truth], depth, GROUND_TRUTH_COLOR),
                "lines",
            )
        )
    estimated = [q for q in drawable if not q.failed]
    if estimated:
        layers.append(
            Layer("estimates", frustums([(q.camera, q.estimate) for q in estimated], depth, ESTIMATE_COLOR), "lines")
        )
    if with_truth:
        ends = np.array([[q.ground_truth.center, q.estimate.center] for q in with_truth]).reshape(-1, 3)
        edges = np.arange(len(ends)).reshape(-1, 2)
        layers.append(Layer("errors", line_set(ends, edges, [error_color(q.t_cm) for q in with_truth]), "lines"))
    failed = [q for q in drawable if q.failed and q.ground_truth is not None]
    if failed:
        layers.append(Layer("failed", failed_markers(failed, depth), "lines"))
    if scene.voxels is not None and len(scene.voxels.centres):
        corners, edges = box_edges(scene.voxels.centres, scene.voxels.sides)
        layers.append(
            Layer(
                f"{scene.voxels.method} voxels",
                line_set(corners, edges, np.repeat(value_colors(scene.voxels.values), 12, axis=0)),
                "lines",
            )
        )
    return layers


def failed_markers(queries: list[QueryView], depth: float) -> o3d.geometry.LineSet:
    """A failed query: its ground-truth frustum in red with a cross through the image plane."""
    cameras = frustums([(q.camera, q.ground_truth) for q in queries], depth, FAILED_COLOR)
    corners = np.asarray(cameras.points).reshape(-1, 5, 3)
    crosses = line_set(
        corners[:, 1:].reshape(-1, 3),
        (np.array([[0, 2], [1, 3]])[None] + 4 * np.arange(len(queries))[:, None, None]).reshape(-1, 2),
        np.tile(FAILED_COLOR, (2 * len(queries), 1)),
    )
    return cameras + crosses


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> Pose:
    """cam_from_world of a camera at ``eye`` looking at ``target`` with world ``up`` pointing up in the image."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(-up, forward)
    if np.linalg.norm(right) < 1e-9:
        right = np.cross(forward, np.array([1.0, 0.0, 0.0]) if abs(forward[0]) < 0.9 else np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return Pose.from_rotation_center(np.stack([right, down, forward]), eye)


def automatic_view(
    scene: MapScene, width: int, height: int, fov_deg: float = 60.0, elevation_deg: float = 30.0
) -> ViewCamera:
    """A view framing the map: behind the mapping cameras (their mean viewing direction), raised by
    ``elevation_deg`` along their mean up direction, far enough for the map's extent to fit."""
    centre, radius = scene.focus()
    rotations = [k.pose.R for k in scene.keyframes] or [np.eye(3)]
    forward = np.mean([R[2] for R in rotations], axis=0)
    up = -np.mean([R[1] for R in rotations], axis=0)
    up = up / np.linalg.norm(up) if np.linalg.norm(up) > 1e-6 else np.array([0.0, 0.0, 1.0])
    back = -(forward - up * (forward @ up))
    if np.linalg.norm(back) < 1e-6:
        back = np.cross(up, np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0]))
    back /= np.linalg.norm(back)
    elevation = math.radians(elevation_deg)
    focal = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    distance = radius / math.sin(math.radians(fov_deg) / 2 * min(1.0, height / width))
    eye = centre + distance * (math.cos(elevation) * back + math.sin(elevation) * up)
    K = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
    return ViewCamera(K, look_at(eye, centre, up), width, height)
