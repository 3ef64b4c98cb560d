"""Tracks and roads through the ETL, against real PostGIS: bad fixes kept as rejects, patrol coverage per grid,
swept share per road, idempotent re-runs, GPX in GCJ-02, and no track readable by the public role."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, ProgrammingError

from etl.chinese_crs import wgs84_to_gcj02
from geodata.settings import Settings
from tests import factories
from tests.conftest import SuiteStore

HEADERS = ["设备编号", "姓名", "角色", "定位时间", "经度", "纬度", "速度"]
START = datetime(2025, 6, 2, 8, 0, 0)  # local time (Asia/Shanghai)
WALK_DEG_PER_10S = 0.00015  # about 13 m of longitude at 36.8°N: 1.3 m/s
GRID_WEST, GRID_EAST = (118.000, 118.025)  # unit grid 370303001001001 spans these longitudes, 36.78-36.805


@pytest.fixture(scope="module")
def city(store: SuiteStore, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(data_dir=tmp_path_factory.mktemp("tracks-data"))
    factories.build_city(store.writer, tmp_path_factory.mktemp("tracks-city"), settings)
    return settings


def _walk(device: str, role: str, lon0: float, lat0: float, steps: int, dlon: float = WALK_DEG_PER_10S,
          dlat: float = 0.0, start: datetime = START, name: str = "测试人员") -> list[list[str]]:
    return [[device, name, role, (start + timedelta(seconds=10 * i)).strftime("%Y-%m-%d %H:%M:%S"),
             f"{lon0 + dlon * i:.6f}", f"{lat0 + dlat * i:.6f}", "4.7"] for i in range(steps)]


def _write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADERS)
        writer.writerows(rows)
    return path


def test_each_bad_fix_kind_is_kept_as_a_reject_with_its_reason(store: SuiteStore, city: Settings, tmp_path: Path) -> None:
    rows = _walk("BAD-1", "网格员", 118.002, 36.79, 20)
    rows[5][5] = f"{float(rows[5][5]) + 0.05:.6f}"  # 5.5 km off for one fix, 10 s either side: a jump
    bad = [
        ["BAD-1", "测试人员", "网格员", "2025-06-02 09:00:00", "", "", ""],  # empty coordinates
        ["BAD-1", "测试人员", "网格员", "2025-06-02 09:00:10", "120.5", "30.2", ""],  # outside the city
        ["BAD-1", "测试人员", "网格员", "2099-01-01 08:00:00", "118.01", "36.79", ""],  # the clock is ahead
        ["BAD-1", "测试人员", "网格员", rows[3][3], "118.0101", "36.7901", ""],  # duplicate timestamp
        ["BAD-1", "测试人员", "巡逻机器人", "2025-06-02 09:01:00", "118.01", "36.79", ""],  # unknown role
        ["BAD-1", "测试人员", "网格员", "昨天上午", "118.01", "36.79", ""],  # unreadable time
    ]
    path = _write_csv(tmp_path / "bad_fixes.csv", rows + bad)
    result = factories.load(store.writer, path, "track", city, crs="EPSG:4326")
    assert result.rows_read == len(rows) + len(bad)
    assert result.rows_read == result.rows_stored + result.rows_rejected
    with store.writer.connect() as conn:
        reasons = dict(conn.execute(text(
            "SELECT row_number, reason FROM private.rejected_row WHERE run_id = :r"), {"r": result.run_id}).all())
    first_bad = len(rows) + 2  # header is line 1
    expected = {
        7: "jump",  # rows[5] is line 7
        first_bad: "empty or non-numeric coordinates",
        first_bad + 1: "outside the city",
        first_bad + 2: "in the future",
        first_bad + 3: "duplicate timestamp",
        first_bad + 4: "unknown role",
        first_bad + 5: "cannot read time",
    }
    assert set(reasons) == set(expected), reasons
    for row, words in expected.items():
        assert words in reasons[row], (row, reasons[row])
    assert result.rows_new == len(rows) - 1


def test_a_grid_crossed_by_a_track_is_patrolled_and_the_one_beside_it_not(
        store: SuiteStore, city: Settings, tmp_path: Path) -> None:
    steps = int((GRID_EAST - GRID_WEST - 0.002) / WALK_DEG_PER_10S)
    rows = _walk("PATROL-1", "网格员", GRID_WEST + 0.001, 36.79, steps, start=START + timedelta(days=1))
    result = factories.load(store.writer, _write_csv(tmp_path / "patrol.csv", rows), "track", city, crs="EPSG:4326")
    assert result.rows_rejected == 0 and result.rows_new == steps
    with store.writer.connect() as conn:
        patrolled = conn.execute(text(
            "SELECT grid_code, visits, minutes, devices FROM core.grid_patrol_day WHERE day = '2025-06-03'"
            " AND grid_code IN ('370303001001001', '370303001001002')")).all()
        line = conn.execute(text(
            "SELECT fix_count, length_m, ST_NumPoints(geom) FROM core.track_day WHERE device_id = 'PATROL-1'")).one()
    assert [(g, v, d) for g, v, _, d in patrolled] == [("370303001001001", 1, 1)]
    assert patrolled[0][2] == pytest.approx((steps - 1) * 10 / 60, rel=0.01)
    assert line[0] == steps and line[1] == pytest.approx((steps - 1) * WALK_DEG_PER_10S * 89_150, rel=0.01) and line[2] >= 2


def _roads(path: Path) -> Path:
    features = [
        {"type": "Feature", "properties": {"道路编码": "R-ALONG", "道路名称": "测试东路", "道路等级": "主干路"},
         "geometry": {"type": "LineString", "coordinates": [[118.005, 36.80], [118.015, 36.80]]}},
        {"type": "Feature", "properties": {"道路编码": "R-CROSS", "道路名称": "测试北路", "道路等级": "支路"},
         "geometry": {"type": "LineString", "coordinates": [[118.030, 36.795], [118.030, 36.805]]}},
        {"type": "Feature", "properties": {"道路编码": "R-FAR", "道路名称": "城外路", "道路等级": "支路"},
         "geometry": {"type": "LineString", "coordinates": [[119.5, 36.0], [119.6, 36.0]]}},
    ]
    return factories.write_geojson(path, features)


def test_a_road_swept_along_its_length_counts_and_one_only_crossed_does_not(
        store: SuiteStore, city: Settings, tmp_path: Path) -> None:
    roads = factories.load(store.writer, _roads(tmp_path / "roads.geojson"), "road", city, crs="EPSG:4326")
    assert (roads.rows_new, roads.rows_rejected) == (2, 1)  # the third lies outside the city
    rng = np.random.default_rng(3)
    steps = int((118.036 - 118.004) / WALK_DEG_PER_10S)
    rows = _walk("CLEAN-1", "保洁员", 118.004, 36.80, steps)
    for row in rows:  # GPS noise of a few metres
        row[4] = f"{float(row[4]) + rng.normal(0, 0.00003):.6f}"
        row[5] = f"{float(row[5]) + rng.normal(0, 0.00003):.6f}"
    result = factories.load(store.writer, _write_csv(tmp_path / "clean.csv", rows), "track", city, crs="EPSG:4326")
    assert result.rows_rejected == 0
    with store.writer.connect() as conn:
        shares = dict(conn.execute(text(
            "SELECT road_id, swept_share FROM core.road_sweep_day WHERE day = '2025-06-02'")).all())
    assert shares["R-ALONG"] > 0.95
    assert 0 < shares["R-CROSS"] < 0.1  # touched where the track crossed it, nowhere else


def test_a_second_load_of_the_same_file_changes_nothing(store: SuiteStore, city: Settings, tmp_path: Path) -> None:
    rows = _walk("PATROL-2", "网格员", 118.03, 36.83, 50, dlat=0.0001)
    path = _write_csv(tmp_path / "again.csv", rows)
    first = factories.load(store.writer, path, "track", city, crs="EPSG:4326")
    with store.writer.connect() as conn:
        before = conn.execute(text("SELECT grid_code, visits, minutes FROM core.track_grid_visit"
                                   " WHERE device_id = 'PATROL-2' ORDER BY 1")).all()
    second = factories.load(store.writer, path, "track", city, crs="EPSG:4326")
    assert (first.rows_new, first.rows_unchanged) == (50, 0)
    assert (second.rows_new, second.rows_unchanged, second.rows_rejected) == (0, 50, 0)
    with store.writer.connect() as conn:
        after = conn.execute(text("SELECT grid_code, visits, minutes FROM core.track_grid_visit"
                                  " WHERE device_id = 'PATROL-2' ORDER BY 1")).all()
        stored = conn.execute(text("SELECT count(*) FROM core.track_fix WHERE device_id = 'PATROL-2'")).scalar_one()
    assert before == after and before and stored == 50


def test_a_later_file_for_the_same_day_extends_the_track(store: SuiteStore, city: Settings, tmp_path: Path) -> None:
    rows = _walk("PATROL-3", "网格员", 118.055, 36.81, 40)
    factories.load(store.writer, _write_csv(tmp_path / "morning.csv", rows[:20]), "track", city, crs="EPSG:4326")
    later = factories.load(store.writer, _write_csv(tmp_path / "later.csv", rows[15:]), "track", city,
                           crs="EPSG:4326")
    assert (later.rows_new, later.rows_unchanged) == (20, 5)
    with store.writer.connect() as conn:
        fix_count, first_at, last_at = conn.execute(text(
            "SELECT fix_count, first_at, last_at FROM core.track_day WHERE device_id = 'PATROL-3'")).one()
    assert fix_count == 40 and (last_at - first_at).total_seconds() == 390


def test_gpx_in_gcj02_lands_where_it_was_recorded(store: SuiteStore, city: Settings, tmp_path: Path) -> None:
    lon = 118.06 + np.arange(30) * 0.0004  # a truck at about 13 km/h
    lat = np.full(30, 36.79)
    glon, glat = wgs84_to_gcj02(lon, lat)
    points = "".join(f'<trkpt lat="{b:.7f}" lon="{a:.7f}"><time>2025-06-02T0{1 + i // 20}:{(i % 20) * 3:02d}:00Z'
                     f"</time></trkpt>" for i, (a, b) in enumerate(zip(glon, glat, strict=True)))
    gpx = tmp_path / "truck.gpx"
    gpx.write_text('<?xml version="1.0" encoding="UTF-8"?><gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1">'
                   f"<trk><name>TRUCK-9</name><type>truck</type><trkseg>{points}</trkseg></trk></gpx>",
                   encoding="utf-8")
    result = factories.load(store.writer, gpx, "track", city, crs="GCJ02")
    assert (result.rows_new, result.rows_rejected) == (30, 0)
    with store.writer.connect() as conn:
        worst = conn.execute(text(
            "SELECT max(ST_Distance(f.geom::geography, ST_SetSRID(ST_MakePoint(118.06 + 0.0004 * n, 36.79), 4326)"
            "::geography)) FROM (SELECT geom, row_number() OVER (ORDER BY fix_time) - 1 AS n FROM core.track_fix"
            " WHERE device_id = 'TRUCK-9') f")).scalar_one()
        role = conn.execute(text("SELECT role FROM core.device WHERE device_id = 'TRUCK-9'")).scalar_one()
    assert worst < 1.0 and role == "truck"


def test_workers_names_stay_private_and_the_public_role_reads_no_track(store: SuiteStore, city: Settings,
                                                                      tmp_path: Path) -> None:
    rows = _walk("PATROL-4", "网格员", 118.01, 36.84, 5, name="张三")
    factories.load(store.writer, _write_csv(tmp_path / "named.csv", rows), "track", city, crs="EPSG:4326")
    with store.writer.connect() as conn:
        assert conn.execute(text("SELECT name FROM private.worker WHERE device_id = 'PATROL-4'")).scalar_one() == "张三"
        columns = conn.execute(text(
            "SELECT table_name || '.' || column_name FROM information_schema.columns WHERE table_schema = 'core'"
            " AND table_name IN ('device', 'track_fix', 'track_day') AND column_name IN ('name', 'person_id')")).all()
    assert columns == []
    with store.reader.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM core.track_day")).scalar_one() > 0
    with store.reader.connect() as conn, pytest.raises((ProgrammingError, DBAPIError)):
        conn.execute(text("SELECT * FROM private.worker"))
    tables = ["core.road", "core.device", "core.track_fix", "core.track_day", "core.track_grid_visit",
              "core.grid_patrol_day", "core.road_sweep_day", "core.facility_visit", "core.case_track_check",
              "private.worker"]
    with store.writer.connect() as conn:
        partitions = list(conn.execute(text(
            "SELECT 'core.' || c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'core.track_fix'::regclass")).scalars())
    assert partitions
    for table in tables + partitions:
        with store.public.connect() as conn, pytest.raises((ProgrammingError, DBAPIError)):
            conn.execute(text(f"SELECT 1 FROM {table} LIMIT 1"))  # noqa: S608 (our table names)
    with store.public.connect() as conn:
        views = conn.execute(text("SELECT table_name FROM information_schema.views WHERE table_schema = 'open_data'"
                                  " AND view_definition ~* '(track|device|worker|road_sweep|facility_visit)'")).all()
    assert views == [], json.dumps([tuple(v) for v in views])


def test_trucks_at_a_toilet_and_crews_at_cases_are_found(store: SuiteStore, city: Settings, tmp_path: Path) -> None:
    toilet = tmp_path / "toilet.csv"
    toilet.write_text("部件编码,部件名称,经度,纬度\n3703030301000001,测试公厕,118.09,36.86\n", encoding="utf-8")
    assert factories.load(store.writer, toilet, "component", city, crs="EPSG:4326").rows_rejected == 0
    case_headers = ["案件编号", "问题来源", "案件类型", "大类", "小类", "上报时间", "立案时间", "派遣时间", "经度", "纬度"]
    cases = tmp_path / "cases.csv"
    with cases.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(case_headers)
        writer.writerow(["TRK-A", "网格员上报", "事件", "市容环境", "暴露垃圾", "2025-06-05 10:00:00", "", "",
                         "118.07", "36.83"])
        writer.writerow(["TRK-B", "群众随手拍", "事件", "市容环境", "暴露垃圾", "2025-06-05 09:00:00",
                         "2025-06-05 09:10:00", "2025-06-05 09:30:00", "118.08", "36.83"])
    assert factories.load(store.writer, cases, "case", city, crs="EPSG:4326").rows_rejected == 0
    day = datetime(2025, 6, 5, 9, 50)
    rows = _walk("PATROL-5", "网格员", 118.0685, 36.83, 20, start=day)  # passes case A around 10:00
    # Case B was dispatched at 09:30; a cleaner sets off 330 m west of it at 09:40 at 0.11 m/s and comes within
    # 50 m after 280 m: 42 minutes later, 52 minutes after the dispatch.
    rows += _walk("CLEAN-5", "保洁员", 118.0763, 36.83, 300, dlon=0.0000125, start=datetime(2025, 6, 5, 9, 40))
    # A truck drives up to the toilet, stays 5 minutes, and leaves.
    approach = _walk("TRUCK-5", "垃圾车", 118.085, 36.86, 6, dlon=0.0008, start=datetime(2025, 6, 5, 7, 0))
    stay = _walk("TRUCK-5", "垃圾车", 118.09, 36.86, 31, dlon=0.0, start=datetime(2025, 6, 5, 7, 1))
    leave = _walk("TRUCK-5", "垃圾车", 118.0908, 36.86, 6, dlon=0.0008, start=datetime(2025, 6, 5, 7, 6, 10))
    rows += approach + stay + leave
    result = factories.load(store.writer, _write_csv(tmp_path / "day5.csv", rows), "track", city, crs="EPSG:4326")
    assert result.rows_rejected == 0
    with store.writer.connect() as conn:
        visits = conn.execute(text(
            "SELECT component_code, facility_kind, minutes FROM core.facility_visit WHERE device_id = 'TRUCK-5'")).all()
        checks = {r[0]: r[1:] for r in conn.execute(text(
            "SELECT case_number, patroller_present, arrival_minutes, crew_device_id FROM core.case_track_check"
            " WHERE case_number IN ('TRK-A', 'TRK-B')")).all()}
    assert [(c, k) for c, k, _ in visits] == [("3703030301000001", "public_toilet")]
    assert visits[0][2] == pytest.approx(5.0, abs=0.6)
    assert checks["TRK-A"][0] is True
    assert checks["TRK-B"][1] == pytest.approx(10 + 280 / (0.0000125 * 89_150 / 10) / 60, abs=1.5) and checks["TRK-B"][2] == "CLEAN-5"


def _test_city_index():  # type: ignore[no-untyped-def]
    import geopandas as gpd
    from shapely.geometry import shape

    from etl.locate import AdminIndex

    features = factories.city_features()
    codes = [f["properties"]["code"] for f in features]
    levels = {6: "district", 9: "street", 12: "community", 15: "grid"}
    return AdminIndex.from_frame(gpd.GeoDataFrame(
        {"code": codes, "level": [levels[len(c)] for c in codes]},
        geometry=[shape(f["geometry"]) for f in features], crs="EPSG:4326"))


def test_the_grids_of_walking_fixes_are_those_every_fix_lies_in() -> None:
    """locate_grids (an anchor every few fixes, the others tried against their anchors' grids) against locate_points
    on every fix: walks that cross grid edges, enter the community without grids and leave the city."""
    from etl.locate import locate_points
    from etl.tracks import locate_grids

    rng = np.random.default_rng(9)
    lon, lat, group = [], [], []
    for device in range(12):
        steps = int(rng.integers(20, 400))
        heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.4, steps))
        step = rng.uniform(0.0002, 0.004)  # 20 m to 350 m between fixes: some cross an edge every few fixes
        lon.append(rng.uniform(118.0, 118.1) + np.cumsum(np.cos(heading) * step))
        lat.append(rng.uniform(36.78, 36.88) + np.cumsum(np.sin(heading) * step))
        group.append(np.full(steps, device))

    def bounce(v: np.ndarray, lo: float, hi: float) -> np.ndarray:  # reflected at the walls, a little outside the city
        return lo + np.abs((v - lo + (hi - lo)) % (2 * (hi - lo)) - (hi - lo))

    x, y = bounce(np.concatenate(lon), 117.995, 118.105), bounce(np.concatenate(lat), 36.775, 36.885)
    g = np.concatenate(group)
    index = _test_city_index()
    unit, codes = locate_grids(index, x, y, g)
    found = np.where(unit >= 0, codes[np.maximum(unit, 0)], None)
    expected = locate_points(index, x, y)["grid_code"].to_numpy()
    assert len(x) > 1000 and 0 < (expected == None).sum() < len(x) / 2  # noqa: E711 (element-wise)
    assert found.tolist() == expected.tolist()


@pytest.mark.parametrize("max_cells", [12_000_000, 50])
def test_segments_find_exactly_the_road_pieces_within_the_tolerance(max_cells: int,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """_PieceGrid against a brute-force distance from every segment to every piece, with fine and coarse cells."""
    from etl.tracks import _PieceGrid

    monkeypatch.setattr(_PieceGrid, "MAX_CELLS", max_cells)
    rng = np.random.default_rng(4)
    px, py = rng.uniform(0, 3000, 400), rng.uniform(0, 2000, 400)
    ax, ay = rng.uniform(-200, 3200, 3000), rng.uniform(-200, 2200, 3000)
    length = np.where(rng.random(3000) < 0.2, 0.0, rng.exponential(60, 3000))  # a fifth are single fixes
    angle = rng.uniform(0, 2 * np.pi, 3000)
    bx, by = ax + length * np.cos(angle), ay + length * np.sin(angle)
    segment, piece = _PieceGrid(px, py, 15.0).near(ax, ay, bx, by)
    dx, dy = (bx - ax)[:, None], (by - ay)[:, None]
    along = np.clip(((px[None, :] - ax[:, None]) * dx + (py[None, :] - ay[:, None]) * dy)
                    / np.where(dx * dx + dy * dy > 0, dx * dx + dy * dy, 1.0), 0, 1)
    distance = np.hypot(ax[:, None] + along * dx - px[None, :], ay[:, None] + along * dy - py[None, :])
    expected = set(zip(*np.nonzero(distance <= 15.0), strict=True))
    assert len(expected) > 50
    assert set(zip(segment.tolist(), piece.tolist(), strict=True)) == {(int(s), int(p)) for s, p in expected}
