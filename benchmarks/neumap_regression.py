"""NeuMap's regression on a scene's own frames, each keypoint in its true voxel: how far the
labelled keypoints of mapping and of query frames are regressed from their depth-given world
points, how many are confident there (in-voxel probability > 0.5), and how many confident ones
land within 5 cm ("within 5 cm": of the confident ones). It measures the decoder and the codes
apart from voxel choice and PnP.

    python benchmarks/neumap_regression.py --scene data/neumap/7scenes-seed102 \\
        --map runs/q20/shipped-102/map [--decoder CKPT]

``--map`` is a NeuMap map of the scene (``reloc eval --config neumap``) whose codes were optimised
under ``--decoder`` (default: the shipped one). Mapping frames: every 5th; queries: all.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from neumap_backbones import labelled

from reloc.datasets import load_dataset
from reloc.io.map_folder import NEUMAP_FILE
from reloc.neumap.localize import regress
from reloc.neumap.store import NeumapMap
from reloc.neumap.trained import load_decoder
from reloc.types import Frame


@torch.inference_mode()
def frame_errors(frames: list[Frame], neumap: NeumapMap, decoder) -> dict[str, float]:
    """Median error (percent of the voxel side and cm), confident share and confident share within
    5 cm over the labelled keypoints of ``frames`` that lie in a kept voxel."""
    labels, _ = labelled("xfeat", frames)
    voxel = neumap.table.assign(labels.points)
    errors, confidences = [], []
    for index in range(len(frames)):
        for v in np.unique(voxel[(labels.frame == index) & (voxel >= 0)]):
            rows = np.flatnonzero((labels.frame == index) & (voxel == v))
            embedded = decoder.embed(torch.from_numpy(labels.descriptors[rows].astype(np.float32)))
            points, confidence = regress(decoder, neumap, embedded, np.array([v]))
            errors.append(np.linalg.norm(points[0] - labels.points[rows], axis=1))
            confidences.append(confidence[0])
    error, confidence = np.concatenate(errors), np.concatenate(confidences)
    confident = confidence > 0.5
    return {
        "keypoints": len(error),
        "median % of side": 100 * float(np.median(error)) / neumap.table.size,
        "median cm": 100 * float(np.median(error)),
        "confident": float(confident.mean()),
        "confident within 5 cm": float((error[confident] < 0.05).mean()) if confident.any() else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scene", type=Path, required=True, help="a 7-Scenes-layout scene (depth labels)")
    parser.add_argument("--map", type=Path, required=True, help="its NeuMap map folder")
    parser.add_argument("--decoder", type=Path, help="the decoder its codes were optimised for (default: shipped)")
    args = parser.parse_args()
    checkpoint = load_decoder(args.decoder)
    neumap = NeumapMap.load(args.map / NEUMAP_FILE)
    if neumap.decoder_digest != checkpoint.digest:
        raise SystemExit(f"{args.map}: its codes were optimised for another decoder; pass that one with --decoder")
    dataset = load_dataset("7scenes", args.scene)
    splits = {"mapping (every 5th)": dataset.frames("train")[::5], "queries": dataset.frames("test")}
    print(f"voxel side {neumap.table.size:.2f} m")
    columns = ["keypoints in a voxel", "median error (% of side)", "median error (cm)", "confident", "within 5 cm"]
    print("| frames | " + " | ".join(columns) + " |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, frames in splits.items():
        found = frame_errors(frames, neumap, checkpoint.decoder)
        print(
            f"| {name} | {found['keypoints']} | {found['median % of side']:.1f} | {found['median cm']:.1f} | "
            f"{100 * found['confident']:.0f} % | {100 * found['confident within 5 cm']:.0f} % |"
        )


if __name__ == "__main__":
    main()
