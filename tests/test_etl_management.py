"""Loading management grids (管理网格) through the ETL against real PostGIS: placing, rejects, idempotence, assignment.

The loader tests run in a database of their own with a two-district test city: the test city of
``tests/factories.py`` (district 370303, a 0.1° square) and a second district 370305 east of it, so that a
management grid can cross a district line.  The last test reads the demo city's management grids.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from etl.chinese_crs import wgs84_to_gcj02
from etl.pipeline import LOADERS, LoadOptions, load_source
from geodata.dictionaries import load_dictionaries
from geodata.settings import Settings
from tests import factories
from tests.conftest import DemoCity, SuiteStore, separate_database

X0, Y0 = factories.ORIGIN  # district 370303 spans X0..X0+0.1, Y0..Y0+0.1; 370305 spans X0+0.1..X0+0.2
STEP = 0.025  # a test unit grid's side; communities are 0.05 squares, each with 2 x 2 grids


def _gcj_square(x: float, y: float, w: float, h: float) -> dict[str, Any]:
    """A WGS 84 rectangle's corners as an Amap map would give them (GCJ-02)."""
    lon, lat = wgs84_to_gcj02([x, x + w, x + w, x, x], [y, y, y + h, y + h, y])
    return {"type": "Polygon", "coordinates": [[[float(a), float(b)] for a, b in zip(lon, lat, strict=True)]]}


def _feature(properties: dict[str, Any], geometry: dict[str, Any] | None) -> dict[str, Any]:
    return {"type": "Feature", "properties": properties, "geometry": geometry}


def _second_district() -> list[dict[str, Any]]:
    """District 370305 east of the test city: one street, one community, one unit grid."""
    x = X0 + 0.1
    square = factories._square
    return [_feature({"code": code, "name": name}, geometry) for code, name, geometry in (
        ("370305", "第二测试区", square(x, Y0, 0.1, 0.1)),
        ("370305001", "第二测试街道", square(x, Y0, 0.1, 0.1)),
        ("370305001001", "第二测试社区", square(x, Y0, 0.1, 0.1)),
        ("370305001001001", "网格1", square(x, Y0, 0.05, 0.05)),
    )]


@pytest.fixture(scope="module")
def city(store: SuiteStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, Settings, Path]]:
    """A database of its own holding the two-district test city (the management grids change its unit grids)."""
    tmp = tmp_path_factory.mktemp("mgrid_city")
    settings = Settings(data_dir=tmp)
    with separate_database(store, "citygrid_mgrid") as engine:
        with engine.begin() as conn:
            load_dictionaries(conn, settings.category_edition)
        path = factories.write_geojson(tmp / "city.geojson", [*factories.city_features(), *_second_district()])
        result = factories.load(engine, path, "admin_unit", settings, crs="EPSG:4326")
        assert result.rows_rejected == 0
        yield engine, settings, tmp


#: Three good management grids (GCJ-02):
#:   A01 is community 370303001001 exactly (its community derived), holding its four unit grids;
#:   B01 is the south half of 370303001002, community stated by name, holding that community's grids 1 and 2;
#:   C01 spans 370303002001's north half and 370303002002's south half: no community, grids 3 and 4 of 002001.
GOOD = [
    _feature({"网格编码": "A01", "网格名称": "测试社区1-1第1网格"}, _gcj_square(X0, Y0, 0.05, 0.05)),
    _feature({"网格编码": "B01", "网格名称": "测试社区1-2第1网格", "所属社区": "测试社区1-2"},
             _gcj_square(X0, Y0 + 0.05, 0.05, STEP)),
    _feature({"网格编码": "C01", "网格名称": "跨社区网格", "所属区县": "370303"},
             _gcj_square(X0 + 0.05, Y0 + STEP, 0.05, 0.05)),
]


#: The unit grids of the test city as first loaded (a later test adds one).
CITY_GRIDS = {f["properties"]["code"] for f in [*factories.city_features(), *_second_district()]
              if len(f["properties"]["code"]) == 15}


def _load(engine: Engine, settings: Settings, path: Path, features: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
    return load_source(engine, factories.write_geojson(path, features),
                       LoadOptions(kind="management_grid", crs="GCJ02"), settings)


def _stored(engine: Engine) -> dict[str, tuple[Any, ...]]:
    with engine.connect() as conn:
        return {row[0]: tuple(row[1:]) for row in conn.execute(text(
            "SELECT code, name, community_code, district_code FROM core.management_grid"))}


def _assigned(engine: Engine) -> dict[str, str | None]:
    with engine.connect() as conn:
        return dict(conn.execute(text(
            "SELECT code, management_grid_code FROM core.admin_unit WHERE level = 'grid'")).all())


def test_management_grid_is_a_loader_kind_with_a_preset() -> None:
    loader, preset, how = LOADERS["management_grid"]
    assert (preset, how) == ("management_grids", "features")


def test_gcj02_management_grids_are_placed_and_assign_their_unit_grids(
        city: tuple[Engine, Settings, Path]) -> None:
    engine, settings, tmp = city
    result = _load(engine, settings, tmp / "good.geojson", GOOD)
    assert (result.rows_read, result.rows_new, result.rows_rejected) == (3, 3, 0)
    assert _stored(engine) == {
        "A01": ("测试社区1-1第1网格", "370303001001", "370303"),
        "B01": ("测试社区1-2第1网格", "370303001002", "370303"),
        "C01": ("跨社区网格", None, "370303"),
    }
    with engine.connect() as conn:  # converted from GCJ-02: A01's corner is the WGS 84 corner, not ~500 m off
        offset = conn.execute(text(
            "SELECT min(ST_Distance(ST_PointN(ST_ExteriorRing(ST_GeometryN(geom, 1)), n)::geography,"
            " ST_SetSRID(ST_MakePoint(:x, :y), 4326)::geography)) FROM core.management_grid, generate_series(1, 4) n"
            " WHERE code = 'A01'"), {"x": X0, "y": Y0}).scalar_one()
    assert offset < 1.0
    assigned = {code: mgrid for code, mgrid in _assigned(engine).items() if code in CITY_GRIDS}
    assert {g: assigned[g] for g in assigned if assigned[g]} == {
        **{f"370303001001{n:03d}": "A01" for n in (1, 2, 3, 4)},
        "370303001002001": "B01", "370303001002002": "B01",
        "370303002001003": "C01", "370303002001004": "C01",
    }
    # Grids outside every management grid keep none: B01 holds only the south half of its community.
    assert assigned["370303001002003"] is None and assigned["370303002001001"] is None
    assert assigned["370305001001001"] is None
    assert any("unit grids: 8 in a management grid (8 changed" in note for note in result.notes)


def test_loading_the_same_file_again_changes_nothing(city: tuple[Engine, Settings, Path]) -> None:
    engine, settings, tmp = city
    _load(engine, settings, tmp / "first.geojson", GOOD)
    before = _assigned(engine)
    again = _load(engine, settings, tmp / "again.geojson", GOOD)
    assert (again.rows_read, again.rows_new, again.rows_updated, again.rows_unchanged, again.rows_rejected) == (
        3, 0, 0, 3, 0)
    assert _assigned(engine) == before
    assert any("(0 changed by this load)" in note for note in again.notes)


def test_a_moved_management_grid_is_updated_and_its_unit_grids_follow(city: tuple[Engine, Settings, Path]) -> None:
    engine, settings, tmp = city
    _load(engine, settings, tmp / "before.geojson", GOOD)
    # B01 moves to the north half of its community: grids 3 and 4 join it, grids 1 and 2 leave it.
    moved = [*GOOD[:1], _feature({"网格编码": "B01", "网格名称": "测试社区1-2第1网格", "所属社区": "测试社区1-2"},
                                 _gcj_square(X0, Y0 + 0.05 + STEP, 0.05, STEP)), *GOOD[2:]]
    result = _load(engine, settings, tmp / "moved.geojson", moved)
    assert (result.rows_new, result.rows_updated, result.rows_unchanged) == (0, 1, 2)
    assigned = _assigned(engine)
    assert [assigned[f"370303001002{n:03d}"] for n in (1, 2, 3, 4)] == [None, None, "B01", "B01"]
    _load(engine, settings, tmp / "back.geojson", GOOD)  # as the other tests expect it
    assert [_assigned(engine)[f"370303001002{n:03d}"] for n in (1, 2, 3, 4)] == ["B01", "B01", None, None]


def test_bad_management_grids_are_kept_as_rejects_with_reasons(city: tuple[Engine, Settings, Path]) -> None:
    engine, settings, tmp = city
    _load(engine, settings, tmp / "good.geojson", GOOD)
    x, y = X0, Y0
    lon, lat = wgs84_to_gcj02([x, x + 0.01, x + 0.01, x, x], [y, y + 0.01, y, y + 0.01, y])
    bowtie = {"type": "Polygon", "coordinates": [[[float(a), float(b)] for a, b in zip(lon, lat, strict=True)]]}
    inside = _gcj_square(X0 + 0.001, Y0 + 0.001, 0.005, 0.005)  # in community 370303001001, off its grids' labels
    rows = [  # row numbers count from 1
        ({"网格编码": "网格#1", "网格名称": "坏编码"}, inside),                                 # 1 bad code
        ({"网格编码": "X" * 33, "网格名称": "过长编码"}, inside),                               # 2 bad code
        ({"网格编码": "D01", "网格名称": "正常网格"}, inside),                                  # 3 stored
        ({"网格编码": "D01", "网格名称": "重复网格"}, inside),                                  # 4 duplicate
        ({"网格编码": "D02", "网格名称": "自交网格"}, bowtie),                                  # 5 invalid
        ({"网格编码": "D03", "网格名称": "无几何"}, None),                                      # 6 no geometry
        ({"网格编码": "D04", "网格名称": "城外网格"}, _gcj_square(X0 + 1.0, Y0, 0.01, 0.01)),    # 7 outside the city
        ({"网格编码": "D05", "网格名称": "跨区网格"}, _gcj_square(X0 + 0.09, Y0, 0.02, 0.01)),   # 8 two districts
        ({"网格编码": "D06", "网格名称": "出界网格"}, _gcj_square(X0 + 0.19, Y0, 0.02, 0.01)),   # 9 leaves the city
        ({"网格编码": "D07", "网格名称": "错社区", "所属社区": "370303002001"}, inside),         # 10 not its community
        ({"网格编码": "D08", "网格名称": "无此社区", "所属社区": "不存在社区"}, inside),         # 11 unknown community
        ({"网格编码": "D09", "网格名称": "错区", "所属区县": "370305"}, inside),                 # 12 not its district
        ({"网格编码": "D10", "网格名称": "无此区", "所属区县": "不存在区"}, inside),             # 13 unknown district
        ({"网格编码": "D11", "网格名称": ""}, inside),                                          # 14 no name
        ({"网格编码": "E01", "网格名称": "第二区网格", "所属区县": "第二测试区"},                 # 15 stored
         _gcj_square(X0 + 0.12, Y0 + 0.01, 0.01, 0.01)),
    ]
    result = _load(engine, settings, tmp / "bad.geojson", [_feature(p, g) for p, g in rows])
    assert (result.rows_read, result.rows_stored, result.rows_rejected) == (15, 2, 13)
    with engine.connect() as conn:
        reasons = dict(conn.execute(text(
            "SELECT row_number, reason FROM private.rejected_row WHERE run_id = :run"), {"run": result.run_id}).all())
    assert set(reasons) == {1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}
    assert "code must be 1 to 32" in reasons[1] and "code must be 1 to 32" in reasons[2]
    assert reasons[4] == "duplicate of row 3 (same code)"
    assert "malformed geometry" in reasons[5]
    assert "missing or empty" in reasons[6]
    assert reasons[7] == "lies outside the city (in no loaded district)"
    assert reasons[8] == "spans districts 370303, 370305: a management grid lies within one district"
    assert reasons[9] == "extends beyond district 370305 (outside the city)"
    assert reasons[10] == "lies outside its stated community '370303002001'"
    assert reasons[11] == "community '不存在社区' is not loaded"
    assert reasons[12] == "lies in district 370303, not in the stated district '370305'"
    assert reasons[13] == "district '不存在区' is not loaded"
    assert reasons[14] == "name is empty"
    stored = _stored(engine)
    assert stored["D01"] == ("正常网格", "370303001001", "370303")
    assert stored["E01"] == ("第二区网格", "370305001001", "370305")
    # D01 lies inside A01 but holds no unit grid's label point: A01's grids stay with A01.
    assert _assigned(engine)["370303001001001"] == "A01"


def test_a_unit_grid_loaded_after_the_management_grids_gets_one(city: tuple[Engine, Settings, Path]) -> None:
    engine, settings, tmp = city
    _load(engine, settings, tmp / "good.geojson", GOOD)
    # Community 370303002002 had no unit grids; its first one lies in C01's north half.
    path = factories.write_geojson(tmp / "late_grid.geojson", [_feature(
        {"code": "370303002002001", "name": "新网格"}, factories._square(X0 + 0.05, Y0 + 0.05, STEP, STEP))])
    result = factories.load(engine, path, "admin_unit", settings, crs="EPSG:4326")
    assert (result.rows_new, result.rows_rejected) == (1, 0)
    assert _assigned(engine)["370303002002001"] == "C01"
    assert any("1 changed their management grid" in note for note in result.notes)


def test_citygrid_load_takes_management_grids(city: tuple[Engine, Settings, Path]) -> None:
    """`citygrid load management_grid FILE --crs GCJ02` runs the same loader and prints the balance."""
    import subprocess
    import sys

    from geodata.settings import PROJECT_ROOT

    engine, settings, tmp = city
    _load(engine, settings, tmp / "good.geojson", GOOD)
    path = factories.write_geojson(tmp / "cli.geojson", GOOD)
    env = {"PATH": "/usr/bin:/bin", "COLUMNS": "200", "CITYGRID_DATA_DIR": str(tmp),
           "DATABASE_URL": engine.url.render_as_string(hide_password=False)}
    done = subprocess.run([sys.executable, "-m", "cli", "load", "management_grid", str(path), "--crs", "GCJ02",
                           "--strict"], cwd=PROJECT_ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if "cli.geojson" in line and "│" in line)
    assert [cell.strip() for cell in row.split("│")[3:8]] == ["3", "0", "0", "3", "0"]  # read new upd unch rej
    assert re.search(r"unit grids: \d+ in a management grid \(0 changed by this load\)", done.stdout)
    helped = subprocess.run([sys.executable, "-m", "cli", "load", "--help"], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, env=env, timeout=120)
    assert "management_grid" in helped.stdout


# ------------------------------------------------------------------------------------------ the demo city


@pytest.mark.slow
def test_demo_unit_grids_each_belong_to_exactly_one_management_grid(demo_city: DemoCity) -> None:
    report = demo_city.report
    result = next(r for r in report.results if r.kind == "management_grid")
    assert result.rows_rejected == 0 and result.rows_stored == report.manifest["counts"]["management_grids"]
    with demo_city.store.writer.connect() as conn:
        per_grid = conn.execute(text(
            "SELECT g.code, g.management_grid_code, count(m.code) AS holding, min(m.code) AS first"
            " FROM core.admin_unit g LEFT JOIN core.management_grid m ON ST_Intersects(m.geom, g.label_point)"
            " WHERE g.level = 'grid' GROUP BY g.code, g.management_grid_code")).all()
        assert per_grid and all(row.holding == 1 and row.management_grid_code == row.first for row in per_grid)
        # Each management grid lies in one district; its unit grids are all of that district (and of its
        # community where it has one).
        crossing = conn.execute(text(
            "SELECT count(*) FROM core.admin_unit g JOIN core.management_grid m ON m.code = g.management_grid_code"
            " WHERE g.district_code <> m.district_code"
            " OR (m.community_code IS NOT NULL AND g.community_code <> m.community_code)")).scalar_one()
        assert crossing == 0
        outside = conn.execute(text(
            "SELECT count(*) FROM core.management_grid m JOIN core.admin_unit d ON d.code = m.district_code"
            " WHERE NOT ST_CoveredBy(m.geom, ST_Buffer(d.geom, 0.00002))")).scalar_one()
        assert outside == 0
        sizes = conn.execute(text(
            "SELECT m.code, m.name, count(*) FILTER (WHERE g.area_m2 < 20000) AS fine, count(*) AS grids"
            " FROM core.management_grid m JOIN core.admin_unit g ON g.management_grid_code = m.code"
            " GROUP BY m.code, m.name")).all()
        total = conn.execute(text("SELECT count(*) FROM core.management_grid")).scalar_one()
        with_community = conn.execute(text(
            "SELECT count(*) FROM core.management_grid WHERE community_code IS NOT NULL")).scalar_one()
    grids = report.manifest["counts"]["grids"]
    assert len(sizes) == total, "every management grid holds unit grids"
    assert grids / 14 < total < grids / 5, "groups of roughly 4-12 unit grids"
    core = [s for s in sizes if "第" in s.name]
    assert len(core) > total * 0.6
    in_range = sum(1 for s in core if 4 <= s.grids <= 12)
    assert in_range > 0.9 * len(core), "core management grids hold 4-12 unit grids"
    assert with_community == total, "the demo's management grids each lie in one community"
