"""Prior poses for localizers that refine a pose (FaVoR): from the retrieved keyframes or from a
results file of another localizer.

``priors.keyframes``: each query's retrieved keyframes' poses, in retrieval order, labelled by
keyframe name. ``priors.results``: each query's pose in a results file (reloc's format: the
output of ``reloc localize``/``reloc eval`` with any config), labelled ``results:NAME``; a query
the file lacks or reports failed gets no prior, and its localizer reports it failed with that
reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import PipelineError
from ..io.map_folder import SFM_FOLDER
from ..io.results import read_results
from ..mapping.store import keyframe_poses
from ..pipeline.registry import Stage, register_stage
from ..types import Frame, Pose


@dataclass
class Prior:
    """A prior pose (cam_from_world) and where it came from (a keyframe name, ``results:NAME``)."""

    source: str
    pose: Pose


@dataclass
class PriorSet:
    """A query's priors, in the order to try them; with none, ``missing`` says why."""

    priors: list[Prior]
    missing: str = ""


@register_stage
class KeyframePriors(Stage):
    name = "priors.keyframes"
    needs = (SFM_FOLDER,)
    inputs = {"retrieved": dict[str, list[str]], "map_dir": Path}
    outputs = {"priors": dict[str, PriorSet]}
    cacheable = False

    def run(self, retrieved: dict[str, list[str]], map_dir: Path) -> dict:
        poses = keyframe_poses(map_dir)
        priors = {}
        for name, keyframes in retrieved.items():
            missing = "" if keyframes else "no keyframe was retrieved"
            priors[name] = PriorSet([Prior(keyframe, poses[keyframe]) for keyframe in keyframes], missing)
        return {"priors": priors}


@dataclass
class ResultsPriorsConfig:
    path: str = ""  # results file whose poses are the priors (required when the stage runs)


@register_stage
class ResultsPriors(Stage):
    name = "priors.results"
    Config = ResultsPriorsConfig
    inputs = {"frames": list[Frame]}
    outputs = {"priors": dict[str, PriorSet]}
    cacheable = False

    def run(self, frames: list[Frame]) -> dict:
        if not self.config.path:
            raise PipelineError("priors.results needs the results file of the prior poses: --set priors.path=RESULTS")
        path = Path(self.config.path)
        results = read_results(path)
        unknown = sorted(set(results) - {frame.name for frame in frames})
        if len(unknown) == len(results) and results:
            example = unknown[0]
            raise PipelineError(f"{path}: none of its {len(results)} queries is a query of this run (e.g. {example})")
        priors = {}
        for frame in frames:
            result = results.get(frame.name)
            if result is None:
                priors[frame.name] = PriorSet([], f"{path} has no pose for this query")
            elif result.pose is None:
                priors[frame.name] = PriorSet([], f"{path} reports this query failed ({result.reason})")
            else:
                priors[frame.name] = PriorSet([Prior(f"results:{path.name}", result.pose)])
        return {"priors": priors}
