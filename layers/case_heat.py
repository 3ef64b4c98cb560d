"""Case heat: cases reported in the view's period per H3 resolution-8 cell (about 0.7 km²), as hexagons.

Reads ``rollup.case_day_h3`` (one row per district, day and cell), never raw cases, so the big screen's map
costs the same at ten million cases as at ten thousand.  Hexagons come from ``h3.cell_to_boundary`` and go to
the map as one GeoJSON FeatureCollection keyed by the cell's id.  Colour: the cell's cases on a dark-to-amber
scale whose top is the 98th percentile, so one hot spot does not wash out the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any, Final

import h3
import numpy as np
from sqlalchemy import Engine, text

from layers.base import Layer, LayerError, MapView, register
from layers.i18n import t

#: Cold (few cases, almost the ground) → amber → bright yellow (most cases).
COLOURSCALE: Final = [[0.0, "rgba(255,176,32,0.08)"], [0.25, "rgba(255,140,26,0.45)"],
                      [0.6, "rgba(255,110,20,0.75)"], [1.0, "rgba(255,236,61,0.95)"]]
#: The amber a test looks for in the map's pixels.
HEAT_RGB: Final = (255, 140, 26)

# The districts are named even for the whole city: the rollup's key starts with the district, so the days of
# each district are one index range (a tenth of the time of scanning every day at city scale).
_SQL = text(
    "SELECT h3_r8, sum(reported)::int AS cases FROM rollup.case_day_h3"
    " WHERE district_code = ANY(ARRAY(SELECT code FROM core.admin_unit WHERE level = 'district'"
    "                                   AND (CAST(:district AS text) IS NULL OR code = :district)))"
    " AND day BETWEEN :first_day AND :last_day"
    " GROUP BY h3_r8"
)


@dataclass(frozen=True)
class CellCounts:
    """Cells (H3 r8 ids as hex strings) and the cases reported in each over the period."""

    date_from: date
    date_to: date
    cells: list[str]
    cases: list[int]


@lru_cache(maxsize=50_000)
def _hexagon(cell: str) -> dict[str, Any]:
    """The cell's hexagon; coordinates as one numpy array, which plotly's JSON encoder passes to orjson whole
    instead of walking a thousand nested lists per refresh (a city's heat is ~1,500 cells).  Cells do not
    move, so each is computed once per process (a few MB for a province); callers must not change it."""
    boundary = np.asarray(h3.cell_to_boundary(cell), dtype=np.float64)[:, ::-1]  # (lat, lng) -> (lng, lat)
    ring = np.vstack([boundary, boundary[:1]])
    return {"type": "Polygon", "coordinates": ring[np.newaxis]}


@register
class CaseHeat(Layer[CellCounts]):
    """Cases per H3 r8 cell in the view's period, in a district or the whole city."""

    name = "case_heat"

    def query(self, engine: Engine, view: MapView) -> CellCounts:
        if view.date_from is None or view.date_to is None:
            raise LayerError("the case heat needs a period (MapView.date_from and date_to)")
        if view.level not in ("city", "district"):
            raise LayerError("the case heat is drawn for the city or one district")
        with engine.connect() as conn:
            rows = conn.execute(_SQL, {"first_day": view.date_from, "last_day": view.date_to,
                                       "district": view.area_code}).all()
        rows = sorted(rows)
        return CellCounts(view.date_from, view.date_to, [h3.int_to_str(r[0]) for r in rows],
                          [int(r[1]) for r in rows])

    def draw(self, data: CellCounts, lang: str) -> list[dict[str, Any]]:
        if not data.cells:
            return []
        ordered = sorted(data.cases)
        top = max(1, ordered[min(len(ordered) - 1, int(len(ordered) * 0.98))])
        features = [{"type": "Feature", "id": cell, "geometry": _hexagon(cell)} for cell in data.cells]
        return [{
            "type": "choroplethmap",
            "geojson": {"type": "FeatureCollection", "features": features},
            "locations": data.cells,
            "z": np.asarray(data.cases, dtype=np.int64),
            "zmin": 0,
            "zmax": top,
            "colorscale": COLOURSCALE,
            "showscale": False,
            "marker": {"line": {"width": 0}},
            "hovertemplate": f"{t('heat.cases', lang)} %{{z:,}}<extra></extra>",
            "name": t("heat.name", lang),
        }]
