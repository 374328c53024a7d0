"""Rotations: quaternions (w, x, y, z, Hamilton convention as COLMAP), angles, projection to SO(3)."""

from __future__ import annotations

import numpy as np


def qvec_to_rotmat(qvec: np.ndarray) -> np.ndarray:
    """Unit quaternion (4,) as (w, x, y, z) -> rotation matrix (3, 3). The input is normalised."""
    q = np.asarray(qvec, dtype=np.float64)
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm < 1e-12:
        raise ValueError(f"quaternion {q.tolist()} is not a valid rotation")
    w, x, y, z = q / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def rotmat_to_qvec(R: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) -> unit quaternion (4,) as (w, x, y, z) with w >= 0.

    Uses the symmetric 4x4 eigen-decomposition (Bar-Itzhack), robust near 180 degrees.
    """
    R = np.asarray(R, dtype=np.float64)
    (r00, r01, r02), (r10, r11, r12), (r20, r21, r22) = R
    K = (
        np.array(
            [
                [r00 - r11 - r22, 0.0, 0.0, 0.0],
                [r01 + r10, r11 - r00 - r22, 0.0, 0.0],
                [r02 + r20, r12 + r21, r22 - r00 - r11, 0.0],
                [r21 - r12, r02 - r20, r10 - r01, r00 + r11 + r22],
            ]
        )
        / 3.0
    )
    eigvals, eigvecs = np.linalg.eigh(K)
    x, y, z, w = eigvecs[:, np.argmax(eigvals)]
    qvec = np.array([w, x, y, z])
    return -qvec if qvec[0] < 0 else qvec


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle in degrees of a rotation matrix (3, 3), in [0, 180]."""
    cos = (np.trace(R) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def axis_angle_to_rotmat(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """Rotation of `angle_rad` about `axis` (3,) (Rodrigues)."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * K + (1 - np.cos(angle_rad)) * K @ K


def project_to_so3(M: np.ndarray) -> tuple[np.ndarray, float]:
    """Nearest rotation to a 3x3 matrix (SVD) and the Frobenius distance to it.

    Real pose files (7-Scenes) hold slightly non-orthonormal matrices; callers decide from the
    returned distance whether the input was a rotation at all.
    """
    U, _, Vt = np.linalg.svd(M)
    R = U @ Vt
    if np.linalg.det(R) < 0:
        U[:, -1] *= -1
        R = U @ Vt
    return R, float(np.linalg.norm(R - M))
