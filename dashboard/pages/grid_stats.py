"""Grid statistics, "小事不出网格" (/grids): where cases are solved, unit by unit, with drill-down to a grid's cases.

The view lives in the URL (dashboard/filters.py: period, filters and ``area``), so a link reproduces it.
A click on a unit on the map or in the ranking drills down (district -> streets -> communities -> grids ->
a grid's cases); the breadcrumb climbs back.  The callbacks' bodies are in dashboard/grid_stats_view.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dash
import pandas as pd
from dash import ALL, Input, Output, State, dash_table, dcc, html

from dashboard import exports, filters
from dashboard import grid_stats_view as view
from geodata.errors import CityGridError
from layers.i18n import normalise_language, t

_TABLE_STYLE: dict[str, Any] = {**exports.TABLE_STYLE,
                               "style_table": {"overflowX": "auto", "maxHeight": "460px", "overflowY": "auto"}}


def _export_buttons(what: str, lang: str, geojson: bool = False) -> html.Div:
    buttons = [html.Button(t(f"grids.export_{fmt}", lang), id={"type": "grids-export", "what": what, "fmt": fmt},
                           className="cg-button", n_clicks=0) for fmt in ("csv", "xlsx")]
    if geojson:
        buttons.append(html.Button(t("grids.export_geojson", lang),
                                   id={"type": "grids-export", "what": what, "fmt": "geojson"},
                                   className="cg-button", n_clicks=0))
    return html.Div(buttons, className="cg-actions")


def layout(**query: str) -> html.Div:
    """The page for the URL's query string; a bad filter shows a message and the default view."""
    lang = normalise_language(query.get("lang"))
    state, message = filters.state_for_page(query, "grids-error-message")
    graph_config = {"displaylogo": False, "scrollZoom": True}
    return html.Div([
        html.H1(t("grids.heading", lang), id="grids-heading"),
        filters.filter_bar(state),
        html.Div(message, id="grids-error"),
        html.Div([html.Label(t("grids.measure", lang), htmlFor="grids-measure"),
                  dcc.Dropdown(id="grids-measure", clearable=False, value=view.DEFAULT_MEASURE,
                               options=[{"label": view.measure_name(m, lang), "value": m} for m in view.MEASURES],
                               style={"minWidth": "14rem"})], className="cg-filter"),
        html.Div(id="grids-tiles", className="cg-tiles"),
        html.Div([
            html.Div([
                html.H2(t("grids.map", lang)),
                html.P(t("grids.map_hint", lang), className="cg-hint"),
                dcc.Graph(id="grids-map", config=graph_config, className="cg-map"),
                _export_buttons("map", lang, geojson=True),
            ], className="cg-column"),
            html.Div([
                html.H2(t("grids.ladder", lang)),
                dcc.Graph(id="grids-ladder", config={"displaylogo": False, "displayModeBar": False}),
                html.H2(t("grids.rates", lang)),
                _export_buttons("rates", lang),
                dash_table.DataTable(id="grids-rates", columns=view.columns(view.RATE_COLUMNS, lang), **_TABLE_STYLE),
            ], className="cg-column"),
        ], className="cg-columns"),
        html.H2(id="grids-ranking-title"),
        _export_buttons("ranking", lang),
        html.Div([
            html.Div(dash_table.DataTable(id="grids-ranking", sort_action="native", **_TABLE_STYLE),
                     className="cg-column"),
            html.Div(dcc.Graph(id="grids-ranking-bar", config={"displaylogo": False, "displayModeBar": False}),
                     className="cg-column"),
        ], className="cg-columns"),
        html.Div([
            html.H2(t("grids.cases", lang)),
            html.P(id="grids-cases-total", className="cg-hint"),
            _export_buttons("cases", lang),
            dash_table.DataTable(id="grids-cases", columns=view.columns(view.CASE_COLUMNS, lang), page_current=0,
                                 page_size=view.PAGE_SIZE, page_action="custom", **_TABLE_STYLE),
            html.H3(t("grids.timeline", lang)),
            html.P(t("grids.timeline_hint", lang), className="cg-hint"),
            html.Ol(id="grids-timeline", className="cg-timeline"),
        ], id="grids-cases-section", style={"display": "none"}),
        html.H2(t("grids.categories", lang)),
        _export_buttons("categories", lang),
        dash_table.DataTable(id="grids-categories", columns=view.columns(view.CATEGORY_COLUMNS, lang),
                             sort_action="native", page_size=15, **_TABLE_STYLE),
        dcc.Download(id="grids-download"),
    ], className="cg-page")


_OUTPUTS = ("heading", "tiles", "ladder", "map", "ranking_title", "ranking", "ranking_columns", "ranking_bar",
            "rates", "categories")


@dash.callback(
    Output("grids-heading", "children"), Output("grids-tiles", "children"), Output("grids-ladder", "figure"),
    Output("grids-map", "figure"), Output("grids-ranking-title", "children"), Output("grids-ranking", "data"),
    Output("grids-ranking", "columns"), Output("grids-ranking-bar", "figure"), Output("grids-rates", "data"),
    Output("grids-categories", "data"), Output("grids-cases-section", "style"), Output("grids-error", "children"),
    Output("grids-ranking", "active_cell"), Output("grids-cases", "page_current"),
    Input(filters.URL_ID, "search"), Input("grids-measure", "value"),
)
def update_view(search: Any, measure: Any) -> tuple[Any, ...]:
    """The URL (or the measure) changed: every figure and table of the view."""
    try:
        out = view.render(search, measure)
    except filters.FilterError as exc:
        return (*(dash.no_update for _ in _OUTPUTS), dash.no_update,
                filters.problem(exc, filters.language_of(search), element_id="grids-error-message"),
                dash.no_update, dash.no_update)
    style = {"display": "block"} if out["cases_visible"] else {"display": "none"}
    return (*(out[name] for name in _OUTPUTS), style, None, None, 0)


@dash.callback(
    Output("grids-cases", "data"), Output("grids-cases", "page_count"), Output("grids-cases-total", "children"),
    Input(filters.URL_ID, "search"), Input("grids-cases", "page_current"),
)
def update_cases(search: Any, page: Any) -> tuple[Any, ...]:
    """One page of the grid's cases (read on the server page by page)."""
    try:
        rows, pages, total = view.case_page(search, page)
    except CityGridError:
        return [], 1, ""
    return rows, pages, t("grids.cases_total", filters.language_of(search)).format(total=f"{total:,}")


@dash.callback(
    Output("grids-timeline", "children"),
    Input("grids-cases", "active_cell"), State("grids-cases", "data"), State(filters.URL_ID, "search"),
    prevent_initial_call=True,
)
def show_timeline(active_cell: Any, rows: Any, search: Any) -> Any:
    """The stage history of the case clicked in the list."""
    lang = filters.language_of(search)
    if not isinstance(active_cell, Mapping) or not isinstance(rows, list):
        return []
    row = active_cell.get("row")
    if not isinstance(row, int) or isinstance(row, bool) or not 0 <= row < len(rows) or not isinstance(rows[row], Mapping):
        return []
    try:
        events = view.timeline(rows[row].get("case_number"), rows[row].get("reported_at"), lang)
    except CityGridError as exc:
        return [html.Li(filters.problem(exc, lang, element_id="grids-timeline-error"))]
    return [html.Li([html.Strong(e["stage"]), f" {e['at']} ", e["actor"], f" {e['note']}" if e["note"] else ""],
                    className="cg-timeline-step") for e in events] or [html.Li(t("grids.no_events", lang))]


@dash.callback(Output(filters.DRILL_ID, "data", allow_duplicate=True), Input("grids-map", "clickData"),
               prevent_initial_call=True)
def drill_from_map(click: Any) -> Any:
    """A click on a unit on the map: drill into it."""
    try:
        code = click["points"][0]["location"]
        return filters.drill_to(code)
    except (KeyError, IndexError, TypeError, filters.FilterError):
        return dash.no_update


@dash.callback(Output(filters.DRILL_ID, "data", allow_duplicate=True), Input("grids-ranking", "active_cell"),
               prevent_initial_call=True)
def drill_from_table(active_cell: Any) -> Any:
    """A click on a row of the ranking: drill into that unit (the row id is its code)."""
    if not isinstance(active_cell, Mapping) or active_cell.get("row_id") is None:
        return dash.no_update
    try:
        return filters.drill_to(active_cell.get("row_id"))
    except filters.FilterError:
        return dash.no_update


def export_frame(what: str, search: Any, measure: Any) -> tuple[pd.DataFrame | list[dict[str, Any]], str]:
    """The table (or, for ``map``, the features) an export button asks for, recomputed from the URL."""
    state = filters.from_search(search)
    lang = state.lang
    stem = exports.file_name("grids", what, state.area_code or "city", state.date_from, state.date_to)
    if what == "cases":
        if state.level != "grid":
            raise filters.FilterError(t("grids.cases_need_grid", lang))
        rows: list[dict[str, Any]] = []
        page = 0
        while True:  # every page, as the list shows it (one grid: a bounded number)
            part, pages, _total = view.case_page(search, page)
            rows += part
            page += 1
            if page >= pages or page >= 500:
                break
        return view.localised(pd.DataFrame(rows, columns=["id", *view.CASE_COLUMNS]), view.CASE_COLUMNS, lang), stem
    stats = view.unit_stats(state)
    measure = view.check_measure(measure)
    if what == "rates":
        return view.localised(pd.DataFrame(view.rate_rows(stats)), view.RATE_COLUMNS, lang), stem
    if what == "categories":
        return view.localised(stats.categories, view.CATEGORY_COLUMNS, lang), stem
    ranked = view.ranking(stats, measure)
    if what == "ranking":
        return view.localised(pd.DataFrame(view.ranking_rows(ranked)), view.RANK_COLUMNS, lang), stem
    if what == "map":
        figure = view.map_of(stats, ranked, measure)
        features: list[dict[str, Any]] = []
        by_code = {row["code"]: row for row in view.ranking_rows(ranked)}
        seen: set[str] = set()
        for trace in figure["data"]:
            for feature in trace["geojson"]["features"]:
                if feature["id"] in seen:
                    continue
                seen.add(feature["id"])
                features.append({"type": "Feature", "id": feature["id"], "geometry": feature["geometry"],
                                 "properties": {"code": feature["id"], **by_code.get(feature["id"], {})}})
        return features, stem
    raise filters.FilterError(f"nothing to export called {str(what)[:20]!r}")


@dash.callback(
    Output("grids-download", "data"), Output("grids-error", "children", allow_duplicate=True),
    Input({"type": "grids-export", "what": ALL, "fmt": ALL}, "n_clicks"),
    State(filters.URL_ID, "search"), State("grids-measure", "value"),
    prevent_initial_call=True,
)
def export(_clicks: Any, search: Any, measure: Any) -> tuple[Any, Any]:
    """A table as CSV/XLSX or the map's units as GeoJSON, written to the audit log first."""
    return exports.answer_export("grids", search, lambda what, _fmt: export_frame(what, search, measure))


dash.register_page(__name__, path=view.PATH, name="Grid statistics", name_key="nav.grids", order=3, layout=layout)
