"""Code dictionaries: categories (部件/事件), deadline rules (处置时限) and the working calendar (调休).

The data lives in ``geodata/data`` (see its README.md for sources, editions and the reasoning behind the
default deadlines); a city replaces those files with its own.  This module reads and validates them into
DataFrames, loads them into ``core.category``, ``core.deadline_rule`` and ``core.work_calendar`` in one
transaction, and does the working-time arithmetic the ETL uses to turn a deadline rule into a timestamp.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
from sqlalchemy import Connection, text

from geodata.codes import CASE_KINDS, URGENCIES
from geodata.errors import CityGridError

#: Where the shipped dictionaries live; every reader takes ``data_dir=`` for a city's own copies.
DATA_DIR: Final = Path(__file__).resolve().parent / "data"
DEFAULT_EDITION: Final = "cjt214"
CALENDAR_FILE: Final = "work_calendar_cn.csv"
DEADLINES_FILE: Final = "deadlines.csv"

#: Units a deadline rule may count in (the CHECK of core.deadline_rule.limit_unit).
LIMIT_UNITS: Final[tuple[str, ...]] = ("work_hours", "work_days", "clock_hours")
#: The command centres' wall clock; China keeps one time zone and no daylight saving.
TIMEZONE: Final = "Asia/Shanghai"
#: Default working periods of a working day (上午 08:30-12:00, 下午 13:30-17:30): 7.5 working hours.
WORKING_PERIODS: Final[tuple[tuple[time, time], ...]] = (
    (time(8, 30), time(12, 0)),
    (time(13, 30), time(17, 30)),
)

CATEGORY_COLUMNS: Final = ("kind", "code", "name_zh", "name_en", "sensitive")
DEADLINE_COLUMNS: Final = ("kind", "category_code", "urgency", "handle_limit", "close_limit", "limit_unit")
CALENDAR_COLUMNS: Final = ("day", "is_workday", "note")

_CODE = re.compile(r"^[0-9]{2}([0-9]{2})?$")
_EDITION = re.compile(r"^[a-z0-9_]{1,40}$")
_ISO_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_BOOLEANS: Final = {"true": True, "false": False}
_MAX_LIMIT: Final = Decimal("999999.99")  # numeric(8, 2)
_HOUR_NS: Final = 3_600 * 10**9
_DAY_NS: Final = 24 * _HOUR_NS
_NAT: Final = np.iinfo(np.int64).min


class DictionaryError(CityGridError):
    """A dictionary file is missing or wrong; the message names the file, the line and the problem."""


@dataclass(frozen=True)
class DictionaryCounts:
    """Rows in the dictionary tables after a load (categories of the loaded edition only)."""

    component_categories: int
    event_categories: int
    sensitive_categories: int
    deadline_rules: int
    calendar_days: int

    @property
    def categories(self) -> int:
        """Component and event categories together, majors and minors."""
        return self.component_categories + self.event_categories


# --- reading and validating ---------------------------------------------------------------------------

def _fail(path: Path, line: int | None, problem: str) -> DictionaryError:
    where = f"{path}, line {line}" if line is not None else str(path)
    return DictionaryError(f"{where}: {problem}")


def _read_rows(path: Path, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """The data rows of a UTF-8 CSV file with exactly ``columns`` as header, each with its line number."""
    if not path.is_file():
        raise _fail(path, None, "file not found (see geodata/data/README.md for the dictionary files)")
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = [field.strip() for field in next(reader, [])]
            if tuple(header) != tuple(columns):
                raise _fail(path, 1, f"header must be {','.join(columns)}, found {','.join(header) or 'nothing'}")
            for record in reader:
                if not any(field.strip() for field in record):
                    continue
                if len(record) != len(columns):
                    raise _fail(path, reader.line_num, f"expected {len(columns)} fields, found {len(record)}")
                rows.append((reader.line_num, {c: v.strip() for c, v in zip(columns, record, strict=True)}))
    except UnicodeDecodeError as exc:
        raise _fail(path, None, f"not UTF-8 text ({exc.reason}); save it as UTF-8") from exc
    except csv.Error as exc:
        raise _fail(path, None, f"not a well-formed CSV file: {exc}") from exc
    return rows


def _boolean(path: Path, line: int, column: str, value: str) -> bool:
    try:
        return _BOOLEANS[value.lower()]
    except KeyError:
        raise _fail(path, line, f"{column} must be true or false, found {value!r}") from None


def _limit(path: Path, line: int, column: str, value: str) -> Decimal:
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise _fail(path, line, f"{column} must be a number, found {value!r}") from None
    if not number.is_finite() or number <= 0 or number > _MAX_LIMIT:
        raise _fail(path, line, f"{column} must be greater than 0 and at most {_MAX_LIMIT}, found {value!r}")
    if number != number.quantize(Decimal("0.01")):
        raise _fail(path, line, f"{column} may have at most 2 decimals, found {value!r}")
    return number


def categories_path(edition: str = DEFAULT_EDITION, data_dir: Path | None = None) -> Path:
    """The category file of ``edition``: ``categories_<edition>.csv`` in the data folder."""
    if not _EDITION.match(edition):
        raise DictionaryError(f"category edition must be lower-case letters, digits or _, found {edition!r}")
    return (data_dir or DATA_DIR) / f"categories_{edition}.csv"


def read_categories(edition: str = DEFAULT_EDITION, *, data_dir: Path | None = None) -> pd.DataFrame:
    """Read and validate the category dictionary of ``edition``.

    Returns
    -------
    DataFrame with columns kind, code, major_code, is_major, name_zh, name_en, sensitive, edition, in file
    order.

    Raises
    ------
    DictionaryError
        On a bad header, kind, code, name or flag, a code repeated within its kind, or a minor category whose
        major (the code's first two digits) is not in the file.
    """
    path = categories_path(edition, data_dir)
    rows = _read_rows(path, CATEGORY_COLUMNS)
    seen: dict[tuple[str, str], int] = {}
    records = []
    for line, row in rows:
        kind, code = row["kind"], row["code"]
        if kind not in CASE_KINDS:
            raise _fail(path, line, f"kind must be one of {', '.join(CASE_KINDS)}, found {kind!r}")
        if not _CODE.match(code):
            raise _fail(path, line, f"code must be 2 digits (major) or 4 digits (minor), found {code!r}")
        if (kind, code) in seen:
            raise _fail(path, line, f"duplicate code: {kind} {code} is already on line {seen[kind, code]}")
        seen[kind, code] = line
        for column in ("name_zh", "name_en"):
            if not row[column]:
                raise _fail(path, line, f"{column} is empty for {kind} {code}")
        records.append((kind, code, row["name_zh"], row["name_en"],
                        _boolean(path, line, "sensitive", row["sensitive"])))
    for line, row in rows:
        kind, code = row["kind"], row["code"]
        if len(code) == 4 and (kind, code[:2]) not in seen:
            raise _fail(path, line, f"minor category {kind} {code} has no major: {kind} {code[:2]} is not in the file")
    if not records:
        raise _fail(path, None, "no categories in the file")
    frame = pd.DataFrame.from_records(records, columns=list(CATEGORY_COLUMNS))
    frame.insert(2, "major_code", frame["code"].str[:2])
    frame.insert(3, "is_major", frame["code"].str.len() == 2)
    frame["sensitive"] = frame["sensitive"].astype(bool)
    frame["edition"] = edition
    return frame


def read_deadlines(edition: str = DEFAULT_EDITION, *, data_dir: Path | None = None) -> pd.DataFrame:
    """Read and validate the deadline rules against the categories of ``edition``.

    Returns
    -------
    DataFrame with columns kind, category_code, urgency, handle_limit, close_limit (floats), limit_unit.

    Raises
    ------
    DictionaryError
        On a bad urgency, limit or unit, close_limit below handle_limit, a repeated rule, a rule for a code
        that is not a minor category of the edition, or a minor category without a rule for each urgency.
    """
    categories = read_categories(edition, data_dir=data_dir)
    minors = set(categories.loc[~categories["is_major"], ["kind", "code"]].itertuples(index=False, name=None))
    path = (data_dir or DATA_DIR) / DEADLINES_FILE
    seen: dict[tuple[str, str, str], int] = {}
    records = []
    for line, row in _read_rows(path, DEADLINE_COLUMNS):
        kind, code, urgency, unit = row["kind"], row["category_code"], row["urgency"], row["limit_unit"]
        if (kind, code) not in minors:
            raise _fail(path, line, f"{kind} {code!r} is not a minor category of edition {edition}")
        if urgency not in URGENCIES:
            raise _fail(path, line, f"urgency must be one of {', '.join(URGENCIES)}, found {urgency!r}")
        if unit not in LIMIT_UNITS:
            raise _fail(path, line, f"bad unit: limit_unit must be one of {', '.join(LIMIT_UNITS)}, found {unit!r}")
        handle = _limit(path, line, "handle_limit", row["handle_limit"])
        close = _limit(path, line, "close_limit", row["close_limit"])
        if close < handle:
            raise _fail(path, line, f"close_limit {close} is less than handle_limit {handle} for {kind} {code} {urgency}")
        if (kind, code, urgency) in seen:
            raise _fail(path, line, f"duplicate rule: {kind} {code} {urgency} is already on line {seen[kind, code, urgency]}")
        seen[kind, code, urgency] = line
        records.append((kind, code, urgency, float(handle), float(close), unit))
    missing = sorted(
        f"{kind} {code} {urgency}" for kind, code in minors for urgency in URGENCIES if (kind, code, urgency) not in seen
    )
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise _fail(path, None, f"no rule for {shown}: every minor category needs one per urgency")
    return pd.DataFrame.from_records(records, columns=list(DEADLINE_COLUMNS))


def read_calendar(*, data_dir: Path | None = None) -> pd.DataFrame:
    """Read and validate the working calendar's exceptions.

    Returns
    -------
    DataFrame with columns day (datetime64, midnight), is_workday (bool), note, sorted by day.

    Raises
    ------
    DictionaryError
        On a bad or repeated day, a bad flag, or a make-up working day that is not a Saturday or Sunday.
    """
    path = (data_dir or DATA_DIR) / CALENDAR_FILE
    seen: dict[date, int] = {}
    records = []
    for line, row in _read_rows(path, CALENDAR_COLUMNS):
        try:
            if not _ISO_DAY.match(row["day"]):
                raise ValueError
            day = date.fromisoformat(row["day"])
        except ValueError:
            raise _fail(path, line, f"day must be a date as YYYY-MM-DD, found {row['day']!r}") from None
        if day in seen:
            raise _fail(path, line, f"duplicate day: {day} is already on line {seen[day]}")
        seen[day] = line
        is_workday = _boolean(path, line, "is_workday", row["is_workday"])
        if is_workday and day.weekday() < 5:
            raise _fail(path, line, f"{day} is a weekday: only weekend make-up days are listed as working days")
        records.append((day, is_workday, row["note"]))
    frame = pd.DataFrame.from_records(records, columns=list(CALENDAR_COLUMNS))
    frame["day"] = pd.to_datetime(frame["day"])
    frame["is_workday"] = frame["is_workday"].astype(bool)
    return frame.sort_values("day", ignore_index=True)


# --- loading ------------------------------------------------------------------------------------------

_UPSERT_CATEGORY = text("""
    INSERT INTO core.category AS c (kind, code, name_zh, name_en, edition, sensitive)
    VALUES (:kind, :code, :name_zh, :name_en, :edition, :sensitive)
    ON CONFLICT (kind, code) DO UPDATE
       SET name_zh = EXCLUDED.name_zh, name_en = EXCLUDED.name_en,
           edition = EXCLUDED.edition, sensitive = EXCLUDED.sensitive
     WHERE (c.name_zh, c.name_en, c.edition, c.sensitive)
           IS DISTINCT FROM (EXCLUDED.name_zh, EXCLUDED.name_en, EXCLUDED.edition, EXCLUDED.sensitive)
""")

_UPSERT_DEADLINE = text("""
    INSERT INTO core.deadline_rule AS d (kind, category_code, urgency, handle_limit, close_limit, limit_unit)
    VALUES (:kind, :category_code, :urgency, :handle_limit, :close_limit, :limit_unit)
    ON CONFLICT (kind, category_code, urgency) DO UPDATE
       SET handle_limit = EXCLUDED.handle_limit, close_limit = EXCLUDED.close_limit,
           limit_unit = EXCLUDED.limit_unit
     WHERE (d.handle_limit, d.close_limit, d.limit_unit)
           IS DISTINCT FROM (EXCLUDED.handle_limit, EXCLUDED.close_limit, EXCLUDED.limit_unit)
""")

# The deadline and calendar files are the whole truth: rules and days no longer in them go.  Categories
# are never deleted (cases and components refer to them).
_DELETE_STALE_DEADLINES = text("""
    DELETE FROM core.deadline_rule AS d
     WHERE NOT EXISTS (
           SELECT 1
             FROM unnest(CAST(:kinds AS text[]), CAST(:codes AS text[]), CAST(:urgencies AS text[]))
                  AS f (kind, code, urgency)
            WHERE f.kind = d.kind AND f.code = d.category_code AND f.urgency = d.urgency)
""")

_UPSERT_CALENDAR = text("""
    INSERT INTO core.work_calendar AS w (day, is_workday, note)
    VALUES (:day, :is_workday, :note)
    ON CONFLICT (day) DO UPDATE
       SET is_workday = EXCLUDED.is_workday, note = EXCLUDED.note
     WHERE (w.is_workday, w.note) IS DISTINCT FROM (EXCLUDED.is_workday, EXCLUDED.note)
""")

_DELETE_STALE_CALENDAR = text("DELETE FROM core.work_calendar WHERE day <> ALL (CAST(:days AS date[]))")

_COUNT = text("""
    SELECT (SELECT count(*) FROM core.category WHERE edition = :edition AND kind = 'component'),
           (SELECT count(*) FROM core.category WHERE edition = :edition AND kind = 'event'),
           (SELECT count(*) FROM core.category WHERE edition = :edition AND sensitive),
           (SELECT count(*) FROM core.deadline_rule),
           (SELECT count(*) FROM core.work_calendar)
""")

_FETCH_CALENDAR = text("SELECT day, is_workday, note FROM core.work_calendar ORDER BY day")


def load_dictionaries(
    conn: Connection, edition: str = DEFAULT_EDITION, *, data_dir: Path | None = None
) -> DictionaryCounts:
    """Validate the dictionary files, then upsert them into the database in one transaction.

    Categories are upserted by (kind, code), majors before minors.  Deadline rules and calendar days are
    upserted and those no longer in the files deleted.  Loading the same files twice changes nothing.
    When ``conn`` is already in a transaction the load runs in a savepoint of it and the caller commits;
    otherwise it commits its own transaction.

    Raises
    ------
    DictionaryError
        When a file is wrong; nothing is written then.
    """
    categories = read_categories(edition, data_dir=data_dir)
    deadlines = read_deadlines(edition, data_dir=data_dir)
    calendar = read_calendar(data_dir=data_dir)

    ordered = categories.sort_values("is_major", ascending=False, kind="stable")
    category_rows = [
        {"kind": r.kind, "code": r.code, "name_zh": r.name_zh, "name_en": r.name_en,
         "edition": r.edition, "sensitive": bool(r.sensitive)}
        for r in ordered.itertuples(index=False)
    ]
    deadline_rows = [
        {"kind": r.kind, "category_code": r.category_code, "urgency": r.urgency,
         "handle_limit": Decimal(f"{r.handle_limit:.2f}"), "close_limit": Decimal(f"{r.close_limit:.2f}"),
         "limit_unit": r.limit_unit}
        for r in deadlines.itertuples(index=False)
    ]
    days = [day.date() for day in calendar["day"]]
    calendar_rows = [
        {"day": day, "is_workday": bool(flag), "note": note}
        for day, flag, note in zip(days, calendar["is_workday"], calendar["note"], strict=True)
    ]

    transaction = conn.begin_nested() if conn.in_transaction() else conn.begin()
    with transaction:
        conn.execute(_UPSERT_CATEGORY, category_rows)
        conn.execute(_UPSERT_DEADLINE, deadline_rows)
        conn.execute(_DELETE_STALE_DEADLINES, {
            "kinds": list(deadlines["kind"]), "codes": list(deadlines["category_code"]),
            "urgencies": list(deadlines["urgency"]),
        })
        if calendar_rows:
            conn.execute(_UPSERT_CALENDAR, calendar_rows)
        conn.execute(_DELETE_STALE_CALENDAR, {"days": days})
        counts = conn.execute(_COUNT, {"edition": edition}).one()
    return DictionaryCounts(*(int(value) for value in counts))


def fetch_calendar(conn: Connection) -> pd.DataFrame:
    """The working calendar as loaded in the database, shaped like :func:`read_calendar`'s result."""
    frame = pd.DataFrame(conn.execute(_FETCH_CALENDAR).all(), columns=list(CALENDAR_COLUMNS))
    frame["day"] = pd.to_datetime(frame["day"])
    frame["is_workday"] = frame["is_workday"].astype(bool)
    return frame


# --- working time -------------------------------------------------------------------------------------

def _period_bounds(periods: Iterable[tuple[time, time]]) -> tuple[np.ndarray, np.ndarray]:
    """Start and end of each working period in nanoseconds after midnight, checked to be ordered."""
    def ns(moment: time) -> int:
        return ((moment.hour * 60 + moment.minute) * 60 + moment.second) * 10**9 + moment.microsecond * 1_000

    periods = tuple(periods)
    bounds = [(ns(a), ns(b)) for a, b in periods]
    if not bounds:
        raise ValueError("working periods must not be empty")
    previous_end = -1
    for begin, end in bounds:
        if not previous_end <= begin < end:
            raise ValueError(f"working periods must be ordered and must not overlap: {list(periods)}")
        previous_end = end
    starts, ends = (np.array(column, dtype=np.int64) for column in zip(*bounds, strict=True))
    return starts, ends


def working_day_hours(periods: Iterable[tuple[time, time]] = WORKING_PERIODS) -> float:
    """Length of one working day in hours (7.5 with the default periods): what one work_day counts."""
    starts, ends = _period_bounds(periods)
    return float((ends - starts).sum()) / _HOUR_NS


def _calendar_days(calendar: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Days off and make-up working days of ``calendar`` (columns day, is_workday) as datetime64[D]."""
    days = pd.to_datetime(calendar["day"]).to_numpy(dtype="datetime64[D]")
    is_workday = calendar["is_workday"].to_numpy(dtype=bool)
    return days[~is_workday], days[is_workday]


def _busday_calendar(calendar: pd.DataFrame, first: np.datetime64, end: np.datetime64) -> np.busdaycalendar:
    """A numpy business-day calendar that is right on [first, end): weekends and holidays off, make-up
    days on.  numpy's weekmask cannot add working Saturdays, so every day counts and the days off in the
    window are listed as its holidays."""
    off_days, makeup_days = _calendar_days(calendar)
    days = np.arange(first, end, dtype="datetime64[D]")
    weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    off = ((weekday >= 5) & ~np.isin(days, makeup_days)) | np.isin(days, off_days)
    return np.busdaycalendar(weekmask="1111111", holidays=days[off])


def _add_working_ns(local_ns: np.ndarray, add_ns: np.ndarray, calendar: pd.DataFrame,
                    periods: Iterable[tuple[time, time]]) -> np.ndarray:
    """Local wall-clock instants (ns) plus ``add_ns`` (> 0) of working time, as local wall-clock ns."""
    starts, ends = _period_bounds(periods)
    lengths = ends - starts
    day_ns = int(lengths.sum())
    period_end = np.cumsum(lengths)  # working time elapsed at the end of each period
    period_start = period_end - lengths

    day = local_ns // _DAY_NS
    time_of_day = local_ns - day * _DAY_NS
    day64 = day.astype("datetime64[D]")
    # Enough calendar for the largest offset: a working week has >= 5 - holidays days, so twice the
    # working days needed plus two months covers the longest Spring Festival stretch.
    most_days = int((int(add_ns.max()) + day_ns) // day_ns) + 1
    window_end = day64.max() + np.timedelta64(2 * most_days + 60, "D")
    busdays = _busday_calendar(calendar, day64.min(), window_end)

    is_workday = np.is_busday(day64, busdaycal=busdays)
    elapsed = np.clip(time_of_day[:, None] - starts[None, :], 0, lengths[None, :]).sum(axis=1)
    elapsed = np.where(is_workday, elapsed, 0)
    first_day = np.busday_offset(day64, 0, roll="forward", busdaycal=busdays)

    # Count whole working days from the first one; the rest lands in (0, day] so that a deadline reached
    # exactly at the end of a period stays there instead of moving to the next period's start.
    total = elapsed + add_ns
    whole_days = (total - 1) // day_ns
    rest = total - whole_days * day_ns
    result_day = np.busday_offset(first_day, whole_days, roll="forward", busdaycal=busdays)
    if (result_day >= window_end).any():  # cannot happen with the window above; never answer wrongly
        raise RuntimeError("working-time window too short; report this as a bug")
    period = np.searchsorted(period_end, rest, side="left")
    return result_day.astype(np.int64) * _DAY_NS + starts[period] + (rest - period_start[period])


def add_working_time(
    start: pd.Series,
    amount: float | Sequence[float] | np.ndarray | pd.Series,
    unit: str | Sequence[str] | np.ndarray | pd.Series,
    calendar: pd.DataFrame,
    *,
    periods: Iterable[tuple[time, time]] = WORKING_PERIODS,
) -> pd.Series:
    """Add ``amount`` of ``unit`` to each timestamp of ``start``: the deadline of a rule.

    - ``work_hours``: the earliest instant by which ``amount`` hours of working time have passed.  Working
      time is ``periods`` (default 08:30-12:00 and 13:30-17:30, Asia/Shanghai) on working days: Monday to
      Friday unless the calendar lists the day off, plus the weekend make-up days it lists.  A start
      outside working time counts from the next working period; an end exactly at the end of a period
      (12:00, 17:30) stays there.
    - ``work_days``: ``amount`` working days of ``working_day_hours(periods)`` working hours each, so one
      working day from Monday 10:00 is Tuesday 10:00, and from a holiday the end of the first working day.
    - ``clock_hours``: plain elapsed time.

    Vectorised with numpy business-day functions at the day level; a million rows take a second or so.

    Parameters
    ----------
    start
        Timezone-aware timestamps (any zone; NaT allowed and kept).
    amount
        Hours or days, >= 0: one number, or one per row (matched by position).
    unit
        One of :data:`LIMIT_UNITS`, or one per row.
    calendar
        The calendar's exceptions: :func:`read_calendar` or :func:`fetch_calendar`.  Days outside it
        follow the weekend rule alone.

    Returns
    -------
    Series of timestamps in ``start``'s zone (nanosecond unit), on ``start``'s index.
    """
    if not isinstance(start.dtype, pd.DatetimeTZDtype):
        raise ValueError("start must hold timezone-aware timestamps (e.g. tz_localize('Asia/Shanghai'))")
    periods = tuple(periods)
    size = len(start)
    amounts = np.broadcast_to(np.asarray(amount, dtype=np.float64), (size,))
    units = np.broadcast_to(np.asarray(unit, dtype=object), (size,))
    unknown = ~np.isin(units, LIMIT_UNITS)
    if unknown.any():
        raise ValueError(f"unit must be one of {', '.join(LIMIT_UNITS)}, found {units[unknown][0]!r}")
    if (amounts < 0).any():
        raise ValueError("amount must not be negative")

    local = start.dt.tz_convert(TIMEZONE).dt.tz_localize(None).dt.as_unit("ns")
    local_ns = local.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    valid = local.notna().to_numpy() & ~np.isnan(amounts)
    hours = np.where(units == "work_days", amounts * working_day_hours(periods), amounts)
    add_ns = np.zeros(size, dtype=np.int64)
    add_ns[valid] = np.rint(hours[valid] * _HOUR_NS).astype(np.int64)

    result = np.full(size, _NAT, dtype=np.int64)
    plain = valid & ((units == "clock_hours") | (add_ns == 0))
    result[plain] = local_ns[plain] + add_ns[plain]
    working = valid & ~plain
    if working.any():
        result[working] = _add_working_ns(local_ns[working], add_ns[working], calendar, periods)
    # Clock hours are added to the instant, not the wall clock: Asia/Shanghai has no DST, so both agree.
    local_result = pd.Series(result.view("datetime64[ns]"), index=start.index, name=start.name)
    return local_result.dt.tz_localize(TIMEZONE).dt.tz_convert(start.dt.tz)
