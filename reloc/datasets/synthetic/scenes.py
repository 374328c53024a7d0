"""Textured meshes of synthetic scenes: an indoor room with furniture-like boxes and posters, and an
outdoor courtyard enclosed by building facades with pillars, balconies and windows.

World frame: metres, z up. Every surface is a grid-subdivided quad. Walls, furniture and facades
show their texture once (a window of it, or all of it stretched over large surfaces), so nothing
repeats; only the ground repeats a seamless material.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .textures import ground_texture, load_photos, poster_texture, surface_texture

CELL_M = 0.5  # quads are split into cells of at most this size
GAP_M = 0.002  # boxes stand this far from walls, so no two surfaces are coplanar and overlapping


@dataclass
class Mesh:
    """Triangles with per-corner texture coordinates and a material per triangle."""

    vertices: np.ndarray  # (V, 3) float64, world coordinates
    triangles: np.ndarray  # (T, 3) int32 vertex indices
    triangle_uvs: np.ndarray  # (T, 3, 2) float32 texture coordinates, in tiles
    materials: np.ndarray  # (T,) int32 index into the scene's textures


@dataclass
class CameraRegion:
    """Where hand-held cameras may go and where they look (yaw 0 = +x, 90 = +y; pitch up > 0)."""

    low: np.ndarray  # (3,) min corner of camera centres
    high: np.ndarray  # (3,) max corner of camera centres
    yaw_deg: tuple[float, float]
    pitch_deg: tuple[float, float]


@dataclass
class SceneModel:
    kind: str
    mesh: Mesh
    textures: np.ndarray  # (M, S, S, 3) uint8
    region: CameraRegion
    has_sky: bool


@dataclass
class MeshBuilder:
    vertices: list = field(default_factory=list)
    triangles: list = field(default_factory=list)
    uvs: list = field(default_factory=list)
    materials: list = field(default_factory=list)
    material_kinds: list[str] = field(default_factory=list)
    num_vertices: int = 0

    def material(self, kind: str) -> int:
        """A new material of ``kind`` (surface, ground, poster); its texture is made at the end."""
        self.material_kinds.append(kind)
        return len(self.material_kinds) - 1

    def add_quad(
        self,
        origin,
        edge_u,
        edge_v,
        material: int,
        tile_m: float | None = None,
        rng: np.random.Generator | None = None,
        repeat: bool = False,
    ) -> None:
        """Quad ``origin + s * edge_u + t * edge_v`` for s, t in [0, 1], split into cells.

        Texture mapping: ``tile_m=None`` maps the whole texture once (posters); otherwise the
        texture spans ``tile_m`` metres: with ``repeat`` it repeats (seamless materials such as
        the ground), without it the quad shows a random window of the texture, or the whole
        texture stretched when the quad is larger than ``tile_m``, so nothing repeats.
        """
        origin, edge_u, edge_v = (np.asarray(x, dtype=np.float64) for x in (origin, edge_u, edge_v))
        lengths = np.array([np.linalg.norm(edge_u), np.linalg.norm(edge_v)])
        cells_u, cells_v = np.maximum(1, np.ceil(lengths / CELL_M)).astype(int)
        s, t = np.meshgrid(np.linspace(0, 1, cells_u + 1), np.linspace(0, 1, cells_v + 1), indexing="xy")
        grid = origin + s[..., None] * edge_u + t[..., None] * edge_v
        if tile_m is None:
            extent, offset = np.ones(2), np.zeros(2)
        elif repeat:
            extent, offset = lengths / tile_m, rng.uniform(0, 1, 2)
        else:
            extent = np.minimum(lengths / tile_m, 1.0)
            offset = rng.uniform(0, 1 - extent + 1e-9)
        grid_uv = np.stack([s * extent[0] + offset[0], t * extent[1] + offset[1]], axis=-1)
        index = np.arange((cells_u + 1) * (cells_v + 1)).reshape(cells_v + 1, cells_u + 1)
        a, b, c, d = index[:-1, :-1].ravel(), index[:-1, 1:].ravel(), index[1:, 1:].ravel(), index[1:, :-1].ravel()
        local = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
        flat_uv = grid_uv.reshape(-1, 2)
        self.vertices.append(grid.reshape(-1, 3))
        self.triangles.append(local + self.num_vertices)
        self.uvs.append(flat_uv[local])
        self.materials.append(np.full(len(local), material))
        self.num_vertices += len(flat_uv)

    def add_box(self, low, high, material: int, tile_m: float, rng: np.random.Generator, bottom: bool = False) -> None:
        """Axis-aligned box without (or with) its bottom face; each face shows its own texture window."""
        (x0, y0, z0), (x1, y1, z1) = low, high
        dx, dy, dz = np.array([x1 - x0, 0, 0]), np.array([0, y1 - y0, 0]), np.array([0, 0, z1 - z0])
        faces = [
            ((x0, y0, z0), dx, dz),
            ((x0, y1, z0), dx, dz),
            ((x0, y0, z0), dy, dz),
            ((x1, y0, z0), dy, dz),
            ((x0, y0, z1), dx, dy),
        ]
        if bottom:
            faces.append(((x0, y0, z0), dx, dy))
        for origin, edge_u, edge_v in faces:
            self.add_quad(origin, edge_u, edge_v, material, tile_m, rng)

    def build(self) -> Mesh:
        return Mesh(
            np.concatenate(self.vertices),
            np.concatenate(self.triangles).astype(np.int32),
            np.concatenate(self.uvs).astype(np.float32),
            np.concatenate(self.materials).astype(np.int32),
        )


def make_textures(rng: np.random.Generator, kinds: list[str]) -> np.ndarray:
    """One texture per material, (M, S, S, 3) uint8: ``surface`` mosaics, ``ground`` seamless
    repeating material, ``poster`` photograph crops."""
    photos = load_photos()
    makers = {"surface": surface_texture, "ground": ground_texture, "poster": poster_texture}
    return np.stack([(makers[kind](photos, rng) * 255 + 0.5).astype(np.uint8) for kind in kinds])


def add_wall_posters(builder: MeshBuilder, rng, walls, count: int) -> None:
    """Posters about 1 cm in front of walls, each at its own distance so overlapping posters are
    never coplanar. ``walls``: (origin, along, up, inward normal) per wall."""
    for index in range(count):
        origin, along, up, normal = walls[rng.integers(len(walls))]
        length = np.linalg.norm(along)
        width, height = rng.uniform(0.5, 1.2), rng.uniform(0.4, 0.9)
        s = rng.uniform(0.05, max(0.06, 1 - (width + 0.05) / length))
        corner = origin + s * along + rng.uniform(1.0, 1.6) * up / np.linalg.norm(up) + (0.01 + GAP_M * index) * normal
        builder.add_quad(corner, along / length * width, up / np.linalg.norm(up) * height, builder.material("poster"))


def room_scene(rng: np.random.Generator) -> SceneModel:
    """A room of 5-7 x 4-6 x 2.6-3 m with boxes along the walls, a low table and posters. Every
    surface has a texture of its own, so no two places in the room look the same."""
    width, depth, height = rng.uniform(5, 7), rng.uniform(4, 6), rng.uniform(2.6, 3.0)
    builder = MeshBuilder()
    builder.add_quad((0, 0, 0), (width, 0, 0), (0, depth, 0), builder.material("surface"), 3.0, rng)  # floor
    builder.add_quad((0, 0, height), (width, 0, 0), (0, depth, 0), builder.material("surface"), 3.0, rng)  # ceiling
    walls = [
        (np.array([0, 0, 0.0]), np.array([width, 0, 0]), np.array([0, 0, height]), np.array([0, 1, 0.0])),
        (np.array([width, depth, 0]), np.array([-width, 0, 0]), np.array([0, 0, height]), np.array([0, -1, 0.0])),
        (np.array([0, depth, 0.0]), np.array([0, -depth, 0]), np.array([0, 0, height]), np.array([1, 0, 0.0])),
        (np.array([width, 0, 0.0]), np.array([0, depth, 0]), np.array([0, 0, height]), np.array([-1, 0, 0.0])),
    ]
    for origin, along, up, _ in walls:
        builder.add_quad(origin, along, up, builder.material("surface"), 3.0, rng)
    for _ in range(int(rng.integers(4, 8))):  # furniture against a random wall
        size = rng.uniform([0.4, 0.3, 0.4], [1.4, 0.8, 1.9])
        wall = rng.integers(4)
        if wall < 2:
            x = rng.uniform(0, width - size[0])
            y = GAP_M if wall == 0 else depth - size[1] - GAP_M
            low = np.array([x, y, 0.0])
            high = low + size
        else:
            y = rng.uniform(0, depth - size[0])
            x = GAP_M if wall == 2 else width - size[1] - GAP_M
            low = np.array([x, y, 0.0])
            high = low + size[[1, 0, 2]]
        builder.add_box(low, high, builder.material("surface"), 2.0, rng)
    centre = np.array([width / 2, depth / 2, 0.0])
    builder.add_box(centre - [0.5, 0.35, 0], centre + [0.5, 0.35, 0.72], builder.material("surface"), 2.0, rng)
    add_wall_posters(builder, rng, walls, 6)
    margin = 1.4
    region = CameraRegion(
        low=np.array([margin, margin, 1.1]),
        high=np.array([width - margin, depth - margin, 1.8]),
        yaw_deg=(-360.0, 360.0),
        pitch_deg=(-30.0, 5.0),
    )
    return SceneModel("room", builder.build(), make_textures(rng, builder.material_kinds), region, has_sky=False)


def courtyard_scene(rng: np.random.Generator) -> SceneModel:
    """A 16-24 x 14-20 m courtyard: ground, three facades with pillars, balconies and windows.
    The courtyard floor and every facade element have textures of their own; only the ground
    outside the courtyard repeats a material."""
    width, depth = rng.uniform(16, 24), rng.uniform(14, 20)
    builder = MeshBuilder()
    builder.add_quad(
        (-20, -20, -0.01), (width + 40, 0, 0), (0, depth + 40, 0), builder.material("ground"), 1.5, rng, repeat=True
    )
    builder.add_quad((0, 0, 0), (width, 0, 0), (0, depth, 0), builder.material("surface"), 8.0, rng)  # courtyard floor
    facades = []
    for origin, along in [
        ((0, depth, 0), (width, 0, 0)),
        ((0, 0, 0), (0, depth, 0)),
        ((width, depth, 0), (0, -depth, 0)),
    ]:
        height = rng.uniform(8, 14)
        origin, along = np.array(origin, dtype=float), np.array(along, dtype=float)
        normal = np.cross(np.array([0, 0, 1.0]), along) / np.linalg.norm(along)
        normal = normal if np.dot(normal, np.array([width / 2, depth / 2, 0]) - origin) > 0 else -normal  # inward
        builder.add_quad(origin, along, (0, 0, height), builder.material("surface"), 6.0, rng)
        builder.add_quad(
            origin + (0, 0, height), along, -normal * 5, builder.material("surface"), 6.0, rng
        )  # roof edge
        facades.append((origin, along, np.array([0, 0, height]), normal))
        length = np.linalg.norm(along)
        for s in np.arange(rng.uniform(1, 3), length - 1, rng.uniform(3, 5)):  # pillars
            foot = origin + s * along / length + GAP_M * normal
            side = along / length * 0.5
            low, high = np.minimum(foot, foot + side + normal * 0.4), np.maximum(foot, foot + side + normal * 0.4)
            builder.add_box(low, high + (0, 0, height * rng.uniform(0.3, 0.6)), builder.material("surface"), 2.0, rng)
        for floor in range(2):  # balconies
            s = rng.uniform(1, length - 4)
            foot = origin + s * along / length + (0, 0, 3.5 + 3 * floor) + GAP_M * normal
            far = foot + along / length * rng.uniform(2, 3.5) + normal * 1.0 + (0, 0, 0.9)
            builder.add_box(
                np.minimum(foot, far), np.maximum(foot, far), builder.material("surface"), 2.0, rng, bottom=True
            )
    add_wall_posters(builder, rng, facades, 14)
    region = CameraRegion(
        low=np.array([4.0, 3.0, 1.4]),
        high=np.array([width - 4.0, depth - 5.0, 2.0]),
        yaw_deg=(-10.0, 190.0),
        pitch_deg=(-10.0, 15.0),
    )
    return SceneModel("courtyard", builder.build(), make_textures(rng, builder.material_kinds), region, has_sky=True)


SCENES = {"room": room_scene, "courtyard": courtyard_scene}
