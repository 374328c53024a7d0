"""The sparse map on disk: a pycolmap Reconstruction in ``sfm/`` (opens in COLMAP) and
``landmarks.h5`` with what localization reads: the points, a representative descriptor per
point and, per mapping image, the point id of each keypoint (-1 for none)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pycolmap

from ..errors import RelocError
from ..features.base import FeatureStore
from ..types import Frame
from .triangulation import Landmarks

LANDMARKS_FILE = "landmarks.h5"
SFM_FOLDER = "sfm"


@dataclass
class SparseMap:
    points: np.ndarray  # (L, 3)
    descriptors: np.ndarray  # (L, D) representative descriptor of each point
    point_ids: dict[str, np.ndarray]  # image name -> (N,) point id per keypoint, -1 for none


def representative_descriptor(descriptors: np.ndarray) -> np.ndarray:
    """The observation descriptor most similar on average to the others (the medoid)."""
    similarity = descriptors @ descriptors.T
    return descriptors[np.argmax(similarity.sum(axis=1))]


def write_sparse_map(map_dir: Path, frames: list[Frame], features: FeatureStore, landmarks: Landmarks) -> None:
    keypoints = [features.read(frame.name).keypoints for frame in frames]
    point_ids = [np.full(len(k), -1, np.int64) for k in keypoints]
    descriptors = []
    for point_id, observations in enumerate(landmarks.observations):
        descriptors.append(representative_descriptor(np.stack([features.read(frames[i].name).descriptors[k] for i, k in observations]))
                           if len(observations) else None)
        for image, keypoint in observations:
            point_ids[image][keypoint] = point_id
    with h5py.File(map_dir / LANDMARKS_FILE, "w") as file:
        file.create_dataset("points", data=landmarks.points)
        file.create_dataset("descriptors", data=np.array(descriptors, np.float32).reshape(len(landmarks.points), -1))
        file.create_dataset("errors", data=landmarks.errors)
        group = file.create_group("point_ids")
        for frame, ids in zip(frames, point_ids):
            group.create_dataset(frame.name, data=ids)
    write_reconstruction(map_dir / SFM_FOLDER, frames, keypoints, landmarks)


def write_reconstruction(folder: Path, frames: list[Frame], keypoints: list[np.ndarray], landmarks: Landmarks) -> None:
    reconstruction = pycolmap.Reconstruction()
    for image_id, (frame, points2d) in enumerate(zip(frames, keypoints), start=1):
        reconstruction.add_camera_with_trivial_rig(frame.camera.to_pycolmap(camera_id=image_id))
        image = pycolmap.Image(name=frame.name, keypoints=points2d.astype(np.float64), camera_id=image_id, image_id=image_id)
        reconstruction.add_image_with_trivial_frame(image, frame.pose.to_pycolmap())
    for point, observations in zip(landmarks.points, landmarks.observations):
        track = pycolmap.Track()
        for image, keypoint in observations:
            track.add_element(int(image) + 1, int(keypoint))
        reconstruction.add_point3D(point, track, np.zeros(3, np.uint8))
    folder.mkdir(parents=True, exist_ok=True)
    reconstruction.write_binary(str(folder))


def read_sparse_map(map_dir: Path) -> SparseMap:
    path = map_dir / LANDMARKS_FILE
    if not path.is_file():
        raise RelocError(f"{path}: missing; the map has no sparse landmarks (was it built with a triangulation stage?)")
    with h5py.File(path, "r") as file:
        point_ids = {}
        file["point_ids"].visititems(lambda name, item: point_ids.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
        return SparseMap(file["points"][()], file["descriptors"][()], point_ids)
