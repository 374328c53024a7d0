"""Volume rendering of landmark descriptor fields, batched over landmarks: per-landmark voxel
grids (``render_rays``) or one scene field such as the hash grid (``render_field_rays``).

Each landmark l owns an axis-aligned cube in world coordinates, centred on ``centres[l]`` with
side ``sides[l]`` (metres), holding a G x G x G grid of 1 density + C descriptor channels
(``grids``: (L, C + 1, G, G, G), index order z, y, x as in ``grid_sample``). The grid values sit
on the cube's corners and evenly between them (``align_corners=True``). A ray (origin, unit
direction, world) is sampled at S evenly spaced points between its entry and exit of the cube;
values are trilinear, computed as a (samples x G^3) weight matrix times the flattened grid (one
batched matrix product, much faster on CPU than ``grid_sample``'s 3-D kernels, and exact: the
weights are the products of 1-D hat functions). Following the paper (DVGO's post-activated density), alpha = 1 -
exp(-softplus(density + shift) * step), with ``shift`` chosen so that a zero density gives
``alpha_init`` per voxel length; weights = alpha * transmittance; the descriptor is the weighted
sum plus the final transmittance times the background descriptor (zero), clamped to [-1, 1]
and L2-normalised. Rays that miss their cube are flagged invalid.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class RenderConfig:
    samples: int = 8  # points per ray inside the cube
    alpha_init: float = 0.01  # opacity of one voxel length of zero density


@dataclass
class Rendering:
    descriptors: torch.Tensor  # (L, R, C) unit descriptors (zero where invalid)
    final_transmittance: torch.Tensor  # (L, R) light left after the cube: 1 = empty, 0 = opaque
    valid: torch.Tensor  # (L, R) bool, the ray crosses the cube


def density_shift(alpha_init: float) -> float:
    """The shift of DVGO's softplus density activation for which density 0 gives ``alpha_init``
    over one voxel length (the renderer measures steps in voxel lengths)."""
    return math.log(math.expm1(-math.log1p(-alpha_init)))


def ray_box_intervals(
    origins: torch.Tensor, directions: torch.Tensor, centres: torch.Tensor, sides: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entry and exit distances (L, R) of rays (L, R, 3) into cubes (L, 3) of side (L,), and a
    (L, R) mask of rays that cross their cube in front of the origin (slab method)."""
    half = (sides / 2)[:, None, None]
    safe = torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
    low = (centres[:, None] - half - origins) / safe
    high = (centres[:, None] + half - origins) / safe
    near = torch.minimum(low, high).amax(dim=-1).clamp(min=0.0)
    far = torch.maximum(low, high).amin(dim=-1)
    return near, far, far > near


def trilinear_weights(normalised: torch.Tensor, grid_size: int) -> torch.Tensor:
    """(..., G^3) interpolation weights of points (..., 3) given as (x, y, z) in [-1, 1] (clamped)
    over a G x G x G grid with nodes on the cube's corners, flattened in (z, y, x) order."""
    position = ((normalised.clamp(-1, 1) + 1) / 2 * (grid_size - 1))[..., None]  # (..., 3, 1)
    nodes = torch.arange(grid_size, dtype=normalised.dtype)
    hat = (1 - (position - nodes).abs()).clamp(min=0)  # (..., 3, G): per axis x, y, z
    weights = hat[..., 2, :, None, None] * hat[..., 1, None, :, None] * hat[..., 0, None, None, :]
    return weights.flatten(-3)


def ray_samples(
    origins: torch.Tensor, directions: torch.Tensor, centres: torch.Tensor, sides: torch.Tensor, samples: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample points (L, R, S, 3), world, of rays (L, R, 3) inside cubes (L, 3) of side (L,);
    the step between them (L, R, 1) in metres and a (L, R) mask of the rays that cross their cube."""
    near, far, valid = ray_box_intervals(origins, directions, centres, sides)
    far = torch.where(valid, far, near)
    fractions = (torch.arange(samples, dtype=origins.dtype, device=origins.device) + 0.5) / samples
    distances = near[..., None] + (far - near)[..., None] * fractions  # (L, R, S)
    points = origins[:, :, None] + directions[:, :, None] * distances[..., None]
    return points, ((far - near) / samples)[..., None], valid


def composite(samples: torch.Tensor, step: torch.Tensor, valid: torch.Tensor, config: RenderConfig) -> Rendering:
    """Alpha-composite field values ``samples`` (L, R, S, 1 + C) (raw density, descriptor) taken
    ``step`` (L, R, 1) voxel lengths apart along each ray; ``valid`` (L, R)."""
    density, features = samples[..., 0], samples[..., 1:]
    alpha = 1 - torch.exp(-F.softplus(density + density_shift(config.alpha_init)) * step)
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1 - alpha + 1e-10], dim=-1), dim=-1)
    contribution = alpha * transmittance[..., :-1]  # (L, R, S)
    descriptor = torch.einsum("lrs,lrsc->lrc", contribution, features)  # + final transmittance x zero background
    descriptor = F.normalize(descriptor.clamp(-1.0, 1.0), dim=-1) * valid[..., None]
    return Rendering(descriptor, transmittance[..., -1], valid)


def render_rays(
    grids: torch.Tensor,
    centres: torch.Tensor,
    sides: torch.Tensor,
    origins: torch.Tensor,
    directions: torch.Tensor,
    config: RenderConfig,
) -> Rendering:
    """Render R rays per landmark through voxel grids: ``grids`` (L, C+1, G, G, G), ``centres``
    (L, 3), ``sides`` (L,), ``origins`` and unit ``directions`` (L, R, 3) in world coordinates."""
    count, rays = origins.shape[:2]
    grid_size = grids.shape[-1]
    points, step, valid = ray_samples(origins, directions, centres, sides, config.samples)
    normalised = (points - centres[:, None, None]) / (sides / 2)[:, None, None, None]  # cube -> [-1, 1]
    weights = trilinear_weights(normalised, grid_size).reshape(count, rays * config.samples, -1)  # (L, R*S, G^3)
    samples = torch.bmm(weights, grids.flatten(2).transpose(1, 2)).reshape(count, rays, config.samples, -1)
    voxel_length = (sides / (grid_size - 1))[:, None, None]
    return composite(samples, step / voxel_length, valid, config)


def render_field_rays(
    field: Callable[[torch.Tensor], torch.Tensor],
    centres: torch.Tensor,
    sides: torch.Tensor,
    origins: torch.Tensor,
    directions: torch.Tensor,
    config: RenderConfig,
) -> Rendering:
    """Render R rays per landmark through a scene field (e.g. the hash-grid field): ``field``
    maps world points (..., 3) to (..., 1 + C) values; rays are sampled inside each landmark's
    cube as for the voxel grids, and steps are measured in half cube sides (the voxel length of
    the default 3 x 3 x 3 grid), so ``alpha_init`` means the same for both backends."""
    points, step, valid = ray_samples(origins, directions, centres, sides, config.samples)
    return composite(field(points), step / (sides / 2)[:, None, None], valid, config)
