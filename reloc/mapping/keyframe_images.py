"""Mapping stage ``mapping.keyframe_images``: resized copies of the keyframe images in the map, so
that a map localizes with image matchers (``pose.semidense_pnp``) without its dataset."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2

from ..datasets.base import read_image
from ..io.map_folder import KEYFRAME_IMAGES
from ..pipeline.items import map_items
from ..pipeline.registry import Stage, register_stage
from ..types import Frame


@dataclass
class KeyframeImagesConfig:
    resize_max: int = 640  # long side of the stored copies (the matcher's input size)
    jpeg_quality: int = 95


def keyframe_image_path(map_dir: Path, name: str) -> Path:
    return map_dir / KEYFRAME_IMAGES / (name.replace("/", "__") + ".jpg")


@register_stage
class KeyframeImages(Stage):
    """Resized copies of the keyframe images in the map (``keyframe_images/``), so that a map
    localizes with image matchers without its dataset."""

    name = "mapping.keyframe_images"
    Config = KeyframeImagesConfig
    inputs = {"keyframes": list[Frame], "map_dir": Path}
    outputs = {"folder": Path}

    def run(self, keyframes: list[Frame], map_dir: Path) -> dict:
        folder = map_dir / KEYFRAME_IMAGES
        folder.mkdir(parents=True, exist_ok=True)
        work = functools.partial(encode_keyframes, self.config)
        for frame, jpeg in zip(keyframes, map_items(work, keyframes, f"storing {len(keyframes)} keyframe images")):
            keyframe_image_path(map_dir, frame.name).write_bytes(jpeg)
        return {"folder": folder}


def encode_keyframes(config: KeyframeImagesConfig, frames: list[Frame]) -> list[bytes]:
    """Each frame's image, resized to ``config.resize_max`` on its long side, as JPEG bytes."""
    encoded = []
    for frame in frames:
        image = read_image(frame.image_path)
        factor = min(1.0, config.resize_max / max(image.shape[:2]))
        if factor < 1:
            image = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        quality = [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality]
        encoded.append(cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), quality)[1].tobytes())
    return encoded
