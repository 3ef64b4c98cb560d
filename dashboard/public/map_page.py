"""The public map page: cases of the last N days per area, a click for an area's breakdown, the streets' table.

One page, no login.  Every callback validates what it receives (language, days, unit, street, the clicked
area) and refuses the rest with 400; every answer is cached by (what, parameters, data version, hour) in
``AnswerCache``, so many readers cost the database one query per question per ETL run.  The words follow
``?lang=en`` (default zh-CN, layers/i18n.py); the layout is one column on a phone (public.css).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any
from urllib.parse import parse_qs

import dash
from dash import Input, Output, State, dcc, html
from sqlalchemy import Engine

from dashboard.maps import bounds_of, map_figure
from dashboard.public.cache import AnswerCache
from dashboard.public.security import PublicInputError
from geodata.kpi import format_percent
from geodata.settings import Settings
from layers import get_layer
from layers.base import MapView
from layers.i18n import normalise_language, t
from layers.public_cases import (
    DAY_CHOICES,
    UNITS,
    Breakdown,
    Outlines,
    PlaceStats,
    Policy,
    breakdown,
    check_cell,
    check_days,
    check_street,
    check_unit,
    draw_outlines,
    public_days,
    read_policy,
    street_outlines,
    street_stats,
    unit_names,
)

DEFAULT_DAYS = 30
MAP_HEIGHT = 520


def language_of(search: object) -> str:
    """The language a query string asks for (``?lang=en``); anything else: the default."""
    if search is not None and not isinstance(search, str):
        raise PublicInputError("the address must be text")
    values = parse_qs((search or "").lstrip("?")[:512]).get("lang", [])
    return normalise_language(values[0] if values else None)


def layout() -> html.Div:
    """The page's frame; its words and data arrive by callbacks that read the URL's language."""
    return html.Div(
        [
            dcc.Location(id="public-url", refresh=False),
            html.Header(
                [
                    html.H1(t("public.title"), id="public-title"),
                    html.Nav(
                        [
                            html.A(t("public.api"), id="public-api", href="/open311/v2/services.json"),
                            html.A(t("nav.language"), id="public-language", href="?lang=en"),
                        ],
                        className="pub-nav",
                    ),
                ],
                className="pub-header",
            ),
            html.P(id="public-intro", className="pub-intro"),
            html.Div(
                [
                    html.Div([html.Label(t("public.days"), id="public-days-label", htmlFor="public-days"),
                              dcc.RadioItems(id="public-days", value=DEFAULT_DAYS, inline=True,
                                             options=[{"label": t("public.days_n").format(n=n), "value": n}
                                                      for n in DAY_CHOICES])],
                             className="pub-control"),
                    html.Div([html.Label(t("public.unit"), id="public-unit-label", htmlFor="public-unit"),
                              dcc.RadioItems(id="public-unit", value=UNITS[0], inline=True,
                                             options=[{"label": t(f"public.unit.{u}"), "value": u} for u in UNITS])],
                             className="pub-control"),
                    html.Div([html.Label(t("public.street"), id="public-street-label", htmlFor="public-street"),
                              dcc.Dropdown(id="public-street", options=[], value=None, clearable=True,
                                           placeholder=t("public.all_streets"))],
                             className="pub-control pub-street"),
                ],
                className="pub-controls",
            ),
            html.Div(
                [
                    html.Div(
                        [
                            dcc.Graph(id="public-map", className="pub-map",
                                      config={"displaylogo": False, "scrollZoom": True, "responsive": True,
                                              "displayModeBar": False}),
                            html.P(id="public-legend", className="pub-legend"),
                        ],
                        className="pub-map-box",
                    ),
                    html.Aside(html.P(t("public.click_hint")), id="public-detail", className="pub-detail"),
                ],
                className="pub-body",
            ),
            html.H2(t("public.streets"), id="public-streets-title"),
            html.Div(id="public-streets", className="pub-table-box"),
        ],
        className="pub-page",
    )


def _table(header: list[str], rows: list[list[Any]], table_id: str | None = None) -> html.Table:
    attrs = {"id": table_id} if table_id else {}
    return html.Table(
        [html.Thead(html.Tr([html.Th(h) for h in header])),
         html.Tbody([html.Tr([html.Td(c) for c in row]) for row in rows])],
        className="pub-table", **attrs,
    )


def register_callbacks(app: dash.Dash, settings: Settings, cache: AnswerCache,
                       engine: Callable[[], Engine]) -> None:
    """Wire the page's callbacks on ``app`` (its own callback map: the internal app never sees them)."""
    layer = get_layer("public_cases")

    def policy() -> Policy:
        def read() -> Policy:
            with engine().connect() as conn:
                return read_policy(conn)
        return cache.get_or_compute("policy", None, read)

    def outlines() -> Outlines:
        def read() -> Outlines:
            with engine().connect() as conn:
                return street_outlines(conn)
        return cache.get_or_compute("outlines", None, read)

    def names() -> dict[str, str]:
        def read() -> dict[str, str]:
            with engine().connect() as conn:
                return unit_names(conn)
        return cache.get_or_compute("names", None, read)

    def window(days: int) -> tuple[date, date]:
        def read() -> tuple[date, date]:
            with engine().connect() as conn:
                return public_days(conn, days)
        return cache.get_or_compute("window", days, read)

    def streets(days: int) -> list[PlaceStats]:
        def read() -> list[PlaceStats]:
            with engine().connect() as conn:
                return street_stats(conn, days)
        return cache.get_or_compute("streets", days, read)

    @app.callback(
        Output("public-title", "children"),
        Output("public-intro", "children"),
        Output("public-days-label", "children"),
        Output("public-days", "options"),
        Output("public-unit-label", "children"),
        Output("public-unit", "options"),
        Output("public-street-label", "children"),
        Output("public-street", "options"),
        Output("public-street", "placeholder"),
        Output("public-api", "children"),
        Output("public-language", "children"),
        Output("public-language", "href"),
        Output("public-streets-title", "children"),
        Input("public-url", "search"),
        Input("public-days", "value"),
    )
    def _words(search: object, days: object) -> tuple[Any, ...]:
        lang = language_of(search)
        pol = policy()
        days = check_days(days, pol)
        all_names = names()
        street_options = [{"label": all_names.get(s.code, s.code), "value": s.code} for s in streets(days)]
        first, last = window(days)
        return (
            t("public.title", lang),
            t("public.intro", lang).format(days=days, delay=pol.delay_hours, first=first.isoformat(),
                                           last=last.isoformat()),
            t("public.days", lang),
            [{"label": t("public.days_n", lang).format(n=n), "value": n} for n in DAY_CHOICES
             if n <= pol.window_days],
            t("public.unit", lang),
            [{"label": t(f"public.unit.{u}", lang), "value": u} for u in UNITS],
            t("public.street", lang),
            street_options,
            t("public.all_streets", lang),
            t("public.api", lang),
            t("nav.language", lang),
            "?lang=zh-CN" if lang == "en" else "?lang=en",
            t("public.streets", lang),
        )

    @app.callback(
        Output("public-map", "figure"),
        Output("public-legend", "children"),
        Input("public-url", "search"),
        Input("public-days", "value"),
        Input("public-unit", "value"),
        Input("public-street", "value"),
    )
    def _map(search: object, days: object, unit: object, street: object) -> tuple[dict[str, Any], str]:
        lang = language_of(search)
        days = check_days(days, policy())
        unit = check_unit(unit)
        street = check_street(street)
        ground = outlines()
        if unit == "grid" and street is None:
            figure = map_figure([draw_outlines(ground)], settings, ground.bounds, height=MAP_HEIGHT)
            return _responsive(figure), t("public.choose_street", lang)

        def compute() -> dict[str, Any]:
            cells = layer.query(engine(), MapView(None), days=days, unit=unit, street=street)
            bounds = bounds_of(cells.geojson) or ground.bounds
            return _responsive(map_figure([draw_outlines(ground), *layer.draw(cells, lang)], settings, bounds,
                                          height=MAP_HEIGHT))

        figure = cache.get_or_compute("map", [lang, days, unit, street], compute)
        empty = not any(trace.get("locations") for trace in figure["data"][1:])
        return figure, t("public.empty", lang) if empty else t("public.legend", lang)

    @app.callback(
        Output("public-detail", "children"),
        Input("public-map", "clickData"),
        Input("public-days", "value"),
        Input("public-unit", "value"),
        State("public-url", "search"),
    )
    def _detail(click: object, days: object, unit: object, search: object) -> Any:
        lang = language_of(search)
        days = check_days(days, policy())
        unit = check_unit(unit)
        if dash.ctx.triggered_id != "public-map" or click is None:
            return html.P(t("public.click_hint", lang))
        cell = _clicked_cell(click, unit)
        if cell is None:
            return html.P(t("public.click_hint", lang))
        code = check_cell(unit, cell)

        def compute() -> Breakdown:
            with engine().connect() as conn:
                return breakdown(conn, unit, code, days, policy())

        found = cache.get_or_compute("detail", [days, unit, cell], compute)
        return _detail_panel(found, names().get(cell, cell) if unit == "grid" else cell, lang)

    @app.callback(
        Output("public-streets", "children"),
        Input("public-days", "value"),
        Input("public-url", "search"),
    )
    def _streets(days: object, search: object) -> html.Table:
        lang = language_of(search)
        pol = policy()
        days = check_days(days, pol)
        all_names = names()
        rows = []
        for s in streets(days):
            shown = s.shown(pol.min_cases)
            rows.append([
                all_names.get(s.code, s.code),
                s.cases,
                format_percent(s.on_time_share) if shown else "—",
                format_percent(s.in_grid_share) if shown else "—",
            ])
        return _table([t("public.street", lang), t("public.cases", lang), t("public.on_time_share", lang),
                       t("public.in_grid_share", lang)], rows, "public-streets-table")


def _responsive(figure: dict[str, Any]) -> dict[str, Any]:
    """Let the map take its box's height (CSS sets it per screen) instead of a fixed one."""
    figure["layout"].pop("height", None)
    figure["layout"]["autosize"] = True
    return figure


def _clicked_cell(click: object, unit: str) -> str | None:
    """The area code of the clicked place (a point of the cases' traces; the outlines take no click)."""
    if not isinstance(click, dict) or not isinstance(click.get("points"), list) or len(click["points"]) > 50:
        raise PublicInputError("clickData must be Dash's click event")
    for point in click["points"]:
        if not isinstance(point, dict):
            raise PublicInputError("clickData must be Dash's click event")
        if point.get("curveNumber") == 0:
            continue  # the street outlines
        location = point.get("location")
        if not isinstance(location, str):
            raise PublicInputError("the clicked place has no area code")
        return location
    return None


def _detail_panel(found: Breakdown, title: str, lang: str) -> list[Any]:
    heading = html.H3(f"{t('public.detail', lang)}: {title}")
    stats = found.stats
    if stats is None:
        return [heading, html.P(t("public.no_cases", lang))]
    if not stats.shown(found.min_cases):
        return [heading, html.P(t("public.below_k", lang).format(k=found.min_cases), id="public-below-k")]
    hours = stats.average_handle_hours
    summary = _table(
        [t("public.cases", lang), t("public.solved", lang), t("public.on_time_share", lang),
         t("public.avg_hours", lang)],
        [[stats.cases, format_percent(stats.solved_share), format_percent(stats.on_time_share),
          "—" if hours is None else f"{hours:.1f}"]],
    )
    categories = _table(
        [t("public.category", lang), t("public.cases", lang)],
        [[c["name_en"] if lang == "en" else c["name_zh"], c["cases"]] for c in found.categories],
        "public-categories",
    )
    return [heading, summary, categories]
