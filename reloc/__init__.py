"""reloc: visual camera relocalization on a CPU. Poses are cam_from_world (as COLMAP).

``reloc.map``, ``reloc.localize``, ``reloc.evaluate`` and ``reloc.load_pipeline`` are the Python API
(:mod:`reloc.api`); they load on first use, so ``import reloc`` stays light."""

__version__ = "0.1.0"
__all__ = ["evaluate", "load_pipeline", "localize", "map"]


def __getattr__(name: str):
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'reloc' has no attribute {name!r}")
