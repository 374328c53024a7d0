"""Training of FaVoR's descriptor fields: all landmark voxel grids together, in batched tensors,
or one hash-grid field for the scene (:mod:`reloc.favor.hashgrid`) on the same rays.

Voxel grids: every landmark's loss depends on its own grid only and the optimizer (Adam) is elementwise, so
training L landmarks together gives the same grids as training them one at a time; each
landmark draws its rays from its own seeded permutation, so the batches agree too.

Rays: one per pixel of each observation's descriptor patch, from the observing camera's centre
through that pixel; the target is the patch's descriptor there. Loss per landmark (paper):
MSE + cosine term + entropy of the final transmittance (an opaque or empty ray, not a hazy one)
+ total variation of the grid; a landmark is kept when the PSNR of its renderings passes a
threshold.

Hash grid (Instant-NGP's recipe): the same per-landmark losses, summed, without total variation
(the multiresolution encoding is its own smoothness prior); Adam with betas (0.9, 0.99), eps
1e-15; the scene box is the union of the landmark cubes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import require_range
from ..pipeline.progress import track
from .hashgrid import HashGridField, HashGridSpec, MlpSpec, resolve_device
from .render import RenderConfig, Rendering, render_field_rays, render_rays

BACKENDS = ("voxel", "hashgrid")


@dataclass
class HashGridTrainConfig:
    """The hash-grid backend, in tiny-cuda-nn's schema (``encoding``: HashGrid, ``network``:
    FullyFusedMLP); ``device``: auto (CUDA with tinycudann when both are present), cpu, cuda."""

    encoding: dict[str, Any] = field(default_factory=lambda: HashGridSpec().schema())
    network: dict[str, Any] = field(default_factory=lambda: MlpSpec().schema())
    learning_rate: float = 0.01
    device: str = "auto"

    def __post_init__(self):
        HashGridSpec.from_schema(self.encoding, "hashgrid.encoding")
        MlpSpec.from_schema(self.network, "hashgrid.network")
        require_range(self, "learning_rate", above=0.0)
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"hashgrid.device must be auto, cpu or cuda, got {self.device!r}")

    def field(self, lower: torch.Tensor, upper: torch.Tensor, descriptor_dim: int, seed: int) -> HashGridField:
        return HashGridField(
            HashGridSpec.from_schema(self.encoding),
            MlpSpec.from_schema(self.network),
            lower,
            upper,
            descriptor_dim,
            seed,
        )


@dataclass
class TrainConfig:
    backend: str = "voxel"  # voxel: a G^3 grid per landmark; hashgrid: one hash-grid field per scene
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
    hashgrid: HashGridTrainConfig = field(default_factory=HashGridTrainConfig)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")


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

    def stored(self, kept: np.ndarray) -> dict[str, torch.Tensor]:
        """The ``LandmarkFields`` argument holding the grids of the ``kept`` (L,) landmarks."""
        return {"grids": self.grids[kept]}


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


def ray_losses(
    rendering: Rendering, targets: torch.Tensor, config: TrainConfig, used: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L,) loss without regulariser and (L,) mean squared error of renderings (L, R) against
    ``targets`` (L, R, C), over the valid rays (and only where ``used`` (L, R), when given)."""
    valid = rendering.valid.float() if used is None else (rendering.valid & used).float()
    count = valid.sum(dim=1).clamp(min=1)
    squared = ((rendering.descriptors - targets) ** 2).mean(dim=-1)
    mse = (squared * valid).sum(dim=1) / count
    cosine = ((1 - (rendering.descriptors * targets).sum(dim=-1)) * valid).sum(dim=1) / count
    t = rendering.final_transmittance.clamp(1e-6, 1 - 1e-6)
    entropy = ((-(t * t.log() + (1 - t) * (1 - t).log())) * valid).sum(dim=1) / count
    return mse + config.cosine_weight * cosine + config.entropy_weight * entropy, mse


def rendered_losses(
    render: Callable[[torch.Tensor, torch.Tensor], Rendering],
    starts: torch.Tensor,
    rays: TrainingRays,
    index: torch.Tensor,
    config: TrainConfig,
    used: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L,) loss without regulariser and (L,) mean squared error over the rays ``index`` (L, R)
    of L landmarks, whose rays start at rows ``starts`` (L,) of ``rays``, rendered by
    ``render(origins, directions)`` (both (L, R, 3))."""
    rows = starts[:, None] + index
    return ray_losses(render(rays.origins[rows], rays.directions[rows]), rays.targets[rows], config, used)


LossFunction = Callable[[torch.Tensor, torch.Tensor | None, slice], tuple[torch.Tensor, torch.Tensor]]


def all_rays_psnr(losses: LossFunction, counts: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """(L,) PSNR of each landmark's renderings of all its training rays, ``chunk`` landmarks at a
    time; ``losses(index, used, landmarks)`` as ``rendered_losses`` with the model bound, for the
    ``landmarks`` slice."""
    psnr = torch.zeros(len(counts))
    with torch.no_grad():
        for first in range(0, len(counts), chunk):
            landmarks = slice(first, first + chunk)
            part = counts[landmarks, None]
            columns = torch.arange(int(part.max()))[None]
            _, mse = losses(columns % part, columns < part, landmarks)
            psnr[landmarks] = (10 * torch.log10(1.0 / mse.clamp(min=1e-10))).cpu()
    return psnr


def fit(
    losses: LossFunction,
    optimizer: torch.optim.Optimizer,
    permutations: torch.Tensor,
    counts: torch.Tensor,
    config: TrainConfig,
    label: str,
) -> tuple[list[float], torch.Tensor]:
    """``config.steps`` optimizer steps on the landmarks' ray batches (``step_rays``); the total
    loss per step and the final PSNR of every landmark (``all_rays_psnr``)."""
    history = []
    for step in track(range(config.steps), label):
        loss, _ = losses(step_rays(permutations, counts, step, config.rays_per_step), None, slice(None))
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
        history.append(float(loss.detach().sum()))
    return history, all_rays_psnr(losses, counts.cpu())


def train_grids(
    centres: torch.Tensor, sides: torch.Tensor, rays: TrainingRays, landmark_seeds: np.ndarray, config: TrainConfig
) -> TrainedGrids:
    """Train the grids of L landmarks (``centres`` (L, 3), cube ``sides`` (L,)) on their rays."""
    grids = initial_grids(rays, config.grid_size).requires_grad_(True)

    def losses(index: torch.Tensor, used: torch.Tensor | None, part: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """The rays' losses (``rendered_losses``) plus the grids' total variation."""

        def render(origins: torch.Tensor, directions: torch.Tensor) -> Rendering:
            return render_rays(grids[part], centres[part], sides[part], origins, directions, config.render)

        loss, mse = rendered_losses(render, rays.starts[part], rays, index, config, used)
        return loss + config.tv_weight * total_variation(grids[part]), mse

    optimizer = torch.optim.Adam([grids], lr=config.learning_rate)
    permutations = ray_permutations(rays.counts, landmark_seeds)
    history, psnr = fit(
        losses, optimizer, permutations, rays.counts, config, f"training {len(centres)} landmark fields"
    )
    return TrainedGrids(grids.detach(), psnr, history)


@dataclass
class TrainedHashField:
    field: HashGridField  # on the CPU
    psnr_db: torch.Tensor  # (L,) of the final renderings of the training rays
    losses: list[float]  # total loss per step (sum over landmarks)
    seconds: float

    def stored(self, kept: np.ndarray) -> dict[str, HashGridField]:
        """The ``LandmarkFields`` argument holding the scene's one field (it serves every landmark;
        the dropped ones are left out by the fields' landmark ids)."""
        return {"hash_field": self.field}


def scene_box(centres: torch.Tensor, sides: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper corners (3,) of the union of the landmark cubes, 1 % margin."""
    lower = (centres - sides[:, None] / 2).amin(dim=0)
    upper = (centres + sides[:, None] / 2).amax(dim=0)
    margin = 0.01 * (upper - lower).max().clamp(min=1e-6)
    return lower - margin, upper + margin


def train_hash_field(
    centres: torch.Tensor, sides: torch.Tensor, rays: TrainingRays, landmark_seeds: np.ndarray, config: TrainConfig
) -> TrainedHashField:
    """Train one hash-grid field on the rays of L landmarks (``centres`` (L, 3), ``sides`` (L,)),
    on the device ``config.hashgrid.device`` resolves to; the same ray batches as the grids."""
    start = time.perf_counter()
    device = resolve_device(config.hashgrid.device)
    lower, upper = scene_box(centres, sides)
    model = config.hashgrid.field(lower, upper, rays.targets.shape[1], config.seed).on_device(device)
    on_device = TrainingRays(*(getattr(rays, name).to(device) for name in TrainingRays.__dataclass_fields__))
    centres, sides = centres.to(device), sides.to(device)

    def losses(index: torch.Tensor, used: torch.Tensor | None, part: slice) -> tuple[torch.Tensor, torch.Tensor]:
        def render(origins: torch.Tensor, directions: torch.Tensor) -> Rendering:
            return render_field_rays(model, centres[part], sides[part], origins, directions, config.render)

        used = None if used is None else used.to(device)
        return rendered_losses(render, on_device.starts[part], on_device, index.to(device), config, used)

    optimizer = torch.optim.Adam(model.parameters(), lr=config.hashgrid.learning_rate, betas=(0.9, 0.99), eps=1e-15)
    permutations = ray_permutations(rays.counts, landmark_seeds).to(device)
    label = f"training the hash-grid field of {len(centres)} landmarks"
    history, psnr = fit(losses, optimizer, permutations, on_device.counts, config, label)
    return TrainedHashField(model.on_device("cpu"), psnr, history, time.perf_counter() - start)
