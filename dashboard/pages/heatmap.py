"""Case heatmap (/heatmap): density as H3 hexagons that follow the zoom or as a smooth surface, single cases
with a popup from street level in, the hour-of-day x weekday pattern and the recurring places.

The view lives in the URL (dashboard/filters.py), so a link reproduces it; the map's own pan and zoom refine
it (resolution, points in view).  The callbacks' bodies are in dashboard/heatmap_view.py.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import ALL, Input, Output, State, dash_table, dcc, html

from dashboard import exports, filters
from dashboard import heatmap_view as view
from layers.i18n import normalise_language, t


def _buttons(what: str, formats: tuple[str, ...], lang: str) -> list[html.Button]:
    return [html.Button(f"{t(f'heatmap.export.{what}', lang)} {fmt.upper()}",
                        id={"type": "heatmap-export", "what": what, "fmt": fmt}, className="cg-button", n_clicks=0)
            for fmt in formats]


def layout(**query: str) -> html.Div:
    """The page for the URL's query string; a bad filter shows a message and the default view."""
    lang = normalise_language(query.get("lang"))
    state, message = filters.state_for_page(query, "heatmap-error-message")
    return html.Div([
        html.H1(t("heatmap.heading", lang)),
        filters.filter_bar(state),
        html.Div(message, id="heatmap-error"),
        html.Div([
            html.Label(t("heatmap.mode", lang), htmlFor="heatmap-mode"),
            dcc.RadioItems(id="heatmap-mode", value="hexagons", inline=True,
                           options=[{"label": t(f"heatmap.{m}", lang), "value": m} for m in view.MODES]),
        ], className="cg-filter"),
        html.P(id="heatmap-summary", className="cg-hint"),
        html.Div([
            html.Div([
                dcc.Graph(id="heatmap-map", config={"displaylogo": False, "scrollZoom": True}, className="cg-map"),
                html.Div(_buttons("hexagons", ("geojson",), lang) + _buttons("points", ("geojson",), lang)
                         + _buttons("places_map", ("geojson",), lang), className="cg-actions"),
            ], className="cg-column"),
            html.Div([
                html.H2(t("heatmap.detail", lang)),
                html.Div(html.P(t("heatmap.detail_hint", lang), className="cg-hint"), id="heatmap-detail"),
                html.H2(t("heatmap.hour_dow", lang)),
                dcc.Graph(id="heatmap-hour-dow", config={"displaylogo": False, "displayModeBar": False}),
            ], className="cg-column"),
        ], className="cg-columns"),
        html.H2(t("heatmap.recurring", lang)),
        html.P(t("heatmap.recurring_note", lang), className="cg-hint"),
        html.Div(_buttons("places", exports.FORMATS, lang), className="cg-actions"),
        dash_table.DataTable(id="heatmap-places", columns=[{"id": c, "name": t(f"col.{c}", lang)}
                                                           for c in view.PLACE_TABLE_COLUMNS],
                             sort_action="native", page_size=20, **exports.TABLE_STYLE),
        dcc.Download(id="heatmap-download"),
    ], className="cg-page")


@dash.callback(
    Output("heatmap-map", "figure"), Output("heatmap-summary", "children"),
    Output("heatmap-error", "children"),
    Input(filters.URL_ID, "search"), Input("heatmap-map", "relayoutData"), Input("heatmap-mode", "value"),
)
def update_map(search: Any, relayout: Any, mode: Any) -> tuple[Any, Any, Any]:
    """The URL, the map's pan/zoom or the display mode changed: the map and its summary."""
    trigger = filters.triggered_id()
    if trigger == "heatmap-map" and view.viewport_of(relayout) is None:
        return dash.no_update, dash.no_update, dash.no_update  # a resize or a drag that moved nothing
    try:
        figure, summary = view.map_update(search, None if trigger in (filters.URL_ID, None) else relayout, mode)
    except filters.FilterError as exc:
        return (dash.no_update, dash.no_update,
                filters.problem(exc, filters.language_of(search), element_id="heatmap-error-message"))
    return figure, summary, None


@dash.callback(
    Output("heatmap-hour-dow", "figure"), Output("heatmap-places", "data"),
    Input(filters.URL_ID, "search"),
)
def update_side(search: Any) -> tuple[Any, Any]:
    """The hour x weekday pattern and the recurring places for the URL's view."""
    try:
        return view.side_update(search)
    except filters.FilterError:
        return dash.no_update, dash.no_update  # the map's callback shows the message


@dash.callback(
    Output("heatmap-detail", "children"),
    Input("heatmap-map", "clickData"), State(filters.URL_ID, "search"),
    prevent_initial_call=True,
)
def show_detail(click: Any, search: Any) -> Any:
    """A click on a case point: its codes, place and stage times (no personal data)."""
    fields = view.detail_update(click, search)
    lang = filters.language_of(search)
    if fields is None:
        return dash.no_update
    if not fields:
        return html.P(t("heatmap.no_case", lang))
    return html.Dl([part for label, value in fields for part in (html.Dt(label), html.Dd(value))],
                   className="cg-detail", id="heatmap-detail-list")


@dash.callback(
    Output("heatmap-download", "data"), Output("heatmap-error", "children", allow_duplicate=True),
    Input({"type": "heatmap-export", "what": ALL, "fmt": ALL}, "n_clicks"),
    State(filters.URL_ID, "search"), State("heatmap-map", "relayoutData"),
    prevent_initial_call=True,
)
def export(_clicks: Any, search: Any, relayout: Any) -> tuple[Any, Any]:
    """A table as CSV/XLSX or a map layer as GeoJSON, written to the audit log first."""
    return exports.answer_export("heatmap", search,
                                 lambda what, fmt: view.export_content(what, fmt, search, relayout))


dash.register_page(__name__, path="/heatmap", name="Heatmap", name_key="nav.heatmap", order=1, layout=layout)
