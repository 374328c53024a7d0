"""FaVoR training speed on a map's landmark patches: the first N landmarks trained together.

    python benchmarks/favor_train.py runs/demo/map --landmarks 1000 --steps 200 [--backend hashgrid
        --rays-per-step 8 --learning-rate 0.01 --levels 8 --log2-hashmap-size 15]

Prints the number of rays, the wall time, seconds per landmark, the loss and the training PSNR.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from reloc.favor.hashgrid import HashGridSpec
from reloc.favor.model import training_rays
from reloc.favor.train import BACKENDS, HashGridTrainConfig, TrainConfig, TrainingRays, train_grids, train_hash_field
from reloc.mapping.patches import read_landmark_patches
from reloc.mapping.store import keyframe_poses, read_sparse_map


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("map_dir", type=Path)
    parser.add_argument("--landmarks", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--backend", choices=BACKENDS, default="voxel", help="field backend")
    parser.add_argument("--rays-per-step", type=int, default=64, help="rays per landmark per step")
    parser.add_argument("--learning-rate", type=float, default=0.01, help="hashgrid: Adam's learning rate")
    parser.add_argument("--levels", type=int, default=8, help="hashgrid: levels of the encoding")
    parser.add_argument("--log2-hashmap-size", type=int, default=15, help="hashgrid: log2 of the entries per level")
    args = parser.parse_args()
    rays, centres, sides = training_rays(
        read_landmark_patches(args.map_dir), read_sparse_map(args.map_dir), keyframe_poses(args.map_dir)
    )
    count = min(args.landmarks, len(centres))
    end = int(rays.starts[count - 1] + rays.counts[count - 1])
    subset = TrainingRays(
        rays.origins[:end], rays.directions[:end], rays.targets[:end], rays.starts[:count], rays.counts[:count]
    )
    encoding = {**HashGridSpec().schema(), "n_levels": args.levels, "log2_hashmap_size": args.log2_hashmap_size}
    hashgrid = HashGridTrainConfig(encoding=encoding, learning_rate=args.learning_rate)
    config = TrainConfig(args.backend, steps=args.steps, rays_per_step=args.rays_per_step, hashgrid=hashgrid)
    start = time.perf_counter()
    train = train_grids if args.backend == "voxel" else train_hash_field
    trained = train(centres[:count], sides[:count], subset, np.arange(count), config)
    seconds = time.perf_counter() - start
    print(
        f"{count} landmarks, {end} rays, {args.steps} steps: {seconds:.1f} s ({1000 * seconds / count:.0f} ms per "
        "landmark); "
        f"loss {trained.losses[0]:.2f} -> {trained.losses[-1]:.2f}; PSNR median "
        f"{float(trained.psnr_db.median()):.1f} dB (10th percentile {float(trained.psnr_db.quantile(0.1)):.1f})"
    )


if __name__ == "__main__":
    main()
