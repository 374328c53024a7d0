"""Small synthetic scenes with their default maps, shared by the tests that need a map to query."""

from __future__ import annotations

from pathlib import Path

from reloc import api
from reloc.datasets.synthetic.generate import SynthConfig, generate


def mapped_room(folder: Path, query_frames: int) -> tuple[Path, Path]:
    """A synthetic room (seed 8, 40 mapping frames in 2 sequences, ``query_frames`` queries) in
    ``folder/scene`` and its default map in ``folder/map``."""
    config = SynthConfig(
        "7scenes", seed=8, mapping_frames=40, query_frames=query_frames, mapping_sequences=2, query_sequences=1
    )
    generate(config, folder / "scene")
    api.map("default", "7scenes", folder / "scene", folder / "map")
    return folder / "scene", folder / "map"
