"""Appearance changes for query images, each a named option that is off by default."""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from ...errors import RelocError


@dataclass(frozen=True)
class Appearance:
    """Photometric changes applied in this order to an RGB image in [0, 1]."""

    exposure: float = 1.0  # intensity multiplier (< 1 darker)
    gamma: float = 1.0  # output = input ** gamma (> 1 darker mid-tones)
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per-channel gains (a colour cast)
    noise: float = 0.0  # std of Gaussian sensor noise, in [0, 1] intensity units
    motion_blur: float = 0.0  # length in pixels of a linear blur in a random direction
    jpeg_quality: int = 0  # 0 = off, else a JPEG round trip at this quality (1-100)

    @property
    def is_identity(self) -> bool:
        return self == Appearance()


PRESETS = {
    "none": Appearance(),
    "harsh": Appearance(
        exposure=0.7, gamma=2.2, white_balance=(1.15, 1.0, 0.8), noise=0.02, motion_blur=3.0, jpeg_quality=40
    ),
}


def parse_appearance(text: str) -> Appearance:
    """``harsh`` (a preset) or ``key=value,...`` e.g. ``gamma=2.2,noise=0.02,white_balance=1.1:1:0.8``."""
    if text in PRESETS:
        return PRESETS[text]
    fields = {f.name: f for f in dataclasses.fields(Appearance)}
    values = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in fields:
            raise RelocError(
                f"appearance option {key!r} is unknown; options: {', '.join(fields)}; presets: {', '.join(PRESETS)}"
            )
        try:
            if key == "white_balance":
                gains = tuple(float(v) for v in value.split(":"))
                if len(gains) != 3:
                    raise ValueError("three gains R:G:B")
                values[key] = gains
            elif key == "jpeg_quality":
                values[key] = int(value)
            else:
                values[key] = float(value)
        except ValueError as error:
            raise RelocError(f"appearance option {key}={value!r}: not a valid value ({error})") from None
    appearance = Appearance(**values)
    if not 0 <= appearance.jpeg_quality <= 100:
        raise RelocError(f"appearance option jpeg_quality={appearance.jpeg_quality}: use 1-100, or 0 for off")
    return appearance


def motion_blur_kernel(length: float, angle_rad: float) -> np.ndarray:
    size = int(np.ceil(length)) | 1
    kernel = np.zeros((size, size), np.float32)
    centre = size // 2
    direction = np.array([np.cos(angle_rad), np.sin(angle_rad)])
    for s in np.linspace(-length / 2, length / 2, 4 * size):
        x, y = np.round(centre + s * direction).astype(int)
        kernel[y, x] = 1.0
    return kernel / kernel.sum()


def apply_appearance(rgb: np.ndarray, appearance: Appearance, rng: np.random.Generator) -> np.ndarray:
    """RGB float (H, W, 3) in [0, 1] -> uint8 (H, W, 3) with the appearance changes applied."""
    image = np.clip(rgb * appearance.exposure, 0, 1) ** appearance.gamma
    image = np.clip(image * np.asarray(appearance.white_balance, np.float32), 0, 1)
    if appearance.motion_blur > 1:
        image = cv2.filter2D(
            image, -1, motion_blur_kernel(appearance.motion_blur, rng.uniform(0, np.pi)), borderType=cv2.BORDER_REFLECT
        )
    if appearance.noise > 0:
        image = image + rng.normal(0, appearance.noise, image.shape)
    image = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    if appearance.jpeg_quality > 0:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=appearance.jpeg_quality)
        image = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return image
