"""The matchers this project trains: which model, which step function, where the shipped
checkpoint lives, and training that writes a checkpoint with its summary."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..errors import RelocError
from ..weights import checkpoint_path, project_weights
from .casp.model import Casp, CaspConfig
from .casp.train import casp_step
from .homomatcher.model import HomoMatcher, HomoMatcherConfig
from .homomatcher.train import homomatcher_step
from .training import TrainConfig, load_checkpoint, save_checkpoint, train

MODELS = {"casp": (Casp, CaspConfig, casp_step), "homomatcher": (HomoMatcher, HomoMatcherConfig, homomatcher_step)}


def load_trained(name: str, path: Path | None = None):
    """The shipped (or given) checkpoint of ``name`` (casp, homomatcher), in eval mode."""
    model_class, config_class, _ = MODELS[name]
    return load_checkpoint(model_class, config_class, path or project_weights(f"{name}.pt"))


def model_config_with(config_class, overrides: dict):
    """``config_class`` with ``overrides`` (field -> value); unknown fields and refused values
    raise a RelocError naming them."""
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        fields = ", ".join(sorted(known))
        raise RelocError(f"{config_class.__name__} has no field {', '.join(unknown)} (fields: {fields})")
    try:
        return config_class(**overrides)
    except (TypeError, ValueError) as error:
        raise RelocError(f"{config_class.__name__}: {error}") from None


def train_and_save(
    name: str, config: TrainConfig, out: Path | None, on_step: Callable[[int, dict], None] | None = None
):
    """Train ``name`` (from scratch, or from ``config.init``'s heads) and write its checkpoint and
    per-step log (``.log.json``); with validation the checkpoint is rewritten at every new best
    validation loss (so a stopped run leaves its best) and ends as the best. Returns the
    checkpoint path and the mean of each metric over the last 100 steps."""
    model_class, config_class, step = MODELS[name]
    path = checkpoint_path(name, out)
    torch.manual_seed(config.seed)
    if config.init:
        if config.model:
            raise RelocError(f"{config.init}: a run from a checkpoint keeps its model config; drop {config.model}")
        model = load_checkpoint(model_class, config_class, Path(config.init))
        model_config = model.config
    else:
        model_config = model_config_with(config_class, config.model)
        model = model_class(model_config)

    def metadata(record: dict) -> dict:
        history = record["history"]
        summary = {key: float(np.mean([r[key] for r in history[-100:]])) for key in history[-1] if key != "step"}
        return {
            "command": " ".join(["reloc", *sys.argv[1:]]) if Path(sys.argv[0]).name == "reloc" else "",
            "steps": config.steps,
            "steps_run": len(history),
            "batch_size": config.batch_size,
            "image_size": [config.data.width, config.data.height],
            "learning_rate": config.learning_rate,
            "init": config.init,
            "model": config.model,
            "data": dataclasses.asdict(config.data),
            "seed": config.seed,
            "wall_s": record["wall_s"],
            "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": str(torch.__version__),
            "last_100_steps": summary,
            "validations": record["validations"],
            "best_validation": record["best"],
        }

    def save_best(record: dict) -> None:
        save_checkpoint(model, path, model_config, metadata(record))

    record = train(model, step, config, on_step, save_best)
    final = metadata(record)
    save_checkpoint(model, path, model_config, final)
    path.with_suffix(".log.json").write_text(json.dumps({"metadata": final, "history": record["history"]}))
    return path, final["last_100_steps"]
