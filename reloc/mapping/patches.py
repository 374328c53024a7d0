"""Dense-descriptor patches around every observation of the persistent landmarks, kept in
``patches.h5`` for FaVoR, which trains one voxel descriptor field per landmark on them.

Layout of ``patches.h5`` (O observations of L landmarks, P x P patches of C-d descriptors):

- attributes ``backbone``, ``descriptor_dim`` (C), ``patch_size`` (P), ``resize_max``;
- ``images`` (M,) keyframe names;
- ``landmark_ids`` (L,) ids into ``landmarks.h5``'s points, longest tracks first;
- at most ``max_observations`` observations per landmark, spread over the keyframes seeing it;
- ``observations/landmark`` (O,) landmark id, ``observations/image`` (O,) index into ``images``,
  ``observations/xy`` (O, 2) COLMAP pixels of the keypoint in the original image,
  ``observations/spacing_px`` (O,) original pixels between patch samples,
  ``observations/patches`` (O, P, P, C) float16, row index along y, column along x.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..errors import RelocError
from ..features.base import prepare_image
from ..features.dense import dense_backbone
from ..io.map_folder import PATCHES_FILE
from ..io.memo import BoundedCache
from ..pipeline.items import map_items
from ..types import Frame
from .store import SparseMap


@dataclass
class PatchesConfig:
    backbone: str = "xfeat"  # dense descriptors: xfeat (64-d) or aliked (128-d)
    resize_max: int = 1024  # long side of the image the backbone sees
    patch_size: int = 7
    spacing_px: float = 1.0  # between patch samples, in pixels of the backbone's resized image
    min_track_length: int = 3  # persistent landmarks: observed in at least this many keyframes
    max_landmarks: int = 3000  # keep each image's longest tracks first (0: every persistent landmark)
    max_observations: int = 8  # per landmark, spread evenly over its keyframes in order (0: all)


@dataclass
class LandmarkPatches:
    backbone: str
    patch_size: int
    images: list[str]
    landmark_ids: np.ndarray  # (L,)
    landmark: np.ndarray  # (O,) landmark id of each observation
    image: np.ndarray  # (O,) index into images
    xy: np.ndarray  # (O, 2) COLMAP pixels
    spacing_px: np.ndarray  # (O,) original pixels between patch samples
    patches: np.ndarray  # (O, P, P, C) float16


def persistent_landmarks(point_ids: list[np.ndarray], min_track_length: int, max_landmarks: int) -> np.ndarray:
    """Ids of landmarks observed in at least ``min_track_length`` images, at most
    ``max_landmarks`` of them (0: no limit), chosen so that every image keeps its best: each image
    ranks the landmarks it sees by track length (longest first, ties by id), and landmarks are
    taken by their best rank in any image, then by track length, then by id. The longest tracks
    overall all lie where the mapping images overlap most; an image at the edge of the map would
    keep none of them, and a query near it no visible landmark. ``point_ids[i]`` holds the
    landmark id of each keypoint of image i (-1 for none)."""
    observed = np.concatenate([ids[ids >= 0] for ids in point_ids]) if point_ids else np.zeros(0, np.int64)
    if len(observed) == 0:
        return np.zeros(0, np.int64)
    lengths = np.bincount(observed)
    candidate = lengths >= min_track_length
    best_rank = np.full(len(lengths), len(lengths), np.int64)
    for ids in point_ids:
        seen = np.unique(ids[ids >= 0])
        seen = seen[candidate[seen]]
        seen = seen[np.lexsort((seen, -lengths[seen]))]
        best_rank[seen] = np.minimum(best_rank[seen], np.arange(len(seen)))
    selected = np.flatnonzero(candidate)
    selected = selected[np.lexsort((selected, -lengths[selected], best_rank[selected]))]
    return selected[:max_landmarks] if max_landmarks > 0 else selected


def observations_to_keep(point_ids: list[np.ndarray], landmarks: np.ndarray, max_observations: int) -> list[np.ndarray]:
    """Per image, the keypoint indices whose patches are kept: the observations of ``landmarks``,
    at most ``max_observations`` per landmark (0: all), evenly spaced over the images that see it
    (keyframes are in trajectory order, so this spreads the viewpoints)."""
    wanted = np.zeros(max((int(ids.max()) for ids in point_ids if len(ids)), default=-1) + 1, bool)
    wanted[landmarks] = True
    images, keypoints, owners = [], [], []
    for image, ids in enumerate(point_ids):
        index = np.flatnonzero(ids >= 0)
        index = index[wanted[ids[index]]]
        images.append(np.full(len(index), image))
        keypoints.append(index)
        owners.append(ids[index])
    images, keypoints, owners = np.concatenate(images), np.concatenate(keypoints), np.concatenate(owners)
    order = np.lexsort((images, owners))
    keep = np.zeros(len(order), bool)
    _, starts, counts = np.unique(owners[order], return_index=True, return_counts=True)
    for start, count in zip(starts, counts):
        chosen = (
            np.arange(count)
            if max_observations <= 0 or count <= max_observations
            else np.unique(np.round(np.linspace(0, count - 1, max_observations)).astype(int))
        )
        keep[order[start + chosen]] = True
    # ``images`` is non-decreasing (built image by image): split the kept keypoints per image.
    return np.split(keypoints[keep], np.cumsum(np.bincount(images[keep], minlength=len(point_ids)))[:-1])


def write_landmark_patches(
    map_dir: Path,
    keyframes: list[Frame],
    sparse_map: SparseMap,
    config: PatchesConfig,
) -> int:
    """Compute the backbone's descriptor field of each keyframe once and cut a patch around
    each observation of a persistent landmark, appended to ``map_dir / patches.h5`` image by
    image (memory stays flat). Returns the number of observations written."""
    backbone = thread_backbone(config.backbone)
    observations = [sparse_map.located_observations(frame.name) for frame in keyframes]
    image_point_ids = [ids for _, ids in observations]
    selected = persistent_landmarks(image_point_ids, config.min_track_length, config.max_landmarks)
    kept = observations_to_keep(image_point_ids, selected, config.max_observations)
    size = config.patch_size
    with h5py.File(map_dir / PATCHES_FILE, "w") as file:
        file.attrs.update(
            backbone=config.backbone, descriptor_dim=backbone.dim, patch_size=size, resize_max=config.resize_max
        )
        file.create_dataset("images", data=np.array([frame.name for frame in keyframes], dtype=h5py.string_dtype()))
        file.create_dataset("landmark_ids", data=selected)
        group = file.create_group("observations")
        columns = {
            "landmark": ((), np.int64),
            "image": ((), np.int32),
            "xy": ((2,), np.float32),
            "spacing_px": ((), np.float32),
            "patches": ((size, size, backbone.dim), np.float16),
        }
        for key, (shape, dtype) in columns.items():
            group.create_dataset(key, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype, chunks=(256, *shape))
        todo = [index for index, keypoint_index in enumerate(kept) if len(keypoint_index)]
        work = functools.partial(cut_patches, config)
        items = [(keyframes[index], observations[index][0][kept[index]]) for index in todo]
        description = f"{config.backbone} patches of {len(keyframes)} keyframes"
        for index, (centres, spacing_px, patches) in zip(todo, map_items(work, items, description)):
            ids = image_point_ids[index][kept[index]]
            rows = {
                "landmark": ids,
                "image": np.full(len(ids), index),
                "xy": centres,
                "spacing_px": np.full(len(ids), spacing_px),
                "patches": patches,
            }
            for key, values in rows.items():
                dataset = group[key]
                dataset.resize(len(dataset) + len(values), axis=0)
                dataset[-len(values) :] = values.astype(dataset.dtype)
        return len(group["landmark"])


_backbones = BoundedCache(2)


def thread_backbone(name: str):
    """The dense backbone ``name``, built once per process and thread."""
    return _backbones.get((name, threading.get_ident()), lambda: dense_backbone(name))


def cut_patches(config: PatchesConfig, items: list[tuple[Frame, np.ndarray]]) -> list[tuple]:
    """For each (keyframe, observation centres (N, 2) in pixels): the centres, the sample spacing in
    pixels and the backbone's descriptor patches (N, size, size, D) around them."""
    backbone = thread_backbone(config.backbone)
    results = []
    for frame, centres in items:
        image, scale = prepare_image(frame.image_path, config.resize_max, backbone.multiple)
        spacing_px = config.spacing_px * float(np.mean(scale))
        results.append((centres, spacing_px, backbone(image, scale).patches(centres, config.patch_size, spacing_px)))
    return results


def read_landmark_patches(path: Path) -> LandmarkPatches:
    """The landmark patches of ``path``: a ``patches.h5`` file, or a map folder holding one."""
    path = path / PATCHES_FILE if path.is_dir() else path
    if not path.is_file():
        raise RelocError(f"{path}: missing; the map has no landmark patches (add a mapping.patches node to mapping)")
    with h5py.File(path, "r") as file:
        observations = file["observations"]
        images = [name.decode() if isinstance(name, bytes) else name for name in file["images"][()]]
        return LandmarkPatches(
            str(file.attrs["backbone"]),
            int(file.attrs["patch_size"]),
            images,
            file["landmark_ids"][()],
            *(observations[key][()] for key in ("landmark", "image", "xy", "spacing_px", "patches")),
        )
