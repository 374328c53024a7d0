"""Building a map folder and localizing queries against it with a pipeline.

The map folder records its pipeline in ``map.yaml``, so ``reloc localize MAP IMAGES...`` needs no
config, and a key over the mapping graph, the seed and the mapping frames, so that ``reloc eval``
rebuilds a map only when one of them changed.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import shutil
from collections.abc import Callable
from pathlib import Path

import yaml

from ..datasets.base import check_complete
from ..errors import DatasetError, PipelineError
from ..io.lock import writing
from ..io.map_folder import ARTIFACTS, MAP_FILE, check_files, read_map_record, require_artifacts, unread_artifacts
from ..localization.routing import localize_split
from ..mapping.submaps import is_split_map, submap_folders
from ..types import Frame, QueryResult
from .cache import CACHE_FOLDER, DiskCache, fingerprint
from .engine import GraphRun, run_graph
from .executors import ExecutorConfig, item_mapper, run_localization
from .items import spreading
from .memory import keep_freed_memory
from .spec import Pipeline, load_recorded_pipeline

VERSIONED_PACKAGES = ("reloc", "torch", "kornia", "pycolmap", "poselib", "open3d-cpu", "numpy")


def package_versions() -> dict[str, str]:
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def mapping_key(pipeline: Pipeline, frames: list[Frame]) -> str:
    """Hash of the mapping graph with its resolved configs (a changed stage default changes it),
    the stage versions, the seed and the mapping frames."""
    stage_versions = {name: node.stage.version for name, node in pipeline.mapping.nodes.items()}
    return fingerprint([pipeline.resolved()["mapping"], pipeline.seed, frames, stage_versions])


def map_is_current(map_dir: Path, pipeline: Pipeline, frames: list[Frame]) -> bool:
    """True when ``map_dir`` was built by the same mapping graph (same stage versions) and seed
    from the same frames."""
    try:
        record = read_map_record(map_dir)
    except PipelineError:  # no map there, or a damaged record: build it anew
        return False
    return record.get("mapping_key") == mapping_key(pipeline, frames)


def build_map(
    pipeline: Pipeline,
    frames: list[Frame],
    map_dir: Path,
    dataset: dict,
    on_node: Callable[[str, int, int], None] | None = None,
    executor: ExecutorConfig | None = None,
) -> GraphRun:
    """Run the mapping graph on posed ``frames`` into ``map_dir`` and write ``map.yaml`` last,
    holding the folder's write lock (a second run on it is refused). ``executor``: where the
    stages' per-item work runs (:mod:`.executors`); the map is the same bytes wherever."""
    if not frames:
        raise PipelineError("the mapping split has no frames")
    unposed = [frame.name for frame in frames if frame.pose is None]
    if unposed:
        raise PipelineError(f"mapping needs posed frames; {len(unposed)} have no pose, e.g. {unposed[0]}")
    for frame in frames:
        check_complete(frame.image_path)  # a truncated mapping image fails here, by name, before any work
    keep_freed_memory()
    mapper = item_mapper(executor or ExecutorConfig())
    with writing(map_dir), spreading(mapper) if mapper else contextlib.nullcontext():
        (map_dir / MAP_FILE).unlink(missing_ok=True)
        run = run_graph(
            pipeline.mapping,
            {"dataset.frames": frames, "map.dir": map_dir},
            cache=DiskCache(map_dir / CACHE_FOLDER),
            on_node=on_node,
            artifacts=map_dir,
        )
        removed = remove_unread_artifacts(pipeline, run, map_dir)
        record = {
            "pipeline": pipeline.resolved(),
            "mapping_key": mapping_key(pipeline, frames),
            "artifacts": artifact_producers(pipeline, run, map_dir, set(removed)),
            "removed": removed,
            "dataset": {**dataset, "n_frames": len(frames)},
            "mapping_seconds": {name: round(s, 4) for name, s in run.seconds.items()},
            "versions": package_versions(),
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        (map_dir / MAP_FILE).write_text(yaml.safe_dump(record, sort_keys=False))
    return run


def remove_unread_artifacts(pipeline: Pipeline, run: GraphRun, map_dir: Path) -> list[str]:
    """Remove the artifacts the mapping run wrote that neither the localization graph nor the
    viewer reads (mapping's working files: all keypoints in features.h5, FaVoR's training
    patches) unless the mapping section keeps them; returns their names."""
    written = {Path(path).parts[0] for digests in run.written.values() for path in digests}
    removed = unread_artifacts(written, pipeline.localization.artifacts_read(), pipeline.mapping.keep)
    for name in removed:
        path = map_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return removed


def artifact_producers(pipeline: Pipeline, run: GraphRun, map_dir: Path, removed: set[str]) -> dict[str, dict]:
    """Each top-level file or folder of the map (``features.h5``, ``sfm``) with the node, stage
    and stage version that wrote it last, its format version when reloc knows the artifact, and
    the size and SHA-256 of each of its files (what ``reloc check`` compares)."""
    producers: dict[str, dict] = {}
    for name, digests in run.written.items():
        stage = pipeline.mapping.nodes[name].stage
        for path, digest in digests.items():
            if digest is None:  # written, then removed again
                continue
            artifact = Path(path).parts[0]
            if artifact in removed:
                continue
            entry = producers.setdefault(artifact, {"files": {}})
            entry.update(node=name, stage=stage.name, version=stage.version)
            if artifact in ARTIFACTS:
                entry["format"] = ARTIFACTS[artifact].format_version
            entry["files"][path] = {"bytes": (map_dir / path).stat().st_size, "sha256": digest}
    return dict(sorted(producers.items()))


def recorded_pipeline(map_dir: Path) -> tuple[Path, dict]:
    """The map record's path and its (unvalidated) pipeline entry (of the first submap of a split
    map); a folder that is not a map fails by name."""
    if is_split_map(map_dir):
        map_dir = submap_folders(map_dir)[0]
    return map_dir / MAP_FILE, pipeline_entry(map_dir, read_map_record(map_dir))


def pipeline_entry(map_dir: Path, record: dict) -> dict:
    """The (unvalidated) pipeline entry of map ``map_dir``'s ``record``; a record without one fails by name."""
    if "pipeline" not in record:
        raise PipelineError(f"{map_dir / MAP_FILE}: has no 'pipeline' entry; rebuild the map with 'reloc map'")
    return record["pipeline"]


def load_map_pipeline(map_dir: Path, overrides: list[str] | None = None) -> Pipeline:
    """The pipeline recorded in a map folder (in the first submap of a split map), with
    ``overrides`` of its localization graph; see :func:`.spec.load_recorded_pipeline`."""
    return load_recorded_pipeline(*recorded_pipeline(map_dir), overrides)


def localize(
    map_dir: Path,
    queries: list[Frame],
    on_node: Callable[[str, int, int], None] | None = None,
    pipeline: Pipeline | None = None,
    executor: ExecutorConfig | None = None,
) -> list[QueryResult]:
    """Localize ``queries`` against a map folder with the localization graph of ``pipeline``, by
    default the one stored in the map, in this process or spread over workers (``executor``,
    :mod:`.executors`). A map without an artifact the graph reads is refused first. A split map
    (``reloc split``) routes each query to its submaps (:mod:`reloc.localization.routing`).

    Every query gets exactly one result, in query order; a query the graph left out is reported
    failed.
    """
    keep_freed_memory()
    pipeline = pipeline if pipeline is not None else load_map_pipeline(map_dir)
    split = is_split_map(map_dir)
    for folder in submap_folders(map_dir) if split else [map_dir]:
        check_map(folder, pipeline)
    unreadable = unreadable_images(queries)
    readable = [frame for frame in queries if frame.name not in unreadable]
    if split:
        outputs, timings = localize_split(pipeline, map_dir, readable, executor or ExecutorConfig())
    else:
        outputs, timings = run_localization(pipeline, map_dir, readable, executor or ExecutorConfig(), on_node)
    by_name = {result.name: result for result in outputs}
    for name, result in by_name.items():
        result.timings = {**timings.get(name, {}), **result.timings}
    unknown = sorted(set(by_name) - {frame.name for frame in queries})
    if unknown:
        raise PipelineError(f"localization returned results for images that are not queries, e.g. {unknown[0]}")
    results = [
        by_name.get(frame.name)
        or QueryResult(frame.name, None, unreadable.get(frame.name, "no result from the pipeline"))
        for frame in queries
    ]
    for frame, result in zip(queries, results):
        result.record.image, result.record.camera = Path(frame.image_path).resolve(), frame.camera
    return results


def check_map(map_dir: Path, pipeline: Pipeline) -> None:
    """Refuse a map without an artifact the localization graph reads, or whose files differ from its record."""
    needs = {name: node.stage.needs for name, node in pipeline.localization.nodes.items()}
    record = read_map_record(map_dir)
    recorded = record.get("artifacts") or {}
    require_artifacts(map_dir, needs, recorded, tuple(record.get("removed") or ()))
    check_files(map_dir, recorded, {artifact for artifacts in needs.values() for artifact in artifacts})


def unreadable_images(frames: list[Frame]) -> dict[str, str]:
    """Query name -> why its image cannot be used (missing or truncated file): such a query is
    reported failed with that reason and the others are localized."""
    reasons = {}
    for frame in frames:
        try:
            check_complete(frame.image_path)
        except DatasetError as error:
            reasons[frame.name] = str(error)
    return reasons


def folder_bytes(folder: Path) -> int:
    """Bytes of the files of a map folder, without its cache."""
    cache = folder / CACHE_FOLDER
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and cache not in p.parents)
