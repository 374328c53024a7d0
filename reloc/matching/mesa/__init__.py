"""Area-level matching (MESA / DMESA, Zhang et al., CVPR 2024 and TPAMI): areas of each image,
area matching, point matching inside matched area pairs, fusion with the global matches."""
