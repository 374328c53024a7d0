"""Matchers of local features: mutual nearest neighbour and LightGlue / LighterGlue."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import RelocError, require_range
from .lightglue import LightGlueConfig, LightGlueMatcher
from .mnn import MutualNNConfig, MutualNNMatcher


@dataclass
class MatcherConfig:
    name: str = "mnn"  # mnn or lightglue
    min_similarity: float = 0.0  # mnn: cosine similarity threshold
    ratio: float = 1.0  # mnn: Lowe's ratio (1: off)
    filter_threshold: float = 0.1  # lightglue: match confidence threshold

    def __post_init__(self) -> None:
        require_range(self, "min_similarity", low=-1.0, high=1.0)
        require_range(self, "ratio", above=0.0, high=1.0)
        require_range(self, "filter_threshold", low=0.0, high=1.0)


def build_matcher(config: MatcherConfig, extractor: str):
    """A matcher for features of ``extractor`` (xfeat, aliked, sift)."""
    if config.name == "mnn":
        return MutualNNMatcher(MutualNNConfig(config.min_similarity, config.ratio))
    if config.name == "lightglue":
        if extractor not in ("xfeat", "aliked"):
            raise RelocError(f"LightGlue weights exist for xfeat and aliked features, not {extractor}")
        return LightGlueMatcher(LightGlueConfig(features=extractor, filter_threshold=config.filter_threshold))
    raise RelocError(f"unknown matcher {config.name!r}; use mnn or lightglue")
