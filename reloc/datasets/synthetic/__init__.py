"""Synthetic scenes with exact ground truth, written in the 7-Scenes and Cambridge layouts.

``generate`` writes a scene to disk; ``build_scene`` + ``Renderer`` render any view of the same
scene; ``pairs.PairSampler`` draws training pairs with dense correspondences.
"""
