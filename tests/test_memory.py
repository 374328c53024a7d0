"""glibc malloc thresholds that keep large freed buffers (reloc.pipeline.memory)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CYCLES = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from reloc.pipeline.memory import keep_freed_memory
    assert keep_freed_memory()
np.ones(10_000_000).sum()  # 80 MB once: the heap (or the adaptive threshold) learns this size
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    np.ones(5_000_000).sum()  # 40 MB, allocated and freed as SIFT's pyramid images are
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_buffers_are_reused_without_page_faults():
    """Ten 40-MB buffers allocated and freed: with glibc's defaults each is a fresh mapping that
    faults in again (numpy asks for huge pages, so fewer faults than 4-kB pages); with the kept
    thresholds the heap serves them again."""
    faults = {
        mode: int(
            subprocess.run([sys.executable, "-c", CYCLES, mode], capture_output=True, text=True, check=True).stdout
        )
        for mode in ("default", "keep")
    }
    assert faults["default"] > 2_000 and faults["default"] > 4 * faults["keep"], faults  # measured 5681 and 556
