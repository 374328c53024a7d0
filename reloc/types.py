"""Core types: cameras (COLMAP models), poses (cam_from_world), frames and query results.

Conventions (see docs/design.md):
- A pose maps world to camera coordinates: ``x_cam = R @ x_world + t``; centre ``-R.T @ t``.
- Pixels follow COLMAP: the centre of the top-left pixel is (0.5, 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .rotation import qvec_to_rotmat, rotmat_to_qvec

CAMERA_MODEL_PARAMS = {
    "SIMPLE_PINHOLE": ("f", "cx", "cy"),
    "PINHOLE": ("fx", "fy", "cx", "cy"),
    "SIMPLE_RADIAL": ("f", "cx", "cy", "k"),
}


@dataclass(frozen=True)
class Camera:
    """Intrinsics of one image in a COLMAP camera model.

    ``params`` follows COLMAP's order: SIMPLE_PINHOLE (f, cx, cy), PINHOLE (fx, fy, cx, cy),
    SIMPLE_RADIAL (f, cx, cy, k).
    """

    model: str
    width: int
    height: int
    params: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.model not in CAMERA_MODEL_PARAMS:
            raise ValueError(f"camera model {self.model!r} is not supported; use one of {sorted(CAMERA_MODEL_PARAMS)}")
        expected = len(CAMERA_MODEL_PARAMS[self.model])
        if len(self.params) != expected:
            raise ValueError(f"camera model {self.model} takes {expected} parameters, got {len(self.params)}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera size must be positive, got {self.width}x{self.height}")
        if not np.all(np.isfinite(self.params)) or self.focal_length[0] <= 0 or self.focal_length[1] <= 0:
            raise ValueError(f"camera parameters {self.params} are not valid (finite, positive focal)")
        object.__setattr__(self, "params", tuple(float(p) for p in self.params))

    @classmethod
    def simple_pinhole(
        cls, width: int, height: int, focal: float, cx: float | None = None, cy: float | None = None
    ) -> Camera:
        """Square pixels, principal point at the image centre unless given."""
        return cls(
            "SIMPLE_PINHOLE", width, height, (focal, width / 2 if cx is None else cx, height / 2 if cy is None else cy)
        )

    @property
    def focal_length(self) -> tuple[float, float]:
        if self.model == "PINHOLE":
            return self.params[0], self.params[1]
        return self.params[0], self.params[0]

    @property
    def principal_point(self) -> tuple[float, float]:
        offset = 2 if self.model == "PINHOLE" else 1
        return self.params[offset], self.params[offset + 1]

    @property
    def K(self) -> np.ndarray:
        """Calibration matrix (3, 3) in COLMAP pixel convention."""
        (fx, fy), (cx, cy) = self.focal_length, self.principal_point
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])

    def _distort(self, xy: np.ndarray) -> np.ndarray:
        if self.model != "SIMPLE_RADIAL":
            return xy
        r2 = np.sum(xy**2, axis=-1, keepdims=True)
        return xy * (1.0 + self.params[3] * r2)

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """Camera-frame points (N, 3) -> pixels (N, 2). Points must have z > 0."""
        points_cam = np.asarray(points_cam, dtype=np.float64)
        xy = self._distort(points_cam[:, :2] / points_cam[:, 2:3])
        (fx, fy), (cx, cy) = self.focal_length, self.principal_point
        return xy * np.array([fx, fy]) + np.array([cx, cy])

    def unproject(self, pixels: np.ndarray) -> np.ndarray:
        """Pixels (N, 2) -> normalised image-plane points (N, 2) (z = 1), undistorted."""
        (fx, fy), (cx, cy) = self.focal_length, self.principal_point
        xy_d = (np.asarray(pixels, dtype=np.float64) - np.array([cx, cy])) / np.array([fx, fy])
        if self.model != "SIMPLE_RADIAL":
            return xy_d
        xy = xy_d.copy()
        for _ in range(20):  # fixed-point iteration, converges for the mild distortion of real lenses
            xy = xy_d / (1.0 + self.params[3] * np.sum(xy**2, axis=-1, keepdims=True))
        return xy

    def scaled(self, factor: float) -> Camera:
        """The camera of the image resized by `factor` (pixel-centre convention preserved)."""
        params = list(self.params)
        n_linear = len(params) - (1 if self.model == "SIMPLE_RADIAL" else 0)
        params[:n_linear] = [p * factor for p in params[:n_linear]]
        return Camera(self.model, round(self.width * factor), round(self.height * factor), tuple(params))

    def to_pycolmap(self, camera_id: int = 1):
        import pycolmap

        return pycolmap.Camera(
            model=self.model, width=self.width, height=self.height, params=list(self.params), camera_id=camera_id
        )

    @classmethod
    def from_pycolmap(cls, camera) -> Camera:
        model = camera.model.name if hasattr(camera.model, "name") else str(camera.model)
        return cls(model, int(camera.width), int(camera.height), tuple(float(p) for p in camera.params))


@dataclass(frozen=True)
class Pose:
    """A rigid transform cam_from_world: ``x_cam = R @ x_world + t``.

    ``R`` is (3, 3), ``t`` is (3,), both float64. Construction rejects non-finite values and
    matrices that are not rotations.
    """

    R: np.ndarray
    t: np.ndarray

    def __post_init__(self) -> None:
        R = np.asarray(self.R, dtype=np.float64).reshape(3, 3)
        t = np.asarray(self.t, dtype=np.float64).reshape(3)
        if not (np.all(np.isfinite(R)) and np.all(np.isfinite(t))):
            raise ValueError("pose contains NaN or infinite values")
        if np.abs(R @ R.T - np.eye(3)).max() > 1e-5 or np.linalg.det(R) < 0:
            raise ValueError("pose rotation is not orthonormal with determinant +1")
        object.__setattr__(self, "R", R)
        object.__setattr__(self, "t", t)

    @classmethod
    def identity(cls) -> Pose:
        return cls(np.eye(3), np.zeros(3))

    @classmethod
    def from_qvec_tvec(cls, qvec, tvec) -> Pose:
        """From a quaternion (w, x, y, z) of R and a translation t."""
        return cls(qvec_to_rotmat(qvec), np.asarray(tvec, dtype=np.float64))

    @classmethod
    def from_rotation_center(cls, R, center) -> Pose:
        """From the rotation R (world to camera) and the camera centre in world coordinates."""
        R = np.asarray(R, dtype=np.float64)
        return cls(R, -R @ np.asarray(center, dtype=np.float64))

    @classmethod
    def from_matrix(cls, T) -> Pose:
        """From a 4x4 (or 3x4) homogeneous matrix."""
        T = np.asarray(T, dtype=np.float64)
        return cls(T[:3, :3], T[:3, 3])

    @property
    def qvec(self) -> np.ndarray:
        """Quaternion (w, x, y, z) of R with w >= 0."""
        return rotmat_to_qvec(self.R)

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates (3,)."""
        return -self.R.T @ self.t

    @property
    def matrix(self) -> np.ndarray:
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = self.R, self.t
        return T

    def inverse(self) -> Pose:
        return Pose(self.R.T, -self.R.T @ self.t)

    def __matmul__(self, other: Pose) -> Pose:
        """Composition: ``(a @ b)(x) = a(b(x))``, e.g. cam_from_world = cam_from_rig @ rig_from_world."""
        return Pose(self.R @ other.R, self.R @ other.t + self.t)

    def transform(self, points: np.ndarray) -> np.ndarray:
        """Apply to points (N, 3)."""
        return np.asarray(points, dtype=np.float64) @ self.R.T + self.t

    def to_pycolmap(self):
        import pycolmap

        return pycolmap.Rigid3d(pycolmap.Rotation3d(self.R), self.t)

    @classmethod
    def from_pycolmap(cls, rigid) -> Pose:
        return cls(rigid.rotation.matrix(), rigid.translation)


@dataclass(frozen=True)
class Frame:
    """One image of a dataset. ``name`` is the image path relative to the dataset root, the key
    used in results files. ``pose`` is cam_from_world, or None for an unposed query."""

    name: str
    image_path: Path
    camera: Camera
    pose: Pose | None = None
    depth_path: Path | None = None


@dataclass(frozen=True)
class PoseEvidence:
    """What PnP saw for a pose (:mod:`reloc.localization.confidence`). Its ``confidence`` is the
    inlier set's ``significance`` (-log10 of its number of false alarms) scaled down when the
    inliers cover under a quarter of the image."""

    inliers: int
    matches: int  # 2D-3D matches PnP was given
    inlier_ratio: float
    coverage: float  # share of the cells of an 8 x 8 grid over the image holding an inlier
    median_error_px: float  # inliers' median reprojection error
    significance: float
    focal_ratio: float  # focal length the matches fit over the given one (NaN: they fit no positive focal)
    focal_inliers: int  # matches within the inlier threshold under that focal length
    confidence: float


@dataclass
class Round:
    """One keyframe round of a localizer: the keyframes it matched, the 2D-3D correspondences
    found so far and the inliers of PnP on them."""

    keyframes: list[str]
    correspondences: int
    inliers: int


def _no_points() -> np.ndarray:
    return np.zeros((0, 2))


def _no_ids() -> np.ndarray:
    return np.zeros(0, np.int64)


@dataclass
class QueryRecord:
    """What localizing one query did, for reports and the viewer (``<results>.details.json``)."""

    retrieved: list[str] = field(default_factory=list)  # keyframes (priors) in the order they were tried
    rounds: list[Round] = field(default_factory=list)
    num_matches: int = 0  # 2D-3D correspondences of the answer's round
    inlier_points2d: np.ndarray = field(default_factory=_no_points)  # (K, 2) COLMAP pixels of the query
    inlier_landmarks: np.ndarray = field(default_factory=_no_ids)  # (K,) landmark id (index in landmarks.h5)
    image: Path | None = None  # the query image file
    camera: Camera | None = None
    evidence: PoseEvidence | None = None  # of the answer's pose (or of the pose refused as not confident)
    extra: dict[str, Any] = field(default_factory=dict)  # a method's own entries (FaVoR: prior, iterations)


@dataclass
class QueryResult:
    """Outcome of localizing one query. A failed query has ``pose=None`` and a ``reason``; it is
    never given a prior pose."""

    name: str
    pose: Pose | None
    reason: str = ""
    num_inliers: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    record: QueryRecord = field(default_factory=QueryRecord)

    @property
    def success(self) -> bool:
        return self.pose is not None
