"""Matchers of local features: mutual nearest neighbour and LightGlue / LighterGlue."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import RelocError
from .lightglue import LightGlueConfig, LightGlueMatcher
from .mnn import MutualNNConfig, MutualNNMatcher


@dataclass
class MatcherConfig:
    name: str = "mnn"  # mnn or lightglue
    min_similarity: float = 0.0  # mnn: cosine similarity threshold
    ratio: float = 1.0  # mnn: Lowe's ratio (1: off)
    filter_threshold: float = 0.1  # lightglue: match confidence threshold


def build_matcher(config: MatcherConfig, extractor: str):
    """A matcher for features of ``extractor`` (xfeat, aliked, sift)."""
    if config.name == "mnn":
        return MutualNNMatcher(MutualNNConfig(config.min_similarity, config.ratio))
    if config.name == "lightglue":
        if extractor not in ("xfeat", "aliked"):
            raise RelocError(f"LightGlue weights exist for xfeat and aliked features, not {extractor}")
        return LightGlueMatcher(LightGlueConfig(features=extractor, filter_threshold=config.filter_threshold))
    raise RelocError(f"unknown matcher {config.name!r}; use mnn or lightglue")
