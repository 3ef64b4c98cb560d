"""Loading admin units and unit grids through the ETL against real PostGIS."""

from __future__ import annotations

from pathlib import Path

import pytest
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


def test_city_loads_with_levels_parents_and_areas(store: SuiteStore, city: Settings) -> None:
    with store.writer.connect() as conn:
        rows = dict(conn.execute(text(
            "SELECT level, count(*) FROM core.admin_unit WHERE district_code = '370303' GROUP BY level")).all())
        grid_area = conn.execute(text(
            "SELECT area_m2 FROM core.admin_unit WHERE code = '370303001001001'")).scalar_one()
    assert rows == {"district": 1, "street": 2, "community": 4, "grid": 12}
    # 0.025° x 0.025° at 36.8°N is about 2,230 m x 2,780 m.
    assert 5.5e6 < grid_area < 6.9e6


def test_reloading_the_same_file_changes_nothing(store: SuiteStore, city: Settings, tmp_path: Path) -> None:
    result = factories.load(store.writer, factories.write_geojson(tmp_path / "again.geojson",
                                                                  factories.city_features()),
                            "admin_unit", city, crs="EPSG:4326")
    assert (result.rows_read, result.rows_new, result.rows_updated, result.rows_unchanged, result.rows_rejected) == (
        19, 0, 0, 19, 0)


def test_bad_units_are_kept_as_rejects_with_reasons(store: SuiteStore, city: Settings, tmp_path: Path) -> None:
    x, y = factories.ORIGIN
    bowtie = {"type": "Polygon", "coordinates": [[[x, y], [x + 0.01, y + 0.01], [x + 0.01, y], [x, y + 0.01], [x, y]]]}
    features = [
        ("370303001001099", "越界网格", factories._square(x + 0.2, y, 0.001, 0.001)),  # outside its community
        ("370303009001001", "无父网格", factories._square(x, y, 0.001, 0.001)),  # parent not loaded
        ("3703030010010", "错码", factories._square(x, y, 0.001, 0.001)),  # 13 digits
        ("370303001001098", "自交网格", bowtie),
        ("370303001001097", "空几何", None),
        ("370303001001096", "正常网格", factories._square(x + 0.001, y + 0.001, 0.001, 0.001)),
    ]
    path = factories.write_geojson(tmp_path / "bad.geojson", [
        {"type": "Feature", "properties": {"code": c, "name": n}, "geometry": g} for c, n, g in features])
    result = factories.load(store.writer, path, "admin_unit", city, crs="EPSG:4326")
    assert (result.rows_read, result.rows_rejected, result.rows_stored) == (6, 5, 1)
    with store.writer.connect() as conn:
        reasons = dict(conn.execute(text(
            "SELECT row_number, reason FROM private.rejected_row WHERE run_id = :run"), {"run": result.run_id}).all())
    assert "outside its parent" in reasons[1]
    assert "is not loaded" in reasons[2]
    assert "fits no level" in reasons[3]
    assert "malformed geometry" in reasons[4]
    assert "missing" in reasons[5]


def test_gcj02_boundaries_are_converted_to_wgs84(store: SuiteStore, city: Settings, tmp_path: Path) -> None:
    """A community drawn in GCJ-02 lands where its WGS 84 twin is, not ~500 m off."""
    x, y = 118.0 + 0.06, 36.78 + 0.01
    lon, lat = wgs84_to_gcj02([x, x + 0.002, x + 0.002, x, x], [y, y, y + 0.002, y + 0.002, y])
    ring = [[float(a), float(b)] for a, b in zip(lon, lat, strict=True)]
    path = factories.write_geojson(tmp_path / "gcj.geojson", [{
        "type": "Feature", "properties": {"code": "370303002001010", "name": "高德网格"},
        "geometry": {"type": "Polygon", "coordinates": [ring]}}])
    result = factories.load(store.writer, path, "admin_unit", city, crs="GCJ02")
    assert result.rows_rejected == 0
    with store.writer.connect() as conn:
        offset = conn.execute(text(
            "SELECT ST_Distance(ST_StartPoint(ST_ExteriorRing(ST_GeometryN(geom, 1)))::geography,"
            " ST_SetSRID(ST_MakePoint(:x, :y), 4326)::geography) FROM core.admin_unit WHERE code = '370303002001010'"
        ), {"x": x, "y": y}).scalar_one()
    assert offset < 1.0
