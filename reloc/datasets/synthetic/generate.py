"""Generate a synthetic scene on disk in the 7-Scenes or Cambridge Landmarks layout.

Everything is drawn from the seed: the scene (meshes, textures) from stream 1, the trajectories
from stream 2, the per-frame appearance noise from stream 3. Frames are rendered in order while
writer threads encode the previous ones; files are written with fixed encoder settings, so one
seed gives byte-identical files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

from ...errors import RelocError
from ...geometry.projection import project_points
from ...types import Camera, Pose
from .appearance import Appearance, apply_appearance
from .render import Renderer
from .scenes import SCENES, CameraRegion, SceneModel
from .trajectory import WORLD_UP, HandheldConfig, handheld_trajectory, look_rotation
from .writers import CambridgeWriter, SevenScenesWriter

NVM_POINTS = 5000
VISIBILITY_TOLERANCE_M = 0.02
WRITER_THREADS = 2


@dataclass(frozen=True)
class LayoutSpec:
    scene: str
    width: int
    height: int
    focal: float
    focal_jitter: float  # per-sequence relative focal variation (Cambridge: per-image focal)
    look_at_m: float  # off-trajectory queries aim at the point this far ahead of their mapping camera


LAYOUTS = {
    "7scenes": LayoutSpec(scene="room", width=640, height=480, focal=585.0, focal_jitter=0.0, look_at_m=2.0),
    "cambridge": LayoutSpec(scene="courtyard", width=640, height=360, focal=560.0, focal_jitter=0.08, look_at_m=8.0),
}


@dataclass
class SynthConfig:
    layout: str = "7scenes"
    seed: int = 0
    mapping_frames: int = 300
    query_frames: int = 100
    mapping_sequences: int = 3
    query_sequences: int = 2
    appearance: Appearance = field(default_factory=Appearance)
    query_offset_m: float = 0.0  # > 0: queries leave the mapping trajectory by this much (see off_trajectory_poses)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise RelocError(f"unknown layout {self.layout!r}; use one of {', '.join(LAYOUTS)}")
        if self.mapping_frames < self.mapping_sequences or self.query_frames < self.query_sequences:
            raise RelocError("each sequence needs at least one frame: raise --frames or lower the sequence counts")
        if not np.isfinite(self.query_offset_m) or self.query_offset_m < 0:
            raise RelocError(f"query offset must be a finite distance >= 0 m, got {self.query_offset_m}")


@dataclass(frozen=True)
class PlannedFrame:
    sequence: int  # 1-based
    index: int  # 0-based within the sequence
    split: str  # train or test
    pose: Pose
    camera: Camera
    appearance: Appearance
    noise_seed: int


def build_scene(kind: str, seed: int) -> SceneModel:
    """The scene model of a seed, identical to the one ``generate`` renders for that seed."""
    return SCENES[kind](np.random.default_rng([seed, 1]))


def split_counts(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


def plan_frames(config: SynthConfig, scene: SceneModel) -> list[PlannedFrame]:
    spec = LAYOUTS[config.layout]
    rng = np.random.default_rng([config.seed, 2])
    noise_seeds = np.random.default_rng([config.seed, 3])
    mapping = [
        ("train", n, HandheldConfig(), Appearance())
        for n in split_counts(config.mapping_frames, config.mapping_sequences)
    ]
    queries = [
        ("test", n, HandheldConfig(height_margin_m=0.2), config.appearance)
        for n in split_counts(config.query_frames, config.query_sequences)
    ]
    frames = []
    for sequence, (split, count, handheld, appearance) in enumerate(mapping + queries, start=1):
        focal = spec.focal * (1 + rng.uniform(-spec.focal_jitter, spec.focal_jitter))
        camera = Camera.simple_pinhole(spec.width, spec.height, focal)
        if split == "test" and config.query_offset_m > 0:
            followed = (sequence - len(mapping) - 1) % len(mapping) + 1
            path = [frame.pose for frame in frames if frame.sequence == followed]
            poses = off_trajectory_poses(path, count, config.query_offset_m, spec.look_at_m, scene.region, rng)
        else:
            poses = handheld_trajectory(scene.region, count, rng, handheld)
        for index, pose in enumerate(poses):
            frames.append(
                PlannedFrame(sequence, index, split, pose, camera, appearance, int(noise_seeds.integers(2**63)))
            )
    return frames


def off_trajectory_poses(
    path: list[Pose], count: int, offset_m: float, look_at_m: float, region: CameraRegion, rng: np.random.Generator
) -> list[Pose]:
    """``count`` query poses that leave a mapping path: each takes one of ``count`` evenly spaced
    poses of ``path``, moves its centre ``offset_m`` sideways (horizontally, perpendicular to its
    viewing axis, left or right at random; kept inside ``region``) and re-aims it (no roll) at the
    point ``look_at_m`` ahead of the mapping camera. The query then sees the same surfaces from
    about atan(offset / look_at) away."""
    poses = []
    for index in np.linspace(0, len(path) - 1, count).round().astype(int):
        R, centre = path[index].R, path[index].center
        target = centre + look_at_m * R[2]  # camera z axis in world
        sideways = np.cross(R[2], WORLD_UP)
        side = rng.choice([-1.0, 1.0])
        moved = np.clip(centre + side * offset_m * sideways / np.linalg.norm(sideways), region.low, region.high)
        moved[2] = centre[2]
        forward = (target - moved) / np.linalg.norm(target - moved)
        yaw, pitch = np.arctan2(forward[1], forward[0]), np.arcsin(np.clip(forward[2], -1, 1))
        poses.append(Pose.from_rotation_center(look_rotation(yaw, pitch, 0.0), moved))
    return poses


def write_frame(
    layout: str, root: Path, frame: PlannedFrame, rendering, points: np.ndarray | None
) -> list[tuple[int, float, float]]:
    """Apply the frame's appearance and write its files; for Cambridge return the NVM points it
    sees as (point index, x, y relative to the image centre)."""
    rgb = apply_appearance(rendering.rgb, frame.appearance, np.random.default_rng(frame.noise_seed))
    if layout == "7scenes":
        SevenScenesWriter(root).write_frame(frame.sequence, frame.index, rgb, rendering.depth, frame.pose)
        return []
    CambridgeWriter(root).write_image(CambridgeWriter.image_name(frame.sequence, frame.index), rgb)
    return visible_points(points, frame.pose, frame.camera, rendering.depth)


def visible_points(points: np.ndarray, pose: Pose, camera: Camera, depth: np.ndarray) -> list[tuple[int, float, float]]:
    """Points inside the image whose depth matches the rendered depth at their pixel."""
    pixels, inside = project_points(points, pose, camera)
    index = np.flatnonzero(inside)
    z = pose.transform(points[index])[:, 2]
    cols, rows = pixels[index].astype(int).T
    seen = np.abs(depth[rows, cols] - z) < VISIBILITY_TOLERANCE_M
    cx, cy = camera.principal_point
    return [(int(i), float(pixels[i, 0] - cx), float(pixels[i, 1] - cy)) for i in index[seen]]


def sample_surface_points(scene: SceneModel, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted random points on the mesh (P, 3) and their texture colours (P, 3) uint8."""
    mesh = scene.mesh
    corners = mesh.vertices[mesh.triangles]
    areas = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1) / 2
    triangles = rng.choice(len(areas), size=count, p=areas / areas.sum())
    b = rng.uniform(0, 1, (count, 2))
    flip = b.sum(axis=1) > 1
    b[flip] = 1 - b[flip]
    points = (
        corners[triangles, 0]
        + b[:, :1] * (corners[triangles, 1] - corners[triangles, 0])
        + b[:, 1:] * (corners[triangles, 2] - corners[triangles, 0])
    )
    uvs = mesh.triangle_uvs[triangles]
    uv = uvs[:, 0] + b[:, :1] * (uvs[:, 1] - uvs[:, 0]) + b[:, 1:] * (uvs[:, 2] - uvs[:, 0])
    size = scene.textures.shape[1]
    texel = (np.mod(uv, 1.0) * size).astype(int).clip(0, size - 1)
    colours = scene.textures[mesh.materials[triangles], texel[:, 1], texel[:, 0]]
    return points, colours


def generate(config: SynthConfig, out: Path, on_frame: Callable[[int, int], None] | None = None) -> list[PlannedFrame]:
    """Write the scene to ``out``; ``on_frame(done, total)`` reports progress."""
    spec = LAYOUTS[config.layout]
    scene = build_scene(spec.scene, config.seed)
    frames = plan_frames(config, scene)
    out.mkdir(parents=True, exist_ok=True)
    points, colours = (
        sample_surface_points(scene, NVM_POINTS, np.random.default_rng([config.seed, 4]))
        if config.layout == "cambridge"
        else (None, None)
    )
    renderer = Renderer(scene)
    opencv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # the cores go to the raycaster and the writer threads; OpenCV's idle pool would spin
    try:
        with ThreadPoolExecutor(max_workers=WRITER_THREADS) as writers:  # encoding overlaps rendering
            pending = [
                writers.submit(
                    write_frame, config.layout, out, frame, renderer.render(frame.pose, frame.camera), points
                )
                for frame in _reporting(frames, on_frame)
            ]
            seen = [future.result() for future in pending]
    finally:
        cv2.setNumThreads(opencv_threads)
    sequences = sorted({(f.split, f.sequence) for f in frames})
    if config.layout == "7scenes":
        SevenScenesWriter(out).write_splits(
            [s for split, s in sequences if split == "train"], [s for split, s in sequences if split == "test"]
        )
    else:
        write_cambridge_metadata(out, frames, points, colours, seen)
    metadata = {"generator": "reloc synth", "scene": spec.scene, **dataclasses.asdict(config)}
    (out / "synthetic.yaml").write_text(yaml.safe_dump(metadata, sort_keys=False))
    return frames


def _reporting(frames: list[PlannedFrame], on_frame: Callable[[int, int], None] | None):
    for done, frame in enumerate(frames):
        yield frame
        if on_frame is not None:
            on_frame(done + 1, len(frames))


def write_cambridge_metadata(out: Path, frames: list[PlannedFrame], points, colours, seen) -> None:
    writer = CambridgeWriter(out)
    names = [CambridgeWriter.image_name(f.sequence, f.index) for f in frames]
    for split in ("train", "test"):
        writer.write_split(split, [(name, f.pose) for name, f in zip(names, frames) if f.split == split])
    observations: list[list[tuple[int, float, float]]] = [[] for _ in range(len(points))]
    for image_index, visible in enumerate(seen):
        for point_index, x, y in visible:
            observations[point_index].append((image_index, x, y))
    keep = [i for i, obs in enumerate(observations) if len(obs) >= 2]
    writer.write_nvm(
        [(name, f.camera, f.pose) for name, f in zip(names, frames)],
        points[keep],
        colours[keep],
        [observations[i] for i in keep],
    )
