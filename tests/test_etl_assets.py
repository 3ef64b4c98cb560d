"""Components and cameras through the ETL: codes, states, CRSs, sectors and per-grid coverage."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
import shapely
from sqlalchemy import text

from etl.chinese_crs import wgs84_to_gcj02
from geodata.settings import Settings
from tests import factories
from tests.conftest import SuiteStore


@pytest.fixture(scope="module")
def city(store: SuiteStore, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"))
    factories.build_city(store.writer, tmp_path_factory.mktemp("city"), settings)
    return settings


def test_components_from_a_geopackage_in_cgcs2000(store: SuiteStore, city: Settings, tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame(
        {
            "部件编码": ["3703030101000001", "3703030411000001", "3703030199000001", "3703050101000001",
                     "3703030101000002"],
            "部件名称": ["上水井盖", "花坛", "未知小类", "别区编码", "第二井盖"],
            "部件状态": ["完好", "破损", "完好", "完好", "被偷了"],
            "主管部门": ["自来水公司", "园林局", "", "", ""],
        },
        geometry=[shapely.Point(118.01, 36.79), shapely.box(118.011, 36.791, 118.012, 36.792),
                  shapely.Point(118.01, 36.79), shapely.Point(118.01, 36.79), shapely.Point(118.02, 36.79)],
        crs="EPSG:4490",
    )
    path = tmp_path / "components.gpkg"
    frame.to_file(path, layer="部件", driver="GPKG")
    result = factories.load(store.writer, path, "component", city)
    assert (result.rows_read, result.rows_new, result.rows_rejected) == (5, 2, 3)
    with store.writer.connect() as conn:
        stored = dict(conn.execute(text(
            "SELECT code, state || ' ' || grid_code FROM core.component WHERE code LIKE '370303%'")).all())
        reasons = [r for (r,) in conn.execute(text(
            "SELECT reason FROM private.rejected_row WHERE run_id = :r ORDER BY row_number"), {"r": result.run_id})]
    assert stored["3703030101000001"] == "intact 370303001001001"
    assert stored["3703030411000001"].startswith("damaged")
    assert "unknown component category 0199" in reasons[0]
    assert "another district" in reasons[1]
    assert "unknown state" in reasons[2]
    again = factories.load(store.writer, path, "component", city)
    assert (again.rows_new, again.rows_unchanged, again.rows_rejected) == (0, 2, 3)


def _cameras_xlsx(path: Path, rows: list[dict[str, object]]) -> Path:
    pd.DataFrame(rows).to_excel(path, index=False)
    return path


def test_cameras_in_gcj02_get_sectors_and_grid_coverage(store: SuiteStore, city: Settings, tmp_path: Path) -> None:
    # Grid 370303001001001 spans 118.000-118.025 E, 36.780-36.805 N.  A 360° camera of 300 m in its middle.
    lon, lat = wgs84_to_gcj02([118.0125, 118.0125, 118.0126], [36.7925, 36.7925, 36.7926])
    rows = [
        {"设备编码": "CAM001", "点位名称": "中心球机", "点位类型": "公安监控", "经度": lon[0], "纬度": lat[0],
         "朝向": 0, "视场角": 360, "可视距离": 300},
        {"设备编码": "CAM002", "点位名称": "后厨", "点位类型": "明厨亮灶", "经度": lon[1], "纬度": lat[1],
         "朝向": 0, "视场角": 90, "可视距离": 10},
        {"设备编码": "CAM003", "点位名称": "坏朝向", "点位类型": "社区监控", "经度": lon[2], "纬度": lat[2],
         "朝向": "东", "视场角": 90, "可视距离": 50},
    ]
    result = factories.load(store.writer, _cameras_xlsx(tmp_path / "cameras.xlsx", rows), "camera", city, crs="GCJ02")
    assert (result.rows_new, result.rows_rejected) == (2, 1)
    with store.writer.connect() as conn:
        cams = dict(conn.execute(text(
            "SELECT camera_id, ST_Area(coverage::geography) FROM core.camera WHERE camera_id LIKE 'CAM00%'")).all())
        coverage = conn.execute(text(
            "SELECT covered_m2, covered_share, camera_count FROM core.grid_coverage"
            " WHERE grid_code = '370303001001001'")).one()
        apex = conn.execute(text(
            "SELECT ST_Distance(geom::geography, ST_SetSRID(ST_MakePoint(118.0125, 36.7925), 4326)::geography)"
            " FROM core.camera WHERE camera_id = 'CAM001'")).scalar_one()
    assert cams["CAM002"] is None, "a kitchen feed covers no street"
    assert cams["CAM001"] == pytest.approx(3.14159 * 300**2, rel=0.02)
    assert coverage.covered_m2 == pytest.approx(cams["CAM001"], rel=0.02)
    assert coverage.camera_count == 1 and 0 < coverage.covered_share < 0.1
    assert apex < 1.0, "GCJ-02 converted back to WGS 84"
