"""The guided round of the keyframe rounds (``pose.pnp`` ``guided_round``) off and on, on synthetic
scenes that no other table reports: right poses gained, wrong poses accepted.

    python benchmarks/guided_round.py --out runs/guided-round --seeds 1 2

For every seed a synthetic 7-Scenes-layout scene (harsh query appearance; the next seed's scene
gives the "other scene" queries) is mapped once with the default config, and its queries are
localized in the kinds of ``benchmarks/confidence.py`` that matter here: as given (a pose can be
right), with the focal length scaled by 0.67 and 1.5 (idem), mirrored and from the other scene
(every accepted pose is wrong). Prints, per seed, kind and variant: accepted right, accepted
wrong, refused, and the ms of matching per query (median).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from confidence import FOCAL_SCALES, mirrored, scaled_camera, scene_root, score

from reloc.api import load_pipeline
from reloc.datasets import load_dataset
from reloc.pipeline.memory import keep_freed_memory
from reloc.pipeline.runner import build_map, localize

VARIANTS = {"rounds": ["pnp.guided_round=false"], "rounds + guided": ["pnp.guided_round=true"]}


def kinds(out: Path, seed: int, roots: dict[int, Path]) -> dict:
    queries = load_dataset("7scenes", roots[seed]).frames("test")
    chosen = {"as given": (queries, True)}
    for scale in (FOCAL_SCALES[0], FOCAL_SCALES[-1]):
        frames = [dataclasses.replace(f, camera=scaled_camera(f.camera, scale)) for f in queries]
        chosen[f"focal x{scale:g}"] = (frames, True)
    chosen["mirrored"] = (mirrored(queries, out / f"mirrored-{seed}"), False)
    chosen["other scene"] = (load_dataset("7scenes", roots[seed + 1]).frames("test"), False)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/guided-round"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--frames", default="150,40")
    parser.add_argument("--kinds", nargs="*", help="query kinds to run (default: all)")
    args = parser.parse_args()
    keep_freed_memory()
    roots = {seed: scene_root(args.out, seed, args.frames) for seed in {*args.seeds, *(s + 1 for s in args.seeds)}}
    print("| seed | queries | variant | right | wrong accepted | refused | matching ms/query |")
    print("|---|---|---|---:|---:|---:|---:|")
    for seed in args.seeds:
        map_dir = args.out / f"map-{seed}"
        scene = load_dataset("7scenes", roots[seed])
        if not (map_dir / "map.yaml").is_file():
            build_map(load_pipeline("default"), scene.frames("train"), map_dir, scene.description())
        for kind, (frames, can_be_right) in kinds(args.out, seed, roots).items():
            if args.kinds and kind not in args.kinds:
                continue
            for variant, overrides in VARIANTS.items():
                results = localize(map_dir, frames, pipeline=load_pipeline("default", overrides))
                rows = score(frames, results, can_be_right)
                right = sum(row["right"] for row in rows)
                accepted = sum(row["accepted"] for row in rows)
                matching = np.median([1000 * r.timings.get("matching", 0.0) for r in results])
                print(
                    f"| {seed} | {kind} | {variant} | {right}/{len(rows)} | {accepted - right} | "
                    f"{len(rows) - accepted} | {matching:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
