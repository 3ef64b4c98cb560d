"""Each camera's field of view (its sector, ``core.camera.coverage``) for a street, a community or a grid.

Sectors are drawn only for those views: the city's ten thousand sectors would be a figure of many megabytes
and unreadable at city zoom (the coverage share per unit says it better there).  Arcs are simplified in
PostGIS to a tolerance that fits the view (a 16-segment arc keeps its shape with a handful of vertices) and cached by data
version.  Offline cameras are drawn in grey, online ones in blue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Engine, text

from geodata.codes import CAMERA_TYPES, prefix_params
from layers.base import Layer, MapView, register
from layers.blind_spots import DETAIL_LEVELS, MERGE_ABOVE, merged
from layers.i18n import t, vocabulary_name
from layers.version_cache import cached

#: Simplification (degrees) by the level in view: a street may hold thousands of cameras (闻韶街道: 3,600),
#: so its arcs keep a few vertices (about 8 m), a community's about 3 m; coordinates to 1e-5 (about 1 m).
TOLERANCE: Final = {"street": 0.00008, "community": 0.00003, "grid": 0.00003}
SECTOR_RGB: Final = (33, 113, 181)
OFFLINE_RGB: Final = (150, 150, 150)

_SQL = text("""
    SELECT camera_id, coalesce(name, camera_id) AS name, camera_type, online, range_m, fov_deg,
           ST_AsGeoJSON(ST_SimplifyPreserveTopology(coverage, :tolerance), 5) AS geometry,
           ST_X(geom) AS lon, ST_Y(geom) AS lat
      FROM core.camera
     WHERE coverage IS NOT NULL AND grid_code LIKE :prefix AND grid_code >= :low AND grid_code < :high
     ORDER BY camera_id""")



def feature_id(camera_id: str) -> str:
    """A camera's feature id on the map: prefixed, because MapLibre reads an all-digit id as a number and a
    20-digit camera id (GB/T 28181 style) does not fit one ("Map error.")."""
    return f"cam-{camera_id}"

@dataclass(frozen=True)
class Sectors:
    """The sectors in view: GeoJSON keyed by camera id, and each camera's attributes."""

    geojson: dict[str, Any]
    rows: list[dict[str, Any]]


@register
class CameraSectors(Layer[Sectors]):
    """Camera sectors, translucent blue (grey when the camera is offline)."""

    name = "camera_sectors"

    def query(self, engine: Engine, view: MapView) -> Sectors:
        if view.level not in DETAIL_LEVELS:
            return Sectors({"type": "FeatureCollection", "features": []}, [])

        def compute() -> Sectors:
            with engine.connect() as conn:
                found = conn.execute(_SQL, {**prefix_params(view.area_code),
                                           "tolerance": TOLERANCE[view.level]}).mappings().all()
            features = [{"type": "Feature", "id": feature_id(r["camera_id"]), "geometry": json.loads(r["geometry"])}
                        for r in found]
            rows = [{"camera_id": r["camera_id"], "name": r["name"], "camera_type": r["camera_type"],
                     "online": bool(r["online"]), "range_m": float(r["range_m"]), "fov_deg": float(r["fov_deg"]),
                     "lon": float(r["lon"]), "lat": float(r["lat"])} for r in found]
            return Sectors({"type": "FeatureCollection", "features": features}, rows)

        return cached(engine, "camera_sectors", (view.area_code,), compute)

    def draw(self, data: Sectors, lang: str) -> list[dict[str, Any]]:
        if not data.rows:
            return []
        on, off = "rgba({},{},{},0.45)".format(*SECTOR_RGB), "rgba({},{},{},0.45)".format(*OFFLINE_RGB)
        if len(data.rows) > MERGE_ABOVE:  # thousands of cameras: two multipolygons, online and offline
            features = {f["id"]: f for f in data.geojson["features"]}
            groups = {state: [features[feature_id(r["camera_id"])] for r in data.rows if r["online"] == state]
                      for state in (True, False)}
            kept = [(state, merged(found, f"sectors-{'on' if state else 'off'}")) for state, found in groups.items()
                    if found]
            return [{"type": "choroplethmap", "name": t("coverage.sectors", lang),
                     "geojson": {"type": "FeatureCollection", "features": [f for _, f in kept]},
                     "locations": [f["id"] for _, f in kept], "z": [1 if state else 0 for state, _ in kept],
                     "zmin": 0, "zmax": 1, "colorscale": [[0, off], [0.5, off], [0.5, on], [1, on]],
                     "showscale": False, "marker": {"line": {"width": 0.5, "color": "rgba(8,48,107,0.7)"}},
                     "hoverinfo": "skip"}]
        return [{
            "type": "choroplethmap",
            "geojson": data.geojson,
            "locations": [feature_id(r["camera_id"]) for r in data.rows],
            "z": [1 if r["online"] else 0 for r in data.rows],
            "zmin": 0,
            "zmax": 1,
            "colorscale": [[0, off], [0.5, off], [0.5, on], [1, on]],
            "showscale": False,
            "marker": {"line": {"width": 0.5, "color": "rgba(8,48,107,0.7)"}},
            "customdata": [[r["name"], vocabulary_name(CAMERA_TYPES, r['camera_type'], lang), r["range_m"],
                            r["camera_id"]]
                           for r in data.rows],
            "hovertemplate": (f"{t('coverage.camera', lang)} %{{customdata[3]}}<br>%{{customdata[0]}} · "
                              "%{customdata[1]}<br>%{customdata[2]:.0f} m<extra></extra>"),
            "name": t("coverage.sectors", lang),
        }]
