"""The viewer window: the map scene on the left, a panel on the right.

Panel: a checkbox per layer, point size, the queries sorted by error (worst first; selecting one
flies the view to it and shows its inlier matches), a screenshot button. Built on
``open3d.visualization.gui`` with the same layers and materials as the headless renderer.
"""

from __future__ import annotations

import datetime
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
from open3d.visualization import gui, rendering

from reloc.errors import RelocError
from reloc.viz.geometry import BACKGROUND, automatic_view, build_layers, frustum_depth
from reloc.viz.matches import figure_to_array, matches_figure
from reloc.viz.render import add_layers, material
from reloc.viz.scene import MapScene, QueryView

PANEL_WIDTH_EM = 22
FLIGHT_SECONDS = 0.6
LINE_WIDTH = 2.0


@dataclass
class Flight:
    """A camera move from (eye, target, up) to another over ``FLIGHT_SECONDS``."""

    start: tuple[np.ndarray, np.ndarray, np.ndarray]
    end: tuple[np.ndarray, np.ndarray, np.ndarray]
    started: float

    def at(self, now: float) -> tuple[tuple[np.ndarray, ...], bool]:
        """(eye, target, up) at ``now`` (smooth-step in time) and whether the flight is over."""
        fraction = min(1.0, (now - self.started) / FLIGHT_SECONDS)
        weight = fraction * fraction * (3 - 2 * fraction)
        return tuple((1 - weight) * a + weight * b for a, b in zip(self.start, self.end)), fraction >= 1.0


class ViewerWindow:
    def __init__(
        self,
        scene: MapScene,
        width: int,
        height: int,
        point_size: float,
        screenshot_dir: Path,
        quit_after_s: float | None = None,
    ):
        self.scene = scene
        self.quit_after_s = quit_after_s
        self.first_frame_at: float | None = None
        self.layers = build_layers(scene)
        self.point_size = point_size
        self.screenshot_dir = screenshot_dir
        self.queries = scene.sorted_queries()
        self.flight: Flight | None = None
        self.selected_label = None  # 3D label at the selected query's camera
        self.frames_drawn = 0
        self.window = gui.Application.instance.create_window(f"reloc view — {scene.map_dir}", width, height)
        em = self.window.theme.font_size
        self.widget = gui.SceneWidget()
        self.widget.scene = rendering.Open3DScene(self.window.renderer)
        self.widget.scene.set_background([*BACKGROUND, 1.0])
        self.widget.scene.show_axes(False)
        self.widget.scene.view.set_post_processing(False)
        add_layers(self.widget.scene, self.layers, point_size, LINE_WIDTH)
        self.panel = self._build_panel(em)
        self.window.add_child(self.widget)
        self.window.add_child(self.panel)
        self.window.set_on_layout(self._on_layout)
        self.window.set_on_tick_event(self.on_tick)
        self._frame_map(width - PANEL_WIDTH_EM * em, height)

    def _build_panel(self, em: float) -> gui.Vert:
        panel = gui.Vert(0.4 * em, gui.Margins(0.6 * em, 0.6 * em, 0.6 * em, 0.6 * em))
        panel.add_child(
            gui.Label(
                f"{len(self.scene.keyframes)} mapping images, "
                f"{np.isfinite(self.scene.points).all(axis=1).sum()} landmarks"
            )
        )
        panel.add_child(gui.Label("Layers"))
        for layer in self.layers:
            checkbox = gui.Checkbox(layer.name)
            checkbox.checked = True
            checkbox.set_on_checked(lambda checked, name=layer.name: self.widget.scene.show_geometry(name, checked))
            panel.add_child(checkbox)
        size_row = gui.Horiz(0.4 * em)
        size_row.add_child(gui.Label("point size"))
        slider = gui.Slider(gui.Slider.INT)
        slider.set_limits(1, 12)
        slider.int_value = int(self.point_size)
        slider.set_on_value_changed(self.set_point_size)
        size_row.add_child(slider)
        panel.add_child(size_row)
        panel.add_child(gui.Label(f"Queries ({len(self.queries)}), worst first"))
        self.query_list = gui.ListView()
        self.query_list.set_items([q.label() for q in self.queries] or ["(no results loaded: --results)"])
        self.query_list.set_max_visible_items(12)
        self.query_list.set_on_selection_changed(lambda value, double_click: self.select(self._query_index(value)))
        panel.add_child(self.query_list)
        self.query_label = gui.Label("select a query to fly to it")
        panel.add_child(self.query_label)
        self.matches_image = gui.ImageWidget()
        self.matches_image.visible = False  # until a query is selected (empty, it shows an error box)
        panel.add_child(self.matches_image)
        button = gui.Button("Screenshot")
        button.set_on_clicked(self.take_screenshot)
        panel.add_child(button)
        self.status = gui.Label("")
        panel.add_child(self.status)
        return panel

    def _on_layout(self, context) -> None:
        frame = self.window.content_rect
        width = PANEL_WIDTH_EM * self.window.theme.font_size
        self.widget.frame = gui.Rect(frame.x, frame.y, frame.width - width, frame.height)
        self.panel.frame = gui.Rect(frame.get_right() - width, frame.y, width, frame.height)

    def _frame_map(self, width: int, height: int) -> None:
        view = automatic_view(self.scene, max(int(width), 1), max(int(height), 1))
        bounds = self.widget.scene.bounding_box
        self.widget.setup_camera(view.K, view.pose.matrix, view.width, view.height, bounds)
        self.widget.center_of_rotation = self.scene.focus()[0]

    def _query_index(self, label: str) -> int:
        return next((i for i, q in enumerate(self.queries) if q.label() == label), -1)

    def set_point_size(self, value: float) -> None:
        self.point_size = float(value)
        for layer in self.layers:
            if layer.kind == "points":
                self.widget.scene.modify_geometry_material(layer.name, material(layer, self.point_size, LINE_WIDTH))

    def select(self, index: int) -> None:
        """Fly to query ``index`` of the sorted list and show its inlier matches."""
        if not 0 <= index < len(self.queries):
            return
        query = self.queries[index]
        self.query_label.text = query_summary(query)
        self._show_matches(query)  # reads two images: before the flight starts, so that it is seen whole
        pose = query.estimate or query.ground_truth
        if self.selected_label is not None:
            self.widget.remove_3d_label(self.selected_label)
            self.selected_label = None
        if pose is not None:
            self.selected_label = self.widget.add_3d_label(pose.center, query.name)
            self.flight = Flight(
                self._current_view(), viewpoint_behind(pose, frustum_depth(self.scene)), time.monotonic()
            )
        self.window.post_redraw()

    def _show_matches(self, query: QueryView) -> None:
        try:
            figure = matches_figure(self.scene, query, height=240)
        except RelocError as error:
            self.status.text = str(error)
            return
        pixels = figure_to_array(figure)
        width = int((PANEL_WIDTH_EM - 1.2) * self.window.theme.font_size)
        pixels = cv2.resize(
            pixels, (width, max(1, round(pixels.shape[0] * width / pixels.shape[1]))), interpolation=cv2.INTER_AREA
        )
        self.matches_image.update_image(o3d.geometry.Image(np.ascontiguousarray(pixels)))
        self.matches_image.visible = True
        self.window.set_needs_layout()

    def _current_view(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(eye, target, up) of the scene camera; the target is the centre of rotation's distance ahead."""
        model = np.asarray(self.widget.scene.camera.get_model_matrix())
        eye, forward, up = model[:3, 3], -model[:3, 2], model[:3, 1]
        distance = max(float(np.linalg.norm(np.asarray(self.widget.center_of_rotation) - eye)), 1e-3)
        return eye, eye + distance * forward, up

    def on_tick(self) -> bool:
        """Per GUI tick: advance a flight; the first tick starts the ``quit_after_s`` timer."""
        self.frames_drawn += 1
        now = time.monotonic()
        if self.first_frame_at is None:
            self.first_frame_at = now
            if self.quit_after_s is not None:
                threading.Timer(self.quit_after_s, self.close_from_another_thread).start()
        if self.flight is None:
            return False
        (eye, target, up), done = self.flight.at(now)
        self.widget.look_at(target, eye, up)
        self.widget.center_of_rotation = target
        if done:
            self.flight = None
        return True

    def close_from_another_thread(self) -> None:
        """Closing the window inside a GUI callback crashes Open3D 0.19; post it to the main loop."""
        gui.Application.instance.post_to_main_thread(self.window, self.window.close)

    def take_screenshot(self) -> None:
        path = self.screenshot_dir / f"reloc-view-{datetime.datetime.now():%Y%m%d-%H%M%S}.png"

        def save(image) -> None:
            o3d.io.write_image(str(path), image)
            gui.Application.instance.post_to_main_thread(
                self.window, lambda: setattr(self.status, "text", f"saved {path}")
            )

        self.widget.scene.scene.render_to_image(save)


def viewpoint_behind(pose, depth: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(eye, target, up) a few frustum depths behind and above a camera, looking where it looks."""
    rotation_t = pose.R.T
    forward, up = rotation_t[:, 2], -rotation_t[:, 1]
    eye = pose.center - 6 * depth * forward + 2 * depth * up
    return eye, pose.center + 4 * depth * forward, up


def query_summary(query: QueryView) -> str:
    lines = [query.name]
    if query.failed:
        lines.append(f"failed: {query.reason}")
    elif np.isfinite(query.t_cm):
        lines.append(f"error {query.t_cm:.2f} cm, {query.r_deg:.3f} deg")
    lines.append(f"{len(query.inlier_landmarks)} PnP inliers")
    return "\n".join(lines)


def require_display() -> None:
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        raise RelocError(
            "no display to open a window on (DISPLAY is not set); run under a desktop or Xvfb, "
            "or render headless with --screenshot OUT.png"
        )


def run_viewer(
    scene: MapScene,
    width: int,
    height: int,
    point_size: float,
    screenshot_dir: Path,
    select: str | None = None,
    quit_after_s: float | None = None,
) -> ViewerWindow:
    """Open the window and run the GUI loop until it is closed (or ``quit_after_s`` seconds after
    the first frame, for smoke tests). ``select`` names a query to select at start."""
    require_display()
    application = gui.Application.instance
    application.initialize()
    viewer = ViewerWindow(scene, width, height, point_size, screenshot_dir, quit_after_s)
    if select is not None:
        index = next((i for i, q in enumerate(viewer.queries) if q.name == select), None)
        if index is None:
            raise RelocError(f"query {select!r} is not in the results")
        viewer.select(index)
    application.run()
    return viewer
