"""Split a map into submaps by region, for maps too large for one worker.

``reloc split MAP OUT --parts K`` clusters the keyframes by camera centre (k-means on the known
poses) into K regions. A keyframe joins its nearest region and every other region whose centre
is within ``1 + overlap`` times that distance, so that a query near a border is in a submap with
all the keyframes it sees. Each submap ``OUT/submap-XX`` is a map folder of its own (it localizes
alone with ``reloc localize``): its keyframes' observations with the landmarks they observe
(renumbered, descriptors copied as coded), and a retrieval index of its keyframes. ``OUT/router.h5``
holds the retrieval vectors of every keyframe, PCA-whitened to ``router_dims`` dimensions: what
routes a query to the submaps that hold its top keyframes (:mod:`reloc.localization.routing`).
``OUT/split.yaml`` lists the submaps, their keyframes and sizes.

The COLMAP model (``sfm/``) is not split: it is for the viewer, which opens the source map.
"""

from __future__ import annotations

import copy
import datetime
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import yaml
from scipy.cluster.vq import kmeans2

from ..errors import PipelineError
from ..io.lock import writing
from ..io.map_folder import GLOBAL_FILE, LANDMARKS_FILE, MAP_FILE, SFM_FOLDER, read_map_record
from ..pipeline.cache import file_digests
from ..retrieval.vlad import RetrievalIndex, Whitening
from .store import KEYFRAMES_GROUP

SPLIT_FILE = "split.yaml"
ROUTER_FILE = "router.h5"


@dataclass
class SplitConfig:
    parts: int = 4  # submaps
    overlap: float = 0.25  # a keyframe also joins regions within (1 + overlap) x its nearest centre distance
    router_dims: int = 128  # dimensions of the router's whitened retrieval vectors
    seed: int = 0


def submap_folder(index: int) -> str:
    return f"submap-{index:02d}"


def is_split_map(folder: Path) -> bool:
    return (folder / SPLIT_FILE).is_file()


def read_split(folder: Path) -> dict:
    """``split.yaml`` of a split map folder, checked to list submaps that are there."""
    path = folder / SPLIT_FILE
    try:
        split = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise PipelineError(f"{path}: cannot be read as a split map ({error}); split the map again") from None
    if not isinstance(split, dict) or not split.get("submaps"):
        raise PipelineError(f"{path}: lists no submaps; split the map again with 'reloc split'")
    for entry in split["submaps"]:
        if not (folder / entry["folder"] / MAP_FILE).is_file():
            raise PipelineError(f"{folder / entry['folder']}: submap listed in {SPLIT_FILE} is missing")
    return split


def submap_folders(folder: Path) -> list[Path]:
    return [folder / entry["folder"] for entry in read_split(folder)["submaps"]]


def region_members(centres: np.ndarray, config: SplitConfig) -> list[np.ndarray]:
    """Indices (ascending) of the keyframes of each region, from camera centres (N, 3) in world
    metres; a region left empty by k-means is dropped."""
    if config.parts < 1 or config.parts > len(centres):
        raise PipelineError(f"cannot split {len(centres)} keyframes into {config.parts} submaps")
    region_centres, _ = kmeans2(centres.astype(np.float64), config.parts, seed=config.seed, minit="++")
    distances = np.linalg.norm(centres[:, None] - region_centres[None], axis=-1)  # (N, K)
    nearest = distances.min(axis=1, keepdims=True)
    member = distances <= nearest * (1 + config.overlap) + 1e-9
    return [np.flatnonzero(member[:, k]) for k in range(config.parts) if member[:, k].any()]


def write_landmark_subset(source: Path, target: Path, names: list[str]) -> int:
    """``target`` landmarks.h5 with only the keyframes ``names`` of ``source`` and the landmarks
    they observe (ids renumbered densely, in their old order); descriptors copied as coded.
    Returns the number of landmarks kept."""
    with h5py.File(source, "r") as old, h5py.File(target, "w") as new:
        keyframes = old[KEYFRAMES_GROUP]
        used = np.unique(np.concatenate([keyframes[name]["point_ids"][()] for name in names]))
        renumber = np.full(len(old["points"]), -1, np.int64)
        renumber[used] = np.arange(len(used))
        new.attrs.update(old.attrs)
        new.create_dataset("points", data=old["points"][()][used])
        new.create_dataset("errors", data=old["errors"][()][used])
        old.copy(old["codec"], new, "codec")
        group = new.create_group(KEYFRAMES_GROUP)
        for name in names:
            keyframe = group.create_group(name)
            keyframe.attrs.update(keyframes[name].attrs)
            keyframe.create_dataset("keypoints", data=keyframes[name]["keypoints"][()])
            keyframe.create_dataset("point_ids", data=renumber[keyframes[name]["point_ids"][()]].astype(np.int32))
            keyframe.create_dataset("descriptors", data=keyframes[name]["descriptors"][()])
        return len(used)


def index_subset(index: RetrievalIndex, rows: np.ndarray) -> RetrievalIndex:
    names, poses = [index.names[i] for i in rows], [index.poses[i] for i in rows]
    return RetrievalIndex(index.centroids, names, index.vectors[rows], poses, index.whitening)


def submap_record(record: dict, folder: Path, part: int, parts: int, source: Path) -> dict:
    """The source map's record for submap ``part``: its own artifact digests; ``sfm/`` marked removed."""
    record = copy.deepcopy(record)
    artifacts = {}
    for name in (LANDMARKS_FILE, GLOBAL_FILE):
        entry = dict(record["artifacts"][name])
        digests = file_digests(folder, [name])
        entry["files"] = {name: {"bytes": (folder / name).stat().st_size, "sha256": digests[name]}}
        artifacts[name] = entry
    record["artifacts"] = artifacts
    record["removed"] = sorted({*(record.get("removed") or []), SFM_FOLDER})
    record["dataset"] = {**(record.get("dataset") or {}), "submap": part, "of": parts, "split_from": str(source)}
    record["created"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return record


def split_map(map_dir: Path, out: Path, config: SplitConfig | None = None) -> dict:
    """Write the submaps of ``map_dir`` into the new folder ``out``; returns ``split.yaml``'s content."""
    config = config or SplitConfig()
    record = read_map_record(map_dir)
    for name in (LANDMARKS_FILE, GLOBAL_FILE):
        if name not in (record.get("artifacts") or {}):
            raise PipelineError(f"{map_dir}: has no {name}; only maps of landmarks with a retrieval index split")
    if out.exists() and any(out.iterdir()):
        raise PipelineError(f"{out}: exists and is not empty; give a new folder for the submaps")
    index = RetrievalIndex.read(map_dir / GLOBAL_FILE)
    centres = np.stack([pose.center for pose in index.poses])
    regions = region_members(centres, config)
    out.mkdir(parents=True, exist_ok=True)
    with writing(out):
        router = Whitening.fit(index.vectors, config.router_dims)
        RetrievalIndex(index.centroids, index.names, router.apply(index.vectors), index.poses, router).write(
            out / ROUTER_FILE
        )
        submaps = []
        for part, rows in enumerate(regions):
            folder = out / submap_folder(part)
            folder.mkdir()
            names = [index.names[i] for i in rows]
            landmarks = write_landmark_subset(map_dir / LANDMARKS_FILE, folder / LANDMARKS_FILE, names)
            index_subset(index, rows).write(folder / GLOBAL_FILE)
            text = yaml.safe_dump(submap_record(record, folder, part, len(regions), map_dir.resolve()), sort_keys=False)
            (folder / MAP_FILE).write_text(text)
            centre = centres[rows].mean(axis=0)
            submaps.append(
                {
                    "folder": folder.name,
                    "centre": [round(float(v), 3) for v in centre],
                    "landmarks": landmarks,
                    "keyframes": names,
                }
            )
        split = {"source": str(map_dir.resolve()), "config": vars(config), "submaps": submaps}
        (out / SPLIT_FILE).write_text(yaml.safe_dump(split, sort_keys=False))
    return split
