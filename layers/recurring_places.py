"""Recurring places: the same category at the same unit grid again and again ("problems that keep coming back").

Reads ``rollup.recurring_place`` (geodata/rollups.py: a minor category at one grid at least 3 times in the
last 90 days of data, refreshed in each load's transaction), narrowed to the unit in view and to the case
kinds and categories of the filters, and places each at its grid's label point.  The window is the rollup's
own (the last 90 days of data), not the page's period: the page says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import pandas as pd
from sqlalchemy import Engine, bindparam, text

from geodata.facts import FactQuery
from layers.base import Layer, MapView, register
from layers.i18n import t
from layers.version_cache import cached

MAX_PLACES: Final = 500
PLACE_RGB: Final = (128, 0, 160)
COLUMNS: Final = ("grid_code", "grid_name", "category", "category_name", "cases", "open_cases", "first_day",
                  "last_day", "lon", "lat")

_SQL = text("""
    SELECT r.grid_code, g.name AS grid_name, r.kind || '/' || r.category_code AS category,
           CASE WHEN :lang = 'en' THEN cat.name_en ELSE cat.name_zh END AS category_name,
           r.cases, r.open_cases, r.first_day, r.last_day,
           ST_X(g.label_point) AS lon, ST_Y(g.label_point) AS lat
      FROM rollup.recurring_place r
      JOIN core.admin_unit g ON g.code = r.grid_code
      LEFT JOIN core.category cat ON cat.kind = r.kind AND cat.code = r.category_code
     WHERE r.grid_code LIKE :prefix
       AND (:any_kind OR r.kind IN :kinds)
       AND (:any_category OR r.kind || '/' || r.category_code IN :categories
            OR r.kind || '/' || left(r.category_code, 2) IN :majors)
     ORDER BY r.cases DESC, r.open_cases DESC, r.grid_code, category
     LIMIT :limit""").bindparams(bindparam("kinds", expanding=True), bindparam("categories", expanding=True),
                                 bindparam("majors", expanding=True))


@dataclass(frozen=True)
class Places:
    """Recurring places, most cases first (columns: :data:`COLUMNS`)."""

    frame: pd.DataFrame


def recurring_places(engine: Engine, area_code: str | None, query: FactQuery | None, lang: str,
                     limit: int = MAX_PLACES) -> Places:
    """The recurring places inside ``area_code`` (None: the city) matching the query's kinds and categories
    (cached by data version: the rollup changes only with a load)."""
    kinds = list(query.kinds) if query else []
    categories = list(query.categories) if query else []
    majors = list(query.majors) if query else []
    params = {"prefix": f"{area_code or ''}%", "lang": lang, "limit": int(limit),
              "any_kind": not kinds, "kinds": kinds or [""],
              "any_category": not (categories or majors), "categories": categories or [""],
              "majors": majors or [""]}

    def compute() -> Places:
        with engine.connect() as conn:
            rows = conn.execute(_SQL, params).mappings().all()
        return Places(pd.DataFrame([dict(r) for r in rows], columns=list(COLUMNS)))

    return cached(engine, "recurring_places", (area_code, tuple(kinds), tuple(categories), tuple(majors), lang,
                                               int(limit)), compute)


@register
class RecurringPlaces(Layer[Places]):
    """Grids where one category keeps coming back, as purple rings sized by their cases."""

    name = "recurring_places"

    def query(self, engine: Engine, view: MapView, facts_query: FactQuery | None = None,
              lang: str = "zh-CN") -> Places:
        return recurring_places(engine, view.area_code, facts_query, lang)

    def draw(self, data: Places, lang: str) -> list[dict[str, Any]]:
        frame = data.frame
        if frame.empty:
            return []
        top = max(int(frame["cases"].max()), 1)
        return [{
            "type": "scattermap",
            "mode": "markers",
            "lon": [round(float(x), 6) for x in frame["lon"]],
            "lat": [round(float(y), 6) for y in frame["lat"]],
            "marker": {"size": [10 + 16 * int(c) / top for c in frame["cases"]],
                       "color": "rgb({},{},{})".format(*PLACE_RGB), "opacity": 0.75},
            "customdata": [[g, n or g, c, int(k), int(o)] for g, n, c, k, o in zip(
                frame["grid_code"], frame["grid_name"], frame["category_name"].fillna(frame["category"]),
                frame["cases"], frame["open_cases"], strict=True)],
            "hovertemplate": (f"{t('heatmap.recurring', lang)}<br>%{{customdata[1]}} (%{{customdata[0]}})<br>"
                              f"%{{customdata[2]}}: %{{customdata[3]}} {t('heatmap.cases_unit', lang)}, "
                              f"{t('heatmap.open', lang)} %{{customdata[4]}}<extra></extra>"),
            "name": t("heatmap.recurring", lang),
        }]
