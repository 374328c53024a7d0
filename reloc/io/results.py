"""Results files: one query a line, ``name qw qx qy qz tx ty tz`` (cam_from_world), as hloc and
the 7-Scenes/Cambridge tooling read them.

A failed query is written as a comment line ``# FAILED name: reason`` so that other tools skip it
(and so count it as failed) while reloc reads the reason back. Per-query details (inliers,
per-stage timings, method extras) go to a sidecar ``<results stem>.details.json``.

Names are written as they are. reloc reads a line as the name followed by the last seven numbers,
so a name with spaces reads back whole; tools that split lines on whitespace (hloc) do not read
such names, and a name holding ": " cannot be told from the reason on a FAILED line.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ResultsError
from ..types import Camera, Pose, PoseEvidence, QueryRecord, QueryResult, Round
from .text import utf8_text

GROUND_TRUTH_FILE = "ground_truth.txt"  # beside a run's results: the queries' ground-truth poses

HEADER = "# reloc results: name qw qx qy qz tx ty tz (cam_from_world). Failed queries are comments: FAILED name: reason"
FAILED_PREFIX = "# FAILED "


def details_path(results_path: Path) -> Path:
    return results_path.with_name(results_path.stem + ".details.json")


def write_results(path: str | Path, results: list[QueryResult]) -> None:
    """Write the results file and its details sidecar."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [HEADER]
    for result in results:
        if result.pose is None:
            lines.append(f"{FAILED_PREFIX}{result.name}: {result.reason or 'no pose'}")
        else:
            lines.append(pose_line(result.name, result.pose))
    path.write_text("\n".join(lines) + "\n")
    details = {
        r.name: {
            "success": r.success,
            "reason": r.reason,
            "num_inliers": r.num_inliers,
            "timings": r.timings,
            **record_entries(r.record),
        }
        for r in results
    }
    details_path(path).write_text(json.dumps(details, indent=1, default=_json_default))


def record_entries(record: QueryRecord) -> dict[str, Any]:
    """A query record as the sidecar's JSON entries (the format the viewer and older runs share)."""
    entries: dict[str, Any] = {
        "num_matches": record.num_matches,
        "retrieved": record.retrieved,
        "rounds": [dataclasses.asdict(round_) for round_ in record.rounds],
        "inliers": {
            "points2d": np.round(np.asarray(record.inlier_points2d, np.float64).reshape(-1, 2), 2).tolist(),
            "landmarks": np.asarray(record.inlier_landmarks, np.int64).tolist(),
        },
    }
    if record.evidence is not None:
        entries["evidence"] = dataclasses.asdict(record.evidence)
    if record.image is not None:
        entries["image"] = str(record.image)
    if record.camera is not None:
        camera = record.camera
        entries["camera"] = {
            "model": camera.model,
            "width": camera.width,
            "height": camera.height,
            "params": list(camera.params),
        }
    return {**entries, **record.extra}


def parse_record(entry: dict[str, Any]) -> QueryRecord:
    """The inverse of :func:`record_entries`; unknown keys go to ``extra``."""
    inliers = entry.get("inliers") or {"points2d": [], "landmarks": []}
    if len(inliers["points2d"]) != len(inliers["landmarks"]):
        raise ValueError(f"{len(inliers['points2d'])} inlier points but {len(inliers['landmarks'])} landmarks")
    camera = entry.get("camera")
    known = {
        "success",
        "reason",
        "num_inliers",
        "timings",
        "num_matches",
        "retrieved",
        "rounds",
        "inliers",
        "image",
        "camera",
        "evidence",
    }
    return QueryRecord(
        retrieved=list(entry.get("retrieved") or ([entry["prior"]] if "prior" in entry else [])),
        rounds=[Round(**round_) for round_ in entry.get("rounds") or []],
        num_matches=int(entry.get("num_matches", 0)),
        inlier_points2d=np.array(inliers["points2d"], np.float64).reshape(-1, 2),
        inlier_landmarks=np.array(inliers["landmarks"], np.int64),
        image=Path(entry["image"]) if entry.get("image") else None,
        evidence=parse_evidence(entry["evidence"]) if entry.get("evidence") else None,
        camera=Camera(camera["model"], int(camera["width"]), int(camera["height"]), tuple(camera["params"]))
        if camera
        else None,
        extra={key: value for key, value in entry.items() if key not in known},
    )


def parse_evidence(entry: dict[str, Any]) -> PoseEvidence:
    """A pose's evidence from its sidecar entry."""
    names = [f.name for f in dataclasses.fields(PoseEvidence)]
    return PoseEvidence(**{name: entry[name] for name in names})


def pose_line(name: str, pose: Pose) -> str:
    return " ".join([name, *(f"{v:.10g}" for v in np.concatenate([pose.qvec, pose.t]))])


def write_poses(path: str | Path, poses: dict[str, Pose]) -> None:
    """Poses alone (e.g. the ground truth of a run) in the results format, no details sidecar."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([HEADER, *(pose_line(name, pose) for name, pose in poses.items())]) + "\n")


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _parse_pose_line(path: Path, line_number: int, tokens: list[str]) -> Pose:
    if len(tokens) != 8:
        raise ResultsError(f"{path}:{line_number}: expected 'name qw qx qy qz tx ty tz', got {len(tokens)} fields")
    try:
        values = [float(v) for v in tokens[1:]]
    except ValueError:
        raise ResultsError(f"{path}:{line_number}: pose values of {tokens[0]} are not numbers") from None
    if not all(math.isfinite(v) for v in values):
        raise ResultsError(f"{path}:{line_number}: pose of {tokens[0]} contains NaN or infinite values")
    try:
        return Pose.from_qvec_tvec(values[:4], values[4:])
    except ValueError as error:
        raise ResultsError(f"{path}:{line_number}: {error}") from None


def read_results(path: str | Path) -> dict[str, QueryResult]:
    """Results by query name; failed queries have ``pose=None``. Details are merged when present."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path}: results file does not exist")
    results: dict[str, QueryResult] = {}
    for line_number, line in enumerate(utf8_text(path, "results file", ResultsError).splitlines(), start=1):
        if line.startswith(FAILED_PREFIX):
            name, _, reason = line[len(FAILED_PREFIX) :].partition(": ")
            result = QueryResult(name.strip(), None, reason.strip())
        elif not line.strip() or line.lstrip().startswith("#"):
            continue
        else:
            tokens = line.strip().rsplit(maxsplit=7)  # the name may hold spaces; the pose is the last 7
            result = QueryResult(tokens[0], _parse_pose_line(path, line_number, tokens))
        if result.name in results:
            raise ResultsError(f"{path}:{line_number}: query {result.name} appears twice")
        results[result.name] = result
    _merge_details(details_path(path), results)
    return results


def _merge_details(path: Path, results: dict[str, QueryResult]) -> None:
    if not path.is_file():
        return
    try:
        details = json.loads(utf8_text(path, "details sidecar", ResultsError))
    except json.JSONDecodeError as error:
        raise ResultsError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(details, dict):
        raise ResultsError(f"{path}: expected an object of query entries, got {type(details).__name__}")
    for name, entry in details.items():
        if name in results:
            try:
                results[name].num_inliers = int(entry.get("num_inliers", 0))
                results[name].timings = {k: float(v) for k, v in entry.get("timings", {}).items()}
                results[name].record = parse_record(entry)
            except (AttributeError, KeyError, TypeError, ValueError) as error:
                raise ResultsError(f"{path}: the entry of {name} is malformed ({error!r})") from None
