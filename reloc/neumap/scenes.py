"""Training scenes for ``reloc train neumap``: a scene folder (7-Scenes or Cambridge layout, e.g.
written by ``reloc synth``) -> XFeat features of its posed frames (cached in a work folder),
labelled keypoints and voxels."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..datasets import load_dataset
from ..errors import DatasetError
from ..features.base import FeatureStore
from ..features.stages import FeatureStageConfig, XFeatFeatures
from ..mapping.stages import TriangulateConfig
from .labels import LabelledPoints, label_keypoints
from .voxels import VoxelTable, automatic_voxel_size, build_voxels


@dataclass
class VoxelConfig:
    voxel_size_m: float = 0.0  # 0: the scene's extent (central 96 % of its points) over voxels_per_side
    voxels_per_side: int = 4
    min_points_per_voxel: int = 20  # a voxel is kept when a mapping frame sees this many of its points


@dataclass
class LabelConfig:
    source: str = (
        "auto"  # depth, landmarks (triangulated with the known poses) or auto (depth when every frame has one)
    )
    triangulation: TriangulateConfig = field(default_factory=lambda: TriangulateConfig(neighbours=5))


def scene_layout(root: Path) -> str:
    """``7scenes`` or ``cambridge``, from the split files in ``root``."""
    if (root / "TrainSplit.txt").is_file():
        return "7scenes"
    if (root / "dataset_train.txt").is_file():
        return "cambridge"
    raise DatasetError(f"{root}: neither TrainSplit.txt (7-Scenes layout) nor dataset_train.txt (Cambridge layout)")


def voxels_of(labels: LabelledPoints, config: VoxelConfig) -> tuple[VoxelTable, list]:
    size = config.voxel_size_m or automatic_voxel_size(labels.points, config.voxels_per_side)
    return build_voxels(labels, size, config.min_points_per_voxel)


def prepare_scene(
    root: Path, work: Path, features: FeatureStageConfig, labels: LabelConfig
) -> tuple[LabelledPoints, str, int]:
    """Labelled keypoints of every posed frame of the scene (mapping and query splits: the queries
    of ``reloc synth`` scenes bring their harsher appearance into training), its layout and its
    number of mapping frames (the labels' first frames); XFeat features are kept in
    ``work/features.h5`` and reused when present."""
    layout = scene_layout(root)
    dataset = load_dataset(layout, root)
    mapping = dataset.frames("train")
    frames = mapping + dataset.frames("test")
    path = work / "features.h5"
    if path.is_file():
        store = FeatureStore.open(path)
    else:
        work.mkdir(parents=True, exist_ok=True)
        store = XFeatFeatures(features).run(frames, work)["features"]
    return label_keypoints(frames, store, labels.source, labels.triangulation), layout, len(mapping)
