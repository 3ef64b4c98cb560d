"""Recurring places: the same category at the same unit grid again and again ("problems that keep coming back").

Reads ``rollup.recurring_place`` (geodata/rollups.py: a minor category at one grid at least 3 times in the
last 90 days of data, refreshed in each load's transaction), narrowed to the unit in view and to the case
kinds and categories of the filters, and places each at its grid's label point.  The window is the rollup's
own (the last 90 days of data), not the page's period: the page says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd
from sqlalchemy import Engine, text

from geodata.facts import FactQuery
from layers.base import Layer, MapView, register
from layers.i18n import t
from layers.version_cache import cached

MAX_PLACES: Final = 500
PLACE_RGB: Final = (128, 0, 160)
COLUMNS: Final = ("grid_code", "grid_name", "category", "category_name", "cases", "open_cases", "first_day",
                  "last_day", "lon", "lat")

#: The whole rollup, and the names and places it is shown with: read once per data version (some 200,000
#: places at 10 million cases; joined and ranked in numpy, which is four times faster than in the query).
_PLACES_SQL = text("SELECT grid_code, kind, category_code, cases, open_cases, first_day, last_day"
                   " FROM rollup.recurring_place")
_GRIDS_SQL = text("SELECT code, name, ST_X(label_point), ST_Y(label_point) FROM core.admin_unit WHERE level = 'grid'")
_CATEGORIES_SQL = text("SELECT kind || '/' || code, name_zh, name_en FROM core.category")


@dataclass(frozen=True)
class Places:
    """Recurring places, most cases first (columns: :data:`COLUMNS`)."""

    frame: pd.DataFrame


@dataclass(frozen=True)
class _Ranked:
    """Every recurring place in rank order, with the arrays a view is narrowed by."""

    frame: pd.DataFrame
    grid: np.ndarray  # grid codes ('<U15'); a unit's places are those whose code starts with its code
    kind: np.ndarray
    category: np.ndarray  # 'kind/code'
    major: np.ndarray  # 'kind/2 digits'


def _ranked(engine: Engine) -> _Ranked:
    def read() -> _Ranked:
        with engine.connect() as conn:
            places = pd.DataFrame([tuple(row) for row in conn.execute(_PLACES_SQL)],
                                  columns=["grid_code", "kind", "category_code", "cases", "open_cases", "first_day",
                                           "last_day"])
            grids = pd.DataFrame([tuple(row) for row in conn.execute(_GRIDS_SQL)], columns=["grid_code", "grid_name", "lon", "lat"])
            names = pd.DataFrame([tuple(row) for row in conn.execute(_CATEGORIES_SQL)], columns=["category", "name_zh", "name_en"])
        category = (places["kind"] + "/" + places["category_code"]).to_numpy(dtype=object)
        grid_rank, grid_words = pd.factorize(places["grid_code"], sort=True)
        category_rank, _ = pd.factorize(category, sort=True)
        # The rank: most cases, then most still open, then by grid and category (a stable, total order).
        order = np.lexsort((category_rank, grid_rank, -places["open_cases"].to_numpy(),
                            -places["cases"].to_numpy()))
        at_grid = pd.Index(grids["grid_code"]).get_indexer(grid_words)[grid_rank[order]]
        at_name = pd.Index(names["category"]).get_indexer(category[order])
        located = at_grid >= 0
        order, at_grid, at_name = order[located], at_grid[located], at_name[located]

        def named(column: str) -> np.ndarray:
            values = names[column].to_numpy(dtype=object)
            return np.where(at_name >= 0, values[np.maximum(at_name, 0)], None)

        frame = pd.DataFrame({
            "grid_code": places["grid_code"].to_numpy(dtype=object)[order],
            "grid_name": grids["grid_name"].to_numpy(dtype=object)[at_grid],
            "category": category[order], "name_zh": named("name_zh"), "name_en": named("name_en"),
            **{c: places[c].to_numpy()[order] for c in ("cases", "open_cases", "first_day", "last_day")},
            "lon": grids["lon"].to_numpy(dtype=np.float64)[at_grid],
            "lat": grids["lat"].to_numpy(dtype=np.float64)[at_grid],
        })
        kind = places["kind"].to_numpy(dtype=str)[order]
        major = np.char.add(np.char.add(kind, "/"), places["category_code"].to_numpy(dtype=str)[order].astype("<U2"))
        return _Ranked(frame, frame["grid_code"].to_numpy(dtype=str), kind, frame["category"].to_numpy(dtype=str),
                       major)

    return cached(engine, "recurring_places_ranked", None, read)


def recurring_places(engine: Engine, area_code: str | None, query: FactQuery | None, lang: str,
                     limit: int = MAX_PLACES) -> Places:
    """The recurring places inside ``area_code`` (None: the city) matching the query's kinds and categories,
    most cases first (the rollup changes only with a load: it is read once per data version)."""
    ranked = _ranked(engine)
    keep = np.ones(len(ranked.grid), dtype=bool)
    if area_code:
        keep &= ranked.grid.astype(f"<U{len(area_code)}") == area_code  # the code's prefix, vectorised
    if query is not None and query.kinds:
        keep &= np.isin(ranked.kind, list(query.kinds))
    if query is not None and (query.categories or query.majors):
        keep &= np.isin(ranked.category, list(query.categories)) | np.isin(ranked.major, list(query.majors))
    rows = ranked.frame.iloc[np.flatnonzero(keep)[: int(limit)]]
    frame = rows.assign(category_name=rows["name_en" if lang == "en" else "name_zh"])
    return Places(frame[list(COLUMNS)].reset_index(drop=True))


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
