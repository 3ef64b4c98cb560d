"""The case lists of one community or grid (geodata.planner.case_page) against the raw cases, grid-less too."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from sqlalchemy import text

from geodata import planner
from geodata.facts import FactQuery
from geodata.settings import Settings
from tests import factories
from tests.conftest import SuiteStore, separate_database
from tests.test_etl_cases import _csv, _row

GRIDDED = "370303001001"  # four unit grids
GRIDLESS = "370303002002"  # no unit grid: its cases have a community and no grid


def test_a_communitys_list_holds_its_gridded_and_its_gridless_cases(store: SuiteStore, tmp_path: Path) -> None:
    """A community reads its gridded cases as a range of the grid index and the others through the partial
    index of grid-less cases (migration 0009): together exactly the raw cases of the community, newest
    first, and nothing of the neighbours (whose codes share the prefix of the street)."""
    places = {
        "370303001001001": ("118.01", "36.79"), "370303001001004": ("118.035", "36.815"),  # GRIDDED's grids
        "370303001002001": ("118.01", "36.84"),  # the next community of the same street
        GRIDLESS: ("118.08", "36.86"),
    }
    rows = [_row(f"L{n:02d}{i}", 经度=lon, 纬度=lat, 上报时间=f"2025-04-0{i + 1} 08:00:00",
                 立案时间=f"2025-04-0{i + 1} 08:10:00", 派遣时间=f"2025-04-0{i + 1} 08:20:00",
                 处置时间=f"2025-04-0{i + 1} 09:00:00", 结案时间=f"2025-04-0{i + 1} 09:30:00")
            for n, (lon, lat) in enumerate(places.values()) for i in range(3)]
    with separate_database(store, "citygrid_lists") as engine:
        settings = Settings(data_dir=tmp_path / "data")
        factories.build_city(engine, tmp_path, settings)
        loaded = factories.load(engine, _csv(tmp_path / "cases.csv", rows), "case", settings, crs="EPSG:4326")
        assert (loaded.rows_new, loaded.rows_rejected) == (len(rows), 0), loaded.notes
        with engine.connect() as conn:
            index = conn.execute(text(
                "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'core.case_record'::regclass"
                " AND pg_get_indexdef(indexrelid) LIKE '%community_code%'")).scalar_one()
            assert "WHERE (grid_code IS NULL)" in index
            for community in (GRIDDED, GRIDLESS):
                raw = conn.execute(text(
                    "SELECT case_number FROM core.case_record WHERE community_code = :c"
                    " ORDER BY reported_at DESC, case_number"), {"c": community}).scalars().all()
                page, total = planner.case_page(conn, FactQuery(date(2025, 4, 1), date(2025, 4, 30), community),
                                                0, 50)
                assert total == len(raw) == len(page) and list(page["case_number"]) == raw
            assert total == 3 and len(raw) == 3  # the grid-less community's own three
            gridded, total = planner.case_page(conn, FactQuery(date(2025, 4, 1), date(2025, 4, 30), GRIDDED), 0, 50)
            assert total == 6 and set(gridded["case_number"]) == {"L000", "L001", "L002", "L010", "L011", "L012"}


def test_a_first_big_load_builds_the_reporters_key_once(store: SuiteStore, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Into an empty reporters' table a big load copies without the key and builds it after (etl.bulk):
    the personal fields are mapped batch by batch, so the load asks the mapping whether the source has any.
    The key is back at the end and the reporters are all there."""
    from etl import bulk

    dropped: list[object] = []
    drop = bulk.drop_empty_reporter_key
    monkeypatch.setattr(bulk, "REPORTER_BULK_ROWS", 1)
    monkeypatch.setattr("etl.cases.drop_empty_reporter_key",
                        lambda conn, rows: dropped.append(drop(conn, rows)) or dropped[-1])
    rows = [_row(f"K{i:03d}", 上报时间=f"2025-04-0{i + 1} 08:00:00", 立案时间=f"2025-04-0{i + 1} 08:10:00",
                 派遣时间=f"2025-04-0{i + 1} 08:20:00", 处置时间=f"2025-04-0{i + 1} 09:00:00",
                 结案时间=f"2025-04-0{i + 1} 09:30:00") for i in range(3)]
    with separate_database(store, "citygrid_reporters") as engine:
        settings = Settings(data_dir=tmp_path / "data")
        factories.build_city(engine, tmp_path, settings)
        loaded = factories.load(engine, _csv(tmp_path / "cases.csv", rows), "case", settings, crs="EPSG:4326")
        assert (loaded.rows_new, loaded.rows_rejected) == (3, 0), loaded.notes
        assert len(dropped) == 1 and dropped[0] is not None  # the key went, and came back:
        with engine.connect() as conn:
            key = conn.execute(text("SELECT pg_get_constraintdef(oid) FROM pg_constraint"
                                    " WHERE conrelid = 'private.case_reporter'::regclass AND contype = 'p'")).scalar_one()
            assert key == "PRIMARY KEY (case_number, case_reported_at)"
            assert conn.execute(text("SELECT count(*) FROM private.case_reporter")).scalar_one() == 3
