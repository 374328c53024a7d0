"""Localization: 2D-3D correspondences against the sparse map and LO-RANSAC PnP."""
