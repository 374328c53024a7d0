"""MESA and DMESA (area matching) against the point matchers alone, on pair sets where areas should matter.

    python benchmarks/mesa.py pairs --strecha ../shared/data/strecha --out runs/mesa-pairs
    python benchmarks/mesa.py eval --pairs runs/mesa-pairs --strecha ../shared/data/strecha \\
        --matchers sift xfeat-star casp --areas none mesa dmesa --out runs/mesa

``--synthetic-seed`` picks the synthetic scene (7 for the reported set; settings are chosen on
another seed, e.g. 5, with ``--sets synthetic``), ``--synthetic-pairs`` how many pairs (90; the
first reported run had 30, where one pair moved AUC@5 by up to 3.3).

``pairs`` writes, in ``pairs_with_gt.txt`` format (cam1_from_cam0): **Strecha wide-baseline pairs**
(each image of a scene with those 3 to 6 ahead in name order, from the GT poses) and **low-overlap
synthetic indoor pairs** (``PairSampler`` on the ``room`` scene of seed 7, never seed 0: pairs kept
when 10 to 40 % of image 0 is covisible; ``--synthetic-overlap 0.5 0.9`` writes a set of easier
pairs beside it), with their images and, for the synthetic ones, the ground-truth flow used for area
precision. ``eval`` runs ``reloc match-eval`` for every matcher and every ``--areas`` on every set
(the easy Strecha ``pairs_with_gt.txt`` and every synthetic set too) and prints one Markdown table
with each run's area precision: the share of its area pairs (box0, box1) for which at least half of
what box1 sees of image 0 lies in box0. On the synthetic pairs "what box1 sees" is the exact flow of
its covisible pixels; on the real Strecha pairs it is the reference matches with their image-1 point
in box1: RootSIFT matches at the images' full size (8000 keypoints, mutual NN + ratio 0.8) within 1
px of the ground-truth epipolar geometry, independent of the matcher under test (cached under
``--pairs``). An area pair with fewer than ``REFERENCE_MIN`` reference matches in box1 cannot be
judged there and is counted apart. ``precision`` prints the same precision for an earlier ``eval``
output folder:

    python benchmarks/mesa.py precision --pairs runs/mesa-pairs --strecha ../shared/data/strecha --runs runs/mesa

``pool`` pools the per-pair errors of one set over several ``eval`` outputs (the low-overlap pairs
of several synthetic rooms, one ``pairs`` / ``eval`` per seed) and prints each matcher's AUC@5/10/20
with and without areas over all of them:

    python benchmarks/mesa.py pool --runs runs/mesa runs/mesa-s8 --set synthetic-low-overlap
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from reloc.datasets import load_dataset
from reloc.datasets.base import read_image
from reloc.datasets.pairs import pair_line, read_pairs_with_gt
from reloc.datasets.synthetic.pairs import PairSampler, TrainingPair
from reloc.eval.matching import AUC_THRESHOLDS_DEG, pose_auc
from reloc.geometry.projection import fundamental_matrix
from reloc.matching.mesa.dmesa import inside_box
from reloc.matching.mesa.matcher import sampson_distances
from reloc.matching.pairwise import PairMatcherConfig, build_pair_matcher

STRECHA = ("fountain-P11", "Herz-Jesus-P8", "castle-P19")
REFERENCE_MAX_PX = 1.0  # Sampson distance to the ground-truth geometry, full-size pixels
REFERENCE_MIN = 10  # reference matches in box1 for an area pair to be judged
LOW_OVERLAP = (0.1, 0.4)  # share of image 0 covisible in the low-overlap synthetic pairs


def strecha_wide_pairs(root: Path, out: Path) -> None:
    """Every scene's images paired with those 3 to 6 ahead; one pairs file per scene (image
    names relative to the scene folder)."""
    for scene in STRECHA:
        dataset = load_dataset("cambridge", root / scene)
        frames = sorted(dataset.frames("train") + dataset.frames("test"), key=lambda frame: frame.name)
        lines = []
        for i, frame0 in enumerate(frames):
            for frame1 in frames[i + 3 : i + 7]:
                relative = frame1.pose @ frame0.pose.inverse()
                lines.append(pair_line(frame0.name, frame1.name, frame0.camera.K, frame1.camera.K, relative.matrix))
        (out / "strecha-wide").mkdir(parents=True, exist_ok=True)
        (out / "strecha-wide" / f"{scene}.txt").write_text("\n".join(lines) + "\n")
        print(f"{scene}: {len(lines)} wide-baseline pairs")


def synthetic_folder(overlap: tuple[float, float]) -> str:
    """The folder of the synthetic pairs with ``overlap`` (low, high) of image 0 covisible."""
    if overlap == LOW_OVERLAP:
        return "synthetic-low-overlap"
    return f"synthetic-overlap-{round(100 * overlap[0])}-{round(100 * overlap[1])}"


def sampled_pairs(seed: int, count: int, overlap: tuple[float, float]) -> Iterator[tuple[PairSampler, TrainingPair]]:
    """The ``count`` pairs of the ``room`` scene of ``seed`` with ``overlap`` (low, high) of image 0
    covisible, in order, each with its sampler (whose renderer can render the pair's poses again)."""
    sampler = PairSampler(
        "room", seed=seed, width=640, height=480, max_baseline_m=1.5, max_angle_deg=50, min_overlap=overlap[0]
    )
    rng = np.random.default_rng(seed)
    kept = 0
    while kept < count:
        pair = sampler.sample(rng)
        if pair.covisible0.mean() <= overlap[1]:
            kept += 1
            yield sampler, pair


def save_pair(folder: Path, index: int, pair: TrainingPair) -> str:
    """Write pair ``index``'s images into ``folder`` as ``NNN-0.png`` and ``NNN-1.png``; its
    ``pairs_with_gt.txt`` line."""
    names = [f"{index:03d}-{side}.png" for side in (0, 1)]
    for name, image in zip(names, (pair.image0, pair.image1)):
        Image.fromarray(image).save(folder / name)
    return pair_line(*names, pair.camera0.K, pair.camera1.K, pair.cam1_from_cam0.matrix)


def synthetic_pairs(out: Path, seed: int, count: int, overlap: tuple[float, float]) -> list:
    """``count`` pairs with ``overlap`` (low, high) of image 0 covisible; images, pairs file and flows."""
    folder = out / synthetic_folder(overlap)
    folder.mkdir(parents=True, exist_ok=True)
    lines, flows = [], {}
    for index, (_, pair) in enumerate(sampled_pairs(seed, count, overlap)):
        lines.append(save_pair(folder, index, pair))
        flows[f"{index:03d}"] = (pair.flow1, pair.covisible1)
    (folder / "pairs_with_gt.txt").write_text("\n".join(lines) + "\n")
    np.savez_compressed(
        folder / "flows.npz",
        **{f"{k}-flow1": v[0] for k, v in flows.items()},
        **{f"{k}-cov1": v[1] for k, v in flows.items()},
    )
    print(f"synthetic: {len(lines)} pairs with {overlap[0]:.0%}-{overlap[1]:.0%} of image 0 covisible")


def match_eval(matcher: str, areas: str, pairs: Path, images: Path, out: Path, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "reloc.cli", "match-eval", "--matcher", matcher, "--areas", areas, *extra]
    command += ["--pairs", str(pairs), "--images", str(images), "--out", str(out)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def reference_matches(pairs: Path, images: Path, cache: Path) -> dict[str, np.ndarray]:
    """Per pair ("name0 name1"), RootSIFT matches (M, 4: x0, y0, x1, y1, full-size pixels) that
    agree with the ground-truth relative pose; computed once and cached in ``cache`` (.npz)."""
    if cache.is_file():
        return dict(np.load(cache))
    matcher = build_pair_matcher("sift", PairMatcherConfig(resize_max=0, max_keypoints=8000))
    references = {}
    for pair in read_pairs_with_gt(pairs):
        points0, points1 = matcher.match(read_image(images / pair.name0), read_image(images / pair.name1))
        fundamental = fundamental_matrix(pair.K0, pair.K1, pair.cam1_from_cam0)
        agree = sampson_distances(points0, points1, fundamental) <= REFERENCE_MAX_PX
        references[f"{pair.name0} {pair.name1}"] = np.hstack([points0[agree], points1[agree]])
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, **references)
    return references


def judged_area_pairs(metrics: dict, seen_in_image0, min_seen: int) -> tuple[int, int, int]:
    """(correct, judged, all) area pairs of an area-matching run. ``seen_in_image0(pair, box1)``
    gives the points (K, 2) of image 0 that what box1 sees lies at (module docstring); an area pair
    with fewer than ``min_seen`` of them is not judged, and one is correct when at least half lie
    in box0."""
    correct = judged = total = 0
    for pair, details in zip(metrics["per_pair"], metrics["per_pair_areas"]):
        for box0, box1 in details["area_pairs"]:
            total += 1
            seen = seen_in_image0(pair, box1)
            if len(seen) >= min_seen:
                judged += 1
                correct += int(len(seen) > 0 and inside_box(seen, box0).mean() >= 0.5)
    return correct, judged, total


def real_area_precision(metrics: dict, references: dict[str, np.ndarray]) -> tuple[int, int, int]:
    """(correct, judged, all) area pairs of a run on real pairs, judged by the reference matches
    with their image-1 point in box1."""

    def seen_in_image0(pair: dict, box1: list[float]) -> np.ndarray:
        reference = references[f"{pair['name0']} {pair['name1']}"]
        return reference[inside_box(reference[:, 2:], box1), :2]

    return judged_area_pairs(metrics, seen_in_image0, REFERENCE_MIN)


def area_precision(metrics: dict, flows: dict) -> tuple[int, int]:
    """(correct, all) area pairs of a run on the synthetic pairs, judged by the exact flow of box1's
    covisible pixels (a box seeing nothing of image 0 counts as wrong)."""

    def seen_in_image0(pair: dict, box1: list[float]) -> np.ndarray:
        key = Path(pair["name0"]).name[:3]
        x0, y0, x1, y1 = (int(round(v)) for v in box1)
        return flows[f"{key}-flow1"][y0:y1, x0:x1][flows[f"{key}-cov1"][y0:y1, x0:x1]]

    correct, _, total = judged_area_pairs(metrics, seen_in_image0, 0)
    return correct, total


def pair_sets(args) -> list[tuple[str, Path, Path]]:
    """(label, pairs file, image folder) of every set in ``args.sets``."""
    sets = []
    for kind in ("easy", "wide"):
        for scene in STRECHA if kind in args.sets else ():
            pairs = args.strecha / scene / "pairs_with_gt.txt"
            if kind == "wide":
                pairs = args.pairs / "strecha-wide" / f"{scene}.txt"
            sets.append((f"{scene} {kind}", pairs, args.strecha / scene))
    if "synthetic" in args.sets:
        for synthetic in sorted(args.pairs.glob("synthetic-*")):
            sets.append((synthetic.name.replace("-", " ", 1), synthetic / "pairs_with_gt.txt", synthetic))
    return sets


@functools.lru_cache(maxsize=1)
def synthetic_flows(path: Path) -> dict[str, np.ndarray]:
    """The synthetic pairs' flows and covisibility masks (``flows.npz``, ~200 MB), read once for
    every run of a set."""
    return dict(np.load(path))


def precision_cell(label: str, pairs: Path, images: Path, metrics: dict, args) -> str:
    """The area precision of one area-matching run: "correct/all" on the synthetic pairs,
    "correct/judged (+N not judged)" on the real ones."""
    if label.startswith("synthetic"):
        correct, total = area_precision(metrics, synthetic_flows(pairs.parent / "flows.npz"))
        return f"{correct}/{total}"
    cache = args.pairs / "references" / f"{label.replace(' ', '-')}.npz"
    correct, judged, total = real_area_precision(metrics, reference_matches(pairs, images, cache))
    return f"{correct}/{judged} (+{total - judged} not judged)"


def runs(args, folder: Path):
    """(label, pairs file, images, matcher, areas, result JSON under ``folder``) of every run."""
    for label, pairs, images in pair_sets(args):
        for matcher in args.matchers:
            for areas in args.areas:
                yield label, pairs, images, matcher, areas, folder / label.replace(" ", "-") / f"{matcher}-{areas}.json"


def evaluate(args) -> None:
    print("| pairs | matcher | areas | AUC@5 | AUC@10 | AUC@20 | matches | ms/pair | ms by part | area precision |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|---|")
    for label, pairs, images, matcher, areas, out in runs(args, args.out):
        out.parent.mkdir(parents=True, exist_ok=True)
        extra = [f"--{key}={value}" for key, value in args.area_options.items() if value is not None]
        metrics = match_eval(matcher, areas, pairs, images, out, extra)
        parts = metrics.get("ms_per_pair_by_part", {})
        split = ", ".join(f"{part} {ms:.0f}" for part, ms in parts.items()) or "–"
        precision = precision_cell(label, pairs, images, metrics, args) if areas != "none" else "–"
        print(
            f"| {label} | {matcher} | {areas} | {metrics['auc_5']:.1f} | {metrics['auc_10']:.1f} | "
            f"{metrics['auc_20']:.1f} | {metrics['matches_per_pair']:.0f} | {metrics['ms_per_pair']:.0f} | "
            f"{split} | {precision} |",
            flush=True,
        )


def precision(args) -> None:
    """The area precision of every area-matching run of an earlier ``eval`` (``--runs``)."""
    print("| pairs | matcher | areas | area precision |")
    print("|---|---|---|---|")
    for label, pairs, images, matcher, areas, run in runs(args, args.runs):
        if areas != "none" and run.is_file():
            cell = precision_cell(label, pairs, images, json.loads(run.read_text()), args)
            print(f"| {label} | {matcher} | {areas} | {cell} |", flush=True)


def pool(args) -> None:
    """AUC@5/10/20 over the pairs of set ``args.set`` in every folder of ``args.runs``, by matcher
    and area matching, with the gain over the matcher alone."""
    errors: dict[tuple[str, str], list[float]] = {}
    for folder in args.runs:
        for run in sorted((folder / args.set).glob("*.json")):
            matcher, areas = run.stem.rsplit("-", 1)
            pairs = json.loads(run.read_text())["per_pair"]
            errors.setdefault((matcher, areas), []).extend(pair["error_deg"] for pair in pairs)
    header = " | ".join(f"AUC@{t}" for t in AUC_THRESHOLDS_DEG)
    print(f"| matcher | areas | pairs | {header} | AUC@5 against the matcher alone |")
    print("|---|---|---:|" + "---:|" * len(AUC_THRESHOLDS_DEG) + "---:|")
    for (matcher, areas), values in sorted(errors.items()):
        aucs = pose_auc(np.array(values))
        alone = errors.get((matcher, "none"))
        gain = f"{aucs[0] - pose_auc(np.array(alone))[0]:+.1f}" if alone and areas != "none" else "–"
        cells = " | ".join(f"{auc:.1f}" for auc in aucs)
        print(f"| {matcher} | {areas} | {len(values)} | {cells} | {gain} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pairs = commands.add_parser("pairs", help="write the wide-baseline and low-overlap pair sets")
    pairs.add_argument("--strecha", type=Path, required=True)
    pairs.add_argument("--out", type=Path, required=True)
    pairs.add_argument("--synthetic-seed", type=int, default=7, help="never 0; 7 reported, 5 for choosing settings")
    pairs.add_argument(
        "--synthetic-pairs", type=int, default=90, help="low-overlap pairs (one pair moves AUC@5 by about 100 / N)"
    )
    pairs.add_argument(
        "--synthetic-overlap",
        type=float,
        nargs=2,
        default=LOW_OVERLAP,
        metavar=("LOW", "HIGH"),
        help="share of image 0 covisible in the synthetic pairs (the low-overlap set: 0.1 0.4)",
    )
    run = commands.add_parser("eval", help="match-eval every matcher with every kind of area matching on every set")
    run.add_argument("--pairs", type=Path, required=True)
    run.add_argument("--strecha", type=Path, required=True)
    run.add_argument("--area-pairs", type=int, help="area pairs whose crops are matched (default: match-eval's)")
    run.add_argument("--crop-size", type=int, help="long side an area crop is matched at (default: match-eval's)")
    run.add_argument("--crop-keypoints", type=int, help="keypoints per area crop (default: match-eval's)")
    run.add_argument("--min-zoom", type=float, help="skip area pairs matched under this x the global resolution")
    run.add_argument("--em-iterations", type=int, help="DMESA's EM refinement (default: match-eval's, none)")
    run.add_argument("--out", type=Path, required=True)
    pooled = commands.add_parser("pool", help="AUC over the pairs of one set in several eval outputs")
    pooled.add_argument("--runs", type=Path, nargs="+", required=True, help="eval --out folders")
    pooled.add_argument("--set", default="synthetic-low-overlap", help="the set's folder in each")
    again = commands.add_parser("precision", help="the area precision of an earlier eval's runs")
    again.add_argument("--pairs", type=Path, required=True)
    again.add_argument("--strecha", type=Path, required=True)
    again.add_argument("--runs", type=Path, required=True, help="the earlier eval's --out")
    for command in (run, again):
        command.add_argument("--matchers", nargs="+", default=["sift", "xfeat-star", "casp"])
        command.add_argument("--areas", nargs="+", default=["none", "mesa", "dmesa"], choices=["none", "mesa", "dmesa"])
        command.add_argument(
            "--sets", nargs="+", default=["easy", "wide", "synthetic"], choices=["easy", "wide", "synthetic"]
        )
    args = parser.parse_args()
    if args.command == "pairs":
        strecha_wide_pairs(args.strecha, args.out)
        synthetic_pairs(args.out, args.synthetic_seed, args.synthetic_pairs, tuple(args.synthetic_overlap))
    elif args.command == "precision":
        precision(args)
    elif args.command == "pool":
        pool(args)
    else:
        args.area_options = {
            "area-pairs": args.area_pairs,
            "crop-size": args.crop_size,
            "crop-keypoints": args.crop_keypoints,
            "min-zoom": args.min_zoom,
            "em-iterations": args.em_iterations,
        }
        evaluate(args)


if __name__ == "__main__":
    main()
