"""Feature extraction stages: ``features.xfeat``, ``features.aliked``, ``features.sift``."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..errors import PipelineError
from ..io.map_folder import FEATURES_FILE, GRID_EXTRACTOR, LANDMARKS_FILE
from ..io.memo import BoundedCache
from ..pipeline.items import map_items
from ..pipeline.registry import Stage, register_stage
from ..pipeline.timing import add_query_time, query_timer
from ..types import Frame
from .base import Features, FeatureStore, prepare_image
from .extractors import EXTRACTORS, ExtractorConfig


@dataclass
class FeatureStageConfig(ExtractorConfig):
    save: bool = True  # True: write MAP_DIR/features.h5 (mapping); False: keep in memory (queries)
    batch_size: int = 1  # images of the same size run through the network together (XFeat, ALIKED)


def batches_of_same_size(images: list[np.ndarray]) -> Iterator[list[int]]:
    """Indices of consecutive images with one shape, grouped so that they can be stacked."""
    start = 0
    for end in range(1, len(images) + 1):
        if end == len(images) or images[end].shape != images[start].shape:
            yield list(range(start, end))
            start = end


def check_map_extractor(map_dir: Path, stage: str, extractor: str) -> None:
    """Query features are matched against the map's: refuse a map whose landmark descriptors
    (or, without landmarks, stored features) come from another extractor, before extracting."""
    for name in (LANDMARKS_FILE, FEATURES_FILE):
        path = map_dir / name
        if path.is_file():
            with h5py.File(path, "r") as file:
                map_extractor = file.attrs.get("extractor")
            if map_extractor == GRID_EXTRACTOR:  # a semi-dense map: no landmark descriptors to match
                continue
            if map_extractor is not None and str(map_extractor) != extractor:
                raise PipelineError(
                    f"{path}: the map's features are {map_extractor}, but the localization graph extracts "
                    f"{extractor} (stage {stage}); localize with the config that built the map, or rebuild the "
                    "map with this one"
                )
            return


class ExtractFeatures(Stage):
    """Extract local features of every frame, ``batch_size`` images at a time (memory stays
    flat). A batch's network time is shared equally among its frames in the per-query timings.
    Per-item work (:func:`~reloc.pipeline.items.map_items`): spread over workers when mapping has them."""

    extractor: str
    version = "2"  # keypoints in canonical order (Features.in_canonical_order)
    Config = FeatureStageConfig
    inputs = {"frames": list[Frame], "map_dir": Path}
    outputs = {"features": FeatureStore}

    def run(self, frames: list[Frame], map_dir: Path) -> dict:
        if self.config.save:
            path = map_dir / FEATURES_FILE
            path.unlink(missing_ok=True)
            store = FeatureStore(self.extractor, path)
        else:
            check_map_extractor(map_dir, self.name, self.extractor)
            store = FeatureStore(self.extractor)
        work = functools.partial(extract_chunk, self.extractor, self.config)
        description = f"{self.extractor} features of {len(frames)} images"
        for frame, features in zip(frames, map_items(work, frames, description, self.config.batch_size)):
            store.write(frame.name, features)
        return {"features": store}


_extractors = BoundedCache(4)


def extract_chunk(extractor_name: str, config: FeatureStageConfig, frames: list[Frame]) -> list[Features]:
    """Features of ``frames`` (a chunk of ``batch_size``), images of one size batched together.
    The extractor is built once per process and thread."""
    key = (extractor_name, repr(config), threading.get_ident())
    extractor = _extractors.get(key, lambda: EXTRACTORS[extractor_name](config))
    images, scales = [], []
    for frame in frames:
        with query_timer("features", frame.name):
            image, scale = prepare_image(frame.image_path, config.resize_max, extractor.multiple)
        images.append(image)
        scales.append(scale)
    extracted: list[Features] = []
    for batch in batches_of_same_size(images):
        started = time.perf_counter()
        extracted += extractor.extract_batch([images[i] for i in batch], [scales[i] for i in batch])
        add_query_time("features", [frames[i].name for i in batch], time.perf_counter() - started)
    return extracted


@register_stage
class XFeatFeatures(ExtractFeatures):
    name = "features.xfeat"
    extractor = "xfeat"


@register_stage
class AlikedFeatures(ExtractFeatures):
    name = "features.aliked"
    extractor = "aliked"


@register_stage
class SiftFeatures(ExtractFeatures):
    name = "features.sift"
    extractor = "sift"
