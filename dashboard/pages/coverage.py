"""Camera coverage and blind spots (/coverage): units coloured by the share cameras see, each camera's sector and
the blind spots from street level in, the cases that happened in blind spots per grid, and a ranked list of
proposed new camera sites (greedy maximum coverage).

The view lives in the URL (dashboard/filters.py); a click on a unit drills into it.  The callbacks' bodies are
in dashboard/coverage_view.py.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import ALL, Input, Output, State, dash_table, dcc, html

from dashboard import coverage_view as view
from dashboard import exports, filters
from layers.i18n import normalise_language, t


def _buttons(what: str, formats: tuple[str, ...], lang: str) -> list[html.Button]:
    return [html.Button(f"{t(f'coverage.export.{what}', lang)} {fmt.upper()}",
                        id={"type": "coverage-export", "what": what, "fmt": fmt}, className="cg-button", n_clicks=0)
            for fmt in formats]


def _table(table_id: str, columns: tuple[str, ...], lang: str) -> dash_table.DataTable:
    return dash_table.DataTable(id=table_id, columns=[{"id": c, "name": t(f"col.{c}", lang)} for c in columns],
                                sort_action="native", page_size=15, **exports.TABLE_STYLE)


def layout(**query: str) -> html.Div:
    """The page for the URL's query string; a bad filter shows a message and the default view."""
    lang = normalise_language(query.get("lang"))
    state, message = filters.state_for_page(query, "coverage-error-message")
    map_exports = sum((_buttons(w, ("geojson",), lang) for w in ("units_map", "blind_map", "sectors_map",
                                                                  "sites_map")), [])
    return html.Div([
        html.H1(t("coverage.heading", lang)),
        filters.filter_bar(state),
        html.Div(message, id="coverage-error"),
        html.P(id="coverage-summary", className="cg-hint"),
        dcc.Graph(id="coverage-map", config={"displaylogo": False, "scrollZoom": True}, className="cg-map"),
        html.Div(map_exports, className="cg-actions"),
        html.Div([
            html.Div([
                html.H2(t("coverage.sites", lang)),
                html.P(id="coverage-sites-note", className="cg-hint"),
                html.Div(_buttons("sites", exports.FORMATS, lang), className="cg-actions"),
                _table("coverage-sites", view.SITE_COLUMNS, lang),
            ], className="cg-column"),
            html.Div([
                html.H2(t("coverage.units", lang)),
                html.Div(_buttons("units", exports.FORMATS, lang), className="cg-actions"),
                _table("coverage-units", view.UNIT_COLUMNS, lang),
            ], className="cg-column"),
        ], className="cg-columns"),
        html.H2(t("coverage.grids", lang)),
        html.Div(_buttons("grids", exports.FORMATS, lang), className="cg-actions"),
        _table("coverage-grids", view.GRID_COLUMNS, lang),
        dcc.Store(id="coverage-sites-ready"),
        dcc.Download(id="coverage-download"),
    ], className="cg-page")


@dash.callback(
    Output("coverage-map", "figure"), Output("coverage-summary", "children"), Output("coverage-units", "data"),
    Output("coverage-grids", "data"), Output("coverage-error", "children"),
    Input(filters.URL_ID, "search"), Input("coverage-sites-ready", "data"),
)
def update_map(search: Any, sites_ready: Any) -> tuple[Any, ...]:
    """The URL changed: the map, its summary and the two tables; drawn again with the proposed sites once the
    sites callback has chosen them (they are cached by then, so the second drawing is quick)."""
    with_sites = filters.triggered_id() == "coverage-sites-ready" and bool(sites_ready)
    try:
        figure, summary, units, grids = view.map_update(search, with_sites=with_sites)
    except filters.FilterError as exc:
        return (*(dash.no_update for _ in range(4)),
                filters.problem(exc, filters.language_of(search), element_id="coverage-error-message"))
    return figure, summary, units, grids, None


@dash.callback(
    Output("coverage-sites", "data"), Output("coverage-sites-ready", "data"), Output("coverage-sites-note", "children"),
    Input(filters.URL_ID, "search"),
)
def update_sites(search: Any) -> tuple[Any, Any, Any]:
    """The proposed camera sites for the URL's view (a street or closer)."""
    try:
        rows, traces, note = view.sites_update(search)
        return rows, bool(traces), note
    except filters.FilterError:
        return dash.no_update, dash.no_update, dash.no_update  # the map's callback shows the message


@dash.callback(Output(filters.DRILL_ID, "data", allow_duplicate=True), Input("coverage-map", "clickData"),
               prevent_initial_call=True)
def drill_from_map(click: Any) -> Any:
    """A click on a unit: drill into it (sectors, markers and blind spots do not drill)."""
    try:
        code = view.drill_from_click(click)
    except filters.FilterError:
        return dash.no_update
    return filters.drill_to(code) if code else dash.no_update


@dash.callback(
    Output("coverage-download", "data"), Output("coverage-error", "children", allow_duplicate=True),
    Input({"type": "coverage-export", "what": ALL, "fmt": ALL}, "n_clicks"),
    State(filters.URL_ID, "search"),
    prevent_initial_call=True,
)
def export(_clicks: Any, search: Any) -> tuple[Any, Any]:
    """A table as CSV/XLSX or a map layer as GeoJSON, written to the audit log first."""
    return exports.answer_export("coverage", search, lambda what, fmt: view.export_content(what, fmt, search))


dash.register_page(__name__, path="/coverage", name="Coverage", name_key="nav.coverage", order=2, layout=layout)
