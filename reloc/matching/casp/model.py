"""CasP-lite: semi-dense matching guided by cascaded correspondence priors (Chen et al., ICCV 2025).

Phase 1 (1/16): high-level tokens of both images pass through self- and cross-attention; a dual
softmax over their similarities gives each token its top-k candidate tokens in the other image,
in both directions (one-to-many priors). Phase 2 (1/8): every 1/8 token attends only to the 1/8
tokens inside its parent's prior regions (region-based selective cross-attention), then picks
one match by a softmax over those candidates; matches are kept when mutual and confident.

Token layout: a 1/16 token (parent) at grid (r, c) has the four 1/8 tokens (2r + dr, 2c + dc),
dr, dc in {0, 1}. 1/8 tokens are indexed "grouped": ``4 * parent + 2 * dr + dc``. Match points
are 1/8 cell centres ``(8 c8 + 4, 8 r8 + 4)`` in COLMAP pixels of the network's input image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..backbone import Pyramid, XFeatPyramid


@dataclass
class CaspConfig:
    dim16: int = 128  # width of the 1/16 tokens
    dim8: int = 64  # width of the 1/8 tokens
    heads: int = 4
    layers16: int = 2  # self + cross attention pairs at 1/16
    top_k: int = 8  # prior candidates per 1/16 token and direction
    temperature: float = 0.1  # softmax temperature of cosine similarities (both phases)
    match_threshold: float = 0.2  # product of both directions' one-to-one probabilities


def sinusoidal_positions(height: int, width: int, dim: int) -> torch.Tensor:
    """(height * width, dim) 2-D sine/cosine encoding of token grid positions (row-major)."""
    quarter = dim // 4
    frequencies = torch.exp(torch.arange(quarter, dtype=torch.float32) * (-torch.log(torch.tensor(1000.0)) / quarter))
    rows, cols = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    angles_y = rows.reshape(-1, 1) * frequencies
    angles_x = cols.reshape(-1, 1) * frequencies
    return torch.cat([angles_x.sin(), angles_x.cos(), angles_y.sin(), angles_y.cos()], dim=1)


class AttentionBlock(nn.Module):
    """Pre-norm multi-head attention of ``x`` over ``source`` and a feed-forward layer, both
    residual. ``x`` (..., N, D), ``source`` (..., M, D)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm_query, self.norm_source, self.norm_ffn = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.query, self.key_value, self.out = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(-3, -2)

    def forward(self, x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        query = self.split_heads(self.query(self.norm_query(x)))
        key, value = self.key_value(self.norm_source(source)).chunk(2, dim=-1)
        attended = F.scaled_dot_product_attention(query, self.split_heads(key), self.split_heads(value))
        x = x + self.out(attended.transpose(-3, -2).flatten(-2))
        return x + self.ffn(self.norm_ffn(x))


def group_by_parent(eighth: torch.Tensor) -> torch.Tensor:
    """(B, D, 2h, 2w) map at 1/8 -> (B, h * w, 4, D): the four children of each 1/16 token."""
    batch, dim, height, width = eighth.shape
    grouped = eighth.reshape(batch, dim, height // 2, 2, width // 2, 2).permute(0, 2, 4, 3, 5, 1)
    return grouped.reshape(batch, (height // 2) * (width // 2), 4, dim)


class SelectiveCrossAttention(AttentionBlock):
    """Region-based selective cross-attention at 1/8: the four children of a 1/16 token attend
    only to the 4k children of that token's prior parents in the other image. Keys and values are
    projected once per token and then gathered, so the cost is linear in the number of tokens."""

    def forward(self, children: torch.Tensor, other_children: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """``children`` (B, N, 4, D), ``other_children`` (B, M, 4, D), ``prior`` (B, N, k) parent
        indices in the other image -> updated children (B, N, 4, D)."""
        batch, count, _, dim = children.shape
        head_dim = dim // self.heads
        query = self.query(self.norm_query(children)).reshape(batch, count, 4, self.heads, head_dim)
        key_value = gather_candidates(self.key_value(self.norm_source(other_children)), prior)
        key, value = key_value.reshape(batch, count, -1, 2, self.heads, head_dim).unbind(3)  # (B, N, 4k, h, d)
        weights = (torch.einsum("bnqhd,bnkhd->bnhqk", query, key) / head_dim**0.5).softmax(dim=-1)
        attended = torch.einsum("bnhqk,bnkhd->bnqhd", weights, value).reshape(batch, count, 4, dim)
        children = children + self.out(attended)
        return children + self.ffn(self.norm_ffn(children))


def gather_candidates(grouped: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
    """Children of prior parents: ``grouped`` (B, M, 4, D) tokens of the other image, ``parents``
    (B, N, k) parent indices into them -> (B, N, 4k, D), in the order of :func:`candidate_ids`."""
    batch, count, top_k = parents.shape
    dim = grouped.shape[-1]
    index = parents.reshape(batch, count * top_k, 1, 1).expand(-1, -1, 4, dim)
    return torch.gather(grouped, 1, index).reshape(batch, count, 4 * top_k, dim)


def candidate_ids(parents: torch.Tensor) -> torch.Tensor:
    """Grouped 1/8 ids (B, N, 4k) of the children of ``parents`` (B, N, k)."""
    ids = parents[..., None] * 4 + torch.arange(4, device=parents.device)
    return ids.flatten(2)


@dataclass
class CaspOutput:
    """Phase outputs for a batch. N_i: 1/16 tokens of image i; grid_i: (h, w) of its 1/16 grid.

    ``log_prior`` (B, N_0, N_1): log dual-softmax probabilities at 1/16. ``candidates01`` (B, N_0,
    4k): grouped 1/8 ids in image 1 that the children of each image-0 parent may match;
    ``log_match01`` (B, N_0, 4, 4k): log softmax of each child over them. ``candidates10`` and
    ``log_match10`` are the same from image 1 to image 0."""

    log_prior: torch.Tensor
    candidates01: torch.Tensor
    log_match01: torch.Tensor
    candidates10: torch.Tensor
    log_match10: torch.Tensor
    grid0: tuple[int, int]
    grid1: tuple[int, int]


class Casp(nn.Module):
    """CasP heads on the frozen XFeat pyramid. ``forward(images0, images1)`` takes float images
    (B, 3, H, W) in [0, 1], sides multiples of 32 (the two images may differ in size)."""

    def __init__(self, config: CaspConfig = CaspConfig()):
        super().__init__()
        self.config = config
        self.backbone = XFeatPyramid()
        self.project16 = nn.Linear(192, config.dim16)
        self.layers16 = nn.ModuleList(AttentionBlock(config.dim16, config.heads) for _ in range(2 * config.layers16))
        self.project8 = nn.Linear(64, config.dim8)
        self.parent_to_child = nn.Linear(config.dim16, config.dim8)
        self.selective = SelectiveCrossAttention(config.dim8, config.heads)
        self.refine8 = nn.Linear(config.dim8, config.dim8)

    def tokens16(self, pyramid: Pyramid) -> torch.Tensor:
        """(B, N, dim16) projected 1/16 tokens with positions."""
        height, width = pyramid.sixteenth.shape[-2:]
        tokens = self.project16(pyramid.sixteenth.flatten(2).transpose(1, 2))
        return tokens + sinusoidal_positions(height, width, self.config.dim16).to(tokens)

    def attend16(self, tokens0: torch.Tensor, tokens1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for self_block, cross_block in zip(self.layers16[0::2], self.layers16[1::2]):
            tokens0, tokens1 = self_block(tokens0, tokens0), self_block(tokens1, tokens1)
            tokens0, tokens1 = cross_block(tokens0, tokens1), cross_block(tokens1, tokens0)
        return tokens0, tokens1

    def children8(self, pyramid: Pyramid, parents: torch.Tensor) -> torch.Tensor:
        """(B, N, 4, dim8) 1/8 tokens grouped by parent, each with its parent's context added."""
        grouped = group_by_parent(pyramid.eighth)
        return self.project8(grouped) + self.parent_to_child(parents)[:, :, None, :]

    def forward(self, images0: torch.Tensor, images1: torch.Tensor) -> CaspOutput:
        return self.match_pyramids(self.backbone(images0), self.backbone(images1))

    def match_pyramids(self, pyramid0: Pyramid, pyramid1: Pyramid) -> CaspOutput:
        """Both phases on precomputed backbone maps (shared with a fine stage)."""
        parents0, parents1 = self.attend16(self.tokens16(pyramid0), self.tokens16(pyramid1))
        similarity = (
            F.normalize(parents0, dim=-1) @ F.normalize(parents1, dim=-1).transpose(1, 2) / self.config.temperature
        )
        log_prior = similarity - similarity.logsumexp(dim=1, keepdim=True) - similarity.logsumexp(dim=2, keepdim=True)
        top_k = min(self.config.top_k, log_prior.shape[1], log_prior.shape[2])
        prior01 = log_prior.topk(top_k, dim=2).indices  # (B, N0, k) parents in image 1
        prior10 = log_prior.topk(top_k, dim=1).indices.transpose(1, 2)  # (B, N1, k) parents in image 0

        children0, children1 = self.children8(pyramid0, parents0), self.children8(pyramid1, parents1)
        children0, children1 = (
            self.selective(children0, children1, prior01),
            self.selective(children1, children0, prior10),
        )
        candidates01 = candidate_ids(prior01)
        candidates10 = candidate_ids(prior10)
        log_match01 = self.one_to_one(children0, children1, prior01)
        log_match10 = self.one_to_one(children1, children0, prior10)
        grid0, grid1 = tuple(pyramid0.sixteenth.shape[-2:]), tuple(pyramid1.sixteenth.shape[-2:])
        return CaspOutput(log_prior, candidates01, log_match01, candidates10, log_match10, grid0, grid1)

    def one_to_one(self, children: torch.Tensor, other_children: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """(B, N, 4, 4k) log softmax of each child over the children of its prior parents."""
        candidates = gather_candidates(F.normalize(self.refine8(other_children), dim=-1), prior)
        queries = F.normalize(self.refine8(children), dim=-1)
        return (queries @ candidates.transpose(-1, -2) / self.config.temperature).log_softmax(dim=-1)


def grouped_to_points(ids: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Grouped 1/8 ids (...,) -> (..., 2) cell centres in COLMAP pixels of the input image."""
    width16 = grid[1]
    parent, child = ids // 4, ids % 4
    row8 = 2 * (parent // width16) + child // 2
    col8 = 2 * (parent % width16) + child % 2
    return torch.stack([8 * col8 + 4, 8 * row8 + 4], dim=-1).float()


def best_candidates(log_match: torch.Tensor, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each child's most probable candidate: grouped ids (B, 4N) in the other image and their
    probabilities (B, 4N), children in grouped order."""
    value, position = log_match.max(dim=-1)  # (B, N, 4)
    chosen = torch.gather(candidates[:, :, None, :].expand(-1, -1, 4, -1), 3, position[..., None])[..., 0]
    return chosen.flatten(1), value.exp().flatten(1)


def mutual_matches(output: CaspOutput, threshold: float) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per batch item: points0 (M, 2), points1 (M, 2) (cell centres, input-image COLMAP pixels)
    and confidence (M,) of the one-to-one matches that are mutual and above ``threshold``."""
    target01, probability01 = best_candidates(output.log_match01, output.candidates01)
    target10, probability10 = best_candidates(output.log_match10, output.candidates10)
    results = []
    for b in range(target01.shape[0]):
        ids0 = torch.arange(target01.shape[1], device=target01.device)
        confidence = probability01[b] * probability10[b][target01[b]]
        keep = (target10[b][target01[b]] == ids0) & (confidence > threshold)
        results.append(
            (
                grouped_to_points(ids0[keep], output.grid0),
                grouped_to_points(target01[b][keep], output.grid1),
                confidence[keep],
            )
        )
    return results
