"""Loading cases and their updates through the ETL against real PostGIS: formats, CRSs, bad rows, merges."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from etl.chinese_crs import wgs84_to_bd09, wgs84_to_gcj02
from geodata.settings import Settings
from tests import factories
from tests.conftest import SuiteStore

HEADERS = ["案件编号", "问题来源", "案件类型", "大类", "小类", "上报时间", "立案时间", "派遣时间", "处置时间",
           "结案时间", "经度", "纬度", "解决层级", "是否自行处置", "满意度", "上报人", "联系电话", "地址"]

# A point inside grid 370303001001001 (the south-west grid of the test city).
LON, LAT = 118.01, 36.79


def _row(number: str, **values: str) -> list[str]:
    base = {
        "案件编号": number, "问题来源": "网格员上报", "案件类型": "事件", "大类": "市容环境", "小类": "暴露垃圾",
        "上报时间": "2025-03-03 09:00:00", "立案时间": "2025-03-03 09:10:00", "派遣时间": "2025-03-03 09:20:00",
        "处置时间": "2025-03-03 10:30:00", "结案时间": "2025-03-03 11:00:00", "经度": f"{LON}", "纬度": f"{LAT}",
        "解决层级": "网格", "是否自行处置": "否", "满意度": "满意", "上报人": "测试张三", "联系电话": "13800000000",
        "地址": "测试路1号",
    }
    base.update(values)
    return [base[h] for h in HEADERS]


def _csv(path: Path, rows: list[list[str]], encoding: str = "utf-8") -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADERS)
    writer.writerows(rows)
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


@pytest.fixture(scope="module")
def city(store: SuiteStore, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"))
    factories.build_city(store.writer, tmp_path_factory.mktemp("city"), settings)
    return settings


def _case(store: SuiteStore, number: str) -> dict[str, object]:
    with store.writer.connect() as conn:
        row = conn.execute(text("SELECT * FROM core.case_record WHERE case_number = :n"), {"n": number}).mappings().one()
    return dict(row)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk", "gb18030"])
def test_chinese_export_loads_in_every_encoding(store: SuiteStore, city: Settings, tmp_path: Path, encoding: str) -> None:
    number = f"ENC{encoding.replace('-', '')}"
    path = _csv(tmp_path / "cases.csv", [_row(number)], encoding)
    result = factories.load(store.writer, path, "case", city, crs="EPSG:4326")
    assert (result.rows_read, result.rows_new, result.rows_rejected) == (1, 1, 0)
    case = _case(store, number)
    assert case["grid_code"] == "370303001001001"
    assert (case["source_channel"], case["kind"], case["category_code"]) == ("patrol", "event", "0102")
    assert case["status"] == "closed" and case["resolution_level"] == "grid" and case["satisfaction"] == 4
    assert case["handle_deadline"] is not None, "deadline filled from the category's rule"
    assert all(case[f"h3_r{r}"] for r in (7, 8, 9, 10))


def test_personal_data_goes_to_the_private_schema(store: SuiteStore, city: Settings, tmp_path: Path) -> None:
    factories.load(store.writer, _csv(tmp_path / "p.csv", [_row("PRIV1")]), "case", city, crs="EPSG:4326")
    with store.writer.connect() as conn:
        reporter = conn.execute(text(
            "SELECT reporter_name, reporter_phone, address_text FROM private.case_reporter WHERE case_number = 'PRIV1'"
        )).one()
        columns = set(conn.execute(text(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'core'")).scalars())
    assert tuple(reporter) == ("测试张三", "13800000000", "测试路1号")
    assert not columns & {"reporter_name", "reporter_phone", "reporter_id_number", "address_text"}


@pytest.mark.parametrize(("crs", "convert"), [("GCJ02", wgs84_to_gcj02), ("BD09", wgs84_to_bd09)])
def test_chinese_offset_coordinates_are_converted(store: SuiteStore, city: Settings, tmp_path: Path, crs: str,
                                                  convert) -> None:  # type: ignore[no-untyped-def]
    lon, lat = convert(np.array([LON]), np.array([LAT]))
    number = f"CRS{crs}"
    path = _csv(tmp_path / "c.csv", [_row(number, 经度=f"{lon[0]:.8f}", 纬度=f"{lat[0]:.8f}")])
    assert factories.load(store.writer, path, "case", city, crs=crs).rows_new == 1
    with store.writer.connect() as conn:
        metres = conn.execute(text(
            "SELECT ST_Distance(geom::geography, ST_SetSRID(ST_MakePoint(:x, :y), 4326)::geography)"
            " FROM core.case_record WHERE case_number = :n"), {"x": LON, "y": LAT, "n": number}).scalar_one()
    assert metres < 1.0


def test_swapped_coordinates_are_corrected_with_a_note(store: SuiteStore, city: Settings, tmp_path: Path) -> None:
    path = _csv(tmp_path / "s.csv", [_row("SWAP1", 经度=f"{LAT}", 纬度=f"{LON}")])
    result = factories.load(store.writer, path, "case", city, crs="EPSG:4326")
    assert result.rows_new == 1 and any("swapped" in note for note in result.notes)
    assert _case(store, "SWAP1")["grid_code"] == "370303001001001"


def test_every_kind_of_bad_row_is_kept_with_a_reason(store: SuiteStore, city: Settings, tmp_path: Path) -> None:
    rows = [
        _row("BAD01", 经度="", 纬度=""),                                   # 2 empty coordinates
        _row("BAD02", 经度="119.5", 纬度="37.5"),                          # 3 outside the city
        _row("BAD03", 小类="不存在的小类"),                                   # 4 unknown category
        _row("BAD04", 结案时间="2025-03-01 08:00:00"),                      # 5 closed before reported
        _row("BAD05", 问题来源="飞鸽传书"),                                   # 6 unknown channel
        _row("BAD06", 上报时间="昨天下午"),                                   # 7 unreadable time
        _row("GOOD1"),                                                    # 8 fine
        _row("GOOD1"),                                                    # 9 duplicate within the file
        _row("BAD07", 上报时间="2099-01-01 00:00:00", 立案时间="", 派遣时间="", 处置时间="", 结案时间=""),  # 10 future
        _row("", ),                                                       # 11 no case number
        _row("BAD08", 满意度="十分"),                                        # 12 bad satisfaction
    ]
    result = factories.load(store.writer, _csv(tmp_path / "bad.csv", rows), "case", city, crs="EPSG:4326")
    assert (result.rows_read, result.rows_new, result.rows_rejected) == (11, 1, 10)
    with store.writer.connect() as conn:
        reasons = dict(conn.execute(text(
            "SELECT row_number, reason FROM private.rejected_row WHERE run_id = :r"), {"r": result.run_id}).all())
        raw = conn.execute(text(
            "SELECT raw FROM private.rejected_row WHERE run_id = :r AND row_number = 4"), {"r": result.run_id}).scalar_one()
        logged = conn.execute(text(
            "SELECT rows_read, rows_new + rows_updated + rows_unchanged, rows_rejected FROM core.etl_run"
            " WHERE run_id = :r"), {"r": result.run_id}).one()
    assert tuple(logged) == (11, 1, 10)
    assert raw["小类"] == "不存在的小类", "the raw row is kept as it came"
    expected = {2: "empty", 3: "outside the city", 4: "unknown category", 5: "impossible timestamps",
                6: "unknown source channel", 7: "cannot read", 9: "duplicate of row 8", 10: "future",
                11: "empty", 12: "satisfaction"}
    for row, words in expected.items():
        assert words in reasons[row], (row, reasons[row])


def test_loading_twice_gives_the_same_counts(store: SuiteStore, city: Settings, tmp_path: Path) -> None:
    path = _csv(tmp_path / "i.csv", [_row(f"IDEM{i}") for i in range(5)] + [_row("IDEMX", 经度="")])
    first = factories.load(store.writer, path, "case", city, crs="EPSG:4326")
    second = factories.load(store.writer, path, "case", city, crs="EPSG:4326")
    assert (first.rows_new, first.rows_unchanged, first.rows_rejected) == (5, 0, 1)
    assert (second.rows_new, second.rows_updated, second.rows_unchanged, second.rows_rejected) == (0, 0, 5, 1)


def test_updates_advance_stages_and_append_events(store: SuiteStore, city: Settings, tmp_path: Path) -> None:
    open_case = _row("UPD1", 处置时间="", 结案时间="", 解决层级="", 满意度="")
    factories.load(store.writer, _csv(tmp_path / "a.csv", [open_case]), "case", city, crs="EPSG:4326")
    assert _case(store, "UPD1")["status"] == "dispatched"
    result = factories.load(store.writer, _csv(tmp_path / "b.csv", [_row("UPD1")]), "case", city, crs="EPSG:4326")
    assert (result.rows_new, result.rows_updated) == (0, 1)
    assert _case(store, "UPD1")["status"] == "closed"
    with store.writer.connect() as conn:
        stages = set(conn.execute(text(
            "SELECT stage FROM core.case_event WHERE case_number = 'UPD1'")).scalars())
        cases = conn.execute(text("SELECT count(*) FROM core.case_record WHERE case_number = 'UPD1'")).scalar_one()
    assert stages == {"handled", "closed"} and cases == 1


def test_a_stage_going_backwards_is_rejected(store: SuiteStore, city: Settings, tmp_path: Path) -> None:
    factories.load(store.writer, _csv(tmp_path / "a.csv", [_row("BACK1")]), "case", city, crs="EPSG:4326")
    reopened = _row("BACK1", 结案时间="", 解决层级="", 满意度="")
    result = factories.load(store.writer, _csv(tmp_path / "b.csv", [reopened]), "case", city, crs="EPSG:4326")
    assert (result.rows_updated, result.rows_rejected) == (0, 1)
    assert _case(store, "BACK1")["status"] == "closed"


def test_a_truncated_file_loses_no_row_silently(store: SuiteStore, city: Settings, tmp_path: Path) -> None:
    path = _csv(tmp_path / "t.csv", [_row("TRUNC1"), _row("TRUNC2")])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])  # cut in the middle of the last row
    result = factories.load(store.writer, path, "case", city, crs="EPSG:4326")
    assert result.rows_read == 2 and result.rows_new == 1 and result.rows_rejected == 1


def test_xlsx_export_with_numeric_case_numbers(store: SuiteStore, city: Settings, tmp_path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(HEADERS)
    row = _row("x")
    values: list[object] = list(row)
    values[0] = 202503030001  # Excel keeps long case numbers as numbers
    sheet.append(values)
    book.save(tmp_path / "cases.xlsx")
    result = factories.load(store.writer, tmp_path / "cases.xlsx", "case", city, crs="EPSG:4326")
    assert result.rows_new == 1
    assert _case(store, "202503030001")["grid_code"] == "370303001001001"


def test_open311_requests_load_with_the_preset(store: SuiteStore, city: Settings, tmp_path: Path) -> None:
    requests = [{
        "service_request_id": "311-0001", "status": "closed", "service_code": "0102", "service_name": "暴露垃圾",
        "description": "垃圾桶满溢", "requested_datetime": "2025-03-03T01:00:00Z",
        "updated_datetime": "2025-03-03T05:00:00Z", "closed_datetime": "2025-03-03T04:00:00Z",
        "expected_datetime": "2025-03-03T06:00:00Z", "address": "测试路2号", "lat": LAT, "long": LON,
    }]
    path = tmp_path / "requests.json"
    path.write_text(json.dumps(requests, ensure_ascii=False), encoding="utf-8")
    result = factories.load(store.writer, path, "case", city, crs="EPSG:4326", mapping="open311")
    assert (result.rows_new, result.rows_rejected) == (1, 0), result.notes
    case = _case(store, "311-0001")
    assert (case["source_channel"], case["status"]) == ("hotline", "closed")


def test_a_second_load_waits_or_refuses_while_one_runs(store: SuiteStore, city: Settings, tmp_path: Path) -> None:
    from etl.pipeline import LoadBusyError
    from etl.store import acquire_load_lock

    path = _csv(tmp_path / "l.csv", [_row("LOCK1")])
    with store.writer.begin() as conn:
        assert acquire_load_lock(conn, wait=True)
        with pytest.raises(LoadBusyError):
            factories.load(store.writer, path, "case", city, crs="EPSG:4326", wait=False)
    assert factories.load(store.writer, path, "case", city, crs="EPSG:4326", wait=False).rows_new == 1


def test_no_reporter_or_event_is_ever_without_its_case(store: SuiteStore, city: Settings) -> None:
    """Reporters and events carry no foreign key (too slow into a partitioned table): the ETL keeps them whole."""
    with store.writer.connect() as conn:
        orphans = conn.execute(text(
            "SELECT (SELECT count(*) FROM private.case_reporter r WHERE NOT EXISTS (SELECT 1 FROM core.case_record c"
            "  WHERE c.case_number = r.case_number AND c.reported_at = r.case_reported_at)),"
            " (SELECT count(*) FROM core.case_event e WHERE NOT EXISTS (SELECT 1 FROM core.case_record c"
            "  WHERE c.case_number = e.case_number AND c.reported_at = e.case_reported_at)),"
            " (SELECT count(*) FROM private.case_reporter), (SELECT count(*) FROM core.case_event)")).one()
    assert orphans[0] == 0 and orphans[1] == 0
    assert orphans[2] > 0 and orphans[3] > 0, "the module's loads must have written reporters and events"


def _partition_shape(conn, table: str) -> tuple[list[str], list[tuple[str, str]]]:  # type: ignore[no-untyped-def]
    """Index names and constraints of a month partition, with its month replaced by M."""
    month = table.rsplit("_", 1)[1]
    indexes = sorted(n.replace(month, "M") for n in conn.execute(
        text("SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = CAST(:t AS regclass)"), {"t": table}
    ).scalars())
    constraints = sorted((n.replace(month, "M"), d) for n, d in conn.execute(text(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = CAST(:t AS regclass)"
    ), {"t": table}))
    return indexes, constraints


def test_months_filled_by_the_helper_connection_end_like_the_others(
    store: SuiteStore, city: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A big load fills two of three fresh months through a second connection, in staging tables the load
    attaches: they end exactly like the months the load's own connection made, and a staging table a
    killed load left behind is dropped."""
    from etl import cases
    from etl.pipeline import LoadOptions, load_source

    monkeypatch.setattr(cases, "STAGE_MIN_ROWS", 1)
    with store.writer.begin() as conn:
        conn.execute(text("CREATE TABLE core.case_stage_0_201001 (LIKE core.case_record)"))
    months = ["2019-05", "2019-06", "2019-07"]
    rows = [_row(f"STAGE{m[-2:]}{i:03d}", 上报时间=f"{m}-1{i % 9} 08:00:00", 立案时间=f"{m}-1{i % 9} 08:10:00",
                 派遣时间=f"{m}-1{i % 9} 08:20:00", 处置时间=f"{m}-1{i % 9} 09:00:00", 结案时间=f"{m}-1{i % 9} 09:30:00")
            for m in months for i in range(40)]
    result = load_source(store.writer, _csv(tmp_path / "staged.csv", rows), LoadOptions(kind="case", crs="EPSG:4326"),
                         city)
    assert (result.rows_new, result.rows_rejected) == (120, 0), result.notes
    with store.writer.connect() as conn:
        tables = [f"core.case_record_{m.replace('-', '')}" for m in months]
        shapes = [_partition_shape(conn, t) for t in tables]
        assert shapes[0] == shapes[1] == shapes[2]  # 201906 and 201907 staged, 201905 the load's own
        # The key and the parent's two btree indexes (grid; grid-less by community, 0009); points none (0008).
        assert any(name.endswith("_M_pkey") for name in shapes[0][0]) and len(shapes[0][0]) == 3
        for table in tables:
            assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() == 40  # noqa: S608
        assert conn.execute(text("SELECT count(*) FROM core.case_record WHERE case_number LIKE 'STAGE%'")).scalar_one() == 120
        assert conn.execute(text(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'core.case_event'::regclass"
            " AND inhrelid::regclass::text LIKE 'core.case_event_20190%'")).scalar_one() == 3
        assert conn.execute(text("SELECT count(*) FROM pg_class WHERE relname LIKE 'case_stage%'")).scalar_one() == 0


def test_dense_distinct_counting_matches_numpys_unique() -> None:
    """The validation's distinct-combination count (a table of slots instead of a sort) gives what
    np.unique gives -- first rows and each row's combination -- on seeded random keys, repeats and none."""
    from etl.cases import _dense_unique

    rng = np.random.default_rng(20261205)
    for total, rows in [(1, 5), (7, 1), (300, 20_000), (50, 3), (5000, 10), (3, 0)]:
        key = rng.integers(0, total, rows).astype(np.int64)
        first, inverse = _dense_unique(key, total)
        _, want_first, want_inverse = np.unique(key, return_index=True, return_inverse=True)
        assert first.tolist() == want_first.tolist()
        assert inverse.tolist() == want_inverse.reshape(-1).tolist()


def test_batches_cover_every_row_once_small_at_both_ends() -> None:
    """Batches hold every row once, in month order; each month is reported done with its last row; the
    first and the last batches are the small ones (the pipeline's start and end, etl.cases._batch_sizes)."""
    from etl.cases import _batch_sizes, _batches

    for rows in (0, 1, 999, 60_000, 1_000_000):
        sizes = _batch_sizes(rows)
        assert sum(sizes) == rows and all(s > 0 for s in sizes)
        if len(sizes) > 2:
            assert sizes[0] == sizes[-1] < max(sizes)
    rng = np.random.default_rng(2)
    months = rng.choice([202501, 202502, 202503, 202507], 200_000)
    seen, done = [], []
    for positions, finished in _batches(months):
        seen.append(positions)
        done += finished
        for month in finished:  # no row of a finished month comes later
            assert month not in set(months[np.setdiff1d(np.arange(len(months)), np.concatenate(seen))].tolist())
    order = np.concatenate(seen)
    assert sorted(order.tolist()) == list(range(len(months)))
    assert (np.diff(months[order]) >= 0).all() and done == [202501, 202502, 202503, 202507]
