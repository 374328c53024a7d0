"""The viewer on a real Strecha map: README screenshots and what it costs.

    python benchmarks/viewer.py --strecha ../shared/data/strecha --scene castle-P19 --config configs/favor.yaml \
        --out runs/viewer --images docs/images

Runs `reloc eval` (map reused when current), then measures loading the scene, building its
layers and rendering it headless (`reloc view --screenshot`, peak memory of that process), and
starts the GUI on a private Xvfb display with the worst query selected: seconds until the map is on
screen, and a screenshot of the window. Needs Debian's xvfb for the GUI part.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageGrab

from reloc.viz.geometry import MAPPING_COLOR, automatic_view, build_layers
from reloc.viz.render import render_image
from reloc.viz.scene import load_scene

RELOC = str(Path(sys.executable).with_name("reloc"))
PEAK_MEMORY_OF = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)  # kB, that command alone


def seconds(function, *args):
    start = time.perf_counter()
    value = function(*args)
    return value, time.perf_counter() - start


def headless(run: Path, out: Path, width: int, height: int) -> dict:
    """Load, layers, render in this process; then the CLI in a subprocess for its peak memory."""
    scene, load_s = seconds(load_scene, run / "map", run / "results.txt")
    layers, layers_s = seconds(build_layers, scene)
    view = automatic_view(scene, width, height)
    _, first_render_s = seconds(render_image, layers, view)
    _, second_render_s = seconds(render_image, layers, view)
    command = [
        RELOC,
        "view",
        str(run / "map"),
        "--results",
        str(run / "results.txt"),
        "--screenshot",
        str(out),
        "--width",
        str(width),
        "--height",
        str(height),
    ]
    start = time.perf_counter()
    peak_kb = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY_OF, *command], check=True, capture_output=True, text=True
    ).stdout
    command_s = time.perf_counter() - start
    peak_mb = int(peak_kb.strip().splitlines()[-1]) / 1024
    worst = scene.sorted_queries()[0].name if scene.queries else None
    return {
        "landmarks": int(np.isfinite(scene.points).all(axis=1).sum()),
        "keyframes": len(scene.keyframes),
        "queries": len(scene.queries),
        "voxels": 0 if scene.voxels is None else len(scene.voxels.centres),
        "load_s": load_s,
        "layers_s": layers_s,
        "first_render_s": first_render_s,
        "render_s": second_render_s,
        "command_s": command_s,
        "peak_mb": peak_mb,
        "worst": worst,
    }


def window_region(screen: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box of everything that is not the black Xvfb root."""
    rows, columns = np.nonzero(screen.max(axis=2) > 0)
    return columns.min(), rows.min(), columns.max() + 1, rows.max() + 1


def gui(run: Path, out: Path, query: str | None, width: int, height: int) -> dict:
    """Start the viewer on Xvfb; seconds until the mapping frustums are on screen; window screenshot
    after the flight to the selected query."""
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", "1", "-screen", "0", f"{width + 200}x{height + 200}x24", "-nolisten", "tcp"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    display = f":{xvfb.stdout.readline().strip()}"
    try:
        start = time.perf_counter()
        command = [
            RELOC,
            "view",
            str(run / "map"),
            "--results",
            str(run / "results.txt"),
            "--width",
            str(width),
            "--height",
            str(height),
            "--quit-after",
            "12",
        ] + (["--query", query] if query else [])
        viewer = subprocess.Popen(
            command, env={**os.environ, "DISPLAY": display}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        on_screen_s = None
        while viewer.poll() is None and time.perf_counter() - start < 60:
            screen = np.asarray(ImageGrab.grab(xdisplay=display).convert("RGB"))
            if (np.abs(screen.astype(int) - np.round(np.array(MAPPING_COLOR) * 255)).max(axis=2) <= 6).sum() > 200:
                on_screen_s = time.perf_counter() - start
                break
            time.sleep(0.2)
        time.sleep(3.0)
        screen = np.asarray(ImageGrab.grab(xdisplay=display).convert("RGB"))
        left, top, right, bottom = window_region(screen)
        Image.fromarray(screen[top:bottom, left:right]).save(out)
        output, _ = viewer.communicate(timeout=60)
        return {
            "on_screen_s": on_screen_s,
            "returncode": viewer.returncode,
            "last_line": output.strip().splitlines()[-1],
        }
    finally:
        xvfb.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strecha", type=Path, help="Strecha folder (Cambridge layout scenes)")
    parser.add_argument("--scene", default="castle-P19")
    parser.add_argument(
        "--run", type=Path, help="Measure this existing 'reloc eval' run folder instead (no eval, no screenshots kept)"
    )
    parser.add_argument("--config", type=Path, default=Path("configs/favor.yaml"))
    parser.add_argument("--out", type=Path, default=Path("runs/viewer"))
    parser.add_argument("--images", type=Path, default=Path("docs/images"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    args = parser.parse_args()
    if args.run is not None:
        run, name, images = args.run, args.run.name, args.out
    else:
        run, name, images = args.out / args.scene, args.scene, args.images
        subprocess.run(
            [
                RELOC,
                "eval",
                "--config",
                str(args.config),
                "--dataset",
                "cambridge",
                "--root",
                str(args.strecha / args.scene),
                "--out",
                str(run),
            ],
            check=True,
        )
    images.mkdir(parents=True, exist_ok=True)
    figures = headless(run, images / f"viewer-{name}-headless.png", args.width, args.height)
    print(
        "| map | landmarks | mapping cameras | queries | FaVoR voxels | load s | layers s | first render s | render s "
        "| `reloc view --screenshot` s | its peak MB |"
    )
    print(
        f"| {name} | {figures['landmarks']} | {figures['keyframes']} | {figures['queries']} | {figures['voxels']} "
        f"| {figures['load_s']:.2f} | {figures['layers_s']:.2f} | {figures['first_render_s']:.2f} | "
        f"{figures['render_s']:.2f} "
        f"| {figures['command_s']:.1f} | {figures['peak_mb']:.0f} |"
    )
    if shutil.which("Xvfb") is None:
        print("Xvfb is not installed: no GUI measurement")
        return
    shown = gui(run, images / f"viewer-{name}-gui.png", figures["worst"], args.width, args.height)
    print(f"GUI: map on screen after {shown['on_screen_s']} s; exit code {shown['returncode']}; {shown['last_line']}")


if __name__ == "__main__":
    main()
