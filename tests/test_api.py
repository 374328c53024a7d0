"""The Python API and the CLI's config handling: the README's example runs, shipped configs by
name, --set overrides validated like the YAML, training never writes over shipped weights."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import reloc
from reloc.datasets import load_dataset
from reloc.errors import PipelineError, RelocError
from reloc.geometry.errors import pose_error
from reloc.matching.trained import checkpoint_path
from reloc.pipeline.spec import load_pipeline
from reloc.weights import project_weights

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path, monkeypatch):
    code = re.search(r"<!-- api-example -->\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    evaluation, results = namespace["evaluation"], namespace["results"]
    assert evaluation.metrics["n_queries"] == 4 and (tmp_path / "runs" / "api" / "report.md").is_file()
    truth = {f.name: f for f in load_dataset("7scenes", tmp_path / "scene").frames("train")}
    dt, dr = pose_error(results[0].pose, truth["seq-01/frame-000005.color.png"].pose)
    assert dt < 0.02 and dr < 0.5


def test_a_shipped_config_loads_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pipeline = reloc.load_pipeline("default")
    assert pipeline.name == "default" and pipeline.localization.nodes["pnp"].config.confident_inliers == 100
    with pytest.raises(PipelineError, match=r"nope.yaml: pipeline file does not exist \(shipped configs: .*default"):
        load_pipeline("nope.yaml")


def test_overrides_set_values_and_are_validated_like_the_yaml():
    pipeline = reloc.load_pipeline(
        "default", ["localization.pnp.confident_inliers=50", "pnp.pnp.max_error_px=2.5", "landmarks.neighbours=4"]
    )
    assert pipeline.localization.nodes["pnp"].config.confident_inliers == 50
    assert pipeline.localization.nodes["pnp"].config.pnp.max_error_px == 2.5
    assert pipeline.mapping.nodes["landmarks"].config.neighbours == 4
    assert pipeline.resolved()["localization"]["nodes"]["pnp"]["with"]["confident_inliers"] == 50
    errors = {
        "features.max_keypoints=10": r"node 'features' is in mapping and localization; name the graph",
        "mapping.features.max_keypionts=10": r"unknown config key 'with.max_keypionts' for stage 'features.sift'",
        "localization.pnp.confident_inliers=many": r"config key 'with.confident_inliers'",
        "mapping.ghost.x=1": r"mapping has no node 'ghost'",
        "ghost.x=1": r"node 'ghost' is in neither graph",
        "pnp.confident_inliers": r"expected \[section.\]node.key=value",
    }
    for override, message in errors.items():
        with pytest.raises(PipelineError, match=message):
            reloc.load_pipeline("default", [override])


def test_training_writes_a_new_file_and_never_the_shipped_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = checkpoint_path("casp", None)
    assert path.parent == Path("runs") / "train" and path.name.startswith("casp-") and path.parent.is_dir()
    with pytest.raises(RelocError, match="is the shipped checkpoint"):
        checkpoint_path("casp", project_weights("casp.pt"))
