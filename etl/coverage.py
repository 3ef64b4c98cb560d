"""Camera coverage: field-of-view sectors, coverage and blind spots per grid, points in view, new sites.

Pure functions on numpy arrays and (Geo)DataFrames -- no database.  The ETL derives ``core.camera.coverage``
with :func:`camera_sectors` and stores the per-grid figures of :func:`grid_coverage`; the pages count the
cases lying in blind spots with :func:`points_covered` and propose new camera sites with
:func:`greedy_camera_sites`.  Everything stored or returned is WGS 84 (EPSG:4326); lengths and areas are
computed in the city's metric CRS (``Settings.metric_crs``, default EPSG:4548, CGCS2000 3-degree
Gauss-Krueger zone with central meridian 117E, right for Zibo).

Conventions
-----------
* A camera's view is a circular sector: apex at the camera, centred on ``heading_deg`` (compass degrees:
  0 = true north, 90 = east, clockwise), opening ``fov_deg``, radius ``range_m`` (metres on the ground).
  ``fov_deg >= 360`` is a full disc (dome / PTZ cameras; their heading is then ignored and may be NaN).
* Sectors are built in the metric CRS around each camera's *local ground frame*: the east and north unit
  vectors at the camera are taken from the projection itself (finite differences of one forward transform),
  so the heading is measured from true north, not grid north (the meridian convergence of a Gauss-Krueger
  zone is up to about 1 degree at its edge), and ``range_m`` is ground metres whatever the projection's
  scale factor.  The arc is a polyline with vertices on the true circle (an inscribed polygon: its area is
  at most 0.2 % below the ideal sector with the default ``segments=16``).  Rings are counter-clockwise.
* Indoor cameras (kitchen feeds) have no coverage: pass None for them.  Every function here ignores None,
  empty and non-areal sector geometries.

Performance (a shared 2-vCPU container; tests/test_coverage.py's scale test prints them): 10,000 sectors
build in ~0.2 s; coverage of 20,000 grids x 10,000 cameras takes ~1.5-2.5 s; 1,000,000 points against
10,000 sectors ~1 s; 50 greedy sites from 2,000 candidates and 100,000 cases ~0.3 s.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely
from pyproj import CRS, Transformer

__all__ = [
    "DEFAULT_METRIC_CRS",
    "camera_sectors",
    "greedy_camera_sites",
    "grid_coverage",
    "points_covered",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
GeometryArray = npt.NDArray[np.object_]

WGS84 = 4326
#: CGCS2000 / 3-degree Gauss-Krueger CM 117E: the default of ``Settings.metric_crs``.
DEFAULT_METRIC_CRS = 4548

# GRS 80 / WGS 84 ellipsoid (the two differ by 0.1 mm in the semi-minor axis; CGCS2000 uses GRS 80).
_A = 6378137.0
_E2 = 0.00669438002290
# Length, in ground metres, of the finite-difference steps that give the local east/north frame.
_FRAME_STEP_M = 1.0
# Points are tested against the sectors in chunks of this many, to bound the memory of the index pairs.
_POINT_CHUNK = 250_000


# --- CRS plumbing ----------------------------------------------------------------------------------------


@lru_cache(maxsize=32)
def _transformer(source: int, target: int) -> Transformer:
    """A cached lon/lat-ordered transformer (building one costs milliseconds of database look-ups)."""
    return Transformer.from_crs(CRS.from_epsg(source), CRS.from_epsg(target), always_xy=True)


@lru_cache(maxsize=32)
def _check_metric_crs(code: int) -> int:
    """``code`` if it is a projected CRS in metres, else ValueError (areas in degrees are meaningless)."""
    crs = CRS.from_epsg(int(code))
    units = {axis.unit_name for axis in crs.axis_info}
    if not crs.is_projected or not units <= {"metre", "meter"}:
        raise ValueError(f"metric_crs EPSG:{code} is not a projected CRS in metres")
    return int(code)


def _floats(*arrays: Any) -> list[FloatArray]:
    """Float64 1-D copies of the inputs, broadcast to one length (scalars and lists accepted)."""
    converted = [np.asarray(a, dtype=np.float64) for a in arrays]
    return [np.array(a, dtype=np.float64).reshape(-1) for a in np.broadcast_arrays(*converted)]


def _local_frame(lon: FloatArray, lat: FloatArray, metric_crs: int) -> tuple[FloatArray, ...]:
    """Each point projected, and the projected displacement of one ground metre east and north there.

    Returns ``x, y, xe, ye, xn, yn``: (xe, ye) is where 1 m east moves the point in the metric CRS, (xn, yn)
    1 m north.  One forward transform of 3n points; accurate to ~1e-7 for any smooth projection, so it folds
    in the meridian convergence (grid north vs true north) and the scale factor, even for non-conformal
    projections (to first order over a camera's range, which is at most a few kilometres).
    """
    phi = np.radians(lat)
    w = np.sqrt(1.0 - _E2 * np.sin(phi) ** 2)
    meridian_radius = _A * (1.0 - _E2) / w**3
    normal_radius = _A / w
    d_lat = np.degrees(_FRAME_STEP_M / meridian_radius)
    d_lon = np.degrees(_FRAME_STEP_M / (normal_radius * np.cos(phi)))
    n = lon.size
    x, y = _transformer(WGS84, metric_crs).transform(
        np.concatenate([lon, lon + d_lon, lon]), np.concatenate([lat, lat, lat + d_lat])
    )
    x, y = np.asarray(x), np.asarray(y)
    x0, y0 = x[:n], y[:n]
    return (
        x0,
        y0,
        (x[n : 2 * n] - x0) / _FRAME_STEP_M,
        (y[n : 2 * n] - y0) / _FRAME_STEP_M,
        (x[2 * n :] - x0) / _FRAME_STEP_M,
        (y[2 * n :] - y0) / _FRAME_STEP_M,
    )


def _transform(geoms: GeometryArray, source: int, target: int) -> GeometryArray:
    """All vertices of all geometries through one transformer call; None stays None."""
    if source == target or geoms.size == 0:
        return geoms
    transformer = _transformer(source, target)

    def xy(x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
        return transformer.transform(x, y)

    return shapely.transform(geoms, xy, interleaved=False)


def _geometries(geoms: Any, target: int) -> GeometryArray:
    """A 1-D object array of shapely geometries (or None) in EPSG:``target``.

    A GeoSeries/GeoDataFrame with a CRS is converted from that CRS; anything else (arrays, lists, a
    GeoSeries without CRS) is taken to be WGS 84.  Invalid geometries are repaired with make_valid.
    """
    if isinstance(geoms, gpd.GeoDataFrame):
        geoms = geoms.geometry
    if isinstance(geoms, gpd.GeoSeries):
        if geoms.crs is not None and geoms.crs.to_epsg() != WGS84:
            geoms = geoms.to_crs(target)
            arr = np.asarray(geoms.array, dtype=object).reshape(-1)
            return _repaired(arr)
        geoms = geoms.array
    arr = np.asarray(geoms, dtype=object).reshape(-1)
    return _repaired(_transform(arr, WGS84, target))


def _repaired(arr: GeometryArray) -> GeometryArray:
    invalid = ~shapely.is_valid(arr) & ~shapely.is_missing(arr)
    if invalid.any():
        arr = arr.copy()
        arr[invalid] = shapely.make_valid(arr[invalid])
    return arr


def _areal(arr: GeometryArray) -> GeometryArray:
    """The polygons and multipolygons with positive area (drops None, empty, points and lines)."""
    with np.errstate(invalid="ignore"):
        return arr[shapely.area(arr) > 0]


# --- sectors ---------------------------------------------------------------------------------------------


def camera_sectors(
    lon: npt.ArrayLike,
    lat: npt.ArrayLike,
    heading_deg: npt.ArrayLike,
    fov_deg: npt.ArrayLike,
    range_m: npt.ArrayLike,
    metric_crs: int = DEFAULT_METRIC_CRS,
    segments: int = 16,
) -> GeometryArray:
    """Each camera's field of view as a WGS 84 polygon: a circular sector, or a disc when fov >= 360.

    Inputs broadcast against each other (scalars and arrays mix).  The apex is the camera; the sector is
    centred on ``heading_deg`` (compass: 0 = north, 90 = east, clockwise), opens ``fov_deg`` and reaches
    ``range_m`` ground metres.  The arc has ``ceil(segments * fov / 90)`` segments, at least 3 (a disc has
    ``4 * segments``).  Built in ``metric_crs`` in the camera's local east/north frame (see the module
    notes), then transformed back to WGS 84.

    Vectorised: all vertices of all cameras are laid out in flat numpy arrays, projected with one
    transformer call each way, and assembled by :func:`shapely.linearrings`/:func:`shapely.polygons` with
    ragged indices -- no Python loop per camera.  Raises ValueError for a non-finite position or range, a
    non-positive field of view or range, or a missing heading on a camera that is not a dome.
    """
    metric_crs = _check_metric_crs(metric_crs)
    segments = int(segments)
    if segments < 1:
        raise ValueError("segments must be at least 1")
    lon, lat, heading, fov, rng = _floats(lon, lat, heading_deg, fov_deg, range_m)
    n = lon.size
    if n == 0:
        return np.empty(0, dtype=object)
    disc = fov >= 360.0
    with np.errstate(invalid="ignore"):
        bad = ~(
            np.isfinite(lon)
            & np.isfinite(lat)
            & (np.abs(lat) < 90.0)
            & np.isfinite(rng)
            & (rng > 0)
            & (fov > 0)
            & (np.isfinite(heading) | disc)
        )
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"camera {i}: cannot build a sector from lon={lon[i]}, lat={lat[i]}, heading={heading[i]}, "
            f"fov={fov[i]}, range={rng[i]} (finite position and range > 0, fov > 0, heading unless fov >= 360)"
        )
    heading = np.where(disc, 0.0, np.mod(heading, 360.0))
    half = np.where(disc, 180.0, fov / 2.0)
    n_seg = np.where(disc, 4 * segments, np.maximum(3, np.ceil(segments * fov / 90.0))).astype(np.int64)

    # Ragged layout.  A sector ring is apex, n_seg + 1 arc vertices, apex (closed); a disc ring is
    # n_seg + 1 arc vertices whose last repeats the first exactly (k wraps to 0).
    n_coords = np.where(disc, n_seg + 1, n_seg + 3)
    owner = np.repeat(np.arange(n), n_coords)
    starts = np.cumsum(n_coords) - n_coords
    pos = np.arange(owner.size) - starts[owner]
    o_disc, o_seg = disc[owner], n_seg[owner]
    k = np.where(o_disc, pos % o_seg, pos - 1)
    apex = ~o_disc & ((pos == 0) | (pos == n_coords[owner] - 1))
    # From heading + fov/2 down to heading - fov/2: decreasing bearings run counter-clockwise on the map.
    bearing = np.radians(heading[owner] + half[owner] - k * (2.0 * half[owner] / o_seg))
    radius = np.where(apex, 0.0, rng[owner])
    east, north = radius * np.sin(bearing), radius * np.cos(bearing)

    x0, y0, xe, ye, xn, yn = _local_frame(lon, lat, metric_crs)
    x = x0[owner] + xe[owner] * east + xn[owner] * north
    y = y0[owner] + ye[owner] * east + yn[owner] * north
    v_lon, v_lat = _transformer(metric_crs, WGS84).transform(x, y)
    rings = shapely.linearrings(np.column_stack([v_lon, v_lat]), indices=owner)
    return shapely.polygons(rings)


# --- coverage per grid -----------------------------------------------------------------------------------


def _subtract_sectors(
    grids: GeometryArray,
    sectors: GeometryArray,
    grid_idx: npt.NDArray[np.intp],
    sector_idx: npt.NDArray[np.intp],
) -> GeometryArray:
    """Each grid minus the sectors paired with it: the blind parts, in the grids' order.

    Successive vectorised differences: round r subtracts, from every grid that has an r-th sector, that
    sector -- one :func:`shapely.difference` call per round over all those grids (the number of rounds is
    the largest number of sectors on one grid), biggest sectors first so the remainders shrink fast, and
    grids already fully covered drop out.
    """
    blind = grids.copy()
    if not grid_idx.size:
        return blind
    order = np.lexsort((-shapely.area(sectors)[sector_idx], grid_idx))
    grid_idx, sector_idx = grid_idx[order], sector_idx[order]
    groups, first, counts = np.unique(grid_idx, return_index=True, return_counts=True)
    for r in range(int(counts.max())):
        active = counts > r
        g = groups[active]
        s = sectors[sector_idx[first[active] + r]]
        still_open = ~shapely.is_empty(blind[g])
        g, s = g[still_open], s[still_open]
        blind[g] = shapely.difference(blind[g], s)
    return blind


def _multipolygons(geoms: GeometryArray) -> GeometryArray:
    """Each geometry as a MultiPolygon of its polygon parts; None where it has none (empty or None)."""
    out = np.full(geoms.size, None, dtype=object)
    parts, index = shapely.get_parts(geoms, return_index=True)
    polygon = (shapely.get_type_id(parts) == shapely.GeometryType.POLYGON) & ~shapely.is_empty(parts)
    parts, index = parts[polygon], index[polygon]
    if parts.size:
        present, compact = np.unique(index, return_inverse=True)
        out[present] = shapely.multipolygons(parts, indices=compact)
    return out


def grid_coverage(
    grids: gpd.GeoDataFrame,
    sectors: Any,
    metric_crs: int = DEFAULT_METRIC_CRS,
) -> pd.DataFrame:
    """How much of each grid the cameras see, and the blind part, one row per grid in the grids' order.

    ``grids`` has a ``code`` column and polygon geometries (WGS 84 unless its CRS says otherwise);
    ``sectors`` is a GeoSeries, array or list of sector polygons (WGS 84; None for indoor cameras, which are
    ignored).  Returns a DataFrame (indexed like ``grids``) with

    * ``code``
    * ``area_m2``        the grid's area in ``metric_crs``
    * ``covered_m2``     area of the union of the sectors clipped to the grid -- overlapping cameras count once
    * ``covered_share``  covered_m2 / area_m2, in [0, 1]
    * ``camera_count``   how many sectors reach into the grid (their interiors meet; a sector only touching
      its boundary -- a camera on the grid line looking away -- does not count)
    * ``blind_geom``     the grid minus the covered part, a WGS 84 MultiPolygon; None when fully covered

    Method (chosen by measurement at 20,000 grids x 10,000 sectors, see the tests): an STRtree over the
    sectors gives the (grid, sector) pairs whose interiors meet (``intersects`` and not ``touches``); the
    blind part is then each grid minus its sectors by successive vectorised differences, one
    :func:`shapely.difference` call per round (see :func:`_subtract_sectors`), and the covered area is the
    grid's area minus the blind area.  That is one overlay per (grid, sector) pair; the alternatives --
    clipping each pair with :func:`shapely.intersection` then unioning the pieces per grid and subtracting,
    unioning the raw sectors per grid, or unioning all sectors city-wide and cutting the union by the grids
    -- need two or three overlays per pair or one huge polygon, and measured 1.5-4x slower.  (Threads do
    not help: shapely's difference did not run faster on two threads here.)
    """
    if "code" not in grids.columns:
        raise ValueError("grids needs a 'code' column")
    metric_crs = _check_metric_crs(metric_crs)
    grid_geoms = _geometries(grids, metric_crs)
    sector_geoms = _areal(_geometries(sectors, metric_crs))
    n = grid_geoms.size
    with np.errstate(invalid="ignore"):
        area = shapely.area(grid_geoms)

    camera_count = np.zeros(n, dtype=np.int64)
    if sector_geoms.size and n:
        grid_idx, sector_idx = shapely.STRtree(sector_geoms).query(grid_geoms, predicate="intersects")
        inside = ~shapely.touches(grid_geoms[grid_idx], sector_geoms[sector_idx])
        grid_idx, sector_idx = grid_idx[inside], sector_idx[inside]
        camera_count += np.bincount(grid_idx, minlength=n)
    else:
        grid_idx = sector_idx = np.empty(0, dtype=np.intp)
    blind = _subtract_sectors(grid_geoms, sector_geoms, grid_idx, sector_idx)
    # Grids no camera sees keep their stored geometry bit for bit; only the cut ones go back to WGS 84.
    blind_wgs84 = _geometries(grids, WGS84).copy()  # a copy: never write into the caller's frame
    cut = np.unique(grid_idx)
    blind_wgs84[cut] = _transform(blind[cut], metric_crs, WGS84)
    with np.errstate(invalid="ignore", divide="ignore"):
        covered_m2 = np.clip(area - shapely.area(blind), 0.0, None)
        share = np.clip(np.where(area > 0, covered_m2 / area, 0.0), 0.0, 1.0)
    return pd.DataFrame(
        {
            "code": grids["code"].to_numpy(),
            "area_m2": area,
            "covered_m2": covered_m2,
            "covered_share": share,
            "camera_count": camera_count,
            "blind_geom": _multipolygons(blind_wgs84),
        },
        index=grids.index,
    )


# --- points in view --------------------------------------------------------------------------------------


class _CellIndex:
    """A uniform-grid spatial hash of the sectors' bounding boxes, probed with bare x/y arrays.

    The cell side is the median bounding-box side of the sectors, so a sector sits in a handful of cells;
    only occupied cells are stored (sorted ids, searched with ``np.searchsorted``), so the memory is
    independent of the extent.  Probing needs no shapely Point objects (creating a million of them takes
    about as long as this whole lookup), which is why it beats ``STRtree.query(points)``.
    """

    def __init__(self, bounds: FloatArray) -> None:
        self.bounds = bounds
        sides = np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1])
        extent = max(np.ptp(bounds[:, [0, 2]]), np.ptp(bounds[:, [1, 3]]))
        # Never more than ~1e6 cells a side, whatever the spread of the cameras.
        self.size = float(max(np.median(sides), extent / 1e6, 1e-9))
        self.x0, self.y0 = float(bounds[:, 0].min()), float(bounds[:, 1].min())
        i0, j0 = self._ij(bounds[:, 0], bounds[:, 1])
        i1, j1 = self._ij(bounds[:, 2], bounds[:, 3])
        self.ncol = int(i1.max()) + 1
        width = i1 - i0 + 1
        count = width * (j1 - j0 + 1)
        owner = np.repeat(np.arange(bounds.shape[0]), count)
        local = np.arange(owner.size) - np.repeat(np.cumsum(count) - count, count)
        cell = (j0[owner] + local // width[owner]) * self.ncol + i0[owner] + local % width[owner]
        order = np.argsort(cell, kind="stable")
        cell, self.owner = cell[order], owner[order]
        self.cells, self.starts, self.counts = np.unique(cell, return_index=True, return_counts=True)

    def _ij(self, x: FloatArray, y: FloatArray) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        return (
            np.floor((x - self.x0) / self.size).astype(np.int64),
            np.floor((y - self.y0) / self.size).astype(np.int64),
        )

    def candidates(self, x: FloatArray, y: FloatArray) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        """(point, sector) index pairs whose sector bounding box contains the point."""
        i, j = self._ij(x, y)
        inside = (i >= 0) & (i < self.ncol) & (j >= 0)
        cell = np.where(inside, j * self.ncol + i, -1)
        slot = np.minimum(np.searchsorted(self.cells, cell), self.cells.size - 1)
        found = inside & (self.cells[slot] == cell)
        point = np.flatnonzero(found)
        slot = slot[point]
        count = self.counts[slot]
        entry = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        entry += np.repeat(self.starts[slot], count)
        point, sector = np.repeat(point, count), self.owner[entry]
        px, py, b = x[point], y[point], self.bounds[sector]
        in_box = (px >= b[:, 0]) & (px <= b[:, 2]) & (py >= b[:, 1]) & (py <= b[:, 3])
        return point[in_box], sector[in_box]


def points_covered(lon: npt.ArrayLike, lat: npt.ArrayLike, sectors: Any) -> BoolArray:
    """For each WGS 84 point, whether it lies inside (or on the edge of) any sector; None sectors ignored.

    Points with a non-finite coordinate are not covered.  Works in degrees: the sectors are stored in
    WGS 84 and inside-ness does not depend on the CRS.  Method: a uniform-grid hash of the sectors'
    bounding boxes (:class:`_CellIndex`) gives the (point, sector) candidate pairs with numpy alone, and
    one prepared :func:`shapely.intersects_xy` call per chunk of 250,000 points settles them.  Measured
    against ``STRtree.query(shapely.points(...), predicate="intersects")``, which gives the same answer,
    at 2-2.5x the speed (most of the STRtree route's time is creating the Point objects).
    """
    lon, lat = _floats(lon, lat)
    out = np.zeros(lon.size, dtype=bool)
    sector_geoms = _areal(_geometries(sectors, WGS84))
    finite = np.flatnonzero(np.isfinite(lon) & np.isfinite(lat))
    if not sector_geoms.size or not finite.size:
        return out
    index = _CellIndex(shapely.bounds(sector_geoms))
    fresh = ~shapely.is_prepared(sector_geoms)
    shapely.prepare(sector_geoms[fresh])
    try:
        for start in range(0, finite.size, _POINT_CHUNK):
            chunk = finite[start : start + _POINT_CHUNK]
            x, y = lon[chunk], lat[chunk]
            point, sector = index.candidates(x, y)
            hit = shapely.intersects_xy(sector_geoms[sector], x[point], y[point])
            out[chunk[point[hit]]] = True
    finally:
        shapely.destroy_prepared(sector_geoms[fresh])  # leave the caller's geometries as they came
    return out


# --- new sites -------------------------------------------------------------------------------------------


def greedy_camera_sites(
    candidate_lon: npt.ArrayLike,
    candidate_lat: npt.ArrayLike,
    uncovered_case_lon: npt.ArrayLike,
    uncovered_case_lat: npt.ArrayLike,
    range_m: float,
    k: int,
    metric_crs: int = DEFAULT_METRIC_CRS,
) -> pd.DataFrame:
    """Up to ``k`` candidate sites chosen greedily to cover the most uncovered cases (maximum coverage).

    Planning assumption: a new camera sees 360 degrees (a dome) out to ``range_m`` ground metres, so a
    candidate covers every case within ``range_m`` of it.  Each round picks the candidate adding the most
    cases not yet covered by the sites already picked (ties: the earlier candidate), so no case is counted
    twice; it stops early when no candidate adds a case.  Greedy is the classic (1 - 1/e)-approximation of
    maximum coverage.

    Returns a DataFrame with ``rank`` (1..), ``candidate`` (position in the candidate arrays), ``lon``,
    ``lat``, ``cases_added`` and ``cumulative`` (non-decreasing).  Points with non-finite coordinates are
    ignored.  Distances are Euclidean in ``metric_crs`` scaled by its local scale factor at each candidate
    (ground metres).  Vectorised: one STRtree query (``dwithin``) gives the (candidate, case) incidence
    pairs; each round is a numpy bincount over the pairs whose case is still uncovered.
    """
    metric_crs = _check_metric_crs(metric_crs)
    range_m = float(range_m)
    k = int(k)
    if not np.isfinite(range_m) or range_m <= 0:
        raise ValueError("range_m must be a positive number of metres")
    if k < 0:
        raise ValueError("k must be >= 0")
    c_lon, c_lat = _floats(candidate_lon, candidate_lat)
    u_lon, u_lat = _floats(uncovered_case_lon, uncovered_case_lat)
    columns = ["rank", "candidate", "lon", "lat", "cases_added", "cumulative"]
    c_ok = np.flatnonzero(np.isfinite(c_lon) & np.isfinite(c_lat) & (np.abs(c_lat) < 90))
    u_ok = np.flatnonzero(np.isfinite(u_lon) & np.isfinite(u_lat))
    if k == 0 or not c_ok.size or not u_ok.size:
        return _sites_frame([], columns)

    cx, cy, xe, ye, xn, yn = _local_frame(c_lon[c_ok], c_lat[c_ok], metric_crs)
    scale = np.sqrt(np.abs(xe * yn - xn * ye))  # projected metres per ground metre (areal scale ** 0.5)
    ux, uy = _transformer(WGS84, metric_crs).transform(u_lon[u_ok], u_lat[u_ok])
    q_idx, t_idx = pairs_within(cx, cy, range_m * scale, np.asarray(ux, dtype=np.float64),
                                np.asarray(uy, dtype=np.float64))
    cand, case = c_ok[q_idx], t_idx  # candidate in input numbering; case in u_ok numbering

    covered = np.zeros(u_ok.size, dtype=bool)
    rows: list[tuple[int, int, float, float, int, int]] = []
    cumulative = 0
    for rank in range(1, k + 1):
        if not cand.size:
            break
        gains = np.bincount(cand, minlength=c_lon.size)
        best = int(np.argmax(gains))  # first maximum: ties go to the earlier candidate
        added = int(gains[best])
        if added == 0:
            break
        covered[case[cand == best]] = True
        alive = ~covered[case]
        cand, case = cand[alive], case[alive]
        cumulative += added
        rows.append((rank, best, float(c_lon[best]), float(c_lat[best]), added, cumulative))
    return _sites_frame(rows, columns)


def pairs_within(cx: npt.NDArray[np.float64], cy: npt.NDArray[np.float64], radius: npt.NDArray[np.float64],
                 px: npt.NDArray[np.float64], py: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.intp],
                                                                                  npt.NDArray[np.intp]]:
    """Every (centre, point) pair with the point at most ``radius[centre]`` away (planar, same units).

    Why not an STRtree ``dwithin`` query: for a street's year of uncovered cases (a few hundred thousand
    points) building the tree's point objects and the tree itself took most of a second per request, while
    the geometry is only "points near points".  Here the points are bucketed once in square cells as wide as
    the largest radius, sorted by cell, and each centre reads the 3 x 3 cells around it by ``searchsorted``;
    the candidate pairs (about 9/pi of the true ones) are then kept by the exact distance, ``<=`` as
    ``dwithin`` does.  Pairs come sorted by centre, then by point number.
    """
    empty = (np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp))
    if not len(cx) or not len(px):
        return empty
    cell = float(np.max(radius))
    if not np.isfinite(cell) or cell <= 0:
        return empty
    x0, y0 = float(min(px.min(), cx.min())), float(min(py.min(), cy.min()))
    pcol = np.floor((px - x0) / cell).astype(np.int64)
    prow = np.floor((py - y0) / cell).astype(np.int64)
    width = int(max(pcol.max(), np.floor((cx.max() - x0) / cell))) + 3  # room for the column to the right
    pkey = (prow + 1) * width + (pcol + 1)
    order = np.argsort(pkey, kind="stable")
    sorted_keys = pkey[order]
    ccol = np.floor((cx - x0) / cell).astype(np.int64) + 1
    crow = np.floor((cy - y0) / cell).astype(np.int64) + 1
    centres, points = [], []
    for drow in (-1, 0, 1):
        for dcol in (-1, 0, 1):
            key = (crow + drow) * width + (ccol + dcol)
            lo = np.searchsorted(sorted_keys, key, side="left")
            hi = np.searchsorted(sorted_keys, key, side="right")
            counts = hi - lo
            total = int(counts.sum())
            if not total:
                continue
            centre = np.repeat(np.arange(len(cx)), counts)
            # positions lo[c], lo[c]+1, ..., hi[c]-1 for each centre, flattened
            starts = np.repeat(lo - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
            point = order[starts + np.arange(total)]
            near = (px[point] - cx[centre]) ** 2 + (py[point] - cy[centre]) ** 2 <= radius[centre] ** 2
            centres.append(centre[near])
            points.append(point[near])
    if not centres:
        return empty
    centre, point = np.concatenate(centres), np.concatenate(points)
    by = np.lexsort((point, centre))
    return centre[by].astype(np.intp), point[by].astype(np.intp)


def _sites_frame(rows: list[tuple[int, int, float, float, int, int]], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype(
        {
            "rank": "int64",
            "candidate": "int64",
            "lon": "float64",
            "lat": "float64",
            "cases_added": "int64",
            "cumulative": "int64",
        }
    )
