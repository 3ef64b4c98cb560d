"""The admin units inside the unit in view, outlined and lightly filled: the offline basemap's ground.

Geometry is simplified in PostGIS to a tolerance that fits the level (a district's streets need far fewer
vertices than a community's grids) and sent as one GeoJSON FeatureCollection keyed by code, so a click on a
unit names the code to drill into.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text

from layers.base import Layer, MapView, register
from layers.i18n import t

#: Simplification tolerance in degrees by the level drawn (about 30 m, 10 m, 3 m, 1 m).
TOLERANCE_BY_LEVEL = {"district": 0.0003, "street": 0.0001, "community": 0.00003, "grid": 0.00001}

_CHILDREN_SQL = text(
    "SELECT code, name, level, ST_AsGeoJSON(ST_SimplifyPreserveTopology(geom, :tolerance), 6) AS geometry,"
    " ST_X(label_point) AS lon, ST_Y(label_point) AS lat"
    " FROM core.admin_unit WHERE level = :level"
    " AND (CAST(:parent AS text) IS NULL OR parent_code = :parent) ORDER BY code"
)


@dataclass(frozen=True)
class AdminUnits:
    """The units drawn: a GeoJSON FeatureCollection and their codes, names and label points."""

    level: str
    geojson: dict[str, Any]
    codes: list[str]
    names: list[str]


@register
class AdminBoundaries(Layer[AdminUnits]):
    """Outlines of the children of the unit in view (the districts for the whole city)."""

    name = "admin_boundaries"

    def query(self, engine: Engine, view: MapView) -> AdminUnits:
        level = view.child_level or "grid"
        parent = view.area_code if view.child_level else None
        params = {"tolerance": TOLERANCE_BY_LEVEL[level], "level": level, "parent": parent}
        if view.child_level is None:  # a grid in view: draw the grid itself
            params["level"], params["parent"] = "grid", view.area_code[:12] if view.area_code else None
        with engine.connect() as conn:
            rows = conn.execute(_CHILDREN_SQL, params).mappings().all()
        if view.child_level is None:
            rows = [r for r in rows if r["code"] == view.area_code]
        features = [{"type": "Feature", "id": r["code"], "properties": {"name": r["name"]},
                     "geometry": json.loads(r["geometry"])} for r in rows]
        return AdminUnits(level=params["level"], geojson={"type": "FeatureCollection", "features": features},
                          codes=[r["code"] for r in rows], names=[r["name"] for r in rows])

    def draw(self, data: AdminUnits, lang: str) -> list[dict[str, Any]]:
        level_name = t(f"level.{data.level}", lang)
        return [{
            "type": "choroplethmap",
            "geojson": data.geojson,
            "locations": data.codes,
            "z": [1] * len(data.codes),
            "customdata": [[code, name] for code, name in zip(data.codes, data.names, strict=True)],
            "colorscale": [[0, "rgba(31,111,235,0.10)"], [1, "rgba(31,111,235,0.10)"]],
            "showscale": False,
            "marker": {"line": {"color": "#1f6feb", "width": 1.5}},
            "hovertemplate": f"%{{customdata[1]}}<br>{level_name} %{{customdata[0]}}<extra></extra>",
            "name": level_name,
        }]
