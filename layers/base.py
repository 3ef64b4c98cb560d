"""What every map layer is: a name, what it reads for a view, and how it draws what it read.

A layer module defines one ``Layer`` subclass and registers it (``@register``); pages ask the registry by
name.  ``query`` runs against the read-only engine with bound parameters only; ``draw`` is pure (frames in,
plotly traces out), so it is tested on small frames without a database.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import date
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import Engine

from geodata.errors import CityGridError

#: Levels of the admin hierarchy, coarse to fine; a view's children are one level finer.
LEVELS: tuple[str, ...] = ("city", "district", "street", "community", "grid")
CODE_LENGTH_LEVEL = {6: "district", 9: "street", 12: "community"}


class LayerError(CityGridError):
    """A view or a layer name that cannot be drawn (named in the message)."""


@dataclass(frozen=True)
class MapView:
    """What the map shows: the admin unit in view (None: the whole city) and the level drawn inside it, and
    for layers of cases the report days they count (both inclusive; None: the layer's own default)."""

    area_code: str | None = None
    date_from: date | None = None
    date_to: date | None = None

    def __post_init__(self) -> None:
        if self.area_code is not None and (not self.area_code.isdigit() or not 6 <= len(self.area_code) <= 16):
            raise LayerError(f"area code must be 6-16 digits, not {self.area_code!r}")
        if (self.date_from is None) != (self.date_to is None):
            raise LayerError("a view's period needs both its first and its last day")
        if self.date_from is not None and self.date_to is not None and self.date_to < self.date_from:
            raise LayerError(f"the period ends ({self.date_to}) before it starts ({self.date_from})")

    @property
    def level(self) -> str:
        """The level of the unit in view."""
        if self.area_code is None:
            return "city"
        return CODE_LENGTH_LEVEL.get(len(self.area_code), "grid")

    @property
    def child_level(self) -> str | None:
        """The level drawn inside the unit in view (None for a grid: its cases are listed instead)."""
        index = LEVELS.index(self.level)
        return LEVELS[index + 1] if index + 1 < len(LEVELS) else None


Data = TypeVar("Data")


class Layer(ABC, Generic[Data]):
    """One map layer: ``query`` reads what the view needs; ``draw`` turns it into plotly traces."""

    name: ClassVar[str]

    @abstractmethod
    def query(self, engine: Engine, view: MapView) -> Data:
        """Read this layer's data for ``view`` with the read-only engine."""

    @abstractmethod
    def draw(self, data: Data, lang: str) -> list[dict[str, Any]]:
        """Plotly trace dicts for ``data`` (pure: no I/O)."""


_REGISTRY: dict[str, Layer[Any]] = {}

L = TypeVar("L", bound=type[Layer[Any]])


def register(cls: L) -> L:
    """Class decorator: make a layer available by its ``name``."""
    if cls.name in _REGISTRY:
        raise LayerError(f"layer {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


def get_layer(name: str) -> Layer[Any]:
    """The registered layer called ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise LayerError(f"no layer {name!r}; layers: {', '.join(sorted(_REGISTRY))}") from None


def layer_names() -> list[str]:
    """Every registered layer's name."""
    return sorted(_REGISTRY)
