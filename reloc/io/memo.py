"""Bounded caches: map artifacts read once per process while their file is unchanged.

A worker that localizes many batches (a Ray worker process, the threads of one process, a
service answering requests) would otherwise read the same ``landmarks.h5`` and retrieval index for
every batch. :func:`read_once` keeps the last ``MAX_ENTRIES`` values, keyed by the reader and the
file's resolved path, size and modification time, so a rebuilt map is read again. The values are
shared between threads and must not be modified by their users. :class:`BoundedCache` is the
least-recently-used store under it, also used for other values worth keeping a while (the area
matcher's segmentations).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import TypeVar

Value = TypeVar("Value")

MAX_ENTRIES = 8


class BoundedCache:
    """The values of the last ``max_entries`` keys used, the least recently used dropped first;
    safe to share between threads (a value computed twice at once is kept once)."""

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self.values: OrderedDict[Hashable, object] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], Value]) -> Value:
        """The value of ``key``, computed by ``compute()`` when it is not held."""
        with self.lock:
            if key in self.values:
                self.values.move_to_end(key)
                return self.values[key]
        value = compute()
        with self.lock:
            self.values[key] = value
            while len(self.values) > self.max_entries:
                self.values.popitem(last=False)
        return value


_map_files = BoundedCache(MAX_ENTRIES)


def read_once(reader: Callable[[Path], Value], path: Path) -> Value:
    """``reader(path)``, or its value from an earlier call while the file at ``path`` is unchanged.
    A missing file is left to ``reader``, whose error names it."""
    try:
        status = path.stat()
    except OSError:
        return reader(path)
    key = (reader.__module__, reader.__qualname__, str(path.resolve()), status.st_size, status.st_mtime_ns)
    return _map_files.get(key, lambda: reader(path))
