"""Conversion between WGS 84 and China's obfuscated map coordinates GCJ-02 and BD-09, vectorised on numpy.

Why this module exists
----------------------
Maps published in mainland China must, by regulation, show coordinates passed through a state-mandated
obfuscation ("加偏").  The result is **GCJ-02** (国测局坐标, colloquially 火星坐标 "Mars coordinates"), used by
Amap/Gaode, Tencent, Google Maps China and most Chinese apps.  Baidu adds a second, private shift on top of
GCJ-02 and calls the result **BD-09** (百度坐标).  A point taken from an Amap or Baidu export is therefore
off by a few hundred metres from its true WGS 84 position -- enough to put a manhole cover in the wrong
street -- and the ETL must undo the shift before anything is stored (the store is WGS 84 / EPSG:4326).

Why they are not EPSG systems
-----------------------------
GCJ-02 and BD-09 are not datums or map projections: they are WGS 84 longitude/latitude plus a deliberately
non-linear, non-geodetic "noise" offset (sums of sines of the coordinates) whose official definition is
secret.  There is no ellipsoid, no Helmert transform and no grid that describes them, so EPSG does not
register them and PROJ/pyproj cannot convert them.  What the industry uses -- and what this module
implements, written from the published formulas -- is the reverse-engineered GCJ-02 algorithm (first
circulated around 2010 and used unchanged by eviltransform, coordtransform, gcoord and others) and
Baidu's published GCJ-02 <-> BD-09 formula.  Agreement with the vendors' own converters is therefore
"as good as the de facto standard", typically sub-metre; it is not certified.

Design notes
------------
* Every function takes and returns float64 numpy arrays (scalars and lists are accepted and broadcast) and
  contains no Python loop over points: the ETL converts millions of points per batch.
* The forward GCJ-02 shift is not invertible in closed form.  The common one-step "subtract the shift
  evaluated at the shifted point" inverse is wrong by up to a few metres, so :func:`gcj02_to_wgs84` and
  :func:`bd09_to_gcj02` solve the exact inverse by fixed-point iteration (the shift varies slowly, so the
  iteration is a strong contraction and converges to < 1e-9 degrees in a handful of steps).
* Outside China's rough bounding box :data:`CHINA_BBOX` the GCJ-02 shift is not applied, exactly as the
  standard implementations do (coordinates outside China are not obfuscated).  The BD-09 formula is a
  plain smooth map and is applied everywhere, like the reference implementations do.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import shapely
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

__all__ = [
    "CHINA_BBOX",
    "bd09_to_gcj02",
    "bd09_to_wgs84",
    "gcj02_to_bd09",
    "gcj02_to_wgs84",
    "looks_swapped",
    "to_wgs84",
    "transform_geometries",
    "wgs84_to_bd09",
    "wgs84_to_gcj02",
]

FloatArray = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike
Converter = Callable[[FloatArray, FloatArray], tuple[FloatArray, FloatArray]]

#: (min_lon, min_lat, max_lon, max_lat) inside which GCJ-02 is applied.  This is the box used by the most
#: widely copied implementation (eviltransform); some libraries use the tighter 73.66..135.05 / 3.86..53.55.
#: Both contain all of mainland China, so the choice only matters for points far offshore or abroad.
CHINA_BBOX: tuple[float, float, float, float] = (72.004, 0.8293, 137.8347, 55.8271)

# Krasovsky 1940 ellipsoid, as hard-wired into the GCJ-02 algorithm (not WGS 84's: the algorithm's
# metre-to-degree conversion was written for the old Beijing 1954 ellipsoid and must be kept bit-for-bit).
_A = 6378245.0
_EE = 0.00669342162296594323
# Baidu's constant: pi * 3000 / 180.
_X_PI = np.pi * 3000.0 / 180.0

# Fixed-point iteration controls for the exact inverses.
_TOLERANCE_DEG = 1e-9  # about 0.1 mm on the ground
_MAX_ITERATIONS = 30


def _as_float_arrays(lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Float64 copies of the inputs broadcast to one shape, so callers may pass scalars, lists or arrays."""
    lon_arr, lat_arr = np.broadcast_arrays(
        np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    )
    return np.array(lon_arr, dtype=np.float64), np.array(lat_arr, dtype=np.float64)


def _in_china(lon: FloatArray, lat: FloatArray) -> npt.NDArray[np.bool_]:
    """True where the GCJ-02 shift applies; NaN compares False and so stays NaN-through-shift."""
    min_lon, min_lat, max_lon, max_lat = CHINA_BBOX
    return (lon >= min_lon) & (lon <= max_lon) & (lat >= min_lat) & (lat <= max_lat)


def _gcj02_shift(lon: FloatArray, lat: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The GCJ-02 offset (d_lon, d_lat) in degrees at WGS 84 position (lon, lat), ignoring the China box.

    The published algorithm builds two "metre-like" noise fields from sines of the position relative to
    (105E, 35N), then converts them to degrees with the Krasovsky meridian and prime-vertical radii at
    the point's latitude.
    """
    x = lon - 105.0
    y = lat - 35.0
    sqrt_abs_x = np.sqrt(np.abs(x))
    x_pi = x * np.pi
    y_pi = y * np.pi
    # Term shared by both fields.
    common = 20.0 * np.sin(6.0 * x_pi) + 20.0 * np.sin(2.0 * x_pi)

    field_lat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * sqrt_abs_x
    field_lat += (
        common
        + 20.0 * np.sin(y_pi)
        + 40.0 * np.sin(y_pi / 3.0)
        + 160.0 * np.sin(y_pi / 12.0)
        + 320.0 * np.sin(y_pi / 30.0)
    ) * (2.0 / 3.0)

    field_lon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * sqrt_abs_x
    field_lon += (
        common
        + 20.0 * np.sin(x_pi)
        + 40.0 * np.sin(x_pi / 3.0)
        + 150.0 * np.sin(x_pi / 12.0)
        + 300.0 * np.sin(x_pi / 30.0)
    ) * (2.0 / 3.0)

    rad_lat = np.radians(lat)
    w2 = 1.0 - _EE * np.sin(rad_lat) ** 2  # 1 - e^2 sin^2(phi)
    w = np.sqrt(w2)
    meridian_radius = _A * (1.0 - _EE) / (w2 * w)  # M
    prime_vertical_radius = _A / w  # N
    d_lat = field_lat * 180.0 / (meridian_radius * np.pi)
    d_lon = field_lon * 180.0 / (prime_vertical_radius * np.cos(rad_lat) * np.pi)
    return d_lon, d_lat


def wgs84_to_gcj02(lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """WGS 84 -> GCJ-02 (Amap/Tencent), in degrees; points outside :data:`CHINA_BBOX` come back unchanged.

    Used to check and to test the inverse; the ETL itself mostly goes the other way.
    """
    lon_arr, lat_arr = _as_float_arrays(lon, lat)
    d_lon, d_lat = _gcj02_shift(lon_arr, lat_arr)
    inside = _in_china(lon_arr, lat_arr)
    return np.where(inside, lon_arr + d_lon, lon_arr), np.where(inside, lat_arr + d_lat, lat_arr)


def _fixed_point_inverse(
    forward: Converter,
    target_lon: FloatArray,
    target_lat: FloatArray,
    start_lon: FloatArray,
    start_lat: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """Solve forward(p) == target for p by p <- p - (forward(p) - target), on whole arrays at once.

    ``forward`` is the identity plus a small, slowly varying offset, so this map is a contraction (factor
    of order 1e-3 to 1e-2) and every step gains about two decimal digits.  All points are updated together --
    extra steps on already-converged points only polish them -- and the loop stops as soon as every
    finite point moved by less than 1e-9 degrees, or after 30 steps.  NaNs stay NaN and do not block it.
    """
    lon_est, lat_est = start_lon.copy(), start_lat.copy()
    for _ in range(_MAX_ITERATIONS):
        f_lon, f_lat = forward(lon_est, lat_est)
        new_lon = lon_est - (f_lon - target_lon)
        new_lat = lat_est - (f_lat - target_lat)
        change = np.maximum(np.abs(new_lon - lon_est), np.abs(new_lat - lat_est))
        lon_est, lat_est = new_lon, new_lat
        # NaN >= tol is False, so missing coordinates never keep the loop alive.
        if not np.any(change >= _TOLERANCE_DEG):
            break
    return lon_est, lat_est


def _shift_everywhere(lon: FloatArray, lat: FloatArray) -> tuple[FloatArray, FloatArray]:
    """WGS 84 -> GCJ-02 without the China box, so the inverse iteration sees a smooth function."""
    d_lon, d_lat = _gcj02_shift(lon, lat)
    return lon + d_lon, lat + d_lat


def gcj02_to_wgs84(lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """GCJ-02 -> WGS 84, the exact inverse of :func:`wgs84_to_gcj02` (to < 1e-9 degrees, ~0.1 mm).

    The widespread one-step inverse (subtract the shift evaluated at the GCJ-02 point) leaves errors of
    up to a few metres; here the shift is inverted by fixed-point iteration instead.  Whether a point is
    "in China" is decided on the given GCJ-02 coordinates, as the standard implementations do; the
    iteration itself uses the unboxed shift so it cannot flip-flop at the box edge.
    """
    lon_arr, lat_arr = _as_float_arrays(lon, lat)
    inside = _in_china(lon_arr, lat_arr)
    if not np.any(inside):
        return lon_arr, lat_arr
    # Iterate only over the points that need it: abroad/NaN points are returned as given.
    g_lon, g_lat = lon_arr[inside], lat_arr[inside]
    d_lon, d_lat = _gcj02_shift(g_lon, g_lat)  # the one-step estimate is an excellent starting point
    w_lon, w_lat = _fixed_point_inverse(_shift_everywhere, g_lon, g_lat, g_lon - d_lon, g_lat - d_lat)
    out_lon, out_lat = lon_arr.copy(), lat_arr.copy()
    out_lon[inside], out_lat[inside] = w_lon, w_lat
    return out_lon, out_lat


def gcj02_to_bd09(lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """GCJ-02 -> BD-09 (Baidu), Baidu's published formula: a small polar perturbation plus a fixed offset.

    The radius (in degree space, about the origin) gets 2e-5*sin(lat*x_pi) added, the angle
    3e-6*cos(lon*x_pi), and the result is moved by (+0.0065, +0.006) degrees.
    """
    lon_arr, lat_arr = _as_float_arrays(lon, lat)
    z = np.hypot(lon_arr, lat_arr) + 0.00002 * np.sin(lat_arr * _X_PI)
    theta = np.arctan2(lat_arr, lon_arr) + 0.000003 * np.cos(lon_arr * _X_PI)
    return z * np.cos(theta) + 0.0065, z * np.sin(theta) + 0.006


def bd09_to_gcj02(lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """BD-09 -> GCJ-02, the exact inverse of :func:`gcj02_to_bd09`.

    Baidu's published inverse flips the signs of the perturbations but evaluates them at the wrong
    point, which leaves errors of up to about two decimetres; it is used here only as the starting guess for
    the same fixed-point iteration as :func:`gcj02_to_wgs84`.
    """
    lon_arr, lat_arr = _as_float_arrays(lon, lat)
    x = lon_arr - 0.0065
    y = lat_arr - 0.006
    z = np.hypot(x, y) - 0.00002 * np.sin(y * _X_PI)
    theta = np.arctan2(y, x) - 0.000003 * np.cos(x * _X_PI)
    return _fixed_point_inverse(gcj02_to_bd09, lon_arr, lat_arr, z * np.cos(theta), z * np.sin(theta))


def wgs84_to_bd09(lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """WGS 84 -> BD-09: Baidu's shift is defined on top of GCJ-02, so go through it."""
    return gcj02_to_bd09(*wgs84_to_gcj02(lon, lat))


def bd09_to_wgs84(lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """BD-09 -> WGS 84 via GCJ-02, both steps exact inverses."""
    return gcj02_to_wgs84(*bd09_to_gcj02(lon, lat))


def _identity(lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """WGS 84 and CGCS2000 input: only normalised to float64 arrays."""
    return _as_float_arrays(lon, lat)


# Accepted spellings, normalised by _normalise_name (upper case, '-', '_' and spaces removed).
_NAMED: dict[str, Converter] = {
    "GCJ02": gcj02_to_wgs84,
    "BD09": bd09_to_wgs84,
    "WGS84": _identity,
    "EPSG:4326": _identity,
    # CGCS2000 (China Geodetic Coordinate System 2000) is, like WGS 84, an ITRF-aligned geocentric
    # frame (ITRF97 at epoch 2000.0, versus ITRF2008-aligned WGS 84 G1762): the two agree to a few
    # centimetres at the same epoch, below the accuracy of any municipal source data.  Their ellipsoids
    # share the semi-major axis and differ in flattening by ~1e-12, i.e. < 0.1 mm in latitude.  PROJ
    # itself treats EPSG:4490 -> EPSG:4326 as a null ("ballpark") transformation, so a no-op is exact
    # with respect to pyproj and avoids a pointless pass over millions of points.
    "EPSG:4490": _identity,
    "CGCS2000": _identity,
}

_ACCEPTED_FORMS = (
    '"GCJ02"/"GCJ-02"/"gcj02", "BD09"/"BD-09"/"bd09", "EPSG:4326"/"WGS84"/4326, '
    '"EPSG:4490"/"CGCS2000", or any other EPSG code as "EPSG:<code>" or an int'
)


def _normalise_name(crs: str | int) -> str:
    """Canonical key for a CRS name: ints become "EPSG:<n>", strings are case- and dash-insensitive."""
    if isinstance(crs, bool):  # bool is an int subclass; True is not EPSG:1
        raise ValueError(f"Unknown CRS {crs!r}; accepted forms: {_ACCEPTED_FORMS}")
    if isinstance(crs, int | np.integer):
        return f"EPSG:{int(crs)}"
    if not isinstance(crs, str):
        raise ValueError(f"Unknown CRS {crs!r}; accepted forms: {_ACCEPTED_FORMS}")
    key = crs.strip().upper().replace("-", "").replace("_", "").replace(" ", "")
    if key.isdigit():
        return f"EPSG:{int(key)}"
    if key.startswith("EPSG:") and key[5:].isdigit():
        return f"EPSG:{int(key[5:])}"
    return key


@lru_cache(maxsize=64)
def _epsg_transformer(code: int) -> Transformer:
    """A cached EPSG:<code> -> EPSG:4326 transformer in lon/lat order.

    Building a Transformer costs milliseconds (database look-ups), far more than converting a batch, so it
    is built once per code.  pyproj >= 3.1 Transformers are safe to share between threads.
    """
    try:
        source = CRS.from_epsg(code)
    except CRSError as exc:
        raise ValueError(f"EPSG:{code} is not a known EPSG CRS; accepted forms: {_ACCEPTED_FORMS}") from exc
    return Transformer.from_crs(source, CRS.from_epsg(4326), always_xy=True)


def _converter(crs: str | int) -> Converter:
    """The function taking (x, y) in ``crs`` to WGS 84 (lon, lat); ValueError for unknown names."""
    key = _normalise_name(crs)
    named = _NAMED.get(key)
    if named is not None:
        return named
    if key.startswith("EPSG:") and key[5:].isdigit():
        transformer = _epsg_transformer(int(key[5:]))

        def via_pyproj(x: ArrayLike, y: ArrayLike) -> tuple[FloatArray, FloatArray]:
            x_arr, y_arr = _as_float_arrays(x, y)
            lon, lat = transformer.transform(x_arr, y_arr)
            return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)

        return via_pyproj
    raise ValueError(f"Unknown CRS {crs!r}; accepted forms: {_ACCEPTED_FORMS}")


def to_wgs84(lon: ArrayLike, lat: ArrayLike, crs: str | int) -> tuple[FloatArray, FloatArray]:
    """Convert (x, y) given in ``crs`` to WGS 84 (lon, lat) degrees -- the ETL's single reprojection entry.

    ``crs`` is one of "GCJ02"/"GCJ-02"/"gcj02", "BD09"/"BD-09"/"bd09", "EPSG:4326"/"WGS84"/4326 (no-op),
    "EPSG:4490"/"CGCS2000" (no-op, see the note on CGCS2000 in the source), or any other EPSG code
    ("EPSG:4548" or 4548), which goes through pyproj with lon/lat (x/y) axis order.  For projected EPSG
    systems ``lon``/``lat`` are easting/northing.  Anything else raises ValueError listing these forms,
    so a typo in an import preset fails loudly instead of storing points in the sea.
    """
    return _converter(crs)(lon, lat)


def transform_geometries(geoms: ArrayLike, crs: str | int) -> npt.NDArray[np.object_]:
    """Convert every vertex of an array of shapely geometries from ``crs`` to WGS 84.

    Uses :func:`shapely.transform`, which gathers all coordinates of all geometries into one array, calls
    the converter once, and writes them back -- so rings, holes, parts and their order are preserved and
    there is no per-geometry Python loop.  Z values, where present, pass through unchanged; None stays None.
    """
    convert = _converter(crs)  # validate the name even for an empty batch

    def xy_or_xyz(x: FloatArray, y: FloatArray, z: FloatArray | None = None) -> tuple[FloatArray, ...]:
        new_x, new_y = convert(x, y)
        return (new_x, new_y) if z is None else (new_x, new_y, z)

    geom_arr = np.asarray(geoms, dtype=object)
    return shapely.transform(geom_arr, xy_or_xyz, include_z=None, interleaved=False)


def looks_swapped(
    lon: ArrayLike, lat: ArrayLike, bbox: tuple[float, float, float, float]
) -> npt.NDArray[np.bool_]:
    """True where (lon, lat) is outside ``bbox`` = (minx, miny, maxx, maxy) but (lat, lon) is inside.

    Spreadsheets from district offices often have the longitude and latitude columns swapped; for a
    city's bbox the two readings are almost never both plausible, so this flags the rows to swap.
    Bounds are inclusive; NaN coordinates are never flagged.
    """
    lon_arr, lat_arr = _as_float_arrays(lon, lat)
    minx, miny, maxx, maxy = bbox

    def inside(x: FloatArray, y: FloatArray) -> npt.NDArray[np.bool_]:
        return (x >= minx) & (x <= maxx) & (y >= miny) & (y <= maxy)

    return ~inside(lon_arr, lat_arr) & inside(lat_arr, lon_arr)
