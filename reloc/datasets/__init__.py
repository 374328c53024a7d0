"""Datasets in their real layouts. ``load_dataset(kind, root, **options)`` is the entry point."""

from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError
from .base import Dataset, read_depth_mm, read_image
from .cambridge import Cambridge
from .colmap import ColmapModel
from .folder import ImageFolder
from .sevenscenes import SevenScenes

DATASETS: dict[str, type[Dataset]] = {cls.kind: cls for cls in (SevenScenes, Cambridge, ColmapModel, ImageFolder)}


def load_dataset(kind: str, root: str | Path, **options) -> Dataset:
    """Open a dataset folder; ``options`` go to the dataset class (e.g. ``queries`` for COLMAP)."""
    if kind not in DATASETS:
        raise DatasetError(f"unknown dataset kind {kind!r}; use one of {sorted(DATASETS)}")
    return DATASETS[kind](root, **{key: value for key, value in options.items() if value is not None})


__all__ = ["DATASETS", "Dataset", "load_dataset", "read_depth_mm", "read_image"]
