"""The pipelines reloc ships (``default``, ``favor``, ``casp``...), installed with the package so
that ``--config default`` works from any folder. In a checkout, ``configs/`` points here."""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parent


def shipped_names() -> list[str]:
    return sorted(path.stem for path in FOLDER.glob("*.yaml"))


def config_path(config: str | Path) -> Path:
    """``config`` as a pipeline file: an existing path, else a shipped config's name."""
    path = Path(config)
    if path.exists() or path.suffix or len(path.parts) > 1:
        return path
    return FOLDER / f"{config}.yaml"
