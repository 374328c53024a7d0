"""Geometry: ``rotation`` (quaternions, SO(3)), ``projection`` (world -> pixels), ``errors``
(pose errors of the evaluation protocols). Import the submodules directly."""
