"""The sparse map on disk: a pycolmap Reconstruction in ``sfm/`` (opens in COLMAP) and
``landmarks.h5`` with what localization reads: the points, a representative descriptor per
point and, per mapping image, the point id of each keypoint (-1 for none)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pycolmap

from ..datasets.base import read_image
from ..errors import RelocError
from ..features.base import FeatureStore
from ..io.map_folder import LANDMARKS_FILE, SFM_FOLDER
from ..types import Camera, Frame
from .triangulation import Landmarks


@dataclass
class SparseMap:
    points: np.ndarray  # (L, 3)
    descriptors: np.ndarray  # (L, D) float32 representative descriptor of each point (float16 on disk)
    point_ids: dict[str, np.ndarray]  # image name -> (N,) point id per keypoint, -1 for none
    cameras: dict[str, Camera]  # image name -> its camera


def representative_descriptors(frames: list[Frame], features: FeatureStore, landmarks: Landmarks) -> np.ndarray:
    """(L, D) per landmark, the observation descriptor closest to the mean of its observations.

    Two passes over the images, each image's descriptors read once, memory O(L * D)."""
    by_image: dict[int, list[tuple[int, int]]] = {}
    for point_id, observations in enumerate(landmarks.observations):
        for image, keypoint in observations:
            by_image.setdefault(int(image), []).append((point_id, int(keypoint)))
    mean = None
    for image, entries in by_image.items():
        descriptors = features.read(frames[image].name).descriptors
        mean = np.zeros((len(landmarks.points), descriptors.shape[1]), np.float32) if mean is None else mean
        point_ids, keypoints = np.array(entries).T
        np.add.at(mean, point_ids, descriptors[keypoints])
    if mean is None:
        return np.zeros((0, 0), np.float32)
    best = np.zeros_like(mean)
    best_similarity = np.full(len(mean), -np.inf, np.float32)
    for image, entries in by_image.items():
        descriptors = features.read(frames[image].name).descriptors
        point_ids, keypoints = np.array(entries).T
        similarity = np.einsum("ij,ij->i", descriptors[keypoints], mean[point_ids])
        for point_id, keypoint, value in zip(point_ids, keypoints, similarity):
            if value > best_similarity[point_id]:
                best_similarity[point_id], best[point_id] = value, descriptors[keypoint]
    return best


def write_sparse_map(
    map_dir: Path, frames: list[Frame], keypoints: list[np.ndarray], features: FeatureStore, landmarks: Landmarks
) -> None:
    """``keypoints[i]`` (N_i, 2) are those of ``frames[i]``; descriptors are read from ``features``."""
    point_ids = [np.full(len(k), -1, np.int64) for k in keypoints]
    for point_id, observations in enumerate(landmarks.observations):
        for image, keypoint in observations:
            point_ids[image][keypoint] = point_id
    with h5py.File(map_dir / LANDMARKS_FILE, "w") as file:
        file.create_dataset("points", data=landmarks.points)
        file.create_dataset(
            "descriptors", data=representative_descriptors(frames, features, landmarks).astype(np.float16)
        )
        file.create_dataset("errors", data=landmarks.errors)
        group = file.create_group("point_ids")
        for frame, ids in zip(frames, point_ids):
            dataset = group.create_dataset(frame.name, data=ids)
            dataset.attrs["camera_model"] = frame.camera.model
            dataset.attrs["camera_size"] = (frame.camera.width, frame.camera.height)
            dataset.attrs["camera_params"] = frame.camera.params
    write_reconstruction(map_dir / SFM_FOLDER, frames, keypoints, landmarks)


def landmark_colors(frames: list[Frame], keypoints: list[np.ndarray], landmarks: Landmarks) -> np.ndarray:
    """(L, 3) uint8 RGB of each landmark: the mean image colour at its observations (each image
    read once; ``keypoints`` in COLMAP pixels, so pixel (x, y) lies in column floor(x))."""
    colour_sum = np.zeros((len(landmarks.points), 3))
    count = np.zeros(len(landmarks.points))
    by_image: dict[int, list[tuple[int, int]]] = {}
    for point_id, observations in enumerate(landmarks.observations):
        for image, keypoint in observations:
            by_image.setdefault(int(image), []).append((point_id, int(keypoint)))
    for image, entries in by_image.items():
        pixels = read_image(frames[image].image_path)
        point_ids, keypoint_ids = np.array(entries).T
        columns, rows = np.floor(keypoints[image][keypoint_ids]).astype(int).T
        height, width = pixels.shape[:2]
        np.add.at(colour_sum, point_ids, pixels[rows.clip(0, height - 1), columns.clip(0, width - 1)])
        np.add.at(count, point_ids, 1)
    return np.round(colour_sum / np.maximum(count, 1)[:, None]).astype(np.uint8)


def write_reconstruction(folder: Path, frames: list[Frame], keypoints: list[np.ndarray], landmarks: Landmarks) -> None:
    """The map as a COLMAP model: a camera and image per frame, a coloured point per landmark
    (point3D id = landmark index + 1)."""
    reconstruction = pycolmap.Reconstruction()
    for image_id, (frame, points2d) in enumerate(zip(frames, keypoints), start=1):
        reconstruction.add_camera_with_trivial_rig(frame.camera.to_pycolmap(camera_id=image_id))
        image = pycolmap.Image(
            name=frame.name, keypoints=points2d.astype(np.float64), camera_id=image_id, image_id=image_id
        )
        reconstruction.add_image_with_trivial_frame(image, frame.pose.to_pycolmap())
    colors = landmark_colors(frames, keypoints, landmarks)
    for point, observations, color in zip(landmarks.points, landmarks.observations, colors):
        track = pycolmap.Track()
        for image, keypoint in observations:
            track.add_element(int(image) + 1, int(keypoint))
        reconstruction.add_point3D(point, track, color)
    folder.mkdir(parents=True, exist_ok=True)
    reconstruction.write_binary(str(folder))


def read_reconstruction(path: Path) -> pycolmap.Reconstruction:
    """The map's pycolmap reconstruction (``sfm/``: keyframes, cameras, landmarks with colours)."""
    return pycolmap.Reconstruction(str(path))


def read_sparse_map(path: Path) -> SparseMap:
    """The sparse map of ``path``: a ``landmarks.h5`` file, or a map folder holding one."""
    path = path / LANDMARKS_FILE if path.is_dir() else path
    if not path.is_file():
        raise RelocError(f"{path}: missing; the map has no sparse landmarks (was it built with a triangulation stage?)")
    point_ids, cameras = {}, {}

    def read_image_entry(name: str, item) -> None:
        if isinstance(item, h5py.Dataset):
            point_ids[name] = item[()]
            width, height = item.attrs["camera_size"]
            cameras[name] = Camera(
                str(item.attrs["camera_model"]), int(width), int(height), tuple(item.attrs["camera_params"])
            )

    with h5py.File(path, "r") as file:
        file["point_ids"].visititems(read_image_entry)
        return SparseMap(file["points"][()], file["descriptors"][()].astype(np.float32), point_ids, cameras)
