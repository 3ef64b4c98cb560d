"""Blind spots (监控盲区): the part of each unit grid that no camera sees, for a street or closer.

``core.grid_coverage.blind_geom`` is each grid minus the union of the camera sectors (etl/coverage.py,
recomputed after every camera or grid load).  Drawn only when the view is a street, a community or a grid —
city-wide it would be tens of thousands of shapes — simplified (about 5 m for a street, 1 m closer) and cached by data version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Engine, text

from geodata.codes import prefix_params
from layers.base import Layer, MapView, register
from layers.i18n import t
from layers.version_cache import cached

#: The levels in view for which blind spots (and sectors) are drawn.
DETAIL_LEVELS: Final = ("street", "community", "grid")
#: Simplification (degrees) by the level in view: about 5 m for a street's thousands of grids, 1 m closer.
TOLERANCE: Final = {"street": 0.00005, "community": 0.00001, "grid": 0.00001}
BLIND_RGB: Final = (64, 64, 64)
#: Above this many shapes, blind spots go to the map as one multipolygon (no per-feature overhead or hover):
#: a street of 2,000 grids stays well inside the 2 MB a figure may weigh.
MERGE_ABOVE: Final = 600


def merged(features: list[dict[str, Any]], feature_id: str) -> dict[str, Any]:
    """One MultiPolygon feature holding every polygon of ``features`` (for drawing many shapes cheaply)."""
    parts: list[Any] = []
    for feature in features:
        geometry = feature["geometry"]
        if geometry["type"] == "Polygon":
            parts.append(geometry["coordinates"])
        elif geometry["type"] == "MultiPolygon":
            parts.extend(geometry["coordinates"])
    return {"type": "Feature", "id": feature_id, "geometry": {"type": "MultiPolygon", "coordinates": parts}}

_SQL = text("""
    SELECT v.grid_code AS code,
           ST_AsGeoJSON(ST_SimplifyPreserveTopology(v.blind_geom, :tolerance), 5) AS geometry,
           v.area_m2 - v.covered_m2 AS blind_m2
      FROM core.grid_coverage v
     WHERE v.grid_code LIKE :prefix AND v.grid_code >= :low AND v.grid_code < :high AND v.blind_geom IS NOT NULL
     ORDER BY v.grid_code""")


@dataclass(frozen=True)
class BlindSpots:
    """The blind parts of the grids in view (GeoJSON keyed by grid code) and their areas."""

    geojson: dict[str, Any]
    codes: list[str]
    blind_m2: list[float]


@register
class BlindSpotsLayer(Layer[BlindSpots]):
    """Dark hatch-like fill over the parts of the grids no camera sees."""

    name = "blind_spots"

    def query(self, engine: Engine, view: MapView) -> BlindSpots:
        if view.level not in DETAIL_LEVELS:
            return BlindSpots({"type": "FeatureCollection", "features": []}, [], [])

        def compute() -> BlindSpots:
            with engine.connect() as conn:
                rows = conn.execute(_SQL, {**prefix_params(view.area_code),
                                          "tolerance": TOLERANCE[view.level]}).mappings().all()
            features = [{"type": "Feature", "id": r["code"], "geometry": json.loads(r["geometry"])} for r in rows
                        if r["geometry"]]
            return BlindSpots({"type": "FeatureCollection", "features": features}, [f["id"] for f in features],
                              [round(float(r["blind_m2"]), 1) for r in rows if r["geometry"]])

        return cached(engine, "blind_spots", (view.area_code,), compute)

    def draw(self, data: BlindSpots, lang: str) -> list[dict[str, Any]]:
        if not data.codes:
            return []
        colour = "rgba({},{},{},0.55)".format(*BLIND_RGB)
        if len(data.codes) > MERGE_ABOVE:
            return [{"type": "choroplethmap", "name": t("coverage.blind", lang), "locations": ["blind"], "z": [1],
                     "geojson": {"type": "FeatureCollection", "features": [merged(data.geojson["features"], "blind")]},
                     "colorscale": [[0, colour], [1, colour]], "showscale": False, "marker": {"line": {"width": 0}},
                     "hoverinfo": "skip"}]
        return [{
            "type": "choroplethmap",
            "geojson": data.geojson,
            "locations": data.codes,
            "z": [1] * len(data.codes),
            "colorscale": [[0, colour], [1, colour]],
            "showscale": False,
            "marker": {"line": {"width": 0}},
            "customdata": data.blind_m2,
            "hovertemplate": f"{t('coverage.blind', lang)} %{{location}}<br>%{{customdata:,.0f}} m²<extra></extra>",
            "name": t("coverage.blind", lang),
        }]
