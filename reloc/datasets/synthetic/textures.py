"""Textures for synthetic scenes, made from real photographs that ship inside scikit-image.

Each material is a square float32 RGB image in [0, 1]: tinted crops of several photographs blended
through soft random regions, plus a fine detail layer, so that no two walls look alike. Only the
ground material repeats; it is made seamless.
Photographs are read by file path from the installed package (no import, no download).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ...errors import DatasetError

SURFACE_PHOTOS = (
    "brick.png",
    "gravel.png",
    "grass.png",
    "coffee.png",
    "chelsea.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "astronaut.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "retina.jpg",
    "moon.png",
)
DETAIL_PHOTOS = ("gravel.png", "brick.png", "grass.png")
POSTER_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "camera.png")
TEXTURE_SIZE = 1024


def photo_folder() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise DatasetError("scikit-image is not installed; its bundled photographs texture the synthetic scenes")
    return Path(spec.origin).parent / "data"


def load_photo(name: str) -> np.ndarray:
    """RGB float32 (H, W, 3) in [0, 1]; grey photographs are replicated to three channels."""
    path = photo_folder() / name
    if not path.is_file():
        raise DatasetError(f"{path}: bundled photograph missing from the scikit-image installation")
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def random_crop(photo: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """A square crop covering 40-90% of the shorter side, turned by a random multiple of 90
    degrees and possibly mirrored (so crops of one photograph differ), resized to size x size."""
    height, width = photo.shape[:2]
    side = int(min(height, width) * rng.uniform(0.4, 0.9))
    y, x = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
    crop = np.rot90(photo[y : y + side, x : x + side], int(rng.integers(4)))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_AREA)


def smooth_field(rng: np.random.Generator, size: int, cells: int = 4) -> np.ndarray:
    """Low-frequency random field (size, size) float32."""
    coarse = rng.normal(0, 1, (cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def surface_texture(photos: dict[str, np.ndarray], rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """(size, size, 3) float32 in [0, 1]: four tinted photograph crops blended through soft random
    regions (mixed at half resolution: the bundled photographs have no finer detail), plus a fine
    detail layer at full resolution (a photograph tiled at four times the frequency)."""
    half = size // 2
    names = rng.choice(SURFACE_PHOTOS, size=4, replace=False)  # distinct photographs per surface
    layers = np.stack([random_crop(photos[n], rng, half) * rng.uniform(0.7, 1.2, 3).astype(np.float32) for n in names])
    logits = np.stack([smooth_field(rng, half) for _ in names]) * 3.0
    weights = np.exp(logits - logits.max(axis=0))
    weights /= weights.sum(axis=0)
    mosaic = cv2.resize((layers * weights[..., None]).sum(axis=0), (size, size), interpolation=cv2.INTER_LINEAR)
    detail = np.tile(make_seamless(random_crop(photos[rng.choice(DETAIL_PHOTOS)], rng, size // 4)), (4, 4, 1))
    detail_weight = rng.uniform(0.1, 0.25)
    return (mosaic * (1 - detail_weight) + detail * detail_weight).clip(0, 1)


def ground_texture(photos: dict[str, np.ndarray], rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """A seamless, tinted material photograph (gravel, brick, grass) for surfaces that repeat it."""
    tint = rng.uniform(0.7, 1.2, 3).astype(np.float32)
    return (make_seamless(random_crop(photos[rng.choice(DETAIL_PHOTOS)], rng, size)) * tint).clip(0, 1)


def make_seamless(texture: np.ndarray) -> np.ndarray:
    """Make a texture repeat without seams: along each axis in turn, blend it with itself shifted
    by half its size under a sin^2 window. The window is 0 at the borders, where the shifted copy
    (taken from the interior) is continuous across the wrap, and 1 in the middle, where the
    shifted copy has its own seam."""
    size = texture.shape[0]
    window = (np.sin(np.pi * (np.arange(size) + 0.5) / size) ** 2).astype(np.float32)
    for axis in (0, 1):
        shape = (size, 1, 1) if axis == 0 else (1, size, 1)
        weight = window.reshape(shape)
        texture = weight * texture + (1 - weight) * np.roll(texture, size // 2, axis=axis)
    return texture


def poster_texture(photos: dict[str, np.ndarray], rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """An untinted photograph crop, like a picture on a wall."""
    return random_crop(photos[rng.choice(POSTER_PHOTOS)], rng, size)


def load_photos() -> dict[str, np.ndarray]:
    return {name: load_photo(name) for name in sorted(set(SURFACE_PHOTOS) | set(POSTER_PHOTOS))}
