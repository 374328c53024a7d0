"""``keyframe_features.h5``: each keyframe as CasP + HomoMatcher see it, computed once at mapping
time so that a query costs one backbone pass plus the attention with each keyframe.

Per keyframe (group named by the keyframe): ``eighth`` (64, H/8, W/8) and ``sixteenth``
(192, H/16, W/16) backbone maps as float16, and ``fine`` (C, H/2, W/2) HomoMatcher features,
unit vectors, as int8 (times ``FINE_SCALE``; the rounding, at most 0.004 per component, is far
below what moves a soft-argmax); ``scale`` (2,) from the resized (W, H) to original pixels.
The file records the digest of the checkpoints that computed them and the resize; a map read
with other checkpoints is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np
import torch

from ..errors import RelocError
from ..matching.backbone import Pyramid
from ..matching.pairwise import CaspPairMatcher, PreparedImage

FINE_SCALE = 127.0


def write_keyframe_features(
    path: Path, matcher: CaspPairMatcher, keyframes: Iterable[tuple[str, PreparedImage]]
) -> None:
    """Write each prepared keyframe (name, :class:`PreparedImage` with fine features) as it comes."""
    with h5py.File(path, "w") as file:
        file.attrs["digest"] = matcher.digest
        file.attrs["resize_max"] = matcher.config.resize_max
        for name, prepared in keyframes:
            group = file.create_group(name.replace("/", "__"))
            for key in ("eighth", "sixteenth"):
                group.create_dataset(key, data=getattr(prepared.pyramid, key)[0].numpy().astype(np.float16))
            group.create_dataset("fine", data=np.round(prepared.fine[0].numpy() * FINE_SCALE).astype(np.int8))
            group.attrs["size"] = prepared.pyramid.size
            group.attrs["scale"] = prepared.scale


class KeyframeFeatures:
    """Reader of ``keyframe_features.h5``, checked against the matcher that will use it."""

    def __init__(self, path: Path, matcher: CaspPairMatcher):
        if not path.is_file():
            raise RelocError(
                f"{path}: keyframe features missing; the map needs the mapping.semidense_triangulate stage"
            )
        self.path = path
        with h5py.File(path, "r") as file:
            digest, resize_max = file.attrs.get("digest"), file.attrs.get("resize_max")
        if digest != matcher.digest or resize_max != matcher.config.resize_max:
            raise RelocError(
                f"{path}: keyframe features computed by checkpoints {digest} at {resize_max} px, but the matcher "
                f"loaded is {matcher.digest} at {matcher.config.resize_max} px; rebuild the map with this matcher"
            )

    def read(self, name: str) -> PreparedImage:
        """Keyframe ``name`` as a :class:`PreparedImage` (float32 maps, batch dimension 1; no
        image tensor: stored keyframes are matched as they are)."""
        with h5py.File(self.path, "r") as file:
            key = name.replace("/", "__")
            if key not in file:
                raise RelocError(f"{self.path}: has no keyframe {name}")
            group = file[key]
            maps = {k: torch.from_numpy(group[k][()].astype(np.float32))[None] for k in ("eighth", "sixteenth")}
            fine = torch.from_numpy(group["fine"][()].astype(np.float32) / FINE_SCALE)[None]
            size = tuple(int(v) for v in group.attrs["size"])
            scale = np.asarray(group.attrs["scale"], np.float64)
        pyramid = Pyramid(quarter=None, eighth=maps["eighth"], sixteenth=maps["sixteenth"], size=size)
        return PreparedImage(None, pyramid, fine, scale)
