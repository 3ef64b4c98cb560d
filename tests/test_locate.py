"""The ETL's locate step: admin units (finest level first, smallest code on shared edges), and H3 cells."""

from __future__ import annotations

import gc
import time

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import pytest
import shapely
from h3.api import basic_int as h3_int
from shapely.geometry import GeometryCollection, LineString, Point, Polygon, box
from sqlalchemy import Connection, text

from etl import h3lattice
from etl.h3lattice import LatticeCells, lattice_keys
from etl.locate import (
    CODE_COLUMNS,
    H3_COLUMNS,
    AdminIndex,
    h3_cells,
    h3_parents,
    h3_to_str,
    in_extent,
    locate_geometries,
    locate_points,
    locate_units,
    str_to_h3,
    unit_codes,
)

# (min_lon, min_lat, max_lon, max_lat) of Shandong province, roughly.
SHANDONG = (114.8, 34.4, 122.7, 38.4)

# A small hierarchy near Zaozhuang (two districts, 0.2 x 0.2 degrees each):
#
#   370402 | street 001: community 001 = four grids 001-004 (2 x 2), community 002 = two grids in its
#          |             lower half (36.10-36.15) and none in its upper half;
#          | street 002: community 001 = two grids, codes of 14 and 16 digits.
#   370403 | street 001 (118.2-118.3): communities 001 and 002, no grids at all; 118.3-118.4 has no street.
UNITS: list[tuple[str, str, Polygon]] = [
    ("370402", "district", box(118.0, 36.0, 118.2, 36.2)),
    ("370403", "district", box(118.2, 36.0, 118.4, 36.2)),
    ("370402001", "street", box(118.0, 36.0, 118.1, 36.2)),
    ("370402002", "street", box(118.1, 36.0, 118.2, 36.2)),
    ("370403001", "street", box(118.2, 36.0, 118.3, 36.2)),
    ("370402001001", "community", box(118.0, 36.0, 118.1, 36.1)),
    ("370402001002", "community", box(118.0, 36.1, 118.1, 36.2)),
    ("370402002001", "community", box(118.1, 36.0, 118.2, 36.2)),
    ("370403001001", "community", box(118.2, 36.0, 118.3, 36.1)),
    ("370403001002", "community", box(118.2, 36.1, 118.3, 36.2)),
    ("370402001001001", "grid", box(118.0, 36.0, 118.05, 36.05)),
    ("370402001001002", "grid", box(118.05, 36.0, 118.1, 36.05)),
    ("370402001001003", "grid", box(118.0, 36.05, 118.05, 36.1)),
    ("370402001001004", "grid", box(118.05, 36.05, 118.1, 36.1)),
    ("370402001002001", "grid", box(118.0, 36.1, 118.05, 36.15)),
    ("370402001002002", "grid", box(118.05, 36.1, 118.1, 36.15)),
    ("37040200200101", "grid", box(118.1, 36.0, 118.2, 36.1)),
    ("3704020020010002", "grid", box(118.1, 36.1, 118.2, 36.2)),
]

G1, G2, G3, G4 = (f"370402001001{n:03d}" for n in range(1, 5))


def _frame(units: list[tuple[str, str, Polygon]]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"code": [u[0] for u in units], "level": [u[1] for u in units]},
        geometry=[u[2] for u in units],
        crs="EPSG:4326",
    )


def _codes(
    grid: str | None = None,
    community: str | None = None,
    street: str | None = None,
    district: str | None = None,
) -> dict[str, str | None]:
    """The expected row: given the finest code, the coarser ones are its prefixes."""
    finest = grid or community or street or district
    if finest is None:
        return {col: None for col in CODE_COLUMNS}
    return {
        "district_code": finest[:6],
        "street_code": finest[:9] if len(finest) >= 9 else None,
        "community_code": finest[:12] if len(finest) >= 12 else None,
        "grid_code": grid,
    }


@pytest.fixture(scope="module")
def index() -> AdminIndex:
    return AdminIndex.from_frame(_frame(UNITS))


# Points and the unit they must land in.
CASES: list[tuple[str, float, float, dict[str, str | None]]] = [
    ("inside grid 1", 118.01, 36.01, _codes(grid=G1)),
    ("inside grid 4", 118.07, 36.07, _codes(grid=G4)),
    ("inside 14-digit grid", 118.15, 36.05, _codes(grid="37040200200101")),
    ("inside 16-digit grid", 118.15, 36.15, _codes(grid="3704020020010002")),
    ("edge grid 1 | grid 2", 118.05, 36.02, _codes(grid=G1)),
    ("edge grid 2 | grid 4", 118.07, 36.05, _codes(grid=G2)),
    ("corner of grids 1-4", 118.05, 36.05, _codes(grid=G1)),
    ("edge across communities", 118.07, 36.1, _codes(grid=G4)),
    ("edge across streets", 118.1, 36.02, _codes(grid=G2)),
    ("edge 14 | 16-digit grid", 118.15, 36.1, _codes(grid="3704020020010002")),
    ("community part without grids", 118.05, 36.18, _codes(community="370402001002")),
    ("community without any grid", 118.25, 36.05, _codes(community="370403001001")),
    ("edge of two gridless communities", 118.25, 36.1, _codes(community="370403001001")),
    ("district without streets", 118.35, 36.05, _codes(district="370403")),
    ("edge gridded | gridless district", 118.2, 36.05, _codes(grid="37040200200101")),
    ("outer corner of the city", 118.0, 36.0, _codes(grid=G1)),
    ("just outside", 118.4000001, 36.05, _codes()),
    ("far outside", 117.0, 30.0, _codes()),
    ("NaN", float("nan"), 36.05, _codes()),
    ("infinite", float("inf"), float("inf"), _codes()),
]


def test_points_land_in_the_right_units(index: AdminIndex) -> None:
    lon = np.array([c[1] for c in CASES])
    lat = np.array([c[2] for c in CASES])
    located = locate_points(index, lon, lat)
    assert list(located.columns) == list(CODE_COLUMNS)
    assert all(located[col].dtype == object for col in CODE_COLUMNS)
    for (name, *_, expected), row in zip(CASES, located.to_dict("records"), strict=True):
        assert row == expected, name


def test_shared_edges_are_deterministic_whatever_the_load_order() -> None:
    lon = np.array([c[1] for c in CASES])
    lat = np.array([c[2] for c in CASES])
    reference = locate_points(AdminIndex.from_frame(_frame(UNITS)), lon, lat)
    rng = np.random.default_rng(7)
    for _ in range(5):
        shuffled = [UNITS[i] for i in rng.permutation(len(UNITS))]
        pd.testing.assert_frame_equal(
            locate_points(AdminIndex.from_frame(_frame(shuffled)), lon, lat), reference
        )


def test_edge_points_are_never_duplicated(index: AdminIndex) -> None:
    # Every grid corner and edge midpoint, repeated: one row per input point, in input order.
    xs = np.array([118.0, 118.05, 118.1, 118.15, 118.2])
    ys = np.array([36.0, 36.05, 36.1, 36.15, 36.2])
    lon, lat = (a.ravel() for a in np.meshgrid(xs, ys))
    lon, lat = np.tile(lon, 3), np.tile(lat, 3)
    located = locate_points(index, lon, lat)
    assert len(located) == len(lon)
    assert (
        located.iloc[: len(lon) // 3]
        .reset_index(drop=True)
        .equals(located.iloc[len(lon) // 3 : 2 * len(lon) // 3].reset_index(drop=True))
    )
    assert located["district_code"].notna().all()


def test_codes_are_prefix_consistent(index: AdminIndex) -> None:
    rng = np.random.default_rng(3)
    lon = rng.uniform(117.95, 118.45, 20_000)
    lat = rng.uniform(35.95, 36.25, 20_000)
    located = locate_points(index, lon, lat)
    for coarse, fine, length in (
        ("district_code", "street_code", 6),
        ("street_code", "community_code", 9),
        ("community_code", "grid_code", 12),
    ):
        both = located[fine].notna()
        assert located[coarse][both].notna().all()
        assert (located[fine][both].str[:length] == located[coarse][both]).all()
    inside = (lon >= 118.0) & (lon <= 118.4) & (lat >= 36.0) & (lat <= 36.2)
    assert located["district_code"].notna().to_numpy().tolist() == inside.tolist()


def test_unit_numbers_give_the_same_codes_as_arrow_text(index: AdminIndex) -> None:
    """The ETL's path (unit numbers, then one arrow gather per code column) equals locate_points, nulls
    (outside, non-finite, a community without grids) included."""
    rng = np.random.default_rng(5)
    lon = np.append(rng.uniform(117.95, 118.45, 5_000), [np.nan, np.inf])
    lat = np.append(rng.uniform(35.95, 36.25, 5_000), [36.1, 36.1])
    units = locate_units(index, lon, lat)
    located = locate_points(index, lon, lat)
    assert (units < 0).sum() > 100 and units[-2:].tolist() == [-1, -1]
    for column in CODE_COLUMNS:
        assert unit_codes(index, units, column).to_pylist() == located[column].tolist(), column


def test_garbage_collector_is_left_as_it_was(index: AdminIndex) -> None:
    assert gc.isenabled()
    locate_points(index, [118.01], [36.01])
    assert gc.isenabled()
    gc.disable()
    try:
        locate_points(index, [118.01], [36.01])
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_empty_input_and_empty_levels() -> None:
    only_districts = AdminIndex.from_frame(_frame([u for u in UNITS if u[1] == "district"]))
    located = locate_points(only_districts, [118.05, 118.5], [36.05, 36.05])
    assert located.to_dict("records") == [_codes(district="370402"), _codes()]
    empty = locate_points(only_districts, np.array([]), np.array([]))
    assert list(empty.columns) == list(CODE_COLUMNS) and len(empty) == 0
    nothing = AdminIndex.from_frame(_frame([]))
    assert len(nothing) == 0 and nothing.bounds is None
    assert locate_points(nothing, [118.05], [36.05]).to_dict("records") == [_codes()]


def test_index_rejects_bad_units() -> None:
    with pytest.raises(ValueError, match="EPSG:4326"):
        AdminIndex.from_frame(_frame(UNITS).to_crs(3857))
    with pytest.raises(ValueError, match="duplicate"):
        AdminIndex.from_frame(_frame([*UNITS, ("370402", "district", box(0, 0, 1, 1))]))
    with pytest.raises(ValueError, match="does not fit"):
        AdminIndex.from_frame(_frame([("3704021", "street", box(0, 0, 1, 1))]))
    with pytest.raises(ValueError, match="does not fit"):
        AdminIndex.from_frame(_frame([("3704020010010012345", "grid", box(0, 0, 1, 1))]))
    with pytest.raises(ValueError, match="unknown admin level"):
        AdminIndex.from_frame(_frame([("370402", "county", box(0, 0, 1, 1))]))
    with pytest.raises(ValueError, match="non-polygonal"):
        AdminIndex.from_frame(_frame([("370402", "district", LineString([(0, 0), (1, 1)]))]))
    bowtie = Polygon([(0, 0), (1, 1), (1, 0), (0, 1)])
    with pytest.raises(ValueError, match="invalid"):
        AdminIndex.from_frame(_frame([("370402", "district", bowtie)]))
    index = AdminIndex.from_frame(_frame(UNITS))
    assert len(index) == len(UNITS)
    assert index.bounds == (118.0, 36.0, 118.4, 36.2)


# --- lines and polygons ----------------------------------------------------------------------------------

# A 3 x 3 block of 0.01-degree grids in one community, serials 001..009 row by row from the south-west.
X0, Y0, S = 118.0, 36.0, 0.01
NINE = [
    ("370402", "district", box(X0, Y0, X0 + 3 * S, Y0 + 3 * S)),
    ("370402001", "street", box(X0, Y0, X0 + 3 * S, Y0 + 3 * S)),
    ("370402001001", "community", box(X0, Y0, X0 + 3 * S, Y0 + 3 * S)),
] + [
    (
        f"370402001001{3 * r + c + 1:03d}",
        "grid",
        box(X0 + c * S, Y0 + r * S, X0 + (c + 1) * S, Y0 + (r + 1) * S),
    )
    for r in range(3)
    for c in range(3)
]
CENTRE = "370402001001005"


def _grid_geometry(code: str) -> Polygon:
    return next(g for c, _, g in NINE if c == code)


def test_lines_and_polygons_are_located_by_a_point_on_them() -> None:
    index = AdminIndex.from_frame(_frame(NINE))

    def at(x: float, y: float) -> tuple[float, float]:
        return X0 + x * S, Y0 + y * S

    # A U-shaped block (opening north) and an arch-shaped road round the centre grid: both centroids
    # fall in the centre grid, which neither touches -- locating by centroid would be wrong.
    u_shape = Polygon([at(0.2, 0.2), at(2.8, 0.2), at(2.8, 2.8), at(2.2, 2.8), at(2.2, 0.8), at(0.8, 0.8),
                       at(0.8, 2.8), at(0.2, 2.8)])  # fmt: skip
    arch = LineString([at(0.5, 0.5), at(0.5, 2.5), at(2.5, 2.5), at(2.5, 0.5)])
    mixed = GeometryCollection([LineString([at(0.1, 0.1), at(0.9, 0.1)]), box(*at(2.1, 2.1), *at(2.9, 2.9))])
    geoms = np.array([u_shape, arch, mixed, None, Polygon(), box(*at(0.4, 1.4), *at(0.6, 1.6))], dtype=object)
    located = locate_geometries(index, geoms)

    centre = _grid_geometry(CENTRE)
    for geom, grid in zip(geoms[:2], located["grid_code"][:2], strict=True):
        assert shapely.intersects(centre, geom.centroid)  # the trap
        assert grid is not None and grid != CENTRE
        assert _grid_geometry(grid).intersects(geom)
    assert located["grid_code"][2] == "370402001001009"  # the polygon part of the collection wins
    assert located.iloc[3].isna().all() and located.iloc[4].isna().all()
    assert located.to_dict("records")[5] == _codes(grid="370402001001004")
    assert located.to_dict("records")[0]["community_code"] == "370402001001"


def test_points_as_geometries_match_locate_points(index: AdminIndex) -> None:
    lon = np.array([c[1] for c in CASES[:16]])
    lat = np.array([c[2] for c in CASES[:16]])
    points = np.array([Point(x, y) for x, y in zip(lon, lat, strict=True)], dtype=object)
    pd.testing.assert_frame_equal(locate_geometries(index, points), locate_points(index, lon, lat))


def test_in_extent() -> None:
    bbox = (118.0, 36.0, 118.4, 36.2)
    lon = np.array([118.0, 118.4, 118.2, 117.99, 118.2, np.nan, 118.2])
    lat = np.array([36.0, 36.2, 36.1, 36.1, 36.21, 36.1, np.nan])
    assert in_extent(lon, lat, bbox).tolist() == [True, True, True, False, False, False, False]
    with pytest.raises(ValueError, match="bbox"):
        in_extent(lon, lat, (118.4, 36.0, 118.0, 36.2))
    with pytest.raises(ValueError, match="1-D"):
        in_extent(lon, lat[:3], bbox)


# --- against the store -----------------------------------------------------------------------------------


def test_from_engine_reads_core_admin_unit(conn: Connection) -> None:
    parents = {"street": "district", "community": "street", "grid": "community"}
    for code, level, geom in sorted(UNITS, key=lambda u: len(u[0])):  # parents first
        parent = None if level == "district" else code[: {"street": 6, "community": 9, "grid": 12}[level]]
        conn.execute(
            text(
                "INSERT INTO core.admin_unit"
                " (code, level, parent_code, parent_level, name, geom, label_point, area_m2)"
                " VALUES (:code, :level, :parent, :parent_level, :name,"
                " ST_Multi(ST_GeomFromText(:wkt, 4326)),"
                " ST_PointOnSurface(ST_GeomFromText(:wkt, 4326)), 1000)"
            ),
            {
                "code": code,
                "level": level,
                "parent": parent,
                "parent_level": parents.get(level),
                "name": f"unit {code}",
                "wkt": geom.wkt,
            },
        )
    from_db = AdminIndex.from_engine(conn)
    ours = {code for code, *_ in UNITS}
    assert ours <= {code for level in from_db.levels.values() for code in level.codes}
    lon = np.array([c[1] for c in CASES])
    lat = np.array([c[2] for c in CASES])
    pd.testing.assert_frame_equal(
        locate_points(from_db, lon, lat), locate_points(AdminIndex.from_frame(_frame(UNITS)), lon, lat)
    )


# --- H3 --------------------------------------------------------------------------------------------------


def _random_points(
    n: int, bbox: tuple[float, float, float, float], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(bbox[0], bbox[2], n), rng.uniform(bbox[1], bbox[3], n)


def test_h3_parents_equal_cell_to_parent_in_shandong() -> None:
    lon, lat = _random_points(100_000, SHANDONG, seed=11)
    cells = h3_cells(lon, lat)
    assert list(cells.columns) == list(H3_COLUMNS) == ["h3_r7", "h3_r8", "h3_r9", "h3_r10"]
    assert all(cells[col].dtype == np.int64 for col in H3_COLUMNS)
    assert (cells.to_numpy() > 0).all()  # bigint-safe: the top bit of an H3 index is 0
    r10 = cells["h3_r10"].tolist()
    to_cell = h3_int.latlng_to_cell
    assert r10 == [to_cell(y, x, 10) for x, y in zip(lon.tolist(), lat.tolist(), strict=True)]
    to_parent = h3_int.cell_to_parent
    for res in (7, 8, 9):
        assert cells[f"h3_r{res}"].tolist() == [to_parent(c, res) for c in r10], res
    # The string API, on a sample: same cells.
    for i in range(0, 100_000, 1000):
        cell = h3.latlng_to_cell(lat[i], lon[i], 10)
        assert h3_to_str(cells.loc[i, ["h3_r10"]].to_numpy())[0] == cell
        for res in (7, 8, 9):
            assert h3_to_str(np.array([cells.loc[i, f"h3_r{res}"]]))[0] == h3.cell_to_parent(cell, res)


def test_h3_parents_everywhere_including_pentagons() -> None:
    lon, lat = _random_points(20_000, (-180.0, -89.9, 180.0, 89.9), seed=12)
    finest = h3_cells(lon, lat)["h3_r10"].to_numpy()
    pentagons = np.array(sorted(h3_int.get_pentagons(10)), dtype=np.int64)
    cells = np.concatenate([finest, pentagons])
    for res in range(0, 11):
        expected = [h3_int.cell_to_parent(int(c), res) for c in cells]
        assert h3_parents(cells, res).tolist() == expected, res
    assert h3_parents(pentagons, 10).tolist() == pentagons.tolist()
    with pytest.raises(ValueError, match="resolution"):
        h3_parents(cells, 16)


def test_h3_strings_round_trip() -> None:
    lon, lat = _random_points(1000, SHANDONG, seed=13)
    cells = h3_cells(lon, lat)["h3_r8"].to_numpy()
    strings = h3_to_str(cells)
    assert strings.tolist() == [h3_int.int_to_str(int(c)) for c in cells]
    assert str_to_h3(strings).tolist() == cells.tolist()
    assert h3_to_str(cells.astype(np.uint64)).tolist() == strings.tolist()
    assert h3_to_str(np.array([0], dtype=np.int64)).tolist() == [None]
    assert str_to_h3([None, strings[0]]).tolist() == [0, cells[0]]
    for bad in ("not-hex", "8a", "ffffffffffffffff", ""):
        with pytest.raises(ValueError, match="not an H3 cell"):
            str_to_h3([bad])


def test_h3_refuses_points_without_coordinates() -> None:
    with pytest.raises(ValueError, match="1 point"):
        h3_cells([118.0, np.nan], [36.0, 36.0])
    with pytest.raises(ValueError, match="first at 0"):
        h3_cells([118.0], [95.0])
    assert len(h3_cells(np.array([]), np.array([]))) == 0


# --- a million points ------------------------------------------------------------------------------------


def _city(nx: int = 200, ny: int = 100, s: float = 0.002) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """nx x ny square grids of s degrees from (X0, Y0): 10 x 10 grids per community, 5 community columns
    per street, 2 streets per district.  East of them a band of one gridless community, then a band of
    district without streets.  Returns the units and the grid codes by (column, row), column-major."""
    i, j = (a.ravel() for a in np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij"))
    street_codes = [f"{('370402', '370403')[k // 2]}{k % 2 + 1:03d}" for k in range(nx // 50)]
    grid_codes = np.array(
        [
            f"{street_codes[a // 50]}{(a // 10 % 5) * 10 + b // 10 + 1:03d}{a % 10 * 10 + b % 10 + 1:03d}"
            for a, b in zip(i.tolist(), j.tolist(), strict=True)
        ],
        dtype=object,
    )
    east, top, band = X0 + nx * s, Y0 + ny * s, 20 * s
    units: list[tuple[str, str, Polygon]] = [
        (f"{street_codes[a // 5]}{a % 5 * 10 + b + 1:03d}", "community",
         box(X0 + a * 10 * s, Y0 + b * 10 * s, X0 + (a + 1) * 10 * s, Y0 + (b + 1) * 10 * s))
        for a in range(nx // 10)
        for b in range(ny // 10)
    ]  # fmt: skip
    units.append(("370403002901", "community", box(east, Y0, east + band, top)))
    for k, code in enumerate(street_codes):
        street_east = east + band if code == street_codes[-1] else X0 + (k + 1) * 50 * s  # last one: + band
        units.append((code, "street", box(X0 + k * 50 * s, Y0, street_east, top)))
    units.append(("370402", "district", box(X0, Y0, X0 + nx // 2 * s, top)))
    units.append(("370403", "district", box(X0 + nx // 2 * s, Y0, east + 2 * band, top)))
    grids = gpd.GeoDataFrame(
        {"code": grid_codes, "level": "grid"},
        geometry=shapely.box(X0 + i * s, Y0 + j * s, X0 + (i + 1) * s, Y0 + (j + 1) * s),
        crs="EPSG:4326",
    )
    frame = pd.concat([grids, _frame(units)], ignore_index=True)
    return gpd.GeoDataFrame(frame, geometry="geometry", crs="EPSG:4326"), grid_codes


def test_a_million_points_against_twenty_thousand_grids() -> None:
    nx, ny, s = 200, 100, 0.002
    units, grid_codes = _city(nx, ny, s)
    assert (units["level"] == "grid").sum() == 20_000
    t0 = time.perf_counter()
    index = AdminIndex.from_frame(units)
    built = time.perf_counter() - t0

    n = 1_000_000
    east, top, band = X0 + nx * s, Y0 + ny * s, 20 * s
    lon, lat = _random_points(n, (X0 - 0.01, Y0 - 0.01, east + 2 * band + 0.01, top), seed=5)
    t0 = time.perf_counter()
    located = locate_points(index, lon, lat)
    elapsed = time.perf_counter() - t0
    print(f"\nlocate: {n:,} points against {len(index):,} units ({nx * ny:,} grids): {elapsed:.2f} s"
          f" (index built in {built:.2f} s)")  # fmt: skip

    col = np.floor((lon - X0) / s).astype(np.int64)
    row = np.floor((lat - Y0) / s).astype(np.int64)
    outside = (lon < X0) | (lat < Y0) | (lon >= east + 2 * band)
    in_grids = ~outside & (col < nx)
    in_band = ~outside & (lon >= east) & (lon < east + band)
    in_district_only = ~outside & (lon >= east + band)
    assert in_grids.sum() > 0.75 * n and in_band.sum() > 0.05 * n and in_district_only.sum() > 0.05 * n
    # Expected codes by numpy gathers (pandas string ops on a million rows would dominate the test).
    cell = np.where(in_grids, col * ny + row, 0)
    for name, length in (("district_code", 6), ("street_code", 9), ("community_code", 12), ("grid_code", 15)):
        expected = np.full(n, None, dtype=object)
        expected[in_grids] = np.array([code[:length] for code in grid_codes], dtype=object)[cell[in_grids]]
        band_code = {"district_code": "370403", "street_code": "370403002", "community_code": "370403002901"}
        expected[in_band] = band_code.get(name)
        expected[in_district_only] = "370403" if name == "district_code" else None
        assert located[name].dtype == object
        mismatches = np.flatnonzero(located[name].to_numpy() != expected)
        assert not len(mismatches), (name, mismatches[:5], lon[mismatches[:5]], lat[mismatches[:5]])


def test_h3_for_a_million_points() -> None:
    lon, lat = _random_points(1_000_000, SHANDONG, seed=6)
    t0 = time.perf_counter()
    cells = h3_cells(lon, lat)
    elapsed = time.perf_counter() - t0
    print(f"\nh3_cells: 1,000,000 points, resolutions 7-10: {elapsed:.2f} s")
    assert cells.shape == (1_000_000, 4)
    sample = slice(0, 1_000_000, 997)
    assert cells["h3_r7"][sample].tolist() == [h3_int.cell_to_parent(c, 7) for c in cells["h3_r10"][sample]]


def _h3_per_point(lat: np.ndarray, lon: np.ndarray, res: int) -> list[int]:
    return [h3_int.latlng_to_cell(y, x, res) for y, x in zip(lat.tolist(), lon.tolist(), strict=True)]


def test_lattice_cells_are_h3s_cells_for_a_dense_city() -> None:
    """A city's points share cells: h3 is asked once per lattice key, and every answer is h3's own."""
    lon, lat = _random_points(1_000_000, (118.0, 36.7, 118.3, 36.9), seed=21)
    cells = LatticeCells(10)
    got = cells(lat, lon)
    assert got.astype(np.int64).tolist() == _h3_per_point(lat, lon, 10)
    keys = lattice_keys(lat, lon, 10, h3lattice._faces())
    assert (keys < 0).mean() < 1e-3  # almost every point is keyed, not asked of h3 itself
    assert len(np.unique(keys)) < 100_000  # ~57,000 cells: far fewer h3 calls than points
    # Remembered keys serve a second batch (and must still be right).
    lon2, lat2 = _random_points(200_000, (118.0, 36.7, 118.3, 36.9), seed=22)
    assert cells(lat2, lon2).astype(np.int64).tolist() == _h3_per_point(lat2, lon2, 10)
    assert cells._trusted


@pytest.mark.parametrize("res", [0, 2, 5, 8, 10, 12])
def test_lattice_cells_are_h3s_cells_everywhere(res: int) -> None:
    """The whole globe, every face and both classes of resolution (odd ones go to h3 point by point)."""
    rng = np.random.default_rng(23 + res)
    lat = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, 100_000)))
    lon = rng.uniform(-180.0, 180.0, 100_000)
    cells = LatticeCells(res)
    assert cells(lat, lon).astype(np.int64).tolist() == _h3_per_point(lat, lon, res)
    assert cells._trusted is (res % 2 == 0)


def test_lattice_cells_on_the_hard_points() -> None:
    """Where rounding or the face is decided by a hair: cell corners and edge midpoints, face centres,
    pentagons, points a hair either side of a face edge; all must be h3's answer, asked directly."""
    rng = np.random.default_rng(29)
    lon, lat = _random_points(300, (118.0, 36.7, 118.3, 36.9), seed=30)
    glon = rng.uniform(-180.0, 180.0, 300)
    glat = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, 300)))
    points: list[tuple[float, float]] = []
    for y, x in zip(np.concatenate([lat, glat]).tolist(), np.concatenate([lon, glon]).tolist(), strict=True):
        boundary = h3_int.cell_to_boundary(h3_int.latlng_to_cell(y, x, 10))
        points.extend(boundary)
        points.extend(((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
                      for a, b in zip(boundary, boundary[1:] + boundary[:1], strict=True))
    for cell in h3_int.get_res0_cells():
        points.append(h3_int.cell_to_latlng(cell))
        points.extend(h3_int.cell_to_boundary(cell))
    for y, x in list(points[-500:]):
        for nudge in (1e-12, -1e-12, 1e-9, -1e-9):
            points.append((y + nudge, x - nudge))
    plat = np.array([p[0] for p in points])
    plon = np.array([p[1] for p in points])
    for res in (10, 8, 2):
        assert LatticeCells(res)(plat, plon).astype(np.int64).tolist() == _h3_per_point(plat, plon, res), res
