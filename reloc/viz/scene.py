"""What the viewer and the report figures show, read from a map folder and a results file.

Poses are cam_from_world; pixels follow COLMAP (centre of the top-left pixel at (0.5, 0.5)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pycolmap
from matplotlib import colormaps

from ..errors import RelocError, ResultsError
from ..geometry.errors import scored_errors
from ..io.map_folder import FAVOR_FILE, LANDMARKS_FILE, NEUMAP_FILE, SFM_FOLDER, open_artifact, read_map_record
from ..io.results import GROUND_TRUTH_FILE, read_results
from ..types import Camera, Pose, QueryResult


@dataclass
class Keyframe:
    name: str
    camera: Camera
    pose: Pose  # cam_from_world
    image_path: Path | None  # None when the dataset folder is not where the map was built


@dataclass
class QueryView:
    """One localized query. ``t_cm``/``r_deg`` are inf for a failed query and NaN without ground truth."""

    name: str
    camera: Camera | None
    estimate: Pose | None
    ground_truth: Pose | None
    reason: str
    t_cm: float
    r_deg: float
    image_path: Path | None
    inlier_points2d: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (K, 2) query pixels
    inlier_landmarks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (K,) landmark ids
    retrieved: list[str] = field(default_factory=list)  # keyframes retrieval proposed, best first

    @property
    def failed(self) -> bool:
        return self.estimate is None

    def label(self) -> str:
        if self.failed:
            return f"{self.name}  FAILED"
        if math.isnan(self.t_cm):
            return f"{self.name}  {len(self.inlier_landmarks)} inliers"
        return f"{self.name}  {self.t_cm:.1f} cm {self.r_deg:.2f}°"


@dataclass
class Voxels:
    """The voxels of a map's method, each coloured by a value (the colour map spans its range)."""

    method: str  # "FaVoR" or "NeuMap"
    centres: np.ndarray  # (V, 3) world
    sides: np.ndarray  # (V,) metres
    values: np.ndarray  # (V,) FaVoR: training rendering PSNR; NeuMap: share of codes kept


@dataclass
class MapScene:
    map_dir: Path
    points: np.ndarray  # (L, 3) world, index = landmark id
    colors: np.ndarray  # (L, 3) float in [0, 1]
    keyframes: list[Keyframe]
    voxels: Voxels | None  # FaVoR landmark fields or NeuMap voxels
    queries: list[QueryView]
    sparse_map: Any  # reloc.mapping.store.SparseMap of landmarks.h5: each keyframe's observations

    def focus(self) -> tuple[np.ndarray, float]:
        """Centre (median of the landmarks, or of the cameras without landmarks) and radius (taking
        in every camera and 90 % of the landmarks, so that stray far points do not count)."""
        centres = [k.pose.center for k in self.keyframes]
        centres += [p.center for q in self.queries for p in (q.estimate, q.ground_truth) if p is not None]
        centres = np.reshape(centres, (-1, 3))
        points = self.points[np.isfinite(self.points).all(axis=1)]
        if len(points) + len(centres) == 0:
            return np.zeros(3), 1.0
        centre = np.median(points if len(points) else centres, axis=0)
        radius = max([float(np.percentile(np.linalg.norm(points - centre, axis=1), 90))] if len(points) else [0.0])
        radius = max([radius, *np.linalg.norm(centres - centre, axis=1)])
        return centre, max(radius, 1e-3)

    def keyframe(self, name: str) -> Keyframe | None:
        return next((k for k in self.keyframes if k.name == name), None)

    def sorted_queries(self) -> list[QueryView]:
        """Worst first: failed queries, then by translation then rotation error."""
        return sorted(self.queries, key=lambda q: (not q.failed, -_sortable(q.t_cm), -_sortable(q.r_deg), q.name))

    def observations(self, keyframe: str) -> tuple[np.ndarray, np.ndarray]:
        """(N, 2) pixels of ``keyframe``'s keypoints that observe a landmark, and their landmark ids (N,)."""
        keypoints, ids = self.sparse_map.located_observations(keyframe)  # an unknown keyframe fails there, by name
        return keypoints.astype(np.float64), ids

    def best_keyframe(self, query: QueryView) -> str | None:
        """Of the query's retrieved keyframes, the one that observes most of its inlier landmarks;
        without inliers, the first retrieved keyframe."""
        if len(query.inlier_landmarks) == 0 or not query.retrieved:
            return query.retrieved[0] if query.retrieved else None
        counts = {
            name: int(np.isin(self.observations(name)[1], query.inlier_landmarks).sum())
            for name in query.retrieved
            if name in self.sparse_map.cameras
        }
        best = max(counts, key=counts.get, default=None)
        return best if best is not None and counts[best] else query.retrieved[0]


def _sortable(value: float) -> float:
    return -1.0 if math.isnan(value) else value


def load_scene(map_dir: Path, results: Path | None = None, ground_truth: Path | None = None) -> MapScene:
    """Landmarks (coloured), keyframes and FaVoR voxels of ``map_dir`` (of a NeuMap map: its voxels
    and a sample of its labelled points, no keyframes); queries from ``results`` with ground truth
    from ``ground_truth`` (default: ``ground_truth.txt`` beside the results, as ``reloc eval``
    writes it)."""
    map_dir = Path(map_dir)
    record = read_map_record(map_dir)
    queries = read_queries(results, ground_truth) if results is not None else []
    sfm = map_dir / SFM_FOLDER
    if not has_sparse_model(map_dir) and (map_dir / NEUMAP_FILE).is_file():
        return neumap_scene(map_dir, queries)
    if not has_sparse_model(map_dir):
        raise RelocError(
            f"{sfm}: missing the COLMAP model of the map (images.bin); was it built with a triangulation stage?"
        )
    reconstruction = open_artifact(map_dir, SFM_FOLDER)
    points, colors = landmark_arrays(reconstruction)
    root = dataset_root(record)
    keyframes = [
        Keyframe(
            image.name,
            Camera.from_pycolmap(image.camera),
            Pose.from_pycolmap(image.cam_from_world()),
            _existing(root / image.name) if root else None,
        )
        for image in sorted(reconstruction.images.values(), key=lambda image: image.name)
    ]
    sparse_map = open_artifact(map_dir, LANDMARKS_FILE)
    return MapScene(map_dir, points, colors, keyframes, favor_voxels(map_dir), queries, sparse_map)


def has_sparse_model(map_dir: Path) -> bool:
    return (Path(map_dir) / SFM_FOLDER / "images.bin").is_file()


def landmark_arrays(reconstruction: pycolmap.Reconstruction) -> tuple[np.ndarray, np.ndarray]:
    """(L, 3) positions and (L, 3) colours in [0, 1] indexed by landmark id (point3D id - 1)."""
    count = max(reconstruction.points3D, default=0)
    points = np.full((count, 3), np.nan)
    colors = np.zeros((count, 3))
    for point3d_id, point in reconstruction.points3D.items():
        points[point3d_id - 1] = point.xyz
        colors[point3d_id - 1] = point.color / 255.0
    return points, colors


def dataset_root(record: dict) -> Path | None:
    """The folder of the dataset a map was built from, as its ``map.yaml`` record names it."""
    root = (record.get("dataset") or {}).get("root")
    return Path(root) if root else None


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


def favor_voxels(map_dir: Path) -> Voxels | None:
    path = map_dir / FAVOR_FILE
    if not path.is_file():
        return None
    fields = open_artifact(map_dir, FAVOR_FILE)
    return Voxels(
        "FaVoR",
        fields.centres.numpy().astype(np.float64),
        fields.sides.numpy().astype(np.float64),
        fields.psnr_db.numpy().astype(np.float64),
    )


def neumap_scene(map_dir: Path, queries: list[QueryView]) -> MapScene:
    """A NeuMap map: its labelled-point sample coloured by height, its voxels by the share of
    their codes kept after pruning; no keyframes (the map holds none)."""
    neumap = open_artifact(map_dir, NEUMAP_FILE)
    table = neumap.table
    centres = table.origin + table.size * (table.cells.astype(np.float64) + 0.5)
    kept_share = neumap.kept.flatten(1).float().mean(dim=1).numpy().astype(np.float64)
    voxels = Voxels("NeuMap", centres, np.full(len(centres), table.size), kept_share)
    points = neumap.points.astype(np.float64)
    height = points[:, 2] if len(points) else np.zeros(0)
    low, high = np.percentile(height, [2, 98]) if len(points) else (0.0, 1.0)
    colors = colormaps["cividis"](np.clip((height - low) / max(high - low, 1e-6), 0, 1))[:, :3]
    return MapScene(map_dir, points, colors, [], voxels, queries, None)


def read_queries(results_path: Path, ground_truth_path: Path | None = None) -> list[QueryView]:
    """Queries of a results file (and its details sidecar), with errors against the ground truth."""
    results = read_results(results_path)
    ground_truth_path = ground_truth_path or Path(results_path).with_name(GROUND_TRUTH_FILE)
    truth = read_results(ground_truth_path) if Path(ground_truth_path).is_file() else {}
    unknown = sorted(set(truth) - set(results))
    if truth and unknown:
        raise ResultsError(f"{ground_truth_path}: has queries that {results_path} lacks, e.g. {unknown[0]}")
    return [query_view(result, truth[name].pose if name in truth else None) for name, result in results.items()]


def query_view(result: QueryResult, ground_truth: Pose | None) -> QueryView:
    """A query as the viewer shows it; errors by the scoring rule (NaN without ground truth)."""
    record = result.record
    t_cm, r_deg = (math.nan, math.nan) if ground_truth is None else scored_errors(result.pose, ground_truth)
    return QueryView(
        result.name,
        record.camera,
        result.pose,
        ground_truth,
        result.reason,
        t_cm,
        r_deg,
        record.image,
        record.inlier_points2d,
        record.inlier_landmarks,
        record.retrieved,
    )
