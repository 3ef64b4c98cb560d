"""Unit grids coloured by the day's patrol: patrolled (green), not today (grey), unpatrolled for N days (red).

The grids' outlines change only with a load, so they are read once per (area, data version) and kept; a day
on the slider then costs one query on ``core.grid_patrol_day`` (its primary key) for the area's grids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any, Final

import numpy as np
import pandas as pd
from sqlalchemy import Engine, text

from geodata.patrol import grid_patrol_status
from layers.base import Layer, LayerError, MapView, register
from layers.i18n import t

#: Status -> (z value, colour).  The colours a browser test looks for in the map's pixels.
STATUS: Final[dict[str, tuple[int, str]]] = {"flagged": (0, "#e5484d"), "idle": (1, "#b8c0cc"),
                                             "patrolled": (2, "#2f9e44")}
PATROLLED_RGB: Final = (47, 158, 68)
FLAGGED_RGB: Final = (229, 72, 77)

_OUTLINES_SQL = text(
    "SELECT code, ST_AsGeoJSON(ST_SimplifyPreserveTopology(geom, 0.00001), 6) FROM core.admin_unit"
    " WHERE level = 'grid' AND code LIKE :prefix ORDER BY code")

_EXTENT_SQL = text(
    "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT ST_Extent(geom)::geometry AS e"
    " FROM core.admin_unit WHERE level = 'grid' AND code LIKE :prefix) s")


@lru_cache(maxsize=64)
def _outlines(engine: Engine, area_code: str, version: int) -> tuple[dict[str, Any], Any]:
    """The area's grids as a FeatureCollection keyed by code, and its bounds (cached per data version)."""
    del version  # part of the cache key only
    with engine.connect() as conn:
        rows = conn.execute(_OUTLINES_SQL, {"prefix": area_code + "%"}).all()
        extent = conn.execute(_EXTENT_SQL, {"prefix": area_code + "%"}).one()
    geojson = {"type": "FeatureCollection",
               "features": [{"type": "Feature", "id": code, "geometry": json.loads(geometry)} for code, geometry in rows]}
    return geojson, None if extent[0] is None else tuple(float(v) for v in extent)


def data_version(engine: Engine) -> int:
    """The store's data version, the key of the cached outlines."""
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT version FROM core.data_version")).scalar_one())


@dataclass(frozen=True)
class PatrolGrids:
    """The area's grids, their outlines and the day's patrol status (a frame of geodata.patrol)."""

    geojson: dict[str, Any]
    status: pd.DataFrame
    bounds: tuple[float, float, float, float] | None = None


def status_of(frame: pd.DataFrame) -> list[str]:
    """patrolled / idle / flagged per grid row."""
    return ["patrolled" if p else ("flagged" if f else "idle")
            for p, f in zip(frame["patrolled"].tolist(), frame["flagged"].tolist(), strict=True)]


@register
class PatrolGridLayer(Layer[PatrolGrids]):
    """The unit grids of a street or community coloured by the day's patrol."""

    name = "patrol_grids"

    def query(self, engine: Engine, view: MapView, day: date | None = None, idle_days: int = 3) -> PatrolGrids:
        if view.area_code is None or view.level not in ("street", "community"):
            raise LayerError("patrol coverage is drawn for one street or community")
        if day is None:
            raise LayerError("patrol coverage needs a day")
        outlines, bounds = _outlines(engine, view.area_code, data_version(engine))
        return PatrolGrids(outlines, grid_patrol_status(engine, day, view.area_code, idle_days), bounds)

    def draw(self, data: PatrolGrids, lang: str) -> list[dict[str, Any]]:
        frame = data.status
        statuses = status_of(frame)
        words = {s: t(f"patrol.status.{s}", lang) for s in STATUS}
        return [{
            "type": "choroplethmap",
            "geojson": data.geojson,
            "featureidkey": "id",
            "locations": frame["grid_code"].tolist(),
            "z": [STATUS[s][0] for s in statuses],
            "zmin": 0, "zmax": 2,
            "colorscale": [[0, STATUS["flagged"][1]], [0.33, STATUS["flagged"][1]], [0.34, STATUS["idle"][1]],
                           [0.66, STATUS["idle"][1]], [0.67, STATUS["patrolled"][1]], [1, STATUS["patrolled"][1]]],
            "showscale": False,
            "marker": {"line": {"color": "#ffffff", "width": 0.5}, "opacity": 0.85},
            "customdata": [[c, n, words[s], m, v, "" if i != i else int(i)]
                           for c, n, s, m, v, i in zip(
                               frame["grid_code"].tolist(), frame["name"].tolist(), statuses,
                               frame["minutes"].to_numpy(dtype=float).tolist(),
                               frame["visits"].to_numpy(dtype=int).tolist(),
                               frame["idle_days"].to_numpy(dtype=float, na_value=np.nan).tolist(), strict=True)],
            "hovertemplate": (f"%{{customdata[1]}} %{{customdata[0]}}<br>%{{customdata[2]}}<br>"
                              f"{t('patrol.minutes', lang)} %{{customdata[3]}}, {t('patrol.visits', lang)}"
                              f" %{{customdata[4]}}<br>{t('patrol.idle_days', lang)} %{{customdata[5]}}<extra></extra>"),
            "name": t("patrol.layer", lang),
        }]
