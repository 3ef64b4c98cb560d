"""The rollups agree with the raw-case reference (geodata.kpi.count_cases) for any period, area and moment."""

from __future__ import annotations

import random
from dataclasses import asdict
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import text

from geodata import rollups
from geodata.kpi import TIMEZONE, KpiError, count_cases
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


def test_a_full_refresh_gives_the_same_rows(demo_city: DemoCity) -> None:
    """Refreshing everything again (``citygrid rollups refresh``) changes nothing: the incremental refresh
    after each load already left the rollups exact."""
    query = text("SELECT level, unit_code, day, reported, closed, closed_on_time,"
                 " round(handle_hours_sum::numeric, 6) FROM rollup.case_day_unit ORDER BY 1, 2, 3")
    with demo_city.store.reader.connect() as conn:
        before = conn.execute(query).all()
    with demo_city.store.writer.begin() as conn:
        rollups.refresh_all(conn)
    with demo_city.store.reader.connect() as conn:
        after = conn.execute(query).all()
    assert len(before) > 1000 and before == after


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
