"""The rollups agree with the raw-case reference (geodata.kpi.count_cases) for any period, area and moment."""

from __future__ import annotations

import random
from dataclasses import asdict
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import text

from geodata import rollups
from geodata.kpi import TIMEZONE, KpiError, count_cases
from geodata.rollups import refresh_all
from tests.conftest import DemoCity, SuiteStore
from tests.test_kpi import boundary_cases  # noqa: F401  (the fixture: eight cases at every boundary)

DEMO_FIRST, DEMO_LAST = date(2025, 10, 1), date(2026, 9, 30)


def _equal(a: object, b: object) -> None:
    left, right = asdict(a), asdict(b)  # type: ignore[call-overload]
    assert left.pop("handle_hours_sum") == pytest.approx(right.pop("handle_hours_sum"), rel=1e-9, abs=1e-6)
    assert left == right


def test_boundary_cases_through_the_rollups(store: SuiteStore, boundary_cases) -> None:  # noqa: F811
    """The hand-checked boundary cases (test_kpi) give the same counts from the rollups, at several moments."""
    day = date(2024, 6, 3)
    for as_of in (datetime(2024, 6, 3, 12, 0, tzinfo=TIMEZONE), datetime(2024, 6, 3, 15, 0, tzinfo=TIMEZONE),
                  datetime(2024, 6, 20, tzinfo=TIMEZONE), None):
        with store.reader.connect() as conn:
            got = rollups.unit_counts(conn, day, day, "370303", as_of=as_of)
        _equal(got, count_cases(store.reader, day, day, "370303", as_of=as_of))
    with store.reader.connect() as conn:
        assert rollups.unit_counts(conn, day, day, "370303").overdue_open == 1


def test_random_periods_and_units_match_raw_cases(demo_city: DemoCity) -> None:
    rng = random.Random(7)
    engine = demo_city.store.reader
    with engine.connect() as conn:
        streets = conn.execute(text("SELECT code FROM core.admin_unit WHERE level = 'street'")).scalars().all()
        communities = conn.execute(text(
            "SELECT code FROM core.admin_unit WHERE level = 'community' ORDER BY code")).scalars().all()
        areas = [None, "370303", "370305", *rng.sample(streets, 3), *rng.sample(communities, 3)]
        for area in areas:
            start = DEMO_FIRST + timedelta(days=rng.randrange(0, 330))
            end = start + timedelta(days=rng.randrange(0, 60))
            as_of = datetime.combine(end + timedelta(days=rng.randrange(0, 5)), datetime.min.time(), TIMEZONE)
            _equal(rollups.unit_counts(conn, start, end, area, as_of=as_of),
                   count_cases(conn, start, end, area, as_of=as_of))


def test_children_match_raw_cases_and_sum_to_the_parent(demo_city: DemoCity) -> None:
    engine = demo_city.store.reader
    start, end = date(2026, 3, 5), date(2026, 4, 20)
    with engine.connect() as conn:
        districts = rollups.child_counts(conn, start, end)
        assert set(districts) == {"370303", "370305"}
        for code, counts in districts.items():
            _equal(counts, count_cases(conn, start, end, code))
        streets = rollups.child_counts(conn, start, end, "370305")
        assert sum(c.reported for c in streets.values()) == districts["370305"].reported
        street = max(streets, key=lambda code: streets[code].reported)
        _equal(streets[street], count_cases(conn, start, end, street))
        communities = rollups.child_counts(conn, start, end, street)
        assert sum(c.reported for c in communities.values()) == streets[street].reported
        community = max(communities, key=lambda code: communities[code].reported)
        # Grids are monthly: the period widens to whole months (March and April here).
        grids = rollups.child_counts(conn, start, end, community)
        grid = max(grids, key=lambda code: grids[code].reported)
        _equal(grids[grid], count_cases(conn, date(2026, 3, 1), date(2026, 4, 30), grid))


def test_series_recurring_places_and_assets(demo_city: DemoCity) -> None:
    engine = demo_city.store.reader
    with engine.connect() as conn:
        series = rollups.daily_series(conn, DEMO_FIRST, DEMO_LAST, "370305")
        assert len(series) > 300
        assert sum(r["reported"] for r in series) == count_cases(conn, DEMO_FIRST, DEMO_LAST, "370305").reported
        assert rollups.data_span(conn) == (DEMO_FIRST, DEMO_LAST)
        top = conn.execute(text("SELECT grid_code, kind, category_code, cases FROM rollup.recurring_place"
                                " ORDER BY cases DESC LIMIT 1")).one()
        again = conn.execute(text(
            "SELECT count(*) FROM core.case_record WHERE grid_code = :g AND kind = :k AND category_code = :c"
            " AND voided_at IS NULL AND reported_at >= :since"),
            {"g": top.grid_code, "k": top.kind, "c": top.category_code,
             "since": datetime.combine(DEMO_LAST - timedelta(days=89), datetime.min.time(), TIMEZONE)}).scalar_one()
        assert top.cases == again >= rollups.RECURRING_MIN_CASES
        assets = dict(conn.execute(text("SELECT unit_code, cameras FROM rollup.unit_asset WHERE level = 'district'")
                                   ).all())
        assert sum(assets.values()) == conn.execute(text(
            "SELECT count(*) FROM core.camera WHERE grid_code IS NOT NULL")).scalar_one() > 0
        blind = conn.execute(text("SELECT sum(blind_grids), sum(grids) FROM rollup.unit_asset WHERE level = 'district'"
                                  )).one()
        assert 0 < blind[0] < blind[1]


#: Every case rollup table with its key columns (what ORDER BY needs to compare two reads row by row).
_CASE_TABLES = {"case_day_unit": "level, unit_code, day", "case_month_grid": "grid_code, month",
                "case_day_category": "district_code, day, kind, category_code",
                "case_day_h3": "district_code, day, h3_r8", "open_case": "case_number, reported_at",
                "recurring_place": "grid_code, kind, category_code"}


def _case_tables(conn) -> dict[str, list[tuple]]:  # type: ignore[no-untyped-def]
    """Every row and column of the case rollups (the float sum rounded to 6 places)."""
    out = {}
    for table, keys in _CASE_TABLES.items():
        columns = conn.execute(text(
            "SELECT string_agg(CASE WHEN atttypid = 'float8'::regtype THEN format('round(%I::numeric, 6)', attname)"
            " ELSE quote_ident(attname) END, ', ' ORDER BY attnum) FROM pg_attribute"
            " WHERE attrelid = CAST(:table AS regclass) AND attnum > 0 AND NOT attisdropped"
        ), {"table": f"rollup.{table}"}).scalar_one()
        out[table] = conn.execute(text(f"SELECT {columns} FROM rollup.{table} ORDER BY {keys}")).all()  # noqa: S608
    return out


def test_a_full_refresh_gives_the_same_rows(demo_city: DemoCity) -> None:
    """Refreshing everything again (``citygrid rollups refresh``) changes nothing: the incremental refresh
    after each load (the ETL's deltas, COPYed in on fresh days and merged on the others) already left every
    row and column of every rollup exact."""
    with demo_city.store.reader.connect() as conn:
        before = _case_tables(conn)
        public_before = _public_tables(conn)
    with demo_city.store.writer.begin() as conn:
        rollups.refresh_all(conn)
    with demo_city.store.reader.connect() as conn:
        after = _case_tables(conn)
        public_after = _public_tables(conn)
    assert len(before["case_day_unit"]) > 1000 and len(before["case_month_grid"]) > 1000
    assert len(before["open_case"]) > 100 and len(before["recurring_place"]) > 10
    for table in _CASE_TABLES:
        assert before[table] == after[table], table
    # (The public rollups keep only the public window's days: those of the demo year still in it.)
    assert all(len(rows) > 20 for rows in public_before) and public_before == public_after


def test_bad_areas_are_refused(demo_city: DemoCity) -> None:
    with demo_city.store.reader.connect() as conn:
        for bad in ("3703", "370303' OR 1=1 --", "370303001001001"):
            with pytest.raises(KpiError):
                rollups.unit_counts(conn, DEMO_FIRST, DEMO_LAST, bad)
        with pytest.raises(KpiError):
            rollups.daily_series(conn, DEMO_FIRST, DEMO_LAST, None, ("reported; DROP TABLE x",))


def test_the_command_line_rebuilds_them(store: SuiteStore, boundary_cases, tmp_path) -> None:  # noqa: F811
    import subprocess
    import sys

    from geodata.settings import PROJECT_ROOT

    env = {"PATH": "/usr/bin:/bin", **store.environment(), "CITYGRID_DATA_DIR": str(tmp_path)}
    with store.reader.connect() as conn:
        version = conn.execute(text("SELECT version FROM core.data_version")).scalar_one()
    out = subprocess.run([sys.executable, "-m", "cli", "rollups", "refresh"], cwd=PROJECT_ROOT, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "rollups rebuilt" in out.stdout
    with store.reader.connect() as conn:
        assert conn.execute(text("SELECT version FROM core.data_version")).scalar_one() == version + 1
        day = date(2024, 6, 3)
        _equal(rollups.unit_counts(conn, day, day, "370303"), count_cases(conn, day, day, "370303"))


# --- the public rollups (migration 0006) ------------------------------------------------------------------

_PUBLIC_DIRECT = {  # what layers/public_cases.py computed from open_data.case_public before the rollups
    "h3": ("h3_r8, h3_r7, street_code", "h3_r8 IS NOT NULL AND h3_r7 IS NOT NULL"),
    "grid": ("grid_code, street_code", "grid_code IS NOT NULL"),
    "street": ("street_code", "street_code IS NOT NULL"),
}
_PUBLIC_SUMS = ("count(*), count(*) FILTER (WHERE status = 'closed'), count(*) FILTER (WHERE closed_on_time),"
                " count(*) FILTER (WHERE status = 'closed' AND resolution_level = 'grid'),"
                " count(*) FILTER (WHERE status = 'closed' AND resolution_level IS NOT NULL),"
                " coalesce(sum(extract(epoch FROM handled_at - reported_at) / 3600.0), 0), count(handled_at)")


def assert_public_rollups_match(conn) -> int:  # type: ignore[no-untyped-def]
    """The open_data views over the public rollups equal a direct aggregation of open_data.case_public, day
    by day, for every whole day the two both cover; returns how many cases that compared."""
    first_full = conn.execute(text(
        "SELECT ((now() - make_interval(hours => delay_hours) - make_interval(days => window_days))"
        " AT TIME ZONE 'Asia/Shanghai')::date + 1 FROM core.public_policy")).scalar_one()
    first, last = conn.execute(text("SELECT first_day, last_day FROM open_data.public_days")).one()
    span = {"lo": max(first, first_full), "hi": last}
    assert span["lo"] <= span["hi"]
    compared = 0
    for table, (keys, where) in _PUBLIC_DIRECT.items():  # table names and columns: this module's constants
        rolled = conn.execute(text(
            f"SELECT day, {keys}, cases, solved, solved_on_time, solved_in_grid, solved_with_level,"  # noqa: S608
            f" handle_hours_sum, handle_hours_count FROM open_data.case_public_{table}"
            " WHERE day BETWEEN :lo AND :hi"), span).all()
        direct = conn.execute(text(
            f"SELECT (reported_at AT TIME ZONE 'Asia/Shanghai')::date AS day, {keys}, {_PUBLIC_SUMS}"  # noqa: S608
            f" FROM open_data.case_public WHERE {where}"
            " AND (reported_at AT TIME ZONE 'Asia/Shanghai')::date BETWEEN :lo AND :hi"
            f" GROUP BY 1, {keys}"), span).all()
        got = {tuple(r[:-7]): tuple(r[-7:]) for r in rolled}
        expected = {tuple(r[:-7]): tuple(r[-7:]) for r in direct}
        assert got.keys() == expected.keys(), table
        for key, values in expected.items():
            assert got[key][:5] == values[:5] and got[key][6] == values[6], (table, key, got[key], values)
            assert float(got[key][5]) == pytest.approx(float(values[5]), rel=1e-9, abs=1e-6), (table, key)
        if table == "street":
            compared = sum(v[0] for v in expected.values())
    return compared


def _public_tables(conn) -> list[list[tuple]]:  # type: ignore[no-untyped-def]
    keys = {"h3": "day, h3_r8, h3_r7, street_code", "grid": "day, grid_code, street_code", "street": "day, street_code"}
    return [conn.execute(text(
        f"SELECT {columns}, cases, solved, solved_on_time, solved_in_grid, solved_with_level,"  # noqa: S608
        f" round(handle_hours_sum::numeric, 6), handle_hours_count FROM rollup.public_day_{table} ORDER BY {columns}"
    )).all() for table, columns in keys.items()]


def test_public_rollups_match_the_public_view_on_the_demo_city(demo_city: DemoCity) -> None:
    """The public rollups give what case_public gives, over the demo's whole year: the policy is set to
    366 days ending with the demo's last day (a delay reaching back to it), which makes the deferred
    trigger rebuild them; all inside a transaction that is rolled back."""
    with demo_city.store.writer.connect() as conn, conn.begin():
        now = conn.execute(text("SELECT now()")).scalar_one()
        reference = datetime.combine(DEMO_LAST + timedelta(days=1), datetime.min.time(), TIMEZONE)
        delay = int((now - reference).total_seconds() // 3600)
        conn.execute(text("UPDATE core.public_policy SET window_days = 366, delay_hours = :delay"), {"delay": delay})
        conn.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))  # the rebuild, now rather than at commit
        assert conn.execute(text("SELECT last_day FROM open_data.public_days")).scalar_one() == DEMO_LAST
        assert assert_public_rollups_match(conn) > 80_000
        sensitive_cases = conn.execute(text(
            "SELECT count(*) FROM core.case_record c JOIN core.category k ON k.kind = c.kind"
            " AND k.code = c.category_code WHERE k.sensitive")).scalar_one()
        assert sensitive_cases > 0, "the demo city must have sensitive cases for this test to mean anything"
        conn.rollback()


def test_public_rollups_follow_updates_sensitivity_and_refresh(store: SuiteStore, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """On a city of its own: after the load, after an update file (stages advance, a case is voided, cases
    move to a sensitive category), after a full refresh and when a category's flag flips, the public
    rollups equal case_public; the moved and voided cases leave the public numbers."""
    import csv

    from geodata.settings import Settings
    from tests import factories, public_city
    from tests.conftest import separate_database

    settings = Settings(data_dir=tmp_path / "data")
    with separate_database(store, "citygrid_pubroll") as engine:
        public_city.build(engine, tmp_path, settings)
        with engine.connect() as conn:
            before = assert_public_rollups_match(conn)
        assert before == sum(n for _, n in public_city.GRIDS.values())

        rows = list(csv.DictReader((tmp_path / "public_cases.csv").open(encoding="utf-8")))
        public_rows = [r for r in rows if r["小类"] == "暴露垃圾"]
        still_open = [r for r in public_rows if not r["处置时间"]]
        assert len(still_open) >= 3
        closing, voiding = still_open[:-1], still_open[-1]
        moving = [r for r in public_rows if r["处置时间"]][:4]
        for r in closing:
            dispatched = datetime.fromisoformat(r["派遣时间"])
            r.update(处置时间=(dispatched + timedelta(hours=2)).isoformat(sep=" "),
                     结案时间=(dispatched + timedelta(hours=3)).isoformat(sep=" "), 解决层级="网格")
        voiding["作废时间"] = (datetime.fromisoformat(voiding["上报时间"]) + timedelta(hours=1)).isoformat(sep=" ")
        for r in moving:
            r.update(大类="扩展事件", 小类="关爱对象求助")
        update = tmp_path / "updates.csv"
        with update.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, [*public_city.HEADERS, "作废时间"])
            writer.writeheader()
            writer.writerows({"作废时间": "", **r} for r in [*closing, voiding, *moving])
        result = factories.load(engine, update, "case", settings, crs="EPSG:4326")
        assert (result.rows_rejected, result.rows_updated) == (0, len(closing) + 1 + len(moving)), result
        with engine.connect() as conn:
            assert assert_public_rollups_match(conn) == before - len(moving) - 1
            tables = _public_tables(conn)
            solved = conn.execute(text("SELECT sum(solved) FROM rollup.public_day_street")).scalar_one()
        assert solved == sum(1 for r in public_rows if r["结案时间"]) - len(moving)

        with engine.begin() as conn:  # what `citygrid rollups refresh` runs
            refresh_all(conn)
        with engine.connect() as conn:
            assert _public_tables(conn) == tables, "the deltas left exactly what a rebuild makes"
            assert_public_rollups_match(conn)

        # A category newly marked sensitive leaves the public rollups as its transaction commits; flags
        # flipped one statement at a time (as the dictionary load does) cost one rebuild, for the end state.
        with engine.begin() as conn:
            conn.execute(text("UPDATE core.category SET sensitive = true WHERE kind = 'event' AND code = '0102'"))
            conn.execute(text("UPDATE core.category SET sensitive = false WHERE kind = 'event' AND code = '0601'"))
        with engine.connect() as conn:
            assert assert_public_rollups_match(conn) == public_city.SENSITIVE_CASES + len(moving)
        with engine.begin() as conn:
            conn.execute(text("UPDATE core.category SET sensitive = false WHERE kind = 'event' AND code = '0102'"))
            conn.execute(text("UPDATE core.category SET sensitive = true WHERE kind = 'event' AND code = '0601'"))
        with engine.connect() as conn:
            assert _public_tables(conn) == tables


def test_a_load_under_other_sensitive_categories_rebuilds_its_days(store: SuiteStore, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The ETL's public delta assumes the shipped dictionary's sensitive categories; a store that marks
    others (here 暴露垃圾) gets the load's days rebuilt from raw cases instead: still no sensitive case."""
    import csv

    from geodata.settings import Settings
    from tests import factories, public_city
    from tests.conftest import separate_database

    settings = Settings(data_dir=tmp_path / "data")
    with separate_database(store, "citygrid_pubsens") as engine:
        public_city.build(engine, tmp_path, settings)
        with engine.begin() as conn:
            conn.execute(text("UPDATE core.category SET sensitive = true WHERE kind = 'event' AND code = '0102'"))
        rows = list(csv.DictReader((tmp_path / "public_cases.csv").open(encoding="utf-8")))
        more = tmp_path / "more.csv"
        with more.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, public_city.HEADERS)
            writer.writeheader()
            writer.writerows({**r, "案件编号": "NEW" + r["案件编号"]} for r in rows if r["小类"] == "暴露垃圾")
        result = factories.load(engine, more, "case", settings, crs="EPSG:4326")
        assert result.rows_new == 73 and result.rows_rejected == 0
        with engine.connect() as conn:
            assert assert_public_rollups_match(conn) == 0
            assert conn.execute(text("SELECT count(*) FROM rollup.public_day_h3")).scalar_one() == 0
            conn.execute(text("UPDATE core.category SET sensitive = false WHERE kind = 'event' AND code = '0102'"))
            conn.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))  # the deferred rebuild, before the rollback
            assert assert_public_rollups_match(conn) == 2 * 73
            conn.rollback()


def test_public_rollup_migration_goes_down_and_up(store: SuiteStore, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """0006 down drops its tables, views and triggers; up again fills the tables from the stored cases."""
    from geodata import migrate
    from geodata.settings import Settings
    from tests import public_city

    public_city.build(store.writer, tmp_path, Settings(data_dir=tmp_path / "data"))  # the suite's public city
    with store.writer.connect() as conn:
        tables = _public_tables(conn)
    assert all(tables), "the public city's cases must be in the public rollups"
    assert migrate.downgrade(store.writer, "0005") == "0005"
    try:
        with store.writer.connect() as conn:
            left = conn.execute(text(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE (n.nspname = 'rollup' AND c.relname LIKE 'public_day_%')"
                " OR (n.nspname = 'open_data' AND (c.relname LIKE 'case_public_%' OR c.relname = 'public_days'))"
            )).scalar_one()
            triggers = conn.execute(text("SELECT count(*) FROM pg_trigger"
                                         " WHERE tgname IN ('category_public_rollups', 'policy_public_rollups')")
                                    ).scalar_one()
        assert (left, triggers) == (0, 0)
    finally:
        assert migrate.upgrade(store.writer) == migrate.head_revision()
    with store.writer.connect() as conn:
        assert _public_tables(conn) == tables


def test_recurring_places_counted_in_memory_equal_the_query(store: SuiteStore, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A load whose cases are all the recurring window holds counts the places itself (etl.rollup_delta);
    they equal what the SQL counts from the stored cases -- open cases, voided ones left out, a case in a
    community without grids, the window's first day -- and a later load that reaches into the old window
    falls back to the query."""
    from geodata.settings import Settings
    from tests import factories
    from tests.conftest import separate_database
    from tests.test_etl_cases import _csv, _row

    grid_point = {"经度": "118.01", "纬度": "36.79"}  # grid 370303001001001
    other_grid = {"经度": "118.035", "纬度": "36.79"}  # grid 370303001001002
    no_grid = {"经度": "118.08", "纬度": "36.86"}  # community 370303002002 has no grids
    last = date(2025, 6, 30)

    def case(number: str, day: date, where: dict[str, str], minor: str = "暴露垃圾", **stages: str) -> list[str]:
        at = f"{day:%Y-%m-%d}"
        values = {"上报时间": f"{at} 08:00:00", "立案时间": f"{at} 08:10:00", "派遣时间": f"{at} 08:20:00",
                  "处置时间": f"{at} 09:00:00", "结案时间": f"{at} 09:30:00", "小类": minor, **where, **stages}
        return _row(number, **values)

    window_start = last - timedelta(days=rollups.RECURRING_WINDOW_DAYS - 1)
    rows = [case(f"R{i:03d}", last - timedelta(days=i * 7), grid_point) for i in range(6)]  # 6 in the window
    rows += [case("R100", window_start, other_grid), case("R101", window_start - timedelta(days=1), other_grid),
             case("R102", last, other_grid, 结案时间=""), case("R103", last, other_grid)]  # 3 in, one open
    rows += [case(f"R2{i:02d}", last - timedelta(days=i), other_grid, minor="道路破损") for i in range(2)]  # only 2
    rows += [case(f"R3{i:02d}", last - timedelta(days=i), no_grid) for i in range(4)]  # no grid: never a place
    queried: list[bool] = []
    by_query = rollups._refresh_recurring
    monkeypatch.setattr(rollups, "_refresh_recurring", lambda conn: (queried.append(True), by_query(conn))[1])
    with separate_database(store, "citygrid_recurring") as engine:
        settings = Settings(data_dir=tmp_path / "data")
        factories.build_city(engine, tmp_path, settings)
        result = factories.load(engine, _csv(tmp_path / "first.csv", rows), "case", settings, crs="EPSG:4326")
        assert (result.rows_new, result.rows_rejected) == (len(rows), 0), result.notes
        assert queried == []  # counted in memory
        query = text("SELECT * FROM rollup.recurring_place ORDER BY grid_code, kind, category_code")
        with engine.connect() as conn:
            in_memory = conn.execute(query).all()
        with engine.begin() as conn:
            by_query(conn)
            by_sql = conn.execute(query).all()
        assert in_memory == by_sql
        assert [(r.grid_code, r.cases, r.open_cases, r.first_day, r.last_day) for r in in_memory] == [
            ("370303001001001", 6, 0, last - timedelta(days=35), last),
            ("370303001001002", 3, 1, window_start, last),
        ]
        # A later load inside the same window: the store holds window cases now, so the query counts.
        later = [case("R400", last, grid_point, 结案时间="")]
        factories.load(engine, _csv(tmp_path / "later.csv", later), "case", settings, crs="EPSG:4326")
        assert queried == [True]
        with engine.connect() as conn:
            place = conn.execute(text("SELECT cases, open_cases FROM rollup.recurring_place"
                                      " WHERE grid_code = '370303001001001'")).one()
        assert tuple(place) == (7, 1)


def test_an_update_that_places_its_case_elsewhere_keeps_the_stored_place(store: SuiteStore, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An update row whose coordinates fall in another grid changes the case's stages, not its place (a
    case's place is its own); the rollups' delta counts it where it is stored, so they equal a rebuild, and
    the load says so in a note.  (Found at city scale: a few dozen updates near grid edges.)"""
    from geodata.settings import Settings
    from tests import factories
    from tests.conftest import separate_database
    from tests.test_etl_cases import _csv, _row

    first = _row("MOVE001", 经度="118.01", 纬度="36.79", 处置时间="", 结案时间="", 解决层级="",
                 满意度="")  # grid ...001001001, dispatched and open
    moved = _row("MOVE001", 经度="118.035", 纬度="36.815")  # grid ...001001004: handled and closed
    with separate_database(store, "citygrid_moved") as engine:
        settings = Settings(data_dir=tmp_path / "data")
        factories.build_city(engine, tmp_path, settings)
        loaded = factories.load(engine, _csv(tmp_path / "first.csv", [first]), "case", settings, crs="EPSG:4326")
        assert (loaded.rows_new, loaded.rows_rejected) == (1, 0), loaded.notes
        update = factories.load(engine, _csv(tmp_path / "update.csv", [moved]), "case", settings, crs="EPSG:4326")
        assert (update.rows_updated, update.rows_rejected) == (1, 0)
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT grid_code, status FROM core.case_record WHERE case_number = 'MOVE001'")).one()
            assert tuple(stored) == ("370303001001001", "closed")
            delta_built = _case_tables(conn)
            grid_rows = conn.execute(text("SELECT grid_code, reported, closed FROM rollup.case_month_grid")).all()
        assert [tuple(r) for r in grid_rows] == [("370303001001001", 1, 1)]
        with engine.begin() as conn:
            rollups.refresh_all(conn)
            assert _case_tables(conn) == delta_built
        assert any("elsewhere than it is stored" in note for note in update.notes), update.notes
