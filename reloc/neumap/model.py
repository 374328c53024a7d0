"""NeuMap's auto-transdecoder (Tang et al., CVPR 2023) and a scene's latent codes.

A scene is a set of voxels; each voxel holds, per decoder block, ``codes`` latent codes of
``dim`` dimensions, each with a learnable scalar weight. A query keypoint's descriptor (frozen
XFeat, 64-d) goes through a small trainable head; then each block is a pre-LN cross-attention
from the keypoint tokens to the voxel's codes of that block (values scaled by the code weights,
pruned codes masked out) and a GELU feed-forward layer. A linear head gives, per keypoint and
voxel, the 3D offset from the voxel's median in voxel sides and the logit of the point lying in
the voxel. The decoder is scene-agnostic; a new scene only gets its codes optimised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DecoderConfig:
    descriptor_dim: int = 64  # XFeat
    dim: int = 128  # D: token and code width
    blocks: int = 3  # L
    codes: int = 64  # K: latent codes per voxel and block
    heads: int = 4
    ffn_dim: int = 256


class CodeAttentionBlock(nn.Module):
    """Pre-LN cross-attention from keypoint tokens to one block's voxel codes, then a GELU FFN."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.heads = config.heads
        self.norm_tokens = nn.LayerNorm(config.dim)
        self.norm_codes = nn.LayerNorm(config.dim)
        self.query = nn.Linear(config.dim, config.dim)
        self.key = nn.Linear(config.dim, config.dim)
        self.value = nn.Linear(config.dim, config.dim)
        self.merge = nn.Linear(config.dim, config.dim)
        self.norm_ffn = nn.LayerNorm(config.dim)
        self.ffn = nn.Sequential(
            nn.Linear(config.dim, config.ffn_dim), nn.GELU(), nn.Linear(config.ffn_dim, config.dim)
        )

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, H, T, D / H)."""
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(self, tokens: torch.Tensor, codes: torch.Tensor, weights: torch.Tensor, keep: torch.Tensor):
        """``tokens`` (B, N, D), ``codes`` (B, K, D), ``weights`` (B, K), ``keep`` (B, K) bool ->
        tokens (B, N, D). A voxel with no kept code in this block adds nothing here."""
        any_kept = keep.any(dim=1)
        mask = (keep | ~any_kept[:, None])[:, None, None, :]
        normed = self.norm_codes(codes)
        attended = F.scaled_dot_product_attention(
            self.split_heads(self.query(self.norm_tokens(tokens))),
            self.split_heads(self.key(normed)),
            self.split_heads(self.value(normed) * weights[..., None]),
            attn_mask=mask,
        )
        tokens = tokens + self.merge(attended.transpose(1, 2).flatten(2)) * any_kept[:, None, None]
        return tokens + self.ffn(self.norm_ffn(tokens))


class TransDecoder(nn.Module):
    """Keypoint descriptors and a voxel's codes -> offsets from the voxel median and in-voxel logits."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Sequential(
            nn.Linear(config.descriptor_dim, config.dim), nn.GELU(), nn.Linear(config.dim, config.dim)
        )
        self.blocks = nn.ModuleList(CodeAttentionBlock(config) for _ in range(config.blocks))
        self.norm_out = nn.LayerNorm(config.dim)
        self.out = nn.Linear(config.dim, 4)

    def forward(
        self, descriptors: torch.Tensor, codes: torch.Tensor, weights: torch.Tensor, keep: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``descriptors`` (B, N, C); per voxel of the batch ``codes`` (B, L, K, D), ``weights``
        (B, L, K), ``keep`` (B, L, K) bool -> offsets (B, N, 3) in voxel sides, logits (B, N)."""
        return self.decode(self.embed(descriptors), codes, weights, keep)

    def decode(
        self, tokens: torch.Tensor, codes: torch.Tensor, weights: torch.Tensor, keep: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` from embedded descriptors (B, N, D) (a query embeds its keypoints once
        and decodes them in every voxel)."""
        for block_index, block in enumerate(self.blocks):
            tokens = block(tokens, codes[:, block_index], weights[:, block_index], keep[:, block_index])
        output = self.out(self.norm_out(tokens))
        return output[..., :3], output[..., 3]


@dataclass
class SceneCodes:
    """The latent codes of a scene's V voxels."""

    codes: torch.Tensor  # (V, L, K, D)
    weights: torch.Tensor  # (V, L, K)

    @classmethod
    def initial(cls, voxels: int, config: DecoderConfig, generator: torch.Generator) -> SceneCodes:
        """Codes drawn from N(0, 1) (the blocks normalise them), weights 1."""
        codes = torch.randn(voxels, config.blocks, config.codes, config.dim, generator=generator)
        return cls(codes, torch.ones(voxels, config.blocks, config.codes))

    def kept(self, prune_threshold: float) -> torch.Tensor:
        """(V, L, K) bool: the codes whose |weight| reaches ``prune_threshold``."""
        return self.weights.abs() >= prune_threshold

    def parameters(self) -> list[torch.Tensor]:
        return [self.codes.requires_grad_(True), self.weights.requires_grad_(True)]


def code_bytes(kept: torch.Tensor, dim: int) -> int:
    """Bytes of the kept codes in float16 with their weights (V, L, K ``kept``)."""
    return int(kept.sum()) * (dim + 1) * 2
