"""The facts engine (geodata/facts.py) counts exactly what the raw-case reference counts, for any filters."""

from __future__ import annotations

import csv
import random
from dataclasses import asdict
from datetime import date, datetime, timedelta

import h3
import pytest
from sqlalchemy import text

from geodata import rollups
from geodata.facts import CaseFacts, FactQuery, FactsError, facts_for
from geodata.kpi import TIMEZONE, CaseFilter, count_cases
from geodata.settings import Settings
from tests import factories
from tests.conftest import DemoCity, SuiteStore

FIRST, LAST = date(2025, 10, 1), date(2026, 9, 30)


def _equal(a: object, b: object) -> None:
    left, right = asdict(a), asdict(b)  # type: ignore[call-overload]
    assert left.pop("handle_hours_sum") == pytest.approx(right.pop("handle_hours_sum"), rel=1e-6, abs=1e-3)
    assert left == right


@pytest.fixture(scope="module")
def facts(demo_city: DemoCity, tmp_path_factory: pytest.TempPathFactory) -> CaseFacts:
    return CaseFacts(demo_city.store.reader, Settings(data_dir=tmp_path_factory.mktemp("facts")))


def test_random_filtered_queries_match_raw_cases(demo_city: DemoCity, facts: CaseFacts) -> None:
    rng = random.Random(11)
    with demo_city.store.reader.connect() as conn:
        streets = conn.execute(text("SELECT code FROM core.admin_unit WHERE level = 'street'")).scalars().all()
        popular = conn.execute(text("SELECT kind, category_code FROM core.case_record GROUP BY 1, 2"
                                    " ORDER BY count(*) DESC LIMIT 5")).all()
        for i in range(12):
            start = FIRST + timedelta(days=rng.randrange(0, 300))
            end = start + timedelta(days=rng.randrange(0, 90))
            area = rng.choice([None, "370303", "370305", *streets])
            kind, category = rng.choice(popular)
            choice = i % 4
            narrowing = [CaseFilter(), CaseFilter(kind=kind, category_code=category),
                         CaseFilter(source_channel=rng.choice(["patrol", "citizen", "hotline"])),
                         CaseFilter(resolution_level=rng.choice(["grid", "community", "street"]))][choice]
            query = FactQuery(start, end, area,
                              categories=(f"{kind}/{category}",) if choice == 1 else (),
                              channels=(narrowing.source_channel,) if narrowing.source_channel else (),
                              levels=(narrowing.resolution_level,) if narrowing.resolution_level else ())
            as_of = datetime.combine(end, datetime.min.time(), TIMEZONE) + timedelta(hours=rng.randrange(0, 200))
            _equal(facts.counts(query, as_of), count_cases(conn, start, end, area, narrowing, as_of))


def test_groupings_agree_with_the_rollups(demo_city: DemoCity, facts: CaseFacts) -> None:
    start, end = date(2026, 2, 10), date(2026, 5, 3)
    as_of = datetime(2026, 10, 1, tzinfo=TIMEZONE)
    with demo_city.store.reader.connect() as conn:
        streets = rollups.child_counts(conn, start, end, "370305", as_of=as_of)
    by_street = facts.group_counts(FactQuery(start, end, "370305"), "street", as_of)
    assert set(by_street.index) == set(streets)
    for code, counts in streets.items():
        _equal(factsrow(by_street, code), counts)
    total = facts.counts(FactQuery(start, end, "370305"), as_of).reported
    for by in ("h3_r7", "h3_r8", "h3_r9", "hour_dow", "category", "major", "channel", "day", "grid"):
        frame = facts.group_counts(FactQuery(start, end, "370305"), by, as_of)
        assert int(frame["reported"].sum()) == total, by
    cells = facts.group_counts(FactQuery(start, end, "370305"), "h3_r8", as_of).index
    assert all(h3.get_resolution(h3.int_to_str(int(c))) == 8 for c in cells)
    majors = facts.group_counts(FactQuery(start, end, "370305"), "major", as_of)
    one = majors["reported"].idxmax()
    only = facts.counts(FactQuery(start, end, "370305", majors=(one,)), as_of)
    assert only.reported == majors.loc[one, "reported"]


def factsrow(frame, code):  # type: ignore[no-untyped-def]
    from geodata.facts import to_case_counts

    return to_case_counts(frame.loc[code])


def test_rows_give_points_and_numbers_of_real_cases(demo_city: DemoCity, facts: CaseFacts) -> None:
    query = FactQuery(date(2026, 9, 1), date(2026, 9, 30), "370305", channels=("patrol",))
    rows = facts.rows(query, ("case_number", "lon", "lat", "category", "status", "grid"), limit=50)
    assert len(rows) == 50
    with demo_city.store.reader.connect() as conn:
        for row in rows.head(5).itertuples():
            stored = conn.execute(text(
                "SELECT source_channel, ST_X(geom), ST_Y(geom), kind || '/' || category_code, status, grid_code"
                " FROM core.case_record WHERE case_number = :n"), {"n": row.case_number}).one()
            assert stored[0] == "patrol" and stored[3:] == (row.category, row.status, row.grid)
            assert stored[1] == pytest.approx(row.lon, abs=1e-5) and stored[2] == pytest.approx(row.lat, abs=1e-5)


def test_hostile_filters_are_refused() -> None:
    for bad in ({"area_code": "37030"}, {"area_code": "370303' OR '1'='1"}, {"channels": ("patrol'; --",)},
                {"categories": ("0101",)}, {"majors": ("event/1",)}, {"statuses": ("gone",)},
                {"levels": ("planet",)}, {"kinds": ("x",)}):
        with pytest.raises(FactsError):
            FactQuery(FIRST, LAST, **bad)  # type: ignore[arg-type]
    with pytest.raises(Exception, match="before it starts"):
        FactQuery(LAST, FIRST)


def test_a_load_rereads_only_the_months_it_touched(store: SuiteStore, tmp_path) -> None:
    """After a load, the facts follow at once; months the load did not touch keep their files."""
    settings = Settings(data_dir=tmp_path / "data")
    factories.build_city(store.writer, tmp_path, settings)
    headers = ["案件编号", "问题来源", "大类", "小类", "上报时间", "立案时间", "处置时限", "结案时限", "经度", "纬度"]

    def load(name: str, rows: list[tuple[str, str]]) -> None:
        path = tmp_path / name
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(headers)
            for number, when in rows:
                writer.writerow([number, "网格员上报", "市容环境", "暴露垃圾", when, when, "2030-01-01 00:00:00",
                                 "2030-01-02 00:00:00", "118.02", "36.78"])
        result = factories.load(store.writer, path, "case", settings, crs="EPSG:4326")
        assert result.rows_rejected == 0

    load("a.csv", [("FACTA1", "2023-01-05 10:00:00"), ("FACTA2", "2023-02-06 10:00:00")])
    facts = facts_for(store.reader, settings)
    query = FactQuery(date(2023, 1, 1), date(2023, 2, 28), "370303")
    assert facts.counts(query).reported == 2
    folder = facts.folder
    january = sorted((folder / "2023-01").iterdir())
    load("b.csv", [("FACTB1", "2023-02-20 10:00:00")])
    assert facts.counts(query).reported == 3
    assert sorted((folder / "2023-01").iterdir()) == january, "January was not touched: same files"
    assert len(list((folder / "2023-02").iterdir())) == 1, "February's old files are gone"
    _equal(facts.counts(query), count_cases(store.reader, date(2023, 1, 1), date(2023, 2, 28), "370303"))
