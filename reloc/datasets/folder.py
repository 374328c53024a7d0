"""Unposed query images: a folder (searched recursively) or a list of files.

Intrinsics come, in this order of precedence, from an explicit focal length in pixels
(principal point at the image centre), a camera file, or the image's EXIF tags. An image whose
intrinsics are unknown is an error, never a guess.

Camera file: ``#`` comments; either one line ``MODEL WIDTH HEIGHT PARAMS...`` (COLMAP's
``cameras.txt`` line, optionally with a leading camera id) used for every image, or lines
``NAME MODEL WIDTH HEIGHT PARAMS...`` per image (hloc's ``queries_with_intrinsics.txt``).
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image

from ..errors import DatasetError
from ..types import CAMERA_MODEL_PARAMS, Camera, Frame
from .base import Dataset, image_size, read_lines

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
EXIF_IFD = 0x8769
EXIF_FOCAL_LENGTH = 0x920A
EXIF_FOCAL_35MM = 0xA405
EXIF_FOCAL_PLANE_X_RESOLUTION = 0xA20E
EXIF_FOCAL_PLANE_UNIT = 0xA210
FOCAL_PLANE_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 1e-3}


def parse_camera_tokens(tokens: list[str], where: str) -> Camera:
    """``MODEL WIDTH HEIGHT PARAMS...`` -> Camera."""
    try:
        return Camera(tokens[0], int(tokens[1]), int(tokens[2]), tuple(float(t) for t in tokens[3:]))
    except (IndexError, ValueError) as error:
        raise DatasetError(f"{where}: expected 'MODEL WIDTH HEIGHT PARAMS...' ({error})") from None


def read_camera_file(path: Path) -> Camera | dict[str, Camera]:
    """One camera for all images, or a camera per image name (see module docstring)."""
    lines = [
        (i + 1, line.split())
        for i, line in enumerate(read_lines(path, "camera file"))
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise DatasetError(f"{path}: camera file holds no camera")
    first = lines[0][1]
    if first[0] in CAMERA_MODEL_PARAMS or (first[0].isdigit() and len(first) > 1 and first[1] in CAMERA_MODEL_PARAMS):
        if len(lines) > 1:
            raise DatasetError(f"{path}: several unnamed cameras; name each line 'NAME MODEL WIDTH HEIGHT PARAMS...'")
        tokens = first[1:] if first[0].isdigit() else first
        return parse_camera_tokens(tokens, f"{path}:{lines[0][0]}")
    return {tokens[0]: parse_camera_tokens(tokens[1:], f"{path}:{n}") for n, tokens in lines}


def exif_focal_pixels(path: Path) -> float | None:
    """Focal length in pixels from EXIF: the 35 mm equivalent (36 mm across the long side), else
    the focal length in mm times the focal-plane resolution. None when the tags are absent."""
    with Image.open(path) as image:
        width, height = image.size
        exif = image.getexif().get_ifd(EXIF_IFD)
    focal_35mm = exif_number(path, exif, EXIF_FOCAL_35MM)
    if focal_35mm > 0:
        return focal_35mm / 36.0 * max(width, height)
    focal_mm = exif_number(path, exif, EXIF_FOCAL_LENGTH)
    resolution = exif_number(path, exif, EXIF_FOCAL_PLANE_X_RESOLUTION)
    unit_mm = FOCAL_PLANE_UNIT_MM.get(int(exif.get(EXIF_FOCAL_PLANE_UNIT, 2)))
    if focal_mm > 0 and resolution > 0 and unit_mm:
        return focal_mm * resolution / unit_mm
    return None


def image_name(path: Path, root: Path) -> str:
    """A query's name in results files: its path relative to ``root`` when it lies below it, else
    its absolute path, so that ``a/x.jpg`` and ``b/x.jpg`` stay two queries."""
    path, root = path.resolve(), root.resolve()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()


def exif_number(path: Path, exif, tag: int) -> float:
    """An EXIF value as a finite number (0 when absent); text or NaN is an error naming the file."""
    value = exif.get(tag, 0) or 0
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise DatasetError(
            f"{path}: EXIF tag {tag} holds {value!r}, not a focal number; pass --focal PIXELS or --camera FILE"
        )
    return number


def list_images(paths: list[Path], root: Path) -> list[tuple[str, Path]]:
    """(name, path) for image files and the images inside folders, in the order given (folders
    sorted); names by :func:`image_name`. The same image given twice is an error."""
    found: dict[str, Path] = {}
    for path in paths:
        if path.is_dir():
            files = [p for p in sorted(path.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
        elif path.is_file():
            files = [path]
        else:
            raise DatasetError(f"{path}: no such image file or folder")
        for file in files:
            name = image_name(file, root)
            if name in found:
                raise DatasetError(f"{file}: given twice (also as {found[name]}); each query image once")
            found[name] = file
    if not found:
        raise DatasetError(f"{', '.join(map(str, paths))}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return list(found.items())


class ImageFolder(Dataset):
    """Query images without poses. ``root`` may be a folder, or ``images`` a list of paths."""

    kind = "folder"
    scored = False

    def __init__(
        self,
        root: str | Path,
        focal: float | None = None,
        camera_file: str | Path | None = None,
        images: list[str | Path] | None = None,
    ):
        super().__init__(root)
        if focal is not None and not (math.isfinite(focal) and focal > 0):
            raise DatasetError(f"--focal must be a positive, finite number of pixels, got {focal}")
        self.focal = focal
        self.cameras = read_camera_file(Path(camera_file)) if camera_file is not None else None
        self.camera_file = camera_file
        self.images = [Path(p) for p in images] if images is not None else [self.root]

    def camera_for(self, name: str, path: Path) -> Camera:
        width, height = image_size(path)
        if self.focal is not None:
            return Camera.simple_pinhole(width, height, self.focal)
        if isinstance(self.cameras, Camera):
            camera = self.cameras
        elif isinstance(self.cameras, dict):
            camera = self.cameras.get(name) or self.cameras.get(path.name)
            if camera is None:
                raise DatasetError(f"{path}: no line for {name!r} in camera file {self.camera_file}")
        else:
            focal = exif_focal_pixels(path)
            if focal is None:
                raise DatasetError(
                    f"{path}: intrinsics unknown: no EXIF focal length; pass --focal PIXELS or --camera FILE"
                )
            return Camera.simple_pinhole(width, height, focal)
        if (camera.width, camera.height) != (width, height):
            raise DatasetError(f"{path}: image is {width}x{height} but its camera is {camera.width}x{camera.height}")
        return camera

    def frames(self, split: str) -> list[Frame]:
        self._check_split(split)
        if split == "train":
            raise DatasetError(f"{self.root}: an image folder holds unposed queries only; it has no mapping split")
        return [Frame(name, path, self.camera_for(name, path)) for name, path in list_images(self.images, self.root)]
