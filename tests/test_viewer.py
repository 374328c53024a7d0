"""The viewer: landmark colours, scene loading, headless screenshots checked against projections,
the GUI under Xvfb (subprocess, timeout, retries), and the figures `reloc eval` writes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pycolmap
import pytest
from PIL import Image, ImageGrab
from scipy.ndimage import binary_dilation
from typer.testing import CliRunner

from reloc.cli import app
from reloc.datasets import load_dataset
from reloc.datasets.base import read_image
from reloc.datasets.synthetic.generate import SynthConfig, generate
from reloc.eval.metrics import QueryError
from reloc.eval.plots import cumulative_errors, worst_queries
from reloc.io.results import read_results, write_results
from reloc.mapping.store import read_sparse_map
from reloc.types import QueryResult
from reloc.viz.geometry import (
    ESTIMATE_COLOR,
    FAILED_COLOR,
    GROUND_TRUTH_COLOR,
    MAPPING_COLOR,
    frustum_corners,
    frustum_depth,
)
from reloc.viz.render import load_view
from reloc.viz.scene import load_scene

pytestmark = pytest.mark.slow

RELOC = str(Path(sys.executable).with_name("reloc"))
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
FAILED_QUERY = "seq-03/frame-000002.color.png"


@pytest.fixture(scope="module")
def run(module_folder) -> Path:
    """`reloc eval` of the default config on a small synthetic 7-Scenes scene; then a copy of its
    results in which one query is reported failed (results_failed.txt)."""
    root = module_folder
    generate(
        SynthConfig("7scenes", seed=5, mapping_frames=40, query_frames=6, mapping_sequences=2, query_sequences=1),
        root / "scene",
    )
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--config",
            str(CONFIG),
            "--dataset",
            "7scenes",
            "--root",
            str(root / "scene"),
            "--out",
            str(root / "run"),
        ],
    )
    assert result.exit_code == 0, result.output
    results = read_results(root / "run" / "results.txt")
    assert FAILED_QUERY in results
    results[FAILED_QUERY] = QueryResult(
        FAILED_QUERY, None, "too few inliers (3 < 20)", record=results[FAILED_QUERY].record
    )
    write_results(root / "run" / "results_failed.txt", list(results.values()))
    return root


def test_landmark_colours_come_from_the_images(run):
    """Each landmark's colour is its images' colour at its observations: compared with the pixel
    under observations (landmarks.h5), read here from the image file."""
    reconstruction = pycolmap.Reconstruction(str(run / "run" / "map" / "sfm"))
    sparse_map = read_sparse_map(run / "run" / "map")
    differences = []
    for name in list(sparse_map.cameras)[::4]:
        keypoints, ids = sparse_map.located_observations(name)
        pixels = read_image(run / "scene" / name)
        for (x, y), landmark in list(zip(keypoints, ids))[::100]:
            color = reconstruction.point3D(int(landmark) + 1).color
            differences.append(np.abs(pixels[int(y), int(x)].astype(int) - color.astype(int)).max())
    assert len(differences) > 40
    assert np.median(differences) < 25 and np.mean(np.array(differences) < 60) > 0.8, np.percentile(
        differences, [50, 90]
    )


def test_scene_has_queries_with_ground_truth_inliers_and_failures(run):
    scene = load_scene(run / "run" / "map", run / "run" / "results_failed.txt")
    truth = load_dataset("7scenes", run / "scene").ground_truth()
    assert len(scene.queries) == 6 and len(scene.keyframes) > 10
    by_name = {q.name: q for q in scene.queries}
    failed = by_name[FAILED_QUERY]
    assert failed.failed and failed.t_cm == np.inf and failed.reason.startswith("too few inliers")
    assert scene.sorted_queries()[0].name == FAILED_QUERY
    for query in scene.queries:
        assert np.allclose(query.ground_truth.matrix, truth[query.name].pose.matrix, atol=1e-6)
        assert query.image_path == (run / "scene" / query.name).resolve() and query.camera.width == 640
        if not query.failed:
            in_camera = query.estimate.transform(scene.points[query.inlier_landmarks])
            reprojection = np.linalg.norm(query.camera.project(in_camera) - query.inlier_points2d, axis=1)
            assert len(reprojection) >= 20 and np.median(reprojection) < 2.0, (query.name, np.median(reprojection))
            assert scene.best_keyframe(query) is not None


def test_view_reports_a_folder_that_is_not_a_map(tmp_path):
    result = CliRunner().invoke(app, ["view", str(tmp_path), "--screenshot", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and "not a reloc map folder" in result.output and str(tmp_path) in result.output


def test_gui_without_a_display_says_so(run):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    completed = subprocess.run(
        [RELOC, "view", str(run / "run" / "map")], env=env, capture_output=True, text=True, timeout=120
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 2 and "no display" in output and "--screenshot" in output, output


def near_color(image: np.ndarray, pixels: np.ndarray, colors, radius: int = 1, tolerance: int = 12) -> np.ndarray:
    """(N,) whether any pixel within ``radius`` of each (x, y) (COLMAP) has one of ``colors`` (RGB in [0, 1])."""
    height, width = image.shape[:2]
    targets = np.round(np.asarray(colors, np.float64).reshape(-1, 3) * 255).astype(int)
    found = np.zeros(len(pixels), bool)
    columns, rows = np.floor(pixels).astype(int).T
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            sample = image[np.clip(rows + dy, 0, height - 1), np.clip(columns + dx, 0, width - 1)].astype(int)
            found |= (np.abs(sample[:, None] - targets[None]).max(axis=2) <= tolerance).any(axis=1)
    return found


def count_color(image: np.ndarray, color, tolerance: int = 6) -> int:
    return int((np.abs(image.astype(int) - np.round(np.asarray(color) * 255)).max(axis=2) <= tolerance).sum())


def edge_samples(corners: np.ndarray) -> np.ndarray:
    """(E * 5, 3) points along the 8 edges of each frustum (corners (F, 5, 3)), away from the ends."""
    edges = np.array([[0, 1], [0, 2], [0, 3], [0, 4], [1, 2], [2, 3], [3, 4], [4, 1]])
    weights = np.linspace(0.3, 0.7, 5)[:, None]
    return np.concatenate([(1 - weights) * c[a] + weights * c[b] for c in corners for a, b in edges])


def visible(view, points: np.ndarray, margin: int = 3) -> tuple[np.ndarray, np.ndarray]:
    pixels, depth = view.project(points)
    inside = (depth > 0) & (pixels[:, 0] > margin) & (pixels[:, 1] > margin)
    inside &= (pixels[:, 0] < view.width - margin) & (pixels[:, 1] < view.height - margin)
    return pixels[inside], inside


def test_headless_screenshot_draws_landmarks_and_frustums_where_they_project(run, tmp_path):
    """`reloc view --screenshot` (Open3D OffscreenRenderer, no display): pixels at the projections of
    landmarks show their colour, frustum edges show their layer's colour, a failed query is red,
    and pixels far from every projection are background."""
    out = tmp_path / "shot.png"
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    completed = subprocess.run(
        [
            RELOC,
            "view",
            str(run / "run" / "map"),
            "--results",
            str(run / "run" / "results_failed.txt"),
            "--screenshot",
            str(out),
            "--width",
            "800",
            "--height",
            "600",
            "--point-size",
            "3",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    image = np.asarray(Image.open(out).convert("RGB"))
    view = load_view(out.with_suffix(".view.json"))
    assert image.shape == (600, 800, 3)
    scene = load_scene(run / "run" / "map", run / "run" / "results_failed.txt")
    depth = frustum_depth(scene)

    landmark_pixels, inside = visible(view, scene.points)
    assert len(landmark_pixels) > 0.8 * len(scene.points)
    on_landmark = near_color(image, landmark_pixels, np.array([[1.0, 1.0, 1.0]]), radius=0, tolerance=3)
    assert np.mean(~on_landmark) > 0.95, "landmarks should cover their projections"
    own_colour = np.array(
        [
            near_color(image, p[None], c[None], radius=1, tolerance=20)[0]
            for p, c in zip(landmark_pixels[::10], scene.colors[inside][::10])
        ]
    )
    assert np.mean(own_colour) > 0.6, np.mean(own_colour)

    mapping = np.stack([frustum_corners(k.camera, k.pose, depth) for k in scene.keyframes])
    mapping_pixels, _ = visible(view, edge_samples(mapping))
    assert np.mean(near_color(image, mapping_pixels, [MAPPING_COLOR], radius=2)) > 0.7
    localized = [q for q in scene.queries if not q.failed]
    query_pixels, _ = visible(
        view, edge_samples(np.stack([frustum_corners(q.camera, q.estimate, depth) for q in localized]))
    )
    assert np.mean(near_color(image, query_pixels, [ESTIMATE_COLOR, GROUND_TRUTH_COLOR], radius=2)) > 0.7
    failed = next(q for q in scene.queries if q.failed)
    failed_pixels, _ = visible(view, edge_samples(frustum_corners(failed.camera, failed.ground_truth, depth)[None]))
    assert np.mean(near_color(image, failed_pixels, [FAILED_COLOR], radius=2)) > 0.7

    drawn = np.zeros(image.shape[:2], bool)
    everything = [landmark_pixels, mapping_pixels, query_pixels, failed_pixels]
    corners = [visible(view, c.reshape(-1, 3))[0] for c in (mapping,)]
    for pixels in everything + corners:
        columns, rows = np.floor(pixels).astype(int).T
        drawn[rows, columns] = True
    near_anything = binary_dilation(drawn, iterations=40)
    background = np.abs(image.astype(int) - 255).max(axis=2) <= 3
    assert background[~near_anything].mean() > 0.99
    assert background.mean() > 0.5


def start_xvfb() -> tuple[subprocess.Popen, str]:
    """Xvfb on a display number it picks itself (free), and that display's name."""
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", "1", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    return xvfb, f":{xvfb.stdout.readline().strip()}"


def grab_screen(display: str) -> np.ndarray | None:
    try:
        return np.asarray(ImageGrab.grab(xdisplay=display).convert("RGB"))
    except OSError:
        return None


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed (Debian package xvfb)")
def test_gui_starts_under_xvfb_shows_the_map_and_exits(run):
    """The Open3D GUI in a subprocess on a private Xvfb display: it opens, draws the map (mapping
    frustum colour on screen), selects the worst query and closes itself. Its first frame can hang
    now and then, so each attempt has a timeout and the test retries."""
    attempts = []
    for _ in range(3):
        xvfb, display = start_xvfb()
        viewer = None
        try:
            env = {**os.environ, "DISPLAY": display}
            viewer = subprocess.Popen(
                [
                    RELOC,
                    "view",
                    str(run / "run" / "map"),
                    "--results",
                    str(run / "run" / "results_failed.txt"),
                    "--query",
                    FAILED_QUERY,
                    "--width",
                    "1200",
                    "--height",
                    "760",
                    "--quit-after",
                    "6",
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            saw_map, deadline = False, time.monotonic() + 60
            while viewer.poll() is None and time.monotonic() < deadline and not saw_map:
                screen = grab_screen(display)
                saw_map = screen is not None and count_color(screen, MAPPING_COLOR) > 200
                time.sleep(0.5)
            output, _ = viewer.communicate(timeout=60)
            attempts.append((viewer.returncode, saw_map, output[-2000:]))
            if viewer.returncode == 0 and saw_map:
                assert "viewer closed after" in output
                return
        except subprocess.TimeoutExpired:
            viewer.kill()
            attempts.append(("timeout", False, ""))
        finally:
            if viewer is not None and viewer.poll() is None:
                viewer.kill()
            xvfb.kill()
            xvfb.wait()
    pytest.fail(f"the viewer never drew the map and exited cleanly: {attempts}")


def test_eval_writes_figures_linked_from_the_report(run):
    report = (run / "run" / "report.md").read_text()
    for name in ("cumulative_errors.png", "per_query_errors.png", "worst_1_matches.png", "worst_4_matches.png"):
        assert f"](plots/{name})" in report
        with Image.open(run / "run" / "plots" / name) as image:
            assert image.width > 300 and image.height > 200
    truth = read_results(run / "run" / "ground_truth.txt")
    expected = load_dataset("7scenes", run / "scene").ground_truth()
    assert set(truth) == set(expected)
    assert all(np.allclose(truth[n].pose.matrix, expected[n].pose.matrix, atol=1e-6) for n in truth)


def test_cumulative_curve_tops_out_at_the_localized_fraction():
    errors = [
        QueryError("a", 1.0, 0.1),
        QueryError("b", 3.0, 0.5),
        QueryError("c", 30.0, 2.0),
        QueryError("d", np.inf, np.inf, "failed"),
    ]
    figure = cumulative_errors(errors)
    translation, rotation = (axes.lines[0] for axes in figure.axes)
    assert translation.get_ydata()[-1] == pytest.approx(0.75) and translation.get_ydata()[0] == 0
    assert list(translation.get_xdata()[1:]) == [1.0, 3.0, 30.0]
    assert list(rotation.get_xdata()[1:]) == [0.1, 0.5, 2.0]
    assert worst_queries(errors, 2) == ["d", "c"]
