"""Each unit coloured by the share of its area that cameras see (监控覆盖率), at a level that fits the view.

The city shows its streets and a district its communities (from ``rollup.unit_asset``: covered and total
area per unit), a street or a community its unit grids (``core.grid_coverage.covered_share``; a grid no
camera reaches is 0).  Outlines are simplified in PostGIS to the level's tolerance and cached by data
version (layers/version_cache.py), so a filter change never re-reads geometry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Engine, text

from geodata.codes import prefix_params
from layers.admin_boundaries import TOLERANCE_BY_LEVEL
from layers.base import Layer, MapView, register
from layers.i18n import t
from layers.version_cache import cached

#: The level drawn for each level in view: two levels down for the city and a district (their children
#: would be two or twenty shapes), the unit grids for a street, a community and a grid.
DRAWN_LEVEL: Final = {"city": "street", "district": "community", "street": "grid", "community": "grid",
                      "grid": "grid"}
#: Red (blind) to green (fully seen); the test finds the low end in the map's pixels.
COLOURSCALE: Final = [[0.0, "rgb(215,48,39)"], [0.5, "rgb(254,224,139)"], [1.0, "rgb(26,152,80)"]]
LOW_RGB: Final = (215, 48, 39)

_UNITS_SQL = text("""
    SELECT u.code, u.name, ST_AsGeoJSON(ST_SimplifyPreserveTopology(u.geom, :tolerance), 6) AS geometry,
           coalesce(a.area_m2, u.area_m2) AS area_m2, coalesce(a.covered_m2, 0) AS covered_m2,
           coalesce(a.cameras, 0) AS cameras, coalesce(a.grids, 0) AS grids
      FROM core.admin_unit u
      LEFT JOIN rollup.unit_asset a ON a.level = u.level AND a.unit_code = u.code
     WHERE u.level = :level AND u.code LIKE :prefix AND u.code >= :low AND u.code < :high
     ORDER BY u.code""")

_GRIDS_SQL = text("""
    SELECT g.code, g.name, ST_AsGeoJSON(ST_SimplifyPreserveTopology(g.geom, :tolerance), 5) AS geometry,
           g.area_m2, coalesce(v.covered_m2, 0) AS covered_m2, coalesce(v.camera_count, 0) AS cameras,
           1 AS grids
      FROM core.admin_unit g
      LEFT JOIN core.grid_coverage v ON v.grid_code = g.code
     WHERE g.level = 'grid' AND g.code LIKE :prefix AND g.code >= :low AND g.code < :high
     ORDER BY g.code""")

_EXTENT_SQL = text("""
    SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e)
      FROM (SELECT ST_Extent(geom) AS e FROM core.admin_unit WHERE level = :level AND code LIKE :prefix AND code >= :low AND code < :high) x""")


@dataclass(frozen=True)
class UnitCoverage:
    """The units drawn, their outlines (GeoJSON) and the share of each one's area the cameras see."""

    level: str
    geojson: dict[str, Any]
    rows: list[dict[str, Any]]  # code, name, area_m2, covered_m2, covered_share, cameras, grids
    bounds: tuple[float, float, float, float] | None = None  # west, south, east, north of the units drawn


def unit_coverage(engine: Engine, view: MapView) -> UnitCoverage:
    """The coverage of the units drawn for ``view`` (cached by data version)."""
    level = DRAWN_LEVEL[view.level]

    def compute() -> UnitCoverage:
        params = {"tolerance": TOLERANCE_BY_LEVEL[level], "level": level,
                  **prefix_params(view.area_code)}
        with engine.connect() as conn:
            found = conn.execute(_GRIDS_SQL if level == "grid" else _UNITS_SQL, params).mappings().all()
        features, rows = [], []
        for r in found:
            share = min(1.0, float(r["covered_m2"]) / float(r["area_m2"])) if r["area_m2"] else 0.0
            features.append({"type": "Feature", "id": r["code"], "geometry": json.loads(r["geometry"])})
            rows.append({"code": r["code"], "name": r["name"], "area_m2": round(float(r["area_m2"]), 1),
                         "covered_m2": round(float(r["covered_m2"]), 1), "covered_share": round(share, 4),
                         "cameras": int(r["cameras"]), "grids": int(r["grids"])})
        with engine.connect() as conn:
            box = conn.execute(_EXTENT_SQL, params).one()
        bounds = None if box[0] is None else (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
        return UnitCoverage(level, {"type": "FeatureCollection", "features": features}, rows, bounds)

    return cached(engine, "coverage_share", (view.area_code,), compute)


@register
class CoverageShare(Layer[UnitCoverage]):
    """Units coloured by covered share, red (blind) to green (fully seen)."""

    name = "coverage_share"

    def query(self, engine: Engine, view: MapView) -> UnitCoverage:
        return unit_coverage(engine, view)

    def draw(self, data: UnitCoverage, lang: str) -> list[dict[str, Any]]:
        if not data.rows:
            return []
        return [{
            "type": "choroplethmap",
            "geojson": data.geojson,
            "locations": [r["code"] for r in data.rows],
            "z": [r["covered_share"] for r in data.rows],
            "zmin": 0,
            "zmax": 1,
            "colorscale": COLOURSCALE,
            "marker": {"opacity": 0.55, "line": {"width": 0.6, "color": "rgba(60,60,60,0.6)"}},
            "colorbar": {"title": {"text": t("coverage.share", lang)}, "tickformat": ".0%", "thickness": 12,
                         "len": 0.6},
            "customdata": [[r["name"], r["cameras"]] for r in data.rows],
            "hovertemplate": (f"%{{customdata[0]}} (%{{location}})<br>{t('coverage.share', lang)} %{{z:.1%}}<br>"
                              f"{t('count.cameras', lang)} %{{customdata[1]}}<extra></extra>"),
            "name": t("coverage.share", lang),
        }]
