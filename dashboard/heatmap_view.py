"""The heatmap page's callback bodies, apart from the page so tests and bench/callbacks.py call them with plain
arguments and no running app (``dash.register_page`` needs one).

Every function takes what the browser sends (the URL's query string, the map's relayout data, a click) and
validates it before anything is read: a bad filter becomes :class:`dashboard.filters.FilterError`, which the
page shows as a message; a bad viewport or click is ignored (:func:`viewport_of`, :func:`case_number_of`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from dashboard import filters
from dashboard.maps import bounds_of, frame_on, map_figure
from geodata.codes import CASE_KINDS, CASE_STATUSES, RESOLUTION_LEVELS, SOURCE_CHANNELS
from geodata.engines import reader_engine
from geodata.facts import EPOCH, FactQuery, facts_for
from geodata.settings import get_settings
from layers import get_layer
from layers.base import MapView
from layers.case_hexagons import CaseHexagons, resolution_for
from layers.case_points import CasePointsLayer, case_detail
from layers.i18n import t, vocabulary_name
from layers.recurring_places import COLUMNS as PLACE_COLUMNS
from layers.recurring_places import RecurringPlaces, recurring_places
from layers.version_cache import cached

MAP_HEIGHT: Final = 560
MAP_WIDTH: Final = 900
#: At this zoom and closer, single cases are drawn as points (street level and below).
POINTS_ZOOM: Final = 14.0
POINT_LEVELS: Final = ("community", "grid")
MODES: Final = ("hexagons", "density")
PLACE_TABLE_COLUMNS: Final = tuple(c for c in PLACE_COLUMNS if c not in ("lon", "lat"))
DETAIL_FIELDS: Final = ("case_number", "reported_at", "category", "status", "channel", "grid_code",
                        "registered_at", "dispatched_at", "handled_at", "closed_at", "voided_at", "handle_deadline",
                        "close_deadline", "resolution_level", "rework_count")
_CASE_NUMBER = re.compile(r"^[0-9A-Za-z_-]{1,40}$")


@dataclass(frozen=True)
class Viewport:
    """What the map shows after a pan or zoom: its zoom and (west, south, east, north)."""

    zoom: float
    bounds: tuple[float, float, float, float] | None


def viewport_of(relayout: Any) -> Viewport | None:
    """The zoom and bounds in a map's relayout data; None when it holds neither (or holds nonsense)."""
    if not isinstance(relayout, dict):
        return None
    zoom = relayout.get("map.zoom")
    if isinstance(zoom, bool) or not isinstance(zoom, int | float) or not math.isfinite(zoom) or not 0 <= zoom <= 24:
        return None
    bounds = None
    derived = relayout.get("map._derived")
    corners = derived.get("coordinates") if isinstance(derived, dict) else None
    if isinstance(corners, list) and 0 < len(corners) <= 8:
        try:
            xs = [float(c[0]) for c in corners]
            ys = [float(c[1]) for c in corners]
        except (TypeError, ValueError, IndexError):
            xs, ys = [], []
        if xs and all(math.isfinite(v) for v in xs + ys) and all(-90 <= y <= 90 for y in ys):
            bounds = (min(xs), min(ys), max(xs), max(ys))
    return Viewport(float(zoom), bounds)


def case_number_of(click: Any) -> str | None:
    """The case number of a clicked case point, or None (clusters, other traces, anything malformed)."""
    if not isinstance(click, dict):
        return None
    points = click.get("points")
    if not isinstance(points, list) or not points or not isinstance(points[0], dict):
        return None
    data = points[0].get("customdata")
    if isinstance(data, list) and data and isinstance(data[0], str) and _CASE_NUMBER.fullmatch(data[0]):
        return data[0]
    return None


def _admin(engine: Engine, view: MapView) -> Any:
    layer = get_layer("admin_boundaries")
    return cached(engine, "admin_boundaries", (view.area_code,), lambda: layer.query(engine, view))


def category_names(engine: Engine, lang: str) -> dict[str, str]:
    """``kind/code`` -> the category's name in ``lang`` (cached by data version)."""
    from geodata import planner

    def compute() -> dict[str, str]:
        with engine.connect() as conn:
            return {entry.key: entry.name(lang) for entry in planner.categories(conn)}

    return cached(engine, "category_names", (lang,), compute)


def map_update(search: Any, relayout: Any = None, mode: Any = "hexagons", engine: Engine | None = None
               ) -> tuple[dict[str, Any], str]:
    """The map figure and its one-line summary for the URL's filters and the map's viewport.

    Resolution follows the zoom (r7 city, r8 district, r9 street); at :data:`POINTS_ZOOM` and closer, or for
    a community or a grid in view, the newest cases in view are drawn as clustered points.  Raises
    FilterError for a bad filter; a bad viewport or mode is treated as none / the default.
    """
    engine = engine or reader_engine()
    state = filters.from_search(search)
    lang = state.lang
    query = state.query()
    view = MapView(state.area_code)
    viewport = viewport_of(relayout)
    mode = mode if mode in MODES else "hexagons"
    units = _admin(engine, view)
    unit_bounds = bounds_of(units.geojson)
    zoom = viewport.zoom if viewport else (frame_on(unit_bounds, MAP_WIDTH, MAP_HEIGHT)["zoom"] if unit_bounds
                                           else None)
    resolution = resolution_for(zoom if viewport else None, view.level)
    bounds = viewport.bounds if viewport else None
    hexes_layer: CaseHexagons = get_layer("case_hexagons")  # type: ignore[assignment]
    hexes = hexes_layer.query(engine, view, facts_query=query, resolution=resolution, bounds=_padded(bounds))
    traces = get_layer("admin_boundaries").draw(units, lang)
    traces[0]["hoverinfo"] = "skip"
    traces[0].pop("hovertemplate", None)
    if mode == "density":
        traces += hexes_layer.draw_density(hexes, lang, radius=_density_radius(zoom))
    else:
        traces += hexes_layer.draw(hexes, lang)
    places_layer: RecurringPlaces = get_layer("recurring_places")  # type: ignore[assignment]
    traces += places_layer.draw(places_layer.query(engine, view, facts_query=query, lang=lang), lang)
    dropped = t("heatmap.dropped", lang).format(n=hexes.dropped) if hexes.dropped else ""
    summary = t("heatmap.summary", lang).format(cases=hexes.total, res=hexes.resolution, cells=len(hexes.cells),
                                                dropped=dropped)
    if (viewport and viewport.zoom >= POINTS_ZOOM) or (viewport is None and view.level in POINT_LEVELS):
        points_layer: CasePointsLayer = get_layer("case_points")  # type: ignore[assignment]
        points = points_layer.query(engine, view, facts_query=query, bounds=bounds)
        traces += points_layer.draw(points, lang, category_names(engine, lang))
        summary += " " + t("heatmap.points_summary", lang).format(matched=points.matched, shown=len(points.frame))
    figure = map_figure(traces, get_settings(), unit_bounds, height=MAP_HEIGHT)
    figure["layout"]["uirevision"] = state.area_code or "city"
    return figure, summary


def _padded(bounds: tuple[float, float, float, float] | None) -> tuple[float, float, float, float] | None:
    """Bounds widened by a quarter on each side, so a small pan does not leave the edge bare."""
    if bounds is None:
        return None
    west, south, east, north = bounds
    dx, dy = (east - west) / 4, (north - south) / 4
    return west - dx, south - dy, east + dx, north + dy


def _density_radius(zoom: float | None) -> int:
    """Pixels of a density kernel: about one hexagon across at the drawn resolution."""
    if zoom is None:
        return 18
    return int(min(40, max(8, 8 + (zoom - 10) * 4)))


def cases_by_hour_and_weekday(engine: Engine, query: FactQuery) -> np.ndarray:
    """A 7 x 24 array (Monday first) of the query's cases by weekday and hour of report (Asia/Shanghai)."""
    facts = facts_for(engine)
    grid = np.zeros(7 * 24, dtype=np.int64)
    for month in facts.months(query.date_from, query.date_to):
        keep = facts.mask(month, query)
        if keep is None:
            continue
        weekday = (month.columns["day"][keep].astype(np.int64) + EPOCH.weekday()) % 7
        grid += np.bincount(weekday * 24 + month.columns["hour"][keep].astype(np.int64), minlength=7 * 24)
    return grid.reshape(7, 24)


def hour_dow_figure(query: FactQuery, lang: str, engine: Engine | None = None) -> dict[str, Any]:
    """Cases by hour of day (columns) and day of week (rows, Monday first) as a heatmap figure."""
    grid = cases_by_hour_and_weekday(engine or reader_engine(), query)
    days = t("heatmap.weekdays", lang).split(",")
    return {
        "data": [{"type": "heatmap", "z": grid.tolist(), "x": list(range(24)), "y": days,
                  "colorscale": "YlOrRd", "hovertemplate": "%{y} %{x}:00 · %{z:,}<extra></extra>",
                  "colorbar": {"thickness": 10}}],
        "layout": {"height": 260, "margin": {"l": 50, "r": 10, "t": 10, "b": 40},
                   "xaxis": {"title": {"text": t("heatmap.hour", lang)}, "dtick": 2},
                   "yaxis": {"autorange": "reversed"}, "paper_bgcolor": "#ffffff"},
    }


def places_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Recurring places as table rows (dates as ISO text)."""
    out = frame[list(PLACE_TABLE_COLUMNS)].copy()
    for column in ("first_day", "last_day"):
        out[column] = [d.isoformat() for d in out[column]]
    return out.to_dict("records")


def side_update(search: Any, engine: Engine | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The hour-of-day x day-of-week figure and the recurring places table for the URL's filters.

    Raises FilterError for a bad filter.
    """
    engine = engine or reader_engine()
    state = filters.from_search(search)
    query = state.query()
    places = recurring_places(engine, state.area_code, query, state.lang)
    return hour_dow_figure(query, state.lang, engine), places_rows(places.frame)


def detail_update(click: Any, search: Any, engine: Engine | None = None) -> list[tuple[str, str]] | None:
    """The clicked case's fields as (label, value) pairs in the URL's language (None: nothing was clicked).

    Only ``core.case_record`` is read — never ``private.*`` — so no reporter's name or phone can appear.
    """
    number = case_number_of(click)
    if number is None:
        return None
    lang = filters.language_of(search)
    row = case_detail(engine or reader_engine(), number)
    if row is None:
        return []
    category = row["name_en"] if lang == "en" else row["name_zh"]
    values = {
        **row,
        "category": f"{vocabulary_name(CASE_KINDS, row['kind'], lang)} · {row['category_code']} {category or ''}",
        "status": vocabulary_name(CASE_STATUSES, row["status"], lang),
        "channel": vocabulary_name(SOURCE_CHANNELS, row["source_channel"], lang),
        "resolution_level": vocabulary_name(RESOLUTION_LEVELS, row["resolution_level"] or "", lang)
        if row["resolution_level"] else "",
    }
    out = []
    for name in DETAIL_FIELDS:
        value = values.get(name)
        if value is None or value == "":
            continue
        text_value = value.strftime("%Y-%m-%d %H:%M") if hasattr(value, "strftime") else str(value)
        out.append((t(f"col.{name}", lang), text_value))
    return out


#: What the page exports: name -> the formats it comes in.
EXPORTS: Final = {"hexagons": ("geojson",), "points": ("geojson",), "places_map": ("geojson",),
                  "places": ("csv", "xlsx")}


def _point_feature(lon: float, lat: float, properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": [round(float(lon), 6),
                                                                             round(float(lat), 6)]},
            "properties": properties}


def export_content(what: str, fmt: str, search: Any, relayout: Any = None, engine: Engine | None = None
                   ) -> tuple[list[dict[str, Any]] | pd.DataFrame, str]:
    """The features (GeoJSON layers) or the table an export button asks for, recomputed on the server from the
    validated URL (and the map's viewport for the points), with a file stem.  Raises FilterError."""
    from dashboard.exports import file_name

    if what not in EXPORTS or fmt not in EXPORTS[what]:
        raise filters.FilterError(f"cannot export {what[:20]!r} as {fmt[:10]!r}")
    engine = engine or reader_engine()
    state = filters.from_search(search)
    lang, query, mapview = state.lang, state.query(), MapView(state.area_code)
    stem = file_name("heatmap", what, state.area_code or "city", state.date_from, state.date_to)
    if what == "places":
        frame = recurring_places(engine, state.area_code, query, lang).frame
        table = pd.DataFrame(places_rows(frame), columns=list(PLACE_TABLE_COLUMNS))
        return table.rename(columns={c: t(f"col.{c}", lang) for c in PLACE_TABLE_COLUMNS}), stem
    if what == "places_map":
        frame = recurring_places(engine, state.area_code, query, lang).frame
        rows = places_rows(frame)
        return [_point_feature(lon, lat, row) for lon, lat, row in zip(frame["lon"], frame["lat"], rows,
                                                                       strict=True)], stem
    if what == "points":
        viewport = viewport_of(relayout)
        points = get_layer("case_points").query(engine, mapview, facts_query=query,
                                                bounds=viewport.bounds if viewport else None)
        return [_point_feature(r.lon, r.lat, {"case_number": r.case_number, "category": r.category,
                                              "status": r.status, "day": r.day.isoformat(), "channel": r.channel,
                                              "grid_code": r.grid})
                for r in points.frame.itertuples(index=False)], stem
    from layers.case_hexagons import hexagon

    hexes = get_layer("case_hexagons").query(engine, mapview, facts_query=query)
    return [{"type": "Feature", "id": int(cell), "geometry": {"type": "Polygon", "coordinates": [hexagon(int(cell))]},
             "properties": {"h3": f"{int(cell):x}", "resolution": hexes.resolution, "cases": int(cases)}}
            for cell, cases in zip(hexes.cells, hexes.cases, strict=True)], stem
