"""What the planners' pages read besides the facts engine: units and their ancestry, the category dictionary,
assets per unit, one place's cases as a paged list, and a case's stage history.

Why here: pages call functions, never SQL (docs/style).  Everything a caller passes is either checked first
(area codes by :func:`check_area_code`) or bound as a parameter; column names come from this module's
constants only.  The paged case list is the one place planners read raw cases — one grid (or community) at a
time, through the ``(grid_code, reported_at)`` index — as the design allows.
"""

# SQL here is composed only from this module's constants; values are bound parameters.
# ruff: noqa: S608

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final

import pandas as pd
from sqlalchemy import Connection, text

from geodata.codes import ADMIN_CODE_LENGTHS, code_range
from geodata.facts import FactQuery
from geodata.kpi import TIMEZONE, KpiError, period_bounds

#: Code length -> admin level; grid codes are 14-16 digits (serial width is configuration).
LEVEL_OF_LENGTH: Final = {length: level for level, length in ADMIN_CODE_LENGTHS.items()}
PREFIX_LENGTHS: Final = (6, 9, 12)
CASE_PAGE_COLUMNS: Final = ("case_number", "reported_at", "kind", "category_code", "source_channel", "status",
                            "resolution_level", "handle_deadline", "handled_at", "closed_at", "handle_hours")
#: The largest page of cases a list may ask for (a bound on what one request reads).
MAX_PAGE_SIZE: Final = 200


class PlannerError(KpiError):
    """A unit, page or case that cannot be read (named in the message)."""


def level_of(code: str | None) -> str:
    """The admin level of ``code`` (``city`` for None)."""
    if code is None:
        return "city"
    return LEVEL_OF_LENGTH.get(len(code), "grid")


def check_area_code(code: Any) -> str | None:
    """``code`` when it has the shape of an admin code (6, 9, 12 or 14-16 digits), None for ""/None."""
    if code in (None, ""):
        return None
    if not isinstance(code, str) or not code.isdigit() or not (len(code) in PREFIX_LENGTHS or 14 <= len(code) <= 16):
        raise PlannerError(f"an area is a district (6 digits), street (9), community (12) or grid (14-16), "
                           f"not {str(code)[:24]!r}")
    return code


def ancestry(code: str | None) -> list[str]:
    """The codes from the district down to ``code`` itself (empty for the whole city)."""
    if code is None:
        return []
    return [code[:n] for n in PREFIX_LENGTHS if n < len(code)] + [code]


def data_version(conn: Connection) -> int:
    """The store's data version (bumped by each load): the key of every cached geometry and answer."""
    return int(conn.execute(text("SELECT version FROM core.data_version")).scalar_one())


def unit_names(conn: Connection, codes: list[str]) -> dict[str, str]:
    """Name of each admin unit in ``codes`` that exists."""
    if not codes:
        return {}
    rows = conn.execute(text("SELECT code, name FROM core.admin_unit WHERE code = ANY(:codes)"),
                        {"codes": list(codes)})
    return {code: name for code, name in rows}


def children(conn: Connection, parent: str | None) -> list[tuple[str, str]]:
    """Code and name of each child of ``parent`` (the districts for the whole city), by code."""
    if parent is None:
        rows = conn.execute(text("SELECT code, name FROM core.admin_unit WHERE level = 'district' ORDER BY code"))
    else:
        rows = conn.execute(text("SELECT code, name FROM core.admin_unit WHERE parent_code = :p ORDER BY code"),
                            {"p": parent})
    return [(code, name) for code, name in rows]


@dataclass(frozen=True)
class Category:
    """One entry of the category dictionary: ``key`` is ``kind/code`` as the facts engine names it."""

    kind: str
    code: str
    name_zh: str
    name_en: str

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.code}"

    @property
    def is_major(self) -> bool:
        return len(self.code) == 2

    def name(self, lang: str) -> str:
        return self.name_en if lang == "en" else self.name_zh


def categories(conn: Connection) -> list[Category]:
    """The loaded category dictionary (majors and minors of both kinds), by kind and code."""
    rows = conn.execute(text("SELECT kind, code, name_zh, name_en FROM core.category ORDER BY kind, code"))
    return [Category(*row) for row in rows]


@dataclass(frozen=True)
class UnitAssets:
    """Components, cameras and camera coverage of one unit (``rollup.unit_asset``)."""

    components: int = 0
    cameras: int = 0
    cameras_online: int = 0
    grids: int = 0
    area_m2: float = 0.0
    covered_m2: float = 0.0
    blind_grids: int = 0

    @property
    def coverage(self) -> float | None:
        """Share of the unit's area that cameras see."""
        return self.covered_m2 / self.area_m2 if self.area_m2 else None


def unit_assets(conn: Connection, code: str | None) -> UnitAssets:
    """Assets of a unit, or of the whole city (the sum of its districts)."""
    if code is None:
        sql = "WHERE level = 'district'"
        params: dict[str, Any] = {}
    else:
        sql = "WHERE level = :level AND unit_code = :code"
        params = {"level": level_of(code), "code": code}
    row = conn.execute(text(f"""SELECT coalesce(sum(components), 0), coalesce(sum(cameras), 0),
                                       coalesce(sum(cameras_online), 0), coalesce(sum(grids), 0),
                                       coalesce(sum(area_m2), 0), coalesce(sum(covered_m2), 0),
                                       coalesce(sum(blind_grids), 0)
                                  FROM rollup.unit_asset {sql}"""), params).one()
    return UnitAssets(int(row[0]), int(row[1]), int(row[2]), int(row[3]), float(row[4]), float(row[5]),
                      int(row[6]))


def children_assets(conn: Connection, parent: str | None) -> dict[str, UnitAssets]:
    """Assets of each child of ``parent`` (districts for the city)."""
    child = {"city": "district", "district": "street", "street": "community", "community": "grid"}[level_of(parent)]
    rows = conn.execute(text("""SELECT unit_code, components, cameras, cameras_online, grids, area_m2, covered_m2,
                                       blind_grids
                                  FROM rollup.unit_asset
                                 WHERE level = :level AND unit_code LIKE :prefix"""),
                        {"level": child, "prefix": f"{parent or ''}%"}).all()
    return {r[0]: UnitAssets(int(r[1]), int(r[2]), int(r[3]), int(r[4]), float(r[5]), float(r[6]), int(r[7]))
            for r in rows}


def case_filter_sql(query: FactQuery) -> tuple[str, dict[str, Any]]:
    """WHERE clauses of raw cases for a validated FactQuery (values bound, columns from constants)."""
    start, end = period_bounds(query.date_from, query.date_to)
    clauses = ["c.reported_at >= :start", "c.reported_at < :end"]
    params: dict[str, Any] = {"start": start, "end": end}
    if query.area_level == "community" and query.area_code is not None:
        # Its gridded cases are one range of the grid index (grid codes start with their community's), the
        # rest are in the partial index of grid-less cases (migration 0009).
        clauses.append("c.community_code = :area AND ((c.grid_code >= :low AND c.grid_code < :high)"
                       " OR (c.grid_code IS NULL AND c.community_code = :area))")
        low, high = code_range(query.area_code)
        params.update(area=query.area_code, low=low, high=high)
    elif query.area_code is not None:
        column = {"district": "district_code", "street": "street_code", "grid": "grid_code"}[query.area_level or "grid"]
        clauses.append(f"c.{column} = :area")
        params["area"] = query.area_code
    if query.kinds:
        clauses.append("c.kind = ANY(:kinds)")
        params["kinds"] = list(query.kinds)
    if query.majors or query.categories:
        clauses.append("((c.kind || '/' || c.major_code) = ANY(:majors) OR (c.kind || '/' || c.category_code) = ANY(:cats))")
        params["majors"], params["cats"] = list(query.majors), list(query.categories)
    if query.channels:
        clauses.append("c.source_channel = ANY(:channels)")
        params["channels"] = list(query.channels)
    if query.statuses:
        clauses.append("c.status = ANY(:statuses)")
        params["statuses"] = list(query.statuses)
    if query.levels:
        clauses.append("c.closed_at IS NOT NULL AND c.resolution_level = ANY(:levels)")
        params["levels"] = list(query.levels)
    return " AND ".join(clauses), params


def case_page(conn: Connection, query: FactQuery, page: int, page_size: int) -> tuple[pd.DataFrame, int]:
    """One page of the cases of one grid or community (newest first) and how many there are in all.

    The area must be a community or a grid: a list is for one place, never the city.
    """
    if query.area_level not in ("community", "grid"):
        raise PlannerError("cases are listed for one community or grid; drill down first")
    if not isinstance(page, int) or isinstance(page, bool) or page < 0 or page > 100_000:
        raise PlannerError(f"page must be a whole number from 0, not {str(page)[:12]!r}")
    if not isinstance(page_size, int) or isinstance(page_size, bool) or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise PlannerError(f"page size must be 1-{MAX_PAGE_SIZE}, not {str(page_size)[:12]!r}")
    where, params = case_filter_sql(query)
    total = int(conn.execute(text(f"SELECT count(*) FROM core.case_record c WHERE {where}"), params).scalar_one())
    rows = conn.execute(text(f"""
        SELECT c.case_number, c.reported_at, c.kind, c.category_code, c.source_channel, c.status,
               c.resolution_level, c.handle_deadline, c.handled_at, c.closed_at,
               round((extract(epoch FROM c.handled_at - c.reported_at) / 3600.0)::numeric, 1) AS handle_hours
          FROM core.case_record c
         WHERE {where}
         ORDER BY c.reported_at DESC, c.case_number
         LIMIT :limit OFFSET :offset"""), {**params, "limit": page_size, "offset": page * page_size}).all()
    return pd.DataFrame(rows, columns=list(CASE_PAGE_COLUMNS)), total


@dataclass(frozen=True)
class StageEvent:
    """One step of a case's closed loop (``core.case_event``)."""

    stage: str
    occurred_at: datetime
    actor_unit: str | None
    note: str | None


_TIMELINE_SQL: Final = text("""
    WITH one AS (
        SELECT * FROM core.case_record
         WHERE case_number = :n AND reported_at >= :start AND reported_at < :end)
    SELECT stage, occurred_at, actor_unit, note FROM core.case_event
     WHERE case_number = :n AND case_reported_at >= :start AND case_reported_at < :end
    UNION
    SELECT s.stage, s.at, CASE WHEN s.stage IN ('handled', 'closed') THEN one.handling_unit END, NULL
      FROM one CROSS JOIN LATERAL (VALUES ('reported', one.reported_at), ('registered', one.registered_at),
                                          ('dispatched', one.dispatched_at), ('handled', one.handled_at),
                                          ('closed', one.closed_at), ('voided', one.voided_at),
                                          ('evaluated', one.evaluated_at)) AS s(stage, at)
     WHERE s.at IS NOT NULL
    ORDER BY 2, 1""")


def case_timeline(conn: Connection, case_number: Any, reported_on: Any) -> list[StageEvent]:
    """The stage history of one case, oldest first: its recorded events (``core.case_event``: returns,
    extensions, rework …) together with the stage times the case itself holds (loads that arrive with every
    timestamp at once record no separate event for each).  A stage at the same moment appears once.

    ``reported_on`` (the case's report day, ``YYYY-MM-DD``) picks the partition; both values are checked.
    """
    if not isinstance(case_number, str) or not case_number or len(case_number) > 40 or not all(
            ch.isalnum() and ch.isascii() or ch in "_-" for ch in case_number):
        raise PlannerError(f"not a case number: {str(case_number)[:40]!r}")
    try:
        day = date.fromisoformat(str(reported_on)[:10])
    except ValueError:
        raise PlannerError(f"not a report day: {str(reported_on)[:20]!r}") from None
    start, end = period_bounds(day, day)
    rows = conn.execute(_TIMELINE_SQL, {"n": case_number, "start": start, "end": end}).all()
    seen: set[tuple[str, datetime]] = set()
    out = []
    for stage, at, actor, note in rows:
        if (stage, at) in seen:  # the same step from both sources
            continue
        seen.add((stage, at))
        out.append(StageEvent(stage, at.astimezone(TIMEZONE), actor, note))
    return out
