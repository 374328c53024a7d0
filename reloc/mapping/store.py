"""The sparse map on disk: ``landmarks.h5``, what localization reads, and a pycolmap
Reconstruction in ``sfm/`` (opens in COLMAP; the viewer's model).

``landmarks.h5`` (format 2) holds the landmark points (L, 3, world) and, per keyframe, only the
observations of landmarks: their keypoints (COLMAP pixels), landmark ids and descriptors, coded
by the map's descriptor codec (:mod:`.quantize`), with the keyframe's camera. The extractor that
made the descriptors is a file attribute. A keyframe's observations are read (and decoded) when
asked for, so that opening a map is fast.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pycolmap

from ..datasets.base import read_image
from ..errors import RelocError
from ..features.base import Features, FeatureStore
from ..features.quantize import Codec, CodecConfig, fit_codec_on_chunks, load_codec
from ..io.map_folder import LANDMARKS_FILE, SFM_FOLDER
from ..types import Camera, Frame, Pose
from .triangulation import Landmarks

KEYFRAMES_GROUP = "keyframes"


@dataclass
class Observations:
    """One keyframe's observations of landmarks."""

    keypoints: np.ndarray  # (N, 2) float32, COLMAP pixels of the keyframe
    point_ids: np.ndarray  # (N,) int64 landmark id of each
    descriptors: np.ndarray  # (N, D) float32, decoded from the map's codec

    def features(self) -> Features:
        """The observations as features to match (scores all 1)."""
        return Features(self.keypoints, self.descriptors, np.ones(len(self.keypoints), np.float32))


class SparseMap:
    """The landmarks of ``landmarks.h5``: points and keyframe cameras loaded on open, each
    keyframe's observations read from the file on demand."""

    def __init__(self, path: Path, points: np.ndarray, cameras: dict[str, Camera], extractor: str, codec: Codec):
        self.path = path
        self.points = points  # (L, 3) float64, world
        self.cameras = cameras  # keyframe name -> its camera
        self.extractor = extractor
        self.codec = codec

    def observations(self, name: str) -> Observations:
        """Keyframe ``name``'s observations with decoded descriptors."""
        with h5py.File(self.path, "r") as file:
            group = self._group(file, name)
            return Observations(
                group["keypoints"][()],
                group["point_ids"][()].astype(np.int64),
                self.codec.decode(group["descriptors"][()]),
            )

    def located_observations(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Keyframe ``name``'s keypoints (N, 2, COLMAP pixels) and landmark ids (N,), without
        reading the descriptors."""
        with h5py.File(self.path, "r") as file:
            group = self._group(file, name)
            return group["keypoints"][()], group["point_ids"][()].astype(np.int64)

    def landmark_ids_by_keyframe(self) -> dict[str, np.ndarray]:
        """Landmark ids (N,) of every keyframe's observations, read in one pass."""
        with h5py.File(self.path, "r") as file:
            return {name: self._group(file, name)["point_ids"][()].astype(np.int64) for name in self.cameras}

    def observation_counts(self) -> dict[str, int]:
        """Number of observations of each keyframe, read from the dataset shapes."""
        with h5py.File(self.path, "r") as file:
            return {name: len(self._group(file, name)["point_ids"]) for name in self.cameras}

    def _group(self, file: h5py.File, name: str) -> h5py.Group:
        if name not in self.cameras:
            raise RelocError(f"{self.path}: has no keyframe {name}")
        return file[KEYFRAMES_GROUP][name]


@dataclass
class KeyframeEntry:
    """What ``write_landmarks`` stores for one keyframe."""

    camera: Camera
    keypoints: np.ndarray  # (N, 2) float32 COLMAP pixels of the observations
    point_ids: np.ndarray  # (N,) landmark ids
    descriptors: np.ndarray  # (N, D) float32


def write_landmarks(
    path: Path,
    extractor: str,
    points: np.ndarray,
    errors: np.ndarray,
    codec: Codec,
    keyframes: Iterable[tuple[str, KeyframeEntry]],
) -> None:
    """Write ``landmarks.h5`` (format 2): points (L, 3), their reprojection errors (L,), the
    codec, and each keyframe's observations with descriptors coded by ``codec``."""
    with h5py.File(path, "w") as file:
        file.attrs["extractor"] = extractor
        file.create_dataset("points", data=points)
        file.create_dataset("errors", data=errors)
        codec.save(file.create_group("codec"))
        group = file.create_group(KEYFRAMES_GROUP)
        for name, entry in keyframes:
            keyframe = group.create_group(name)
            keyframe.create_dataset("keypoints", data=entry.keypoints.astype(np.float32))
            keyframe.create_dataset("point_ids", data=entry.point_ids.astype(np.int32))
            keyframe.create_dataset("descriptors", data=codec.encode(entry.descriptors))
            keyframe.attrs["camera_model"] = entry.camera.model
            keyframe.attrs["camera_size"] = (entry.camera.width, entry.camera.height)
            keyframe.attrs["camera_params"] = entry.camera.params


def observed_keypoints(landmarks: Landmarks, images: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image: the indices (N,) of its keypoints that observe a landmark, ascending, and the
    landmark id (N,) of each."""
    pairs = [[] for _ in range(images)]
    for point_id, observations in enumerate(landmarks.observations):
        for image, keypoint in observations:
            pairs[int(image)].append((int(keypoint), point_id))
    result = []
    for entries in pairs:
        keypoint_index, point_ids = np.array(sorted(entries), np.int64).reshape(-1, 2).T
        result.append((keypoint_index, point_ids))
    return result


def write_sparse_map(
    map_dir: Path,
    frames: list[Frame],
    keypoints: list[np.ndarray],
    features: FeatureStore,
    landmarks: Landmarks,
    codec_config: CodecConfig,
    colmap_tracks: bool = False,
) -> Codec:
    """``keypoints[i]`` (N_i, 2) are those of ``frames[i]``; the observations' descriptors are
    read from ``features`` (twice unless the codec is float16: a sample fits the codec, then each
    image is coded).
    ``colmap_tracks``: ``sfm/`` also holds each keyframe's observing keypoints and each point's
    track (without, only cameras, poses and coloured points: the observations are in landmarks.h5)."""
    observed = observed_keypoints(landmarks, len(frames))
    chunks = (features.read(frame.name).descriptors[index] for frame, (index, _) in zip(frames, observed))
    codec = fit_codec_on_chunks(chunks, sum(len(index) for index, _ in observed), codec_config)
    entries = (
        (frame.name, KeyframeEntry(frame.camera, points2d[index], ids, features.read(frame.name).descriptors[index]))
        for frame, points2d, (index, ids) in zip(frames, keypoints, observed)
    )
    write_landmarks(map_dir / LANDMARKS_FILE, features.extractor, landmarks.points, landmarks.errors, codec, entries)
    write_reconstruction(map_dir / SFM_FOLDER, frames, keypoints, landmarks, observed if colmap_tracks else None)
    return codec


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


def write_reconstruction(
    folder: Path,
    frames: list[Frame],
    keypoints: list[np.ndarray],
    landmarks: Landmarks,
    observed: list[tuple[np.ndarray, np.ndarray]] | None,
) -> None:
    """The map as a COLMAP model: a camera and image per frame, a coloured point per landmark
    (point3D id = landmark index + 1). With ``observed`` (from :func:`observed_keypoints`) each
    image holds its keypoints that observe a landmark and each point its track; without, images
    have no keypoints and points no track."""
    reconstruction = pycolmap.Reconstruction()
    for image_id, (frame, points2d) in enumerate(zip(frames, keypoints), start=1):
        reconstruction.add_camera_with_trivial_rig(frame.camera.to_pycolmap(camera_id=image_id))
        kept = points2d[observed[image_id - 1][0]] if observed is not None else np.zeros((0, 2))
        image = pycolmap.Image(
            name=frame.name, keypoints=kept.astype(np.float64), camera_id=image_id, image_id=image_id
        )
        reconstruction.add_image_with_trivial_frame(image, frame.pose.to_pycolmap())
    colors = landmark_colors(frames, keypoints, landmarks)
    for point, observations, color in zip(landmarks.points, landmarks.observations, colors):
        track = pycolmap.Track()
        for image, keypoint in observations if observed is not None else ():
            track.add_element(int(image) + 1, int(np.searchsorted(observed[int(image)][0], keypoint)))
        reconstruction.add_point3D(point, track, color)
    folder.mkdir(parents=True, exist_ok=True)
    reconstruction.write_binary(str(folder))


def read_reconstruction(path: Path) -> pycolmap.Reconstruction:
    """The map's pycolmap reconstruction (``sfm/``: keyframes, cameras, landmarks with colours)."""
    return pycolmap.Reconstruction(str(path))


def keyframe_poses(map_dir: Path) -> dict[str, Pose]:
    """cam_from_world of every keyframe, from the map's reconstruction (``sfm/``)."""
    reconstruction = read_reconstruction(map_dir / SFM_FOLDER)
    return {image.name: Pose.from_pycolmap(image.cam_from_world()) for image in reconstruction.images.values()}


def read_sparse_map(path: Path) -> SparseMap:
    """The sparse map of ``path``: a ``landmarks.h5`` file, or a map folder holding one. Reads
    the points, the codec and the keyframe cameras; observations are read on demand."""
    path = path / LANDMARKS_FILE if path.is_dir() else path
    if not path.is_file():
        raise RelocError(f"{path}: missing; the map has no sparse landmarks (was it built with a triangulation stage?)")
    cameras = {}

    def read_keyframe(name: str, item) -> None:
        if isinstance(item, h5py.Group) and "point_ids" in item:
            width, height = item.attrs["camera_size"]
            cameras[name] = Camera(
                str(item.attrs["camera_model"]), int(width), int(height), tuple(item.attrs["camera_params"])
            )

    with h5py.File(path, "r") as file:
        if KEYFRAMES_GROUP not in file:
            raise RelocError(
                f"{path}: a landmarks file of reloc's first format (all keypoints in features.h5); "
                "rebuild the map with this reloc"
            )
        file[KEYFRAMES_GROUP].visititems(read_keyframe)
        return SparseMap(path, file["points"][()], cameras, str(file.attrs["extractor"]), load_codec(file["codec"]))
