"""Matchers on real pairs: relative-pose AUC on the Strecha pairs and fine accuracy on HPatches.

    python benchmarks/match_eval.py --strecha ../shared/data/strecha --hpatches ../shared/data/hpatches-churchill \\
        --out runs/match-eval

All matchers run in this one process, one after the other, at the same resize (long side 640 for
the pose AUC, the original 1024x768 for HPatches), on the torch threads given (default 2):
``casp`` (CasP + HomoMatcher), ``casp-coarse``, ``xfeat-star`` at top-k 4096 and 8000,
``aliked-lightglue`` and ``sift``. Pose: poselib LO-RANSAC essential matrix, 1 px threshold at the
matcher's resolution. HPatches: mean matching accuracy at 1/3/5 px of image 1 against images
2-6; for CasP without HomoMatcher, with it (1 iteration, the matcher's default) and with its 3
trained iterations, all on the very same coarse matches. Writes
``OUT/strecha.json`` and ``OUT/hpatches.json`` and prints markdown tables. ``--casp-checkpoint``
and ``--homomatcher-checkpoint`` score other checkpoints (of ``reloc train casp`` / ``homomatcher``)
in the casp rows; ``--only casp sift`` runs only those matchers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from reloc.datasets.base import read_image
from reloc.eval.matching import (
    evaluate_pairs,
    homography_errors,
    hpatches_sequence,
    mean_matching_accuracy,
    pair_metrics,
    read_homography,
)
from reloc.matching.casp.model import mutual_matches
from reloc.matching.pairwise import PairMatcherConfig, build_pair_matcher

SCENES = ("fountain-P11", "Herz-Jesus-P8", "castle-P19")
MATCHERS = {  # label: (matcher, max_keypoints)
    "casp": ("casp", 4096),
    "casp-coarse": ("casp-coarse", 4096),
    "xfeat-star (top-k 4096)": ("xfeat-star", 4096),
    "xfeat-star (top-k 8000)": ("xfeat-star", 8000),
    "aliked-lightglue": ("aliked-lightglue", 4096),
    "sift": ("sift", 4096),
}


def strecha(root: Path, resize_max: int, checkpoints: dict, only: list[str]) -> dict:
    table = {}
    for label, (name, keypoints) in MATCHERS.items():
        if only and name not in only:
            continue
        config = PairMatcherConfig(resize_max=resize_max, max_keypoints=keypoints, **checkpoints)
        matcher = build_pair_matcher(name, config)
        warm = read_image(root / SCENES[0] / "seq1" / "0000.jpg")
        matcher.match(warm, warm)  # first-call allocations out of the timing
        results, per_scene = [], {}
        for scene in SCENES:
            scene_results = evaluate_pairs(
                matcher, root / scene / "pairs_with_gt.txt", root / scene, 1.0, resize_max=resize_max
            )
            per_scene[scene] = pair_metrics(scene_results)
            results += scene_results
        table[label] = {"all": pair_metrics(results), **per_scene}
        print(label, json.dumps(table[label]["all"]), flush=True)
    return table


def hpatches(root: Path, checkpoints: dict, only: list[str]) -> dict:
    triples = hpatches_sequence(root)
    table = {}
    casp = build_pair_matcher("casp", PairMatcherConfig(resize_max=0, **checkpoints))
    coarse_errors, fine_errors, three_errors, counts, seconds = [], [], [], [], []
    for reference, image, homography_file in triples:
        homography = read_homography(homography_file)
        prepared0, prepared1 = casp.prepare(read_image(reference)), casp.prepare(read_image(image))
        with torch.inference_mode():
            points0, points1, _ = mutual_matches(casp.casp.match_pyramids(prepared0.pyramid, prepared1.pyramid), 0.2)[0]
            start = time.perf_counter()
            refined, _, _ = casp.fine.refine(
                prepared0.fine, prepared1.fine, points0, points1, prepared0.pyramid.size, prepared1.pyramid.size
            )
            seconds.append(time.perf_counter() - start)
            casp.fine.config.iterations = 3
            three, _, _ = casp.fine.refine(
                prepared0.fine, prepared1.fine, points0, points1, prepared0.pyramid.size, prepared1.pyramid.size
            )
            casp.fine.config.iterations = 1
        scale0, scale1 = prepared0.scale, prepared1.scale
        coarse_errors.append(
            homography_errors(points0.double().numpy() * scale0, points1.double().numpy() * scale1, homography)
        )
        fine_errors.append(
            homography_errors(points0.double().numpy() * scale0, refined.double().numpy() * scale1, homography)
        )
        three_errors.append(
            homography_errors(points0.double().numpy() * scale0, three.double().numpy() * scale1, homography)
        )
        counts.append(len(points0))
    table["casp-coarse (same matches)"] = {
        **mean_matching_accuracy(coarse_errors),
        "matches_per_pair": float(np.mean(counts)),
    }
    table["casp = casp-coarse + HomoMatcher"] = {
        **mean_matching_accuracy(fine_errors),
        "matches_per_pair": float(np.mean(counts)),
        "homomatcher_ms_per_pair": 1000 * float(np.median(seconds)),
    }
    table["casp-coarse + HomoMatcher, 3 iterations"] = {
        **mean_matching_accuracy(three_errors),
        "matches_per_pair": float(np.mean(counts)),
    }
    for label, (name, keypoints) in MATCHERS.items():
        if name.startswith("casp") or (only and name not in only):
            continue
        matcher = build_pair_matcher(name, PairMatcherConfig(resize_max=0, max_keypoints=keypoints))
        errors = []
        for reference, image, homography_file in triples:
            p0, p1 = matcher.match(read_image(reference), read_image(image))
            errors.append(homography_errors(p0, p1, read_homography(homography_file)))
        table[label] = {**mean_matching_accuracy(errors), "matches_per_pair": float(np.mean([len(e) for e in errors]))}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strecha", type=Path, required=True)
    parser.add_argument("--hpatches", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--resize-max", type=int, default=640)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--casp-checkpoint", default="", help="CasP checkpoint of the casp rows (default: shipped)")
    parser.add_argument(
        "--homomatcher-checkpoint", default="", help="HomoMatcher checkpoint of the casp rows (default: shipped)"
    )
    parser.add_argument("--only", nargs="*", default=[], help="matcher names to run (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoints = {"casp_checkpoint": args.casp_checkpoint, "homomatcher_checkpoint": args.homomatcher_checkpoint}
    fine = hpatches(args.hpatches, checkpoints, args.only)
    (args.out / "hpatches.json").write_text(json.dumps(fine, indent=1))
    print("\n| matcher | MMA@1 | MMA@3 | MMA@5 | matches/pair |\n|---|---|---|---|---|")
    for label, row in fine.items():
        print(
            f"| {label} | {row['mma_1']:.3f} | {row['mma_3']:.3f} | {row['mma_5']:.3f} | "
            f"{row['matches_per_pair']:.0f} |"
        )
    pose = strecha(args.strecha, args.resize_max, checkpoints, args.only)
    (args.out / "strecha.json").write_text(json.dumps(pose, indent=1))
    print("\n| matcher | AUC@5 | AUC@10 | AUC@20 | matches/pair | ms/pair | failed |\n|---|---|---|---|---|---|---|")
    for label, row in pose.items():
        m = row["all"]
        print(
            f"| {label} | {m['auc_5']:.1f} | {m['auc_10']:.1f} | {m['auc_20']:.1f} | {m['matches_per_pair']:.0f} | "
            f"{m['ms_per_pair']:.0f} | {m['n_failed']}/{m['n_pairs']} |"
        )
    print("\nper scene AUC@5/10/20:")
    for label, row in pose.items():
        print(
            label,
            " · ".join(f"{s}: {row[s]['auc_5']:.1f}/{row[s]['auc_10']:.1f}/{row[s]['auc_20']:.1f}" for s in SCENES),
        )


if __name__ == "__main__":
    main()
