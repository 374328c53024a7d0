"""Areas of an image without hub weights, and their area graph.

SAM's "everything" masks cannot be downloaded here, so areas come from a segmentation that needs no
weights: Felzenszwalb's graph segmentation (scikit-image) at one or more scales of one small copy of
the image (long side ``work_size``), fine to coarse, the scales at once on up to torch's intra-op
thread count. The default is one scale, 250: adding 1000 gave the same DMESA AUC@5 on the tuning
pairs of seeds 5 and 6 at twice the segmentation time (BENCHMARKS, eighth run). Each segment gives
its bounding box; boxes too small, too large (nearly the whole image: the root's) or duplicating a
kept one (IoU) are dropped. Boxes are in original COLMAP pixels ``(x0, y0, x1, y1)``.

The area graph (MESA): nodes are the root (the whole image) and the areas; an area's **level** is
set by its box's longer side against ``level_sides`` (at the paper's 640-px scale: 560 / 390 /
256 / 130 px); its **parent** is the smallest area of a coarser level whose box holds at least
``inclusion`` of it (the root when none does); **adjacency** edges join areas of one level whose
boxes overlap.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from scipy.ndimage import find_objects
from skimage.segmentation import felzenszwalb


@dataclass
class AreaConfig:
    work_size: int = 256  # long side the segmentation runs at
    scales: tuple[float, ...] = (250.0,)  # Felzenszwalb scales, fine to coarse
    level_sides: tuple[int, ...] = (560, 390, 256, 130)  # box sides at a 640-px long side, coarse to fine
    min_side: float = 0.15  # boxes whose longer side is under this share of the image's are dropped
    max_side: float = 0.9  # ... and those whose both sides exceed this share (the root's)
    duplicate_iou: float = 0.7  # a box this close to a kept one is dropped
    max_areas: int = 16  # the largest kept
    inclusion: float = 0.9  # share of a box inside another for a parent edge


def box_area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(boxes[..., 3] - boxes[..., 1], 0, None)


def intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, B) intersection areas of boxes (A, 4) and (B, 4)."""
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    return np.prod(np.clip(high - low, 0, None), axis=-1)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inter = intersection(a, b)
    return inter / np.maximum(box_area(a)[:, None] + box_area(b)[None] - inter, 1e-9)


def covers_image(boxes: np.ndarray, image_size: tuple[int, int], max_side: float) -> np.ndarray:
    """(A,) whether each box of ``boxes`` (A, 4) spans more than ``max_side`` of both sides of an
    image of ``image_size`` (width, height): the root's box, not an area."""
    width, height = image_size
    return ((boxes[:, 2] - boxes[:, 0]) > max_side * width) & ((boxes[:, 3] - boxes[:, 1]) > max_side * height)


def work_copy(image: np.ndarray, config: AreaConfig) -> np.ndarray:
    """The copy of RGB ``image`` (H, W, 3) the segmentation runs on (long side ``work_size``)."""
    height, width = image.shape[:2]
    factor = config.work_size / max(height, width)
    return cv2.resize(image, (round(width * factor), round(height * factor)), interpolation=cv2.INTER_AREA)


def segment_boxes(image: np.ndarray, config: AreaConfig) -> np.ndarray:
    """Boxes (A, 4) in original pixels of the segments of RGB ``image`` (H, W, 3) at every scale,
    largest first, filtered as the module says; (0, 4) for an image with no structure."""
    return segment_work_copy(work_copy(image, config), (image.shape[1], image.shape[0]), config)


def segment_work_copy(small: np.ndarray, image_size: tuple[int, int], config: AreaConfig) -> np.ndarray:
    """:func:`segment_boxes` from the image's :func:`work_copy` and its original (width, height)."""
    width, height = image_size
    factor = small.shape[1] / width

    def segments(scale: float) -> np.ndarray:
        return felzenszwalb(small, scale=scale, sigma=0.8, min_size=int(scale / 10))

    workers = min(len(config.scales), torch.get_num_threads())
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:  # scikit-image's segmentation releases the GIL for much of its time
            labels_per_scale = list(pool.map(segments, config.scales))
    else:
        labels_per_scale = [segments(scale) for scale in config.scales]
    return boxes_of_segments(labels_per_scale, factor, image_size, config)


def boxes_of_segments(
    labels_per_scale: list[np.ndarray], factor: float, image_size: tuple[int, int], config: AreaConfig
) -> np.ndarray:
    """Area boxes (A, 4) in original pixels from segment label images (h, w) (labels 0…, of a copy
    ``factor`` times the original's size), filtered as the module says; largest first."""
    width, height = image_size
    boxes = []
    for labels in labels_per_scale:
        for rows, columns in filter(None, find_objects(labels + 1)):
            boxes.append([columns.start, rows.start, columns.stop, rows.stop])
    if not boxes:
        return np.zeros((0, 4))
    boxes = np.asarray(boxes, np.float64) / factor
    sides = np.stack([(boxes[:, 2] - boxes[:, 0]) / width, (boxes[:, 3] - boxes[:, 1]) / height], axis=1)
    keep = (sides.max(axis=1) >= config.min_side) & ~covers_image(boxes, image_size, config.max_side)
    boxes = boxes[keep]
    boxes = boxes[np.argsort(-box_area(boxes), kind="stable")]
    kept: list[np.ndarray] = []
    for box in boxes:
        if not kept or iou(box[None], np.asarray(kept)).max() < config.duplicate_iou:
            kept.append(box)
        if len(kept) == config.max_areas:
            break
    return np.asarray(kept).reshape(-1, 4)


@dataclass
class AreaGraph:
    """Node 0 is the root (the whole image); nodes 1… are areas."""

    boxes: np.ndarray  # (A + 1, 4) original pixels
    level: np.ndarray  # (A + 1,) int: 0 for the root, 1… coarse to fine
    parent: np.ndarray  # (A + 1,) int: -1 for the root
    adjacency: list[tuple[int, int]]  # same-level overlapping pairs (i < j)


def area_level(boxes: np.ndarray, image_size: tuple[int, int], level_sides: tuple[int, ...]) -> np.ndarray:
    """Level 1… of each box (A, 4): the first of ``level_sides`` (coarse to fine, at a 640-px long
    side) its longer side reaches the middle of, the finest otherwise."""
    long_side = max(image_size)
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * 640 / long_side
    sizes = np.asarray(level_sides, np.float64)
    bounds = np.append((sizes[:-1] + sizes[1:]) / 2, 0.0)
    return 1 + np.argmax(sides[:, None] >= bounds[None], axis=1)


def area_graph(boxes: np.ndarray, image_size: tuple[int, int], config: AreaConfig) -> AreaGraph:
    """The graph of ``boxes`` (A, 4) in an image of ``image_size`` (width, height)."""
    width, height = image_size
    every = np.vstack([[[0.0, 0.0, width, height]], boxes])
    level = np.concatenate([[0], area_level(boxes, image_size, config.level_sides)])
    inside = intersection(every, every) / np.maximum(box_area(every)[:, None], 1e-9)  # [i, j]: share of i in j
    parent = np.full(len(every), -1)
    for node in range(1, len(every)):
        candidates = [j for j in range(1, len(every)) if level[j] < level[node] and inside[node, j] >= config.inclusion]
        parent[node] = min(candidates, key=lambda j: box_area(every[j])) if candidates else 0
    overlaps = intersection(every, every) > 0
    nodes = range(1, len(every))
    adjacency = [(i, j) for i in nodes for j in nodes if i < j and level[i] == level[j] and overlaps[i, j]]
    return AreaGraph(every, level, parent, adjacency)
