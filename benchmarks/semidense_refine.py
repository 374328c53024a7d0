"""HomoMatcher on every coarse match against only those from keyframe cells that hold a landmark.

    OMP_NUM_THREADS=1 python benchmarks/semidense_refine.py --map runs/q23/strecha640/original/casp/fountain-P11/map \\
        --query ../shared/data/strecha/fountain-P11/seq1/0001.jpg --keyframe seq1/0002.jpg

On a map of ``configs/casp.yaml`` (e.g. one ``benchmarks/strecha.py`` built), one query and one
stored keyframe, 1 torch thread: the CasP coarse matches, how many come from cells with a landmark
(what ``pose.semidense_lookup`` keeps), the fine stage's time on all of them and on that subset
(best of ``--repeats``), and whether the subset's refined points equal those of the full run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from reloc.datasets.base import read_image
from reloc.io.map_folder import KEYFRAME_FEATURES
from reloc.mapping.keyframe_features import KeyframeFeatures
from reloc.mapping.semidense import cell_indices
from reloc.mapping.store import read_sparse_map
from reloc.matching.pairwise import CaspPairMatcher, PairMatcherConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--map", type=Path, required=True)
    parser.add_argument("--query", type=Path, required=True)
    parser.add_argument("--keyframe", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    matcher = CaspPairMatcher(PairMatcherConfig(resize_max=640, match_threshold=0.1))
    keyframe = KeyframeFeatures(args.map / KEYFRAME_FEATURES, matcher).read(args.keyframe)
    query = matcher.prepare(read_image(args.query))
    width, height = keyframe.pyramid.size
    landmark_of_cell = np.full((height // 8) * (width // 8), -1, np.int64)
    keypoints, ids = read_sparse_map(args.map).located_observations(args.keyframe)
    landmark_of_cell[cell_indices(keypoints / keyframe.scale, keyframe.pyramid.size)] = ids
    points0, points1 = matcher.coarse_matches(keyframe, query)
    mapped = landmark_of_cell[cell_indices(points0.double().numpy(), keyframe.pyramid.size)] >= 0
    seconds = {"all": [], "mapped": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        every = matcher.refine(keyframe, query, points0, points1)
        seconds["all"].append(time.perf_counter() - start)
        start = time.perf_counter()
        subset = matcher.refine(keyframe, query, points0[mapped], points1[mapped])
        seconds["mapped"].append(time.perf_counter() - start)
    same = torch.allclose(every.points1[torch.from_numpy(mapped)], subset.points1, atol=1e-4)
    print(
        f"coarse matches {len(points0)}, from cells with a landmark {int(mapped.sum())}; HomoMatcher "
        f"{1000 * min(seconds['all']):.0f} ms on all, {1000 * min(seconds['mapped']):.0f} ms on those; "
        f"same points: {same}"
    )


if __name__ == "__main__":
    main()
