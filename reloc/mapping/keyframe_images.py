"""Mapping stage ``mapping.keyframe_images``: resized copies of the keyframe images in the map, so
that a map localizes with image matchers (``pose.semidense_pnp``) without its dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2

from ..datasets.base import read_image
from ..io.map_folder import KEYFRAME_IMAGES
from ..pipeline.progress import track
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
        for frame in track(keyframes, f"storing {len(keyframes)} keyframe images"):
            image = read_image(frame.image_path)
            factor = min(1.0, self.config.resize_max / max(image.shape[:2]))
            if factor < 1:
                image = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
            cv2.imwrite(
                str(keyframe_image_path(map_dir, frame.name)),
                cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality],
            )
        return {"folder": folder}
