"""Roads coloured by the day's swept share: swept (>= 80 %, green), partly (orange), not swept (red).

One line trace per class (a trace has one colour), each road's parts separated by gaps, so thousands of
roads draw as three WebGL traces.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Any, Final

import pandas as pd
from sqlalchemy import Engine

from geodata.patrol import road_sweep
from layers.base import Layer, LayerError, MapView, register
from layers.i18n import t

#: Class -> (lowest share, colour), best first.
CLASSES: Final[dict[str, tuple[float, str]]] = {"swept": (0.8, "#2f9e44"), "partly": (0.2, "#f59f00"),
                                                "unswept": (0.0, "#e5484d")}
SWEPT_RGB: Final = (47, 158, 68)


@dataclass(frozen=True)
class SweptRoads:
    """The area's roads with the day's swept share and their GeoJSON geometry."""

    roads: pd.DataFrame


def sweep_class(share: float) -> str:
    """swept / partly / unswept for a share."""
    for name, (lowest, _) in CLASSES.items():
        if share >= lowest:
            return name
    return "unswept"


@register
class RoadSweepLayer(Layer[SweptRoads]):
    """Road segments of an area coloured by the share swept on a day."""

    name = "road_sweep"

    def query(self, engine: Engine, view: MapView, day: date | None = None) -> SweptRoads:
        if day is None:
            raise LayerError("road sweeping needs a day")
        return SweptRoads(road_sweep(engine, day, view.area_code))

    def draw(self, data: SweptRoads, lang: str) -> list[dict[str, Any]]:
        traces = []
        classes = [sweep_class(s) for s in data.roads["swept_share"]]
        for name, (_, colour) in CLASSES.items():
            lon: list[float | None] = []
            lat: list[float | None] = []
            text: list[str | None] = []
            for row, cls in zip(data.roads.itertuples(), classes, strict=True):
                if cls != name:
                    continue
                geometry = json.loads(row.geometry)
                label = f"{row.name or row.road_id}: {row.swept_share:.0%}"
                for line in geometry["coordinates"]:
                    for x, y in line:
                        lon.append(x)
                        lat.append(y)
                        text.append(label)
                    lon.append(None)
                    lat.append(None)
                    text.append(None)
            if lon:
                traces.append({"type": "scattermap", "mode": "lines", "lon": lon, "lat": lat, "text": text,
                               "line": {"color": colour, "width": 3}, "hoverinfo": "text",
                               "name": t(f"sweep.class.{name}", lang)})
        return traces
