"""Which frozen backbone should feed NeuMap's decoder: how far a query keypoint's descriptor
carries its scene coordinate, before any decoder or code. For each extractor, every labelled
keypoint (depth-given world point) of a scene's query frames looks up its nearest mapping
descriptor (cosine, all mapping frames) and takes that keypoint's world point; the share within
5 / 10 / 25 cm of its own point is what a perfect memory of the mapping frames could give. Also
the same with the mapping keypoints restricted to the query point's voxel (as NeuMap decodes in
the true voxel).

    python benchmarks/neumap_backbones.py --scene data/neumap/7scenes-seed102 \\
        --queries data/neumap/7scenes-seed102 data/neumap/7scenes-seed102-clean
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from reloc.datasets import load_dataset
from reloc.features.stages import AlikedFeatures, XFeatFeatures
from reloc.neumap.labels import LabelledPoints, labels_from_depth
from reloc.neumap.scenes import VoxelConfig, voxels_of
from reloc.neumap.trained import QUERY_FEATURES

EXTRACTORS = {"xfeat": XFeatFeatures, "aliked": AlikedFeatures}
RADII_M = (0.05, 0.10, 0.25)


def labelled(extractor: str, frames) -> tuple[LabelledPoints, float]:
    """Labels of ``frames`` with NeuMap's query feature settings and the extraction ms per image."""
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        store = EXTRACTORS[extractor](dataclasses.replace(QUERY_FEATURES, save=False)).run(frames, Path(work))
        ms = 1000 * (time.perf_counter() - started) / len(frames)
        return labels_from_depth(frames, store["features"]), ms


def nearest_points(queries: np.ndarray, references: np.ndarray, points: np.ndarray) -> np.ndarray:
    """World point (Q, 3) of each query descriptor's nearest reference descriptor (cosine)."""
    reference = torch.nn.functional.normalize(torch.from_numpy(references.astype(np.float32)), dim=1)
    found = []
    for chunk in torch.from_numpy(queries.astype(np.float32)).split(4096):
        similarity = torch.nn.functional.normalize(chunk, dim=1) @ reference.T
        found.append(similarity.argmax(dim=1).numpy())
    return points[np.concatenate(found)]


def shares(errors: np.ndarray) -> list[str]:
    return [f"{100 * float((errors < radius).mean()):.0f} %" for radius in RADII_M]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scene", type=Path, required=True, help="7-Scenes-layout scene: its mapping frames")
    parser.add_argument("--queries", type=Path, nargs="+", required=True, help="scenes whose test frames query")
    parser.add_argument("--extractors", nargs="+", default=list(EXTRACTORS), choices=list(EXTRACTORS))
    args = parser.parse_args()
    mapping_frames = load_dataset("7scenes", args.scene).frames("train")
    header = ["extractor", "queries", "labelled query keypoints", "ms/image"]
    header += [f"NN within {int(100 * r)} cm" for r in RADII_M]
    header += [f"NN in the true voxel within {int(100 * r)} cm" for r in RADII_M]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for extractor in args.extractors:
        mapping, _ = labelled(extractor, mapping_frames)
        table, _ = voxels_of(mapping, VoxelConfig())
        mapping_voxel = table.assign(mapping.points)
        for root in args.queries:
            queries, ms = labelled(extractor, load_dataset("7scenes", root).frames("test"))
            anywhere = nearest_points(queries.descriptors, mapping.descriptors, mapping.points)
            query_voxel = table.assign(queries.points)
            in_voxel = np.full_like(queries.points, np.nan)
            for voxel in np.unique(query_voxel[query_voxel >= 0]):
                rows, references = query_voxel == voxel, mapping_voxel == voxel
                in_voxel[rows] = nearest_points(
                    queries.descriptors[rows], mapping.descriptors[references], mapping.points[references]
                )
            kept = query_voxel >= 0
            row = [extractor, root.name, str(len(queries)), f"{ms:.0f}"]
            row += shares(np.linalg.norm(anywhere - queries.points, axis=1))
            row += shares(np.linalg.norm(in_voxel[kept] - queries.points[kept], axis=1))
            print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
