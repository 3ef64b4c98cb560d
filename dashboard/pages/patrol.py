"""Patrol coverage (巡查覆盖): which unit grids of a street were patrolled on a day, for how long, which have
gone unpatrolled for N days, and each community's and management grid's share of patrolled grids.

The street and the day stay in the URL (``/patrol?street=370305001&day=2025-06-02``).  The day slider updates
the map and the tables through one callback (:func:`grid_status_update`), which reads one day of the
rollups for one street: the grids' outlines are cached per data version in the layer.
"""

from __future__ import annotations

from typing import Any

import dash
import pandas as pd
from dash import Input, Output, State, dash_table, dcc, html

from dashboard.patrol_view import (
    EPOCH,
    GRID_COLUMNS,
    SHARE_COLUMNS,
    busiest_street,
    grid_rows,
    grid_status_update,
    parse_day,
    parse_street,
    streets_with_grids,
)
from geodata.engines import reader_engine
from geodata.patrol import grid_patrol_status, patrol_days
from geodata.settings import get_settings
from layers.i18n import normalise_language, t


def layout(lang: str | None = None, street: str | None = None, day: str | None = None, **_query: str) -> html.Div:
    """The page for ``?lang=&street=&day=``; bad or missing values fall back to the latest day and busiest street."""
    lang = normalise_language(lang)
    engine = reader_engine()
    days = patrol_days(engine)
    streets = streets_with_grids(engine)
    if not days or not streets:
        return html.Div([html.H1(t("patrol.heading", lang)), html.P(t("patrol.empty", lang), id="patrol-empty")],
                        className="cg-page")
    try:
        the_day = parse_day(day) if day else days[-1]
    except ValueError:
        the_day = days[-1]
    codes = [code for code, _ in streets]
    the_street = street if street in codes else (busiest_street(engine, the_day) or codes[0])
    if the_street not in codes:
        the_street = codes[0]
    first, last = (days[0] - EPOCH).days, (days[-1] - EPOCH).days
    the_day_number = min(max((the_day - EPOCH).days, first), last)
    figure, grid_data, share_data, tiles = grid_status_update(the_day_number, the_street, lang, engine)
    marks = {(d - EPOCH).days: d.strftime("%m-%d") for d in days}
    table_style = {"style_table": {"overflowX": "auto", "maxHeight": "420px", "overflowY": "auto"},
                   "page_size": 50, "sort_action": "native", "filter_action": "native"}
    return html.Div([
        html.H1(t("patrol.heading", lang)),
        dcc.Store(id="patrol-lang", data=lang),
        html.Div([
            html.Label(t("patrol.street", lang), htmlFor="patrol-street"),
            dcc.Dropdown(id="patrol-street", options=[{"label": name, "value": code} for code, name in streets],
                         value=the_street, clearable=False, style={"minWidth": "240px"}),
        ], className="cg-filter"),
        html.Div([html.Label(t("patrol.day", lang)),
                  dcc.Slider(id="patrol-day", min=first, max=last, step=1, value=the_day_number, marks=marks,
                             included=False)], className="cg-filter", id="patrol-day-filter"),
        html.Div(tiles, className="cg-tiles", id="patrol-tiles"),
        dcc.Graph(id="patrol-map", figure=figure, config={"displaylogo": False, "scrollZoom": True},
                  className="cg-map"),
        html.P(t("patrol.legend", lang).format(days=get_settings().patrol_idle_days), id="patrol-legend"),
        html.H2(t("patrol.shares", lang)),
        dash_table.DataTable(id="patrol-shares", data=share_data,
                             columns=[{"id": c, "name": t(f"patrol.col.{c}", lang)} for c in SHARE_COLUMNS],
                             **table_style),
        html.H2(t("patrol.grids", lang)),
        html.Div([html.Button(t("patrol.export_csv", lang), id="patrol-export-csv", className="cg-button"),
                  html.Button(t("patrol.export_xlsx", lang), id="patrol-export-xlsx", className="cg-button"),
                  dcc.Download(id="patrol-download")], className="cg-actions"),
        dash_table.DataTable(id="patrol-table", data=grid_data,
                             columns=[{"id": c, "name": t(f"patrol.col.{c}", lang)} for c in GRID_COLUMNS],
                             **table_style),
    ], className="cg-page")


@dash.callback(
    Output("patrol-map", "figure"), Output("patrol-table", "data"), Output("patrol-shares", "data"),
    Output("patrol-tiles", "children"),
    Input("patrol-day", "value"), Input("patrol-street", "value"), State("patrol-lang", "data"),
    prevent_initial_call=True,
)
def _on_day_or_street(day: Any, street: Any, lang: Any) -> Any:
    try:
        return grid_status_update(day, street, lang, day_only=dash.ctx.triggered_id == "patrol-day")
    except ValueError:
        return dash.no_update, dash.no_update, dash.no_update, dash.no_update


@dash.callback(
    Output("patrol-download", "data"),
    Input("patrol-export-csv", "n_clicks"), Input("patrol-export-xlsx", "n_clicks"),
    State("patrol-day", "value"), State("patrol-street", "value"), State("patrol-lang", "data"),
    prevent_initial_call=True,
)
def _export(_csv: Any, _xlsx: Any, day: Any, street: Any, lang: Any) -> Any:
    """The grid table of the street and day as CSV or XLSX, with the headers in the page's language."""
    try:
        the_day, the_street = parse_day(day), parse_street(street)
    except ValueError:
        return dash.no_update
    lang = normalise_language(lang)
    frame = grid_patrol_status(reader_engine(), the_day, the_street, get_settings().patrol_idle_days)
    table = pd.DataFrame(grid_rows(frame, lang)).rename(columns={c: t(f"patrol.col.{c}", lang) for c in GRID_COLUMNS})
    name = f"patrol_{the_street}_{the_day.isoformat()}"
    if dash.ctx.triggered_id == "patrol-export-xlsx":
        return dcc.send_data_frame(table.to_excel, f"{name}.xlsx", index=False, sheet_name="patrol")
    return dcc.send_data_frame(table.to_csv, f"{name}.csv", index=False, encoding="utf-8-sig")


dash.register_page(__name__, path="/patrol", name="Patrol", name_key="nav.patrol", order=5, layout=layout)
