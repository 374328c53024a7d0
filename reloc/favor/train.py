"""Training of all landmark voxel grids together, in batched tensors.

Every landmark's loss depends on its own grid only and the optimizer (Adam) is elementwise, so
training L landmarks together gives the same grids as training them one at a time; each
landmark draws its rays from its own seeded permutation, so the batches agree too.

Rays: one per pixel of each observation's descriptor patch, from the observing camera's centre
through that pixel; the target is the patch's descriptor there. Loss per landmark (paper):
MSE + cosine term + entropy of the final transmittance (an opaque or empty ray, not a hazy one)
+ total variation of the grid; a landmark is kept when the PSNR of its renderings passes a
threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..pipeline.progress import track
from .render import RenderConfig, render_rays


@dataclass
class TrainConfig:
    grid_size: int = 3
    steps: int = 200
    rays_per_step: int = 64  # per landmark
    learning_rate: float = 0.1
    cosine_weight: float = 0.1
    entropy_weight: float = 0.01
    tv_weight: float = 1e-3
    min_psnr_db: float = 14.0  # landmarks whose renderings score lower are dropped
    seed: int = 0
    render: RenderConfig = field(default_factory=RenderConfig)


@dataclass
class TrainingRays:
    """The rays of every landmark, grouped: those of landmark ``i`` are rows
    ``starts[i] : starts[i] + counts[i]``."""

    origins: torch.Tensor  # (N, 3) world
    directions: torch.Tensor  # (N, 3) unit, world
    targets: torch.Tensor  # (N, C) unit descriptors
    starts: torch.Tensor  # (L,) int64
    counts: torch.Tensor  # (L,) int64


@dataclass
class TrainedGrids:
    grids: torch.Tensor  # (L, C+1, G, G, G)
    psnr_db: torch.Tensor  # (L,) of the final renderings of the training rays
    losses: list[float]  # total loss per step (sum over landmarks)

    def kept(self, min_psnr_db: float) -> torch.Tensor:
        return self.psnr_db >= min_psnr_db


def ray_permutations(counts: torch.Tensor, landmark_seeds: np.ndarray) -> torch.Tensor:
    """(L, max count) per landmark a permutation of its ray indices (padded by repetition),
    drawn from a generator seeded by that landmark's seed alone."""
    width = int(counts.max())
    table = np.zeros((len(counts), width), np.int64)
    for row, (count, seed) in enumerate(zip(counts.tolist(), landmark_seeds)):
        order = np.random.default_rng(int(seed)).permutation(count)
        table[row] = np.resize(order, width)
    return torch.from_numpy(table)


def step_rays(permutations: torch.Tensor, counts: torch.Tensor, step: int, per_step: int) -> torch.Tensor:
    """(L, per_step) ray indices, within each landmark, used at ``step``: a sliding window over
    its permutation, wrapping around its own count."""
    offsets = step * per_step + torch.arange(per_step)
    columns = offsets[None] % counts[:, None]
    return torch.gather(permutations, 1, columns)


def initial_grids(rays: TrainingRays, grid_size: int) -> torch.Tensor:
    """Density 0 and, in every voxel, the mean target descriptor of the landmark."""
    mean = torch.stack(
        [rays.targets[s : s + c].mean(dim=0) for s, c in zip(rays.starts.tolist(), rays.counts.tolist())]
    )
    features = mean[:, :, None, None, None].expand(-1, -1, grid_size, grid_size, grid_size)
    density = torch.zeros(len(mean), 1, grid_size, grid_size, grid_size)
    return torch.cat([density, features], dim=1).contiguous()


def total_variation(grids: torch.Tensor) -> torch.Tensor:
    """(L,) mean squared difference between neighbouring voxels, over the three axes."""
    return sum(((grids.diff(dim=axis)) ** 2).mean(dim=(1, 2, 3, 4)) for axis in (2, 3, 4))


def landmark_losses(
    grids: torch.Tensor,
    centres: torch.Tensor,
    sides: torch.Tensor,
    rays: TrainingRays,
    index: torch.Tensor,
    config: TrainConfig,
    used: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L,) loss and (L,) mean squared error over the rays ``index`` (L, R) of each landmark
    (only where ``used`` (L, R) is true, when given)."""
    rows = rays.starts[:, None] + index
    rendering = render_rays(grids, centres, sides, rays.origins[rows], rays.directions[rows], config.render)
    valid = rendering.valid.float() if used is None else (rendering.valid & used).float()
    count = valid.sum(dim=1).clamp(min=1)
    targets = rays.targets[rows]
    squared = ((rendering.descriptors - targets) ** 2).mean(dim=-1)
    mse = (squared * valid).sum(dim=1) / count
    cosine = ((1 - (rendering.descriptors * targets).sum(dim=-1)) * valid).sum(dim=1) / count
    t = rendering.final_transmittance.clamp(1e-6, 1 - 1e-6)
    entropy = ((-(t * t.log() + (1 - t) * (1 - t).log())) * valid).sum(dim=1) / count
    loss = (
        mse
        + config.cosine_weight * cosine
        + config.entropy_weight * entropy
        + config.tv_weight * total_variation(grids)
    )
    return loss, mse


def train_grids(
    centres: torch.Tensor, sides: torch.Tensor, rays: TrainingRays, landmark_seeds: np.ndarray, config: TrainConfig
) -> TrainedGrids:
    """Train the grids of L landmarks (``centres`` (L, 3), cube ``sides`` (L,)) on their rays."""
    grids = initial_grids(rays, config.grid_size).requires_grad_(True)
    optimizer = torch.optim.Adam([grids], lr=config.learning_rate)
    permutations = ray_permutations(rays.counts, landmark_seeds)
    losses = []
    for step in track(range(config.steps), f"training {len(centres)} landmark fields"):
        index = step_rays(permutations, rays.counts, step, config.rays_per_step)
        loss, _ = landmark_losses(grids, centres, sides, rays, index, config)
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
        losses.append(float(loss.detach().sum()))
    with torch.no_grad():
        columns = torch.arange(int(rays.counts.max()))[None]
        _, mse = landmark_losses(
            grids, centres, sides, rays, columns % rays.counts[:, None], config, columns < rays.counts[:, None]
        )
        psnr = 10 * torch.log10(1.0 / mse.clamp(min=1e-10))
    return TrainedGrids(grids.detach(), psnr, losses)
