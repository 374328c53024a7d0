"""The dataset interface: a scene folder yielding frames for its mapping and query splits."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DatasetError
from ..io.text import utf8_text
from ..types import Frame

SPLITS = ("train", "test")


class Dataset(ABC):
    """A scene on disk. ``frames("train")`` are the posed mapping images, ``frames("test")`` the
    queries (posed when the dataset has ground truth). Frame names are paths relative to ``root``
    and are the keys of results files."""

    kind: str = ""
    scored: bool = True  # has ground-truth poses for its queries (reloc eval / score)

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset folder does not exist")

    @abstractmethod
    def frames(self, split: str) -> list[Frame]:
        """Frames of a split ('train' or 'test'), in a stable order."""

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; use one of {SPLITS}")

    def description(self) -> dict[str, str]:
        """What a map records of the dataset it was built from: its kind and absolute root."""
        return {"kind": self.kind, "root": str(self.root.resolve())}

    def ground_truth(self) -> dict[str, Frame]:
        """Query frames by name, for scoring results."""
        return {frame.name: frame for frame in self.frames("test")}


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"{path}: missing {what}")
    return path


def read_lines(path: Path, what: str) -> list[str]:
    """The lines of the text file ``path``; a missing file or one that is not UTF-8 text raises
    a DatasetError naming it."""
    return utf8_text(require_file(path, what), what, DatasetError).splitlines()


@contextmanager
def open_image(path: Path, what: str = "image") -> Iterator[Image.Image]:
    """PIL image of ``path``; a missing or unreadable file raises a DatasetError naming it."""
    try:
        with Image.open(path) as image:
            yield image
    except FileNotFoundError:
        raise DatasetError(f"{path}: {what} file does not exist") from None
    except (UnidentifiedImageError, OSError) as error:
        raise DatasetError(f"{path}: not a readable {what} ({error})") from None


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) read from the image header, without decoding the pixels."""
    with open_image(path) as image:
        return image.size


def check_complete(path: str | Path) -> bool:
    """Refuse a truncated JPEG or PNG (no end-of-image marker / IEND chunk in its last kilobyte):
    OpenCV decodes a truncated JPEG half grey with only a warning that names no file. True for a
    JPEG."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            head = file.read(8)
            file.seek(max(0, file.seek(0, 2) - 1024))
            tail = file.read()
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file does not exist") from None
    if head.startswith(b"\xff\xd8") and b"\xff\xd9" not in tail:
        raise DatasetError(f"{path}: truncated JPEG (no end-of-image marker): the file is incomplete")
    if head.startswith(b"\x89PNG") and b"IEND" not in tail:
        raise DatasetError(f"{path}: truncated PNG (no IEND chunk): the file is incomplete")
    return head.startswith(b"\xff\xd8")


JPEG_REDUCTIONS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
"""OpenCV's flags that decode a JPEG at 1/2, 1/4, 1/8 of its size in libjpeg's scaled inverse
DCT: output pixel i averages input pixels [r i, r i + r), several times faster than a full decode."""


def read_image(path: str | Path, reduction: int = 1) -> np.ndarray:
    """RGB uint8 array (H, W, 3). ``reduction`` 2, 4 or 8 decodes a JPEG at that fraction of
    its size (sides rounded up; pixel i of the result covers original pixels [r i, r i + r));
    other formats refuse it. Corrupt, truncated or missing files raise a DatasetError naming the file.

    Decoded by OpenCV (about twice as fast as PIL for JPEG); files OpenCV cannot decode go
    through PIL, which reads a few more formats and explains why a file is unreadable."""
    is_jpeg = check_complete(path)
    if reduction != 1 and not (is_jpeg and reduction in JPEG_REDUCTIONS):
        raise ValueError(f"{path}: reduced decoding needs a JPEG and a reduction of 2, 4 or 8, got {reduction}")
    flags = JPEG_REDUCTIONS[reduction] if reduction != 1 else cv2.IMREAD_COLOR
    image = cv2.imread(str(path), flags | cv2.IMREAD_IGNORE_ORIENTATION)  # as PIL: pixels as stored
    if image is not None:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    with open_image(Path(path)) as image:
        return np.asarray(image.convert("RGB").reduce(reduction))


def read_depth_mm(path: str | Path) -> np.ndarray:
    """Depth in metres (H, W) float32 from a uint16 millimetre PNG; 0 and 65535 become NaN."""
    path = Path(path)
    with open_image(path, "depth image") as image:
        depth = np.asarray(image)
    if depth.dtype != np.uint16 and depth.dtype != np.int32:
        raise DatasetError(f"{path}: depth must be a 16-bit PNG in millimetres, got dtype {depth.dtype}")
    depth_m = depth.astype(np.float32) / 1000.0
    depth_m[(depth == 0) | (depth == 65535)] = np.nan
    return depth_m
