"""The Python API: the same functions the ``reloc`` command calls, for notebooks and scripts.

>>> import reloc
>>> evaluation = reloc.evaluate("default", "7scenes", "data/my-scene", "runs/my-run")
>>> evaluation.metrics["recall"]["5cm_5deg"]
>>> results = reloc.localize("runs/my-run/map", ["photos/"], focal=585)

Poses are cam_from_world; a query that could not be localized has ``pose=None`` and a ``reason``.
"""

from __future__ import annotations

from pathlib import Path

from .datasets import load_dataset
from .datasets.folder import ImageFolder
from .eval.run import Evaluation, NodeCallback
from .eval.run import evaluate as evaluate_pipeline
from .mapping.compact import CompactConfig
from .mapping.compact import export_compact as export_map
from .mapping.submaps import SplitConfig
from .mapping.submaps import split_map as split_submaps
from .pipeline.engine import GraphRun
from .pipeline.executors import ExecutorConfig
from .pipeline.runner import build_map, load_map_pipeline
from .pipeline.runner import localize as localize_frames
from .pipeline.spec import Pipeline
from .pipeline.spec import load_pipeline as load_validated_pipeline
from .types import QueryResult


def load_pipeline(config: str | Path, overrides: list[str] | None = None) -> Pipeline:
    """A validated pipeline: a YAML path or a shipped config's name (``default``, ``favor``...),
    with ``section.node.key=value`` overrides applied before validation."""
    return load_validated_pipeline(config, overrides=overrides)


def map(  # noqa: A001 - reloc.map reads as the verb it is
    config: str | Path,
    dataset: str,
    root: str | Path,
    out: str | Path,
    overrides: list[str] | None = None,
    on_node: NodeCallback | None = None,
    executor: ExecutorConfig | None = None,
    **dataset_options,
) -> GraphRun:
    """Build a map folder ``out`` from the posed training split of a dataset (``7scenes``,
    ``cambridge``, ``colmap``; ``dataset_options`` such as ``images=`` and ``queries=`` for COLMAP).
    ``executor``: where the stages' per-item work runs (:mod:`reloc.pipeline.executors`)."""
    scene = load_dataset(dataset, root, **dataset_options)
    pipeline = load_pipeline(config, overrides)
    return build_map(pipeline, scene.frames("train"), Path(out), scene.description(), on_node, executor)


def localize(
    map_dir: str | Path,
    images: list[str | Path],
    focal: float | None = None,
    camera: str | Path | None = None,
    on_node: NodeCallback | None = None,
    executor: ExecutorConfig | None = None,
    overrides: list[str] | None = None,
) -> list[QueryResult]:
    """Localize images (files or folders) against a map with the pipeline stored in it, its
    localization settings changed by ``overrides`` (``--set`` values, e.g. ``features.resize_max=768``).
    Intrinsics: ``focal`` (principal point at the centre), a ``camera`` file, or the EXIF.
    ``executor``: in this process (default), on threads or on Ray (:mod:`reloc.pipeline.executors`)."""
    queries = ImageFolder(Path.cwd(), focal=focal, camera_file=camera, images=[Path(i) for i in images]).frames("test")
    pipeline = load_map_pipeline(Path(map_dir), overrides)
    return localize_frames(Path(map_dir), queries, on_node, pipeline=pipeline, executor=executor)


def evaluate(
    config: str | Path,
    dataset: str,
    root: str | Path,
    out: str | Path,
    map_dir: str | Path | None = None,
    overrides: list[str] | None = None,
    executor: ExecutorConfig | None = None,
    **dataset_options,
) -> Evaluation:
    """Map the training split (reused when unchanged), localize the test split, score it and
    write the run folder ``out`` (results, ground truth, metrics.json, report.md, figures)."""
    scene = load_dataset(dataset, root, **dataset_options)
    pipeline, map_path = load_pipeline(config, overrides), Path(map_dir) if map_dir else None
    return evaluate_pipeline(pipeline, scene, Path(out), map_path, executor=executor)


def export_compact(
    map_dir: str | Path, out: str | Path, config: CompactConfig | None = None
) -> dict[str, tuple[int, int]]:
    """Write a compact copy of map ``map_dir`` into the new folder ``out`` (quantized landmark
    descriptors, whitened retrieval, only what localization and the viewer read). Returns, per
    artifact, its bytes before and after (0: dropped)."""
    return export_map(Path(map_dir), Path(out), config or CompactConfig())


def split_map(map_dir: str | Path, out: str | Path, config: SplitConfig | None = None) -> dict:
    """Split map ``map_dir`` into submaps by region in the new folder ``out``
    (:mod:`reloc.mapping.submaps`); ``localize`` and ``evaluate(map_dir=out)`` then route each
    query to its submaps. Returns ``split.yaml``'s content."""
    return split_submaps(Path(map_dir), Path(out), config)
