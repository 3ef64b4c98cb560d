"""Individual cases as points (street level and closer), clustered where dense, with a popup per case.

Points come from the facts engine's columns (geodata/facts.py): the filtered cohort, narrowed to the map's
bounds, newest first, at most :data:`MAX_POINTS` (a figure stays far under 2 MB and MapLibre clusters them
in the browser with the scattermap ``cluster`` attribute).  Each point carries its case number, so a click
opens the case's detail (:func:`case_detail`), read from ``core.case_record`` — never from ``private``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd
from sqlalchemy import Engine, text

from geodata.codes import CASE_STATUSES
from geodata.facts import FactQuery, facts_for
from layers.base import Layer, LayerError, MapView, register
from layers.i18n import t, vocabulary_name

MAX_POINTS: Final = 5000
#: Zoom from which clusters break up into single cases.
CLUSTER_MAX_ZOOM: Final = 17
POINT_RGB: Final = (31, 111, 235)
POINT_COLUMNS: Final = ("case_number", "lon", "lat", "category", "status", "day", "channel", "grid")

_CASE_SQL = text("""
    SELECT c.case_number, c.reported_at, c.kind, c.category_code, cat.name_zh, cat.name_en, c.source_channel,
           c.status, c.urgency, c.district_code, c.street_code, c.community_code, c.grid_code,
           c.registered_at, c.dispatched_at, c.handled_at, c.closed_at, c.voided_at, c.handle_deadline,
           c.close_deadline, c.extended, c.rework_count, c.self_handled, c.resolution_level,
           ST_X(c.geom) AS lon, ST_Y(c.geom) AS lat
      FROM core.case_record c
      LEFT JOIN core.category cat ON cat.kind = c.kind AND cat.code = c.category_code
     WHERE c.case_number = :case_number
     ORDER BY c.reported_at DESC LIMIT 1""")


@dataclass(frozen=True)
class CasePoints:
    """The cases drawn (newest first) and how many matched in the bounds in all."""

    frame: pd.DataFrame
    matched: int


def points_in_bounds(engine: Engine, query: FactQuery, bounds: tuple[float, float, float, float] | None,
                     limit: int = MAX_POINTS) -> CasePoints:
    """The query's cases inside ``bounds`` (west, south, east, north; None: anywhere), newest first."""
    facts = facts_for(engine)
    parts: list[pd.DataFrame] = []
    matched = 0
    remaining = limit
    from geodata import facts as facts_module

    for month in reversed(facts.months(query.date_from, query.date_to)):
        keep = facts.mask(month, query)
        if keep is None:
            continue
        if bounds is not None:
            west, south, east, north = bounds
            lon, lat = month.columns["lon"], month.columns["lat"]
            keep = keep & (lon >= west) & (lon <= east) & (lat >= south) & (lat <= north)
        rows = np.flatnonzero(keep)
        matched += len(rows)
        if remaining <= 0:
            continue
        # Newest first: by day, then by position (the facts keep a month's rows in load order).
        rows = rows[np.argsort(-month.columns["day"][rows], kind="stable")][:remaining]
        parts.append(pd.DataFrame({name: facts_module._decoded(month, name, rows) for name in POINT_COLUMNS}))
        remaining -= len(rows)
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(POINT_COLUMNS))
    return CasePoints(frame, matched)


def case_detail(engine: Engine, case_number: str) -> dict[str, Any] | None:
    """One case's codes, place and stage times (no personal data: ``private.*`` is never read)."""
    with engine.connect() as conn:
        row = conn.execute(_CASE_SQL, {"case_number": case_number}).mappings().first()
    return dict(row) if row else None


@register
class CasePointsLayer(Layer[CasePoints]):
    """Single cases in the map's bounds, clustered by MapLibre where dense."""

    name = "case_points"

    def query(self, engine: Engine, view: MapView, facts_query: FactQuery | None = None,
              bounds: tuple[float, float, float, float] | None = None) -> CasePoints:
        if facts_query is None:
            raise LayerError("the case points need a FactQuery (period and filters)")
        return points_in_bounds(engine, facts_query, bounds)

    def draw(self, data: CasePoints, lang: str, category_names: dict[str, str] | None = None
             ) -> list[dict[str, Any]]:
        frame = data.frame
        if frame.empty:
            return []
        names = category_names or {}
        statuses = [vocabulary_name(CASE_STATUSES, s, lang) for s in frame["status"]]
        categories = [names.get(c, c) for c in frame["category"]]
        days = [d.isoformat() for d in frame["day"]]
        return [{
            "type": "scattermap",
            "mode": "markers",
            "lon": [round(float(x), 6) for x in frame["lon"]],
            "lat": [round(float(y), 6) for y in frame["lat"]],
            "customdata": [[n, c, s, d] for n, c, s, d in zip(frame["case_number"], categories, statuses, days,
                                                            strict=True)],
            "marker": {"size": 9, "color": "rgb({},{},{})".format(*POINT_RGB), "opacity": 0.9},
            "cluster": {"enabled": True, "maxzoom": CLUSTER_MAX_ZOOM, "step": [1, 20, 100],
                        "size": [14, 20, 28], "color": ["#6baed6", "#3182bd", "#08519c"], "opacity": 0.85},
            "hovertemplate": (f"{t('heatmap.case', lang)} %{{customdata[0]}}<br>%{{customdata[1]}}<br>"
                              "%{customdata[2]} · %{customdata[3]}<extra></extra>"),
            "name": t("heatmap.points", lang),
        }]
