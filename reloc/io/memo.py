"""Map artifacts read once per process while their file is unchanged.

A worker that localizes many batches (a Ray worker process, the threads of one process, a
service answering requests) would otherwise read the same ``landmarks.h5`` and retrieval index for
every batch. :func:`read_once` keeps the last ``MAX_ENTRIES`` values, keyed by the reader and the
file's resolved path, size and modification time, so a rebuilt map is read again. The values are
shared between threads and must not be modified by their users.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

Value = TypeVar("Value")

MAX_ENTRIES = 8
_values: OrderedDict[tuple, object] = OrderedDict()
_lock = threading.Lock()


def read_once(reader: Callable[[Path], Value], path: Path) -> Value:
    """``reader(path)``, or its value from an earlier call while the file at ``path`` is unchanged.
    A missing file is left to ``reader``, whose error names it."""
    try:
        status = path.stat()
    except OSError:
        return reader(path)
    key = (reader.__module__, reader.__qualname__, str(path.resolve()), status.st_size, status.st_mtime_ns)
    with _lock:
        if key in _values:
            _values.move_to_end(key)
            return _values[key]
    value = reader(path)
    with _lock:
        _values[key] = value
        while len(_values) > MAX_ENTRIES:
            _values.popitem(last=False)
    return value
