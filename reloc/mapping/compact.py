"""``reloc export MAP --compact OUT``: an existing map rewritten as a compact one.

The landmark observations' descriptors are re-coded (product quantization by default), the
retrieval vectors PCA-whitened to a few dimensions, the COLMAP model stripped of keypoints and
tracks, and only the artifacts the map's localization graph or the viewer reads are copied.
``map.yaml`` records the settings as the configs that would build such a map directly, and
where the map was exported from.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pycolmap
import yaml

from ..errors import PipelineError
from ..features.quantize import CodecConfig, fit_codec_on_chunks
from ..io.map_folder import (
    ARTIFACTS,
    GLOBAL_FILE,
    LANDMARKS_FILE,
    MAP_FILE,
    SFM_FOLDER,
    file_sha256,
    read_map_record,
    unread_artifacts,
)
from ..pipeline.runner import pipeline_entry
from ..pipeline.spec import load_recorded_pipeline
from ..retrieval.vlad import RetrievalIndex, Whitening
from .store import KeyframeEntry, read_sparse_map, write_landmarks
from .submaps import is_split_map


@dataclass
class CompactConfig:
    descriptors: CodecConfig = field(default_factory=lambda: CodecConfig(kind="pq"))
    # VLAD vectors whitened to this many dimensions (0: as they are; the projection costs C * D * K floats)
    whitened_dims: int = 0
    colmap_tracks: bool = False  # keep keyframe keypoints and point tracks in sfm/


def export_compact(source: Path, out: Path, config: CompactConfig) -> dict[str, tuple[int, int]]:
    """Write the compact copy of map ``source`` into ``out`` (a new or empty folder). Returns,
    per artifact of ``source``, its bytes there and in ``out`` (0: not copied)."""
    if is_split_map(source):
        raise PipelineError(f"{source}: a split map ('reloc split'); export each of its submap folders on its own")
    record = read_map_record(source)
    pipeline = load_recorded_pipeline(source / MAP_FILE, pipeline_entry(source, record))
    if out.exists() and any(out.iterdir()):
        raise PipelineError(f"{out}: not empty; export into a new folder")
    out.mkdir(parents=True, exist_ok=True)
    present = {path.name for path in source.iterdir() if path.name in ARTIFACTS}
    dropped = unread_artifacts(present, pipeline.localization.artifacts_read(), ())
    for name in sorted(present - set(dropped)):
        if name == LANDMARKS_FILE:
            recode_landmarks(source / name, out / name, config.descriptors)
        elif name == GLOBAL_FILE:
            whiten_index(source / name, out / name, config.whitened_dims)
        elif name == SFM_FOLDER and not config.colmap_tracks:
            strip_reconstruction(source / name, out / name)
        elif (source / name).is_dir():
            shutil.copytree(source / name, out / name)
        else:
            shutil.copy2(source / name, out / name)
    write_exported_record(source, out, record, config, dropped)
    return {name: (artifact_bytes(source / name), artifact_bytes(out / name)) for name in sorted(present)}


def recode_landmarks(source: Path, out: Path, config: CodecConfig) -> None:
    """``landmarks.h5`` with its observation descriptors decoded and coded again by a codec of
    ``config`` fitted on a seeded sample of them."""
    sparse_map = read_sparse_map(source)
    names = list(sparse_map.cameras)
    chunks = (sparse_map.observations(name).descriptors for name in names)
    codec = fit_codec_on_chunks(chunks, sum(sparse_map.observation_counts().values()), config)
    with h5py.File(source, "r") as file:
        errors = file["errors"][()]

    def entries():
        for name in names:
            observations = sparse_map.observations(name)
            yield (
                name,
                KeyframeEntry(
                    sparse_map.cameras[name], observations.keypoints, observations.point_ids, observations.descriptors
                ),
            )

    write_landmarks(out, sparse_map.extractor, sparse_map.points, errors, codec, entries())


def whiten_index(source: Path, out: Path, dims: int) -> None:
    """``global.h5`` with its VLAD vectors PCA-whitened to ``dims`` (kept as they are when 0 or
    already whitened)."""
    index = RetrievalIndex.read(source)
    if dims and index.whitening is None:
        index.whitening = Whitening.fit(index.vectors, dims)
        index.vectors = index.whitening.apply(index.vectors)
    index.write(out)


def strip_reconstruction(source: Path, out: Path) -> None:
    """``sfm/`` with cameras, keyframe poses and coloured points, without keypoints and tracks."""
    full = pycolmap.Reconstruction(str(source))
    stripped = pycolmap.Reconstruction()
    for image in sorted(full.images.values(), key=lambda image: image.image_id):
        camera = full.cameras[image.camera_id]
        if camera.camera_id not in stripped.cameras:
            stripped.add_camera_with_trivial_rig(camera)
        bare = pycolmap.Image(
            name=image.name, keypoints=np.zeros((0, 2)), camera_id=image.camera_id, image_id=image.image_id
        )
        stripped.add_image_with_trivial_frame(bare, image.cam_from_world())
    for point_id in sorted(full.points3D):
        point = full.points3D[point_id]
        stripped.add_point3D(point.xyz, pycolmap.Track(), point.color)
    out.mkdir(parents=True)
    stripped.write_binary(str(out))


def write_exported_record(source: Path, out: Path, record: dict, config: CompactConfig, dropped: list[str]) -> None:
    """``out/map.yaml``: the source's record with the compact settings written into its mapping
    nodes, the copied artifacts' files re-recorded, the dropped ones listed, and no mapping key
    (``reloc eval`` builds its own maps rather than reuse an exported one)."""
    exported = dict(record)
    for node in exported["pipeline"]["mapping"]["nodes"].values():
        if node["stage"] == "mapping.triangulate":
            node["with"] = {
                **node["with"],
                "descriptors": dataclasses.asdict(config.descriptors),
                "colmap_tracks": config.colmap_tracks,
            }
        if node["stage"] == "retrieval.vlad" and config.whitened_dims:
            node["with"] = {**node["with"], "whitened_dims": config.whitened_dims}
    artifacts = {}
    for name, entry in (record.get("artifacts") or {}).items():
        if (out / name).exists():
            artifacts[name] = {**entry, "files": file_entries(out, name)}
    exported.update(
        mapping_key=None,
        artifacts=artifacts,
        removed=sorted(set(record.get("removed") or ()) | set(dropped)),
        exported_from=str(source),
    )
    (out / MAP_FILE).write_text(yaml.safe_dump(exported, sort_keys=False))


def file_entries(map_dir: Path, name: str) -> dict[str, dict]:
    """Size and SHA-256 of each file of artifact ``name`` (a file or a folder), by relative path."""
    path = map_dir / name
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {
        str(file.relative_to(map_dir)): {"bytes": file.stat().st_size, "sha256": file_sha256(file)} for file in files
    }


def artifact_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())
    return path.stat().st_size if path.exists() else 0
