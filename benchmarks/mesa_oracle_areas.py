"""How much better areas could make DMESA: the synthetic low-overlap pairs of ``benchmarks/mesa.py``
matched with DMESA around a matcher, once with the weight-free Felzenszwalb areas (as shipped) and
once with **ground-truth areas**: the renderer's triangle ids give each pixel its surface (a wall,
a box, a poster: one material each), every connected region of one surface is a segment, and its
box goes through the same filter as Felzenszwalb's (size limits, duplicates, the 16 largest). A
class-agnostic segmenter trained on these scenes (the issue's ``reloc train areas``) could at best
reach these areas; if they do not lift DMESA, neither can it.

    python benchmarks/mesa_oracle_areas.py --seed 5 --out runs/mesa-oracle-s5
    python benchmarks/mesa_oracle_areas.py --seed 7 --out runs/mesa-oracle-s7

The pairs are drawn exactly as ``benchmarks/mesa.py pairs --synthetic-seed SEED`` draws them (same
images); one Markdown row per matcher and areas.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
from mesa import LOW_OVERLAP, sampled_pairs, save_pair
from scipy.ndimage import label

from reloc.eval.matching import evaluate_pairs, pair_metrics
from reloc.matching.mesa.areas import AreaConfig, boxes_of_segments
from reloc.matching.mesa.matcher import AreaMatcher, AreaMatcherConfig
from reloc.matching.pairwise import PairMatcherConfig, build_pair_matcher


def image_key(image: np.ndarray) -> bytes:
    return hashlib.blake2b(image.tobytes(), digest_size=16).digest()


def surface_segments(surface: np.ndarray) -> np.ndarray:
    """Segment labels (H, W) 0… of every connected region of one surface id (-1: nothing, -1 out)."""
    segments = np.full(surface.shape, -1, np.int64)
    count = 0
    for value in np.unique(surface[surface >= 0]):
        regions, found = label(surface == value)
        segments[regions > 0] = regions[regions > 0] - 1 + count
        count += found
    return segments


class GroundTruthAreaMatcher(AreaMatcher):
    """DMESA with each image's areas looked up from ground-truth boxes (by the image's bytes)."""

    def __init__(self, name: str, matcher_config: PairMatcherConfig, boxes: dict[bytes, np.ndarray]):
        super().__init__(name, matcher_config, AreaMatcherConfig("dmesa"))
        self.boxes = boxes

    def segment(self, image: np.ndarray) -> np.ndarray:
        return self.boxes[image_key(image)]


def write_pairs(seed: int, count: int, folder: Path) -> dict[bytes, np.ndarray]:
    """Images and ``pairs_with_gt.txt`` in ``folder``; the ground-truth area boxes of every image."""
    folder.mkdir(parents=True, exist_ok=True)
    lines, boxes = [], {}
    for index, (sampler, pair) in enumerate(sampled_pairs(seed, count, LOW_OVERLAP)):
        materials = sampler.scene.mesh.materials
        lines.append(save_pair(folder, index, pair))
        for image, pose in zip((pair.image0, pair.image1), (pair.pose0, pair.pose1)):
            ids = sampler.renderer.render(pose, pair.camera0).triangle_ids
            surface = np.where(ids >= 0, materials[np.maximum(ids, 0)], -1)
            size = (image.shape[1], image.shape[0])
            boxes[image_key(image)] = boxes_of_segments([surface_segments(surface)], 1.0, size, AreaConfig())
    (folder / "pairs_with_gt.txt").write_text("\n".join(lines) + "\n")
    return boxes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, required=True, help="synthetic room seed (never 0)")
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--matchers", nargs="+", default=["xfeat-star", "casp"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    folder = args.out / "synthetic-low-overlap"
    boxes = write_pairs(args.seed, args.pairs, folder)
    print(f"ground-truth areas per image: median {np.median([len(b) for b in boxes.values()]):.0f}")
    print("| matcher | areas | AUC@5 | AUC@10 | AUC@20 | matches | ms/pair |")
    print("|---|---|---:|---:|---:|---:|---:|")
    config = PairMatcherConfig(resize_max=640, max_keypoints=4096)
    for name in args.matchers:
        matchers = {
            "none": build_pair_matcher(name, config),
            "dmesa, Felzenszwalb": AreaMatcher(name, config, AreaMatcherConfig("dmesa")),
            "dmesa, ground truth": GroundTruthAreaMatcher(name, config, boxes),
        }
        for areas, matcher in matchers.items():
            found = pair_metrics(evaluate_pairs(matcher, folder / "pairs_with_gt.txt", folder, 1.0, None, 640))
            print(
                f"| {name} | {areas} | {found['auc_5']:.1f} | {found['auc_10']:.1f} | {found['auc_20']:.1f} | "
                f"{found['matches_per_pair']:.0f} | {found['ms_per_pair']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
