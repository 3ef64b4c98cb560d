"""The ETL's *locate* step: which district, street, community and unit grid a thing lies in, and its H3 cells.

Everything here works in memory on numpy arrays, vectorised; the only Python-level loop is h3's, once per
H3 cell the points fall in (:mod:`etl.h3lattice`), and the H3 string conversions for callers.

Why in Python and not in PostGIS
--------------------------------
The project's reference measurement: a spatial join of 1,000,000 points to 20,000 polygons takes about a
second with a shapely 2 ``STRtree`` in memory, and 30-60 s as ``ST_Intersects`` inside PostGIS.  The
admin units of a whole city fit in memory with room to spare, so the ETL loads them once per run
(:meth:`AdminIndex.from_engine`) and locates every batch here before the rows are stored.

How a point is located
----------------------
The admin hierarchy is district (6-digit code) > street (9) > community (12) > unit grid (14-16), and a
code's prefix names its parents (``core.admin_unit`` enforces it).  So the finest level is queried first:
a point inside a unit grid gets all four codes from the grid code alone (``code[:12]``, ``code[:9]``,
``code[:6]``), and only the points that fell in no grid -- parts of a district may have streets and
communities but no unit grid yet -- are queried against the communities, then the streets, then the
districts.  A point outside every district gets None everywhere and the caller rejects it as outside the
city; so does a point with a non-finite coordinate.

Points on a shared boundary (``intersects`` is true for both units) go to exactly one unit, the one with
the smallest code, so a re-run gives the same answer whatever order the units were loaded in.  Note that
the finest level wins first: a point on the edge between a gridded and an ungridded community goes to the
gridded one.

Speed
-----
What it takes to locate 1M points against 20,000 grids in about a second (each measured on 1M points
and 20,000 irregular 20-vertex grids, see the functions' notes):

* the points are queried in spatial order (:func:`_spatial_order`): point-in-polygon tests are
  memory-bound, and in random order every test touches another polygon -- 4.6 s against 1.4 s;
* the cyclic garbage collector is paused while the 1M shapely points live (:func:`_gc_paused`): every
  new geometry is a tracked object and would set off repeated full collections -- 0.65 s against 0.34 s
  for ``shapely.points`` alone;
* the tree query is split into bounding boxes, then :func:`shapely.intersects_xy` on prepared polygons
  (:func:`_first_hit`) -- same answer as ``predicate="intersects"``, 0.6 s against 1.2 s;
* the codes of all four columns come from one gather per column over a table made at build time.

H3
--
Every located point also carries its H3 cells at :data:`geodata.codes.H3_RESOLUTIONS` (7-10).  h3 is
asked at resolution 10 only, and once per cell rather than once per point: :mod:`etl.h3lattice` finds
which points share a cell with numpy, exactly (~0.4 s instead of ~0.9 s per million points of a city);
the coarser cells are derived with bit operations on the 64-bit index (see :func:`h3_parents`), which is
exact and costs nothing.  Cells are
stored as signed ``int64`` (PostgreSQL ``bigint``): an H3 index's top bit is always 0, so the value is the
same either way.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import shapely
from h3.api import basic_int as h3_int

from etl.h3lattice import LatticeCells
from geodata.codes import ADMIN_CODE_LENGTHS, ADMIN_LEVELS, H3_RESOLUTIONS

__all__ = [
    "ADMIN_UNIT_SQL",
    "CODE_COLUMNS",
    "H3_COLUMNS",
    "AdminIndex",
    "LevelIndex",
    "h3_cells",
    "h3_parents",
    "h3_to_str",
    "in_extent",
    "locate_geometries",
    "locate_points",
    "representative_points",
    "str_to_h3",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
ObjectArray = npt.NDArray[np.object_]

#: Levels coarse to fine, as in :data:`geodata.codes.ADMIN_LEVELS`.
LEVELS: tuple[str, ...] = tuple(ADMIN_LEVELS)
#: The output columns of :func:`locate_points`, coarse to fine.
CODE_COLUMNS: tuple[str, ...] = tuple(f"{level}_code" for level in LEVELS)
#: The output columns of :func:`h3_cells`.
H3_COLUMNS: tuple[str, ...] = tuple(f"h3_r{res}" for res in H3_RESOLUTIONS)

#: Length of a unit grid's code: community (12) + a 2-4 digit serial (``core.admin_unit`` admin_unit_shape).
GRID_CODE_LENGTHS: tuple[int, ...] = (14, 15, 16)

#: What :meth:`AdminIndex.from_engine` reads; a constant, no user input reaches it.
ADMIN_UNIT_SQL = "SELECT code, level, geom FROM core.admin_unit ORDER BY level, code"

_FINEST_RESOLUTION = max(H3_RESOLUTIONS)
#: Cells per side of the grid that orders points before a query (about 20 m for a 40 km city).
_SORT_CELLS = 2048


# --------------------------------------------------------------------------------------------------------
# Admin units


@dataclass(frozen=True)
class LevelIndex:
    """The units of one level: an STRtree over their geometries, in code order.

    ``codes[i]`` is the code of ``tree.geometries[i]``; the units are sorted by code before the tree is
    built, so the smallest tree index among several hits is the smallest code.  ``offset`` is where the
    level's units start in :attr:`AdminIndex.columns`.
    """

    level: str
    codes: ObjectArray
    tree: shapely.STRtree
    offset: int

    def __len__(self) -> int:
        return len(self.codes)


@dataclass(frozen=True)
class AdminIndex:
    """The admin units of the city in memory, one :class:`LevelIndex` per level (possibly empty).

    The units of all levels are numbered one after the other (level by level, coarse to fine, each in code
    order); ``columns`` maps each of :data:`CODE_COLUMNS` to the codes of each unit's ancestors in that
    numbering (None where the unit is coarser than the column), plus one final None, so that locating is a
    single gather per column and unit number -1 ("nowhere") reads as None.  ``bounds`` is (min_lon,
    min_lat, max_lon, max_lat) of all units, None for an empty index.
    """

    levels: Mapping[str, LevelIndex]
    columns: Mapping[str, ObjectArray] = field(repr=False)
    bounds: tuple[float, float, float, float] | None = None
    _arrow_columns: dict[str, pa.Array] = field(default_factory=dict, repr=False, compare=False)

    def arrow_column(self, column: str) -> pa.Array:
        """``columns[column]`` as an arrow string array, made once per index."""
        if column not in self._arrow_columns:
            self._arrow_columns[column] = pa.array(self.columns[column], type=pa.string(), from_pandas=True)
        return self._arrow_columns[column]

    @classmethod
    def from_frame(cls, units: gpd.GeoDataFrame | pd.DataFrame) -> AdminIndex:
        """Build from a frame with columns ``code``, ``level`` and a polygonal geometry in EPSG:4326.

        The geometry is the frame's active geometry (``geometry`` or, from PostGIS, ``geom``).  A frame
        without a CRS is taken to be EPSG:4326, the store's; any other CRS is an error, as are duplicate
        codes, codes that do not fit their level, and missing, empty, invalid or non-polygonal geometries.
        The frame's geometry objects are prepared in place (GEOS prepared geometries, for fast
        point-in-polygon tests); that changes nothing about them but their memory use.
        """
        if isinstance(units, gpd.GeoDataFrame):
            if units.crs is not None and units.crs.to_epsg() != 4326:
                raise ValueError(f"admin units must be in EPSG:4326, got {units.crs.to_string()}")
            geometry = np.asarray(units.geometry.array, dtype=object)
        elif "geometry" in units.columns:
            geometry = np.asarray(units["geometry"], dtype=object)
        else:
            raise ValueError("admin units need a geometry column")
        missing = [col for col in ("code", "level") if col not in units.columns]
        if missing:
            raise ValueError(f"admin units lack column(s) {', '.join(missing)}")

        codes = np.asarray(units["code"].astype(str), dtype=object)
        levels = np.asarray(units["level"].astype(str), dtype=object)
        _check_units(codes, levels, geometry)

        by_level: dict[str, LevelIndex] = {}
        numbered: list[ObjectArray] = []
        offset = 0
        for level in LEVELS:
            mask = levels == level
            order = np.argsort(codes[mask].astype(str), kind="stable")
            level_codes = codes[mask][order]
            level_geometry = geometry[mask][order]
            shapely.prepare(level_geometry)  # in place: for intersects_xy's fast path (see _first_hit)
            by_level[level] = LevelIndex(level, level_codes, shapely.STRtree(level_geometry), offset)
            numbered.append(level_codes)
            offset += len(level_codes)
        all_codes = [*np.concatenate([*numbered, np.empty(0, dtype=object)]).tolist(), None]
        columns: dict[str, ObjectArray] = {}
        for level, column in zip(LEVELS, CODE_COLUMNS, strict=True):
            lengths = GRID_CODE_LENGTHS if level == "grid" else (ADMIN_CODE_LENGTHS[level],)
            columns[column] = np.array(
                [
                    code[: lengths[-1]] if code is not None and len(code) >= lengths[0] else None
                    for code in all_codes
                ],
                dtype=object,
            )
        bounds = None
        if len(geometry):
            x0, y0, x1, y1 = (float(v) for v in shapely.total_bounds(geometry))
            bounds = (x0, y0, x1, y1)
        return cls(by_level, columns, bounds)

    @classmethod
    def from_engine(cls, conn: Any) -> AdminIndex:
        """Build from ``core.admin_unit``; ``conn`` is a SQLAlchemy Connection or Engine."""
        units = gpd.read_postgis(ADMIN_UNIT_SQL, conn, geom_col="geom")
        return cls.from_frame(units)

    def __len__(self) -> int:
        return sum(len(level) for level in self.levels.values())


def _check_units(codes: ObjectArray, levels: ObjectArray, geometry: ObjectArray) -> None:
    """Raise ValueError naming the first offending unit, if any."""
    unknown = sorted(set(levels.tolist()) - set(LEVELS))
    if unknown:
        raise ValueError(f"unknown admin level(s): {', '.join(unknown)}")
    for code, level in zip(codes.tolist(), levels.tolist(), strict=True):
        lengths = GRID_CODE_LENGTHS if level == "grid" else (ADMIN_CODE_LENGTHS[level],)
        if not code.isascii() or not code.isdigit() or len(code) not in lengths:
            raise ValueError(f"admin unit code {code!r} does not fit level {level!r}")
    unique, counts = np.unique(codes.astype(str), return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"duplicate admin unit code {unique[counts > 1][0]!r}")
    bad = shapely.is_missing(geometry) | shapely.is_empty(geometry)
    bad |= ~np.isin(shapely.get_type_id(geometry), (3, 6))  # Polygon, MultiPolygon
    bad |= ~shapely.is_valid(geometry)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"admin unit {codes[first]!r} has a missing, empty, invalid or non-polygonal geometry"
        )


# --------------------------------------------------------------------------------------------------------
# Locating


def _as_coordinates(lon: npt.ArrayLike, lat: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    x = np.asarray(lon, dtype=np.float64)
    y = np.asarray(lat, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"lon and lat must be 1-D arrays of one length, got shapes {x.shape} and {y.shape}")
    return x, y


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a million shapely points are made and queried.

    Every new geometry is a GC-tracked Python object, so making 1M of them sets off repeated full
    collections that walk all of them: measured 0.65 s for ``shapely.points`` on 1M points with the
    collector on, 0.34 s with it off.  Nothing made here holds a reference cycle, so nothing is lost; the
    collector is switched back on (if it was on) as soon as the block ends, even on error.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _first_hit(level: LevelIndex, points: ObjectArray, x: FloatArray, y: FloatArray) -> npt.NDArray[np.intp]:
    """Per point, the tree index of the unit it intersects with the smallest code; -1 for none.

    ``x`` and ``y`` are the points' coordinates.  This is ``level.tree.query(points,
    predicate="intersects")`` done in two vectorised steps, with the same result: the tree gives the units
    whose bounding box holds the point, then :func:`shapely.intersects_xy` tests the point against those
    units, which were prepared at build time.  ``intersects_xy`` on a prepared polygon is GEOS's fast
    point-in-polygon path (no point geometry, indexed segments); the predicate query goes through the
    general prepared-intersects machinery.  Measured on 1M points and 20,000 irregular 20-vertex grids:
    0.6 s against 1.2 s.
    """
    hit = np.full(len(points), -1, dtype=np.intp)
    if not len(level) or not len(points):
        return hit
    point_idx, unit_idx = level.tree.query(points)
    inside = shapely.intersects_xy(level.tree.geometries[unit_idx], x[point_idx], y[point_idx])
    point_idx, unit_idx = point_idx[inside], unit_idx[inside]
    if not len(point_idx):
        return hit
    if np.bincount(point_idx, minlength=len(points)).max() == 1:  # the usual case: no point on an edge
        hit[point_idx] = unit_idx
        return hit
    sentinel = np.iinfo(np.intp).max
    hit[:] = sentinel
    np.minimum.at(hit, point_idx, unit_idx)  # smallest tree index = smallest code (sorted at build)
    hit[hit == sentinel] = -1
    return hit


def _spatial_order(index: AdminIndex, x: FloatArray, y: FloatArray) -> npt.NDArray[np.intp]:
    """An order of the points that follows space: by column strip of the city's extent, then by row.

    The point-in-polygon tests are the cost of a query, and they are memory-bound: in random order each
    point touches a different polygon, in spatial order neighbours test the same few polygons while they are
    in the CPU cache.  Measured for the whole of :func:`locate_points` on 1M points and 20,000 irregular
    20-vertex grids: 4.6 s in input (random) order, 1.4 s sorted, the sort itself 0.1 s.  Strips rather
    than a Morton curve because that is how an STRtree lays out its leaves.  The cells come from the
    index's extent, not the points', so that a few points far outside cannot squash the city into one
    cell; outside points are clamped to the edges.
    """
    if index.bounds is None or len(x) < 2:
        return np.arange(len(x))
    x0, y0, x1, y1 = index.bounds
    cells = _SORT_CELLS
    kx = np.clip((x - x0) * (cells / max(x1 - x0, 1e-9)), 0, cells - 1).astype(np.int64)
    ky = np.clip((y - y0) * (cells / max(y1 - y0, 1e-9)), 0, cells - 1).astype(np.int64)
    return np.argsort(kx * cells + ky)


def locate_units(index: AdminIndex, lon: npt.ArrayLike, lat: npt.ArrayLike) -> IntArray:
    """The finest unit containing each point (EPSG:4326), as its number in ``index.columns``; -1 where none.

    Points with a NaN or infinite coordinate are nowhere (-1).  :func:`locate_points` turns the numbers
    into codes; :func:`unit_codes` into arrow text columns without a Python string per row.
    """
    x, y = _as_coordinates(lon, lat)
    unit = np.full(len(x), -1, dtype=np.intp)  # per point, its unit's number in index.columns; -1 nowhere
    remaining = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    remaining = remaining[_spatial_order(index, x[remaining], y[remaining])]
    with _gc_paused():
        px, py = x[remaining], y[remaining]
        points = shapely.points(px, py)
        for level in reversed(LEVELS):  # finest first
            if not len(remaining):
                break
            level_index = index.levels[level]
            hit = _first_hit(level_index, points, px, py)
            found = hit >= 0
            if found.any():
                unit[remaining[found]] = level_index.offset + hit[found]
                remaining, points, px, py = remaining[~found], points[~found], px[~found], py[~found]
        del points
    return unit


def unit_codes(index: AdminIndex, units: IntArray, column: str) -> pa.Array:
    """The ``column`` code (:data:`CODE_COLUMNS`) of each unit number from :func:`locate_units`, as an arrow
    string array (null for -1 and for units coarser than the column): one gather from the few distinct
    codes, instead of a million Python strings."""
    codes = index.arrow_column(column)
    return codes.take(pa.array(np.where(units < 0, len(codes) - 1, units), type=pa.int64()))


def locate_points(index: AdminIndex, lon: npt.ArrayLike, lat: npt.ArrayLike) -> pd.DataFrame:
    """District, street, community and grid code of each point (EPSG:4326), None where there is none.

    Returns a frame with one row per point, in input order, and the columns :data:`CODE_COLUMNS` of object
    dtype.  The codes of a row are always prefix-consistent.  Points outside every district, and points
    with a NaN or infinite coordinate, get None in every column.
    """
    unit = locate_units(index, lon, lat)
    # dtype=object explicitly: pandas 3 would infer its string dtype, with NaN rather than None.
    return pd.DataFrame(
        {col: index.columns[col][unit] for col in CODE_COLUMNS}, columns=list(CODE_COLUMNS), dtype=object
    )


def representative_points(geoms: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """lon, lat of :func:`shapely.point_on_surface` per geometry; NaN for missing or empty geometries."""
    geometry = np.asarray(geoms, dtype=object)
    if geometry.ndim != 1:
        raise ValueError(f"geoms must be a 1-D array, got shape {geometry.shape}")
    x = np.full(len(geometry), np.nan)
    y = np.full(len(geometry), np.nan)
    present = ~(shapely.is_missing(geometry) | shapely.is_empty(geometry))
    if present.any():
        points = shapely.point_on_surface(geometry[present])
        x[present] = shapely.get_x(points)
        y[present] = shapely.get_y(points)
    return x, y


def locate_geometries(index: AdminIndex, geoms: npt.ArrayLike) -> pd.DataFrame:
    """Locate lines and polygons (or collections of both) by one representative point each.

    Why one point, and why :func:`shapely.point_on_surface`:

    * Each row stores a single unit per level (``grid_code`` is one column), so a road or a green that
      spans several grids must be assigned to one of them; one point gives exactly one answer, by the same
      rules (and the same tie-break on shared edges) as :func:`locate_points`, at the same vectorised speed.
      Overlap-area majorities would cost an overlay per feature and mean nothing for lines.
    * The centroid is not good enough: it can lie *off* the geometry -- the centroid of a curved road, a
      U-shaped building block or a ring-shaped park falls in a neighbouring grid, or outside the city
      altogether, and the feature would be filed under a unit it does not touch, or rejected.
      ``point_on_surface`` (GEOS InteriorPoint) is guaranteed to lie on the geometry: inside a polygon's
      area (near the middle of its widest horizontal run), on a line at the vertex nearest its centroid;
      for a mixed collection it uses the highest-dimension parts.  So the unit found is always one the
      feature really touches, and the answer is deterministic.

    Missing or empty geometries get None in every column.
    """
    x, y = representative_points(geoms)
    return locate_points(index, x, y)


def in_extent(lon: npt.ArrayLike, lat: npt.ArrayLike, bbox: Sequence[float]) -> BoolArray:
    """True where (lon, lat) lies inside ``bbox`` = (min_lon, min_lat, max_lon, max_lat), edges included.

    NaN coordinates are outside.  A cheap pre-filter before :func:`locate_points`.
    """
    x, y = _as_coordinates(lon, lat)
    min_x, min_y, max_x, max_y = (float(v) for v in bbox)
    if not (min_x <= max_x and min_y <= max_y):
        raise ValueError(f"bbox must be (min_lon, min_lat, max_lon, max_lat), got {tuple(bbox)}")
    return (x >= min_x) & (x <= max_x) & (y >= min_y) & (y <= max_y)


# --------------------------------------------------------------------------------------------------------
# H3

# H3 index layout (64 bits): bit 63 reserved (0), 59-62 mode, 56-58 reserved, 52-55 resolution, 45-51 base
# cell, then 15 digits of 3 bits, resolution 1 in bits 42-44 down to resolution 15 in bits 0-2.  Digits
# finer than the cell's resolution are 7 (0b111).
_RES_SHIFT = np.uint64(52)
_RES_MASK = np.uint64(0xF) << _RES_SHIFT


def _unused_digits(res: int) -> np.uint64:
    """All bits of the digits finer than ``res``: 3 bits per resolution from res + 1 to 15."""
    return np.uint64((1 << (3 * (15 - res))) - 1)


def h3_parents(cells: npt.ArrayLike, res: int) -> IntArray:
    """The parents at resolution ``res`` of valid H3 cells of resolution >= ``res``, as int64.

    Pure bit arithmetic, equal to :func:`h3.cell_to_parent`: set the resolution field and fill the digits
    finer than ``res`` with 7.  The input's resolution is not checked (that would cost a pass through h3).
    """
    if not 0 <= res <= 15:
        raise ValueError(f"H3 resolution must be 0-15, got {res}")
    u = np.asarray(cells).astype(np.int64, copy=False).view(np.uint64)
    parents = (u & ~_RES_MASK) | (np.uint64(res) << _RES_SHIFT) | _unused_digits(res)
    return parents.view(np.int64)


#: Resolution-10 cells of the located points, keyed by lattice position and remembered across batches
#: and loads of this process (see etl.h3lattice; a cell's key never changes, so the memory cannot go stale).
_FINEST_CELLS = LatticeCells(_FINEST_RESOLUTION)


def h3_cells(lon: npt.ArrayLike, lat: npt.ArrayLike) -> pd.DataFrame:
    """H3 cells of each point at :data:`geodata.codes.H3_RESOLUTIONS`, int64 columns ``h3_r7`` .. ``h3_r10``.

    Raises ValueError if a coordinate is not finite or a latitude is outside [-90, 90]: the caller must
    reject those rows first (there is no "no cell" value in an int64 column).
    """
    x, y = _as_coordinates(lon, lat)
    bad = ~(np.isfinite(x) & np.isfinite(y) & (np.abs(y) <= 90.0))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{int(bad.sum())} point(s) without valid coordinates, first at {first}")
    finest = _FINEST_CELLS(y, x).view(np.int64)
    columns = {
        f"h3_r{res}": finest if res == _FINEST_RESOLUTION else h3_parents(finest, res)
        for res in H3_RESOLUTIONS
    }
    return pd.DataFrame(columns, columns=list(H3_COLUMNS))


def h3_to_str(cells: npt.ArrayLike) -> ObjectArray:
    """H3 indexes (int64 or uint64) as h3's lowercase hex strings; 0 (H3_NULL) becomes None."""
    u = np.asarray(cells).astype(np.int64, copy=False).view(np.uint64)
    return np.array([format(c, "x") if c else None for c in u.tolist()], dtype=object)


def str_to_h3(strings: Iterable[str | None]) -> IntArray:
    """Hex strings to int64 H3 indexes; None becomes 0.  ValueError for anything not a valid H3 cell."""
    values = list(strings)
    out = np.zeros(len(values), dtype=np.int64)
    is_valid = h3_int.is_valid_cell
    for i, s in enumerate(values):
        if s is None:
            continue
        try:
            cell = int(s, 16)
        except (TypeError, ValueError):
            cell = -1
        if cell < 0 or not is_valid(cell):
            raise ValueError(f"not an H3 cell: {s!r} (at {i})")
        out[i] = cell
    return out
