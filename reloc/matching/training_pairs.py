"""Training pairs for the semi-dense matchers, with exact dense ground truth.

Two sources, mixed: view pairs of the synthetic scenes (correspondences from rendered depth and
the known poses) and homographic warps of real photographs. Both get random photometric changes.
``flow0[y, x]`` is the image-1 point (COLMAP pixels) of image 0's pixel centre (x + 0.5, y + 0.5),
NaN where it has none (outside image 1, occluded, nothing rendered); ``flow1`` the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from ..datasets.base import read_image
from ..datasets.synthetic.appearance import Appearance, apply_appearance
from ..datasets.synthetic.pairs import PairSampler
from ..datasets.synthetic.textures import photo_folder
from ..errors import RelocError

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
# Real photographs bundled with scikit-image (a dependency), the default source of warped pairs.
BUNDLED_PHOTOS = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "rocket.jpg",
    "page.png",
    "text.png",
)


@dataclass
class TrainingDataConfig:
    width: int = 384  # multiples of 32
    height: int = 288
    photos: str = "bundled"  # real photographs to warp: "bundled" (scikit-image's), a folder, or "" (none)
    photo_fraction: float = 0.5  # share of pairs that are warped photographs
    scenes: list[str] = field(default_factory=lambda: ["room", "courtyard"])
    scene_seeds: int = 2  # synthetic scenes per kind
    max_baseline_m: float = 1.5  # synthetic pairs: the second view moves up to this far
    max_view_angle_deg: float = 40.0  # and turns up to this much
    min_overlap: float = 0.25  # share of image 0 covisible in image 1
    max_corner_shift: float = 0.3  # homographic warps: corner displacement, fraction of the side
    max_rotation_deg: float = 30.0
    scale_range: tuple[float, float] = (0.7, 1.4)
    synthetic_pool: int = 256  # rendered pairs kept and re-augmented; one new pair is rendered per batch


@dataclass
class PairBatch:
    """``images0``/``images1`` (B, 3, H, W) float in [0, 1]; ``flow0``/``flow1`` (B, H, W, 2)."""

    images0: torch.Tensor
    images1: torch.Tensor
    flow0: torch.Tensor
    flow1: torch.Tensor


def random_appearance(rng: np.random.Generator) -> Appearance:
    """Photometric augmentation: exposure, gamma, colour cast, noise, blur and JPEG."""
    return Appearance(
        exposure=rng.uniform(0.7, 1.3),
        gamma=rng.uniform(0.75, 1.4),
        white_balance=tuple(rng.uniform(0.85, 1.15, 3)),
        noise=rng.uniform(0, 0.02),
        motion_blur=rng.choice([0.0, rng.uniform(1.5, 4.0)], p=[0.7, 0.3]),
        jpeg_quality=int(rng.choice([0, rng.integers(40, 95)], p=[0.5, 0.5])),
    )


def pixel_grid(width: int, height: int) -> np.ndarray:
    """(H, W, 3) homogeneous COLMAP pixel centres."""
    x, y = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    return np.stack([x, y, np.ones_like(x)], axis=-1)


def homography_flow(homography: np.ndarray, width: int, height: int, valid_in_source: np.ndarray) -> np.ndarray:
    """(H, W, 2) image of each pixel centre under ``homography``; NaN outside the target image
    or where ``valid_in_source`` (H, W) is false."""
    mapped = pixel_grid(width, height) @ homography.T
    flow = mapped[..., :2] / mapped[..., 2:]
    inside = (
        (mapped[..., 2] > 0)
        & (flow[..., 0] >= 0)
        & (flow[..., 0] < width)
        & (flow[..., 1] >= 0)
        & (flow[..., 1] < height)
    )
    flow[~(inside & valid_in_source)] = np.nan
    return flow.astype(np.float32)


class TrainingPairs:
    """Random pairs from the configured sources."""

    def __init__(self, config: TrainingDataConfig, seed: int = 0):
        self.config = config
        self.samplers = [
            PairSampler(
                kind,
                seed=seed * 100 + index,
                width=config.width,
                height=config.height,
                max_baseline_m=config.max_baseline_m,
                max_angle_deg=config.max_view_angle_deg,
                min_overlap=config.min_overlap,
            )
            for kind in config.scenes
            for index in range(config.scene_seeds)
        ]
        self.photos = []
        if config.photos == "bundled":
            self.photos = [photo_folder() / name for name in BUNDLED_PHOTOS]
        elif config.photos:
            folder = Path(config.photos)
            if not folder.is_dir():
                raise RelocError(f"{folder}: photo folder for homographic training pairs not found")
            self.photos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
            if not self.photos:
                raise RelocError(f"{folder}: no .jpg/.png photographs for homographic training pairs")
        self.photo_cache: dict[Path, np.ndarray] = {}
        self.pool: list = []

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """image0, image1 (H, W, 3) uint8, flow0, flow1 (H, W, 2) float32."""
        if self.photos and rng.random() < self.config.photo_fraction:
            return self.photo_pair(rng)
        return self.synthetic_pair(rng)

    def batch(self, size: int, rng: np.random.Generator) -> PairBatch:
        self.render_into_pool(rng)
        pairs = [self.sample(rng) for _ in range(size)]

        def images(index: int) -> torch.Tensor:
            return torch.from_numpy(np.stack([p[index] for p in pairs])).permute(0, 3, 1, 2).float() / 255

        return PairBatch(
            images(0),
            images(1),
            torch.from_numpy(np.stack([p[2] for p in pairs])),
            torch.from_numpy(np.stack([p[3] for p in pairs])),
        )

    def render_into_pool(self, rng: np.random.Generator) -> None:
        """Render one new synthetic pair into the pool (replacing a random one once it is full)."""
        pair = self.samplers[rng.integers(len(self.samplers))].sample(rng)
        if len(self.pool) < self.config.synthetic_pool:
            self.pool.append(pair)
        else:
            self.pool[rng.integers(len(self.pool))] = pair

    def synthetic_pair(self, rng: np.random.Generator):
        if not self.pool:
            self.render_into_pool(rng)
        pair = self.pool[rng.integers(len(self.pool))]
        flow0 = np.where(pair.covisible0[..., None], pair.flow0, np.nan).astype(np.float32)
        flow1 = np.where(pair.covisible1[..., None], pair.flow1, np.nan).astype(np.float32)
        image0 = apply_appearance(pair.image0.astype(np.float32) / 255, random_appearance(rng), rng)
        image1 = apply_appearance(pair.image1.astype(np.float32) / 255, random_appearance(rng), rng)
        return image0, image1, flow0, flow1

    def photo(self, path: Path) -> np.ndarray:
        if path not in self.photo_cache:
            self.photo_cache[path] = read_image(path)
        return self.photo_cache[path]

    def random_view(
        self, photo_size: tuple[int, int], rng: np.random.Generator, centre: np.ndarray, base_scale: float
    ) -> np.ndarray:
        """Homography (3, 3) from a view's pixels to photo pixels: a rotated, scaled, perspective-
        distorted window around ``centre``."""
        config = self.config
        width, height = config.width, config.height
        corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64)
        shifted = corners + rng.uniform(-1, 1, (4, 2)) * config.max_corner_shift * np.array([width, height]) / 2
        angle = np.radians(rng.uniform(-1, 1) * config.max_rotation_deg)
        scale = base_scale * rng.uniform(*config.scale_range)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        placed = (shifted - [width / 2, height / 2]) @ rotation.T * scale + centre
        return cv2.getPerspectiveTransform(corners.astype(np.float32), placed.astype(np.float32))

    def photo_pair(self, rng: np.random.Generator):
        photo = self.photo(self.photos[rng.integers(len(self.photos))])
        photo_height, photo_width = photo.shape[:2]
        config = self.config
        base_scale = 0.6 * min(photo_width / config.width, photo_height / config.height)
        centre = np.array([photo_width, photo_height]) / 2 + rng.uniform(-0.15, 0.15, 2) * [photo_width, photo_height]
        view0, view1 = (self.random_view((photo_width, photo_height), rng, centre, base_scale) for _ in range(2))
        images, valid = [], []
        for view in (view0, view1):
            warped = cv2.warpPerspective(
                photo, view, (config.width, config.height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
            )
            inside = (
                cv2.warpPerspective(
                    np.ones(photo.shape[:2], np.uint8),
                    view,
                    (config.width, config.height),
                    flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                )
                > 0
            )
            images.append(apply_appearance(warped.astype(np.float32) / 255, random_appearance(rng), rng))
            valid.append(inside)
        flow0 = homography_flow(np.linalg.inv(view1) @ view0, config.width, config.height, valid[0])
        flow1 = homography_flow(np.linalg.inv(view0) @ view1, config.width, config.height, valid[1])
        return images[0], images[1], flow0, flow1
