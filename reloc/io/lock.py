"""One writer per folder: a run that writes a map or run folder holds an exclusive lock on
``FOLDER/.reloc.lock`` for as long as it writes; a second run on that folder is refused at once
with a message naming the folder and the process that holds it (nothing of either is lost)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import RelocError

LOCK_FILE = ".reloc.lock"


@contextmanager
def writing(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s write lock (creating the folder) for the duration of the block."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / LOCK_FILE).open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "pid not written yet"  # it took the lock a moment ago
            raise RelocError(
                f"{folder}: another reloc run ({holder}) is writing this folder; wait for it to end or write elsewhere"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
