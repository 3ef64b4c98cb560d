"""The demo city: shapes tile exactly, codes nest, files are what a centre exports, rates match the reports.

Most tests read back the files of a small generated set (the demo size scaled down, coarser grids) with the
ETL's own readers; one slow test loads the full demo size into the suite's PostGIS through the ETL.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from sqlalchemy import text

from etl.chinese_crs import gcj02_to_wgs84, transform_geometries
from etl.demo import build_demo, manifest_matches
from etl.demo.generate import (
    CASE_HEADERS,
    METRIC_EPSG,
    SizeSpec,
    build_ground,
    build_management_grids,
    generate,
    generator_inputs,
    read_city,
    size_spec,
)
from etl.readers import read_table
from geodata.dictionaries import read_categories
from geodata.settings import Settings
from tests.conftest import DEMO_REFERENCE, DEMO_SEED, DemoCity

SEED = DEMO_SEED
REFERENCE = DEMO_REFERENCE  # the generated year is 2025-10-01 .. 2026-09-30
MIDNIGHT = pd.Timestamp("2026-10-01 00:00:00")
SMALL: SizeSpec = size_spec("demo").scaled(0.15, core_cell_m=400.0, name="test")
STAGE_HEADERS = ("上报时间", "立案时间", "派遣时间", "处置时间", "结案时间")
CITY = read_city()
STREETS = {d["adcode"] + s["code"]: s for d in CITY["districts"] for s in d["streets"]}


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("demo_small")
    return out, generate(out, SMALL, seed=SEED, reference_date=REFERENCE)


def _metric(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    return frame.to_crs(METRIC_EPSG)


@pytest.fixture(scope="module")
def shapes(small: tuple[Path, dict[str, Any]]) -> dict[str, gpd.GeoDataFrame]:
    """The admin files read back, all in metres (EPSG:4548)."""
    out, _ = small
    districts = gpd.read_file(out / "01_districts_gcj02.geojson")
    districts = gpd.GeoDataFrame(districts.drop(columns="geometry"), crs=4326,
                                 geometry=transform_geometries(districts.geometry.to_numpy(), "GCJ02"))
    gpkg = out / "02_streets_communities_cgcs2000.gpkg"
    return {
        "districts": _metric(districts),
        "streets": _metric(gpd.read_file(gpkg, layer="streets")),
        "communities": _metric(gpd.read_file(gpkg, layer="communities")),
        "grids": gpd.read_file(out / "03_unit_grids_gk117.shp"),
    }


@pytest.fixture(scope="module")
def cases(small: tuple[Path, dict[str, Any]]) -> dict[str, pd.DataFrame]:
    """The monthly exports (read by the ETL's reader) and the updates file, with parsed times."""
    out, manifest = small
    entries = [f for f in manifest["files"] if f["kind"] == "case"]
    months = []
    for entry in entries[:-1]:
        raw = read_table(out / entry["path"])
        assert list(raw.frame.columns[1:]) == list(CASE_HEADERS)
        assert raw.encoding == entry["encoding"] and raw.rejects.empty
        months.append(raw.frame.assign(_file=entry["path"], _crs=entry["crs"]))
    updates = read_table(out / entries[-1]["path"]).frame
    return {"months": _parsed(pd.concat(months, ignore_index=True)), "updates": _parsed(updates)}


def _parsed(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for column in (*STAGE_HEADERS, "作废时间", "评价时间", "处置时限", "结案时限"):
        frame[column] = pd.to_datetime(frame[column], format="%Y-%m-%d %H:%M:%S")
    return frame


def _final(cases: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Each case as it stands at the reference date: its update where there is one, else its month row."""
    months, updates = cases["months"], cases["updates"]
    return pd.concat([months[~months["案件编号"].isin(updates["案件编号"])], updates], ignore_index=True)


# -------------------------------------------------------------------------------------------- shapes


def test_manifest_lists_every_file_in_load_order(small: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = small
    kinds = [f["kind"] for f in manifest["files"]]
    assert kinds == (["admin_unit"] * 4 + ["management_grid"] + ["component"] * 3 + ["camera"]
                     + ["case"] * 13 + ["road"] + ["track"] * 2)  # 12 months + updates
    assert [f.get("layer") for f in manifest["files"][1:3]] == ["streets", "communities"]
    assert [f["crs"] for f in manifest["files"][:7]] == ["GCJ02", "EPSG:4490", "EPSG:4490", "EPSG:4548",
                                                         "GCJ02", "EPSG:4490", "EPSG:4490"]
    assert manifest["files"][8]["crs"] == "GCJ02"  # cameras picked on an Amap map
    case_files = manifest["files"][9:]
    case_files = [f for f in case_files if f["kind"] == "case"]  # the roads and the week's tracks (CSV, GPX) follow
    assert {f["encoding"] for f in case_files} == {"gbk", "utf-8-sig", None}  # None: XLSX
    assert case_files[0]["path"].endswith(".xlsx") and case_files[0]["crs"] == "GCJ02"
    assert case_files[-1]["path"].startswith("cases/case_updates_")
    assert all((out / f["path"]).is_file() for f in manifest["files"])
    assert (out / "03_unit_grids_gk117.cpg").read_text() == "GBK"
    assert (manifest["size"], manifest["seed"], manifest["reference_date"]) == ("test", SEED, "2026-10-01")
    assert manifest["period"] == ["2025-10-01", "2026-09-30"]
    assert manifest["counts"]["cases"] == SMALL.cases


def _tiles(parts: np.ndarray, whole: shapely.Geometry) -> tuple[float, float]:
    """(area of the symmetric difference between the parts' union and the whole, area of their overlaps)."""
    union = shapely.union_all(parts)
    return shapely.symmetric_difference(union, whole).area, float(shapely.area(parts).sum() - union.area)


def test_streets_tile_each_district_exactly(shapes: dict[str, gpd.GeoDataFrame]) -> None:
    streets = shapes["streets"]
    for district in shapes["districts"].itertuples():
        mine = streets[streets["区划代码"].str[:6] == district.adcode]
        assert sorted(mine["区划代码"]) == sorted(c for c in STREETS if c.startswith(district.adcode))
        gap, overlap = _tiles(mine.geometry.to_numpy(), district.geometry)
        assert gap < 1.0 and overlap < 1.0
        assert (mine.geometry.geom_type == "Polygon").all(), "every street is one piece"
    names = dict(zip(streets["区划代码"], streets["名称"], strict=True))
    assert all(names[code] == street["name"] for code, street in STREETS.items())


def test_communities_tile_streets_with_real_names_and_codes(shapes: dict[str, gpd.GeoDataFrame]) -> None:
    communities = shapes["communities"]
    for street in shapes["streets"].itertuples():
        mine = communities[communities["区划代码"].str[:9] == street.区划代码]
        spec = STREETS[street.区划代码]
        assert len(mine) == spec["n_communities"] + spec["n_villages"]
        assert (mine.loc[mine["层级"] == "社区", "区划代码"].str[9:].astype(int) < 200).all()
        assert (mine.loc[mine["层级"] == "村", "区划代码"].str[9:].astype(int) > 200).all()
        gap, overlap = _tiles(mine.geometry.to_numpy(), street.geometry)
        assert gap < 1.0 and overlap < 1.0
    assert communities["区划代码"].is_unique and (communities.geometry.geom_type == "Polygon").all()
    panyuan = communities[communities["名称"] == "潘苑社区"]
    assert panyuan[["区划代码", "所属街道"]].values.tolist() == [["370303005003", "科苑街道"]]
    assert communities.loc[communities["名称"] == "金茵社区", "区划代码"].tolist() == ["370305004001"]


def test_grids_nest_in_communities_and_are_numbered_west_to_east_north_to_south(
        shapes: dict[str, gpd.GeoDataFrame]) -> None:
    grids, communities = shapes["grids"], shapes["communities"].set_index("区划代码")
    code = grids["网格编码"]
    assert code.str.fullmatch(r"\d{15}").all() and code.is_unique
    parent = communities.loc[code.str[:12]]
    assert shapely.covered_by(grids.geometry.to_numpy(), shapely.buffer(parent.geometry.to_numpy(), 0.01)).all()
    area = grids.assign(area=grids.geometry.area).groupby(code.str[:12])["area"].sum()
    assert np.allclose(area, communities.loc[area.index].geometry.area, atol=1.0), "grids tile their community"
    assert set(area.index) == set(communities.index), "every community has unit grids"
    cell = SMALL.core_cell_m
    fine = grids["网格类型"] == "城区万米网格"
    assert (np.abs(grids.loc[fine].geometry.area - cell ** 2) < 1.0).mean() > 0.1, "whole lattice cells"
    assert (grids.geometry.area >= 0.3 * cell ** 2).mean() > 0.995, "slivers joined a neighbour"
    reps = shapely.point_on_surface(grids.geometry.to_numpy())
    frame = pd.DataFrame({"community": code.str[:12], "serial": code.str[12:].astype(int),
                          "x": shapely.get_x(reps), "y": shapely.get_y(reps)})
    for _, group in frame.groupby("community"):
        group = group.sort_values("serial")
        assert group["serial"].tolist() == list(range(1, len(group) + 1))
        row = np.floor((group["y"].max() - group["y"]) / cell + 1e-9).to_numpy()
        keys = list(zip(row, group["x"], strict=True))
        assert keys == sorted(keys), "serials run west to east in rows from the north"


def test_management_grids_group_unit_grids_of_one_community(small: tuple[Path, dict[str, Any]],
                                                            shapes: dict[str, gpd.GeoDataFrame]) -> None:
    out, manifest = small
    entry = next(f for f in manifest["files"] if f["kind"] == "management_grid")
    raw = gpd.read_file(out / entry["path"])
    assert len(raw) == entry["rows"] == manifest["counts"]["management_grids"]
    code = raw["网格编码"]
    assert code.str.fullmatch(r"[0-9A-Za-z_-]{1,32}").all() and code.is_unique  # core.management_grid's CHECK
    assert (code.str[:12] == raw["社区编码"]).all() and code.str.fullmatch(r"\d{14}").all()
    assert raw["网格名称"].str.fullmatch(r".+(社区|村)(第\d+网格|外围网格|网格)").all()
    assert raw.loc[raw["所属社区"] == "潘苑社区", "网格名称"].str.fullmatch(r"潘苑社区第\d+网格").all()
    mgrids = _metric(gpd.GeoDataFrame(raw.drop(columns="geometry"), crs=4326,
                                      geometry=transform_geometries(raw.geometry.to_numpy(), "GCJ02")))
    grids, communities = shapes["grids"], shapes["communities"].set_index("区划代码")
    reps = shapely.point_on_surface(grids.geometry.to_numpy())
    hit, owner = shapely.STRtree(mgrids.geometry.to_numpy()).query(reps, predicate="intersects")
    assert np.bincount(hit, minlength=len(grids)).tolist() == [1] * len(grids), "each unit grid in exactly one"
    owner_of = np.empty(len(grids), dtype=np.int64)
    owner_of[hit] = owner
    assert (code.str[:12].to_numpy()[owner_of] == grids["网格编码"].str[:12].to_numpy()).all(), "its community's"
    community_shapes = shapely.buffer(communities.loc[raw["社区编码"]].geometry.to_numpy(), 0.01)
    assert shapely.covered_by(mgrids.geometry.to_numpy(), community_shapes).all(), "within its community"
    units = np.bincount(owner_of, minlength=len(raw))
    assert (units == raw["单元网格数"].to_numpy()).all()
    core = (raw["网格类型"] == "城区管理网格").to_numpy()
    # 4-12 unit grids each; a few stay smaller where a community holds only a corner of the core (more often
    # with this set's 400 m cells than at the standard's 100 m: test_demo_unit_grids_each_belong_to_...).
    assert core.sum() > 100 and ((units[core] >= 4) & (units[core] <= 12)).mean() > 0.8, "4-12 unit grids"
    assert units[core].max() <= 12


def test_city_size_has_the_standard_grids() -> None:
    ground = build_ground(CITY, size_spec("city"), SEED)
    grids = ground.grids
    assert len(grids) >= 20_000
    assert grids.loc[grids["fine"]].geometry.area.median() == pytest.approx(10_000.0)
    assert grids["code"].str[12:].astype(int).max() < 1000
    mgrids, owner = build_management_grids(ground, size_spec("city"))
    assert (owner >= 0).all() and np.bincount(owner).min() >= 1, "every unit grid in one, none empty"
    assert (mgrids["community"].to_numpy()[owner] == grids["community"].to_numpy()).all()
    assert len(grids) / 12 < len(mgrids) < len(grids) / 4


# ---------------------------------------------------------------------------------- components, cameras


def test_components_follow_the_dictionary_and_the_built_up_core(small: tuple[Path, dict[str, Any]],
                                                                shapes: dict[str, gpd.GeoDataFrame]) -> None:
    out, manifest = small
    path = out / "04_components_cgcs2000.gpkg"
    layers = {shape: _metric(gpd.read_file(path, layer=f"components_{shape}")) for shape in ("point", "line", "polygon")}
    assert set(layers["line"].geometry.geom_type) == {"LineString"}
    assert set(layers["polygon"].geometry.geom_type) == {"Polygon"}
    frame = pd.concat(layers.values(), ignore_index=True)
    code = frame["部件编码"]
    assert code.str.fullmatch(r"(370303|370305)\d{10}").all() and code.is_unique
    minors = set(read_categories().query("kind == 'component' and not is_major")["code"])
    assert set(code.str[6:10]) <= minors
    per_district = frame.groupby([code.str[:6], code.str[6:10]]).size()
    assert (per_district["370303", "0301"], per_district["370305", "0301"]) == (112, 72)  # [seed 004] toilets
    assert (per_district["370303", "0312"], per_district["370305", "0312"]) == (9, 6)  # transfer stations
    assert len(frame) == manifest["counts"]["components"]
    grids = shapes["grids"]
    joined = gpd.sjoin(layers["point"], grids[["网格类型", "geometry"]], predicate="within")
    core_share = (joined["网格类型"] == "城区万米网格").mean()
    core_area = grids.loc[grids["网格类型"] == "城区万米网格"].geometry.area.sum() / grids.geometry.area.sum()
    assert core_area < 0.3 and core_share > 0.75, "densities follow the built-up area"


def test_cameras_match_the_reports(small: tuple[Path, dict[str, Any]], shapes: dict[str, gpd.GeoDataFrame]) -> None:
    out, manifest = small
    raw = read_table(out / "05_cameras_gcj02.xlsx")
    cameras = raw.frame
    assert raw.rejects.empty and len(cameras) == manifest["counts"]["cameras"]
    assert cameras["设备编码"].str.fullmatch(r"\d{20}").all() and cameras["设备编码"].is_unique
    heading, fov, reach = (cameras[c].astype(float) for c in ("朝向", "视场角", "可视距离"))
    assert heading.between(0, 359).all() and fov.between(1, 360).all() and reach.between(1, 2000).all()
    assert (fov < 360).mean() > 0.7, "most cameras look one way: there are blind spots behind them"
    lon, lat = gcj02_to_wgs84(cameras["经度"].astype(float), cameras["纬度"].astype(float))
    points = gpd.GeoDataFrame(cameras, geometry=gpd.points_from_xy(lon, lat), crs=4326).to_crs(METRIC_EPSG)
    street = gpd.sjoin(points, shapes["streets"][["区划代码", "geometry"]], predicate="within")
    wenshao = street[street["区划代码"] == "370305001"]
    kinds = wenshao["点位类型"].value_counts()
    assert abs(len(wenshao) - kinds.get("明厨亮灶", 0) - 3600) <= 10  # [seed 000] 3,600+ HD cameras
    assert abs(kinds.get("明厨亮灶", 0) - 326) <= 3  # [seed 000] 326 kitchen feeds
    panyuan = cameras[cameras["点位名称"].str.startswith("潘苑社区")]
    assert (panyuan["点位名称"].str.contains("人脸识别")).sum() == 67  # [seed 004]
    assert panyuan["点位名称"].str.contains("高空鹰眼").sum() == 1
    assert len(panyuan) >= 301
    components = pd.concat(gpd.read_file(out / "04_components_cgcs2000.gpkg", layer=f"components_{s}")
                           for s in ("point", "line", "polygon"))
    assert set(cameras["部件编码"]) <= set(components["部件编码"])


# ---------------------------------------------------------------------------------------------- cases


def test_case_exports_are_consistent_and_never_in_the_future(cases: dict[str, pd.DataFrame]) -> None:
    months = cases["months"]
    number = months["案件编号"]
    assert number.str.fullmatch(r"(ZD|LZ)\d{8}\d{6}").all() and number.is_unique
    assert (number.str[2:10] == months["上报时间"].dt.strftime("%Y%m%d")).all()
    for _, group in months.groupby(number.str[:2]):
        ordered = group.sort_values("案件编号")["上报时间"]
        assert ordered.is_monotonic_increasing, "case numbers sort by report time"
    final = _final(cases)
    times = final[list(STAGE_HEADERS)]
    for earlier, later in zip(STAGE_HEADERS, STAGE_HEADERS[1:], strict=False):
        assert not (final[later] < final[earlier]).any(), f"{later} before {earlier}"
    assert not (final["处置时间"] < final["立案时间"]).any()
    assert (final["处置时限"].dropna() > final.loc[final["处置时限"].notna(), "上报时间"]).all()
    assert not (final["结案时限"] < final["处置时限"]).any()
    self_handled = final["是否自行处置"] == "是"
    assert final.loc[self_handled, "派遣时间"].isna().all(), "self-handled cases are never dispatched"
    voided = final["作废时间"].notna()
    assert final.loc[voided, "结案时间"].isna().all() and final.loc[voided, "立案时间"].isna().all()
    assert (final.loc[final["结案时间"].isna(), "解决层级"].isna() | final.loc[final["结案时间"].isna(), "处置时间"].notna()).all()
    latest = pd.concat([times.max(), final[["作废时间", "评价时间"]].max()]).max()
    assert latest < MIDNIGHT and final["上报时间"].min() >= pd.Timestamp("2025-10-01")


def test_updates_carry_later_stages_of_cases_open_at_their_months_cut_off(cases: dict[str, pd.DataFrame]) -> None:
    months, updates = cases["months"].set_index("案件编号"), cases["updates"].set_index("案件编号")
    assert updates.index.is_unique and updates.index.isin(months.index).all()
    assert 0.005 < len(updates) / len(months) < 0.08, "a few percent of the cases move on later"
    before = months.loc[updates.index]
    moved = pd.Series(False, index=updates.index)
    for column in ("立案时间", "派遣时间", "处置时间", "结案时间", "作废时间", "评价时间"):
        kept = before[column].notna()
        assert (updates.loc[kept, column] == before.loc[kept, column]).all(), f"{column} never goes back"
        moved |= updates[column].notna() & before[column].isna()
    assert moved.all()
    cut_off = before["上报时间"].dt.to_period("M").dt.to_timestamp() + pd.offsets.MonthBegin(1)
    for column in ("立案时间", "派遣时间", "处置时间", "结案时间", "作废时间", "评价时间"):
        new = updates[column].notna() & before[column].isna()
        assert (updates.loc[new, column] >= cut_off[new]).all(), "what moved on happened after the export"


def test_reporters_personal_data_is_plainly_synthetic(cases: dict[str, pd.DataFrame]) -> None:
    final = _final(cases)
    names, phones, ids = (final[c].dropna() for c in ("上报人", "联系电话", "身份证号"))
    assert len(names) and len(phones) and len(ids)
    assert names.str.match(r"^(测试|示例)").all()
    assert phones.str.fullmatch(r"1990000\d{4}").all()
    assert ids.str.fullmatch(r"990000\d{4}0230\d{3}[\dX]").all()
    weights = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2])
    digits = np.array([[int(c) for c in value[:17]] for value in ids])
    assert ("".join("10X98765432"[s] for s in (digits * weights).sum(axis=1) % 11) == "".join(ids.str[17]))


def test_generated_rates_fall_in_the_ranges_the_reports_imply(cases: dict[str, pd.DataFrame]) -> None:
    """济宁高新区 [seed 002]: self-handled 19.02 %, dispatched 79.07 %, 处置率 100 %, 按期结案率 99.86 %."""
    final = _final(cases)
    n = len(final)
    dispatched = final["派遣时间"].notna()
    voided = final["作废时间"].notna()
    assert 0.18 < (final["是否自行处置"] == "是").sum() / n < 0.20
    assert 0.775 < dispatched.sum() / n < 0.805
    assert 0.012 < voided.sum() / n < 0.027
    handled = dispatched & final["处置时间"].notna()
    assert handled.sum() / dispatched.sum() > 0.995  # 处置率 ≈ 100 %
    on_time = dispatched & (final["处置时间"] <= final["处置时限"])
    assert 0.97 < on_time.sum() / dispatched.sum() < 0.999  # 按期处置率: high 90s, with a tail
    due = ~voided & (final["结案时间"].notna() | (final["结案时限"] <= MIDNIGHT))
    closed = due & final["结案时间"].notna()
    assert closed.sum() / due.sum() > 0.997  # 结案率 ≈ 100 % of those due
    assert 0.985 < (closed & (final["结案时间"] <= final["结案时限"])).sum() / due.sum() < 0.9995  # 按期结案率
    open_recent = final.loc[final["派遣时间"].notna() & final["结案时间"].isna(), "上报时间"]
    assert len(open_recent) and open_recent.min() > MIDNIGHT - pd.Timedelta(days=30), "the open tail is recent"
    levels = final.loc[final["结案时间"].notna(), "解决层级"].value_counts(normalize=True)
    assert levels["网格"] > 0.75 and levels["网格"] > levels["社区"] > levels["街道"] > levels["区"]
    # Per street, scaled to the demo size: of the order of 柳行街道's 3,700 events a year [seed 002].
    street = final["地址"].str[3:].map(lambda a: next(s["name"] for s in STREETS.values() if a.startswith(s["name"])))
    per_street = street.value_counts() / SMALL.cases * size_spec("demo").cases
    assert 1_000 < per_street.median() < 10_000 and per_street.min() > 300


def test_cases_have_daily_and_weekly_rhythms_and_hot_spots(cases: dict[str, pd.DataFrame]) -> None:
    final = _final(cases)
    patrol = final[final["问题来源"] == "网格员上报"]["上报时间"]
    assert patrol.dt.hour.between(7, 18).mean() > 0.9, "patrollers report in working hours"
    per_day = patrol.dt.normalize().value_counts()
    weekend = per_day.index.day_of_week >= 5
    assert per_day[weekend].mean() < 0.7 * per_day[~weekend].mean(), "fewer patrols at weekends"
    hotline = final[final["问题来源"] == "12345热线"]["上报时间"]
    assert (hotline.dt.hour >= 19).mean() > 0.05, "citizens call in the evening too"
    addresses = final["地址"]
    assert addresses.str.contains("市场|早市|夜市").mean() > 0.04 and addresses.str.contains("小学|中学|幼儿园").mean() > 0.01
    panyuan = addresses.str.contains("潘苑社区").sum()
    assert panyuan > 5 * len(final) / 772, "the old 潘苑 estate is a hot spot [seed 004]"
    snow = final.loc[final["小类"] == "道路积雪结冰", "上报时间"].dt.month
    assert set(snow) <= {12, 1, 2}, "snow only in winter"


def test_same_seed_gives_byte_identical_files(small: tuple[Path, dict[str, Any]],
                                              tmp_path: Path) -> None:
    out, manifest = small
    again = generate(tmp_path, SMALL, seed=SEED, reference_date=REFERENCE)
    assert again == manifest

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert all(digest(out / f) == digest(tmp_path / f) for f in files)


# ------------------------------------------------------------------------------------ loaded by the ETL


@pytest.fixture(scope="module")
def loaded(demo_city: DemoCity):  # type: ignore[no-untyped-def]
    """The session's demo city (tests/conftest.py), loaded through the ETL into a database of its own."""
    return demo_city.report, demo_city.store.writer


@pytest.mark.slow
def test_demo_loads_through_the_etl_with_no_rejects(loaded) -> None:  # type: ignore[no-untyped-def]
    report, engine = loaded
    counts = report.manifest["counts"]
    assert [r.source_name for r in report.results] == [Path(f["path"]).name for f in report.manifest["files"]]
    for result, entry in zip(report.results, report.manifest["files"], strict=True):
        assert result.rows_read == entry["rows"] == result.rows_stored + result.rows_rejected
    assert report.rows_rejected <= report.rows_read // 1000
    assert all(r.rows_rejected == 0 for r in report.results if r.kind != "case")
    updates = [r for r in report.results if r.kind == "case"][-1]
    assert updates.rows_updated == counts["case_updates"], "updates move stored cases on"
    assert manifest_matches(report.out_dir, "demo", SEED)
    with engine.connect() as conn:
        levels = dict(conn.execute(text("SELECT level, count(*) FROM core.admin_unit GROUP BY level")).all())
        assert levels == {"district": 2, "street": counts["streets"], "community": counts["communities"],
                          "grid": counts["grids"]}
        assert conn.execute(text("SELECT count(*) FROM core.component")).scalar_one() == counts["components"]
        assert conn.execute(text("SELECT count(*) FROM core.camera")).scalar_one() == counts["cameras"]
        assert 90_000 <= conn.execute(text("SELECT count(*) FROM core.case_record")).scalar_one() <= 100_000
        blind = conn.execute(text("SELECT avg(covered_share), count(*) FILTER (WHERE covered_share < 0.5)"
                                  " FROM core.grid_coverage")).one()
        assert blind[0] < 0.5 and blind[1] > 0, "cameras leave real blind spots"
        per_street = conn.execute(text(
            "SELECT a.name, count(*) FROM core.case_record c JOIN core.admin_unit a ON a.code = c.street_code"
            " WHERE c.case_number ~ '^(ZD|LZ)' GROUP BY a.name")).all()
        counts_by_street = dict(per_street)
        assert len(counts_by_street) == 25
        assert 1_000 < float(np.median(list(counts_by_street.values()))) < 10_000  # 柳行街道: 3,700 [seed 002]
        assert 1_000 < counts_by_street["雪宫街道"] < 20_000  # 73,000 residents [seed 003]
        reporters = conn.execute(text(
            "SELECT count(*), bool_and(reporter_name ~ '^(测试|示例)') FROM private.case_reporter"
            " WHERE reporter_name IS NOT NULL")).one()
        assert reporters[0] > 10_000 and reporters[1]


@pytest.mark.slow
def test_loaded_rates_match_the_reports(loaded) -> None:  # type: ignore[no-untyped-def]
    from geodata.kpi import compute_rates, count_cases

    _, engine = loaded
    as_of = datetime(2026, 10, 1, tzinfo=ZoneInfo("Asia/Shanghai"))
    counts = count_cases(engine, date(2025, 10, 1), date(2026, 9, 30), as_of=as_of)
    rates = compute_rates(counts)
    assert 0.18 < rates["self_handled_share"] < 0.20  # 15,925 / 83,722 = 19.02 %
    assert 0.775 < counts.dispatched / counts.reported < 0.805  # 66,201 / 83,722 = 79.07 %
    assert rates["handling_rate"] > 0.995  # 处置率 100.00 %
    assert 0.97 < rates["on_time_handling_rate"] < 0.999  # 按期处置率: high 90s
    assert rates["closing_rate"] > 0.997  # 结案率 100.00 % of those due
    assert 0.985 < rates["on_time_closing_rate"] < 0.9995  # 按期结案率 99.86 %
    assert rates["grid_resolution_share"] > 0.75
    assert rates["community_resolution_share"] > rates["street_resolution_share"] > rates["district_resolution_share"]


def test_a_complete_set_is_recognised_by_size_and_seed(small: tuple[Path, dict[str, Any]]) -> None:
    out, _ = small
    assert manifest_matches(out, "test", SEED)
    assert not manifest_matches(out, "test", SEED + 1) and not manifest_matches(out, "demo", SEED)


def test_a_set_from_another_generator_is_generated_again(small: tuple[Path, dict[str, Any]],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A set written before the generator changed (e.g. before it wrote management grids) is not reused."""
    out, manifest = small
    assert manifest["inputs"] == generator_inputs() and set(manifest["inputs"]) >= {"generator", "demo_city.yaml"}
    monkeypatch.setattr("etl.demo.generator_inputs", lambda: {**manifest["inputs"], "generator": "0" * 64})
    assert not manifest_matches(out, "test", SEED)


@pytest.mark.slow
def test_loading_the_demo_again_changes_nothing(loaded, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    report, engine = loaded
    settings = Settings(data_dir=tmp_path)
    again = build_demo(engine, "demo", report.out_dir, settings, seed=SEED, reference_date=REFERENCE)
    assert sum(r.rows_new for r in again.results) == 0
    assert sum(r.rows_updated for r in again.results) == 0
    # A month's export read again after its updates carries older stages: kept as rejects, loudly, never applied.
    rejected = sum(r.rows_rejected for r in again.results)
    assert sum(r.rows_unchanged for r in again.results) + rejected == sum(r.rows_stored for r in report.results)
    assert again.results[-1].rows_unchanged == again.results[-1].rows_read, "the updates themselves are unchanged"
    with engine.connect() as conn:
        reasons = conn.execute(text(
            "SELECT count(*), count(*) FILTER (WHERE reason LIKE 'stage going backwards%') FROM private.rejected_row"
            " WHERE run_id = ANY(:runs)"), {"runs": [r.run_id for r in again.results]}).one()
    assert reasons[0] == rejected and reasons[1] == rejected
