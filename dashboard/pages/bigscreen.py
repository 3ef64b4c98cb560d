"""The command centre's big screen (大屏): a fixed, dark, no-scroll wall display that refreshes itself in place.

What it shows (issue #7): the headline figures of the period as the reports print them, a central map of
case heat and grids needing attention, the "小事不出网格" ladder for today / month / year, street rankings,
recurring problems, cases by channel, a 30-day trend against a year before, camera coverage, the newest
cases and the time of the last data refresh.

How it stays cheap and calm on a wall that runs all day:

* every figure comes from rollups (:mod:`geodata.bigscreen`, the layers ``case_heat``, ``attention_grids``,
  ``admin_boundaries``), never from a scan of raw cases;
* a refresh first reads the data version (one tiny query); the rendered screen is cached per (data version,
  period, area, map theme, screen, language, as-of bucket) in :class:`dashboard.screen_cache.ScreenCache`, so
  N walls cost one computation, and when nothing changed since the wall's last refresh the callback sends
  ``no_update`` for every panel: the browser redraws nothing and its memory does not grow;
* when the data changed but the map still shows the same area, only the map's traces are sent (``Patch``),
  keeping its view (``uirevision``);
* when the database cannot be reached or no load refreshed the data for a while, the last figures stay and a
  plain banner says so.

URL: ``/bigscreen?screen=1080p|4k&lang=zh-CN|en&kiosk=1&from=YYYY-MM-DD&to=YYYY-MM-DD&area=<district>
&rotate=off|districts|themes&rotate_seconds=M`` — every parameter optional and validated; a bad one is named
in the banner and its default used.  Kiosk sessions (``/kiosk/<token>``) may run only these callbacks,
whose outputs are all ``bigscreen-*`` components (dashboard/auth.py).
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Final

import dash
import numpy as np
from dash import Input, Output, Patch, State, dcc, html, no_update
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from dashboard.maps import OFFLINE_BACKGROUND, bounds_of, frame_on, map_style
from dashboard.screen_cache import ScreenCache
from geodata import bigscreen as screen_data
from geodata import rollups
from geodata.codes import CASE_STATUSES, RESOLUTION_LEVELS, SOURCE_CHANNELS
from geodata.engines import reader_engine
from geodata.errors import CityGridError
from geodata.kpi import RATES_BY_KEY, TIMEZONE, format_percent
from geodata.settings import Settings, get_settings
from layers import get_layer
from layers.base import MapView
from layers.i18n import normalise_language, t

log = logging.getLogger(__name__)

#: Layouts by ``?screen=``: the factor plotly's pixel sizes (fonts, lines) scale by; CSS sizes are in vh/vw.
SCREENS: Final[dict[str, float]] = {"1080p": 1.0, "4k": 2.0}
#: The map's size in CSS pixels per layout (the central panel), used to frame the area before the first draw.
MAP_PIXELS: Final[dict[str, tuple[int, int]]] = {"1080p": (900, 560), "4k": (1800, 1120)}
ROTATIONS: Final[tuple[str, ...]] = ("off", "districts", "themes")
#: Map themes: both layers, or one at a time when rotating through themes.
THEMES: Final[tuple[str, ...]] = ("heat", "attention")
KPI_COUNTS: Final[tuple[str, ...]] = ("reported", "self_handled", "dispatched", "handled", "due_close",
                                      "closed_on_time")
KPI_RATES: Final[tuple[str, ...]] = ("handling_rate", "on_time_handling_rate", "closing_rate", "on_time_closing_rate")
LEVEL_COLOURS: Final[dict[str, str]] = {"grid": "#22d3a6", "community": "#3fa7ff", "street": "#f5b83d",
                                        "district": "#ff6b6b"}
FG, MUTED, ACCENT = "#e6f0ff", "#8fb3d9", "#38c6ff"
FONT_FAMILY: Final = '"Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", sans-serif'

_CACHE: dict[str | None, ScreenCache] = {}


def screen_cache(settings: Settings | None = None) -> ScreenCache:
    """The process's big-screen cache (shared through Redis when ``settings.redis_url`` is set)."""
    settings = settings or get_settings()
    if settings.redis_url not in _CACHE:
        _CACHE[settings.redis_url] = ScreenCache(settings.redis_url)
    return _CACHE[settings.redis_url]


# --- the URL ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScreenParams:
    """The big screen's URL parameters, validated (what could not be read is in ``errors``)."""

    screen: str = "1080p"
    lang: str = "zh-CN"
    kiosk: bool = False
    date_from: str | None = None
    date_to: str | None = None
    area: str | None = None
    rotate: str = "off"
    rotate_seconds: int = 0
    errors: tuple[str, ...] = field(default_factory=tuple)


def _text(value: Any, longest: int) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > longest:
        raise ValueError
    return value


def parse_params(query: dict[str, Any], settings: Settings) -> ScreenParams:
    """Read and check ``query`` (the URL's parameters, or the same dict coming back from the browser).

    Nothing from the URL reaches SQL unchecked: dates are parsed by :func:`geodata.bigscreen.choose_period`,
    the area is matched against the store's districts, everything else against closed sets.
    """
    errors: list[str] = []
    screen = query.get("screen") or "1080p"
    if screen not in SCREENS:
        errors.append(f"screen={str(screen)[:12]}")
        screen = "1080p"
    kiosk = query.get("kiosk") in ("1", "true", True)
    dates: dict[str, str | None] = {}
    for name in ("date_from", "date_to"):
        try:
            dates[name] = _text(query.get(name, query.get(name.removeprefix("date_"))), 10)
        except ValueError:
            errors.append(name.removeprefix("date_"))
            dates[name] = None
    try:
        area = _text(query.get("area"), 6)
        if area is not None and not (len(area) == 6 and area.isdigit()):
            raise ValueError
    except ValueError:
        errors.append("area")
        area = None
    rotate = query.get("rotate") or ("off" if not settings.bigscreen_rotation_seconds else settings.bigscreen_rotate)
    if rotate not in ROTATIONS:
        errors.append("rotate")
        rotate = "off"
    raw_seconds = query.get("rotate_seconds")
    seconds = settings.bigscreen_rotation_seconds
    if raw_seconds not in (None, ""):
        try:
            seconds = int(str(raw_seconds)[:5])
            if not 0 <= seconds <= 3600:
                raise ValueError
        except ValueError:
            errors.append("rotate_seconds")
            seconds = settings.bigscreen_rotation_seconds
    if rotate != "off" and seconds == 0:
        seconds = 20  # rotation asked for without a pace: a calm default
    return ScreenParams(screen, normalise_language(query.get("lang")), kiosk, dates["date_from"], dates["date_to"],
                        area, rotate if seconds else "off", seconds, tuple(errors))


# --- reading (cached) ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MapData:
    """What the central map draws: outlines of the area's children, case heat, grids needing attention."""

    outlines: Any
    heat: Any
    attention: Any


@dataclass(frozen=True)
class Snapshot:
    """One reading of the store for an area and period: the panels' data and the map's data."""

    data: screen_data.ScreenData
    map: MapData


@dataclass(frozen=True)
class Rendered:
    """A rendered screen: every panel's content, keyed by its component id's suffix."""

    key: str
    area: str | None
    theme: str
    panels: dict[str, Any]
    last_refresh: datetime | None


def _store_basics(engine: Engine, cache: ScreenCache, version: tuple[str, int]) -> tuple[
        tuple[date, date] | None, list[tuple[str, str]]]:
    def read() -> tuple[tuple[date, date] | None, list[tuple[str, str]]]:
        with engine.connect() as conn:
            return rollups.data_span(conn), screen_data.districts(conn)

    return cache.get_or_compute(cache.key("basics", version), read)


def _snapshot(engine: Engine, period: screen_data.ScreenPeriod, area: str | None, version: tuple[str, int],
              span: tuple[date, date] | None, as_of: datetime) -> Snapshot:
    def panels() -> screen_data.ScreenData:
        with engine.connect() as conn:
            return screen_data.read_screen(conn, period, area, version[1], span, as_of)

    view = MapView(area, period.date_from, period.date_to)
    # Four independent reads on four pooled connections: the cold refresh after a load waits for the
    # slowest of them, not for their sum.
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="bigscreen") as pool:
        data = pool.submit(panels)
        outlines = pool.submit(get_layer("admin_boundaries").query, engine, MapView(area))
        heat = pool.submit(get_layer("case_heat").query, engine, view)
        attention = pool.submit(get_layer("attention_grids").query, engine, view, as_of=as_of)
        return Snapshot(data.result(), MapData(outlines.result(), heat.result(), attention.result()))


def _rotation(params: ScreenParams, districts: list[tuple[str, str]], step: int) -> tuple[str | None, str]:
    """The area and map theme for rotation step ``step``."""
    area = params.area
    theme = "all"
    if params.rotate == "districts" and districts:
        cycle: list[str | None] = [None, *(code for code, _ in districts)]
        start = cycle.index(area) if area in cycle else 0
        area = cycle[(start + step) % len(cycle)]
    elif params.rotate == "themes":
        theme = THEMES[step % len(THEMES)]
    return area, theme


def build_screen(params: ScreenParams, step: int = 0, now: datetime | None = None,
                 engine: Engine | None = None, settings: Settings | None = None) -> tuple[Rendered, list[str]]:
    """The rendered screen for ``params`` at rotation ``step`` (from the cache when another wall asked
    already), and the problems to show in the banner.  Raises SQLAlchemyError when the store is unreachable.
    """
    settings = settings or get_settings()
    engine = engine or reader_engine()
    cache = screen_cache(settings)
    now = now or datetime.now(TIMEZONE)
    problems = [t("bs.bad_url", params.lang).format(error=e) for e in params.errors]
    with engine.connect() as conn:
        # The store's identity goes into every key with its data version: two stores never share an answer.
        version = (engine.url.render_as_string(hide_password=True), screen_data.data_version(conn))
    span, districts = _store_basics(engine, cache, version)
    try:
        period = screen_data.choose_period(span, now.date(), params.date_from, params.date_to)
    except CityGridError as exc:
        problems.append(t("bs.bad_url", params.lang).format(error=str(exc)))
        period = screen_data.choose_period(span, now.date())
    try:
        area = screen_data.check_area(params.area, districts)
    except CityGridError as exc:
        problems.append(t("bs.bad_url", params.lang).format(error=str(exc)))
        area = None
    area, theme = _rotation(ScreenParams(**{**asdict(params), "area": area}), districts, step)
    # "As of" moves with time (a case becomes overdue without a load): one bucket per refresh interval.
    bucket = int(now.timestamp()) // settings.bigscreen_refresh_seconds * settings.bigscreen_refresh_seconds
    as_of = datetime.fromtimestamp(bucket, TIMEZONE)
    snap_key = cache.key("snapshot", version, period.key(), area, bucket)
    render_key = cache.key("render", version, period.key(), area, theme, params.screen, params.lang, bucket)

    def render() -> Rendered:
        snap = cache.get_or_compute(snap_key, lambda: _snapshot(engine, period, area, version, span, as_of))
        # A wall compares this digest with the one it shows: the as-of bucket moves every interval, but when
        # the content is the same the wall is sent nothing.
        digest = hashlib.sha256(pickle.dumps((snap, theme, params.screen, params.lang))).hexdigest()[:32]
        return Rendered(digest, area, theme, render_panels(snap, theme, params, settings), snap.data.last_refresh)

    rendered = cache.get_or_compute(render_key, render)
    if rendered.last_refresh is None or now - rendered.last_refresh > timedelta(
            minutes=settings.bigscreen_stale_minutes):
        problems.append(t("bs.stale", params.lang).format(minutes=settings.bigscreen_stale_minutes))
    return rendered, problems


# --- drawing -----------------------------------------------------------------------------------------------


def _figure_layout(scale: float, **extra: Any) -> dict[str, Any]:
    return {"paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)", "autosize": True,
            "font": {"family": FONT_FAMILY, "color": FG, "size": round(13 * scale)},
            "margin": {"l": round(8 * scale), "r": round(8 * scale), "t": round(4 * scale), "b": round(4 * scale)},
            "uirevision": "bigscreen", "showlegend": False, **extra}


def _ladder_figure(data: screen_data.ScreenData, lang: str, scale: float) -> dict[str, Any]:
    """100 % bars per window (today, month, year): the share solved at each level."""
    windows = ("today", "month", "year")
    labels = [t(f"bs.{w}", lang) for w in windows]
    traces = []
    for level in screen_data.LADDER:
        shares, texts = [], []
        for window in windows:
            values = data.ladder[window]
            total = sum(values.values())
            share = values[level] / total if total else 0.0
            shares.append(share * 100)
            texts.append(f"{share * 100:.1f}%" if share >= 0.06 else "")
        name = RESOLUTION_LEVELS[level][0 if lang == "zh-CN" else 1]
        traces.append({"type": "bar", "orientation": "h", "x": shares, "y": labels, "name": name,
                       "marker": {"color": LEVEL_COLOURS[level]}, "text": texts, "textposition": "inside",
                       "insidetextanchor": "middle", "textfont": {"color": "#04111f", "size": round(13 * scale)},
                       "hovertemplate": f"{name} %{{x:.2f}}%<extra></extra>"})
    return {"data": traces, "layout": _figure_layout(
        scale, barmode="stack", showlegend=True,
        legend={"orientation": "h", "x": 0, "y": 1.0, "yanchor": "bottom", "traceorder": "normal",
                "font": {"size": round(12 * scale)}},
        margin={"l": round(44 * scale), "r": round(6 * scale), "t": round(26 * scale), "b": round(4 * scale)},
        xaxis={"range": [0, 100], "visible": False, "fixedrange": True},
        yaxis={"autorange": "reversed", "fixedrange": True, "tickfont": {"size": round(14 * scale)}},
        bargap=0.28)}


def _channels_figure(data: screen_data.ScreenData, lang: str, scale: float) -> dict[str, Any]:
    channels = list(SOURCE_CHANNELS)
    values = [data.channels[c] for c in channels]
    total = sum(values) or 1
    return {"data": [{
        "type": "bar", "orientation": "h", "y": [t(f"channel.{c}", lang) for c in channels], "x": values,
        "marker": {"color": ["#38c6ff", "#22d3a6", "#a78bfa", "#f5b83d", "#ff6b6b"]},
        "text": [f"{v:,} · {v / total * 100:.1f}%" for v in values], "textposition": "outside",
        "textfont": {"size": round(13 * scale), "color": FG}, "cliponaxis": False,
        "hovertemplate": "%{y} %{x:,}<extra></extra>"}],
        "layout": _figure_layout(scale, margin={"l": round(92 * scale), "r": round(8 * scale), "t": 0,
                                                "b": round(4 * scale)},
                                 xaxis={"visible": False, "fixedrange": True, "range": [0, max(values + [1]) * 1.45]},
                                 yaxis={"autorange": "reversed", "fixedrange": True}, bargap=0.3)}


def _trend_figure(data: screen_data.ScreenData, lang: str, scale: float) -> dict[str, Any]:
    days = [d.isoformat() for d in data.trend_days]
    traces = [{"type": "scatter", "mode": "lines", "x": days, "y": data.trend_this_year,
               "name": t("bs.this_year", lang), "line": {"color": ACCENT, "width": 2.5 * scale},
               "fill": "tozeroy", "fillcolor": "rgba(56,198,255,0.12)"}]
    if any(v is not None for v in data.trend_last_year):
        traces.append({"type": "scatter", "mode": "lines", "x": days, "y": data.trend_last_year,
                       "name": t("bs.last_year", lang), "connectgaps": False,
                       "line": {"color": "#9aa8b8", "width": 1.8 * scale, "dash": "dot"}})
    grid = "rgba(143,179,217,0.15)"
    return {"data": traces, "layout": _figure_layout(
        scale, showlegend=True,
        legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.0, "yanchor": "bottom",
                "font": {"size": round(12 * scale)}},
        margin={"l": round(40 * scale), "r": round(10 * scale), "t": round(22 * scale), "b": round(24 * scale)},
        xaxis={"tickformat": "%m-%d", "nticks": 6, "gridcolor": grid, "fixedrange": True},
        yaxis={"gridcolor": grid, "rangemode": "tozero", "fixedrange": True, "nticks": 4})}


def _rings_as_arrays(geojson: dict[str, Any]) -> dict[str, Any]:
    """The same FeatureCollection with each polygon ring as a numpy array: plotly's JSON encoder hands arrays
    to orjson whole, where nested lists of floats are walked one by one on every refresh."""
    def rings(geometry: dict[str, Any]) -> dict[str, Any]:
        coords = geometry["coordinates"]
        if geometry["type"] == "Polygon":
            coords = [np.asarray(ring, dtype=np.float64) for ring in coords]
        elif geometry["type"] == "MultiPolygon":
            coords = [[np.asarray(ring, dtype=np.float64) for ring in polygon] for polygon in coords]
        return {**geometry, "coordinates": coords}

    return {**geojson, "features": [{**f, "geometry": rings(f["geometry"])} for f in geojson["features"]]}


def _map_traces(snap: Snapshot, theme: str, lang: str, scale: float) -> list[dict[str, Any]]:
    traces: list[dict[str, Any]] = []
    if theme in ("all", "heat"):
        traces += get_layer("case_heat").draw(snap.map.heat, lang)
    for trace in get_layer("admin_boundaries").draw(snap.map.outlines, lang):
        # On the dark wall the outlines lie over the heat: no fill, bright lines.
        trace["geojson"] = _rings_as_arrays(trace["geojson"])
        trace["colorscale"] = [[0, "rgba(0,0,0,0)"], [1, "rgba(0,0,0,0)"]]
        trace["marker"] = {"line": {"color": "#7fc4ff", "width": 1.4 * scale}}
        traces.append(trace)
    if theme in ("all", "attention"):
        for trace in get_layer("attention_grids").draw(snap.map.attention, lang):
            trace["marker"]["size"] = [s * scale for s in trace["marker"]["size"]]
            traces.append(trace)
    return traces


def _map_figure(snap: Snapshot, theme: str, params: ScreenParams, settings: Settings) -> dict[str, Any]:
    scale = SCREENS[params.screen]
    layout: dict[str, Any] = {"map": {"style": map_style(settings, "dark")}, "margin": {"l": 0, "r": 0, "t": 0, "b": 0},
                              "showlegend": False, "paper_bgcolor": OFFLINE_BACKGROUND["dark"], "autosize": True,
                              "uirevision": f"bigscreen-map-{snap.data.area_code or 'city'}",
                              "font": {"family": FONT_FAMILY, "size": round(13 * scale)}}
    bounds = bounds_of(snap.map.outlines.geojson)
    if bounds is not None:
        width, height = MAP_PIXELS[params.screen]
        layout["map"].update(frame_on(bounds, width_px=width, height_px=height))
    return {"data": _map_traces(snap, theme, params.lang, scale), "layout": layout}


def _kpi_tiles(data: screen_data.ScreenData, lang: str) -> list[html.Div]:
    counts, rates = data.counts, data.rates
    tiles = [html.Div([html.Div(f"{getattr(counts, name):,}", className="bs-kpi-value", id=f"bigscreen-kpi-{name}"),
                       html.Div(t(f"bs.kpi.{name}", lang), className="bs-kpi-label")], className="bs-kpi")
             for name in KPI_COUNTS]
    for key in KPI_RATES:
        rate = RATES_BY_KEY[key]
        tiles.append(html.Div([
            html.Div(format_percent(rates[key]), className="bs-kpi-value bs-rate", id=f"bigscreen-rate-{key}"),
            html.Div(rate.name_zh if lang == "zh-CN" else rate.name_en, className="bs-kpi-label")],
            className="bs-kpi bs-kpi-rate"))
    return tiles


def _ranking(rows: list[screen_data.NamedRate], lang: str) -> html.Ol | html.Div:
    if not rows:
        return html.Div(t("bs.none", lang), className="bs-empty")
    return html.Ol([
        html.Li([html.Span(f"{i}", className="bs-rank"), html.Span(r.name, className="bs-rank-name"),
                 html.Span(html.Span(style={"width": f"{(r.value or 0) * 100:.1f}%"}), className="bs-bar"),
                 html.Span(format_percent(r.value), className="bs-rank-value")], className="bs-rank-row")
        for i, r in enumerate(rows, start=1)], className="bs-ranking")


def _recurring(rows: list[screen_data.RecurringRow], lang: str) -> html.Ol | html.Div:
    if not rows:
        return html.Div(t("bs.none", lang), className="bs-empty")
    return html.Ol([
        html.Li([html.Span(r.category_zh if lang == "zh-CN" else r.category_en, className="bs-rec-cat"),
                 html.Span(r.place, className="bs-rec-place"),
                 html.Span(t("bs.recurring_cases", lang).format(cases=r.cases), className="bs-rec-n")],
                className="bs-rec-row") for r in rows], className="bs-recurring")


def _cameras(data: screen_data.ScreenData, lang: str) -> list[html.Div]:
    cam = data.cameras
    items = [
        (f"{cam.online:,}", t("bs.cameras_of", lang).format(cameras=f"{cam.cameras:,}"), "online"),
        (format_percent(cam.online_share), t("bs.online_share", lang), "online-share"),
        (format_percent(cam.coverage_share), t("bs.coverage", lang), "coverage"),
        (f"{cam.blind_grids:,}", t("bs.blind", lang), "blind"),
    ]
    return [html.Div([html.Div(value, className="bs-cam-value", id=f"bigscreen-cam-{key}"),
                      html.Div(label, className="bs-cam-label")], className="bs-cam") for value, label, key in items]


def _ticker(data: screen_data.ScreenData, lang: str) -> html.Ul | html.Div:
    if not data.ticker:
        return html.Div(t("bs.none", lang), className="bs-empty")
    index = 0 if lang == "zh-CN" else 1
    return html.Ul([
        html.Li([html.Span(row.reported_at.astimezone(TIMEZONE).strftime("%m-%d %H:%M"), className="bs-tick-time"),
                 html.Span(row.category_zh if lang == "zh-CN" else row.category_en, className="bs-tick-cat"),
                 html.Span(row.street, className="bs-tick-street"),
                 html.Span(CASE_STATUSES[row.status][index], className=f"bs-tick-stage bs-stage-{row.status}")],
                className="bs-tick-row") for row in data.ticker], className="bs-ticker")


def _period_text(period: screen_data.ScreenPeriod, lang: str) -> list[Any]:
    text = [html.Span(f"{t('bs.period', lang)} {period.date_from:%Y-%m-%d} — {period.date_to:%Y-%m-%d}")]
    if period.anchored_to_data:
        text.append(html.Span(t("bs.anchored", lang).format(day=f"{period.anchor:%Y-%m-%d}"),
                              className="bs-anchored", id="bigscreen-anchored"))
    return text


def render_panels(snap: Snapshot, theme: str, params: ScreenParams, settings: Settings) -> dict[str, Any]:
    """Every panel's content for a snapshot (pure: no I/O); keys are the panels' id suffixes."""
    data, lang, scale = snap.data, params.lang, SCREENS[params.screen]
    area_name = data.area_name or t("bs.city", lang)
    return {
        "area": f"{t('bs.title', lang)} · {area_name}",
        "period": _period_text(data.period, lang),
        "kpis": _kpi_tiles(data, lang),
        "ladder": _ladder_figure(data, lang, scale),
        "streets-on-time": _ranking(data.streets_on_time, lang),
        "streets-in-grid": _ranking(data.streets_in_grid, lang),
        "channels": _channels_figure(data, lang, scale),
        "trend": _trend_figure(data, lang, scale),
        "cameras": _cameras(data, lang),
        "recurring": _recurring(data.recurring, lang),
        "ticker": _ticker(data, lang),
        "map": _map_figure(snap, theme, params, settings),
    }


GRAPH_PANELS: Final[tuple[str, ...]] = ("ladder", "channels", "trend", "map")
PANELS: Final[tuple[str, ...]] = ("area", "period", "kpis", "ladder", "streets-on-time", "streets-in-grid",
                                  "channels", "trend", "cameras", "recurring", "ticker", "map")


def _refresh_text(last: datetime | None, lang: str) -> str:
    if last is None:
        return t("bs.no_refresh", lang)
    return f"{t('bs.last_refresh', lang)} {last.astimezone(TIMEZONE):%Y-%m-%d %H:%M:%S}"


# --- the page ------------------------------------------------------------------------------------------------


def _panel(title_key: str, body_id: str, lang: str, graph: bool = False, extra_class: str = "") -> html.Section:
    body: Any = (dcc.Graph(id=f"bigscreen-{body_id}", className="bs-graph", responsive=True,
                           config={"displayModeBar": False, "staticPlot": body_id != "map",
                                   "scrollZoom": False})
                 if graph else html.Div(id=f"bigscreen-{body_id}", className="bs-list"))
    return html.Section([html.H2(t(title_key, lang), className="bs-panel-title"),
                         html.Div(body, className="bs-panel-body")], className=f"bs-panel {extra_class}".strip())


def layout(**query: Any) -> html.Div:
    """The big screen for the URL's parameters (see the module docstring); rendered at once from the cache."""
    from dashboard.auth import current_user

    settings = get_settings()
    params = parse_params(query, settings)
    lang = params.lang
    user = current_user()
    kiosk = params.kiosk or (user is not None and user.is_kiosk)
    rendered: Rendered | None = None
    problems: list[str]
    try:
        rendered, problems = build_screen(params, settings=settings)
    except SQLAlchemyError:
        log.exception("the big screen could not read the store")
        problems = [t("bs.unreachable", lang).format(time="—")]
    panels = rendered.panels if rendered else {}
    back = [] if kiosk else [html.A(t("bs.back", lang), href="/" + ("?lang=en" if lang == "en" else ""),
                                    className="bs-back", id="bigscreen-back")]
    root = html.Div([
        dcc.Store(id="bigscreen-params", data={k: v for k, v in asdict(params).items() if k != "errors"}),
        dcc.Store(id="bigscreen-state", data={"key": rendered.key if rendered else None,
                                              "map": [rendered.area, rendered.theme] if rendered else None,
                                              "shown": rendered.last_refresh.isoformat()
                                              if rendered and rendered.last_refresh else None}),
        dcc.Interval(id="bigscreen-tick", interval=settings.bigscreen_refresh_seconds * 1000),
        dcc.Interval(id="bigscreen-rotate", interval=max(params.rotate_seconds, 1) * 1000,
                     disabled=params.rotate == "off"),
        html.Header([
            html.H1(panels.get("area", t("bs.title", lang)), id="bigscreen-area", className="bs-title"),
            html.Div(panels.get("period"), id="bigscreen-period", className="bs-period"),
            html.Div(_refresh_text(rendered.last_refresh if rendered else None, lang), id="bigscreen-refreshed",
                     className="bs-refreshed"),
            *back,
        ], className="bs-header"),
        html.Div(problems and " · ".join(problems), id="bigscreen-banner",
                 className="bs-banner" + ("" if problems else " bs-hidden"), role="status"),
        html.Section(panels.get("kpis"), id="bigscreen-kpis", className="bs-kpis"),
        html.Div([_panel("bs.ladder", "ladder", lang, graph=True),
                  _panel("bs.streets_on_time", "streets-on-time", lang),
                  _panel("bs.streets_in_grid", "streets-in-grid", lang)], className="bs-col bs-left"),
        html.Div([_panel("bs.map", "map", lang, graph=True, extra_class="bs-map-panel"),
                  _panel("bs.ticker", "ticker", lang)], className="bs-col bs-center"),
        html.Div([_panel("bs.channels", "channels", lang, graph=True),
                  _panel("bs.trend", "trend", lang, graph=True),
                  _panel("bs.cameras", "cameras", lang, extra_class="bs-cameras-panel"),
                  _panel("bs.recurring", "recurring", lang)], className="bs-col bs-right"),
    ], id="bigscreen-root", className=f"bs-root bs-{params.screen}" + (" bs-kiosk" if kiosk else ""), lang=lang)
    if rendered:
        _fill(root, rendered.panels)
    return root


def _fill(root: html.Div, panels: dict[str, Any]) -> None:
    """Put rendered panels into the layout's components (the first paint needs no callback)."""
    def walk(component: Any) -> None:
        component_id = getattr(component, "id", None)
        if isinstance(component_id, str) and component_id.startswith("bigscreen-"):
            name = component_id.removeprefix("bigscreen-")
            if name in panels and name not in ("area", "period", "kpis"):
                if name in GRAPH_PANELS:
                    component.figure = panels[name]
                else:
                    component.children = panels[name]
        children = getattr(component, "children", None)
        for child in children if isinstance(children, list) else [children]:
            if child is not None and hasattr(child, "to_plotly_json"):
                walk(child)

    walk(root)


_OUTPUTS = [Output(f"bigscreen-{name}", "figure" if name in GRAPH_PANELS else "children") for name in PANELS]


def refresh(_tick: int | None, rotate_step: int | None, params_data: Any, state: Any) -> tuple[Any, ...]:
    """Refresh in place: new panels only when something changed since this wall's last refresh; when the
    store is unreachable, keep everything and say so."""
    started = time.perf_counter()
    settings = get_settings()
    params = parse_params(params_data if isinstance(params_data, dict) else {}, settings)
    state = state if isinstance(state, dict) else {}
    step = rotate_step if isinstance(rotate_step, int) and rotate_step >= 0 else 0
    keep = tuple(no_update for _ in PANELS)
    try:
        rendered, problems = build_screen(params, step, settings=settings)
    except SQLAlchemyError:
        log.warning("big screen refresh: the store cannot be reached", exc_info=True)
        shown = state.get("shown")
        when = datetime.fromisoformat(shown).astimezone(TIMEZONE).strftime("%Y-%m-%d %H:%M") if isinstance(
            shown, str) and len(shown) < 40 else "—"
        return (*keep, no_update, t("bs.unreachable", params.lang).format(time=when), "bs-banner", no_update)
    banner = " · ".join(problems)
    banner_class = "bs-banner" if problems else "bs-banner bs-hidden"
    new_state = {"key": rendered.key, "map": [rendered.area, rendered.theme],
                 "shown": rendered.last_refresh.isoformat() if rendered.last_refresh else None}
    refreshed = _refresh_text(rendered.last_refresh, params.lang)
    if state.get("key") == rendered.key:
        out: tuple[Any, ...] = keep
    else:
        values = []
        for name in PANELS:
            value = rendered.panels[name]
            if name == "map" and state.get("map") == [rendered.area, rendered.theme]:
                patch = Patch()  # same area and theme: new traces only, the map's view and style stay
                patch["data"] = value["data"]
                value = patch
            values.append(value)
        out = tuple(values)
    log.debug("big screen refresh in %.1f ms", (time.perf_counter() - started) * 1000)
    return (*out, refreshed, banner, banner_class, new_state)


def register_callbacks(app: dash.Dash) -> None:
    """Register the refresh on ``app`` itself: ``dash.callback`` hands its callbacks to the first app that
    serves a request, and a process may build more than one app (the tests do)."""
    app.callback(
        *_OUTPUTS,
        Output("bigscreen-refreshed", "children"),
        Output("bigscreen-banner", "children"),
        Output("bigscreen-banner", "className"),
        Output("bigscreen-state", "data"),
        Input("bigscreen-tick", "n_intervals"),
        Input("bigscreen-rotate", "n_intervals"),
        State("bigscreen-params", "data"),
        State("bigscreen-state", "data"),
    )(refresh)


dash.register_page(__name__, path="/bigscreen", name="Big screen", name_key="nav.bigscreen", order=90,
                   title="CityGrid 大屏", layout=layout)
