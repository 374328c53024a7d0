"""The map folder: every artifact a mapping graph can write into it, which stage writes it, its
format version, and the check that a map holds what a localization graph needs.

A map folder holds ``map.yaml`` (the resolved pipeline that built it, its mapping key, which node
wrote each artifact) and the artifacts below. Stages name these files through the constants here,
and localization stages declare the ones they read in ``Stage.needs``; a map that lacks one is
refused before anything runs, with the file and the stage (and shipped configs) that build it.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..configs import FOLDER as SHIPPED_CONFIGS
from ..errors import PipelineError

MAP_FILE = "map.yaml"
FEATURES_FILE = "features.h5"
LANDMARKS_FILE = "landmarks.h5"
SFM_FOLDER = "sfm"
GLOBAL_FILE = "global.h5"
PATCHES_FILE = "patches.h5"
KEYFRAME_IMAGES = "keyframe_images"
KEYFRAME_FEATURES = "keyframe_features.h5"
FAVOR_FILE = "favor.pt"
NEUMAP_FILE = "neumap.pt"
GRID_EXTRACTOR = "casp-grid"  # the extractor of a semi-dense map's landmarks.h5: grid keypoints, no descriptors


@dataclass(frozen=True)
class Artifact:
    name: str  # file or folder name inside the map folder
    built_by: tuple[str, ...]  # stages that write it
    format_version: int  # raised with the writer's stage version when the layout changes
    content: str
    reader: str = ""  # "package.module:function" (or Class.method) that opens it from its path
    kept_for: str = ""  # who reads it outside localization (the viewer); empty: removed when no localization reads it


ARTIFACTS = {
    artifact.name: artifact
    for artifact in (
        Artifact(
            FEATURES_FILE,
            ("features.sift", "features.xfeat", "features.aliked"),
            1,
            "keypoints (COLMAP pixels), float16 descriptors and scores per mapping image; the extractor as an "
            "attribute (mapping's working file: removed when mapping ends unless a localization node reads it)",
            "reloc.features.base:FeatureStore.open",
        ),
        Artifact(
            LANDMARKS_FILE,
            ("mapping.triangulate", "mapping.semidense_triangulate"),
            2,
            "landmark points; per keyframe its camera and only its observations of landmarks: keypoints, "
            "landmark ids, descriptors coded by the map's codec (float16, sq8 or pq); the extractor as an attribute",
            "reloc.mapping.store:read_sparse_map",
            kept_for="the viewer (keyframe observations)",
        ),
        Artifact(
            SFM_FOLDER,
            ("mapping.triangulate", "mapping.semidense_triangulate"),
            1,
            "a pycolmap reconstruction of the keyframes (their observing keypoints only) and landmarks (opens in "
            "COLMAP)",
            "reloc.mapping.store:read_reconstruction",
            kept_for="the viewer",
        ),
        Artifact(
            GLOBAL_FILE,
            ("retrieval.vlad",),
            2,
            "VLAD vocabulary and one VLAD vector (and pose) per keyframe, coded in 8 bits per dimension, optionally "
            "PCA-whitened",
            "reloc.retrieval.vlad:RetrievalIndex.read",
        ),
        Artifact(
            PATCHES_FILE,
            ("mapping.patches",),
            1,
            "dense-descriptor patches around the observations of persistent landmarks",
            "reloc.mapping.patches:read_landmark_patches",
        ),
        Artifact(KEYFRAME_IMAGES, ("mapping.keyframe_images",), 1, "resized JPEG copies of the keyframe images"),
        Artifact(
            KEYFRAME_FEATURES,
            ("mapping.semidense_triangulate",),
            1,
            "per keyframe, CasP's 1/8 and 1/16 backbone maps (float16) and HomoMatcher's 1/2 fine features (int8) "
            "at the matcher's resolution; the digest of the checkpoints that computed them",
        ),
        Artifact(
            FAVOR_FILE,
            ("favor.train",),
            2,
            "FaVoR descriptor fields of the kept landmarks: a voxel grid each, or one hash-grid field for the scene",
            "reloc.favor.model:LandmarkFields.load",
            kept_for="the viewer",
        ),
        Artifact(
            NEUMAP_FILE,
            ("neumap.codes",),
            1,
            "NeuMap voxel table (side, cells, median / min / max of the labelled points) and the kept latent codes "
            "(float16) with their weights; the digest of the decoder they were optimised for",
            "reloc.neumap.store:NeumapMap.load",
        ),
    )
}


def configs_with_stages(stages: tuple[str, ...], folder: Path = SHIPPED_CONFIGS) -> list[str]:
    """Names of the shipped pipeline files whose mapping graph uses one of ``stages``."""
    names = []
    for path in sorted(folder.glob("*.yaml")):
        nodes = ((yaml.safe_load(path.read_text()) or {}).get("mapping") or {}).get("nodes") or {}
        if any(isinstance(node, dict) and node.get("stage") in stages for node in nodes.values()):
            names.append(f"configs/{path.name}")
    return names


def unread_artifacts(written: set[str], needed: set[str], keep: tuple[str, ...]) -> list[str]:
    """Of the map artifacts a mapping run ``written``, those removed when it ends: no localization
    node reads them (``needed``), the pipeline does not ``keep`` them, and no viewer reads them."""
    return sorted(
        name
        for name in written
        if name in ARTIFACTS and name not in needed and name not in keep and not ARTIFACTS[name].kept_for
    )


def require_artifacts(
    map_dir: Path, needs: dict[str, tuple[str, ...]], recorded: dict[str, dict], removed: tuple[str, ...] = ()
) -> None:
    """Refuse a map that lacks an artifact a localization node reads, or holds one in an older
    format than this reloc reads. ``needs``: node name -> artifact names (its ``stage.needs``);
    ``recorded``: map.yaml's ``artifacts`` (format versions as written); ``removed``: the
    artifacts mapping removed when it ended (map.yaml's ``removed``)."""
    for node, names in needs.items():
        for name in names:
            artifact = ARTIFACTS[name]
            written = (recorded.get(name) or {}).get("format", artifact.format_version)
            if name not in removed and (map_dir / name).exists() and written == artifact.format_version:
                continue
            configs = configs_with_stages(artifact.built_by)  # reads the shipped configs: only for the message
            rebuild = (
                f"it is built by a mapping node with stage {' or '.join(artifact.built_by)}"
                + (f" (as in {', '.join(configs)})" if configs else "")
                + ": rebuild the map with such a config"
            )
            if name in removed:
                raise PipelineError(
                    f"{map_dir / name}: removed when the map was built, since the map's own localization graph "
                    f"does not read it, and localization node '{node}' reads it; rebuild the map with this "
                    f"localization graph, or keep it with 'mapping: keep: [{name}]' in the config "
                    f"(--set 'mapping.keep=[{name}]'); {rebuild}"
                )
            if not (map_dir / name).exists():
                raise PipelineError(f"{map_dir / name}: missing, and localization node '{node}' reads it; {rebuild}")
            if written != artifact.format_version:
                raise PipelineError(
                    f"{map_dir / name}: format {written}, but this reloc reads format "
                    f"{artifact.format_version} (localization node '{node}'); {rebuild}"
                )


def open_artifact(map_dir: Path, name: str):
    """Open artifact ``name`` of a map with its reader (imported on use, so that this module needs
    none of the stage families); a missing file fails in the reader, by name."""
    module, _, attribute = ARTIFACTS[name].reader.partition(":")
    reader = importlib.import_module(module)
    for part in attribute.split("."):
        reader = getattr(reader, part)
    return reader(map_dir / name)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def check_files(map_dir: Path, recorded: dict[str, dict], names: set[str] | None = None, contents: bool = False) -> int:
    """Refuse a map whose files differ from what ``map.yaml`` recorded when it was built: missing,
    another size (a truncated copy), or with ``contents`` another SHA-256. ``names`` limits the
    check to those artifacts. Returns the number of files checked."""
    checked = 0
    for name, entry in recorded.items():
        if names is not None and name not in names:
            continue
        for path, expected in (entry.get("files") or {}).items():
            file = map_dir / path
            if not file.is_file():
                raise PipelineError(f"{file}: missing, but the map recorded it; rebuild the map")
            size = file.stat().st_size
            if size != expected["bytes"]:
                raise PipelineError(
                    f"{file}: {size} bytes where the map recorded {expected['bytes']} (truncated or "
                    "changed since it was built); rebuild the map"
                )
            if contents and file_sha256(file) != expected["sha256"]:
                raise PipelineError(
                    f"{file}: its content differs from the map's record (changed since it was built); rebuild the map"
                )
            checked += 1
    return checked


def read_map_record(map_dir: Path) -> dict:
    """The content of ``map.yaml``; a folder without one is not a map."""
    path = map_dir / MAP_FILE
    if not path.is_file():
        raise PipelineError(f"{map_dir}: not a reloc map folder (no {MAP_FILE}; build one with 'reloc map')")
    try:
        record = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        reason = str(error).splitlines()[0]
        raise PipelineError(f"{path}: not valid (safe) YAML ({reason}); rebuild the map with 'reloc map'") from None
    if not isinstance(record, dict):
        raise PipelineError(f"{path}: not a map record (a mapping of keys); rebuild the map with 'reloc map'")
    return record
