"""Shared fixtures. Real data lives in ../shared/data beside the checkout; tests that need it skip
cleanly when it is absent.

``RELOC_TORCH_THREADS=N`` runs the suite with ``torch.set_num_threads(N)``: results must not depend
on the thread count (nor on ``OMP_NUM_THREADS``), and this is how that is checked."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from reloc.datasets.synthetic.pairs import PairSampler

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    threads = os.environ.get("RELOC_TORCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))


def pytest_report_header(config: pytest.Config) -> str:
    names = ("RELOC_TORCH_THREADS", "OMP_NUM_THREADS")
    variables = ", ".join(f"{name}={os.environ.get(name, 'unset')}" for name in names)
    return f"torch threads: {torch.get_num_threads()} ({variables})"


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


@pytest.fixture(scope="module")
def module_folder(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Path]:
    """An empty folder for the maps and scenes one test module shares, removed when the module ends:
    kept to the end of the session, the modules' folders add up to ~1 GB, more than a CI disk may have."""
    folder = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def training_pair():
    """Two views of a synthetic room (480x360) with dense ground-truth correspondences."""
    sampler = PairSampler("room", seed=4, width=480, height=360, max_baseline_m=0.3, max_angle_deg=10, min_overlap=0.6)
    return sampler.sample(np.random.default_rng(1))
