"""Stage base class and registry.

A stage is a class with a typed config (a dataclass), declared input and output ports
(name -> Python type) and ``run(**inputs) -> dict`` returning every declared output. Stage
families register their classes with :func:`register_stage` when their module is imported;
:func:`stage_class` imports the families listed in ``STAGE_MODULES`` on first use.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, ClassVar

from ..errors import PipelineError

STAGE_MODULES = (
    "reloc.features.stages",
    "reloc.mapping.stages",
    "reloc.mapping.keyframe_images",
    "reloc.mapping.semidense",
    "reloc.retrieval.stages",
    "reloc.localization.stages",
    "reloc.localization.semidense",
    "reloc.localization.area_matching",
    "reloc.localization.priors",
    "reloc.favor.stages",
    "reloc.neumap.stages",
)

PLANNED_STAGES: dict[str, str] = {}  # stage name -> where it is planned, for a clear error until it lands

_STAGES: dict[str, type[Stage]] = {}


@dataclasses.dataclass
class NoConfig:
    """Config of a stage without options."""


class Stage:
    """Base class of pipeline stages. Subclasses set the class attributes and implement ``run``."""

    name: ClassVar[str]
    Config: ClassVar[type] = NoConfig
    inputs: ClassVar[dict[str, Any]] = {}
    optional_inputs: ClassVar[frozenset[str]] = frozenset()  # inputs a graph may leave unwired: run() gets None
    outputs: ClassVar[dict[str, Any]] = {}
    version: ClassVar[str] = "1"  # raise it when the outputs change: cached outputs and maps built before are rebuilt
    needs: ClassVar[tuple[str, ...]] = ()  # map artifacts (reloc.io.map_folder) a localization stage reads
    cacheable: ClassVar[bool] = True

    def __init__(self, config: Any):
        self.config = config

    def run(self, **inputs: Any) -> dict[str, Any]:
        raise NotImplementedError(f"stage {self.name} does not implement run()")


def register_stage(cls: type[Stage]) -> type[Stage]:
    """Class decorator adding a stage to the registry under ``cls.name``."""
    if not dataclasses.is_dataclass(cls.Config):
        raise TypeError(f"stage {cls.__name__}: Config must be a dataclass")
    if cls.name in _STAGES and _STAGES[cls.name] is not cls:
        raise ValueError(f"stage name {cls.name!r} is registered twice ({_STAGES[cls.name].__name__}, {cls.__name__})")
    _STAGES[cls.name] = cls
    return cls


def unregister_stage(name: str) -> None:
    _STAGES.pop(name, None)


def _import_families() -> None:
    for module in STAGE_MODULES:
        importlib.import_module(module)


def registered_stages() -> dict[str, type[Stage]]:
    _import_families()
    return dict(sorted(_STAGES.items()))


def imported_stage(reference: str, where: str) -> type[Stage]:
    """The :class:`Stage` subclass ``package.module:Class``; ``where`` prefixes the error."""
    module_name, _, class_name = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise PipelineError(f"{where}: stage '{reference}': cannot import module '{module_name}' ({error})") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Stage)):
        raise PipelineError(
            f"{where}: stage '{reference}': module '{module_name}' has no Stage subclass '{class_name}'"
        )
    if not dataclasses.is_dataclass(cls.Config):
        raise PipelineError(f"{where}: stage '{reference}': its Config must be a dataclass")
    return cls


def stage_class(name: str, where: str) -> type[Stage]:
    """The class registered as ``name``, or imported when ``name`` is ``package.module:Class``;
    ``where`` prefixes the error (file and node)."""
    if ":" in name:
        return imported_stage(name, where)
    stages = registered_stages()
    if name in stages:
        return stages[name]
    if name in PLANNED_STAGES:
        raise PipelineError(f"{where}: stage '{name}' is not implemented yet (planned in {PLANNED_STAGES[name]})")
    known = ", ".join(stages) or "none registered"
    raise PipelineError(f"{where}: unknown stage '{name}' (known stages: {known})")


def type_name(port_type: Any) -> str:
    """Readable name of a port type: ``list[Frame]``, ``Path``, ``Any``."""
    if port_type is Any:
        return "Any"
    if isinstance(port_type, type) and not getattr(port_type, "__args__", None):
        return port_type.__name__
    text = repr(port_type)
    for prefix in ("reloc.types.", "pathlib.", "typing."):
        text = text.replace(prefix, "")
    return text


def port_accepts(expected: Any, provided: Any) -> bool:
    return expected is Any or provided is Any or expected == provided
