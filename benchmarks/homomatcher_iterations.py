"""HomoMatcher with 1 against 3 iterations: relative-pose AUC and time per pair, same coarse matches.

    python benchmarks/homomatcher_iterations.py --strecha ../shared/data/strecha \\
        --sevenscenes-pairs runs/7scenes-pairs --sevenscenes ../shared/data/7scenes-sample/stairs \\
        --out runs/homomatcher-iterations

``reloc match-eval --matcher casp --fine-iterations N`` at 640 px on the three Strecha scenes' pairs
(pooled) and on the real indoor 7-Scenes pairs of ``benchmarks/sevenscenes_pairs.py make``; the
coarse CasP matches do not depend on the iterations, so the rows differ only by the fine stage.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from reloc.eval.matching import pose_auc

STRECHA = ("fountain-P11", "Herz-Jesus-P8", "castle-P19")


def match_eval(pairs: Path, images: Path, iterations: int, out: Path) -> dict:
    command = [sys.executable, "-m", "reloc.cli", "match-eval", "--matcher", "casp", "--resize-max", "640"]
    command += ["--fine-iterations", str(iterations), "--pairs", str(pairs), "--images", str(images), "--out", str(out)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def pooled(runs: list[dict]) -> tuple[list[float], int, float]:
    """AUC@5/10/20 (percent) of all pairs together, the pair count and the median ms per pair."""
    pairs = [pair for run in runs for pair in run["per_pair"]]
    errors = np.array([pair["error_deg"] for pair in pairs])
    return list(pose_auc(errors)), len(pairs), 1000 * float(np.median([pair["seconds"] for pair in pairs]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strecha", type=Path, required=True)
    parser.add_argument("--sevenscenes-pairs", type=Path, required=True)
    parser.add_argument("--sevenscenes", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print("| pairs | iterations | n | AUC@5 | AUC@10 | AUC@20 | ms per pair |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for iterations in (1, 3):
        sets = {
            "Strecha (3 scenes)": [
                match_eval(
                    args.strecha / scene / "pairs_with_gt.txt",
                    args.strecha / scene,
                    iterations,
                    args.out / f"{scene}-{iterations}.json",
                )
                for scene in STRECHA
            ],
            "7-Scenes stairs (real indoor)": [
                match_eval(
                    args.sevenscenes_pairs / "pairs_with_gt.txt",
                    args.sevenscenes,
                    iterations,
                    args.out / f"7scenes-{iterations}.json",
                )
            ],
        }
        for label, runs in sets.items():
            aucs, count, ms = pooled(runs)
            print(f"| {label} | {iterations} | {count} | " + " | ".join(f"{a:.1f}" for a in aucs) + f" | {ms:.0f} |")


if __name__ == "__main__":
    main()
