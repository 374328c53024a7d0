"""Render a map scene without a display: Open3D's ``OffscreenRenderer`` (Filament; headless on
Debian's ``mesa-vulkan-drivers``). The same layers and materials as the viewer app."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from open3d.visualization import rendering

from ..types import Pose
from .geometry import BACKGROUND, Layer, ViewCamera


def material(layer: Layer, point_size: float, line_width: float) -> rendering.MaterialRecord:
    """Unlit colours, so a pixel shows its geometry's colour exactly (points: ``point_size`` px)."""
    record = rendering.MaterialRecord()
    if layer.kind == "points":
        record.shader = "defaultUnlit"
        record.point_size = point_size
    else:
        record.shader = "unlitLine"
        record.line_width = line_width
    return record


def add_layers(scene: rendering.Open3DScene, layers: list[Layer], point_size: float, line_width: float) -> None:
    for layer in layers:
        scene.add_geometry(layer.name, layer.geometry, material(layer, point_size, line_width))


def render_image(layers: list[Layer], view: ViewCamera, point_size: float = 3.0, line_width: float = 2.0) -> np.ndarray:
    """(H, W, 3) uint8 RGB of ``layers`` seen by ``view``, on a white background, no tone mapping."""
    renderer = rendering.OffscreenRenderer(view.width, view.height)
    renderer.scene.set_background([*BACKGROUND, 1.0])
    renderer.scene.view.set_post_processing(False)
    renderer.scene.show_axes(False)
    add_layers(renderer.scene, layers, point_size, line_width)
    renderer.setup_camera(view.K, view.pose.matrix, view.width, view.height)
    return np.asarray(renderer.render_to_image()).copy()


def save_view(view: ViewCamera, path: Path) -> None:
    """The view camera as JSON: width, height, K (3x3) and cam_from_world (4x4), COLMAP convention."""
    path.write_text(
        json.dumps(
            {
                "width": view.width,
                "height": view.height,
                "K": view.K.tolist(),
                "cam_from_world": view.pose.matrix.tolist(),
            },
            indent=1,
        )
    )


def load_view(path: Path) -> ViewCamera:
    content = json.loads(Path(path).read_text())
    return ViewCamera(
        np.array(content["K"]),
        Pose.from_matrix(content["cam_from_world"]),
        int(content["width"]),
        int(content["height"]),
    )
