"""NeuMap side by side with the default pipeline (and others named) on the same scenes, the
pruning curve, and the generalisation gap (a scene the decoder trained on against one it never saw).

    python benchmarks/neumap.py --out runs/neumap-bench --demo data/synthetic-7scenes-seed0 \\
        --strecha ../shared/data/strecha --seen data/neumap/7scenes-seed11 --unseen data/neumap/7scenes-seed101 \\
        --peers default --prune 0 0.02 0.05 0.1 0.2 --prune-scenes demo fountain-P11

Every row is a fresh ``reloc eval``. The pruning curve re-prunes the codes of the NeuMap map
built with ``prune_threshold: 0`` (pruning does not change the optimised codes, only which are
kept) and localizes against each pruned copy. ``--decoder CKPT`` runs NeuMap with a decoder
checkpoint of ``reloc train neumap`` instead of the shipped one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from reloc.io.map_folder import MAP_FILE, NEUMAP_FILE
from reloc.mapping.compact import file_entries
from reloc.neumap.store import NeumapMap

STRECHA = ("fountain-P11", "Herz-Jesus-P8", "castle-P19")


def evaluate(config: str, dataset: str, root: Path, out: Path, map_dir: Path | None = None, sets=()) -> dict:
    command = [sys.executable, "-m", "reloc.cli", "eval", "--config", config, "--dataset", dataset]
    command += ["--root", str(root), "--out", str(out), *(["--map", str(map_dir)] if map_dir else [])]
    command += [part for item in sets for part in ("--set", item)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "metrics.json").read_text())


def median(metrics: dict, key: str) -> str:
    """A median error, or "–" when half the queries or more failed (failures count as infinite)."""
    return "–" if metrics[key] is None else f"{metrics[key]:.2f}"


def row(label: str, scene: str, metrics: dict, out: Path) -> str:
    timing = metrics["timing_s"]
    stages = " + ".join(f"{key} {1000 * value:.0f}" for key, value in timing.items())
    total = 1000 * sum(timing.values())
    record = yaml.safe_load((out / "map" / "map.yaml").read_text()) if (out / "map" / "map.yaml").is_file() else {}
    mapping = f"{sum((record.get('mapping_seconds') or {}).values()):.0f}"
    neumap = out / "map" / NEUMAP_FILE
    codes = NeumapMap.load(neumap).record if neumap.is_file() else {}
    optimisation = f"{codes['seconds']:.0f} s, {codes['steps']} steps ({codes['stopped_by']})" if codes else "–"
    recall = metrics["recall"]
    return (
        f"| {label} | {scene} | {metrics['n_failed']}/{metrics['n_queries']} | {median(metrics, 'median_t_cm')} | "
        f"{median(metrics, 'median_r_deg')} | {100 * recall['5cm_5deg']:.0f} % | "
        f"{100 * recall['50cm_5deg']:.0f} % | {total:.0f} ({stages}) | "
        f"{(metrics['map_bytes'] or 0) / 1e6:.2f} | {optimisation} | {mapping} |"
    )


def record_pruned(map_dir: Path, threshold: float) -> None:
    """Record the re-pruned ``neumap.pt`` in the copy's ``map.yaml`` (its size and SHA-256, as
    ``reloc export`` does), so that the map check accepts it; the copy is no longer a cache hit."""
    record = yaml.safe_load((map_dir / MAP_FILE).read_text())
    record["artifacts"][NEUMAP_FILE]["files"] = file_entries(map_dir, NEUMAP_FILE)
    record.update(mapping_key=None, pruned_at=threshold)
    (map_dir / MAP_FILE).write_text(yaml.safe_dump(record, sort_keys=False))


def decoder_sets(decoder: Path | None) -> list[str]:
    """``reloc eval --set`` overrides that make both NeuMap stages use ``decoder`` (None: the shipped one)."""
    return [f"mapping.codes.decoder={decoder}", f"localization.pnp.decoder={decoder}"] if decoder else []


def prune_curve(
    label: str, dataset: str, root: Path, built: Path, thresholds: list[float], out: Path, decoder: Path | None
) -> None:
    """Localize against copies of ``built``'s map whose codes are pruned at each threshold."""
    neumap = NeumapMap.load(built / "map" / NEUMAP_FILE)
    for threshold in thresholds:
        copy = out / f"{label}-prune-{threshold:g}"
        if copy.exists():
            shutil.rmtree(copy)
        shutil.copytree(built / "map", copy / "map")
        pruned = neumap.pruned(threshold)
        pruned.save(copy / "map" / NEUMAP_FILE)
        record_pruned(copy / "map", threshold)
        metrics = evaluate("neumap", dataset, root, copy / "run", copy / "map", decoder_sets(decoder))
        print(
            f"| {label} | {threshold:g} | {pruned.record['kept_codes']}/{pruned.kept.numel()} | "
            f"{(copy / 'map' / NEUMAP_FILE).stat().st_size / 1e6:.2f} | {metrics['n_failed']}/{metrics['n_queries']} | "
            f"{median(metrics, 'median_t_cm')} | {100 * metrics['recall']['5cm_5deg']:.0f} % | "
            f"{100 * metrics['recall']['50cm_5deg']:.0f} % |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--demo", type=Path)
    parser.add_argument("--strecha", type=Path)
    parser.add_argument("--seen", type=Path, help="a 7-Scenes-layout scene the decoder trained on")
    parser.add_argument("--unseen", type=Path, help="a 7-Scenes-layout scene it never saw")
    parser.add_argument("--peers", nargs="*", default=["default"], help="configs run beside neumap")
    parser.add_argument("--prune", nargs="*", type=float, default=[], help="pruning thresholds of the curve")
    parser.add_argument("--prune-scenes", nargs="*", default=["demo", "fountain-P11"])
    parser.add_argument("--decoder", type=Path, help="NeuMap decoder checkpoint (default: the shipped one)")
    args = parser.parse_args()
    neumap_sets = decoder_sets(args.decoder)
    scenes = []
    if args.demo:
        scenes.append(("demo", "7scenes", args.demo))
    if args.strecha:
        scenes += [(name, "cambridge", args.strecha / name) for name in STRECHA]
    header = ["pipeline", "scene", "failed", "median t (cm)", "median R (deg)", "5cm/5deg", "50cm/5deg"]
    header.append("ms/query by stage")
    print("| " + " | ".join([*header, "map MB", "code optimisation", "mapping s"]) + " |")
    print("|---|---|---:|---:|---:|---:|---:|---|---:|---|---|")
    built = {}
    for label, dataset, root in scenes:
        for config in ["neumap", *args.peers]:
            out = args.out / config / label
            sets = ["mapping.codes.prune_threshold=0"] if config == "neumap" and label in args.prune_scenes else []
            metrics = evaluate(config, dataset, root, out, sets=sets + (neumap_sets if config == "neumap" else []))
            print(row(config + (" (unpruned)" if sets else ""), label, metrics, out), flush=True)
            if sets:
                built[label] = (dataset, root, out)
    for label, root in (("seen (trained on)", args.seen), ("unseen", args.unseen)):
        if root is not None:
            out = args.out / "neumap" / root.name
            metrics = evaluate("neumap", "7scenes", root, out, sets=neumap_sets)
            print(row("neumap", f"{root.name}, {label}", metrics, out), flush=True)
    if args.prune:
        print(
            "\n| scene | prune threshold | kept codes | neumap.pt MB | failed | median t (cm) | 5cm/5deg | 50cm/5deg |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for label, (dataset, root, out) in built.items():
            prune_curve(label, dataset, root, out, args.prune, args.out / "prune", args.decoder)


if __name__ == "__main__":
    main()
