"""How much of each query's view the mapping images saw, from the ground-truth depth of a
7-Scenes-layout scene: what a localizer can be asked to recover."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reloc.datasets import load_dataset, read_depth_mm
from reloc.datasets.synthetic.pairs import correspondences


def mapped_share(scene: Path) -> dict[str, float]:
    """Per query name, the share of its pixels whose surface point some mapping image sees
    (in its frame and not occluded, by the written depth maps): 0 for a query that looks where no
    mapping camera looked."""
    dataset = load_dataset("7scenes", scene)
    mapping = [(frame, read_depth_mm(frame.depth_path)) for frame in dataset.frames("train")]
    shares = {}
    for query in dataset.frames("test"):
        depth = read_depth_mm(query.depth_path)
        seen = np.zeros(depth.shape, bool)
        for frame, frame_depth in mapping:
            seen |= correspondences(depth, query.camera, query.pose, frame_depth, frame.camera, frame.pose)[1]
        shares[query.name] = float(seen.mean())
    return shares
