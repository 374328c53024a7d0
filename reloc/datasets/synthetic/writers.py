"""Writers for the exact 7-Scenes and Cambridge Landmarks layouts (see the loaders' docstrings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ...types import Camera, Pose

INVALID_DEPTH_MM = 65535
CAMBRIDGE_HEADER = "Visual Landmark Dataset V1\nImageFile, Camera Position [X Y Z W P Q R]\n\n"


def save_png(path: Path, array: np.ndarray) -> None:
    """PNG with fixed settings, so that the same array always gives the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def depth_to_mm(depth_m: np.ndarray) -> np.ndarray:
    """Metres -> uint16 millimetres; no hit or beyond 65.534 m -> 65535."""
    depth_mm = np.round(np.nan_to_num(depth_m, nan=np.inf, posinf=np.inf) * 1000.0)
    invalid = ~np.isfinite(depth_mm) | (depth_mm >= INVALID_DEPTH_MM) | (depth_mm <= 0)
    return np.where(invalid, INVALID_DEPTH_MM, depth_mm).astype(np.uint16)


class SevenScenesWriter:
    """``seq-NN/frame-XXXXXX.{color.png,depth.png,pose.txt}`` and the split files."""

    def __init__(self, root: Path):
        self.root = root

    @staticmethod
    def frame_stem(sequence: int, index: int) -> str:
        return f"seq-{sequence:02d}/frame-{index:06d}"

    def write_frame(self, sequence: int, index: int, rgb: np.ndarray, depth_m: np.ndarray, pose: Pose) -> None:
        stem = self.root / self.frame_stem(sequence, index)
        save_png(stem.with_name(stem.name + ".color.png"), rgb)
        save_png(stem.with_name(stem.name + ".depth.png"), depth_to_mm(depth_m))
        cam_to_world = pose.inverse().matrix
        text = "\n".join("\t".join(f"{v: .7e}" for v in row) for row in cam_to_world)
        stem.with_name(stem.name + ".pose.txt").write_text(text + "\n")

    def write_splits(self, train: list[int], test: list[int]) -> None:
        for name, sequences in (("TrainSplit.txt", train), ("TestSplit.txt", test)):
            (self.root / name).write_text("".join(f"sequence{s}\n" for s in sequences))


class CambridgeWriter:
    """``seqN/frameXXXXX.png``, ``dataset_{train,test}.txt`` and ``reconstruction.nvm``. As in
    the real release, the NVM names images ``.jpg`` while the files are ``.png``."""

    def __init__(self, root: Path):
        self.root = root

    @staticmethod
    def image_name(sequence: int, index: int) -> str:
        return f"seq{sequence}/frame{index + 1:05d}.png"

    def write_image(self, name: str, rgb: np.ndarray) -> None:
        save_png(self.root / name, rgb)

    def write_split(self, split: str, rows: list[tuple[str, Pose]]) -> None:
        lines = [
            f"{name} {' '.join(f'{v:.6f}' for v in pose.center)} {' '.join(f'{v:.9f}' for v in pose.qvec)}"
            for name, pose in rows
        ]
        (self.root / f"dataset_{split}.txt").write_text(CAMBRIDGE_HEADER + "\n".join(lines) + "\n")

    def write_nvm(
        self,
        cameras: list[tuple[str, Camera, Pose]],
        points: np.ndarray,
        colours: np.ndarray,
        observations: list[list[tuple[int, float, float]]],
    ) -> None:
        """``points`` (P, 3), ``colours`` (P, 3) uint8, ``observations[p]``: (image index, x, y)
        with x, y relative to the image centre, as NVM measures them."""
        lines = ["NVM_V3", "", str(len(cameras))]
        for name, camera, pose in cameras:
            nvm_name = str(Path(name).with_suffix(".jpg"))
            values = [camera.focal_length[0], *pose.qvec, *pose.center, 0.0, 0.0]
            lines.append(f"{nvm_name} " + " ".join(f"{v:.9g}" for v in values[:-1]) + " 0")
        lines += ["", str(len(points))]
        feature_index = 0
        for point, colour, seen in zip(points, colours, observations):
            measurements = []
            for image_index, x, y in seen:
                measurements.append(f"{image_index} {feature_index} {x:.3f} {y:.3f}")
                feature_index += 1
            lines.append(
                " ".join([*(f"{v:.6f}" for v in point), *(str(int(c)) for c in colour), str(len(seen)), *measurements])
            )
        lines += ["", "0", ""]
        (self.root / "reconstruction.nvm").write_text("\n".join(lines))
