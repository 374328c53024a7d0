"""Keyframes for the guided round of :mod:`.rounds`: those that see the most landmarks in the
view of a pose, for queries whose retrieved keyframes gave a pose but no confident one (a dark
or blurred query that global retrieval placed in the wrong part of the scene)."""

from __future__ import annotations

import numpy as np

from ..geometry.projection import project_points
from ..mapping.store import SparseMap
from ..types import Camera, Pose


class ViewedKeyframes:
    """The map's keyframes ranked by how many of their landmarks a query pose sees (in front of
    the camera and inside its image; occlusion is not modelled). Each keyframe's landmark ids are
    read from ``landmarks.h5`` at the first ranking and kept (4 bytes per observation)."""

    def __init__(self, sparse_map: SparseMap):
        self.sparse_map = sparse_map
        self._landmark_ids: dict[str, np.ndarray] | None = None

    def landmark_ids(self) -> dict[str, np.ndarray]:
        """Landmark ids (N,) int32 of each keyframe's observations."""
        if self._landmark_ids is None:
            self._landmark_ids = {
                name: ids.astype(np.int32) for name, ids in self.sparse_map.landmark_ids_by_keyframe().items()
            }
        return self._landmark_ids

    def rank(self, pose: Pose, exclude: set[str], camera: Camera) -> list[str]:
        """Keyframes not in ``exclude`` that see at least one landmark in the view of ``pose``
        (cam_from_world) through ``camera``, most first (ties in map order)."""
        _, visible = project_points(self.sparse_map.points, pose, camera)
        landmark_ids = self.landmark_ids()
        names = [name for name in landmark_ids if name not in exclude]
        counts = np.array([int(visible[landmark_ids[name]].sum()) for name in names])
        order = np.argsort(-counts, kind="stable")
        return [names[i] for i in order if counts[i] > 0]
