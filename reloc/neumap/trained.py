"""``reloc train neumap``: the decoder trained jointly with per-scene codes on scene folders, with a
resumable state checkpoint, and the shipped decoder checkpoint it writes (``reloc/weights/neumap.pt``).

Files of a run writing ``OUT.pt``: ``OUT.resume.pt`` (decoder, every scene's codes, optimiser,
step, log: rewritten every ``checkpoint_every`` steps; a rerun of the same command continues
from it), ``OUT.log.jsonl`` (one line per step) and, at the end, ``OUT.pt`` (decoder config and
weights, metadata) and ``OUT.log.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..errors import RelocError
from ..features.stages import FeatureStageConfig
from ..weights import checkpoint_path, project_weights
from .model import DecoderConfig, TransDecoder
from .scenes import LabelConfig, VoxelConfig, prepare_scene, voxels_of
from .train import SceneSamples, TrainConfig, initial_state, restore_state, scene_samples, train_step

CHECKPOINT_FORMAT = 1
QUERY_FEATURES = FeatureStageConfig(max_keypoints=1024, resize_max=640, save=True)  # as configs/neumap.yaml


@dataclasses.dataclass
class DecoderCheckpoint:
    decoder: TransDecoder
    digest: str  # of the file: a NeuMap map records the decoder its codes were optimised for
    metadata: dict


def load_decoder(path: Path | None = None) -> DecoderCheckpoint:
    """The shipped (or given) NeuMap decoder, frozen, in eval mode."""
    path = path or project_weights("neumap.pt")
    try:
        content = path.read_bytes()
        saved = torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
    except Exception as error:
        raise RelocError(f"{path}: not a readable NeuMap decoder checkpoint ({error})") from None
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise RelocError(f"{path}: NeuMap decoder checkpoint of another format (this reloc reads {CHECKPOINT_FORMAT})")
    decoder = TransDecoder(DecoderConfig(**saved["config"]))
    decoder.load_state_dict(saved["state_dict"])
    return DecoderCheckpoint(
        decoder.eval().requires_grad_(False), hashlib.sha256(content).hexdigest()[:16], saved["metadata"]
    )


def training_scenes(
    roots: list[Path], work: Path, voxels: VoxelConfig, labels: LabelConfig
) -> tuple[list[SceneSamples], list[dict]]:
    """Each scene's samples and a summary (name, layout, labelled keypoints, voxels, voxel side)."""
    scenes, summaries = [], []
    for root in roots:
        labelled, layout, mapping_frames = prepare_scene(root, work / root.resolve().name, QUERY_FEATURES, labels)
        table, observers = voxels_of(labelled, voxels)
        scenes.append(scene_samples(labelled, table, observers, mapping_frames))
        summaries.append(
            {
                "scene": str(root),
                "layout": layout,
                "labelled": len(labelled),
                "voxels": len(table),
                "voxel_m": round(table.size, 3),
            }
        )
    return scenes, summaries


def train_neumap(
    roots: list[Path],
    out: Path,
    config: TrainConfig,
    work: Path,
    on_step: Callable[[int, dict], None] | None = None,
    voxels: VoxelConfig | None = None,
) -> tuple[Path, dict]:
    """Train (or resume) and write ``out`` (never the shipped checkpoint); returns it and the mean
    metrics of the last 100 steps."""
    out = checkpoint_path("neumap", out)
    voxels = voxels or VoxelConfig()
    scenes, summaries = training_scenes(roots, work, voxels, LabelConfig())
    setup = {"scenes": summaries, "config": dataclasses.asdict(config), "voxels": dataclasses.asdict(voxels)}
    state = initial_state(scenes, config)
    resume, log_path = out.with_suffix(".resume.pt"), out.with_suffix(".log.jsonl")
    wall_s = 0.0
    if resume.is_file():
        saved = torch.load(resume, map_location="cpu", weights_only=False)
        if saved["setup"] != setup:
            raise RelocError(f"{resume}: a run with other scenes or settings; remove it or write to another --out")
        restore_state(state, saved["state"])
        wall_s = saved["wall_s"]
    started = time.perf_counter() - wall_s
    with log_path.open("a") as log_file:
        while state.step < config.steps:
            record = train_step(state, scenes, config)
            state.log.append(record)
            log_file.write(json.dumps(record) + "\n")
            if on_step is not None:
                on_step(state.step - 1, record)
            if state.step % config.checkpoint_every == 0 or state.step == config.steps:
                log_file.flush()
                partial = resume.with_suffix(".tmp")
                wall = time.perf_counter() - started
                torch.save({"setup": setup, "state": state.state_dict(), "wall_s": wall}, partial)
                partial.replace(resume)
    wall_s = time.perf_counter() - started
    summary = {key: float(np.mean([r[key] for r in state.log[-100:]])) for key in state.log[-1] if key != "step"}
    metadata = {
        "command": " ".join(["reloc", *sys.argv[1:]]) if Path(sys.argv[0]).name == "reloc" else "",
        **setup,
        "wall_s": wall_s,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": str(torch.__version__),
        "last_100_steps": summary,
    }
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "config": dataclasses.asdict(config.decoder),
            "state_dict": state.decoder.state_dict(),
            "metadata": metadata,
        },
        out,
    )
    out.with_suffix(".log.json").write_text(json.dumps({"metadata": metadata, "history": state.log}))
    return out, summary
