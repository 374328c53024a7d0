"""Retrieval stages: ``retrieval.vlad`` indexes the mapping keyframes, ``retrieval.vlad_query``
returns the top-k keyframes of each query."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..features.base import FeatureStore
from ..io.map_folder import GLOBAL_FILE
from ..io.memo import read_once
from ..pipeline.registry import Stage, register_stage
from ..pipeline.timing import query_timer
from ..types import Frame
from .vlad import RetrievalIndex, VladConfig, VladQueryConfig, Whitening, kmeans, vlad


@register_stage
class BuildVladIndex(Stage):
    name = "retrieval.vlad"
    version = "2"  # 2: optional PCA whitening
    Config = VladConfig
    inputs = {"keyframes": list[Frame], "features": FeatureStore, "map_dir": Path}
    outputs = {"index": Path}

    def run(self, keyframes: list[Frame], features: FeatureStore, map_dir: Path) -> dict:
        config = self.config
        rng = np.random.default_rng(config.seed)
        per_image = max(1, config.max_training_descriptors // max(1, len(keyframes)))
        sample = []
        for frame in keyframes:
            descriptors = features.read(frame.name).descriptors
            sample.append(descriptors[rng.permutation(len(descriptors))[:per_image]])
        centroids = kmeans(np.concatenate(sample), config.clusters, config.iterations, config.seed)
        vectors = np.stack([vlad(features.read(frame.name).descriptors, centroids) for frame in keyframes])
        whitening = Whitening.fit(vectors, config.whitened_dims) if config.whitened_dims else None
        if whitening is not None:
            vectors = whitening.apply(vectors)
        path = map_dir / GLOBAL_FILE
        poses = [frame.pose for frame in keyframes]
        RetrievalIndex(centroids, [frame.name for frame in keyframes], vectors, poses, whitening).write(path)
        return {"index": path}


@register_stage
class QueryVladIndex(Stage):
    name = "retrieval.vlad_query"
    Config = VladQueryConfig
    needs = (GLOBAL_FILE,)
    inputs = {"frames": list[Frame], "features": FeatureStore, "map_dir": Path}
    outputs = {"retrieved": dict[str, list[str]]}
    cacheable = False

    def run(self, frames: list[Frame], features: FeatureStore, map_dir: Path) -> dict:
        index = read_once(RetrievalIndex.read, map_dir / GLOBAL_FILE)
        retrieved = {}
        for frame in frames:
            with query_timer("retrieval", frame.name):
                retrieved[frame.name] = [
                    index.names[i] for i in index.query(features.read(frame.name).descriptors, self.config.top_k)
                ]
        return {"retrieved": retrieved}
