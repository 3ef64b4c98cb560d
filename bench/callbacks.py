"""The planner pages' speed: random filter and drill-down combinations replayed through the pages' real callback
functions (server side, no browser), against the same requests answered by straightforward SQL on raw cases.

    DATABASE_URL=... .venv/bin/python bench/callbacks.py [--requests 240] [--seed 7]

Reads the store DATABASE_URL names (the 10,000,000-case city when loaded; any loaded store works) through the
read-only engine, exactly as the dashboard does.  Each combination draws a period (1 day to a year inside the
data), a unit at any level (city, district, street, community, grid) and a random subset of the filters
(kind, major and minor category, channel, status, resolution level), then calls the callbacks of every
planner page registered in :data:`PAGES` with it: the grid statistics view, its case list page and a case's
timeline, the map's drill-down, the breadcrumb (and the heatmap and coverage pages' callbacks when their
modules exist).  The naive side answers the grid statistics view's questions — the unit's counts, its
children's counts, its categories — by ``GROUP BY`` over ``core.case_record`` with the same filters.

The facts engine's month files are built (or found) first and that warm-up is printed apart: it happens once
per data version, not per request.  Every figure a callback returns is measured as JSON (limit 2 MB).
Last line: ``callbacks_p95_ms=<worst callback p95> naive_p95_ms=<y> ratio=<y / x>``.
"""

# SQL here is composed only from constants and geodata.planner's clause builder; values are bound.
# ruff: noqa: S608

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from plotly.utils import PlotlyJSONEncoder
from sqlalchemy import Engine, text

from geodata import planner, rollups
from geodata.codes import CASE_KINDS, CASE_STATUSES, RESOLUTION_LEVELS, SOURCE_CHANNELS
from geodata.engines import reader_engine
from geodata.facts import FactQuery, facts_for
from geodata.settings import get_settings

FIGURE_LIMIT = 2_000_000
PERIOD_DAYS = (1, 7, 30, 30, 90, 365)
LEVEL_WEIGHTS = {"city": 1, "district": 2, "street": 3, "community": 3, "grid": 3}


def _units(engine: Engine) -> dict[str, list[str]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT level, code FROM core.admin_unit")).all()
        busy = conn.execute(text("SELECT grid_code FROM rollup.case_month_grid GROUP BY 1"
                                 " ORDER BY sum(reported) DESC LIMIT 2000")).scalars().all()
    out: dict[str, list[str]] = defaultdict(list)
    for level, code in rows:
        out[level].append(code)
    out["grid"] = list(busy) or out["grid"]  # grids with cases: an empty grid's list is trivially fast
    return out


def _categories(engine: Engine) -> tuple[list[str], list[str]]:
    with engine.connect() as conn:
        entries = planner.categories(conn)
        used = {f"{k}/{c}" for k, c in conn.execute(text(
            "SELECT kind, category_code FROM rollup.case_day_category GROUP BY 1, 2"))}
    return [e.key for e in entries if e.is_major], [e.key for e in entries if not e.is_major and e.key in used]


def random_search(rng: random.Random, span: tuple[date, date], units: dict[str, list[str]],
                  majors: list[str], minors: list[str]) -> tuple[str, FactQuery]:
    """One random view as the URL writes it, and its FactQuery."""
    days = min(rng.choice(PERIOD_DAYS), (span[1] - span[0]).days + 1)
    start = span[0] + timedelta(days=rng.randrange(0, (span[1] - span[0]).days - days + 2))
    level = rng.choices(list(LEVEL_WEIGHTS), weights=list(LEVEL_WEIGHTS.values()))[0]
    area = None if level == "city" else rng.choice(units[level])
    params: dict[str, str] = {"from": start.isoformat(), "to": (start + timedelta(days=days - 1)).isoformat()}
    if area:
        params["area"] = area
    picks = {"kind": (0.15, list(CASE_KINDS), 1), "major": (0.15, majors, 2), "cat": (0.1, minors, 3),
             "channel": (0.3, list(SOURCE_CHANNELS), 2), "status": (0.15, list(CASE_STATUSES), 2),
             "level": (0.15, list(RESOLUTION_LEVELS), 2)}
    for key, (chance, values, most) in picks.items():
        if values and rng.random() < chance:
            params[key] = ",".join(rng.sample(values, rng.randint(1, min(most, len(values)))))
    if rng.random() < 0.2:
        params["lang"] = "en"
    search = "?" + "&".join(f"{k}={v}" for k, v in params.items())
    from dashboard import filters

    return search, filters.from_search(search).query()


def _figure_sizes(value: Any) -> list[int]:
    """JSON sizes of every figure (a dict with ``data`` and ``layout``) inside a callback's return value."""
    sizes: list[int] = []
    if isinstance(value, dict) and "data" in value and "layout" in value:
        sizes.append(len(json.dumps(value, cls=PlotlyJSONEncoder)))
    elif isinstance(value, list | tuple):
        for item in value:
            sizes += _figure_sizes(item)
    return sizes


class Replay:
    """Times callbacks by name and keeps the largest figure seen."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = defaultdict(list)
        self.largest_figure = 0
        self.errors: list[str] = []

    def call(self, name: str, func: Callable[..., Any], *args: Any) -> Any:
        started = time.perf_counter()
        result = func(*args)
        self.times[name].append((time.perf_counter() - started) * 1000)
        sizes = _figure_sizes(result)
        if sizes:
            self.largest_figure = max(self.largest_figure, *sizes)
            if max(sizes) >= FIGURE_LIMIT:
                self.errors.append(f"{name}: a figure of {max(sizes):,} bytes")
        return result


def grid_stats_page(replay: Replay, rng: random.Random, search: str, query: FactQuery) -> None:
    """The grid statistics page: the view, its drill-down, breadcrumb, case list and timeline."""
    import dash

    from dashboard import filters
    from dashboard.pages import grid_stats

    measure = rng.choice(grid_stats.view.MEASURES)
    out = replay.call("grids.update_view", grid_stats.update_view, search, measure)
    replay.call("filters.update_breadcrumb", filters.update_breadcrumb, search)
    ranking = out[5]
    if ranking is not dash.no_update and ranking:
        code = rng.choice(ranking)["code"]
        replay.call("grids.drill_from_map", grid_stats.drill_from_map,
                    {"points": [{"location": code}]})
    if query.area_level == "grid":
        rows, pages, _total = replay.call("grids.update_cases", grid_stats.update_cases, search,
                                          rng.randrange(0, 3))
        if rows:
            replay.call("grids.show_timeline", grid_stats.show_timeline,
                        {"row": 0, "column": 0}, rows, search)


@contextmanager
def triggered_by(prop_id: str, value: Any) -> Iterator[None]:
    """Run a callback as Dash would after ``prop_id`` changed (callbacks that read ``dash.ctx``)."""
    from dash._callback_context import context_value
    from dash._utils import AttributeDict

    token = context_value.set(AttributeDict(triggered_inputs=[{"prop_id": prop_id, "value": value}]))
    try:
        yield
    finally:
        context_value.reset(token)


def heatmap_page(replay: Replay, rng: random.Random, search: str, query: FactQuery) -> None:
    """The heatmap page (dashboard/pages/heatmap.py): the map and its side views for the URL."""
    from dashboard import filters
    from dashboard.pages import heatmap

    with triggered_by(f"{filters.URL_ID}.search", search):
        replay.call("heatmap.update_map", heatmap.update_map, search, None, rng.choice(["hexagons", "density"]))
    replay.call("heatmap.update_side", heatmap.update_side, search)


def coverage_page(replay: Replay, rng: random.Random, search: str, query: FactQuery) -> None:
    """The camera coverage page (dashboard/pages/coverage.py): map, tables and proposed sites."""
    from dashboard import filters
    from dashboard.pages import coverage

    with triggered_by(f"{filters.URL_ID}.search", search):
        replay.call("coverage.update_map", coverage.update_map, search, None)
    replay.call("coverage.update_sites", coverage.update_sites, search)


def _pages() -> dict[str, Callable[[Replay, random.Random, str, FactQuery], None]]:
    """Pages replayed: every planner page the app registered (the heatmap and coverage pages when present)."""
    import dash

    modules = {page["module"] for page in dash.page_registry.values()}
    pages: dict[str, Callable[[Replay, random.Random, str, FactQuery], None]] = {"grids": grid_stats_page}
    if "dashboard.pages.heatmap" in modules:
        pages["heatmap"] = heatmap_page
    if "dashboard.pages.coverage" in modules:
        pages["coverage"] = coverage_page
    return pages


def _naive_where(query: FactQuery) -> tuple[str, dict[str, Any]]:
    return planner.case_filter_sql(query)


_MEASURES = ",\n       ".join(f"{expr} AS {name}" for name, expr in rollups.MEASURES.items())
_CHILD_COLUMN = {None: "c.district_code", "district": "c.street_code", "street": "c.community_code",
                 "community": "c.grid_code", "grid": "c.grid_code"}


def naive_view(engine: Engine, query: FactQuery) -> None:
    """The grid statistics view's three questions by GROUP BY on raw cases with the same filters."""
    where, params = _naive_where(query)
    parent = query.area_code[:12] if query.area_level == "grid" and query.area_code else query.area_code
    parent_query = FactQuery(query.date_from, query.date_to, parent, query.kinds, query.majors, query.categories,
                             query.channels, query.statuses, query.levels)
    parent_where, parent_params = _naive_where(parent_query)
    with engine.connect() as conn:
        conn.execute(text(f"SELECT {_MEASURES} FROM core.case_record c WHERE {where}"), params).all()
        conn.execute(text(f"SELECT {_CHILD_COLUMN[query.area_level]} AS key, {_MEASURES}"
                          f" FROM core.case_record c WHERE {parent_where} GROUP BY 1"), parent_params).all()
        conn.execute(text(f"SELECT c.kind, c.category_code, {_MEASURES} FROM core.case_record c WHERE {where}"
                          " GROUP BY 1, 2"), params).all()


def _summary(values: list[float]) -> tuple[float, float, float]:
    array = np.asarray(values)
    return float(np.percentile(array, 50)), float(np.percentile(array, 95)), float(array.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=240, help="random combinations replayed (>= 200)")
    parser.add_argument("--naive", type=int, default=60, help="of which also answered by naive SQL")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    settings = get_settings()
    from dashboard.app_factory import create_internal_app

    create_internal_app(settings)  # registers every page and its callbacks, as the server does
    engine = reader_engine()
    with engine.connect() as conn:
        span = rollups.data_span(conn)
        cases = conn.execute(text("SELECT sum(reported) FROM rollup.case_day_unit WHERE level = 'district'")).scalar()
        grids = conn.execute(text("SELECT count(*) FROM core.admin_unit WHERE level = 'grid'")).scalar()
    if span is None:
        raise SystemExit("no cases loaded: run `citygrid demo` first")
    print(f"store {engine.url.database}: {int(cases or 0):,} cases {span[0]} .. {span[1]}, {grids:,} grids", flush=True)
    started = time.perf_counter()
    facts_for(engine).counts(FactQuery(span[0], span[1]))
    print(f"facts warm-up (month files built or found, once per data version): {time.perf_counter() - started:.1f} s",
          flush=True)

    rng = random.Random(args.seed)
    units = _units(engine)
    majors, minors = _categories(engine)
    replay = Replay()
    naive: list[float] = []
    combos = [random_search(rng, span, units, majors, minors) for _ in range(args.requests)]
    pages = _pages()
    print(f"pages replayed: {', '.join(pages)}", flush=True)
    for search, query in combos[:3]:  # first use of each code path (imports, caches of geometry), untimed
        for page in pages.values():
            page(Replay(), random.Random(0), search, query)
    for i, (search, query) in enumerate(combos):
        for page in pages.values():
            page(replay, rng, search, query)
        if i < args.naive:
            began = time.perf_counter()
            naive_view(engine, query)
            naive.append((time.perf_counter() - began) * 1000)
    print(f"{'callback':32s} {'calls':>6s} {'p50 ms':>8s} {'p95 ms':>8s} {'max ms':>8s}")
    worst = 0.0
    for name, values in sorted(replay.times.items()):
        p50, p95, most = _summary(values)
        worst = max(worst, p95)
        print(f"{name:32s} {len(values):6d} {p50:8.1f} {p95:8.1f} {most:8.1f}")
    n50, n95, nmax = _summary(naive)
    view50, view95, _ = _summary(replay.times["grids.update_view"][:args.naive])
    print(f"{'naive SQL (same view questions)':32s} {len(naive):6d} {n50:8.1f} {n95:8.1f} {nmax:8.1f}")
    print(f"grids.update_view on the same {len(naive)} requests: p50 {view50:.1f} ms, p95 {view95:.1f} ms")
    print(f"largest figure: {replay.largest_figure:,} bytes (limit {FIGURE_LIMIT:,})")
    for error in replay.errors:
        print("ERROR", error)
    print(f"callbacks_p95_ms={worst:.1f} naive_p95_ms={n95:.1f} ratio={n95 / worst:.1f}")


if __name__ == "__main__":
    main()
