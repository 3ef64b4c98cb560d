"""The shipped code dictionaries: files that validate, an idempotent load, and working-time arithmetic
checked against a plain scalar reference."""

from __future__ import annotations

import shutil
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from geodata import dictionaries as dicts
from geodata.errors import CityGridError

SHANGHAI = ZoneInfo("Asia/Shanghai")
EXPECTED_SENSITIVE = {"0409", "0502", "0601", "0602", "0606", "0607"}


# --- a scalar reference for working time, written apart from the vectorised code --------------------

def listed_days(calendar: pd.DataFrame) -> dict[date, bool]:
    """The calendar's exceptions as day -> is a working day."""
    return {day: bool(flag) for day, flag in zip(calendar["day"].dt.date, calendar["is_workday"], strict=True)}


def reference_add(start: datetime, amount: float, unit: str, listed: dict[date, bool],
                  periods: tuple[tuple[time, time], ...] = dicts.WORKING_PERIODS) -> datetime:
    """Walk day by day and period by period, spending the working time, as a person would count."""
    if unit == "clock_hours":
        return start + timedelta(hours=amount)
    day_hours = sum((datetime.combine(date.min, b) - datetime.combine(date.min, a)).total_seconds()
                    for a, b in periods) / 3600
    remaining = timedelta(hours=amount * (day_hours if unit == "work_days" else 1))
    if remaining == timedelta(0):
        return start
    moment = start.astimezone(SHANGHAI).replace(tzinfo=None)
    day = moment.date()
    while True:
        if listed.get(day, day.weekday() < 5):
            for a, b in periods:
                begin = max(datetime.combine(day, a), moment)
                end = datetime.combine(day, b)
                if begin >= end:
                    continue
                if remaining <= end - begin:
                    return (begin + remaining).replace(tzinfo=SHANGHAI)
                remaining -= end - begin
        day += timedelta(days=1)
        moment = datetime.combine(day, time(0))


@pytest.fixture(scope="module")
def calendar() -> pd.DataFrame:
    return dicts.read_calendar()


def _shanghai(*stamps: str) -> pd.Series:
    return pd.Series(pd.to_datetime(list(stamps))).dt.tz_localize("Asia/Shanghai")


def _one(start: str, amount: float, unit: str, calendar: pd.DataFrame) -> pd.Timestamp:
    return dicts.add_working_time(_shanghai(start), amount, unit, calendar).iloc[0]


# --- the files --------------------------------------------------------------------------------------

def test_category_file_parses_and_keeps_the_standard_codes() -> None:
    categories = dicts.read_categories()
    assert not categories.duplicated(["kind", "code"]).any()
    majors = categories[categories["is_major"]]
    assert list(majors.loc[majors["kind"] == "component", "code"]) == ["01", "02", "03", "04", "05", "06", "07"]
    assert list(majors.loc[majors["kind"] == "event", "code"]) == ["01", "02", "03", "04", "05", "06"]
    minors = categories[~categories["is_major"]]
    major_keys = set(zip(majors["kind"], majors["code"], strict=True))
    assert all((kind, code[:2]) in major_keys for kind, code in zip(minors["kind"], minors["code"], strict=True))
    names = dict(zip(zip(categories["kind"], categories["code"], strict=True), categories["name_zh"], strict=True))
    # As shared/domain.md gives them.
    assert [names["component", f"010{i}"] for i in range(1, 6)] == ["上水井盖", "污水井盖", "雨水井盖", "雨水箅子", "电力井盖"]
    assert names["event", "0102"] == "暴露垃圾"
    assert names["event", "0201"] == "非法小广告"
    assert names["event", "0301"] == "施工扰民"
    assert names["event", "0401"] == "路面塌陷"
    assert names["event", "0501"] == "无照经营游商"
    assert (categories["name_en"] != categories["name_zh"]).all()
    assert (categories["edition"] == "cjt214").all()


def test_sensitive_categories_are_the_people_related_events() -> None:
    categories = dicts.read_categories()
    sensitive = categories[categories["sensitive"]]
    assert set(sensitive["kind"]) == {"event"}
    assert set(sensitive["code"]) == EXPECTED_SENSITIVE
    assert not sensitive["is_major"].any()


def test_every_minor_category_has_a_deadline_per_urgency() -> None:
    categories = dicts.read_categories()
    deadlines = dicts.read_deadlines()
    minors = categories.loc[~categories["is_major"], ["kind", "code"]].rename(columns={"code": "category_code"})
    for urgency in ("normal", "urgent"):
        rules = deadlines[deadlines["urgency"] == urgency]
        joined = minors.merge(rules, on=["kind", "category_code"], how="left", validate="one_to_one")
        assert joined["limit_unit"].notna().all(), joined[joined["limit_unit"].isna()]
    assert len(deadlines) == 2 * len(minors)
    assert (deadlines["close_limit"] >= deadlines["handle_limit"]).all()
    assert set(deadlines["limit_unit"]) <= set(dicts.LIMIT_UNITS)
    rule = deadlines.set_index(["kind", "category_code", "urgency"])
    assert tuple(rule.loc["event", "0102", "normal"][["handle_limit", "limit_unit"]]) == (2.0, "work_hours")
    assert tuple(rule.loc["event", "0401", "urgent"][["handle_limit", "limit_unit"]]) == (2.0, "clock_hours")
    assert tuple(rule.loc["component", "0101", "normal"][["handle_limit", "limit_unit"]]) == (1.0, "work_days")
    assert tuple(rule.loc["event", "0101", "normal"][["handle_limit", "limit_unit"]]) == (5.0, "work_days")


def test_calendar_matches_the_state_council_notices(calendar: pd.DataFrame) -> None:
    days = dict(zip(calendar["day"].dt.date, calendar["is_workday"], strict=True))
    # Each year, the weekday holidays minus the weekend make-up days are its statutory holidays.
    for year, statutory in ((2024, 11), (2025, 13), (2026, 13)):
        weekday_off = sum(1 for d, w in days.items() if d.year == year and not w and d.weekday() < 5)
        makeup = sum(1 for d, w in days.items() if d.year == year and w)
        assert weekday_off - makeup == statutory, year
    assert all(d.weekday() >= 5 for d, w in days.items() if w)
    assert all(days[date(2025, 10, d)] is False for d in range(1, 9))
    assert days[date(2025, 9, 28)] is True and days[date(2025, 10, 11)] is True
    assert days[date(2026, 2, 14)] is True and days[date(2026, 2, 28)] is True
    assert date(2024, 2, 9) not in days  # 除夕 2024 was only "encouraged" off


# --- validation errors name the file, the line and the problem -------------------------------------

@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    for name in ("categories_cjt214.csv", "deadlines.csv", "work_calendar_cn.csv"):
        shutil.copy(dicts.DATA_DIR / name, tmp_path / name)
    return tmp_path


def _append(path: Path, line: str) -> int:
    """Append a row; return its line number."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    return len(path.read_text(encoding="utf-8").splitlines())


def _replace(path: Path, old: str, new: str) -> int:
    """Replace the one line equal to ``old``; return its line number."""
    lines = path.read_text(encoding="utf-8").splitlines()
    number = lines.index(old) + 1
    lines[number - 1] = new
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return number


def test_duplicate_category_code_is_refused(data_dir: Path) -> None:
    line = _append(data_dir / "categories_cjt214.csv", "event,0102,重复,Duplicate,false")
    with pytest.raises(CityGridError, match=rf"categories_cjt214\.csv, line {line}: duplicate code: event 0102"):
        dicts.read_categories(data_dir=data_dir)


def test_minor_category_without_major_is_refused(data_dir: Path) -> None:
    line = _append(data_dir / "categories_cjt214.csv", "event,9901,无大类,Orphan,false")
    with pytest.raises(CityGridError, match=rf"categories_cjt214\.csv, line {line}: minor category event 9901 has no major"):
        dicts.read_categories(data_dir=data_dir)


@pytest.mark.parametrize(("row", "problem"), [
    ("bogus,0102,x,y,false", "kind must be one of"),
    ("event,102,x,y,false", "code must be 2 digits"),
    ("event,0199,,y,false", "name_zh is empty"),
    ("event,0199,x,y,yes", "sensitive must be true or false"),
    ("event,0199,x,y", "expected 5 fields"),
])
def test_bad_category_rows_are_refused(data_dir: Path, row: str, problem: str) -> None:
    line = _append(data_dir / "categories_cjt214.csv", row)
    with pytest.raises(CityGridError, match=rf"line {line}: {problem}"):
        dicts.read_categories(data_dir=data_dir)


def test_bad_header_and_unknown_edition_are_refused(data_dir: Path) -> None:
    path = data_dir / "categories_cjt214.csv"
    _replace(path, "kind,code,name_zh,name_en,sensitive", "kind,code,name,sensitive")
    with pytest.raises(CityGridError, match=r"line 1: header must be kind,code,name_zh,name_en,sensitive"):
        dicts.read_categories(data_dir=data_dir)
    with pytest.raises(CityGridError, match="file not found"):
        dicts.read_categories("gbt30428", data_dir=data_dir)
    with pytest.raises(CityGridError, match="edition must be"):
        dicts.read_categories("../secrets")


def test_bad_deadline_unit_is_refused(data_dir: Path) -> None:
    line = _replace(data_dir / "deadlines.csv", "event,0102,normal,2,4,work_hours", "event,0102,normal,2,4,minutes")
    with pytest.raises(CityGridError, match=rf"deadlines\.csv, line {line}: bad unit: limit_unit must be one of"):
        dicts.read_deadlines(data_dir=data_dir)


def test_close_before_handle_is_refused(data_dir: Path) -> None:
    line = _replace(data_dir / "deadlines.csv", "event,0102,normal,2,4,work_hours", "event,0102,normal,4,2,work_hours")
    with pytest.raises(CityGridError, match=rf"deadlines\.csv, line {line}: close_limit 2 is less than handle_limit 4"):
        dicts.read_deadlines(data_dir=data_dir)


@pytest.mark.parametrize(("row", "problem"), [
    ("event,0102,normal,3,5,work_hours", "duplicate rule: event 0102 normal"),
    ("event,01,normal,3,5,work_hours", "event .01. is not a minor category"),
    ("event,9999,normal,3,5,work_hours", "event .9999. is not a minor category"),
    ("event,0102,soon,3,5,work_hours", "urgency must be one of"),
    ("event,0102,normal,0,5,work_hours", "handle_limit must be greater than 0"),
    ("event,0102,normal,1.234,5,work_hours", "handle_limit may have at most 2 decimals"),
    ("event,0102,normal,x,5,work_hours", "handle_limit must be a number"),
])
def test_bad_deadline_rows_are_refused(data_dir: Path, row: str, problem: str) -> None:
    line = _append(data_dir / "deadlines.csv", row)
    with pytest.raises(CityGridError, match=rf"line {line}: {problem}"):
        dicts.read_deadlines(data_dir=data_dir)


def test_missing_deadline_rule_is_refused(data_dir: Path) -> None:
    _replace(data_dir / "deadlines.csv", "event,0102,urgent,1,2,work_hours", "")
    with pytest.raises(CityGridError, match=r"deadlines\.csv: no rule for event 0102 urgent"):
        dicts.read_deadlines(data_dir=data_dir)


@pytest.mark.parametrize(("row", "problem"), [
    ("2025-10-13,true,not a weekend", "2025-10-13 is a weekday: only weekend make-up days"),
    ("2025-10-01,false,again", "duplicate day: 2025-10-01"),
    ("2025/12/01,false,x", "day must be a date as YYYY-MM-DD"),
    ("2025-12-01,no,x", "is_workday must be true or false"),
])
def test_bad_calendar_rows_are_refused(data_dir: Path, row: str, problem: str) -> None:
    line = _append(data_dir / "work_calendar_cn.csv", row)
    with pytest.raises(CityGridError, match=rf"work_calendar_cn\.csv, line {line}: {problem}"):
        dicts.read_calendar(data_dir=data_dir)


# --- loading into the database ----------------------------------------------------------------------

def _snapshot(conn: Connection) -> tuple[list, list, list]:
    return (
        conn.execute(text("SELECT kind, code, name_zh, name_en, edition, sensitive FROM core.category "
                          "ORDER BY kind, code")).all(),
        conn.execute(text("SELECT * FROM core.deadline_rule ORDER BY kind, category_code, urgency")).all(),
        conn.execute(text("SELECT * FROM core.work_calendar ORDER BY day")).all(),
    )


def test_load_is_idempotent(conn: Connection) -> None:
    first = dicts.load_dictionaries(conn)
    snapshot = _snapshot(conn)
    second = dicts.load_dictionaries(conn)
    assert first == second
    assert _snapshot(conn) == snapshot
    categories = dicts.read_categories()
    assert first.component_categories == int((categories["kind"] == "component").sum())
    assert first.event_categories == int((categories["kind"] == "event").sum())
    assert first.sensitive_categories == len(EXPECTED_SENSITIVE)
    assert first.deadline_rules == len(dicts.read_deadlines())
    assert first.calendar_days == len(dicts.read_calendar())


def test_load_replaces_changed_rows_and_drops_stale_ones(conn: Connection, data_dir: Path) -> None:
    dicts.load_dictionaries(conn)
    conn.execute(text("INSERT INTO core.work_calendar (day, is_workday, note) VALUES ('2030-01-01', false, 'stale')"))
    calendar = data_dir / "work_calendar_cn.csv"
    _replace(calendar, "2025-10-08,false,国庆节、中秋节", "2025-10-08,false,国庆节")
    _replace(data_dir / "deadlines.csv", "event,0102,normal,2,4,work_hours", "event,0102,normal,3,5,work_hours")
    dicts.load_dictionaries(conn, data_dir=data_dir)
    assert conn.execute(text("SELECT note FROM core.work_calendar WHERE day = '2025-10-08'")).scalar_one() == "国庆节"
    assert conn.execute(text("SELECT count(*) FROM core.work_calendar WHERE day = '2030-01-01'")).scalar_one() == 0
    rule = conn.execute(text("SELECT handle_limit, close_limit FROM core.deadline_rule "
                             "WHERE kind = 'event' AND category_code = '0102' AND urgency = 'normal'")).one()
    assert tuple(float(v) for v in rule) == (3.0, 5.0)
    loaded, shipped = dicts.fetch_calendar(conn), dicts.read_calendar(data_dir=data_dir)
    assert list(loaded.itertuples(index=False)) == list(shipped.itertuples(index=False))


def test_invalid_files_write_nothing(conn: Connection, data_dir: Path) -> None:
    before = _snapshot(conn)
    _append(data_dir / "deadlines.csv", "event,0102,normal,3,5,work_hours")
    with pytest.raises(CityGridError, match="duplicate rule"):
        dicts.load_dictionaries(conn, data_dir=data_dir)
    assert _snapshot(conn) == before


def test_database_refuses_a_minor_category_with_an_unknown_major(conn: Connection) -> None:
    dicts.load_dictionaries(conn)
    with pytest.raises(IntegrityError, match="foreign key"), conn.begin_nested():
        conn.execute(text("INSERT INTO core.category (kind, code, name_zh, name_en, edition) "
                          "VALUES ('event', '9901', '无大类', 'Orphan', 'cjt214')"))
    with pytest.raises(IntegrityError, match="foreign key"), conn.begin_nested():
        conn.execute(text("INSERT INTO core.deadline_rule VALUES ('event', '9902', 'normal', 1, 2, 'work_hours')"))


def test_public_view_hides_sensitive_categories(conn: Connection) -> None:
    dicts.load_dictionaries(conn)
    public = set(conn.execute(text("SELECT code FROM open_data.category WHERE kind = 'event'")).scalars())
    assert public.isdisjoint(EXPECTED_SENSITIVE)
    assert {"0102", "0401", "0501"} <= public


# --- working time -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("start", "amount", "unit", "expected"), [
    # Friday evening: the working hours start again on Monday.
    ("2025-03-14 18:00", 2, "work_hours", "2025-03-17 10:30"),
    ("2025-03-14 17:00", 2, "work_hours", "2025-03-17 10:00"),
    # Through the lunch break.
    ("2025-03-17 11:00", 2, "work_hours", "2025-03-17 14:30"),
    ("2025-03-17 12:30", 1, "work_hours", "2025-03-17 14:30"),
    # Ending exactly at the end of a period stays there.
    ("2025-03-17 08:30", 7.5, "work_hours", "2025-03-17 17:30"),
    ("2025-03-17 08:30", 3.5, "work_hours", "2025-03-17 12:00"),
    ("2025-03-17 16:30", 1, "work_hours", "2025-03-17 17:30"),
    ("2025-03-17 12:00", 0.5, "work_hours", "2025-03-17 14:00"),
    ("2025-03-17 17:30", 0.5, "work_hours", "2025-03-18 09:00"),
    ("2025-03-17 07:00", 1, "work_hours", "2025-03-17 09:30"),
    # One working day keeps the time of day; from a weekend it ends with the first working day.
    ("2025-03-17 10:00", 1, "work_days", "2025-03-18 10:00"),
    ("2025-03-15 10:00", 1, "work_days", "2025-03-17 17:30"),
    ("2025-03-14 18:00", 5, "work_days", "2025-03-21 17:30"),
    # National Day week 2025-10-01..08 is off; Saturday 2025-10-11 is a make-up working day.
    ("2025-09-30 16:00", 2, "work_hours", "2025-10-09 09:00"),
    ("2025-10-03 10:00", 2, "work_hours", "2025-10-09 10:30"),
    ("2025-09-30 16:00", 5, "work_days", "2025-10-14 16:00"),
    ("2025-10-10 17:00", 1, "work_hours", "2025-10-11 09:00"),
    # Friday 2025-09-26 to make-up Sunday 2025-09-28, skipping Saturday.
    ("2025-09-26 17:00", 2, "work_hours", "2025-09-28 10:00"),
    ("2025-09-27 09:00", 1, "work_hours", "2025-09-28 09:30"),
    # Spring Festival 2026 (15-23 Feb off, Saturday 28 Feb on).
    ("2026-02-13 17:00", 1, "work_hours", "2026-02-14 09:00"),
    ("2026-02-14 17:00", 1, "work_hours", "2026-02-24 09:00"),
    # Clock hours are plain elapsed time, holidays or not.
    ("2025-10-01 23:00", 2, "clock_hours", "2025-10-02 01:00"),
    ("2025-10-01 23:00", 0, "work_hours", "2025-10-01 23:00"),
])
def test_working_time_cases(calendar: pd.DataFrame, start: str, amount: float, unit: str, expected: str) -> None:
    result = _one(start, amount, unit, calendar)
    assert result == pd.Timestamp(expected, tz="Asia/Shanghai")
    assert result == reference_add(pd.Timestamp(start, tz="Asia/Shanghai").to_pydatetime(), amount, unit,
                                   listed_days(calendar))


def _random_starts(rng: np.random.Generator, size: int) -> pd.Series:
    """Random instants 2023-12 to 2027-01 (past the calendar's end too), a fifth of them on period edges."""
    low, high = pd.Timestamp("2023-12-20", tz="Asia/Shanghai"), pd.Timestamp("2027-01-10", tz="Asia/Shanghai")
    stamps = pd.Series(pd.to_datetime(rng.integers(low.value, high.value, size), utc=True))
    stamps = stamps.dt.tz_convert("Asia/Shanghai").dt.floor("s")
    edge_hours = rng.choice([8.5, 12, 13.5, 17.5, 0], size)
    snapped = stamps.dt.normalize() + pd.to_timedelta(edge_hours, unit="h")
    return stamps.where(rng.random(size) >= 0.2, snapped)


@pytest.mark.parametrize("unit", dicts.LIMIT_UNITS)
def test_working_time_matches_the_reference_on_random_instants(calendar: pd.DataFrame, unit: str) -> None:
    rng = np.random.default_rng(20251001)
    starts = _random_starts(rng, 1500)
    amounts = np.where(rng.random(1500) < 0.5, rng.choice([0.5, 1, 2, 3.5, 4, 7.5, 8, 16, 40], 1500),
                       np.round(rng.uniform(0.01, 60 if unit != "work_days" else 12, 1500), 2))
    result = dicts.add_working_time(starts, amounts, unit, calendar)
    listed = listed_days(calendar)
    for start, amount, got in zip(starts, amounts, result, strict=True):
        want = reference_add(start.to_pydatetime(), float(amount), unit, listed)
        assert abs(got.to_pydatetime() - want) <= timedelta(microseconds=1), (start, amount, unit, got, want)


def test_working_time_vectorised_over_a_million_rows(calendar: pd.DataFrame) -> None:
    rng = np.random.default_rng(7)
    size = 1_000_000
    starts = _random_starts(rng, size).dt.tz_convert("UTC")
    amounts = rng.choice([1, 2, 4, 5], size).astype(float)
    units = rng.choice(np.array(dicts.LIMIT_UNITS, dtype=object), size)
    result = dicts.add_working_time(starts, amounts, units, calendar)
    assert len(result) == size and str(result.dt.tz) == "UTC" and result.notna().all()
    assert (result >= starts).all()
    listed = listed_days(calendar)
    for i in rng.choice(size, 300, replace=False):
        want = reference_add(starts.iloc[i].to_pydatetime(), amounts[i], units[i], listed)
        assert result.iloc[i].to_pydatetime() == want, (starts.iloc[i], amounts[i], units[i])


def test_working_time_keeps_index_zone_and_missing_values(calendar: pd.DataFrame) -> None:
    starts = pd.Series(pd.to_datetime(["2025-03-14 10:00:00+00:00", None], utc=True), index=[10, 20], name="registered_at")
    result = dicts.add_working_time(starts, 2, "work_hours", calendar)
    assert list(result.index) == [10, 20] and result.name == "registered_at"
    assert str(result.dt.tz) == "UTC"
    # 10:00 UTC is 18:00 in Shanghai on a Friday: Monday 10:30 Shanghai, 02:30 UTC.
    assert result.iloc[0] == pd.Timestamp("2025-03-17 02:30", tz="UTC")
    assert pd.isna(result.iloc[1])
    assert dicts.add_working_time(starts.iloc[:0], 2, "work_hours", calendar).empty


def test_working_time_with_other_periods(calendar: pd.DataFrame) -> None:
    summer = ((time(8, 0), time(12, 0)), (time(14, 30), time(18, 0)))
    assert dicts.working_day_hours(summer) == 7.5
    assert dicts.working_day_hours() == 7.5
    result = dicts.add_working_time(_shanghai("2025-07-04 17:00"), 2, "work_hours", calendar, periods=summer)
    assert result.iloc[0] == pd.Timestamp("2025-07-07 09:00", tz="Asia/Shanghai")
    with pytest.raises(ValueError, match="ordered"):
        dicts.add_working_time(_shanghai("2025-07-04 17:00"), 2, "work_hours", calendar,
                               periods=((time(13, 0), time(14, 0)), (time(8, 0), time(12, 0))))


def test_working_time_refuses_bad_input(calendar: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="unit must be one of"):
        dicts.add_working_time(_shanghai("2025-03-17 10:00"), 2, "minutes", calendar)
    with pytest.raises(ValueError, match="negative"):
        dicts.add_working_time(_shanghai("2025-03-17 10:00"), -1, "work_hours", calendar)
    with pytest.raises(ValueError, match="timezone-aware"):
        dicts.add_working_time(pd.Series(pd.to_datetime(["2025-03-17 10:00"])), 2, "work_hours", calendar)
