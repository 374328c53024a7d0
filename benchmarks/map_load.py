"""Map load time: how long the artifacts a map's localization graph reads take to open (median of
5 runs, each in a fresh process so that nothing is cached in Python), and their bytes.

    python benchmarks/map_load.py runs/demo/map

Run from another checkout's folder (``cd OTHER && python /path/to/map_load.py MAP``) to time that
version of reloc on its own maps.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

OPEN = """
import json, sys, time
from pathlib import Path
from reloc.io.map_folder import open_artifact
from reloc.pipeline.runner import load_map_pipeline
map_dir = Path(sys.argv[1])
needs = sorted({a for node in load_map_pipeline(map_dir).localization.nodes.values() for a in node.stage.needs})
start = time.perf_counter()
for name in needs:
    open_artifact(map_dir, name)
print(json.dumps({"seconds": time.perf_counter() - start, "artifacts": needs}))
"""


def artifact_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("map_dir", type=Path)
    args = parser.parse_args()
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", OPEN, str(args.map_dir)], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(5)
    ]
    needs = runs[0]["artifacts"]
    sizes = ", ".join(f"{name} {artifact_bytes(args.map_dir / name) / 1e6:.1f} MB" for name in needs)
    print(f"{args.map_dir}: opens {sizes} in {1000 * np.median([run['seconds'] for run in runs]):.0f} ms (median of 5)")


if __name__ == "__main__":
    main()
