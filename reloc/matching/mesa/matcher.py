"""An area matcher around any pair matcher of :func:`reloc.matching.pairwise.build_pair_matcher`.

``AreaMatcher.match(image0, image1)``:

1. **global**: the wrapped matcher on the whole pair (long side ``resize_max``); its matches are
   also DMESA's coarse matches;
2. **segmentation**: areas of each image (:mod:`.areas`), the two images at once on up to
   torch's intra-op thread count; around RootSIFT, whose global pass (OpenCV) leaves torch's
   threads idle, they are segmented while it runs (:data:`SEGMENTED_DURING_GLOBAL_PASS`;
   ``details.seconds["segmentation"]`` is then what is left to wait after it); areas are
   remembered for the last ``cached_images`` images (a query
   matched to several keyframes, an image in several pairs is segmented once; the key is a digest
   of the segmentation's own input, so a hit is exact);
3. **area matching**, ``method`` ``dmesa`` (:mod:`.dmesa`: each area's coarse matches splatted
   into the other image, both directions; pairs ranked by their coarse matches, a pair whose two
   crops each lie ``duplicate_overlap`` or more inside a better pair's dropped — the same pair
   found from both sides, or one nested in it, would match the same pixels again; chosen on 90
   low-overlap synthetic pairs of seed 5: CasP's DMESA AUC@5 38.0 -> 41.3 (alone 34.3), XFeat*
   32.8 -> 32.9, RootSIFT 78.7 -> 78.8) or ``mesa`` (:mod:`.graphical`: graph cut over the area
   graphs, candidates re-ranked by the global energy; the ``max_area_pairs`` of highest energy
   are kept);
4. **point matching**: each area pair cropped (a square around each box, grown by ``pad``), the
   crops matched by the same matcher at a long side of ``crop_size`` (a small area is matched at
   a higher resolution than in the whole image; XFeat* at one extraction scale) and mapped back; a
   pair whose larger crop would be matched at under ``min_zoom`` times the global pass's resolution
   is skipped before the ``max_area_pairs`` are taken (:data:`CROPS`: how many, how large and
   with how many keypoints, by wrapped matcher);
5. **fusion**: a fundamental matrix from the global matches (MAGSAC++, OpenCV); an area pair
   whose matches have a median Sampson distance above ``max_sampson_px`` to it is dropped
   (a wrong area match); the rest are merged with the global matches, duplicates (same cells of
   ``dedup_px`` in both images) removed.

When the global matches are too few to fit the geometry, or no area pair survives, the result is
the global matches alone and ``details.fallback`` says why. Points are COLMAP pixels of the
original images, as every pair matcher returns them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from ...io.memo import BoundedCache
from ..pairwise import PairMatcherConfig, build_pair_matcher
from .areas import AreaConfig, box_area, intersection, segment_work_copy, work_copy
from .dmesa import SplatConfig, area_pairs, inside_box
from .graphical import GraphicalConfig, graphical_area_pairs


@dataclass
class AreaMatcherConfig:
    method: str = "dmesa"  # dmesa (splatting) or mesa (graph cut)
    areas: AreaConfig = field(default_factory=AreaConfig)
    splat: SplatConfig = field(default_factory=SplatConfig)
    graphical: GraphicalConfig = field(default_factory=GraphicalConfig)
    max_area_pairs: int | None = None  # area pairs whose crops are matched (None: the matcher's, CROPS)
    crop_size: int | None = None  # long side a crop pair is matched at (None: the matcher's, CROPS)
    crop_keypoints: int | None = None  # keypoints (XFeat*: top-k cells) per crop (None: CROPS, else the matcher's)
    min_zoom: float = 0.0  # skip area pairs matched at under this x the global resolution
    pad: float = 0.1  # crops grow by this share of their side
    duplicate_overlap: float = 0.8  # dmesa: a pair whose crops each lie this much inside a better pair's is dropped
    max_sampson_px: float = 2.0  # median Sampson distance (pixels at a 640-px long side) of a kept area pair
    min_global_matches: int = 16  # fewer: the geometry cannot be checked, plain matches are returned
    dedup_px: float = 2.0  # pixels at a 640-px long side
    cached_images: int = 32  # segmentations remembered


SEGMENTED_DURING_GLOBAL_PASS = {"sift"}
"""Wrapped matchers whose global pass leaves torch's intra-op threads idle (OpenCV's SIFT): the
areas are segmented beside it. The others run on every torch thread, so segmenting beside them
contends: CasP's DMESA went from 1.80x to 2.09x its time alone on the synthetic pairs, RootSIFT's
from 2.03x to 1.86x (BENCHMARKS, fourteenth run)."""

CROPS = {"xfeat-star": (1, 640, None), "sift": (3, 256, 512)}
"""(``max_area_pairs``, ``crop_size``, ``crop_keypoints``) by wrapped matcher when the config leaves
them unset (others: 3 crop pairs of 256 px with the matcher's own keypoint budget). Chosen on the
90 low-overlap synthetic pairs of seed 5 (``benchmarks/mesa.py eval --area-pairs N --crop-size
S``), DMESA's AUC@5 against the matcher alone: CasP 41.2 with 3 × 256 px (alone 34.7); XFeat* 32.9
with 3 × 256 px, 33.6 with 2 × 384 px and, with crops extracted at one scale, 33.2 with 2 × 512 px
and 35.4 with 1 × 640 px (alone 31.3). XFeat* extracts the whole pair at two scales; its crops at
one (``multiscale`` False), the area pair having fixed the scale: the same AUC@5 as two scales
(35.6) at a smaller cost. RootSIFT keeps the 512 strongest keypoints of a 256-px crop instead of
its 4096 (chosen on the low-overlap and 50-90 % overlap pairs of seeds 5 and 6: DMESA's AUC@5 85.6
against 85.8 on average, the 50-90 % sets no longer below RootSIFT alone); on the reported sets
DMESA then costs 1.7-2.0x RootSIFT alone instead of 1.7-2.3x (BENCHMARKS.md, issue 21)."""


@dataclass
class AreaMatchDetails:
    """What the last ``match`` did."""

    areas: tuple[int, int] = (0, 0)
    segmented: int = 0  # images segmented for this pair (the others' areas were remembered)
    area_pairs: list[tuple[list[float], list[float]]] = field(default_factory=list)  # proposed (box0, box1)
    kept_pairs: list[bool] = field(default_factory=list)
    global_matches: int = 0
    area_matches: int = 0  # added by the kept area pairs, after deduplication
    fallback: str = ""  # why only the global matches were returned ("" when areas were used)
    seconds: dict[str, float] = field(default_factory=dict)


def square_crop(box: np.ndarray, size: tuple[int, int], pad: float) -> np.ndarray:
    """Integer square window (x0, y0, x1, y1) around ``box`` grown by ``pad``, shifted inside an
    image of ``size`` (width, height) and shrunk only when the image is smaller."""
    width, height = size
    side = min(max(box[2] - box[0], box[3] - box[1]) * (1 + pad), width, height)
    centre = (box[:2] + box[2:]) / 2
    low = np.clip(centre - side / 2, 0, [width - side, height - side])
    return np.round(np.concatenate([low, low + side])).astype(int)


def sampson_distances(points0: np.ndarray, points1: np.ndarray, fundamental: np.ndarray) -> np.ndarray:
    """Sampson distances (N,) in pixels of matches (N, 2) to ``fundamental`` (x1^T F x0 = 0)."""
    x0 = np.hstack([points0, np.ones((len(points0), 1))])
    x1 = np.hstack([points1, np.ones((len(points1), 1))])
    f_x0, ft_x1 = x0 @ fundamental.T, x1 @ fundamental
    numerator = np.einsum("ij,ij->i", x1, f_x0) ** 2
    gradient = f_x0[:, 0] ** 2 + f_x0[:, 1] ** 2 + ft_x1[:, 0] ** 2 + ft_x1[:, 1] ** 2
    return np.sqrt(numerator / np.maximum(gradient, 1e-12))


def smaller_share(box: np.ndarray, other: np.ndarray) -> float:
    """Share of the smaller of boxes ``box`` and ``other`` (4,) that lies in the other."""
    shared = intersection(box[None].astype(np.float64), other[None].astype(np.float64))[0, 0]
    return float(shared / max(min(box_area(box), box_area(other)), 1e-9))


def deduplicate(points0: np.ndarray, points1: np.ndarray, cell: float) -> np.ndarray:
    """Indices of the first match of each (cell in image 0, cell in image 1)."""
    keys = np.hstack([np.floor(points0 / cell), np.floor(points1 / cell)])
    _, first = np.unique(keys, axis=0, return_index=True)
    return np.sort(first)


class AreaMatcher:
    """MESA or DMESA around the matcher named ``name`` (see the module docstring)."""

    def __init__(self, name: str, matcher_config: PairMatcherConfig = PairMatcherConfig(), config=None):
        self.config = config or AreaMatcherConfig()
        if self.config.method not in ("dmesa", "mesa"):
            raise ValueError(f"area matching method {self.config.method!r}: choose dmesa or mesa")
        self.matcher = build_pair_matcher(name, matcher_config)
        self.segments_during_global_pass = name in SEGMENTED_DURING_GLOBAL_PASS
        max_area_pairs, crop_size, crop_keypoints = CROPS.get(name, (3, 256, None))
        self.max_area_pairs = max_area_pairs if self.config.max_area_pairs is None else self.config.max_area_pairs
        self.crop_size = crop_size if self.config.crop_size is None else self.config.crop_size
        crop_config = dataclasses.replace(
            matcher_config,
            resize_max=self.crop_size,
            max_keypoints=self.config.crop_keypoints or crop_keypoints or matcher_config.max_keypoints,
            multiscale=False,
            cached_images=0,  # crops are new images at every pair: nothing to keep prepared
        )
        self.crop_matcher = build_pair_matcher(name, crop_config)
        self.details = AreaMatchDetails()
        self.segmentations = BoundedCache(self.config.cached_images)
        self.counting = threading.Lock()

    def segment(self, image: np.ndarray) -> np.ndarray:
        """Area boxes (A, 4) of ``image``, from the cache when its segmentation input was seen."""
        small = work_copy(image, self.config.areas)
        key = hashlib.blake2b(small.tobytes() + np.asarray(image.shape[:2]).tobytes(), digest_size=16).digest()

        def segmented() -> np.ndarray:
            with self.counting:
                self.details.segmented += 1
            return segment_work_copy(small, (image.shape[1], image.shape[0]), self.config.areas)

        return self.segmentations.get(key, segmented)

    @contextlib.contextmanager
    def segmenting(self, image0: np.ndarray, image1: np.ndarray) -> Iterator[Callable[[], list[np.ndarray]]]:
        """Within the block, a function that gives both images' area boxes. On more than one torch
        thread they are segmented on two threads (scikit-image releases the GIL for much of its
        time), from the block's start when the wrapped matcher is in
        :data:`SEGMENTED_DURING_GLOBAL_PASS` (the block's end waits for them), else when asked; on
        one thread, one after the other when asked."""
        if torch.get_num_threads() <= 1:
            yield lambda: [self.segment(image0), self.segment(image1)]
            return
        with ThreadPoolExecutor(2) as pool:
            if self.segments_during_global_pass:
                futures = [pool.submit(self.segment, image) for image in (image0, image1)]
                yield lambda: [future.result() for future in futures]
            else:
                yield lambda: list(pool.map(self.segment, (image0, image1)))

    def match(self, image0: np.ndarray, image1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        config, details = self.config, AreaMatchDetails()
        self.details = details
        sizes = ((image0.shape[1], image0.shape[0]), (image1.shape[1], image1.shape[0]))
        scale = max(*sizes[0], *sizes[1]) / 640
        with self.segmenting(image0, image1) as segmented:
            started = time.perf_counter()
            points0, points1 = self.matcher.match(image0, image1)
            details.global_matches = len(points0)
            details.seconds["point matching"] = time.perf_counter() - started
            if len(points0) < config.min_global_matches:
                details.fallback = f"{len(points0)} global matches, fewer than {config.min_global_matches}"
                return points0, points1
            started = time.perf_counter()
            fundamental, _ = cv2.findFundamentalMat(points0, points1, cv2.USAC_MAGSAC, 1.0 * scale, 0.999, 10000)
            details.seconds["fusion"] = time.perf_counter() - started
            started = time.perf_counter()
            boxes0, boxes1 = segmented()
        details.areas = (len(boxes0), len(boxes1))
        details.seconds["segmentation"] = time.perf_counter() - started
        if fundamental is None or fundamental.shape != (3, 3):
            details.fallback = "no fundamental matrix fits the global matches"
            return points0, points1
        started = time.perf_counter()
        proposed = self.area_pairs(boxes0, boxes1, points0, points1, sizes)
        chosen = [(pair, windows) for pair, windows in proposed if self.zoom(windows, sizes) >= config.min_zoom]
        pairs = chosen[: self.max_area_pairs]
        details.area_pairs = [(b0.tolist(), b1.tolist()) for (b0, b1), _ in pairs]
        details.seconds["area matching"] = time.perf_counter() - started
        if not pairs:
            details.fallback = f"no area pair ({len(boxes0)} and {len(boxes1)} areas)"
            if proposed:
                details.fallback = (
                    f"none of {len(proposed)} area pairs is matched at {config.min_zoom}x the global resolution or more"
                )
            return points0, points1
        started = time.perf_counter()
        crops = [self.match_crops(image0, image1, windows) for _, windows in pairs]
        details.seconds["point matching"] += time.perf_counter() - started
        started = time.perf_counter()
        kept0, kept1 = [points0], [points1]
        for crop0, crop1 in crops:
            distances = sampson_distances(crop0, crop1, fundamental)
            keep = len(crop0) >= 8 and float(np.median(distances)) <= config.max_sampson_px * scale
            details.kept_pairs.append(bool(keep))
            if keep:
                kept0.append(crop0)
                kept1.append(crop1)
        merged0, merged1 = np.vstack(kept0), np.vstack(kept1)
        unique = deduplicate(merged0, merged1, config.dedup_px * scale)
        details.area_matches = int((unique >= len(points0)).sum())  # the global matches come first
        merged0, merged1 = merged0[unique], merged1[unique]
        details.seconds["fusion"] += time.perf_counter() - started
        if not any(details.kept_pairs):
            details.fallback = "every area pair disagreed with the global geometry"
            return points0, points1
        return merged0, merged1

    def area_pairs(
        self,
        boxes0: np.ndarray,
        boxes1: np.ndarray,
        points0: np.ndarray,
        points1: np.ndarray,
        sizes: tuple[tuple[int, int], tuple[int, int]],
    ) -> list[tuple[tuple[np.ndarray, np.ndarray], list[np.ndarray]]]:
        """Area pairs ``((box0, box1), crop windows)``, best first, by the configured method; for
        DMESA without the duplicates of better pairs (module docstring, step 3)."""
        config, weights = self.config, np.ones(len(points0))
        if config.method == "mesa":
            found = graphical_area_pairs(
                boxes0, boxes1, points0, points1, weights, sizes, config.areas, config.graphical
            )
            return [((box0, box1), self.crop_windows(box0, box1, sizes)) for box0, box1, _ in found]
        pairs = area_pairs(boxes0, boxes1, points0, points1, weights, sizes, config.splat, config.areas.max_side)
        support = [int((inside_box(points0, b0) & inside_box(points1, b1)).sum()) for b0, b1 in pairs]
        kept: list[tuple[tuple[np.ndarray, np.ndarray], list[np.ndarray]]] = []
        for index in np.argsort(support, kind="stable")[::-1]:
            windows = self.crop_windows(*pairs[index], sizes)
            if not any(
                all(smaller_share(w, k) >= config.duplicate_overlap for w, k in zip(windows, better))
                for _, better in kept
            ):
                kept.append((pairs[index], windows))
        return kept

    def crop_windows(
        self, box0: np.ndarray, box1: np.ndarray, sizes: tuple[tuple[int, int], tuple[int, int]]
    ) -> list[np.ndarray]:
        """The square windows (x0, y0, x1, y1) cropped around ``box0`` and ``box1``."""
        return [square_crop(box, size, self.config.pad) for box, size in zip((box0, box1), sizes)]

    def zoom(self, windows: list[np.ndarray], sizes: tuple[tuple[int, int], tuple[int, int]]) -> float:
        """Resolution of the match of an area pair's crop ``windows`` (``crop_windows``) relative
        to the global pass's: ``crop_size`` over the larger window side, against the wrapped
        matcher's ``resize_max`` over the larger image side (>1: the crops are matched in more
        detail than the whole pair)."""
        window_side = max(max(w[2] - w[0], w[3] - w[1]) for w in windows)
        resize_max = self.matcher.config.resize_max
        global_scale = resize_max / max(*sizes[0], *sizes[1]) if resize_max else 1.0
        return self.crop_size / window_side / global_scale

    def match_crops(
        self, image0: np.ndarray, image1: np.ndarray, windows: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Matches (N, 2) in original pixels of the crop ``windows`` (x0, y0, x1, y1) of the two images."""
        crops = [image[y0:y1, x0:x1] for image, (x0, y0, x1, y1) in zip((image0, image1), windows)]
        if min(min(crop.shape[:2]) for crop in crops) < 32:
            return np.zeros((0, 2)), np.zeros((0, 2))
        crop0, crop1 = self.crop_matcher.match(*crops)
        return crop0 + windows[0][:2], crop1 + windows[1][:2]
