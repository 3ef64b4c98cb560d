"""What the command centre's big screen reads: its period, and one snapshot of every panel, from rollups only.

Why a module of its own: the big screen must refresh in at most 300 ms of server time with ten million
cases loaded, so nothing here scans ``core.case_record``.  It reads :mod:`geodata.rollups` (``unit_counts``
for the headline figures, equal to ``citygrid kpi``; ``child_counts`` for street rankings; ``daily_series``
for channels and the trend) and the small rollup tables (``open_case``, ``recurring_place``,
``unit_asset``, ``refresh_log``) plus dictionary and admin-unit names by key.

The period (see :func:`choose_period`): a command centre watches *now*, so "today", "this month" and "this
year" are relative to today in Asia/Shanghai — unless the data ends before today (the demo city's year ends
2026-09-30), when they are anchored on the last day of data and the screen says so.
"""

# SQL here is composed only from constants of this module; every value from a caller is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Final

from sqlalchemy import Connection, text

from geodata import rollups
from geodata.codes import CASE_STATUSES, RESOLUTION_LEVELS, SOURCE_CHANNELS
from geodata.kpi import TIMEZONE, CaseCounts, KpiError, compute_rates, period_bounds

#: The longest period the screen accepts from a URL (a year and a day: "the year" of a leap year fits).
MAX_PERIOD_DAYS: Final = 366
#: Days of the trend line, and how many rows each list panel holds.
TREND_DAYS: Final = 30
TICKER_ROWS: Final = 8
#: Report days the ticker looks back over (open cases of the anchor day and the day before: a short sort).
TICKER_DAYS: Final = 2
RANKED_STREETS: Final = 8
RECURRING_ROWS: Final = 6
#: The "small matters stay in the grid" ladder shown on the screen (city departments are folded into district).
LADDER: Final[tuple[str, ...]] = ("grid", "community", "street", "district")


class BigScreenError(KpiError):
    """A period or area in the big screen's URL that it cannot show (named in the message)."""


@dataclass(frozen=True)
class ScreenPeriod:
    """The screen's periods: the headline period and the anchor day its today/month/year panels count from.

    ``anchored_to_data`` is True when the data's last day is before today, so "today" is that last day.
    """

    date_from: date
    date_to: date
    anchor: date
    anchored_to_data: bool
    custom: bool

    @property
    def month_from(self) -> date:
        return self.anchor.replace(day=1)

    @property
    def year_from(self) -> date:
        return self.anchor.replace(month=1, day=1)

    def key(self) -> str:
        """A short text that identifies the period in cache keys."""
        return f"{self.date_from}:{self.date_to}:{self.anchor}"


def _parse_day(value: str | None, name: str) -> date | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) != 10:
        raise BigScreenError(f"{name} must be a date YYYY-MM-DD, not {str(value)[:20]!r}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BigScreenError(f"{name} must be a date YYYY-MM-DD, not {value!r}") from None


def choose_period(span: tuple[date, date] | None, today: date, date_from: str | None = None,
                  date_to: str | None = None) -> ScreenPeriod:
    """The screen's period for the data ``span`` (first and last report day held), ``today`` and the URL's
    ``?from=&to=`` (both optional, ISO dates, validated).

    Default: this month to date, relative to the anchor day (today, or the data's last day when the data
    ends before today).  With ``to`` given the anchor is ``to``; with only ``from``, the period runs to the
    anchor.  Raises :class:`BigScreenError` for a malformed date, a reversed or over-long period.
    """
    anchored = span is not None and span[1] < today
    anchor = span[1] if span is not None and anchored else today
    first, last = _parse_day(date_from, "from"), _parse_day(date_to, "to")
    if last is not None:
        anchor = last
    if first is None and last is None:
        return ScreenPeriod(anchor.replace(day=1), anchor, anchor, anchored, custom=False)
    first = first or anchor.replace(day=1)
    last = last or anchor
    period_bounds(first, last)  # refuses a reversed period, naming both ends
    if (last - first).days + 1 > MAX_PERIOD_DAYS:
        raise BigScreenError(f"the big screen shows at most {MAX_PERIOD_DAYS} days, not {first} .. {last}")
    return ScreenPeriod(first, last, anchor, anchored and date_to is None, custom=True)


@dataclass(frozen=True)
class NamedRate:
    """One row of a ranking: a unit's code and names, the rate and what it was measured on."""

    code: str
    name: str
    value: float | None
    denominator: int


@dataclass(frozen=True)
class TickerRow:
    """One newest case as the wall may show it: time, category, street, stage (never a person's data)."""

    reported_at: datetime
    category_zh: str
    category_en: str
    street: str
    status: str


@dataclass(frozen=True)
class RecurringRow:
    """A problem that keeps coming back: a category at one community's grid, how often, how many open."""

    category_zh: str
    category_en: str
    place: str
    cases: int
    open_cases: int


@dataclass(frozen=True)
class Cameras:
    """Camera coverage of the area: cameras and those online, area seen, grids mostly unseen."""

    cameras: int = 0
    online: int = 0
    area_m2: float = 0.0
    covered_m2: float = 0.0
    blind_grids: int = 0
    grids: int = 0

    @property
    def online_share(self) -> float | None:
        return self.online / self.cameras if self.cameras else None

    @property
    def coverage_share(self) -> float | None:
        return min(1.0, self.covered_m2 / self.area_m2) if self.area_m2 else None


@dataclass(frozen=True)
class ScreenData:
    """Everything the big screen shows except the map, for one area and period (language-free)."""

    period: ScreenPeriod
    area_code: str | None
    area_name: str
    data_version: int
    counts: CaseCounts
    ladder: dict[str, dict[str, int]]  # today/month/year -> resolved_<level> -> count
    streets_on_time: list[NamedRate]
    streets_in_grid: list[NamedRate]
    channels: dict[str, int]
    trend_days: list[date]
    trend_this_year: list[int]
    trend_last_year: list[int | None]
    cameras: Cameras
    recurring: list[RecurringRow]
    ticker: list[TickerRow]
    last_refresh: datetime | None
    districts: list[tuple[str, str]] = field(default_factory=list)  # (code, name) of every district

    @property
    def rates(self) -> dict[str, float | None]:
        return compute_rates(self.counts)


def data_version(conn: Connection) -> int:
    """The store's data version (bumped by every load): the key of every cached answer."""
    return int(conn.execute(text("SELECT version FROM core.data_version")).scalar_one())


def districts(conn: Connection) -> list[tuple[str, str]]:
    """Code and name of every district (rotation order: by code)."""
    rows = conn.execute(text("SELECT code, name FROM core.admin_unit WHERE level = 'district' ORDER BY code"))
    return [(r[0], r[1]) for r in rows]


def check_area(area_code: str | None, known: list[tuple[str, str]]) -> str | None:
    """``area_code`` when it is one of the store's districts (the screen shows a city or a district)."""
    if area_code in (None, ""):
        return None
    if area_code not in {code for code, _name in known}:
        raise BigScreenError(f"area must be one of the districts {', '.join(c for c, _ in known)}, "
                             f"not {str(area_code)[:20]!r}")
    return area_code


def _ladder(conn: Connection, period: ScreenPeriod, area_code: str | None) -> dict[str, dict[str, int]]:
    """Resolved cases per level for today, this month and this year in one pass over the day rollup."""
    level = rollups.unit_level(area_code) or "district"
    windows = {"today": period.anchor, "month": period.month_from, "year": period.year_from}
    sums = ", ".join(f"sum({measure}) FILTER (WHERE day >= :{window}) AS {window}_{measure}"
                     for window in windows for measure in (f"resolved_{lvl}" for lvl in RESOLUTION_LEVELS))
    unit_clause = "AND unit_code = :unit" if area_code else ""
    row = conn.execute(text(f"""SELECT {sums} FROM rollup.case_day_unit
                                 WHERE level = :level AND day BETWEEN :year AND :anchor {unit_clause}"""),
                       {**windows, "anchor": period.anchor, "level": level, "unit": area_code}).mappings().one()
    out: dict[str, dict[str, int]] = {}
    for window in windows:
        values = {lvl: int(row[f"{window}_resolved_{lvl}"] or 0) for lvl in RESOLUTION_LEVELS}
        values["district"] += values.pop("city")  # the wall shows four rungs; city departments are above them
        out[window] = values
    return out


def _names(conn: Connection, codes: set[str]) -> dict[str, str]:
    if not codes:
        return {}
    rows = conn.execute(text("SELECT code, name FROM core.admin_unit WHERE code = ANY(:codes)"),
                        {"codes": sorted(codes)})
    return {r[0]: r[1] for r in rows}


def _streets(conn: Connection, period: ScreenPeriod, area_code: str | None, district_codes: list[str],
             as_of: datetime) -> tuple[list[NamedRate], list[NamedRate]]:
    """Streets ranked by 按期结案率 and by the share solved in the grid (best first)."""
    parents = [area_code] if area_code else district_codes
    per_street: dict[str, CaseCounts] = {}
    for parent in parents:
        per_street.update(rollups.child_counts(conn, period.date_from, period.date_to, parent, as_of))
    names = _names(conn, set(per_street))
    on_time, in_grid = [], []
    for code, counts in per_street.items():
        rates = compute_rates(counts)
        name = names.get(code, code)
        if counts.due_close:
            on_time.append(NamedRate(code, name, rates["on_time_closing_rate"], counts.due_close))
        if counts.resolved:
            in_grid.append(NamedRate(code, name, rates["grid_resolution_share"], counts.resolved))

    def ranked(rows: list[NamedRate]) -> list[NamedRate]:
        return sorted(rows, key=lambda r: (-(r.value or 0.0), -r.denominator, r.code))[:RANKED_STREETS]

    return ranked(on_time), ranked(in_grid)


def _channels(conn: Connection, period: ScreenPeriod, area_code: str | None) -> dict[str, int]:
    measures = tuple(rollups.CHANNEL_MEASURES[c] for c in SOURCE_CHANNELS)
    rows = rollups.daily_series(conn, period.date_from, period.date_to, area_code, measures)
    return {channel: sum(int(r[rollups.CHANNEL_MEASURES[channel]] or 0) for r in rows)
            for channel in SOURCE_CHANNELS}


def _year_before(day: date) -> date:
    return day.replace(year=day.year - 1, day=28) if (day.month, day.day) == (2, 29) else day.replace(year=day.year - 1)


def _trend(conn: Connection, period: ScreenPeriod, area_code: str | None,
           span: tuple[date, date] | None) -> tuple[list[date], list[int], list[int | None]]:
    """Reported per day over the last TREND_DAYS days to the anchor, and on the same dates a year before
    (None where the store holds no data that far back, so the line stops instead of reading zero)."""
    days = [period.anchor - timedelta(days=TREND_DAYS - 1 - i) for i in range(TREND_DAYS)]
    now_rows = rollups.daily_series(conn, days[0], days[-1], area_code, ("reported",))
    by_day = {r["day"]: int(r["reported"] or 0) for r in now_rows}
    before = [_year_before(d) for d in days]
    before_rows = rollups.daily_series(conn, before[0], before[-1], area_code, ("reported",))
    by_before = {r["day"]: int(r["reported"] or 0) for r in before_rows}
    first_day = span[0] if span else None
    last_year = [None if first_day is None or d < first_day else by_before.get(d, 0) for d in before]
    return days, [by_day.get(d, 0) for d in days], last_year


def _cameras(conn: Connection, area_code: str | None) -> Cameras:
    level = rollups.unit_level(area_code) or "district"
    unit_clause = "AND unit_code = :unit" if area_code else ""
    row = conn.execute(text(f"""SELECT coalesce(sum(cameras), 0), coalesce(sum(cameras_online), 0),
                                       coalesce(sum(area_m2), 0), coalesce(sum(covered_m2), 0),
                                       coalesce(sum(blind_grids), 0), coalesce(sum(grids), 0)
                                  FROM rollup.unit_asset WHERE level = :level {unit_clause}"""),
                       {"level": level, "unit": area_code}).one()
    return Cameras(int(row[0]), int(row[1]), float(row[2]), float(row[3]), int(row[4]), int(row[5]))


def _recurring(conn: Connection, area_code: str | None) -> list[RecurringRow]:
    """The places with the most repeats: per district the top rows by the rollup's (district, cases) index,
    then the best of those, so the city's answer never sorts every recurring place."""
    rows = conn.execute(text("""
        SELECT r.name_zh, r.name_en, coalesce(s.name, '') || coalesce(' ' || m.name, '') AS place,
               r.cases, r.open_cases
          FROM core.admin_unit d
          CROSS JOIN LATERAL (
                SELECT c.name_zh, c.name_en, p.street_code, p.community_code, p.cases, p.open_cases,
                       p.grid_code, p.category_code
                  FROM rollup.recurring_place p
                  JOIN core.category c ON c.kind = p.kind AND c.code = p.category_code
                 WHERE p.district_code = d.code AND NOT c.sensitive
                 ORDER BY p.cases DESC, p.open_cases DESC, p.grid_code, p.category_code
                 LIMIT :rows) r
          LEFT JOIN core.admin_unit s ON s.code = r.street_code
          LEFT JOIN core.admin_unit m ON m.code = r.community_code
         WHERE d.level = 'district' AND (CAST(:area AS text) IS NULL OR d.code = :area)
         ORDER BY r.cases DESC, r.open_cases DESC, r.grid_code, r.category_code
         LIMIT :rows"""), {"area": area_code, "rows": RECURRING_ROWS})
    return [RecurringRow(r[0], r[1], r[2], int(r[3]), int(r[4])) for r in rows]


def _ticker(conn: Connection, period: ScreenPeriod, area_code: str | None) -> list[TickerRow]:
    """The newest open cases up to the anchor day (from rollup.open_case: no personal data is there)."""
    area_clause = "AND o.district_code = :area" if area_code else ""
    rows = conn.execute(text(f"""
        SELECT o.reported_at, c.name_zh, c.name_en, coalesce(s.name, ''), o.status
          FROM (SELECT * FROM rollup.open_case o
                 WHERE o.day BETWEEN :since AND :anchor {area_clause}
                 ORDER BY o.reported_at DESC, o.case_number LIMIT :rows) o
          JOIN core.category c ON c.kind = o.kind AND c.code = o.category_code
          LEFT JOIN core.admin_unit s ON s.code = o.street_code
         ORDER BY o.reported_at DESC, o.case_number"""),
        {"since": period.anchor - timedelta(days=TICKER_DAYS - 1), "anchor": period.anchor, "area": area_code,
         "rows": TICKER_ROWS})
    return [TickerRow(r[0], r[1], r[2], r[3], r[4] if r[4] in CASE_STATUSES else "reported") for r in rows]


def last_refresh(conn: Connection) -> datetime | None:
    """When the rollups were last refreshed by a load (rollup.refresh_log)."""
    return conn.execute(text("SELECT max(refreshed_at) FROM rollup.refresh_log")).scalar()


def read_screen(conn: Connection, period: ScreenPeriod, area_code: str | None, version: int,
                span: tuple[date, date] | None, as_of: datetime | None = None) -> ScreenData:
    """One snapshot of every panel for ``area_code`` (None: the whole city) and ``period``."""
    as_of = as_of or datetime.now(TIMEZONE)
    known = districts(conn)
    area_name = dict(known).get(area_code, "") if area_code else ""
    on_time, in_grid = _streets(conn, period, area_code, [c for c, _ in known], as_of)
    trend_days, trend_now, trend_before = _trend(conn, period, area_code, span)
    return ScreenData(
        period=period,
        area_code=area_code,
        area_name=area_name,
        data_version=version,
        counts=rollups.unit_counts(conn, period.date_from, period.date_to, area_code, as_of),
        ladder=_ladder(conn, period, area_code),
        streets_on_time=on_time,
        streets_in_grid=in_grid,
        channels=_channels(conn, period, area_code),
        trend_days=trend_days,
        trend_this_year=trend_now,
        trend_last_year=trend_before,
        cameras=_cameras(conn, area_code),
        recurring=_recurring(conn, area_code),
        ticker=_ticker(conn, period, area_code),
        last_refresh=last_refresh(conn),
        districts=known,
    )
