"""CPU rendering of textured scenes with Open3D's RaycastingScene.

Rays leave the camera centre through pixel positions in COLMAP convention (pixel (i, j) covers
[i, i+1) x [j, j+1); its centre is (i + 0.5, j + 0.5)). The ray direction is K^-1 [u, v, 1]
rotated to the world, so the ray parameter of a hit is its depth along the optical axis.
Colour: barycentric hit -> texture coordinates -> bilinear, repeating texture lookup, with
simple directional shading, supersampled over the pixel corners. Depth and triangle ids are those
of the pixel-centre rays.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import open3d as o3d

from ...types import Camera, Pose
from .scenes import SceneModel

LIGHT = np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])
SKY_HORIZON = np.array([0.78, 0.84, 0.9], np.float32)
SKY_ZENITH = np.array([0.32, 0.52, 0.85], np.float32)
NO_HIT = np.iinfo(np.uint32).max
REMAP_ROW = 4096


@dataclass
class Hits:
    """Hits of N rays."""

    depth: np.ndarray  # (N,) float32 metres along the optical axis; inf where nothing was hit
    triangle_ids: np.ndarray  # (N,) int64; -1 where nothing was hit
    barycentric: np.ndarray  # (N, 2) float32 weights of the triangle's 2nd and 3rd vertex
    directions: np.ndarray  # (N, 3) float32 world ray directions


@dataclass
class Rendering:
    rgb: np.ndarray  # (H, W, 3) float32 in [0, 1]
    depth: np.ndarray  # (H, W) float32 metres at pixel centres; inf where nothing was hit
    triangle_ids: np.ndarray  # (H, W) int64; -1 where nothing was hit


class Renderer:
    """Renders a :class:`SceneModel` from any pinhole camera."""

    def __init__(self, scene: SceneModel):
        self.scene = scene
        self.raycaster = o3d.t.geometry.RaycastingScene()
        self.raycaster.add_triangles(
            o3d.core.Tensor(scene.mesh.vertices.astype(np.float32)),
            o3d.core.Tensor(scene.mesh.triangles.astype(np.uint32)),
        )
        self.atlas = TextureAtlas(scene.textures)
        corner_uvs = scene.mesh.triangle_uvs
        brightness = triangle_brightness(scene.mesh.vertices, scene.mesh.triangles)
        # Per triangle: uv of corner 0, uv edges to corners 1 and 2, brightness, material.
        self.triangle_table = np.concatenate(
            [
                corner_uvs[:, 0],
                corner_uvs[:, 1] - corner_uvs[:, 0],
                corner_uvs[:, 2] - corner_uvs[:, 0],
                brightness[:, None],
                scene.mesh.materials[:, None].astype(np.float32),
            ],
            axis=1,
        ).astype(np.float32)
        corners = scene.mesh.vertices[scene.mesh.triangles]
        normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        self.planes = np.concatenate([normals, np.einsum("ij,ij->i", normals, corners[:, 0])[:, None]], 1)  # n.x = d
        self._grids: dict[Camera, tuple[np.ndarray, np.ndarray]] = {}

    def cast(self, pose: Pose, camera: Camera, pixels: np.ndarray) -> Hits:
        """Cast rays through ``pixels`` (N, 2) of a pinhole camera."""
        return self._cast_directions(pose, camera_directions(camera, pixels))

    def _cast_directions(self, pose: Pose, directions_cam: np.ndarray) -> Hits:
        rays = np.empty((len(directions_cam), 6), np.float32)
        rays[:, :3] = pose.center
        rays[:, 3:] = rotate_to_world(directions_cam, pose)
        result = self.raycaster.cast_rays(o3d.core.Tensor(rays))
        ids = result["primitive_ids"].numpy().astype(np.int64)
        ids[ids == NO_HIT] = -1
        return Hits(
            depth=result["t_hit"].numpy(),
            triangle_ids=ids,
            barycentric=result["primitive_uvs"].numpy(),
            directions=rays[:, 3:],
        )

    def shade(self, hits: Hits) -> np.ndarray:
        """Colour (N, 3) float32 of hits: shaded texture, or sky / black where nothing was hit."""
        hit = hits.triangle_ids >= 0
        table = self.triangle_table[np.where(hit, hits.triangle_ids, 0)]
        b1, b2 = hits.barycentric[:, :1], hits.barycentric[:, 1:]
        uv = table[:, 0:2] + table[:, 2:4] * b1 + table[:, 4:6] * b2
        colour = self.atlas.sample(table[:, 7], uv) * table[:, 6:7]
        if self.scene.has_sky:
            directions = hits.directions[~hit]
            weight = np.clip(directions[:, 2] / np.linalg.norm(directions, axis=-1), 0, 1)[:, None]
            colour[~hit] = SKY_HORIZON * (1 - weight) + SKY_ZENITH * weight
        else:
            colour[~hit] = 0.0
        return colour

    def render(self, pose: Pose, camera: Camera) -> Rendering:
        """Supersampled colour, exact depth and triangle ids at pixel centres.

        Rays go through every pixel corner, (H+1) x (W+1) of them; a pixel's colour is the mean of
        its four corner samples (4x supersampling, samples shared with the neighbours). Where the
        four corners hit the same triangle, the centre ray hits it too (no geometry in the scene is
        smaller than a pixel), so its depth is the exact intersection with that triangle's plane;
        the other pixels (edges, about 5%) cast their own centre ray.
        """
        height, width = camera.height, camera.width
        if camera not in self._grids:
            self._grids[camera] = (
                camera_directions(camera, corner_pixels(width, height)),
                camera_directions(camera, pixel_centres(width, height)),
            )
        corners, centres = self._grids[camera]
        hits = self._cast_directions(pose, corners)
        colour = self.shade(hits).reshape(height + 1, width + 1, 3)
        ids = hits.triangle_ids.reshape(height + 1, width + 1)
        same = (ids[:-1, :-1] == ids[:-1, 1:]) & (ids[:-1, :-1] == ids[1:, :-1]) & (ids[:-1, :-1] == ids[1:, 1:])
        centre_ids = np.where(same, ids[:-1, :-1], -1).ravel()
        depth = self.plane_depth(pose, centres, centre_ids)
        edges = np.flatnonzero(~same.ravel())
        edge_hits = self._cast_directions(pose, centres[edges])
        depth[edges], centre_ids[edges] = edge_hits.depth, edge_hits.triangle_ids
        return Rendering(
            rgb=(colour[:-1, :-1] + colour[:-1, 1:] + colour[1:, :-1] + colour[1:, 1:]) / 4,
            depth=depth.reshape(height, width),
            triangle_ids=centre_ids.reshape(height, width),
        )

    def plane_depth(self, pose: Pose, directions_cam: np.ndarray, triangle_ids: np.ndarray) -> np.ndarray:
        """Depth (N,) float32 where rays meet the planes of ``triangle_ids`` (inf for -1)."""
        planes = self.planes[np.maximum(triangle_ids, 0)]
        directions = rotate_to_world(directions_cam, pose)
        offsets = planes[:, 3] - np.einsum("ij,j->i", planes[:, :3], pose.center)
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = offsets / np.einsum("ij,ij->i", planes[:, :3], directions)
        depth[triangle_ids < 0] = np.inf
        return depth.astype(np.float32)


def rotate_to_world(directions_cam: np.ndarray, pose: Pose) -> np.ndarray:
    """R^T d for each row of (N, 3) float32, written out so that no BLAS thread pool is involved
    (its idle threads spin and steal the cores the raycaster and encoders need)."""
    R = pose.R.astype(np.float32)
    return directions_cam[:, :1] * R[0] + directions_cam[:, 1:2] * R[1] + directions_cam[:, 2:] * R[2]


def corner_pixels(width: int, height: int) -> np.ndarray:
    """Pixel corners ((H+1)*(W+1), 2) in row-major order (COLMAP convention: integers)."""
    cols, rows = np.meshgrid(np.arange(width + 1, dtype=np.float64), np.arange(height + 1, dtype=np.float64))
    return np.stack([cols, rows], -1).reshape(-1, 2)


def pixel_centres(width: int, height: int) -> np.ndarray:
    """Pixel centres (H*W, 2) in row-major order (COLMAP convention: integers + 0.5)."""
    cols, rows = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    return np.stack([cols, rows], -1).reshape(-1, 2) + 0.5


def camera_directions(camera: Camera, pixels: np.ndarray) -> np.ndarray:
    """Camera-frame ray directions K^-1 [u, v, 1] (N, 3) float32 of a pinhole camera."""
    if camera.model not in ("SIMPLE_PINHOLE", "PINHOLE"):
        raise ValueError(f"the synthetic renderer needs a pinhole camera, got {camera.model}")
    (fx, fy), (cx, cy) = camera.focal_length, camera.principal_point
    pixels = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
    return np.stack([(pixels[:, 0] - cx) / fx, (pixels[:, 1] - cy) / fy, np.ones(len(pixels))], -1).astype(np.float32)


class TextureAtlas:
    """All material textures in a grid of ``COLUMNS`` columns, each padded by one wrapped texel
    (so that bilinear lookups at tile borders wrap), sampled with ``cv2.remap``; cv2 needs images
    under 32767 pixels a side, hence the grid."""

    COLUMNS = 12

    def __init__(self, textures: np.ndarray):
        count, self.size = textures.shape[0], textures.shape[1]
        self.stride = self.size + 2
        rows = -(-count // self.COLUMNS)
        padded = np.pad(textures, ((0, rows * self.COLUMNS - count), (1, 1), (1, 1), (0, 0)), mode="wrap")
        grid = padded.reshape(rows, self.COLUMNS, self.stride, self.stride, 3).transpose(0, 2, 1, 3, 4)
        self.image = np.ascontiguousarray(grid.reshape(rows * self.stride, self.COLUMNS * self.stride, 3))

    def sample(self, materials: np.ndarray, uv: np.ndarray) -> np.ndarray:
        """Bilinear, repeating lookup of textures ``materials`` (N,) (float or int) at ``uv`` (N, 2), in
        tiles -> (N, 3) float32 in [0, 1]."""
        # Texel k covers [k, k+1) of u * size; in its padded tile it sits at column k + 1, and
        # remap puts column centres at integers: column = u * size - 0.5 + 1.
        texel = np.mod(uv.astype(np.float32), 1.0) * self.size + 0.5
        materials = materials.astype(np.int64)
        count = len(uv)
        rows = -(-count // REMAP_ROW)  # remap maps must stay under 32767 rows and columns
        map_x = np.zeros(rows * REMAP_ROW, np.float32)
        map_y = np.zeros(rows * REMAP_ROW, np.float32)
        map_x[:count] = texel[:, 0] + (materials % self.COLUMNS) * self.stride
        map_y[:count] = texel[:, 1] + (materials // self.COLUMNS) * self.stride
        shape = (rows, REMAP_ROW)
        sampled = cv2.remap(self.image, map_x.reshape(shape), map_y.reshape(shape), cv2.INTER_LINEAR)
        return sampled.reshape(-1, 3)[:count].astype(np.float32) / 255.0


def triangle_brightness(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Ambient plus two-sided Lambertian shading (T,) float32 from a fixed directional light."""
    corners = vertices[triangles]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return (0.65 + 0.35 * np.abs(normals @ LIGHT)).astype(np.float32)
