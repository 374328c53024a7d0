"""HomoMatcher variants on the same coarse matches: fit (checkpoint) x iterations, relative-pose
AUC and time per pair.

    python benchmarks/homomatcher_variants.py --strecha ../shared/data/strecha \\
        --checkpoint dlt=reloc/weights/homomatcher.pt --checkpoint regression=runs/train/homomatcher-regression.pt \\
        --out runs/homomatcher-variants

``reloc match-eval --matcher casp --homomatcher-checkpoint CKPT --fine-iterations N`` at 640 px on
the three Strecha scenes' pairs (pooled) and, with ``--sevenscenes-pairs``/``--sevenscenes``, on the
real indoor 7-Scenes pairs of ``benchmarks/sevenscenes_pairs.py make``. The coarse CasP matches
depend on neither the fine checkpoint nor its iterations, so the rows differ only by the fine stage.
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


def match_eval(pairs: Path, images: Path, checkpoint: Path, iterations: int, out: Path) -> dict:
    command = [sys.executable, "-m", "reloc.cli", "match-eval", "--matcher", "casp", "--resize-max", "640"]
    command += ["--homomatcher-checkpoint", str(checkpoint), "--fine-iterations", str(iterations)]
    command += ["--pairs", str(pairs), "--images", str(images), "--out", str(out)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def pooled(runs: list[dict]) -> tuple[list[float], int, float]:
    """AUC@5/10/20 (percent) of all pairs together, the pair count and the median ms per pair."""
    pairs = [pair for run in runs for pair in run["per_pair"]]
    errors = np.array([pair["error_deg"] for pair in pairs])
    return list(pose_auc(errors)), len(pairs), 1000 * float(np.median([pair["seconds"] for pair in pairs]))


def labelled_path(text: str) -> tuple[str, Path]:
    label, separator, path = text.partition("=")
    if not separator or not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"{text!r}: expected LABEL=CHECKPOINT of an existing file")
    return label, Path(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strecha", type=Path, required=True)
    parser.add_argument(
        "--checkpoint", type=labelled_path, action="append", required=True, help="LABEL=PATH; repeat for more"
    )
    parser.add_argument("--iterations", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--sevenscenes-pairs", type=Path, help="pairs_with_gt.txt folder of sevenscenes_pairs.py")
    parser.add_argument("--sevenscenes", type=Path, help="the 7-Scenes scene those pairs come from")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print("| pairs | fit | iterations | n | AUC@5 | AUC@10 | AUC@20 | ms per pair |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for label, checkpoint in args.checkpoint:
        for iterations in args.iterations:
            run = f"{label}-{iterations}"
            sets = {
                "Strecha (3 scenes)": [
                    match_eval(
                        args.strecha / scene / "pairs_with_gt.txt",
                        args.strecha / scene,
                        checkpoint,
                        iterations,
                        args.out / f"{scene}-{run}.json",
                    )
                    for scene in STRECHA
                ]
            }
            if args.sevenscenes_pairs:
                sets["7-Scenes (real indoor)"] = [
                    match_eval(
                        args.sevenscenes_pairs / "pairs_with_gt.txt",
                        args.sevenscenes,
                        checkpoint,
                        iterations,
                        args.out / f"7scenes-{run}.json",
                    )
                ]
            for name, runs in sets.items():
                aucs, count, ms = pooled(runs)
                print(
                    f"| {name} | {label} | {iterations} | {count} | "
                    + " | ".join(f"{a:.1f}" for a in aucs)
                    + f" | {ms:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
