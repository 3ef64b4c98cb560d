"""The grid statistics page's ("小事不出网格") callback bodies, apart from the page so that tests and
bench/callbacks.py call them with plain arguments (``dash.register_page`` needs a running app).

For the unit in view (the URL's ``area``; the whole city without one) and the filters: the share of cases
solved at grid, community, street, district and city level; every standard rate of geodata.kpi.RATES;
average handling time by category; cameras, coverage and components; its children (a grid: its siblings)
ranked side by side and drawn as a choropleth; for a grid, its cases as a paged list.

Counts come from the facts engine (geodata/facts.py), which the tests hold equal to ``kpi.count_cases`` on
raw cases; assets from ``rollup.unit_asset``; nothing here scans raw cases except one grid's paged list.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Final

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from dashboard import filters
from dashboard.filters import PlannerFilters
from dashboard.maps import map_figure
from geodata import planner
from geodata.codes import CASE_KINDS, CASE_STAGES, CASE_STATUSES, RESOLUTION_LEVELS, SOURCE_CHANNELS
from geodata.engines import reader_engine
from geodata.facts import facts_for
from geodata.kpi import RATES, CaseCounts, compute_rates, format_percent
from geodata.settings import get_settings
from layers import get_layer
from layers.base import MapView
from layers.i18n import t

PATH: Final = "/grids"
MAP_HEIGHT: Final = 520
PAGE_SIZE: Final = 20
CHILD_LEVEL: Final = {"city": "district", "district": "street", "street": "community", "community": "grid",
                      "grid": "grid"}
#: What the map and the ranking can be coloured and ordered by: a rate key of geodata.kpi, or ``reported``.
MEASURES: Final = ("grid_resolution_share", "on_time_closing_rate", "closing_rate", "handling_rate",
                   "on_time_handling_rate", "reported")
DEFAULT_MEASURE: Final = "grid_resolution_share"
LADDER: Final = ("grid", "community", "street", "district", "city")
RANK_RATES: Final = ("handling_rate", "on_time_handling_rate", "closing_rate", "on_time_closing_rate")
RANK_COLUMNS: Final = ("rank", "code", "name", "reported", "closed",
                       *(f"resolved_{level}_share" for level in LADDER), *RANK_RATES, "avg_handle_hours",
                       "cameras", "coverage", "components")
RATE_COLUMNS: Final = ("rate", "formula", "numerator", "denominator", "value")
CATEGORY_COLUMNS: Final = ("category", "kind", "reported", "handled", "avg_handle_hours")
CASE_COLUMNS: Final = ("case_number", "reported_at", "category", "channel", "status", "resolution_level",
                       "handle_deadline", "handled_at", "closed_at", "handle_hours")


def label(vocabulary: dict[str, tuple[str, str]], key: Any, lang: str) -> str:
    """A closed vocabulary's name of ``key`` in ``lang`` (the key itself when unknown; "" for None)."""
    if key is None or (isinstance(key, float) and pd.isna(key)):
        return ""
    names = vocabulary.get(str(key))
    return str(key) if names is None else (names[1] if lang == "en" else names[0])


def check_measure(value: Any) -> str:
    """The colour/rank measure, or the default for anything that is not one."""
    return value if isinstance(value, str) and value in MEASURES else DEFAULT_MEASURE


def measure_name(measure: str, lang: str) -> str:
    if measure == "reported":
        return t("grids.reported", lang)
    rate = next(r for r in RATES if r.key == measure)
    return rate.name_en if lang == "en" else rate.name_zh


@dataclass(frozen=True)
class UnitStats:
    """Everything the page shows for one view."""

    state: PlannerFilters
    name: str
    counts: CaseCounts
    rates: dict[str, float | None]
    children: pd.DataFrame  # one row per child (a grid: per sibling), RANK_COLUMNS and the raw rates
    categories: pd.DataFrame
    assets: planner.UnitAssets
    version: int


@dataclass(frozen=True)
class _Context:
    """What a view needs besides counts, which changes only with a load: names, children, assets."""

    children: tuple[tuple[str, str], ...]
    names: dict[str, str]
    assets: planner.UnitAssets
    child_assets: dict[str, planner.UnitAssets]
    categories: dict[str, planner.Category]


_VERSION_SECONDS: Final = 1.0
_version_seen: dict[int, tuple[float, int]] = {}


def data_version(engine: Engine) -> int:
    """The store's data version, read at most once a second per engine (a load is seen within a second)."""
    now = time.monotonic()
    seen = _version_seen.get(id(engine))
    if seen is None or now - seen[0] > _VERSION_SECONDS:
        with engine.connect() as conn:
            seen = (now, planner.data_version(conn))
        _version_seen[id(engine)] = seen
    return seen[1]


@lru_cache(maxsize=512)
def _context(engine: Engine, area: str | None, parent: str | None, version: int) -> _Context:
    """Names, children and assets of a view, cached by data version (a load bumps it: never stale)."""
    with engine.connect() as conn:
        return _Context(tuple(planner.children(conn, parent)), planner.unit_names(conn, planner.ancestry(area)),
                        planner.unit_assets(conn, area), planner.children_assets(conn, parent),
                        {c.key: c for c in planner.categories(conn)})


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _counts(record: dict[str, Any] | None) -> CaseCounts:
    """A facts group (a dict of its columns) as CaseCounts."""
    if record is None:
        return CaseCounts()
    return CaseCounts(**{name: (float(record[name]) if name == "handle_hours_sum" else int(record[name]))
                         for name in COUNT_FIELDS})


COUNT_FIELDS: Final = tuple(CaseCounts.__dataclass_fields__)


def unit_stats(state: PlannerFilters, engine: Engine | None = None, as_of: datetime | None = None) -> UnitStats:
    """The view's figures (see the module docstring); as of now unless ``as_of`` is given.

    Two passes of the facts engine: the parent's cases by child (the unit's own counts are their sum, or for
    a grid its own row) and the unit's cases by category.
    """
    engine = engine or reader_engine()
    facts = facts_for(engine)
    level = state.level
    parent = state.area_code[:12] if level == "grid" and state.area_code else state.area_code
    version = data_version(engine)
    context = _context(engine, state.area_code, parent, version)
    per_child = facts.group_counts(state.query(parent), CHILD_LEVEL[level], as_of)
    records = per_child.to_dict("index")
    if level == "grid":
        counts = _counts(records.get(state.area_code))
    else:
        counts = _counts(per_child.sum().to_dict()) if len(per_child) else CaseCounts()
    by_category = facts.group_counts(state.query(), "category", as_of)
    rows = []
    for code, name in context.children:
        c = _counts(records.get(code))
        rates = compute_rates(c)
        a = context.child_assets.get(code, planner.UnitAssets())
        rows.append({
            "code": code, "name": name, "reported": c.reported, "closed": c.closed,
            **{f"resolved_{lvl}_share": _share(getattr(c, f"resolved_{lvl}"), c.resolved) for lvl in LADDER},
            **rates,
            "avg_handle_hours": c.handle_hours_sum / c.handle_hours_count if c.handle_hours_count else None,
            "cameras": a.cameras, "coverage": a.coverage, "components": a.components,
        })
    children = pd.DataFrame(rows, columns=["code", "name", "reported", "closed",
                                           *(f"resolved_{lvl}_share" for lvl in LADDER), *RATES_KEYS,
                                           "avg_handle_hours", "cameras", "coverage", "components"])
    categories = _categories(by_category, context.categories, state.lang)
    name = context.names.get(state.area_code or "", t("filters.city", state.lang))
    return UnitStats(state, name, counts, compute_rates(counts), children, categories, context.assets, version)


RATES_KEYS: Final = tuple(rate.key for rate in RATES)


def _categories(frame: pd.DataFrame, names: dict[str, planner.Category], lang: str) -> pd.DataFrame:
    """Average handling time by minor category (most reported first)."""
    keys = [str(k) for k in frame.index]
    handled = frame["handle_hours_count"].to_numpy(dtype=float) if len(frame) else []
    sums = frame["handle_hours_sum"].to_numpy(dtype=float) if len(frame) else []
    out = pd.DataFrame({
        "key": keys,
        "category": [f"{k.partition('/')[2]} {names[k].name(lang) if k in names else ''}".strip() for k in keys],
        "kind": [label(CASE_KINDS, k.partition("/")[0], lang) for k in keys],
        "reported": frame["reported"].to_numpy(dtype=int) if len(frame) else [],
        "handled": np.asarray(handled, dtype=int),
        "avg_handle_hours": [round(s / h, 1) if h else None for s, h in zip(sums, handled, strict=True)],
    }, columns=["key", *CATEGORY_COLUMNS])
    return out.sort_values(["reported", "key"], ascending=[False, True], ignore_index=True)


def ranking(stats: UnitStats, measure: str) -> pd.DataFrame:
    """The children ranked by ``measure`` (best first; units without cases last), with a rank column."""
    frame = stats.children.copy()
    frame["_missing"] = frame[measure].isna()
    frame = frame.sort_values(["_missing", measure, "reported", "code"], ascending=[True, False, False, True],
                              ignore_index=True).drop(columns="_missing")
    frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame


def _percent_or_blank(value: Any) -> str:
    return "" if value is None or pd.isna(value) else format_percent(float(value))


def ranking_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The ranking table's rows as shown (percentages with two decimals, as the reports print them)."""
    out = []
    for record in frame.to_dict("records"):
        row = {key: record[key] for key in ("rank", "code", "name", "reported", "closed", "cameras", "components")}
        for key in (*(f"resolved_{lvl}_share" for lvl in LADDER), *RANK_RATES, "coverage"):
            row[key] = _percent_or_blank(record[key])
        hours = record["avg_handle_hours"]
        row["avg_handle_hours"] = "" if hours is None or pd.isna(hours) else round(float(hours), 1)
        row["id"] = record["code"]
        out.append(row)
    return out


def rate_rows(stats: UnitStats) -> list[dict[str, Any]]:
    """Every standard rate of the unit in view: name, formula, numerator, denominator, value."""
    counts = asdict(stats.counts)
    counts["resolved"] = stats.counts.resolved
    counts["registered_accurate"] = stats.counts.registered - stats.counts.registered_voided
    lang = stats.state.lang
    return [{"key": rate.key, "rate": rate.name_en if lang == "en" else rate.name_zh, "formula": rate.formula,
             "numerator": counts[rate.numerator], "denominator": counts[rate.denominator],
             "value": format_percent(stats.rates[rate.key])} for rate in RATES]


def columns(keys: tuple[str, ...], lang: str) -> list[dict[str, str]]:
    return [{"id": key, "name": t(f"grids.col.{key}", lang)} for key in keys]


def localised(frame: pd.DataFrame, keys: tuple[str, ...], lang: str) -> pd.DataFrame:
    """A table for export: the shown columns under the page's headers."""
    return frame.loc[:, list(keys)].rename(columns={key: t(f"grids.col.{key}", lang) for key in keys})


def tiles(stats: UnitStats) -> list[Any]:
    from dash import html

    lang = stats.state.lang
    c, a = stats.counts, stats.assets
    values = [
        ("grids.reported", f"{c.reported:,}", "grids-tile-reported"),
        ("grids.closed", f"{c.closed:,}", "grids-tile-closed"),
        ("grids.grid_share", format_percent(stats.rates["grid_resolution_share"]), "grids-tile-grid-share"),
        ("grids.handling_rate", format_percent(stats.rates["handling_rate"]), "grids-tile-handling"),
        ("grids.on_time_closing_rate", format_percent(stats.rates["on_time_closing_rate"]), "grids-tile-on-time"),
        ("grids.avg_hours", f"{c.handle_hours_sum / c.handle_hours_count:.1f}" if c.handle_hours_count else "—",
         "grids-tile-hours"),
        ("grids.cameras", f"{a.cameras:,} ({a.cameras_online:,} {t('grids.online', lang)})", "grids-tile-cameras"),
        ("grids.coverage", format_percent(a.coverage), "grids-tile-coverage"),
        ("grids.components", f"{a.components:,}", "grids-tile-components"),
        ("grids.blind_grids", f"{a.blind_grids:,} / {a.grids:,}", "grids-tile-blind"),
    ]
    return [html.Div([html.Div(value, className="cg-tile-value", id=tile_id),
                      html.Div(t(key, lang), className="cg-tile-label")], className="cg-tile")
            for key, value, tile_id in values]


def ladder_figure(stats: UnitStats) -> dict[str, Any]:
    """The "小事不出网格" ladder of the unit in view: the share solved at each level (a horizontal bar)."""
    lang = stats.state.lang
    c = stats.counts
    shares = [_share(getattr(c, f"resolved_{lvl}"), c.resolved) or 0.0 for lvl in LADDER]
    return {
        "data": [{"type": "bar", "orientation": "h", "y": [label(RESOLUTION_LEVELS, lvl, lang) for lvl in LADDER],
                  "x": shares, "text": [format_percent(s) for s in shares], "textposition": "auto",
                  "marker": {"color": ["#08519c", "#3182bd", "#6baed6", "#9ecae1", "#c6dbef"]},
                  "hovertemplate": "%{y}: %{text}<extra></extra>"}],
        "layout": {"height": 220, "margin": {"l": 90, "r": 10, "t": 10, "b": 30},
                   "xaxis": {"tickformat": ".0%", "range": [0, 1]}, "yaxis": {"autorange": "reversed"},
                   "paper_bgcolor": "#fff", "plot_bgcolor": "#fff"},
    }


def ranking_figure(frame: pd.DataFrame, measure: str, lang: str, picked: str | None) -> dict[str, Any]:
    """The ranking as bars (at most 40, so a community's grids stay readable)."""
    top = frame.head(40)
    values = [None if pd.isna(v) else float(v) for v in top[measure]]
    text = [format_percent(v) if measure != "reported" else f"{int(v or 0):,}" for v in values]
    colours = ["#ff7a00" if code == picked else "#3182bd" for code in top["code"]]
    layout: dict[str, Any] = {"height": max(220, 18 * len(top) + 60), "margin": {"l": 140, "r": 10, "t": 10, "b": 30},
                              "yaxis": {"autorange": "reversed"}, "paper_bgcolor": "#fff", "plot_bgcolor": "#fff"}
    if measure != "reported":
        layout["xaxis"] = {"tickformat": ".0%"}
    return {"data": [{"type": "bar", "orientation": "h", "y": list(top["name"]), "x": values, "text": text,
                      "textposition": "auto", "customdata": list(top["code"]), "marker": {"color": colours},
                      "hovertemplate": f"%{{y}} %{{customdata}}<br>{measure_name(measure, lang)}: %{{text}}<extra></extra>"}],
            "layout": layout}


def map_of(stats: UnitStats, frame: pd.DataFrame, measure: str, engine: Engine | None = None) -> dict[str, Any]:
    """The choropleth of the children (a grid: its community's grids, the grid outlined)."""
    lang = stats.state.lang
    layer = get_layer("unit_choropleth")
    values = {code: (None if pd.isna(v) else float(v)) for code, v in zip(frame["code"], frame[measure], strict=True)}
    labels = {code: ("—" if v is None else (format_percent(v) if measure != "reported" else f"{int(v):,}"))
              for code, v in values.items()}
    data = layer.query(engine or reader_engine(), MapView(stats.state.area_code), values=values, labels=labels,
                       measure_name=measure_name(measure, lang), version=stats.version,
                       zmax=None if measure == "reported" else 1.0)
    figure = map_figure(layer.draw(data, lang), get_settings(), data.shapes.bounds, height=MAP_HEIGHT)
    figure["layout"]["uirevision"] = f"{data.shapes.level}:{data.shapes.parent}"  # reframe on drill-down only
    return figure


def render(search: Any, measure: Any, engine: Engine | None = None) -> dict[str, Any]:
    """Everything the page's main callback returns, by output name (raises FilterError for bad filters)."""
    state = filters.from_search(search)
    measure = check_measure(measure)
    stats = unit_stats(state, engine)
    ranked = ranking(stats, measure)
    lang = state.lang
    level = state.level
    child_level = CHILD_LEVEL[level]
    return {
        "heading": f"{stats.name} · {t('grids.heading', lang)}",
        "tiles": tiles(stats),
        "ladder": ladder_figure(stats),
        "map": map_of(stats, ranked, measure, engine),
        "ranking_title": t(f"grids.ranking.{'siblings' if level == 'grid' else 'children'}", lang).format(
            level=t(f"level.{child_level}", lang)),
        "ranking": ranking_rows(ranked),
        "ranking_columns": columns(RANK_COLUMNS, lang),
        "ranking_bar": ranking_figure(ranked, measure, lang, state.area_code if level == "grid" else None),
        "rates": rate_rows(stats),
        "categories": stats.categories.drop(columns="key").to_dict("records"),
        "cases_visible": level == "grid",
    }


def case_page(search: Any, page: Any, engine: Engine | None = None, page_size: int = PAGE_SIZE
              ) -> tuple[list[dict[str, Any]], int, int]:
    """One page of the grid in view's cases: rows as shown, page count, total (empty unless a grid is in view)."""
    state = filters.from_search(search)
    if state.level != "grid":
        return [], 1, 0
    page_number = page if isinstance(page, int) and not isinstance(page, bool) else 0
    engine = engine or reader_engine()
    names = _context(engine, state.area_code, state.area_code[:12], data_version(engine)).categories
    with engine.connect() as conn:
        frame, total = planner.case_page(conn, state.query(), page_number, page_size)
    return case_rows(frame, names, state.lang), max(1, -(-total // page_size)), total


def case_rows(frame: pd.DataFrame, names: dict[str, planner.Category], lang: str) -> list[dict[str, Any]]:
    """Cases as the list shows them (local times, names in the page's language)."""
    def when(value: Any) -> str:
        return "" if value is None or pd.isna(value) else pd.Timestamp(value).tz_convert("Asia/Shanghai").strftime(
            "%Y-%m-%d %H:%M")

    rows = []
    for record in frame.to_dict("records"):
        key = f"{record['kind']}/{record['category_code']}"
        entry = names.get(key)
        hours = record["handle_hours"]
        rows.append({
            "id": record["case_number"], "case_number": record["case_number"],
            "reported_at": when(record["reported_at"]),
            "category": f"{record['category_code']} {entry.name(lang) if entry else ''}".strip(),
            "channel": label(SOURCE_CHANNELS, record["source_channel"], lang),
            "status": label(CASE_STATUSES, record["status"], lang),
            "resolution_level": label(RESOLUTION_LEVELS, record["resolution_level"], lang),
            "handle_deadline": when(record["handle_deadline"]), "handled_at": when(record["handled_at"]),
            "closed_at": when(record["closed_at"]),
            "handle_hours": "" if hours is None or pd.isna(hours) else float(hours),
        })
    return rows


def timeline(case_number: Any, reported_at: Any, lang: str, engine: Engine | None = None) -> list[dict[str, str]]:
    """A case's stages, oldest first: stage name, time, acting unit, note."""
    with (engine or reader_engine()).connect() as conn:
        events = planner.case_timeline(conn, case_number, reported_at)
    return [{"stage": label(CASE_STAGES, e.stage, lang), "at": e.occurred_at.strftime("%Y-%m-%d %H:%M"),
             "actor": e.actor_unit or "", "note": e.note or ""} for e in events]
