"""Feature extraction stages: ``features.xfeat``, ``features.aliked``, ``features.sift``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..pipeline.registry import Stage, register_stage
from ..pipeline.timing import query_timer
from ..types import Frame
from .base import FeatureStore
from .extractors import EXTRACTORS, ExtractorConfig, extract_image

FEATURES_FILE = "features.h5"


@dataclass
class FeatureStageConfig(ExtractorConfig):
    save: bool = True  # True: write MAP_DIR/features.h5 (mapping); False: keep in memory (queries)


class ExtractFeatures(Stage):
    """Extract local features of every frame (one image at a time, so memory stays flat)."""

    extractor: str
    Config = FeatureStageConfig
    inputs = {"frames": list[Frame], "map_dir": Path}
    outputs = {"features": FeatureStore}

    def run(self, frames: list[Frame], map_dir: Path) -> dict:
        extractor = EXTRACTORS[self.extractor](self.config)
        if self.config.save:
            path = map_dir / FEATURES_FILE
            path.unlink(missing_ok=True)
            store = FeatureStore(self.extractor, path)
        else:
            store = FeatureStore(self.extractor)
        for frame in frames:
            with query_timer("features", frame.name):
                store.write(frame.name, extract_image(extractor, frame.image_path, self.config.resize_max))
        return {"features": store}


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
