"""Area-level matching (MESA / DMESA, Zhang et al., CVPR 2024 and TPAMI): areas of each image,
area matching, point matching inside matched area pairs, fusion with the global matches.

    from reloc.matching.mesa import AreaMatcher, AreaMatcherConfig
    matcher = AreaMatcher("casp", config=AreaMatcherConfig(method="mesa"))  # or "dmesa"
    points0, points1 = matcher.match(image0, image1)  # (N, 2) COLMAP pixels; matcher.details
"""

from .matcher import AreaMatchDetails, AreaMatcher, AreaMatcherConfig

__all__ = ["AreaMatchDetails", "AreaMatcher", "AreaMatcherConfig"]
