"""Mapping with known poses: keyframes, covisible pairs, tracks, triangulation, the sparse map store."""
