"""Training pairs from a synthetic scene: two views with depth, intrinsics, relative pose and
dense ground-truth correspondences with covisibility masks.

Correspondences are per pixel centre (COLMAP convention): ``flow0[y, x]`` is where the surface
point seen at pixel centre (x + 0.5, y + 0.5) of image 0 projects in image 1 (NaN where image 0
sees nothing). ``covisible0[y, x]`` is true when that point is inside image 1, in front of it and
not occluded there (its depth matches image 1's depth at that pixel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...geometry.projection import backproject_depth
from ...rotation import axis_angle_to_rotmat
from ...types import Camera, Pose
from .appearance import Appearance, apply_appearance
from .generate import build_scene
from .render import Renderer, pixel_centres
from .trajectory import HandheldConfig, handheld_trajectory

OCCLUSION_TOLERANCE = 0.01  # relative depth difference still counted as the same surface


@dataclass
class TrainingPair:
    image0: np.ndarray  # (H, W, 3) uint8
    image1: np.ndarray
    depth0: np.ndarray  # (H, W) float32 metres; inf where nothing was hit
    depth1: np.ndarray
    camera0: Camera
    camera1: Camera
    pose0: Pose  # cam_from_world
    pose1: Pose
    flow0: np.ndarray  # (H, W, 2) float32 pixel in image 1 of each pixel centre of image 0
    flow1: np.ndarray  # (H, W, 2) float32 pixel in image 0 of each pixel centre of image 1
    covisible0: np.ndarray  # (H, W) bool
    covisible1: np.ndarray

    @property
    def cam1_from_cam0(self) -> Pose:
        return self.pose1 @ self.pose0.inverse()


def correspondences(depth0: np.ndarray, camera0: Camera, pose0: Pose, depth1: np.ndarray, camera1: Camera, pose1: Pose):
    """(flow (H, W, 2), covisible (H, W)) from view 0 into view 1."""
    height, width = depth0.shape
    pixels = pixel_centres(width, height)
    depth = depth0.reshape(-1).astype(np.float64)
    valid = np.isfinite(depth)
    flow = np.full((height * width, 2), np.nan)
    covisible = np.zeros(height * width, bool)
    points_cam1 = pose1.transform(backproject_depth(pixels[valid], depth[valid], pose0, camera0))
    in_front = points_cam1[:, 2] > 1e-6
    projected = np.full((len(points_cam1), 2), np.nan)
    projected[in_front] = camera1.project(points_cam1[in_front])
    flow[valid] = projected
    inside = (
        in_front
        & (projected[:, 0] >= 0)
        & (projected[:, 0] < camera1.width)
        & (projected[:, 1] >= 0)
        & (projected[:, 1] < camera1.height)
    )
    cols = np.where(inside, projected[:, 0], 0).astype(int)
    rows = np.where(inside, projected[:, 1], 0).astype(int)
    seen_depth = depth1[rows, cols]
    same_surface = np.abs(seen_depth - points_cam1[:, 2]) <= OCCLUSION_TOLERANCE * points_cam1[:, 2]
    covisible[np.flatnonzero(valid)] = inside & same_surface
    return flow.reshape(height, width, 2).astype(np.float32), covisible.reshape(height, width)


class PairSampler:
    """Random view pairs of one synthetic scene (``room`` or ``courtyard``) at a chosen resolution.

    View 0 is a hand-held pose in the scene's camera region; view 1 moves up to
    ``max_baseline_m`` and turns up to ``max_angle_deg``. Pairs with less than ``min_overlap`` of
    image 0 covisible are redrawn.
    """

    def __init__(
        self,
        kind: str = "room",
        seed: int = 0,
        width: int = 320,
        height: int = 240,
        focal: float | None = None,
        max_baseline_m: float = 0.8,
        max_angle_deg: float = 25.0,
        min_overlap: float = 0.3,
        appearance: Appearance = Appearance(),
    ):
        self.scene = build_scene(kind, seed)
        self.renderer = Renderer(self.scene)
        self.camera = Camera.simple_pinhole(width, height, focal if focal is not None else 0.9 * width)
        self.max_baseline_m, self.max_angle_deg, self.min_overlap = max_baseline_m, max_angle_deg, min_overlap
        self.appearance = appearance

    def _second_view(self, pose0: Pose, rng: np.random.Generator) -> Pose:
        direction = rng.normal(size=3)
        centre = pose0.center + direction / np.linalg.norm(direction) * rng.uniform(0, self.max_baseline_m)
        turn = axis_angle_to_rotmat(rng.normal(size=3), np.radians(rng.uniform(0, self.max_angle_deg)))
        return Pose.from_rotation_center(turn @ pose0.R, np.clip(centre, self.scene.region.low, self.scene.region.high))

    def sample(self, rng: np.random.Generator, max_tries: int = 50) -> TrainingPair:
        for _ in range(max_tries):
            pose0 = handheld_trajectory(self.scene.region, 2, rng, HandheldConfig(waypoints=2))[0]
            pose1 = self._second_view(pose0, rng)
            render0, render1 = self.renderer.render(pose0, self.camera), self.renderer.render(pose1, self.camera)
            flow0, covisible0 = correspondences(render0.depth, self.camera, pose0, render1.depth, self.camera, pose1)
            if covisible0.mean() < self.min_overlap:
                continue
            flow1, covisible1 = correspondences(render1.depth, self.camera, pose1, render0.depth, self.camera, pose0)
            return TrainingPair(
                image0=apply_appearance(render0.rgb, Appearance(), rng),
                image1=apply_appearance(render1.rgb, self.appearance, rng),
                depth0=render0.depth,
                depth1=render1.depth,
                camera0=self.camera,
                camera1=self.camera,
                pose0=pose0,
                pose1=pose1,
                flow0=flow0,
                flow1=flow1,
                covisible0=covisible0,
                covisible1=covisible1,
            )
        raise RuntimeError(f"no pair with {self.min_overlap:.0%} overlap in {max_tries} tries; lower min_overlap")
