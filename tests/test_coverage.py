"""Tests for etl.coverage: camera sectors, coverage per grid, points in view, greedy new sites.

Geometry is checked against closed forms (sector area fov/360 * pi * r^2, bearings from pyproj.Geod) and
against independent shapely computations (brute-force union, intersects), never against the module
itself.  Grids are built as exact squares in the metric CRS around Zibo's centre and taken to WGS 84, as
the ETL would store them.  No mocks; the scale run prints its timings.
"""

from __future__ import annotations

import math
import time

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import Geod, Transformer
from shapely.geometry import MultiPolygon, Polygon

from etl.coverage import camera_sectors, greedy_camera_sites, grid_coverage, points_covered

GEOD = Geod(ellps="WGS84")
ZIBO = (118.05, 36.81)  # 张店区, Zibo's central district
METRIC = 4548
TO_METRIC = Transformer.from_crs(4326, METRIC, always_xy=True)
TO_WGS84 = Transformer.from_crs(METRIC, 4326, always_xy=True)


def metric(geom):
    """A WGS 84 geometry (or array of them) in EPSG:4548."""
    return shapely.transform(geom, lambda x, y: TO_METRIC.transform(x, y), interleaved=False)


def wgs84(geom):
    return shapely.transform(geom, lambda x, y: TO_WGS84.transform(x, y), interleaved=False)


def square(center_x: float, center_y: float, side: float) -> Polygon:
    """A WGS 84 grid that is an exact ``side`` x ``side`` square in the metric CRS."""
    h = side / 2
    return wgs84(shapely.box(center_x - h, center_y - h, center_x + h, center_y + h))


def grids_frame(*geoms: Polygon) -> gpd.GeoDataFrame:
    codes = [f"37030200100{i:03d}" for i in range(len(geoms))]
    return gpd.GeoDataFrame({"code": codes}, geometry=list(geoms), crs=4326)


def offset(lon: float, lat: float, bearing_deg: float, distance_m: float) -> tuple[float, float]:
    """The point ``distance_m`` ground metres from (lon, lat) along ``bearing_deg``."""
    lon2, lat2, _ = GEOD.fwd(lon, lat, bearing_deg, distance_m)
    return lon2, lat2


# --- sectors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fov", [5, 10, 45, 90, 120, 200, 300, 359])
@pytest.mark.parametrize("heading", [0, 37.5, 90, 215, 359.5])
def test_sector_area_is_fov_share_of_the_disc(fov: float, heading: float) -> None:
    ranges = np.array([25.0, 150.0, 2000.0])
    sectors = camera_sectors(ZIBO[0], ZIBO[1], heading, fov, ranges)
    expected = fov / 360 * math.pi * ranges**2
    np.testing.assert_allclose(shapely.area(metric(sectors)), expected, rtol=0.01)
    # And on the ellipsoid: the metric CRS is only the workspace, the range is ground metres.
    geodesic = np.array([abs(GEOD.geometry_area_perimeter(s)[0]) for s in sectors])
    np.testing.assert_allclose(geodesic, expected, rtol=0.01)
    assert shapely.is_valid(sectors).all()
    assert shapely.get_type_id(sectors).tolist() == [shapely.GeometryType.POLYGON] * 3


def test_arc_vertices_are_on_the_circle_and_rings_counter_clockwise() -> None:
    sectors = camera_sectors(ZIBO[0], ZIBO[1], [10, 250, 0], [60, 170, 360], 300.0)
    for sector in sectors:
        ring = np.asarray(sector.exterior.coords)
        _, _, dist = GEOD.inv(
            np.full(len(ring), ZIBO[0]), np.full(len(ring), ZIBO[1]), ring[:, 0], ring[:, 1]
        )
        on_arc = dist > 1.0  # the apex (twice) is at distance 0
        np.testing.assert_allclose(dist[on_arc], 300.0, rtol=1e-4)
        assert sector.exterior.is_ccw


@pytest.mark.parametrize("heading", [0, 45, 90, 135, 180, 270, 330])
def test_heading_is_compass_degrees(heading: float) -> None:
    (sector,) = camera_sectors(ZIBO[0], ZIBO[1], heading, 60, 500)
    c = sector.centroid
    azimuth, _, distance = GEOD.inv(ZIBO[0], ZIBO[1], c.x, c.y)
    assert distance > 100
    assert abs((azimuth - heading + 180) % 360 - 180) < 0.5


def test_heading_0_points_north_and_90_east() -> None:
    north, east = camera_sectors(ZIBO[0], ZIBO[1], [0, 90], 60, 500)
    assert north.centroid.y > ZIBO[1] and abs(north.centroid.x - ZIBO[0]) < 1e-5
    assert east.centroid.x > ZIBO[0] and abs(east.centroid.y - ZIBO[1]) < 1e-5


@pytest.mark.parametrize("fov", [360, 400])
def test_full_circle_is_a_disc(fov: float) -> None:
    (disc,) = camera_sectors(ZIBO[0], ZIBO[1], math.nan, fov, 200)  # a dome needs no heading
    assert disc.is_valid and len(disc.exterior.coords) == 4 * 16 + 1
    assert abs(metric(disc).area / (math.pi * 200**2) - 1) < 0.01
    c = disc.centroid
    assert GEOD.inv(ZIBO[0], ZIBO[1], c.x, c.y)[2] < 0.01  # centred on the camera
    assert disc.contains(shapely.Point(ZIBO))


def test_arc_vertex_count_grows_with_the_opening() -> None:
    fovs = [1, 10, 45, 90, 180, 359, 360]
    sectors = camera_sectors(ZIBO[0], ZIBO[1], 0, fovs, 100)
    counts = shapely.get_num_coordinates(sectors).tolist()
    # sector: apex + (segments + 1) arc vertices + closing apex; segments = max(3, ceil(16 * fov / 90))
    assert counts == [3 + 3, 3 + 3, 8 + 3, 16 + 3, 32 + 3, 64 + 3, 64 + 1]
    coarse = camera_sectors(ZIBO[0], ZIBO[1], 0, [90, 360], 100, segments=4)
    assert shapely.get_num_coordinates(coarse).tolist() == [4 + 3, 16 + 1]


def test_sectors_broadcast_and_validate() -> None:
    lon = ZIBO[0] + np.arange(4) * 0.01
    sectors = camera_sectors(lon, ZIBO[1], 90, 60, 100)
    assert sectors.shape == (4,) and sectors.dtype == object
    assert camera_sectors([], [], [], [], []).shape == (0,)
    for bad in (
        dict(heading_deg=math.nan, fov_deg=90, range_m=100),
        dict(heading_deg=0, fov_deg=0, range_m=100),
        dict(heading_deg=0, fov_deg=90, range_m=-1),
        dict(heading_deg=0, fov_deg=90, range_m=math.inf),
    ):
        with pytest.raises(ValueError, match="camera 1"):
            camera_sectors(
                [ZIBO[0]] * 2,
                [ZIBO[1]] * 2,
                **{k: [0 if k == "heading_deg" else 90, v] for k, v in bad.items()},
            )
    with pytest.raises(ValueError, match="not a projected CRS"):
        camera_sectors(ZIBO[0], ZIBO[1], 0, 90, 100, metric_crs=4326)


def test_other_metric_crs_still_gives_ground_metres() -> None:
    """Web Mercator stretches lengths by 1/cos(lat) (1.25 at Zibo): the local frame takes it out."""
    (sector,) = camera_sectors(ZIBO[0], ZIBO[1], 30, 90, 400, metric_crs=3857)
    expected = 0.25 * math.pi * 400**2
    assert abs(abs(GEOD.geometry_area_perimeter(sector)[0]) / expected - 1) < 0.01
    (same,) = camera_sectors(ZIBO[0], ZIBO[1], 30, 90, 400)
    assert shapely.symmetric_difference(metric(sector), metric(same)).area < 1e-4 * expected


# --- coverage per grid -----------------------------------------------------------------------------------


@pytest.fixture
def center() -> tuple[float, float]:
    return TO_METRIC.transform(*ZIBO)


def test_half_covered_grid(center: tuple[float, float]) -> None:
    """A camera at the centre of a 100 m grid looking north with fov 180 sees exactly the north half."""
    grid = square(*center, 100)
    (sector,) = camera_sectors(ZIBO[0], ZIBO[1], 0, 180, 200)
    (row,) = grid_coverage(grids_frame(grid), [sector]).itertuples()
    assert row.code == "37030200100000"
    assert row.area_m2 == pytest.approx(10_000, rel=1e-6)
    assert row.covered_share == pytest.approx(0.5, abs=0.005)
    assert row.covered_m2 == pytest.approx(5_000, rel=0.01)
    assert row.camera_count == 1
    assert isinstance(row.blind_geom, MultiPolygon)
    assert metric(row.blind_geom).area == pytest.approx(5_000, rel=0.01)
    assert row.blind_geom.centroid.y < ZIBO[1]  # the blind half is the south half

    # Two identical cameras: the overlap counts once, both cameras count.
    (twice,) = grid_coverage(grids_frame(grid), [sector, sector]).itertuples()
    assert twice.covered_share == pytest.approx(row.covered_share, abs=1e-9)
    assert twice.camera_count == 2
    assert metric(twice.blind_geom).area == pytest.approx(5_000, rel=0.01)


def test_overlapping_cameras_union_not_sum(center: tuple[float, float]) -> None:
    """North half + east half of the grid: three quarters, not the full grid."""
    grid = square(*center, 100)
    sectors = camera_sectors(ZIBO[0], ZIBO[1], [0, 90], 180, 200)
    (row,) = grid_coverage(grids_frame(grid), sectors).itertuples()
    assert row.covered_share == pytest.approx(0.75, abs=0.005)
    assert row.camera_count == 2
    reference = metric(grid).intersection(shapely.union_all(metric(sectors))).area
    assert row.covered_m2 == pytest.approx(reference, rel=1e-6)


def test_grid_without_camera_is_all_blind(center: tuple[float, float]) -> None:
    seen, unseen = square(*center, 100), square(center[0] + 5_000, center[1], 100)
    (sector,) = camera_sectors(ZIBO[0], ZIBO[1], 0, 360, 300)
    grids = grids_frame(seen, unseen)
    frame = grid_coverage(grids, [sector])
    assert grids.geometry.iloc[0] is seen and grids.geometry.iloc[1] is unseen  # input left alone
    assert frame["camera_count"].tolist() == [1, 0]
    assert frame["covered_share"].tolist() == [1.0, 0.0]
    assert frame["covered_m2"].iloc[1] == 0.0
    assert frame["blind_geom"].iloc[0] is None  # fully covered: nothing to draw
    blind = frame["blind_geom"].iloc[1]
    assert isinstance(blind, MultiPolygon) and blind.equals(unseen)
    assert blind.geoms[0].equals_exact(unseen, tolerance=0)  # the stored grid, not a reprojected copy


def test_indoor_cameras_are_ignored(center: tuple[float, float]) -> None:
    grid = square(*center, 100)
    (sector,) = camera_sectors(ZIBO[0], ZIBO[1], 0, 180, 200)
    plain = grid_coverage(grids_frame(grid), [sector])
    with_indoor = grid_coverage(grids_frame(grid), gpd.GeoSeries([None, sector, None], crs=4326))
    pd.testing.assert_frame_equal(plain.drop(columns="blind_geom"), with_indoor.drop(columns="blind_geom"))
    only_indoor = grid_coverage(grids_frame(grid), np.array([None, None], dtype=object))
    assert only_indoor["covered_share"].tolist() == [0.0]
    assert only_indoor["camera_count"].tolist() == [0]
    assert only_indoor["blind_geom"].iloc[0].equals(grid)
    assert grid_coverage(grids_frame(grid), []).equals(only_indoor)


def test_sector_only_touching_a_grid_is_not_counted() -> None:
    """A camera on a grid's corner looking away touches it at one point: no camera, no coverage."""
    (sector,) = camera_sectors(ZIBO[0], ZIBO[1], 45, 60, 300)
    apex_lon, apex_lat = sector.exterior.coords[0]
    south_west = shapely.box(apex_lon - 0.002, apex_lat - 0.002, apex_lon, apex_lat)
    (row,) = grid_coverage(grids_frame(south_west), [sector]).itertuples()
    assert row.camera_count == 0 and row.covered_share == 0.0


def test_grids_in_another_crs_and_index_kept(center: tuple[float, float]) -> None:
    grid = square(*center, 100)
    (sector,) = camera_sectors(ZIBO[0], ZIBO[1], 0, 180, 200)
    frame = grids_frame(grid).set_index(pd.Index([42]))
    projected = frame.to_crs(METRIC)
    a, b = grid_coverage(frame, [sector]), grid_coverage(projected, [sector])
    assert a.index.tolist() == b.index.tolist() == [42]
    assert a["covered_share"].iloc[0] == pytest.approx(b["covered_share"].iloc[0], abs=1e-9)
    assert list(a.columns) == ["code", "area_m2", "covered_m2", "covered_share", "camera_count", "blind_geom"]


# --- points in view --------------------------------------------------------------------------------------


def test_points_covered_known_points() -> None:
    sectors = np.array([*camera_sectors(ZIBO[0], ZIBO[1], 90, 90, 100), None], dtype=object)
    points = [
        offset(*ZIBO, 90, 50),  # straight ahead: seen
        offset(*ZIBO, 60, 95),  # inside the opening, near the range: seen
        offset(*ZIBO, 270, 50),  # behind: not seen
        offset(*ZIBO, 90, 150),  # beyond the range: not seen
        offset(*ZIBO, 0, 50),  # outside the 45..135 opening: not seen
        (math.nan, ZIBO[1]),  # no position: not seen
    ]
    lon, lat = np.array(points).T
    assert points_covered(lon, lat, sectors).tolist() == [True, True, False, False, False, False]
    vertex = sectors[0].exterior.coords[5]  # on the boundary counts as seen
    assert points_covered([vertex[0]], [vertex[1]], sectors).tolist() == [True]
    assert points_covered(lon, lat, [None]).tolist() == [False] * 6
    assert points_covered([], [], sectors).shape == (0,)


def test_points_covered_agrees_with_shapely() -> None:
    rng = np.random.default_rng(7)
    n = 300
    lon = ZIBO[0] + rng.uniform(-0.02, 0.02, n)
    lat = ZIBO[1] + rng.uniform(-0.02, 0.02, n)
    sectors = camera_sectors(
        lon, lat, rng.uniform(0, 360, n), rng.choice([30, 90, 360], n), rng.uniform(20, 400, n)
    )
    sectors[::7] = None
    p_lon = ZIBO[0] + rng.uniform(-0.03, 0.03, 20_000)
    p_lat = ZIBO[1] + rng.uniform(-0.03, 0.03, 20_000)
    union = shapely.union_all(sectors[~shapely.is_missing(sectors)])
    expected = shapely.intersects_xy(union, p_lon, p_lat)
    got = points_covered(p_lon, p_lat, gpd.GeoSeries(sectors, crs=4326))
    assert 0.05 < got.mean() < 0.95
    np.testing.assert_array_equal(got, expected)
    assert not shapely.is_prepared(sectors[~shapely.is_missing(sectors)]).any()  # inputs left as they came


# --- greedy new sites ------------------------------------------------------------------------------------


def _cluster(rng: np.random.Generator, lon: float, lat: float, n: int, radius_m: float) -> np.ndarray:
    bearings, dists = rng.uniform(0, 360, n), rng.uniform(0, radius_m, n)
    lons, lats, _ = GEOD.fwd(np.full(n, lon), np.full(n, lat), bearings, dists)
    return np.column_stack([lons, lats])


def test_greedy_picks_densest_first_and_never_counts_a_case_twice() -> None:
    rng = np.random.default_rng(3)
    pa, pb, pc = ZIBO, offset(*ZIBO, 90, 3_000), offset(*ZIBO, 180, 3_000)
    cases = np.vstack([_cluster(rng, *pa, 30, 60), _cluster(rng, *pb, 20, 60), _cluster(rng, *pc, 10, 60)])
    near_a = offset(*pa, 0, 10)  # sees all of cluster A as well: a tie, then worthless
    candidates = np.array([pc, pb, pa, near_a, offset(*ZIBO, 45, 10_000)])  # the last sees nothing
    sites = greedy_camera_sites(candidates[:, 0], candidates[:, 1], cases[:, 0], cases[:, 1], 100, k=5)
    assert list(sites.columns) == ["rank", "candidate", "lon", "lat", "cases_added", "cumulative"]
    assert sites["rank"].tolist() == [1, 2, 3]  # stops when nothing is left to add
    assert sites["candidate"].tolist() == [2, 1, 0]  # A (tie with near_a goes to the earlier), B, C
    assert sites["cases_added"].tolist() == [30, 20, 10]
    assert sites["cumulative"].tolist() == [30, 50, 60]
    assert sites["cumulative"].is_monotonic_increasing
    assert (sites[["lon", "lat"]].to_numpy() == candidates[[2, 1, 0]]).all()


def test_greedy_overlapping_candidates_count_only_new_cases() -> None:
    """Cases on a line; each candidate sees a window of them; later picks add only what is new."""
    rng = np.random.default_rng(5)
    n_cases = 400
    distances = np.sort(rng.uniform(0, 2_000, n_cases))
    c_lon, c_lat, _ = GEOD.fwd(
        np.full(n_cases, ZIBO[0]), np.full(n_cases, ZIBO[1]), np.full(n_cases, 90.0), distances
    )
    k_lon, k_lat, _ = GEOD.fwd(
        np.full(40, ZIBO[0]), np.full(40, ZIBO[1]), np.full(40, 90.0), np.linspace(0, 2_000, 40)
    )
    sites = greedy_camera_sites(k_lon, k_lat, c_lon, c_lat, range_m=150, k=8)
    assert sites["cumulative"].is_monotonic_increasing
    assert (np.diff(sites["cases_added"]) <= 0).all()  # greedy gains never grow
    np.testing.assert_array_equal(sites["cumulative"], np.cumsum(sites["cases_added"]))
    # Brute force on the ellipsoid: the cases within range of any chosen site are exactly ``cumulative``.
    seen = np.zeros(n_cases, dtype=bool)
    for lon, lat in sites[["lon", "lat"]].to_numpy():
        seen |= GEOD.inv(np.full(n_cases, lon), np.full(n_cases, lat), c_lon, c_lat)[2] <= 150
    assert seen.sum() == sites["cumulative"].iloc[-1]


def test_greedy_edge_cases() -> None:
    empty = greedy_camera_sites([ZIBO[0]], [ZIBO[1]], [], [], 100, k=3)
    assert empty.empty and list(empty.columns) == [
        "rank",
        "candidate",
        "lon",
        "lat",
        "cases_added",
        "cumulative",
    ]
    assert greedy_camera_sites([ZIBO[0]], [ZIBO[1]], [ZIBO[0]], [ZIBO[1]], 100, k=0).empty
    one = greedy_camera_sites([math.nan, ZIBO[0]], [ZIBO[1]] * 2, [ZIBO[0]], [ZIBO[1]], 100, k=3)
    assert one["candidate"].tolist() == [1] and one["cases_added"].tolist() == [1]
    with pytest.raises(ValueError):
        greedy_camera_sites([ZIBO[0]], [ZIBO[1]], [ZIBO[0]], [ZIBO[1]], 0, k=1)


# --- scale -----------------------------------------------------------------------------------------------


def test_scale_20000_grids_10000_cameras_1000000_points(center: tuple[float, float]) -> None:
    rng = np.random.default_rng(0)
    x0, y0 = center
    nx, ny, side = 200, 100, 150.0  # 20,000 unit grids of 150 m: a 30 km x 15 km city
    ix, iy = np.meshgrid(np.arange(nx), np.arange(ny))
    gx, gy = x0 + (ix.ravel() - nx / 2) * side, y0 + (iy.ravel() - ny / 2) * side
    grids = gpd.GeoDataFrame(
        {"code": [f"370302{i:09d}" for i in range(nx * ny)]},
        geometry=wgs84(shapely.box(gx, gy, gx + side, gy + side)),
        crs=4326,
    )
    n_cam = 10_000  # half spread evenly, half crowded downtown
    cx = (
        np.concatenate([rng.uniform(-nx / 2, nx / 2, n_cam // 2) * side, rng.normal(0, 1_500, n_cam // 2)])
        + x0
    )
    cy = (
        np.concatenate([rng.uniform(-ny / 2, ny / 2, n_cam // 2) * side, rng.normal(0, 1_000, n_cam // 2)])
        + y0
    )
    c_lon, c_lat = TO_WGS84.transform(cx, cy)
    heading, fov = rng.uniform(0, 360, n_cam), rng.choice([30, 60, 90, 120, 360], n_cam)
    cam_range = rng.uniform(30, 200, n_cam)

    timings: dict[str, float] = {}
    t = time.perf_counter()
    sectors = camera_sectors(c_lon, c_lat, heading, fov, cam_range)
    timings["camera_sectors 10,000"] = time.perf_counter() - t
    sectors[rng.random(n_cam) < 0.05] = None  # indoor feeds

    t = time.perf_counter()
    frame = grid_coverage(grids, sectors)
    timings["grid_coverage 20,000 x 10,000"] = time.perf_counter() - t

    lon_min, lat_min, lon_max, lat_max = grids.total_bounds
    p_lon, p_lat = rng.uniform(lon_min, lon_max, 1_000_000), rng.uniform(lat_min, lat_max, 1_000_000)
    t = time.perf_counter()
    seen = points_covered(p_lon, p_lat, sectors)
    timings["points_covered 1,000,000 x 10,000"] = time.perf_counter() - t

    blind = ~seen
    cand_lon, cand_lat = c_lon[:2_000] + 0.001, c_lat[:2_000]
    t = time.perf_counter()
    sites = greedy_camera_sites(cand_lon, cand_lat, p_lon[blind][:100_000], p_lat[blind][:100_000], 150, k=50)
    timings["greedy 2,000 candidates x 100,000 cases, k=50"] = time.perf_counter() - t
    for name, seconds in timings.items():
        print(f"{name}: {seconds:.2f} s")

    assert len(frame) == nx * ny and frame["code"].is_unique
    assert ((frame["covered_share"] >= 0) & (frame["covered_share"] <= 1)).all()
    assert (frame["covered_m2"] <= frame["area_m2"] + 1e-6).all()
    assert frame["blind_geom"].isna().sum() == (frame["covered_share"] > 1 - 1e-12).sum()
    assert 0.05 < frame["covered_share"].mean() < 0.95 and frame["camera_count"].max() > 10
    # Independent check on a sample of grids: clip the union of all their sectors by brute force.
    sample = rng.choice(nx * ny, 300, replace=False)
    live = sectors[~shapely.is_missing(sectors)]
    live_metric = metric(live)
    tree = shapely.STRtree(live_metric)
    grid_metric = metric(grids.geometry.to_numpy()[sample])
    reference = np.array(
        [g.intersection(shapely.union_all(live_metric[tree.query(g)])).area for g in grid_metric]
    )
    np.testing.assert_allclose(frame["covered_m2"].to_numpy()[sample], reference, rtol=1e-6, atol=1e-3)
    # Points: the same as the STRtree route on a sample, and in a plausible share.
    k = 50_000
    hit, _ = shapely.STRtree(live).query(shapely.points(p_lon[:k], p_lat[:k]), predicate="intersects")
    expected = np.zeros(k, dtype=bool)
    expected[hit] = True
    np.testing.assert_array_equal(seen[:k], expected)
    assert sites["cumulative"].is_monotonic_increasing and len(sites) == 50


def test_pairs_within_equals_an_strtree_dwithin_query() -> None:
    """The bucketed pair finder gives exactly STRtree's dwithin pairs, boundary distances included."""
    from etl.coverage import pairs_within

    rng = np.random.default_rng(11)
    px, py = rng.uniform(0, 2_000, 20_000), rng.uniform(0, 1_500, 20_000)
    cx, cy = rng.uniform(-100, 2_100, 700), rng.uniform(-100, 1_600, 700)
    radius = rng.uniform(60, 80, 700)
    # A point exactly on a centre's circle, and points sharing one place, must be counted as dwithin does.
    px, py = np.append(px, [cx[0] + radius[0], 5.0, 5.0]), np.append(py, [cy[0], 5.0, 5.0])
    tree = shapely.STRtree(shapely.points(px, py))
    expected = tree.query(shapely.points(cx, cy), predicate="dwithin", distance=radius)
    order = np.lexsort((expected[1], expected[0]))
    centre, point = pairs_within(cx, cy, radius, px, py)
    assert len(centre) > 1_000
    assert np.array_equal(centre, expected[0][order]) and np.array_equal(point, expected[1][order])
    none = pairs_within(cx[:0], cy[:0], radius[:0], px, py)
    assert len(none[0]) == 0 and len(none[1]) == 0
