"""Content keys and the on-disk cache of node outputs.

A node's key is the hash of its stage name and version, its resolved config and the keys of its
inputs (the keys of upstream nodes, or the fingerprints of sources), so a changed config or
changed data upstream never reuses a stale result. A cache entry keeps, beside the node's return
value, the content hash of every file the node wrote, so that the engine can tell whether those
files are still the ones the value describes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..io.map_folder import file_sha256

CACHE_FOLDER = "cache"  # inside the map folder; not part of the map


def fingerprint(value: Any) -> str:
    """Stable content hash of plain data, numpy arrays, paths (with size and mtime for files)
    and dataclasses (Frame, Pose, Camera, configs)."""
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()


def _feed(digest, value: Any) -> None:
    if value is None or isinstance(value, (bool, int, float, str)):
        digest.update(f"{type(value).__name__}:{value!r};".encode())
    elif isinstance(value, Path):
        stat = value.stat() if value.is_file() else None
        digest.update(f"path:{value}:{stat and (stat.st_size, stat.st_mtime_ns)};".encode())
    elif isinstance(value, np.ndarray):
        digest.update(f"array:{value.dtype}:{value.shape};".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, (list, tuple)):
        digest.update(f"seq:{len(value)};".encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, dict):
        digest.update(f"dict:{len(value)};".encode())
        for key in sorted(value, key=str):
            _feed(digest, str(key))
            _feed(digest, value[key])
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        digest.update(f"dataclass:{type(value).__qualname__};".encode())
        for field in dataclasses.fields(value):
            _feed(digest, field.name)
            _feed(digest, getattr(value, field.name))
    else:
        raise TypeError(f"cannot fingerprint a {type(value).__name__}; sources must be plain data")


def folder_state(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime in ns) of every file below ``folder`` except its cache, by relative path."""
    if not folder.is_dir():
        return {}
    cache = folder / CACHE_FOLDER
    state = {}
    for path in folder.rglob("*"):
        if path.is_file() and cache not in path.parents:
            stat = path.stat()
            state[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns)
    return state


def file_digests(folder: Path, paths: list[str]) -> dict[str, str | None]:
    """SHA-256 of each file ``folder / path`` (None for a missing one), by relative path."""
    return {path: file_sha256(folder / path) if (folder / path).is_file() else None for path in paths}


@dataclasses.dataclass
class CacheEntry:
    """A node's return value and the SHA-256 of the files it wrote (relative paths)."""

    outputs: dict[str, Any]
    files: dict[str, str | None]


def node_key(stage_name: str, stage_version: str, config: Any, input_keys: dict[str, str]) -> str:
    config_json = json.dumps(dataclasses.asdict(config), sort_keys=True, default=str)
    return fingerprint([stage_name, stage_version, config_json, input_keys])


class DiskCache:
    """Pickled :class:`CacheEntry` objects in ``folder/<node>-<key>.entry.pkl``. The files are
    written by reloc itself (never load a cache folder from an untrusted source: pickle can run
    code)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def _path(self, node: str, key: str) -> Path:
        return self.folder / f"{node}-{key[:32]}.entry.pkl"

    def load(self, node: str, key: str) -> CacheEntry | None:
        path = self._path(node, key)
        if not path.is_file():
            return None
        with path.open("rb") as file:
            return pickle.load(file)

    def store(self, node: str, key: str, entry: CacheEntry) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(node, key)
        temporary = path.with_suffix(".tmp")
        with temporary.open("wb") as file:
            pickle.dump(entry, file, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temporary, path)
