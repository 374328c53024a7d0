"""FaVoR training speed on a map's landmark patches: the first N landmarks trained together.

    python benchmarks/favor_train.py runs/demo/map --landmarks 1000 --steps 200 [--backend hashgrid]

Prints the number of rays, the wall time, seconds per landmark, the loss and the training PSNR.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from reloc.favor.model import training_rays
from reloc.favor.train import BACKENDS, TrainConfig, TrainingRays, train_grids, train_hash_field
from reloc.mapping.patches import read_landmark_patches
from reloc.mapping.store import keyframe_poses, read_sparse_map


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("map_dir", type=Path)
    parser.add_argument("--landmarks", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument(
        "--backend", choices=BACKENDS, default="voxel", help="field backend (hashgrid: favor.train's defaults)"
    )
    args = parser.parse_args()
    rays, centres, sides = training_rays(
        read_landmark_patches(args.map_dir), read_sparse_map(args.map_dir), keyframe_poses(args.map_dir)
    )
    count = min(args.landmarks, len(centres))
    end = int(rays.starts[count - 1] + rays.counts[count - 1])
    subset = TrainingRays(
        rays.origins[:end], rays.directions[:end], rays.targets[:end], rays.starts[:count], rays.counts[:count]
    )
    start = time.perf_counter()
    config = TrainConfig(backend=args.backend, steps=args.steps)
    train = train_grids if args.backend == "voxel" else train_hash_field
    trained = train(centres[:count], sides[:count], subset, np.arange(count), config)
    seconds = time.perf_counter() - start
    print(
        f"{count} landmarks, {end} rays, {args.steps} steps: {seconds:.1f} s ({1000 * seconds / count:.0f} ms per "
        "landmark); "
        f"loss {trained.losses[0]:.2f} -> {trained.losses[-1]:.2f}; PSNR median "
        f"{float(trained.psnr_db.median()):.1f} dB"
    )


if __name__ == "__main__":
    main()
