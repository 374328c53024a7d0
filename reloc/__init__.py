"""reloc: visual camera relocalization on a CPU. Poses are cam_from_world (as COLMAP)."""

__version__ = "0.1.0"
