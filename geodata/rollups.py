"""The dashboard rollups (schema ``rollup``, migration 0003): how they are refreshed and how they are read.

Why: at city scale (10 million cases a year) a page or the big screen must not scan raw cases.  The ETL
calls :func:`refresh_case_rollups` for the report days a load touched, inside the load's transaction, so the
rollups always match the cases they come from; :func:`refresh_asset_rollups` after component, camera or
admin loads.  Readers ask :func:`unit_counts` & co. and get the same :class:`geodata.kpi.CaseCounts` the raw
reference (:func:`geodata.kpi.count_cases`) gives — the tests hold them equal.

Counts that depend on the moment of reading (due to close, overdue) are not stored: they come at read time
from ``rollup.open_case``, the cases neither closed nor voided, which is small.  Because a closed case is
never voided (a CHECK on cases), 应结案 = closed + open cases past their close deadline.

The public map's rollups (``rollup.public_day_*``, migration 0006) are rebuilt here too, by the database
function ``rollup.refresh_public_days`` that the migration defines (it also fills them, and a trigger runs
it when a category's ``sensitive`` flag flips): one definition of "what the public may count".
"""

# SQL here is composed only from this module's constants (measure and column names, levels); every value
# from a caller is a bound parameter, and area codes are checked by ``unit_level`` first.
# ruff: noqa: S608

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import fields
from datetime import date, datetime, timedelta
from typing import Final

from sqlalchemy import Connection, text

from geodata.kpi import TIMEZONE, CaseCounts, KpiError, period_bounds

#: Stored measures: name -> aggregate over core.case_record (alias c).  The same names are columns of
#: rollup.case_day_unit and rollup.case_month_grid (migration 0003).
MEASURES: Final[dict[str, str]] = {
    "reported": "count(*)",
    "voided": "count(*) FILTER (WHERE c.voided_at IS NOT NULL)",
    "registered": "count(*) FILTER (WHERE c.registered_at IS NOT NULL)",
    "registered_voided": "count(*) FILTER (WHERE c.registered_at IS NOT NULL AND c.voided_at IS NOT NULL)",
    "self_handled": "count(*) FILTER (WHERE c.self_handled)",
    "dispatched": "count(*) FILTER (WHERE c.dispatched_at IS NOT NULL)",
    "handled": "count(*) FILTER (WHERE c.dispatched_at IS NOT NULL AND c.handled_at IS NOT NULL)",
    "handled_on_time": "count(*) FILTER (WHERE c.dispatched_at IS NOT NULL AND c.handled_on_time)",
    "extended": "count(*) FILTER (WHERE c.extended)",
    "closed": "count(*) FILTER (WHERE c.closed_at IS NOT NULL)",
    "closed_not_extended": "count(*) FILTER (WHERE c.closed_at IS NOT NULL AND NOT c.extended)",
    "closed_on_time": "count(*) FILTER (WHERE c.closed_on_time)",
    "closed_on_time_not_extended": "count(*) FILTER (WHERE c.closed_on_time AND NOT c.extended)",
    "reworked": "count(*) FILTER (WHERE c.rework_count > 0)",
    "resolved_grid": "count(*) FILTER (WHERE c.closed_at IS NOT NULL AND c.resolution_level = 'grid')",
    "resolved_community": "count(*) FILTER (WHERE c.closed_at IS NOT NULL AND c.resolution_level = 'community')",
    "resolved_street": "count(*) FILTER (WHERE c.closed_at IS NOT NULL AND c.resolution_level = 'street')",
    "resolved_district": "count(*) FILTER (WHERE c.closed_at IS NOT NULL AND c.resolution_level = 'district')",
    "resolved_city": "count(*) FILTER (WHERE c.closed_at IS NOT NULL AND c.resolution_level = 'city')",
    "satisfaction_sum": "coalesce(sum(c.satisfaction), 0)",
    "satisfaction_count": "count(c.satisfaction)",
    "handle_hours_sum": "coalesce(sum(extract(epoch FROM c.handled_at - c.reported_at) / 3600.0), 0)",
    "handle_hours_count": "count(c.handled_at)",
    "from_patrol": "count(*) FILTER (WHERE c.source_channel = 'patrol')",
    "from_citizen": "count(*) FILTER (WHERE c.source_channel = 'citizen')",
    "from_partner": "count(*) FILTER (WHERE c.source_channel = 'partner')",
    "from_hotline": "count(*) FILTER (WHERE c.source_channel = 'hotline')",
    "from_ai_camera": "count(*) FILTER (WHERE c.source_channel = 'ai_camera')",
    "kind_component": "count(*) FILTER (WHERE c.kind = 'component')",
    "kind_event": "count(*) FILTER (WHERE c.kind = 'event')",
}
#: The public rollups' measures (rollup.public_day_*, migration 0006): what layers/public_cases.py shows of
#: the cases open_data.case_public would list (category not sensitive, not voided).
PUBLIC_MEASURES: Final = ("cases", "solved", "solved_on_time", "solved_in_grid", "solved_with_level",
                          "handle_hours_sum", "handle_hours_count")
CHANNEL_MEASURES: Final = {"patrol": "from_patrol", "citizen": "from_citizen", "partner": "from_partner",
                           "hotline": "from_hotline", "ai_camera": "from_ai_camera"}
UNIT_LEVELS: Final = {6: "district", 9: "street", 12: "community"}
CHILD_LEVEL: Final = {None: "district", "district": "street", "street": "community", "community": "grid"}
_DAY: Final = "(c.reported_at AT TIME ZONE 'Asia/Shanghai')::date"
_MEASURE_LIST: Final = ", ".join(MEASURES)
_MEASURE_SQL: Final = ",\n       ".join(f"{expr} AS {name}" for name, expr in MEASURES.items())
#: refresh_log rows named by this prefix and a month (YYYY-MM) stamp when that month's cases last changed.
MONTH_STAMP_PREFIX: Final = "case_month:"
RECURRING_WINDOW_DAYS: Final = 90
RECURRING_MIN_CASES: Final = 3


def _instants(first_day: date, last_day: date) -> dict[str, datetime]:
    start, end = period_bounds(first_day, last_day)
    return {"start": start, "end": end, "first_day": first_day, "last_day": last_day,
            "first_month": first_day.replace(day=1),
            "month_end": (last_day.replace(day=1) + timedelta(days=32)).replace(day=1)}


def refresh_case_rollups(conn: Connection, first_day: date, last_day: date, run_id: int | None = None) -> float:
    """Rebuild every case rollup for report days [first_day, last_day] (whole months for the grid rollup).

    Runs in the caller's transaction (the load's), so readers see cases and rollups change together.
    Returns the seconds it took (the load prints it).
    """
    started = time.perf_counter()
    p = _instants(first_day, last_day)
    month_start, month_stop = period_bounds(p["first_month"], p["month_end"] - timedelta(days=1))
    statements = [
        "DELETE FROM rollup.case_day_unit WHERE day BETWEEN :first_day AND :last_day",
        *(f"""INSERT INTO rollup.case_day_unit (level, unit_code, day, {_MEASURE_LIST})
              SELECT '{level}', c.{column}, {_DAY}, {_MEASURE_SQL}
                FROM core.case_record c
               WHERE c.reported_at >= :start AND c.reported_at < :end AND c.{column} IS NOT NULL
               GROUP BY c.{column}, {_DAY}"""
          for level, column in (("district", "district_code"), ("street", "street_code"),
                                ("community", "community_code"))),
        "DELETE FROM rollup.case_month_grid WHERE month >= :first_month AND month < :month_end",
        f"""INSERT INTO rollup.case_month_grid (grid_code, month, {_MEASURE_LIST})
              SELECT c.grid_code, date_trunc('month', {_DAY})::date, {_MEASURE_SQL}
                FROM core.case_record c
               WHERE c.reported_at >= :month_start AND c.reported_at < :month_stop AND c.grid_code IS NOT NULL
               GROUP BY 1, 2""",
        "DELETE FROM rollup.case_day_category WHERE day BETWEEN :first_day AND :last_day",
        f"""INSERT INTO rollup.case_day_category
              SELECT c.district_code, {_DAY}, c.kind, c.category_code, count(*),
                     count(*) FILTER (WHERE c.handled_at IS NOT NULL),
                     count(*) FILTER (WHERE c.closed_at IS NOT NULL),
                     count(*) FILTER (WHERE c.closed_on_time),
                     {MEASURES['handle_hours_sum']}, {MEASURES['handle_hours_count']}
                FROM core.case_record c
               WHERE c.reported_at >= :start AND c.reported_at < :end
               GROUP BY 1, 2, 3, 4""",
        "DELETE FROM rollup.case_day_h3 WHERE day BETWEEN :first_day AND :last_day",
        f"""INSERT INTO rollup.case_day_h3
              SELECT c.district_code, {_DAY}, c.h3_r8, count(*), count(*) FILTER (WHERE c.closed_at IS NOT NULL)
                FROM core.case_record c
               WHERE c.reported_at >= :start AND c.reported_at < :end AND c.h3_r8 IS NOT NULL
               GROUP BY 1, 2, 3""",
        # The public map's rollups (migration 0006): one scan, three groupings, the public view's policy.
        "SELECT rollup.refresh_public_days(:first_day, :last_day)",
        "DELETE FROM rollup.open_case WHERE day BETWEEN :first_day AND :last_day",
        f"""INSERT INTO rollup.open_case
              SELECT c.case_number, c.reported_at, {_DAY}, c.district_code, c.street_code, c.community_code,
                     c.grid_code, c.kind, c.category_code, c.source_channel, c.status,
                     c.dispatched_at IS NOT NULL, c.handled_at IS NOT NULL, c.extended,
                     c.handle_deadline, c.close_deadline
                FROM core.case_record c
               WHERE c.reported_at >= :start AND c.reported_at < :end
                 AND c.closed_at IS NULL AND c.voided_at IS NULL""",
    ]
    params = {**p, "month_start": month_start, "month_stop": month_stop}
    for statement in statements:
        conn.execute(text(statement), params)
    finish_case_refresh(conn, first_day, last_day, run_id, time.perf_counter() - started)
    return time.perf_counter() - started


def refresh_public_rollups(conn: Connection, first_day: date | None, last_day: date | None) -> None:
    """Rebuild the public rollups of report days [first_day, last_day] (None: unbounded) from raw cases.

    Part of :func:`refresh_case_rollups`; called alone by the ETL when it cannot trust its own public
    delta (etl/rollup_delta.py: the sensitive categories it assumed are not the store's).
    """
    conn.execute(text("SELECT rollup.refresh_public_days(:first_day, :last_day)"),
                 {"first_day": first_day, "last_day": last_day})


def newest_day(conn: Connection) -> date | None:
    """The store's newest report day: every stored case counts in its district's row of its day."""
    return conn.execute(text("SELECT max(day) FROM rollup.case_day_unit WHERE level = 'district'")).scalar()


def finish_case_refresh(conn: Connection, first_day: date, last_day: date, run_id: int | None,
                        seconds: float, store_recurring: Callable[[Connection], None] | None = None) -> None:
    """After the case rollups of [first_day, last_day] changed (rebuilt here or added to by the ETL's
    deltas): recurring places again if the change reaches their window, and the refresh stamps.

    ``store_recurring``: stores the places the caller counted itself (the ETL does when the window holds
    only its own new cases: see etl.rollup_delta), instead of counting them here.
    """
    newest = newest_day(conn)
    if newest is None or last_day >= newest - timedelta(days=RECURRING_WINDOW_DAYS - 1):
        (store_recurring or _refresh_recurring)(conn)
    _log(conn, "cases", run_id, seconds)
    month = first_day.replace(day=1)
    while month <= last_day:  # the facts engine (geodata/facts.py) re-reads only these months
        _log(conn, f"{MONTH_STAMP_PREFIX}{month:%Y-%m}", run_id, seconds)
        month = (month + timedelta(days=32)).replace(day=1)


def _refresh_recurring(conn: Connection) -> None:
    """Recurring places: a minor category at one grid at least RECURRING_MIN_CASES times in the last
    RECURRING_WINDOW_DAYS days of data ("problems that keep coming back", for the pages and the big screen)."""
    last = newest_day(conn)
    conn.execute(text("DELETE FROM rollup.recurring_place"))
    if last is None:
        return
    start, end = period_bounds(last - timedelta(days=RECURRING_WINDOW_DAYS - 1), last)
    conn.execute(text(f"""
        INSERT INTO rollup.recurring_place
        SELECT c.grid_code, c.kind, c.category_code, min(c.district_code), min(c.street_code),
               min(c.community_code), count(*),
               count(*) FILTER (WHERE c.closed_at IS NULL AND c.voided_at IS NULL),
               min({_DAY}), max({_DAY})
          FROM core.case_record c
         WHERE c.reported_at >= :start AND c.reported_at < :end AND c.grid_code IS NOT NULL
           AND c.voided_at IS NULL
         GROUP BY c.grid_code, c.kind, c.category_code
        HAVING count(*) >= :min_cases"""), {"start": start, "end": end, "min_cases": RECURRING_MIN_CASES})


def refresh_asset_rollups(conn: Connection, run_id: int | None = None, blind_share: float = 0.2) -> float:
    """Rebuild ``rollup.unit_asset``: components, cameras and camera coverage per admin unit.

    A grid counts as blind when cameras see less than ``blind_share`` of it.
    """
    started = time.perf_counter()
    conn.execute(text("DELETE FROM rollup.unit_asset"))
    conn.execute(text("""
        WITH grid AS (
            SELECT g.code, g.district_code, g.street_code, g.community_code, g.area_m2,
                   coalesce(v.covered_m2, 0) AS covered_m2,
                   (coalesce(v.covered_share, 0) < :blind_share)::int AS blind
              FROM core.admin_unit g LEFT JOIN core.grid_coverage v ON v.grid_code = g.code
             WHERE g.level = 'grid'),
        comp AS (SELECT grid_code, count(*) AS n FROM core.component WHERE grid_code IS NOT NULL GROUP BY 1),
        cam AS (SELECT grid_code, count(*) AS n, count(*) FILTER (WHERE online) AS online
                  FROM core.camera WHERE grid_code IS NOT NULL GROUP BY 1),
        per_grid AS (
            SELECT grid.*, coalesce(comp.n, 0) AS components, coalesce(cam.n, 0) AS cameras,
                   coalesce(cam.online, 0) AS cameras_online
              FROM grid LEFT JOIN comp ON comp.grid_code = grid.code LEFT JOIN cam ON cam.grid_code = grid.code)
        INSERT INTO rollup.unit_asset
        SELECT level, unit_code, sum(components), sum(cameras), sum(cameras_online), count(*), sum(area_m2),
               sum(covered_m2), sum(blind)
          FROM per_grid
          CROSS JOIN LATERAL (VALUES ('grid', code), ('community', community_code), ('street', street_code),
                                     ('district', district_code)) AS u(level, unit_code)
         WHERE unit_code IS NOT NULL
         GROUP BY level, unit_code"""), {"blind_share": blind_share})
    seconds = time.perf_counter() - started
    _log(conn, "assets", run_id, seconds)
    return seconds


def refresh_all(conn: Connection) -> float:
    """Rebuild every rollup from scratch (after a migration, or to repair); returns seconds."""
    span = conn.execute(text(f"SELECT min({_DAY}), max({_DAY}) FROM core.case_record c")).one()
    seconds = refresh_asset_rollups(conn)
    if span[0] is not None:
        seconds += refresh_case_rollups(conn, span[0], span[1])
    return seconds


def _log(conn: Connection, name: str, run_id: int | None, seconds: float) -> None:
    conn.execute(text("""
        INSERT INTO rollup.refresh_log (name, refreshed_at, run_id, seconds) VALUES (:name, now(), :run_id, :s)
        ON CONFLICT (name) DO UPDATE SET refreshed_at = excluded.refreshed_at, run_id = excluded.run_id,
                                         seconds = excluded.seconds"""),
                 {"name": name, "run_id": run_id, "s": seconds})


# --- reading -------------------------------------------------------------------------------------------

def unit_level(area_code: str | None) -> str | None:
    """The rollup level of an admin code (None: the whole city); grids are read by ``grid_counts``."""
    if area_code is None:
        return None
    if not area_code.isdigit() or len(area_code) not in UNIT_LEVELS:
        raise KpiError(f"rollups hold districts (6 digits), streets (9) and communities (12), not {area_code!r}")
    return UNIT_LEVELS[len(area_code)]


def _as_of_sql(where: str) -> str:
    return f"""
        SELECT {{key}} AS key,
               count(*) FILTER (WHERE close_deadline <= :as_of) AS open_past_close,
               count(*) FILTER (WHERE close_deadline <= :as_of AND NOT extended) AS open_past_close_not_extended,
               count(*) FILTER (WHERE dispatched AND NOT handled AND handle_deadline < :as_of) AS overdue_open
          FROM rollup.open_case
         WHERE day BETWEEN :first_day AND :last_day {where}
         GROUP BY 1"""


def _counts_from(row: dict[str, object], open_row: dict[str, object] | None) -> CaseCounts:
    open_row = open_row or {}
    values: dict[str, float | int] = {}
    for f in fields(CaseCounts):
        if f.name in row:
            raw = row[f.name] or 0
            values[f.name] = float(raw) if f.name == "handle_hours_sum" else int(raw)  # type: ignore[arg-type]
    values["valid_reported"] = int(values["reported"]) - int(values["voided"])
    values["due_close"] = int(row["closed"] or 0) + int(open_row.get("open_past_close", 0) or 0)  # type: ignore[arg-type]
    values["due_close_not_extended"] = (int(row["closed_not_extended"] or 0)  # type: ignore[arg-type]
                                        + int(open_row.get("open_past_close_not_extended", 0) or 0))  # type: ignore[arg-type]
    values["overdue_open"] = int(open_row.get("overdue_open", 0) or 0)  # type: ignore[arg-type]
    return CaseCounts(**values)  # type: ignore[arg-type]


_SUMS: Final = ", ".join(f"sum({name}) AS {name}" for name in MEASURES)


def _period(date_from: date, date_to: date, as_of: datetime | None) -> dict[str, object]:
    period_bounds(date_from, date_to)  # validates the period
    return {"first_day": date_from, "last_day": date_to, "as_of": as_of or datetime.now(TIMEZONE)}


def unit_counts(conn: Connection, date_from: date, date_to: date, area_code: str | None = None,
                as_of: datetime | None = None) -> CaseCounts:
    """The counts of the cohort reported in [date_from, date_to] in a district, street or community (or the
    whole city), from the rollups; equal to ``kpi.count_cases`` on raw cases."""
    level = unit_level(area_code) or "district"
    params = {**_period(date_from, date_to, as_of), "level": level, "unit": area_code}
    unit_clause = "AND unit_code = :unit" if area_code else ""
    row = conn.execute(text(f"""SELECT {_SUMS} FROM rollup.case_day_unit
                                 WHERE level = :level AND day BETWEEN :first_day AND :last_day {unit_clause}"""),
                       params).mappings().one()
    open_clause = f"AND {level}_code = :unit" if area_code else ""
    open_row = conn.execute(text(_as_of_sql(open_clause).format(key="1")), params).mappings().first()
    return _counts_from(dict(row), dict(open_row) if open_row else None)


def child_counts(conn: Connection, date_from: date, date_to: date, parent_code: str | None = None,
                 as_of: datetime | None = None) -> dict[str, CaseCounts]:
    """Counts per child unit of ``parent_code`` (districts of the city, streets of a district, communities
    of a street, grids of a community), for sibling rankings and choropleths.

    Grids come from the monthly grid rollup, so for grids the period is widened to whole months; callers
    that need exact days for one community's grids use the facts engine instead.
    """
    parent_level = unit_level(parent_code)
    child = CHILD_LEVEL[parent_level]
    params = {**_period(date_from, date_to, as_of), "prefix": f"{parent_code or ''}%", "level": child}
    if child == "grid":
        params.update(first_month=date_from.replace(day=1), last_month=date_to.replace(day=1))
        rows = conn.execute(text(f"""SELECT grid_code AS key, {_SUMS} FROM rollup.case_month_grid
                                      WHERE grid_code LIKE :prefix AND month BETWEEN :first_month AND :last_month
                                      GROUP BY grid_code"""), params).mappings().all()
        params.update(first_day=date_from.replace(day=1),
                      last_day=(date_to.replace(day=1) + timedelta(days=32)).replace(day=1) - timedelta(days=1))
    else:
        rows = conn.execute(text(f"""SELECT unit_code AS key, {_SUMS} FROM rollup.case_day_unit
                                      WHERE level = :level AND unit_code LIKE :prefix
                                        AND day BETWEEN :first_day AND :last_day
                                      GROUP BY unit_code"""), params).mappings().all()
    column = f"{child}_code"
    open_rows = conn.execute(text(_as_of_sql(f"AND {column} LIKE :prefix").format(key=column)),
                             params).mappings().all()
    by_key = {r["key"]: dict(r) for r in open_rows}
    return {r["key"]: _counts_from(dict(r), by_key.get(r["key"])) for r in rows}


def daily_series(conn: Connection, date_from: date, date_to: date, area_code: str | None = None,
                 measures: tuple[str, ...] = ("reported", "closed")) -> list[dict[str, object]]:
    """Per report day, the chosen stored measures (a trend line); days without cases are absent."""
    unknown = [m for m in measures if m not in MEASURES]
    if unknown:
        raise KpiError(f"unknown measure(s): {', '.join(unknown)}")
    level = unit_level(area_code) or "district"
    params = {**_period(date_from, date_to, None), "level": level, "unit": area_code}
    unit_clause = "AND unit_code = :unit" if area_code else ""
    sums = ", ".join(f"sum({m}) AS {m}" for m in measures)
    rows = conn.execute(text(f"""SELECT day, {sums} FROM rollup.case_day_unit
                                  WHERE level = :level AND day BETWEEN :first_day AND :last_day {unit_clause}
                                  GROUP BY day ORDER BY day"""), params).mappings().all()
    return [dict(r) for r in rows]


def data_span(conn: Connection) -> tuple[date, date] | None:
    """First and last report day held in the rollups (None when no case is loaded)."""
    row = conn.execute(text("SELECT min(day), max(day) FROM rollup.case_day_unit WHERE level = 'district'")).one()
    return None if row[0] is None else (row[0], row[1])
