"""Small dataset folders in the real 7-Scenes and Cambridge layouts, written by tests."""

from __future__ import annotations

import numpy as np
from PIL import Image

from reloc.rotation import axis_angle_to_rotmat
from reloc.types import Pose


def write_sevenscenes(root, sequences=("sequence1", "sequence10"), test=("sequence2",), suffix=".color.png"):
    rng = np.random.default_rng(1)
    poses = {}
    for line in (*sequences, *test):
        folder = root / f"seq-{int(line[8:]):02d}"
        folder.mkdir(parents=True)
        for index in range(2):
            stem = folder / f"frame-{index:06d}"
            Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(f"{stem}{suffix}")
            Image.fromarray(np.full((480, 640), 1500, np.uint16)).save(f"{stem}.depth.png")
            pose = Pose(axis_angle_to_rotmat(rng.normal(size=3), 0.5), rng.normal(size=3))
            np.savetxt(f"{stem}.pose.txt", pose.inverse().matrix)
            poses[f"{folder.name}/{stem.name}{suffix}"] = pose
    (root / "TrainSplit.txt").write_text("\n".join(sequences) + "\n")
    (root / "TestSplit.txt").write_text("\n".join(test) + "\n")
    return poses


def write_cambridge(root, sizes=((1920, 1080), (480, 270))):
    """Images stored as .png while the NVM lists .jpg, as in the real Cambridge release."""
    rng = np.random.default_rng(2)
    (root / "seq1").mkdir(parents=True)
    rows, nvm, poses = [], [], {}
    for index, (width, height) in enumerate(sizes):
        name = f"seq1/frame{index:05d}.png"
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(root / name)
        pose = Pose(axis_angle_to_rotmat(rng.normal(size=3), 1.0), rng.normal(size=3))
        qvec, centre = pose.qvec, pose.center
        rows.append(f"{name} {' '.join(map(str, centre))} {' '.join(map(str, qvec))}")
        nvm.append(f"{name[:-4]}.jpg {1000 + index} {' '.join(map(str, qvec))} {' '.join(map(str, centre))} 0 0")
        poses[name] = pose
    header = "Visual Landmark Dataset V1\nImageFile, Camera Position [X Y Z W P Q R]\n\n"
    (root / "dataset_train.txt").write_text(header + rows[0] + "\n")
    (root / "dataset_test.txt").write_text(header + "\n".join(rows[1:]) + "\n")
    (root / "reconstruction.nvm").write_text(f"NVM_V3\n\n{len(nvm)}\n" + "\n".join(nvm) + "\n\n0\n")
    return poses
