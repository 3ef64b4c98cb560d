"""Tests for etl.chinese_crs: WGS 84 <-> GCJ-02 <-> BD-09 and the ETL's CRS dispatch.

The forward formulas are checked against an independent scalar re-implementation written here from the
published algorithm (with the math module, one point at a time), so a slip in the vectorised code fails,
and against reference pairs published by other projects.  The inverses are checked by round trips
measured in metres on the WGS 84 ellipsoid.  No mocks.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import shapely
from pyproj import Geod, Transformer
from shapely.geometry import LineString, MultiPolygon, Point, Polygon

from etl.chinese_crs import (
    CHINA_BBOX,
    bd09_to_gcj02,
    bd09_to_wgs84,
    gcj02_to_bd09,
    gcj02_to_wgs84,
    looks_swapped,
    to_wgs84,
    transform_geometries,
    wgs84_to_bd09,
    wgs84_to_gcj02,
)

GEOD = Geod(ellps="WGS84")

# Shandong province, roughly, and Zibo city (淄博) inside it.
SHANDONG = (114.8, 34.4, 122.7, 38.4)
ZIBO_BBOX = (117.5, 35.9, 118.5, 37.3)
ZHANGDIAN = (118.05, 36.81)  # 张店区, Zibo's central district
TIANANMEN_WGS = (116.391275, 39.906217)


# --- independent scalar reference, written from the published GCJ-02 / BD-09 formulas -----------------

KRASOVSKY_A = 6378245.0
KRASOVSKY_EE = 0.00669342162296594323


def _ref_transform_lat(x: float, y: float) -> float:
    ret = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
    ret += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    ret += (20.0 * math.sin(y * math.pi) + 40.0 * math.sin(y / 3.0 * math.pi)) * 2.0 / 3.0
    ret += (160.0 * math.sin(y / 12.0 * math.pi) + 320.0 * math.sin(y * math.pi / 30.0)) * 2.0 / 3.0
    return ret


def _ref_transform_lon(x: float, y: float) -> float:
    ret = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
    ret += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    ret += (20.0 * math.sin(x * math.pi) + 40.0 * math.sin(x / 3.0 * math.pi)) * 2.0 / 3.0
    ret += (150.0 * math.sin(x / 12.0 * math.pi) + 300.0 * math.sin(x / 30.0 * math.pi)) * 2.0 / 3.0
    return ret


def ref_wgs_to_gcj(lon: float, lat: float) -> tuple[float, float]:
    if not (72.004 <= lon <= 137.8347 and 0.8293 <= lat <= 55.8271):
        return lon, lat
    d_lat = _ref_transform_lat(lon - 105.0, lat - 35.0)
    d_lon = _ref_transform_lon(lon - 105.0, lat - 35.0)
    rad_lat = lat / 180.0 * math.pi
    magic = 1 - KRASOVSKY_EE * math.sin(rad_lat) ** 2
    sqrt_magic = math.sqrt(magic)
    d_lat = (d_lat * 180.0) / ((KRASOVSKY_A * (1 - KRASOVSKY_EE)) / (magic * sqrt_magic) * math.pi)
    d_lon = (d_lon * 180.0) / (KRASOVSKY_A / sqrt_magic * math.cos(rad_lat) * math.pi)
    return lon + d_lon, lat + d_lat


def ref_gcj_to_bd(lon: float, lat: float) -> tuple[float, float]:
    x_pi = math.pi * 3000.0 / 180.0
    z = math.sqrt(lon * lon + lat * lat) + 0.00002 * math.sin(lat * x_pi)
    theta = math.atan2(lat, lon) + 0.000003 * math.cos(lon * x_pi)
    return z * math.cos(theta) + 0.0065, z * math.sin(theta) + 0.006


def metres(lon1, lat1, lon2, lat2) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Ellipsoidal distance in metres between two point arrays."""
    return np.asarray(GEOD.inv(lon1, lat1, lon2, lat2)[2])


def shandong_grid(n: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """An n x n grid (10,000 points by default) across Shandong, flattened."""
    lon, lat = np.meshgrid(np.linspace(SHANDONG[0], SHANDONG[2], n), np.linspace(SHANDONG[1], SHANDONG[3], n))
    return lon.ravel(), lat.ravel()


def sample_china(n: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(75.0, 134.0, n), rng.uniform(18.0, 53.0, n)


# --- forward formulas ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lon, lat",
    [TIANANMEN_WGS, ZHANGDIAN, (121.4737, 31.2304), (113.2644, 23.1291), (87.6168, 43.8256), (105.0, 35.0)],
)
def test_wgs_to_gcj_matches_scalar_reference(lon: float, lat: float) -> None:
    got_lon, got_lat = wgs84_to_gcj02(lon, lat)
    exp_lon, exp_lat = ref_wgs_to_gcj(lon, lat)
    assert float(got_lon) == pytest.approx(exp_lon, abs=1e-12)
    assert float(got_lat) == pytest.approx(exp_lat, abs=1e-12)


def test_forward_formulas_match_scalar_reference_across_china() -> None:
    lon, lat = sample_china(500)
    g_lon, g_lat = wgs84_to_gcj02(lon, lat)
    b_lon, b_lat = gcj02_to_bd09(g_lon, g_lat)
    ref_g = np.array([ref_wgs_to_gcj(x, y) for x, y in zip(lon, lat, strict=True)])
    ref_b = np.array([ref_gcj_to_bd(x, y) for x, y in ref_g])
    np.testing.assert_allclose(g_lon, ref_g[:, 0], rtol=0, atol=1e-11)
    np.testing.assert_allclose(g_lat, ref_g[:, 1], rtol=0, atol=1e-11)
    np.testing.assert_allclose(b_lon, ref_b[:, 0], rtol=0, atol=1e-11)
    np.testing.assert_allclose(b_lat, ref_b[:, 1], rtol=0, atol=1e-11)


@pytest.mark.parametrize(
    "wgs, gcj",
    [
        # Test vectors published with the eviltransform project (wgs, gcj as lon, lat).
        ((121.5272106, 31.1774276), (121.531541859215, 31.17530398364597)),  # Shanghai
        ((113.912316, 22.543847), (113.9171764808363, 22.540796131694766)),  # Shenzhen
        ((116.377817, 39.911954), (116.38404722455657, 39.91334545536069)),  # Beijing
    ],
)
def test_wgs_to_gcj_published_pairs(wgs: tuple[float, float], gcj: tuple[float, float]) -> None:
    got = wgs84_to_gcj02(*wgs)
    # 1e-6 degrees is about 0.1 m: those projects use a WGS 84 instead of Krasovsky radius in places,
    # which moves results by millimetres, so an exact match is not expected.
    assert float(got[0]) == pytest.approx(gcj[0], abs=1e-6)
    assert float(got[1]) == pytest.approx(gcj[1], abs=1e-6)
    back = gcj02_to_wgs84(*gcj)
    assert metres(back[0], back[1], *wgs) < 0.5


def test_tiananmen_commonly_quoted_pair() -> None:
    # The widely quoted, rounded pair: WGS84 (116.391275, 39.906217) <-> GCJ-02 about (116.397513, 39.907614).
    g_lon, g_lat = wgs84_to_gcj02(*TIANANMEN_WGS)
    assert metres(g_lon, g_lat, 116.397513, 39.907614) < 1.0
    w_lon, w_lat = gcj02_to_wgs84(116.397513, 39.907614)
    assert metres(w_lon, w_lat, *TIANANMEN_WGS) < 1.0


def test_gcj_bd_published_pair() -> None:
    # Pair from gcoord's test suite: GCJ-02 (123, 45) -> BD-09 (123.00636499, 45.00636899), and
    # GCJ-02 (123, 45) -> WGS 84 (122.99395597, 44.99804071) to the 5 decimals that suite checks.
    b_lon, b_lat = gcj02_to_bd09(123.0, 45.0)
    assert float(b_lon) == pytest.approx(123.00636499, abs=1e-8)
    assert float(b_lat) == pytest.approx(45.00636899, abs=1e-8)
    w_lon, w_lat = gcj02_to_wgs84(123.0, 45.0)
    assert float(w_lon) == pytest.approx(122.99395597, abs=1e-5)
    assert float(w_lat) == pytest.approx(44.99804071, abs=1e-5)


def test_outside_china_is_unchanged() -> None:
    lon = np.array([-0.1276, 139.6917, 2.3522, 150.0, 100.0])  # London, Tokyo, Paris, Pacific, Indian Ocean
    lat = np.array([51.5072, 35.6895, 48.8566, 30.0, -5.0])
    for forward, inverse in ((wgs84_to_gcj02, gcj02_to_wgs84),):
        f_lon, f_lat = forward(lon, lat)
        np.testing.assert_array_equal(f_lon, lon)
        np.testing.assert_array_equal(f_lat, lat)
        i_lon, i_lat = inverse(lon, lat)
        np.testing.assert_array_equal(i_lon, lon)
        np.testing.assert_array_equal(i_lat, lat)
    assert CHINA_BBOX[0] < ZHANGDIAN[0] < CHINA_BBOX[2]


def test_shapes_scalars_and_nan() -> None:
    lon = np.full((3, 4), ZHANGDIAN[0])
    lat = np.full((3, 4), ZHANGDIAN[1])
    lon[1, 2] = np.nan
    for func in (wgs84_to_gcj02, gcj02_to_wgs84, wgs84_to_bd09, bd09_to_wgs84):
        out_lon, out_lat = func(lon, lat)
        assert out_lon.shape == out_lat.shape == (3, 4)
        assert np.isnan(out_lon[1, 2])
        assert np.isfinite(np.delete(out_lon.ravel(), 6)).all()
    s_lon, s_lat = gcj02_to_wgs84(*ZHANGDIAN)  # plain floats in, 0-d arrays out
    assert np.ndim(s_lon) == 0 and np.ndim(s_lat) == 0
    # Inputs are not modified in place.
    assert lon[0, 0] == ZHANGDIAN[0]


# --- inverses and round trips ------------------------------------------------------------------------


def test_round_trip_wgs_gcj_wgs_over_shandong() -> None:
    lon, lat = shandong_grid()
    assert lon.size == 10_000
    back_lon, back_lat = gcj02_to_wgs84(*wgs84_to_gcj02(lon, lat))
    err = metres(lon, lat, back_lon, back_lat)
    print(f"\nWGS->GCJ->WGS over Shandong: max error {err.max():.2e} m")
    assert err.max() < 0.01


def test_round_trip_wgs_bd_wgs_over_shandong() -> None:
    lon, lat = shandong_grid()
    back_lon, back_lat = bd09_to_wgs84(*wgs84_to_bd09(lon, lat))
    err = metres(lon, lat, back_lon, back_lat)
    print(f"\nWGS->BD->WGS over Shandong: max error {err.max():.2e} m")
    assert err.max() < 0.01


def test_round_trip_starting_from_gcj_and_bd() -> None:
    lon, lat = shandong_grid(50)
    g_lon, g_lat = wgs84_to_gcj02(*gcj02_to_wgs84(lon, lat))
    assert metres(lon, lat, g_lon, g_lat).max() < 0.01
    b_lon, b_lat = gcj02_to_bd09(*bd09_to_gcj02(lon, lat))
    assert metres(lon, lat, b_lon, b_lat).max() < 0.01


def test_iterative_inverse_beats_one_step_approximation() -> None:
    """The common one-step inverse is off by metres; ours must be exact, which is why it iterates."""
    lon, lat = sample_china(20_000)
    g_lon, g_lat = wgs84_to_gcj02(lon, lat)
    # One-step: subtract the shift evaluated at the GCJ-02 point.
    s_lon, s_lat = wgs84_to_gcj02(g_lon, g_lat)
    one_step = metres(lon, lat, 2 * g_lon - s_lon, 2 * g_lat - s_lat)
    exact = metres(lon, lat, *gcj02_to_wgs84(g_lon, g_lat))
    assert one_step.max() > 1.0
    assert exact.max() < 0.001


# --- plausibility ------------------------------------------------------------------------------------


def test_offset_magnitude_in_zibo_is_hundreds_of_metres() -> None:
    lon, lat = np.meshgrid(
        np.linspace(ZIBO_BBOX[0], ZIBO_BBOX[2], 30), np.linspace(ZIBO_BBOX[1], ZIBO_BBOX[3], 30)
    )
    g_lon, g_lat = wgs84_to_gcj02(lon.ravel(), lat.ravel())
    gcj_offset = metres(lon.ravel(), lat.ravel(), g_lon, g_lat)
    assert gcj_offset.min() > 200 and gcj_offset.max() < 800
    # GCJ-02 pushes north-east-ish in eastern China: GCJ longitude is larger.
    assert (g_lon > lon.ravel()).all()
    b_lon, b_lat = wgs84_to_bd09(lon.ravel(), lat.ravel())
    bd_offset = metres(lon.ravel(), lat.ravel(), b_lon, b_lat)
    assert bd_offset.min() > 500 and bd_offset.max() < 1500
    z_lon, z_lat = wgs84_to_gcj02(*ZHANGDIAN)
    print(f"\nZhangdian GCJ-02 offset: {float(metres(*ZHANGDIAN, z_lon, z_lat)):.1f} m")


# --- dispatch ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["GCJ02", "GCJ-02", "gcj02"])
def test_to_wgs84_gcj_names(name: str) -> None:
    lon, lat = to_wgs84(*wgs84_to_gcj02(*ZHANGDIAN), name)
    assert metres(lon, lat, *ZHANGDIAN) < 0.001


@pytest.mark.parametrize("name", ["BD09", "BD-09", "bd09"])
def test_to_wgs84_bd_names(name: str) -> None:
    lon, lat = to_wgs84(*wgs84_to_bd09(*ZHANGDIAN), name)
    assert metres(lon, lat, *ZHANGDIAN) < 0.001


@pytest.mark.parametrize("name", ["EPSG:4326", "WGS84", 4326, "EPSG:4490", "CGCS2000"])
def test_to_wgs84_noop_names(name: str | int) -> None:
    lon = np.array([ZHANGDIAN[0], 117.9])
    lat = np.array([ZHANGDIAN[1], 36.5])
    out_lon, out_lat = to_wgs84(lon, lat, name)
    np.testing.assert_array_equal(out_lon, lon)
    np.testing.assert_array_equal(out_lat, lat)
    assert out_lon.dtype == np.float64


def test_cgcs2000_noop_agrees_with_pyproj() -> None:
    lon, lat = shandong_grid(20)
    p_lon, p_lat = Transformer.from_crs("EPSG:4490", "EPSG:4326", always_xy=True).transform(lon, lat)
    o_lon, o_lat = to_wgs84(lon, lat, "CGCS2000")
    assert metres(o_lon, o_lat, p_lon, p_lat).max() < 0.01


def test_epsg_4548_gauss_kruger_cm117() -> None:
    # On the central meridian (false easting 500 km) the longitude is exactly 117E.
    lon, lat = to_wgs84(np.array([500_000.0]), np.array([4_075_000.0]), "EPSG:4548")
    assert lon[0] == pytest.approx(117.0, abs=1e-9)
    assert 36.7 < lat[0] < 36.9
    # A Zhangdian point projected by pyproj comes back where it started, with the int spelling too.
    x, y = Transformer.from_crs(4490, 4548, always_xy=True).transform(*ZHANGDIAN)
    assert 580_000 < x < 600_000  # about 1.05 degrees east of 117E at 36.8N
    for spelling in ("EPSG:4548", "epsg:4548", 4548):
        back_lon, back_lat = to_wgs84(np.array([x]), np.array([y]), spelling)
        assert metres(back_lon, back_lat, *ZHANGDIAN).max() < 0.001
    direct = Transformer.from_crs("EPSG:4548", "EPSG:4326", always_xy=True).transform(x, y)
    back_lon, back_lat = to_wgs84(np.array([x]), np.array([y]), "EPSG:4548")
    assert back_lon[0] == pytest.approx(direct[0], abs=1e-12)
    assert back_lat[0] == pytest.approx(direct[1], abs=1e-12)


def test_web_mercator_goes_through_pyproj() -> None:
    x, y = Transformer.from_crs(4326, 3857, always_xy=True).transform(*ZHANGDIAN)
    lon, lat = to_wgs84(x, y, "EPSG:3857")
    assert float(lon) == pytest.approx(ZHANGDIAN[0], abs=1e-9)
    assert float(lat) == pytest.approx(ZHANGDIAN[1], abs=1e-9)


@pytest.mark.parametrize("bad", ["GCJ03", "Baidu", "", "EPSG:", "EPSG:999999", True, 3.5])
def test_unknown_crs_raises_value_error_listing_accepted_forms(bad: object) -> None:
    with pytest.raises(ValueError, match="GCJ02") as info:
        to_wgs84(np.array([118.0]), np.array([36.8]), bad)  # type: ignore[arg-type]
    message = str(info.value)
    for form in ("BD09", "EPSG:4326", "CGCS2000", "EPSG:<code>"):
        assert form in message
    with pytest.raises(ValueError):
        transform_geometries(np.array([Point(118, 36.8)], dtype=object), bad)  # type: ignore[arg-type]


# --- geometries --------------------------------------------------------------------------------------


def _zibo_geometries() -> np.ndarray:
    x0, y0 = ZHANGDIAN
    shell = [(x0, y0), (x0 + 0.02, y0), (x0 + 0.02, y0 + 0.02), (x0, y0 + 0.02), (x0, y0)]
    hole = [
        (x0 + 0.005, y0 + 0.005),
        (x0 + 0.01, y0 + 0.005),
        (x0 + 0.01, y0 + 0.01),
        (x0 + 0.005, y0 + 0.005),
    ]
    polygon = Polygon(shell, [hole])
    multi = MultiPolygon([polygon, Polygon([(x0 + 0.1, y0), (x0 + 0.12, y0), (x0 + 0.11, y0 + 0.01)])])
    line = LineString([(x0, y0), (x0 + 0.01, y0 + 0.003), (x0 + 0.03, y0 - 0.002)])
    point = Point(x0, y0)
    point_z = Point(x0, y0, 42.0)
    return np.array([polygon, multi, line, point, None, point_z], dtype=object)


@pytest.mark.parametrize("crs", ["GCJ02", "BD09", "WGS84"])
def test_transform_geometries_keeps_structure(crs: str) -> None:
    geoms = _zibo_geometries()
    out = transform_geometries(geoms, crs)
    assert out.shape == geoms.shape
    assert out[4] is None
    for before, after in zip(geoms, out, strict=True):
        if before is None:
            continue
        assert after.geom_type == before.geom_type
        assert shapely.get_num_coordinates(after) == shapely.get_num_coordinates(before)
        assert after.is_valid
    assert len(out[0].interiors) == 1
    assert len(out[1].geoms) == 2 and len(out[1].geoms[0].interiors) == 1
    assert out[5].has_z and out[5].z == 42.0
    # Every vertex equals the point-wise conversion.
    before_xy = shapely.get_coordinates(geoms)
    after_xy = shapely.get_coordinates(out)
    exp_lon, exp_lat = to_wgs84(before_xy[:, 0], before_xy[:, 1], crs)
    np.testing.assert_allclose(after_xy[:, 0], exp_lon, rtol=0, atol=1e-12)
    np.testing.assert_allclose(after_xy[:, 1], exp_lat, rtol=0, atol=1e-12)


def test_transform_geometries_moves_amap_polygon_back_onto_wgs84() -> None:
    geoms = _zibo_geometries()
    amap = shapely.transform(geoms, lambda x, y: wgs84_to_gcj02(x, y), interleaved=False)
    back = transform_geometries(amap, "GCJ-02")
    for original, restored in zip(geoms, back, strict=True):
        if original is None:
            continue
        # Hausdorff distance in degrees; 1e-8 degrees is about a millimetre.
        assert shapely.hausdorff_distance(original, restored) < 1e-8


def test_transform_geometries_projected_epsg() -> None:
    to_4548 = Transformer.from_crs(4490, 4548, always_xy=True)
    geoms = _zibo_geometries()[:4]
    projected = shapely.transform(geoms, to_4548.transform, interleaved=False)
    back = transform_geometries(projected, "EPSG:4548")
    for original, restored in zip(geoms, back, strict=True):
        assert shapely.hausdorff_distance(original, restored) < 1e-8


# --- swapped lon/lat detection -----------------------------------------------------------------------


def test_looks_swapped() -> None:
    lon = np.array([118.05, 36.81, 10.0, np.nan, 36.81, 117.5])
    lat = np.array([36.81, 118.05, 20.0, 36.81, np.nan, 35.9])
    flags = looks_swapped(lon, lat, ZIBO_BBOX)
    assert flags.dtype == np.bool_
    # ok, swapped, nowhere near, NaN, NaN, on the bbox corner (inclusive: not swapped)
    assert flags.tolist() == [False, True, False, False, False, False]


# --- speed sanity ------------------------------------------------------------------------------------


def test_million_points_convert() -> None:
    rng = np.random.default_rng(1)
    n = 1_000_000
    lon = rng.uniform(SHANDONG[0], SHANDONG[2], n)
    lat = rng.uniform(SHANDONG[1], SHANDONG[3], n)
    timings = {}
    t0 = time.perf_counter()
    g_lon, g_lat = wgs84_to_gcj02(lon, lat)
    timings["WGS->GCJ"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    w_lon, w_lat = to_wgs84(g_lon, g_lat, "GCJ02")
    timings["GCJ->WGS (iterative)"] = time.perf_counter() - t0
    b_lon, b_lat = wgs84_to_bd09(lon, lat)
    t0 = time.perf_counter()
    v_lon, v_lat = to_wgs84(b_lon, b_lat, "BD09")
    timings["BD->WGS (iterative)"] = time.perf_counter() - t0
    print("\n1,000,000 points: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
    assert w_lon.shape == (n,) and v_lat.shape == (n,)
    sample = slice(0, n, 100)
    assert metres(lon[sample], lat[sample], w_lon[sample], w_lat[sample]).max() < 0.01
    assert metres(lon[sample], lat[sample], v_lon[sample], v_lat[sample]).max() < 0.01
