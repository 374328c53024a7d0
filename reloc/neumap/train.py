"""NeuMap training: the decoder jointly with per-scene codes (``train_step``, run by
:func:`.trained.train_neumap`), and the codes of a new scene under the frozen decoder
(``optimise_codes``).

A training sample is one voxel and up to ``points_per_voxel`` labelled keypoints of one frame
that sees it: those in the voxel are positives (coordinate and in-voxel targets), the others
negatives (in-voxel target 0), as at query time, when every keypoint meets every voxel. With
``TrainConfig.held_out_queries``, a sample from a scene's query frames trains the decoder through
its voxel's codes held fixed, as in use, where a new scene's codes learn from its mapping frames
alone and must serve queries seen in other conditions.
Loss (paper): a robust coordinate loss on the positives, ``d`` while ``d`` is at most
``robust_threshold``, ``sqrt(robust_threshold * d)`` beyond, with ``d`` the error in percent of
the voxel side; binary cross-entropy on the in-voxel logit; L1 on the code weights.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .labels import LabelledPoints
from .model import DecoderConfig, SceneCodes, TransDecoder
from .voxels import VoxelTable


@dataclass
class LossConfig:
    robust_threshold: float = 25.0  # percent of the voxel side
    coordinate_weight: float = 0.01  # the coordinate term in voxel sides, next to the BCE
    weight_l1: float = 1e-3  # L1 on the code weights: codes that do not help fade and are pruned


@dataclass
class SamplerConfig:
    voxels_per_step: int = 32
    points_per_voxel: int = 256
    descriptor_noise: float = 0.0  # std of Gaussian noise per dimension added to each unit descriptor (renormalised)


@dataclass
class SceneSamples:
    """One scene's labelled keypoints arranged for sampling."""

    descriptors: torch.Tensor  # (M, C) float32
    points: torch.Tensor  # (M, 3) float32 world
    voxel: torch.Tensor  # (M,) int64, -1 outside every kept voxel
    frame_rows: list[np.ndarray]  # per frame, its rows
    observers: list[np.ndarray]  # per voxel, the frames that see it
    table: VoxelTable
    mapping_frames: int  # frames [0, mapping_frames) are mapping frames, the rest queries


def scene_samples(
    labels: LabelledPoints, table: VoxelTable, observers: list[np.ndarray], mapping_frames: int | None = None
) -> SceneSamples:
    """``mapping_frames``: how many of ``labels.frames`` (the first) are mapping frames; None: all."""
    order = np.argsort(labels.frame, kind="stable")
    bounds = np.searchsorted(labels.frame[order], np.arange(len(labels.frames) + 1))
    return SceneSamples(
        torch.from_numpy(labels.descriptors.astype(np.float32)),
        torch.from_numpy(labels.points.astype(np.float32)),
        torch.from_numpy(table.assign(labels.points)),
        [order[bounds[f] : bounds[f + 1]] for f in range(len(labels.frames))],
        observers,
        table,
        len(labels.frames) if mapping_frames is None else mapping_frames,
    )


@dataclass
class Batch:
    """B samples of N keypoints each (padded; ``valid`` marks real ones)."""

    scene: np.ndarray  # (B,) index of the sample's scene
    voxel: np.ndarray  # (B,) voxel index within its scene
    from_query: np.ndarray  # (B,) bool, the sample's frame is a query frame
    descriptors: torch.Tensor  # (B, N, C)
    offsets: torch.Tensor  # (B, N, 3) target offsets from the voxel median, voxel sides
    inside: torch.Tensor  # (B, N) bool
    valid: torch.Tensor  # (B, N) bool


def sample_batch(scenes: list[SceneSamples], rng: np.random.Generator, config: SamplerConfig) -> Batch:
    count, width = config.voxels_per_step, config.points_per_voxel
    dim = scenes[0].descriptors.shape[1]
    descriptors, offsets = torch.zeros(count, width, dim), torch.zeros(count, width, 3)
    inside, valid = torch.zeros(count, width, dtype=torch.bool), torch.zeros(count, width, dtype=torch.bool)
    scene_of, voxel_of, from_query = np.zeros(count, np.int64), np.zeros(count, np.int64), np.zeros(count, bool)
    for b in range(count):
        s = int(rng.integers(len(scenes)))
        scene = scenes[s]
        v = int(rng.integers(len(scene.table)))
        frame = int(rng.choice(scene.observers[v]))
        from_query[b] = frame >= scene.mapping_frames
        rows = scene.frame_rows[frame]
        rows = torch.from_numpy(rng.choice(rows, min(width, len(rows)), replace=False))
        n = len(rows)
        descriptors[b, :n] = scene.descriptors[rows]
        offsets[b, :n] = (scene.points[rows] - torch.from_numpy(scene.table.median[v])) / scene.table.size
        inside[b, :n] = scene.voxel[rows] == v
        valid[b, :n] = True
        scene_of[b], voxel_of[b] = s, v
    if config.descriptor_noise > 0:
        noise = torch.from_numpy(rng.normal(0, config.descriptor_noise, descriptors.shape).astype(np.float32))
        descriptors = F.normalize(descriptors + noise, dim=-1) * valid[..., None]
    return Batch(scene_of, voxel_of, from_query, descriptors, offsets, inside, valid)


def robust_coordinate_loss(error_percent: torch.Tensor, threshold: float) -> torch.Tensor:
    """``d`` up to ``threshold``, ``sqrt(threshold * d)`` beyond."""
    return torch.where(error_percent <= threshold, error_percent, (threshold * error_percent.clamp(min=1e-9)).sqrt())


def batch_loss(
    decoder: TransDecoder, batch: Batch, codes: torch.Tensor, weights: torch.Tensor, config: LossConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of a batch given each sample's voxel codes (B, L, K, D) and weights (B, L, K)."""
    keep = torch.ones_like(weights, dtype=torch.bool)
    offsets, logits = decoder(batch.descriptors, codes, weights, keep)
    error = 100 * (offsets - batch.offsets).norm(dim=-1)
    positives = batch.inside & batch.valid
    coordinate = (robust_coordinate_loss(error, config.robust_threshold) * positives).sum() / positives.sum().clamp(
        min=1
    )
    bce = F.binary_cross_entropy_with_logits(logits[batch.valid], batch.inside[batch.valid].float())
    loss = config.coordinate_weight * coordinate + bce + config.weight_l1 * weights.abs().mean()
    with torch.no_grad():
        correct = ((logits > 0) == batch.inside)[batch.valid].float().mean()
        median_error = error[positives].median() if positives.any() else torch.tensor(float("nan"))
        within_3 = (error[positives] < 3).float().mean() if positives.any() else torch.tensor(float("nan"))
    stats = {
        "loss": float(loss.detach()),
        "bce": float(bce.detach()),
        "in_voxel_acc": float(correct),
        "median_err_pct": float(median_error),
        "within_3pct": float(within_3),
    }
    return loss, stats


@dataclass
class OptimiseConfig:
    """Code optimisation of a new scene under the frozen decoder."""

    max_steps: int = 2000
    codes_per_block: int = 0  # K of this scene's voxels; 0: the decoder's (attention takes any K)
    learning_rate: float = 1e-2
    patience: int = 300  # stop when the mean loss of the last `patience` steps ...
    min_improvement: float = 0.005  # ... improved by less than this share over the window before
    seed: int = 0
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    loss: LossConfig = field(default_factory=LossConfig)


def plateaued(losses: list[float], patience: int, min_improvement: float) -> bool:
    """The mean of the last ``patience`` losses is within ``min_improvement`` of the window before."""
    if len(losses) < 2 * patience:
        return False
    recent, before = np.mean(losses[-patience:]), np.mean(losses[-2 * patience : -patience])
    return recent > before * (1 - min_improvement)


@dataclass
class OptimisedCodes:
    codes: SceneCodes
    steps: int
    seconds: float
    losses: list[float]
    stopped_by: str  # "plateau" or "step budget"


def optimise_codes(
    decoder: TransDecoder, samples: SceneSamples, config: OptimiseConfig, steps: Iterable[int] | None = None
) -> OptimisedCodes:
    """The scene's codes, the decoder frozen (its parameters untouched); ``steps`` is
    ``range(config.max_steps)``, possibly wrapped in a progress bar."""
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed)
    shape = dataclasses.replace(decoder.config, codes=config.codes_per_block or decoder.config.codes)
    scene_codes = SceneCodes.initial(len(samples.table), shape, generator)
    optimizer = torch.optim.Adam(scene_codes.parameters(), lr=config.learning_rate)
    decoder.requires_grad_(False)
    losses, stopped_by, step = [], "step budget", 0
    for step in range(config.max_steps) if steps is None else steps:
        batch = sample_batch([samples], np.random.default_rng([config.seed, step]), config.sampler)
        voxels = torch.from_numpy(batch.voxel)
        loss, stats = batch_loss(decoder, batch, scene_codes.codes[voxels], scene_codes.weights[voxels], config.loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(stats["loss"])
        if plateaued(losses, config.patience, config.min_improvement):
            stopped_by = "plateau"
            break
    codes = SceneCodes(scene_codes.codes.detach(), scene_codes.weights.detach())
    return OptimisedCodes(codes, step + 1, time.perf_counter() - started, losses, stopped_by)


@dataclass
class TrainConfig:
    """Joint training of the decoder and every training scene's codes."""

    steps: int = 10000
    learning_rate: float = 1e-3  # decoder (AdamW, cosine decay after warm-up)
    code_learning_rate: float = 1e-2
    warmup_steps: int = 500
    checkpoint_every: int = 500
    seed: int = 0
    held_out_queries: bool = False  # query-frame samples train the decoder only (their codes held fixed)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    loss: LossConfig = field(default_factory=LossConfig)


@dataclass
class TrainingState:
    """What a checkpoint holds to resume: decoder, every scene's codes, optimiser, step, log."""

    decoder: TransDecoder
    scene_codes: list[SceneCodes]
    optimizer: torch.optim.Optimizer
    step: int
    log: list[dict[str, float]]

    def state_dict(self) -> dict:
        return {
            "decoder": self.decoder.state_dict(),
            "codes": [(c.codes.detach(), c.weights.detach()) for c in self.scene_codes],
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "log": self.log,
        }


def initial_state(scenes: list[SceneSamples], config: TrainConfig) -> TrainingState:
    torch.manual_seed(config.seed)
    decoder = TransDecoder(config.decoder)
    generator = torch.Generator().manual_seed(config.seed)
    scene_codes = [SceneCodes.initial(len(s.table), config.decoder, generator) for s in scenes]
    optimizer = torch.optim.AdamW(
        [
            {"params": list(decoder.parameters()), "lr": config.learning_rate},
            {
                "params": [p for c in scene_codes for p in c.parameters()],
                "lr": config.code_learning_rate,
                "weight_decay": 0,
            },
        ]
    )
    return TrainingState(decoder, scene_codes, optimizer, 0, [])


def restore_state(state: TrainingState, saved: dict) -> None:
    state.decoder.load_state_dict(saved["decoder"])
    for target, (codes, weights) in zip(state.scene_codes, saved["codes"]):
        with torch.no_grad():
            target.codes.copy_(codes)
            target.weights.copy_(weights)
    state.optimizer.load_state_dict(saved["optimizer"])
    state.step, state.log = saved["step"], saved["log"]


def learning_rate_factor(step: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.5 * (1 + np.cos(np.pi * min(1.0, progress)))


def train_step(state: TrainingState, scenes: list[SceneSamples], config: TrainConfig) -> dict[str, float]:
    """One optimisation step on a batch drawn from a generator seeded by (seed, step), so that a
    resumed run draws the same batches."""
    batch = sample_batch(scenes, np.random.default_rng([config.seed, state.step]), config.sampler)
    codes = torch.stack([state.scene_codes[s].codes[v] for s, v in zip(batch.scene, batch.voxel)])
    weights = torch.stack([state.scene_codes[s].weights[v] for s, v in zip(batch.scene, batch.voxel)])
    if config.held_out_queries:
        fixed = torch.from_numpy(batch.from_query)
        codes = torch.where(fixed[:, None, None, None], codes.detach(), codes)
        weights = torch.where(fixed[:, None, None], weights.detach(), weights)
    loss, stats = batch_loss(state.decoder, batch, codes, weights, config.loss)
    factor = learning_rate_factor(state.step, config)
    for group, base in zip(state.optimizer.param_groups, (config.learning_rate, config.code_learning_rate)):
        group["lr"] = base * factor
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(state.decoder.parameters(), 1.0)
    state.optimizer.step()
    state.step += 1
    return {"step": state.step, **stats}
