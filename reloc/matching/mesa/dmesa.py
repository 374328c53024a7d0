"""DMESA's dense area matching: for each area of one image, the coarse matches that start inside
it are splatted into the other image, blurred with a Gaussian, thresholded and boxed.

The density is built on a grid of ``cell`` pixels: each match adds its weight to its cell, the
grid is blurred with a Gaussian of ``sigma_cells``, and the region kept is the connected part,
around the density's peak, that stays above the value a single match has at √2·σ from its cell
(e^-1 of its peak). Its bounding box, grown by one cell, is the matched area, unless both its
sides exceed ``root_side`` of the image (the segmentation's own ``AreaConfig.max_side``): such a
box is the root (the whole image), which the segmentation drops too, not an area, and the source
area gets no partner (chosen on the tuning pairs of seeds 5 and 6: DMESA's AUC@5 averaged over
four sets, XFeat* 52.0 -> 52.4, CasP 60.7 -> 60.6; BENCHMARKS, tenth run). Both directions are
run (areas of image 0 into image 1 and back); each gives area pairs ``(box0, box1)``.

**EM refinement** (``em_iterations`` > 0): the splatted box starts a two-component mixture over
the area's matched points in the other image, a Gaussian for the area's true counterpart and a
uniform density over the image for wrong matches; EM re-estimates the Gaussian's mean and
covariance and the inlier share, and the refined box spans the mean ± ``em_sigmas`` standard
deviations (clipped to the image).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .areas import covers_image


@dataclass
class SplatConfig:
    cell: int = 16  # density grid, pixels at a 640-px long side
    sigma_cells: float = 1.5
    min_matches: int = 12  # an area with fewer coarse matches inside gets no partner
    em_iterations: int = 0  # EM refinement of each splatted box (0: none)
    em_sigmas: float = 2.0  # the refined box spans the mean ± this many standard deviations


def inside_box(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    return (points[:, 0] >= box[0]) & (points[:, 0] < box[2]) & (points[:, 1] >= box[1]) & (points[:, 1] < box[3])


def splat_box(
    points: np.ndarray, weights: np.ndarray, image_size: tuple[int, int], config: SplatConfig
) -> np.ndarray | None:
    """The box (4,) in an image of ``image_size`` (width, height) holding the dense part of
    ``points`` (N, 2, COLMAP pixels) weighted by ``weights`` (N,), or None without one."""
    width, height = image_size
    cell = config.cell * max(width, height) / 640
    grid_w, grid_h = max(1, int(np.ceil(width / cell))), max(1, int(np.ceil(height / cell)))
    density = np.zeros((grid_h, grid_w), np.float32)
    columns = np.clip((points[:, 0] / cell).astype(int), 0, grid_w - 1)
    rows = np.clip((points[:, 1] / cell).astype(int), 0, grid_h - 1)
    np.add.at(density, (rows, columns), weights.astype(np.float32))
    sigma = config.sigma_cells
    size = 2 * int(np.ceil(3 * sigma)) + 1
    blurred = cv2.GaussianBlur(density, (size, size), sigma, borderType=cv2.BORDER_CONSTANT)
    single_peak = cv2.getGaussianKernel(size, sigma).max() ** 2
    above = (blurred >= single_peak * np.exp(-1) * weights.max()).astype(np.uint8)
    if not above.any():
        return None
    _, components = cv2.connectedComponents(above, connectivity=8)
    peak = np.unravel_index(np.argmax(blurred), blurred.shape)
    rows, columns = np.nonzero(components == components[peak])
    box = np.array([columns.min() - 1, rows.min() - 1, columns.max() + 2, rows.max() + 2], np.float64) * cell
    return np.clip(box, 0, [width, height, width, height])


def refine_box(
    points: np.ndarray, weights: np.ndarray, image_size: tuple[int, int], box: np.ndarray, config: SplatConfig
) -> np.ndarray:
    """``box`` (4,) refined by EM (module docstring) on ``points`` (N, 2) weighted by ``weights``
    (N,) in an image of ``image_size`` (width, height)."""
    width, height = image_size
    mean = (box[:2] + box[2:]) / 2
    covariance = np.diag(np.maximum((box[2:] - box[:2]) / 4, 1.0) ** 2)
    inlier_share, outlier_density = 0.5, 1.0 / (width * height)
    for _ in range(config.em_iterations):
        offsets = points - mean
        precision = np.linalg.inv(covariance)
        mahalanobis = np.einsum("ni,ij,nj->n", offsets, precision, offsets)
        density = np.exp(-0.5 * mahalanobis) / (2 * np.pi * np.sqrt(np.linalg.det(covariance)))
        inlier = inlier_share * density
        responsibility = weights * inlier / (inlier + (1 - inlier_share) * outlier_density)
        total = responsibility.sum()
        if total < 1e-6:
            return box
        mean = responsibility @ points / total
        offsets = points - mean
        covariance = (responsibility[:, None] * offsets).T @ offsets / total + np.eye(2)
        inlier_share = float(np.clip(total / weights.sum(), 1e-3, 1 - 1e-3))
    spread = config.em_sigmas * np.sqrt(np.diag(covariance))
    return np.clip(np.concatenate([mean - spread, mean + spread]), 0, [width, height, width, height])


def area_pairs(
    boxes0: np.ndarray,
    boxes1: np.ndarray,
    points0: np.ndarray,
    points1: np.ndarray,
    weights: np.ndarray,
    sizes: tuple[tuple[int, int], tuple[int, int]],
    config: SplatConfig,
    root_side: float,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Area pairs (box0, box1) of both directions from coarse matches ``points0`` ↔ ``points1``
    (N, 2) with ``weights`` (N,): areas ``boxes0`` (A, 4) of image 0 splatted into image 1 and
    ``boxes1`` (B, 4) of image 1 into image 0; ``sizes`` are the images' (width, height). A
    splatted box spanning more than ``root_side`` of both sides of its image is the root and
    gives its area no partner."""
    pairs = []
    for boxes, source, target, size, forward in (
        (boxes0, points0, points1, sizes[1], True),
        (boxes1, points1, points0, sizes[0], False),
    ):
        for box in boxes:
            inside = inside_box(source, box)
            if inside.sum() < config.min_matches:
                continue
            found = splat_box(target[inside], weights[inside], size, config)
            if found is not None and config.em_iterations:
                found = refine_box(target[inside], weights[inside], size, found, config)
            if found is not None and not covers_image(found[None], size, root_side)[0]:
                pairs.append((box, found) if forward else (found, box))
    return pairs
