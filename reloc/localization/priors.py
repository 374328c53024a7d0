"""Prior poses for localizers that refine a pose (FaVoR): from the retrieved keyframes, from a
results file of another localizer, or from another localizer's node in the same pipeline.

``priors.keyframes``: each query's retrieved keyframes' poses, in retrieval order, labelled by
keyframe name. ``priors.results``: each query's pose in a results file (reloc's format: the
output of ``reloc localize``/``reloc eval`` with any config), labelled ``results:NAME``; a query
the file lacks or reports failed gets no prior, and its localizer reports it failed with that
reason. ``priors.localized``: each query's pose from another localization node of the same graph
(e.g. the feature-matching ``pose.pnp``), labelled ``localized``. ``priors.merge``: two prior
sets in order (``first``'s priors, then ``then``'s), e.g. a localizer's pose and then the
retrieved keyframes for the queries it could not localize or got wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import PipelineError, require_range
from ..io.map_folder import SFM_FOLDER
from ..io.results import read_results
from ..mapping.store import keyframe_poses
from ..pipeline.registry import Stage, register_stage
from ..types import Frame, Pose, QueryResult


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


@dataclass
class KeyframePriorsConfig:
    top: int = 0  # the first this many retrieved keyframes (0: all)

    def __post_init__(self):
        require_range(self, "top", low=0)


@register_stage
class KeyframePriors(Stage):
    name = "priors.keyframes"
    Config = KeyframePriorsConfig
    needs = (SFM_FOLDER,)
    inputs = {"retrieved": dict[str, list[str]], "map_dir": Path}
    outputs = {"priors": dict[str, PriorSet]}
    cacheable = False

    def run(self, retrieved: dict[str, list[str]], map_dir: Path) -> dict:
        poses = keyframe_poses(map_dir)
        priors = {}
        for name, keyframes in retrieved.items():
            missing = "" if keyframes else "no keyframe was retrieved"
            kept = keyframes[: self.config.top] if self.config.top else keyframes
            priors[name] = PriorSet([Prior(keyframe, poses[keyframe]) for keyframe in kept], missing)
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


@register_stage
class LocalizedPriors(Stage):
    name = "priors.localized"
    inputs = {"results": list[QueryResult]}
    outputs = {"priors": dict[str, PriorSet]}
    cacheable = False

    def run(self, results: list[QueryResult]) -> dict:
        priors = {
            result.name: PriorSet([Prior("localized", result.pose)])
            if result.pose is not None
            else PriorSet([], f"the prior localizer failed ({result.reason})")
            for result in results
        }
        return {"priors": priors}


@register_stage
class MergedPriors(Stage):
    name = "priors.merge"
    inputs = {"first": dict[str, PriorSet], "then": dict[str, PriorSet]}
    outputs = {"priors": dict[str, PriorSet]}
    cacheable = False

    def run(self, first: dict[str, PriorSet], then: dict[str, PriorSet]) -> dict:
        priors = {}
        for name in first.keys() | then.keys():
            sets = [prior_set for prior_set in (first.get(name), then.get(name)) if prior_set is not None]
            missing = "; ".join(prior_set.missing for prior_set in sets if prior_set.missing)
            priors[name] = PriorSet([prior for prior_set in sets for prior in prior_set.priors], missing)
        return {"priors": priors}
