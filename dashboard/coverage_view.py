"""The coverage page's callback bodies, apart from the page so tests and bench/callbacks.py call them with plain
arguments and no running app.

Each takes the URL's query string (and, for a click, the map's click data), validates it through
dashboard/filters.py (a bad value raises :class:`dashboard.filters.FilterError`, which the page shows as a
message) and reads only through layers: coverage share per unit, sectors and blind spots for a street or
closer, blind-spot cases per grid and the proposed camera sites.
"""

from __future__ import annotations

from typing import Any, Final

import pandas as pd
from sqlalchemy import Engine

from dashboard import filters
from dashboard.maps import map_figure
from geodata.engines import reader_engine
from geodata.settings import get_settings
from layers import get_layer
from layers.base import MapView
from layers.blind_cases import BlindCases, blind_counts
from layers.blind_spots import DETAIL_LEVELS
from layers.camera_sectors import feature_id
from layers.camera_sites import SITE_RANGE_M, propose_sites
from layers.coverage_share import unit_coverage
from layers.i18n import t

MAP_HEIGHT: Final = 560
UNIT_COLUMNS: Final = ("code", "name", "covered_share", "cameras", "grids", "cases", "blind_cases")
GRID_COLUMNS: Final = ("grid_code", "name", "cases", "blind_cases", "blind_share", "covered_share")
SITE_COLUMNS: Final = ("rank", "source", "lon", "lat", "cases_added", "cumulative")
#: Rows of the blind-spot grid table (the busiest first; the export has them all).
GRID_ROWS: Final = 500


def _tables(units: Any, counts: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The unit table (drawn units with their cases and blind-spot cases) and the blind-spot grid table."""
    unit_frame = pd.DataFrame(units.rows, columns=["code", "name", "area_m2", "covered_m2", "covered_share",
                                                   "cameras", "grids"])
    if len(counts):
        width = {"district": 6, "street": 9, "community": 12}.get(units.level)
        keys = counts.index.str[:width] if width else counts.index
        per_unit = counts.groupby(keys)[["cases", "blind_cases"]].sum()
    else:
        per_unit = pd.DataFrame({"cases": pd.Series(dtype="int64"), "blind_cases": pd.Series(dtype="int64")})
    unit_frame = unit_frame.join(per_unit, on="code")
    unit_frame[["cases", "blind_cases"]] = unit_frame[["cases", "blind_cases"]].fillna(0).astype("int64")
    grid_frame = counts.reset_index()
    if units.level == "grid":
        drawn = pd.DataFrame(units.rows).set_index("code")
        grid_frame = grid_frame.join(drawn[["name", "covered_share"]], on="grid_code")
    else:
        grid_frame = grid_frame.assign(name="", covered_share=None)
    return unit_frame[list(UNIT_COLUMNS)], grid_frame[list(GRID_COLUMNS)]


def coverage_tables(search: Any, engine: Engine | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The unit table and the whole blind-spot grid table for the URL's filters (exports).  Raises FilterError."""
    engine = engine or reader_engine()
    state = filters.from_search(search)
    return _tables(unit_coverage(engine, MapView(state.area_code)), blind_counts(engine, state.query()).frame)


def map_update(search: Any, engine: Engine | None = None, with_sites: bool = False
               ) -> tuple[dict[str, Any], str, list[dict[str, Any]], list[dict[str, Any]]]:
    """The coverage map, its summary line, the unit table and the blind-spot grid table.  Raises FilterError.

    ``with_sites``: also draw the proposed camera sites (a street or closer; chosen once and cached).
    """
    engine = engine or reader_engine()
    state = filters.from_search(search)
    lang = state.lang
    view = MapView(state.area_code)
    query = state.query()
    share_layer = get_layer("coverage_share")
    shares = share_layer.query(engine, view)
    traces = share_layer.draw(shares, lang)
    if view.level in DETAIL_LEVELS:
        for name in ("blind_spots", "camera_sectors"):
            layer = get_layer(name)
            traces += layer.draw(layer.query(engine, view), lang)
    blind_layer: BlindCases = get_layer("blind_cases")  # type: ignore[assignment]
    blind = blind_layer.query(engine, view, facts_query=query)
    if view.level in DETAIL_LEVELS:  # city-wide, the unit table carries the counts; bubbles would be noise
        traces += blind_layer.draw(blind, lang)
    if with_sites and view.level in DETAIL_LEVELS:
        traces += get_layer("camera_sites").draw(propose_sites(engine, view, query), lang)
    unit_frame, grid_frame = _tables(shares, blind.counts.frame)
    frame = blind.counts.frame
    summary = t("coverage.summary", lang).format(cases=int(frame["cases"].sum()) if len(frame) else 0,
                                                 blind=blind.counts.total_blind)
    if view.level not in DETAIL_LEVELS:
        summary += " " + t("coverage.zoom_hint", lang)
    figure = map_figure(traces, get_settings(), shares.bounds, height=MAP_HEIGHT)
    figure["layout"]["uirevision"] = state.area_code or "city"
    return (figure, summary, unit_frame.to_dict("records"),
            grid_frame.head(GRID_ROWS).to_dict("records"))


def sites_update(search: Any, engine: Engine | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """The proposed camera sites: table rows, their map trace(s) and the method note (empty rows and a hint for
    the city or a district).  Raises FilterError."""
    engine = engine or reader_engine()
    state = filters.from_search(search)
    lang = state.lang
    view = MapView(state.area_code)
    if view.level not in DETAIL_LEVELS:
        return [], [], t("coverage.zoom_hint", lang)
    sites = propose_sites(engine, view, state.query())
    rows = sites.frame.assign(source=[t(f"coverage.source.{s}", lang) for s in sites.frame["source"]])
    return (rows.to_dict("records"), get_layer("camera_sites").draw(sites, lang),
            t("coverage.sites_note", lang).format(range=SITE_RANGE_M))


def drill_from_click(click: Any) -> str | None:
    """The admin code of a clicked unit (the coverage-share trace, always the map's first), else None.

    Raises FilterError when the clicked location is not an admin code.
    """
    if not isinstance(click, dict):
        return None
    points = click.get("points")
    if not isinstance(points, list) or not points or not isinstance(points[0], dict):
        return None
    if points[0].get("curveNumber") != 0 or points[0].get("location") is None:
        return None
    return filters.checked_area(points[0]["location"])


#: What the page exports: name -> the formats it comes in.
EXPORTS: Final = {"units": ("csv", "xlsx"), "grids": ("csv", "xlsx"), "sites": ("csv", "xlsx"),
                  "units_map": ("geojson",), "blind_map": ("geojson",), "sectors_map": ("geojson",),
                  "sites_map": ("geojson",)}


def _localised(frame: pd.DataFrame, lang: str) -> pd.DataFrame:
    return frame.rename(columns={c: t(f"col.{c}", lang) for c in frame.columns})


def export_content(what: str, fmt: str, search: Any, engine: Engine | None = None
                   ) -> tuple[list[dict[str, Any]] | pd.DataFrame, str]:
    """The table or the features an export button asks for, recomputed on the server from the validated URL,
    with a file stem.  Raises FilterError (also for a layer the view does not draw, e.g. sectors city-wide)."""
    from dashboard.exports import file_name

    if what not in EXPORTS or fmt not in EXPORTS[what]:
        raise filters.FilterError(f"cannot export {what[:20]!r} as {fmt[:10]!r}")
    engine = engine or reader_engine()
    state = filters.from_search(search)
    lang, view = state.lang, MapView(state.area_code)
    stem = file_name("coverage", what, state.area_code or "city", state.date_from, state.date_to)
    if what in ("units", "grids"):
        units, grids = coverage_tables(search, engine)
        return _localised(units if what == "units" else grids, lang), stem
    if what in ("sites", "sites_map"):
        if view.level not in DETAIL_LEVELS:
            raise filters.FilterError(t("coverage.zoom_hint", lang))
        sites = propose_sites(engine, view, state.query()).frame
        if what == "sites":
            return _localised(sites.assign(source=[t(f"coverage.source.{s}", lang) for s in sites["source"]]),
                              lang), stem
        return [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [r["lon"], r["lat"]]},
                 "properties": {k: r[k] for k in ("rank", "source", "cases_added", "cumulative")}}
                for r in sites.to_dict("records")], stem
    if what == "units_map":
        shares = unit_coverage(engine, view)
        by_code = {r["code"]: r for r in shares.rows}
        return [{**f, "properties": by_code[f["id"]]} for f in shares.geojson["features"]], stem
    if view.level not in DETAIL_LEVELS:
        raise filters.FilterError(t("coverage.zoom_hint", lang))
    if what == "blind_map":
        blind = get_layer("blind_spots").query(engine, view)
        return [{**f, "properties": {"grid_code": f["id"], "blind_m2": m2}}
                for f, m2 in zip(blind.geojson["features"], blind.blind_m2, strict=True)], stem
    sectors = get_layer("camera_sectors").query(engine, view)
    by_id = {feature_id(r["camera_id"]): r for r in sectors.rows}
    return [{**f, "properties": by_id[f["id"]]} for f in sectors.geojson["features"]], stem
