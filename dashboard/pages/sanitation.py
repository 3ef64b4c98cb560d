"""Sanitation (环卫作业): roads coloured by the day's swept share, trucks' stops at transfer stations and public
toilets, where each crew was last seen, and how the tracks answer for cases (patroller at the place,
minutes from dispatch to the first crew fix).  District and day stay in the URL.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import dash
from dash import Input, Output, State, dash_table, dcc, html
from sqlalchemy import Engine, text

from dashboard.maps import map_figure
from dashboard.patrol_view import parse_day
from geodata.engines import reader_engine
from geodata.patrol import facility_visits, patrol_days, response_summary
from geodata.settings import get_settings
from layers import get_layer
from layers.base import MapView
from layers.i18n import normalise_language, t

_AREA = re.compile(r"^[0-9]{6}([0-9]{3})?$")
ROAD_COLUMNS = ("road_id", "name", "road_class", "length_m", "swept_share", "crews")
FACILITY_COLUMNS = ("facility_kind", "component_code", "name", "stops", "trucks", "minutes")
CREW_COLUMNS = ("device_id", "role", "last_seen_at", "last_grid_code")


def _areas(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [(c, n) for c, n in conn.execute(text(
            "SELECT code, name FROM core.admin_unit WHERE level IN ('district', 'street') ORDER BY code"))]


def parse_area(value: Any) -> str:
    """A district (6 digits) or street (9 digits) code; ValueError otherwise."""
    if isinstance(value, str) and _AREA.fullmatch(value):
        return value
    raise ValueError(f"not a district or street code: {value!r}")


def sanitation_update(day: Any, area: Any, lang: Any, engine: Engine | None = None) -> tuple[Any, ...]:
    """Map, road table, facility table, crew table and the response line for an area and a day."""
    engine = engine or reader_engine()
    lang = normalise_language(lang)
    the_day, the_area = parse_day(day), parse_area(area)
    view = MapView(the_area)
    roads = get_layer("road_sweep").query(engine, view, day=the_day)
    crews = get_layer("crews").query(engine, view)
    traces = get_layer("road_sweep").draw(roads, lang) + get_layer("crews").draw(crews, lang)
    bounds = _bounds(roads.roads, crews.devices)
    figure = map_figure(traces, get_settings(), bounds, height=520)
    figure["layout"]["showlegend"] = True
    road_rows = [{"road_id": r.road_id, "name": r.name, "road_class": r.road_class, "length_m": round(r.length_m),
                  "swept_share": f"{r.swept_share:.0%}", "crews": int(r.crews)}
                 for r in roads.roads.sort_values("swept_share").itertuples()]
    facilities = facility_visits(engine, the_day)
    facility_rows = [{**row, "facility_kind": t(f"facility.{row['facility_kind']}", lang), "minutes": float(row["minutes"])}
                     for row in facilities.to_dict("records")]
    crew_rows = [{"device_id": d, "role": t(f"track.role.{r}", lang), "last_seen_at": f"{s:%Y-%m-%d %H:%M}",
                  "last_grid_code": g or ""} for d, r, s, g in
                 crews.devices[["device_id", "role", "last_seen_at", "last_grid_code"]].itertuples(index=False)]
    summary = response_summary(engine, the_day, the_day)
    median = summary["median_minutes"]
    response = t("sanitation.response_text", lang).format(**{**summary, "median": "-" if median is None
                                                             else f"{median:.0f}"})
    return figure, road_rows, facility_rows, crew_rows, response


def _bounds(roads: Any, devices: Any) -> tuple[float, float, float, float] | None:
    lons, lats = list(devices["lon"]), list(devices["lat"])
    for geometry in roads["geometry"]:
        numbers = [float(v) for v in re.findall(r"-?[0-9]+\.[0-9]+", geometry)]
        lons.extend(numbers[0::2])
        lats.extend(numbers[1::2])
    return (min(lons), min(lats), max(lons), max(lats)) if lons else None


def _table(table_id: str, columns: tuple[str, ...], data: list[dict[str, Any]], lang: str) -> dash_table.DataTable:
    return dash_table.DataTable(id=table_id, data=data, page_size=25, sort_action="native",
                                columns=[{"id": c, "name": t(f"sanitation.col.{c}", lang)} for c in columns],
                                style_table={"overflowX": "auto"}, export_format="xlsx")


def layout(lang: str | None = None, area: str | None = None, day: str | None = None, **_query: str) -> html.Div:
    """The page for ``?lang=&area=&day=``; bad or missing values fall back to the first district, latest day."""
    lang = normalise_language(lang)
    engine = reader_engine()
    days = patrol_days(engine)
    areas = _areas(engine)
    if not days or not areas:
        return html.Div([html.H1(t("sanitation.heading", lang)), html.P(t("sanitation.empty", lang))],
                        className="cg-page")
    try:
        the_day = parse_day(day) if day else days[-1]
    except ValueError:
        the_day = days[-1]
    codes = [c for c, _ in areas]
    the_area = area if area in codes else codes[0]
    epoch = date(1970, 1, 1)
    number = min(max((the_day - epoch).days, (days[0] - epoch).days), (days[-1] - epoch).days)
    figure, roads, facilities, crews, response = sanitation_update(number, the_area, lang, engine)
    return html.Div([
        html.H1(t("sanitation.heading", lang)),
        dcc.Store(id="sanitation-lang", data=lang),
        html.Div([html.Label(t("sanitation.area", lang), htmlFor="sanitation-area"),
                  dcc.Dropdown(id="sanitation-area", options=[{"label": n, "value": c} for c, n in areas],
                               value=the_area, clearable=False, style={"minWidth": "240px"})], className="cg-filter"),
        html.Div([html.Label(t("patrol.day", lang)),
                  dcc.Slider(id="sanitation-day", min=(days[0] - epoch).days, max=(days[-1] - epoch).days, step=1,
                             value=number, marks={(d - epoch).days: d.strftime("%m-%d") for d in days},
                             included=False)], className="cg-filter"),
        dcc.Graph(id="sanitation-map", figure=figure, config={"displaylogo": False, "scrollZoom": True},
                  className="cg-map"),
        html.H2(t("sanitation.response", lang)),
        html.P(response, id="sanitation-response"),
        html.H2(t("sanitation.roads", lang)),
        _table("sanitation-roads", ROAD_COLUMNS, roads, lang),
        html.H2(t("sanitation.facilities", lang)),
        _table("sanitation-facilities", FACILITY_COLUMNS, facilities, lang),
        html.H2(t("sanitation.crews", lang)),
        _table("sanitation-crews", CREW_COLUMNS, crews, lang),
    ], className="cg-page")


@dash.callback(
    Output("sanitation-map", "figure"), Output("sanitation-roads", "data"), Output("sanitation-facilities", "data"),
    Output("sanitation-crews", "data"), Output("sanitation-response", "children"),
    Input("sanitation-day", "value"), Input("sanitation-area", "value"), State("sanitation-lang", "data"),
    prevent_initial_call=True,
)
def _on_day_or_area(day: Any, area: Any, lang: Any) -> Any:
    try:
        return sanitation_update(day, area, lang)
    except ValueError:
        return (dash.no_update,) * 5


dash.register_page(__name__, path="/sanitation", name="Sanitation", name_key="nav.sanitation", order=6,
                   layout=layout)
