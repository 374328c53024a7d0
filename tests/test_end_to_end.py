"""The default pipeline end to end: a synthetic scene with exact ground truth, real Strecha and 7-Scenes
data."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from reloc.cli import app
from reloc.datasets import load_dataset
from reloc.datasets.synthetic.generate import SynthConfig, generate
from reloc.geometry.errors import pose_error
from reloc.io.results import read_results
from reloc.pipeline.runner import localize

from .overlap import mapped_share

pytestmark = pytest.mark.slow
RELOC = str(Path(sys.executable).with_name("reloc"))


@pytest.fixture(scope="module")
def evaluated_scene(module_folder) -> tuple[Path, Path]:
    """A synthetic room (seed 8, 40 mapping and 4 query frames) and the folder of `reloc eval`
    with the default config on it (its map in ``run/map``)."""
    scene = module_folder / "scene"
    generate(
        SynthConfig("7scenes", seed=8, mapping_frames=40, query_frames=4, mapping_sequences=2, query_sequences=1), scene
    )
    result = CliRunner().invoke(app, ["eval", *dataset_args(scene, module_folder / "run")])
    assert result.exit_code == 0, result.output
    return scene, module_folder / "run"


def test_relocalize_synthetic_scene_end_to_end(tmp_path, monkeypatch, evaluated_scene):
    """eval writes the run folder with per-stage timings and localizes every query that the
    mapping images saw to within 1 cm and 0.5 degrees (measured: at most 0.17 cm, 0.05 degrees);
    the query that looks where no mapping camera looked is reported failed, never given a pose.
    Mapping images localize to their own ground-truth pose through `reloc localize`; an image of
    noise is reported failed."""
    scene, run = evaluated_scene
    shutil.copytree(run, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_queries"] == 4 and set(metrics["timing_s"]) == {"features", "retrieval", "matching", "pnp"}
    assert (tmp_path / "run" / "map" / "sfm" / "points3D.bin").is_file() and metrics["map_bytes"] > 0
    shares = mapped_share(scene)
    assert sorted(share > 0.25 for share in shares.values()) == [
        False,
        True,
        True,
        True,
    ]  # one query sees (almost) nothing mapped
    truth = load_dataset("7scenes", scene).ground_truth()
    for name, outcome in read_results(tmp_path / "run" / "results.txt").items():
        if shares[name] < 0.05:
            assert outcome.pose is None and outcome.reason.startswith(("too few", "PnP")), (name, outcome.reason)
        else:
            assert outcome.pose is not None, (name, outcome.reason)
            dt, dr = pose_error(outcome.pose, truth[name].pose)
            assert dt < 0.01 and dr < 0.5, (name, dt, dr)
    xfeat = Path(__file__).resolve().parents[1] / "configs" / "xfeat.yaml"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--config",
            str(xfeat),
            "--dataset",
            "7scenes",
            "--root",
            str(scene),
            "--out",
            str(tmp_path / "xfeat-run"),
            "--map",
            str(tmp_path / "run" / "map"),
        ],
    )
    assert (
        result.exit_code == 2
        and "the map's features are sift, but the localization graph extracts xfeat" in result.output
    )

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(
        tmp_path / "noise.png"
    )
    mapping = {f.name: f for f in load_dataset("7scenes", scene).frames("train")}
    names = ["seq-01/frame-000005.color.png", "seq-02/frame-000012.color.png"]
    monkeypatch.chdir(scene.parent)  # query names are paths relative to the working folder (absolute outside)
    result = CliRunner().invoke(
        app,
        [
            "localize",
            str(tmp_path / "run" / "map"),
            str(tmp_path / "noise.png"),
            *(str(scene / name) for name in names),
            "--focal",
            "585",
            "--out",
            str(tmp_path / "r.txt"),
        ],
    )
    assert result.exit_code == 0, result.output
    results = read_results(tmp_path / "r.txt")
    noise = results[str(tmp_path / "noise.png")]
    assert noise.pose is None and noise.reason.startswith(("too few", "PnP", "pose not confident")), noise.reason
    for name in names:
        dt, dr = pose_error(results[f"scene/{name}"].pose, mapping[name].pose)
        assert dt < 0.02 and dr < 0.5, (name, dt, dr)
        evidence = results[f"scene/{name}"].record.evidence
        assert evidence.confidence > 100 and abs(evidence.focal_ratio - 1) < 0.05, evidence


def assert_mapped_queries_within(results_file: Path, scene: Path, cm: float, degrees: float) -> None:
    """Every query that sees mapped surface has a pose within ``cm`` and ``degrees``; the one that
    sees nothing mapped is reported failed."""
    shares = mapped_share(scene)
    truth = load_dataset("7scenes", scene).ground_truth()
    for name, outcome in read_results(results_file).items():
        if shares[name] < 0.05:
            assert outcome.pose is None, (name, outcome)
        else:
            assert outcome.pose is not None, (name, outcome.reason)
            dt, dr = pose_error(outcome.pose, truth[name].pose)
            assert dt < cm / 100 and dr < degrees, (name, dt, dr)


def test_a_full_map_and_its_compact_export_localize_within_the_same_tolerance(tmp_path, evaluated_scene):
    """A full map (float16 observation descriptors, raw VLAD, COLMAP tracks) and `reloc export
    --compact` of it (PQ 16 bytes, no tracks) both put every mapped query
    within 1 cm / 0.5 degrees; the export is under a quarter of the full map's bytes, holds only
    what localization and the viewer read, and records its settings and origin."""
    scene, _ = evaluated_scene
    full = [
        "mapping.landmarks.descriptors.kind=float16",
        "mapping.landmarks.colmap_tracks=true",
        "mapping.retrieval.whitened_dims=0",
    ]
    result = CliRunner().invoke(
        app, ["eval", *dataset_args(scene, tmp_path / "full"), *(x for o in full for x in ("--set", o))]
    )
    assert result.exit_code == 0, result.output
    assert_mapped_queries_within(tmp_path / "full" / "results.txt", scene, 1.0, 0.5)
    export = ["export", str(tmp_path / "full" / "map"), str(tmp_path / "compact"), "--compact"]
    result = CliRunner().invoke(app, [*export, "--pq-subvectors", "16"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(
        app, ["eval", *dataset_args(scene, tmp_path / "compact-run"), "--map", str(tmp_path / "compact")]
    )
    assert result.exit_code == 0, result.output
    assert_mapped_queries_within(tmp_path / "compact-run" / "results.txt", scene, 1.0, 0.5)
    sizes = [json.loads((tmp_path / run / "metrics.json").read_text())["map_bytes"] for run in ("full", "compact-run")]
    assert sizes[1] < sizes[0] / 4, sizes
    assert sorted(p.name for p in (tmp_path / "compact").iterdir()) == ["global.h5", "landmarks.h5", "map.yaml", "sfm"]
    record = yaml.safe_load((tmp_path / "compact" / "map.yaml").read_text())
    landmarks = record["pipeline"]["mapping"]["nodes"]["landmarks"]["with"]
    assert landmarks["descriptors"]["kind"] == "pq" and landmarks["descriptors"]["pq_subvectors"] == 16
    assert record["exported_from"] == str(tmp_path / "full" / "map") and record["mapping_key"] is None
    assert CliRunner().invoke(app, ["check", str(tmp_path / "compact")]).exit_code == 0


def test_a_localizer_reading_an_artifact_mapping_removed_is_refused_naming_it(tmp_path, monkeypatch, evaluated_scene):
    """The default map keeps no features.h5 (its localization reads landmarks.h5 only): a
    localizer that needs it is refused before running, naming the file, why it is gone, how to
    keep it and the stages and configs that build it."""
    from reloc.io.map_folder import FEATURES_FILE, LANDMARKS_FILE
    from reloc.localization.stages import LocalizePnP

    scene, run = evaluated_scene
    assert not (run / "map" / FEATURES_FILE).exists()
    assert yaml.safe_load((run / "map" / "map.yaml").read_text())["removed"] == [FEATURES_FILE]
    monkeypatch.setattr(LocalizePnP, "needs", (LANDMARKS_FILE, FEATURES_FILE))
    image = scene / "seq-01" / "frame-000005.color.png"
    out = tmp_path / "r.txt"
    result = CliRunner().invoke(app, ["localize", str(run / "map"), str(image), "--focal", "585", "--out", str(out)])
    assert result.exit_code == 2 and not out.exists()
    message = " ".join(result.output.split())
    assert (
        f"{run / 'map' / FEATURES_FILE}: removed when the map was built, since the map's own localization graph "
        "does not read it, and localization node 'pnp' reads it"
    ) in message
    assert (
        "mapping: keep: [features.h5]" in message and "features.sift" in message and "configs/default.yaml" in message
    )


def test_localize_changes_a_localization_setting_for_one_run_and_refuses_a_mapping_one(tmp_path, evaluated_scene):
    """`reloc localize --set` changes the map's localization graph for that run only: a mapping
    image localizes as recorded, is reported failed when PnP must find more inliers than it has
    keypoints, and localizes again after; the map's record is untouched. A mapping setting is
    refused by name (the map would have to be rebuilt)."""
    scene, run = evaluated_scene
    image = scene / "seq-01" / "frame-000005.color.png"
    record = (run / "map" / "map.yaml").read_text()

    def localize(*options: str):
        out = tmp_path / "r.txt"
        out.unlink(missing_ok=True)
        args = ["localize", str(run / "map"), str(image), "--focal", "585", "--out", str(out), *options]
        result = CliRunner().invoke(app, args)
        return result, (next(iter(read_results(out).values())) if out.exists() else None)

    result, recorded = localize()
    assert result.exit_code == 0 and recorded.pose is not None, result.output
    result, strict = localize("--set", "pnp.pnp.min_inliers=100000")
    assert result.exit_code == 0 and strict.pose is None, result.output
    assert strict.reason.startswith("too few") and "< 100000)" in strict.reason, strict.reason
    result, again = localize()
    assert again.pose is not None and (run / "map" / "map.yaml").read_text() == record

    result, refused = localize("--set", "landmarks.neighbours=3")
    message = " ".join(result.output.split())
    assert result.exit_code == 2 and refused is None
    assert "--set 'landmarks.neighbours=3': a built map's localization settings can change, not its mapping" in message
    assert "localization nodes: features, retrieval, pnp" in message and "rebuild the map with 'reloc map'" in message


def test_queries_from_another_scene_fail(tmp_path, evaluated_scene):
    """Images of another room (same generator, other seed: its walls reuse the bundled
    photographs, so some posters match) localized against a map: every one is reported failed,
    by the inlier rule or as not confident, never given a pose."""
    other = tmp_path / "other"
    generate(
        SynthConfig("7scenes", seed=9, mapping_frames=1, query_frames=8, mapping_sequences=1, query_sequences=1), other
    )
    queries = load_dataset("7scenes", other).frames("test")
    results = localize(evaluated_scene[1] / "map", queries)
    assert len(results) == 8
    for result in results:
        assert result.pose is None and result.reason.startswith(("too few", "pose not confident", "PnP")), result


def test_default_pipeline_on_real_strecha_fountain(tmp_path, strecha_fountain):
    """Real images with LIDAR-grade ground truth: every query localized to well under a cm."""
    config = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--config",
            str(config),
            "--dataset",
            "cambridge",
            "--root",
            str(strecha_fountain),
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_failed"] == 0 and metrics["median_t_cm"] < 0.5 and metrics["median_r_deg"] < 0.1


def test_eval_runs_on_the_real_7scenes_sample(tmp_path, sevenscenes_stairs):
    """Its sequences are three frames at most 1 cm apart: nothing can be triangulated, so every
    query must come back failed with its reason, never with a pose."""
    config = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--config",
            str(config),
            "--dataset",
            "7scenes",
            "--root",
            str(sevenscenes_stairs),
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    queries = load_dataset("7scenes", sevenscenes_stairs).frames("test")
    assert metrics["n_queries"] == len(queries) == 6
    results = read_results(tmp_path / "run" / "results.txt")
    for query in queries:
        outcome = results[query.name]
        if outcome.pose is None:
            assert outcome.reason.startswith(("too few", "PnP")), outcome.reason
        else:
            assert pose_error(outcome.pose, query.pose)[0] < 0.25


def dataset_args(scene: Path, out: Path) -> list[str]:
    return ["--config", "default", "--dataset", "7scenes", "--root", str(scene), "--out", str(out)]


def map_files(folder: Path) -> dict[str, bytes]:
    """Every file of a map folder by relative path, but the node cache and the lock; map.yaml
    without its creation time and timings (its artifact hashes cover every other file)."""
    files = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and not relative.startswith("cache/") and relative != ".reloc.lock":
            files[relative] = path.read_bytes()
    record = yaml.safe_load(files.pop("map.yaml"))
    files["map.yaml"] = yaml.safe_dump({k: v for k, v in record.items() if k not in ("created", "mapping_seconds")})
    return files


def test_a_map_killed_in_every_node_in_turn_is_rebuilt_byte_for_byte(tmp_path):
    """`reloc map` with the default pipeline is killed (SIGKILL) while each mapping node writes
    its file (features.h5, landmarks.h5, global.h5 appear); the killed folder has no
    map.yaml, and the same command run again gives the files of an uninterrupted run, byte for
    byte."""
    scene = tmp_path / "scene"
    generate(
        SynthConfig("7scenes", seed=8, mapping_frames=16, query_frames=2, mapping_sequences=2, query_sequences=1), scene
    )

    def command(out: Path) -> list[str]:
        return [RELOC, "map", *dataset_args(scene, out)]

    assert subprocess.run(command(tmp_path / "alone"), capture_output=True).returncode == 0
    reference = map_files(tmp_path / "alone")
    for written in ("features.h5", "landmarks.h5", "global.h5"):
        out = tmp_path / f"killed-in-{written}"
        run = subprocess.Popen(command(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not (out / written).exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        run.send_signal(signal.SIGKILL)
        assert run.wait() == -signal.SIGKILL, f"the run ended before it wrote {written}"
        assert (out / written).exists() and not (out / "map.yaml").exists()
        rerun = subprocess.run(command(out), capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert map_files(out) == reference, written
