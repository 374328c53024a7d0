"""Shared fixtures. Real data lives in ../shared/data beside the checkout; tests that need it skip
cleanly when it is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


@pytest.fixture
def strecha_fountain() -> Path:
    return shared_path("strecha", "fountain-P11")


@pytest.fixture
def sevenscenes_stairs() -> Path:
    return shared_path("7scenes-sample", "stairs")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
