"""NeuMap stages. ``neumap.codes`` (mapping): labelled keypoints of the mapping frames -> voxels ->
codes optimised under the frozen shipped decoder -> pruned -> ``neumap.pt``. ``neumap.localize``:
scene coordinates of the query keypoints in the active voxels, PnP per voxel, PnP on the union."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import PipelineError
from ..features.base import FeatureStore
from ..io.map_folder import NEUMAP_FILE
from ..pipeline.progress import track
from ..pipeline.registry import Stage, register_stage
from ..pipeline.timing import add_query_time
from ..types import Frame, QueryRecord, QueryResult
from .labels import label_keypoints
from .localize import NeumapLocalizeConfig, localize_neumap
from .scenes import LabelConfig, VoxelConfig, voxels_of
from .store import NeumapMap
from .train import OptimiseConfig, optimise_codes, scene_samples
from .trained import load_decoder

VIEWER_POINTS = 20000  # labelled points kept in neumap.pt for the viewer (float16, 120 kB)


@dataclass
class NeumapMappingConfig:
    prune_threshold: float = 0.05  # codes whose |weight| ends under this are dropped from the map
    decoder: str = ""  # decoder checkpoint; "" is the shipped reloc/weights/neumap.pt
    labels: LabelConfig = field(default_factory=LabelConfig)
    voxels: VoxelConfig = field(default_factory=VoxelConfig)
    optimise: OptimiseConfig = field(default_factory=OptimiseConfig)


def decoder_path(config_value: str) -> Path | None:
    return Path(config_value) if config_value else None


@register_stage
class NeumapCodes(Stage):
    name = "neumap.codes"
    Config = NeumapMappingConfig
    inputs = {"frames": list[Frame], "features": FeatureStore, "map_dir": Path}
    outputs = {"codes": Path}

    def run(self, frames: list[Frame], features: FeatureStore, map_dir: Path) -> dict:
        config = self.config
        checkpoint = load_decoder(decoder_path(config.decoder))
        labels = label_keypoints(frames, features, config.labels.source, config.labels.triangulation)
        table, observers = voxels_of(labels, config.voxels)
        samples = scene_samples(labels, table, observers)
        steps = track(range(config.optimise.max_steps), f"optimising the codes of {len(table)} voxels")
        optimised = optimise_codes(checkpoint.decoder, samples, config.optimise, steps)
        record = {
            "labelled_keypoints": len(labels),
            "steps": optimised.steps,
            "seconds": optimised.seconds,
            "stopped_by": optimised.stopped_by,
            "final_loss": float(sum(optimised.losses[-100:]) / len(optimised.losses[-100:])),
            "codes": int(optimised.codes.weights.numel()),
        }
        every_code = torch.ones_like(optimised.codes.weights, dtype=torch.bool)
        decoder_config = checkpoint.decoder.config
        shown = np.random.default_rng(self.config.optimise.seed).permutation(len(labels))[:VIEWER_POINTS]
        optimised_map = NeumapMap(
            table,
            optimised.codes,
            every_code,
            checkpoint.digest,
            decoder_config,
            features.extractor,
            record,
            labels.points[np.sort(shown)],
        )
        neumap = optimised_map.pruned(config.prune_threshold)
        neumap.save(map_dir / NEUMAP_FILE)
        return {"codes": map_dir / NEUMAP_FILE}


@dataclass
class NeumapQueryConfig(NeumapLocalizeConfig):
    decoder: str = ""  # must be the decoder the map's codes were optimised for ("": the shipped one)


@register_stage
class LocalizeNeumap(Stage):
    name = "neumap.localize"
    Config = NeumapQueryConfig
    needs = (NEUMAP_FILE,)
    inputs = {"frames": list[Frame], "features": FeatureStore, "map_dir": Path}
    outputs = {"results": list[QueryResult]}
    cacheable = False

    def run(self, frames: list[Frame], features: FeatureStore, map_dir: Path) -> dict:
        neumap = NeumapMap.load(map_dir / NEUMAP_FILE)
        checkpoint = load_decoder(decoder_path(self.config.decoder))
        if checkpoint.digest != neumap.decoder_digest:
            raise PipelineError(
                f"{map_dir / NEUMAP_FILE}: its codes were optimised for decoder {neumap.decoder_digest}, but the "
                f"decoder loaded is {checkpoint.digest}; rebuild the map with this decoder"
            )
        if features.extractor != neumap.extractor:
            raise PipelineError(
                f"{map_dir / NEUMAP_FILE}: the map was built from {neumap.extractor} features, the queries have "
                f"{features.extractor}; localize with the config that built the map"
            )
        results = []
        for frame in track(frames, f"NeuMap localization of {len(frames)} queries"):
            extracted = features.read(frame.name)
            found = localize_neumap(
                extracted.keypoints, extracted.descriptors, frame.camera, checkpoint.decoder, neumap, self.config
            )
            for stage, seconds in found.seconds.items():
                add_query_time(stage, [frame.name], seconds)
            inliers = found.result.inliers
            record = QueryRecord(  # regressed coordinates have no landmark ids: no inlier list
                num_matches=found.predictions,
                evidence=found.result.evidence,
                extra={"voxels_with_pnp": found.voxels_with_pnp, "union_of_voxel_inliers": found.correspondences},
            )
            results.append(
                QueryResult(frame.name, found.result.pose, found.result.reason, int(inliers.sum()), record=record)
            )
        return {"results": results}
