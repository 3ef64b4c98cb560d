"""Generate the demo city's source files: Zibo's 张店区 and 临淄区 as a command centre would hand them over.

Pure generation, no database: everything is derived from the shipped district boundaries
(``geodata/data/boundaries``, GCJ-02 as delivered), the generator inputs in ``geodata/data/demo_city.yaml``
(street names, codes and centres, calibration figures of the seed reports, tunables) and the category
dictionary (``categories_cjt214.csv``, ``deadlines.csv``, ``work_calendar_cn.csv``), deterministically from
a seed (numpy ``Generator`` streams, one per step and month) and a reference date.  The same inputs, seed
and reference date give byte-identical files.

What is written (in load order, listed in ``manifest.json`` with kind, CRS, encoding, mapping and layer):

* the district boundaries: the shipped GCJ-02 GeoJSON itself;
* streets and communities: a GeoPackage in CGCS2000 (EPSG:4490), one layer each.  Streets tile each
  district by a Voronoi diagram of their centres clipped to it, communities tile each street the same way
  (seeds relaxed a little, 社区 in the built-up core, 村 outside); stray fragments join the neighbour they
  share most border with, so every unit is one piece and the tiling is exact;
* unit grids: a Shapefile in Gauss-Krüger metres (EPSG:4548, the survey CRS) with a GBK ``.cpg``.  A
  lattice of ``core_cell_m`` squares covers the built-up core (discs round the street centres), a coarser
  one the rest, each clipped by its community so that no grid crosses a community line; slivers join a
  neighbour in the same community.  Codes are the community's code plus a serial numbered west to east and
  north to south (GB/T 30428.1);
* management grids (管理网格): a GeoJSON in GCJ-02 (drawn on an Amap map).  In the core, the unit grids of
  one community in blocks of 3 x 3, small blocks joined to a neighbour (4-12 unit grids each), named
  ``潘苑社区第3网格`` and coded community + 2-digit serial; outside the core, each community's coarse grids
  (its outskirts, or the whole 村) form one.  Every unit grid lies in exactly one;
* components: a GeoPackage in CGCS2000 with layers of points, lines (railings) and polygons (green
  space), 16-digit codes (district + major + minor + serial), densities following the built-up core;
* cameras: an XLSX with Chinese headers in GCJ-02 (picked on an Amap map), 3,600 HD cameras and 326
  kitchen feeds in 闻韶街道, 300 monitors and an eagle eye in 潘苑社区, more across both districts;
* cases: one export per calendar month of the year ending the day before the reference date, in the
  common case-export columns (``etl/presets/cn_case_export.yaml``) -- GBK or UTF-8-with-BOM CSV, some
  months XLSX, coordinates in WGS 84 (patrol GPS) or, for the XLSX months, GCJ-02.  Each export shows the
  cases as they stood at its cut-off (the first instant of the next month); a last file re-exports the
  cases that moved on after their month's cut-off, as real exports do.  Reporters' personal data is
  plainly synthetic (测试/示例 names, 199-0000-xxxx phones, ID numbers of region 990000 born on 30 February).

The city size (10 million cases, 20,000+ grids, a million components) is streamed: cases are generated one
month at a time and written ``write_chunk_rows`` rows at a time, components in chunks too.
"""

from __future__ import annotations

import io
import itertools
import json
import shutil
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyogrio
import shapely
import yaml
from pyproj import Transformer
from shapely.errors import GEOSException

from etl.chinese_crs import transform_geometries, wgs84_to_gcj02
from etl.pipeline import file_sha256
from geodata.dictionaries import DATA_DIR, add_working_time, read_calendar, read_categories, read_deadlines
from geodata.errors import CityGridError

__all__ = [
    "CASE_HEADERS",
    "CITY_FILE",
    "MANIFEST_NAME",
    "METRIC_EPSG",
    "Ground",
    "SizeSpec",
    "as_exported",
    "build_ground",
    "build_management_grids",
    "generate",
    "generator_inputs",
    "month_cases",
    "read_city",
    "read_manifest",
    "size_spec",
]

#: The generator's inputs and the boundaries it builds on.
CITY_FILE = DATA_DIR / "demo_city.yaml"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "citygrid-demo/1"
Size = Literal["demo", "city"]
Progress = Callable[[str], None]

#: CGCS2000 / 3-degree Gauss-Krüger CM 117E: the survey CRS of Zibo, in which all shapes are built.
METRIC_EPSG = 4548
#: Overlay precision in metres: shapes are snap-rounded to a micrometre so that neighbours share edges
#: exactly (a tiling stays a tiling through clipping and merging), far below any figure that matters.
PRECISION = 1e-6
#: Points are kept this far inside their district so that rounding to 6 decimals (~0.1 m) and the
#: GCJ-02 round trip never move one out of the city or into the neighbouring district.
EDGE_MARGIN_M = 3.0
TIMEZONE = ZoneInfo("Asia/Shanghai")
#: Fixed timestamp for GeoPackage metadata, so that files are byte-identical between runs.
_FILE_TIMESTAMP = "2000-01-01T00:00:00.000Z"

CHANNEL_WORDS = {"patrol": "网格员上报", "citizen": "群众随手拍", "partner": "多元力量上报",
                 "hotline": "12345热线", "ai_camera": "视频AI识别"}
LEVEL_WORDS = {"grid": "网格", "community": "社区", "street": "街道", "district": "区", "city": "市级部门"}
CAMERA_WORDS = {"public_security": "公安监控", "community": "社区监控", "traffic": "交通监控",
                "urban_management": "城管监控", "kitchen": "明厨亮灶"}
STATE_WORDS = {"intact": "完好", "damaged": "破损", "occupied": "占用", "missing": "丢失", "unknown": "未知"}
#: GB/T 28181 industry code (行业编码) of a camera's 20-digit id by type.
_CAMERA_INDUSTRY = {"public_security": "00", "community": "01", "traffic": "04", "urban_management": "10",
                    "kitchen": "20"}

CASE_HEADERS = (
    "案件编号", "问题来源", "案件类型", "大类", "小类", "紧急程度", "问题描述", "地址", "经度", "纬度", "部件编码",
    "上报时间", "立案时间", "派遣时间", "处置时间", "结案时间", "作废时间", "评价时间", "处置时限", "结案时限",
    "是否延期", "回退次数", "返工次数", "是否自行处置", "解决层级", "处置部门", "满意度", "上报人", "联系电话", "身份证号",
)
STAGES = ("registered", "dispatched", "handled", "closed", "voided", "evaluated")


# =========================================================================================== inputs


@dataclass(frozen=True)
class SizeSpec:
    """How big the generated city is (from ``generator.sizes`` in demo_city.yaml)."""

    name: str
    cases: int
    components: int
    cameras_elsewhere: int
    core_cell_m: float
    outer_cell_m: float
    xlsx_months: tuple[int, ...]
    write_chunk_rows: int = 200_000

    def scaled(self, factor: float, **changes: Any) -> SizeSpec:
        """A smaller (or larger) variant, e.g. for tests: counts times ``factor``, other fields as given."""
        return replace(self, name=changes.pop("name", f"{self.name}x{factor:g}"), cases=round(self.cases * factor),
                       components=round(self.components * factor),
                       cameras_elsewhere=round(self.cameras_elsewhere * factor), **changes)


def read_city(path: Path = CITY_FILE) -> dict[str, Any]:
    """The demo city's inputs (demo_city.yaml) as a dict."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CityGridError(f"cannot read the demo city's inputs {path}: {exc}") from None


def size_spec(size: str, city: dict[str, Any] | None = None) -> SizeSpec:
    """The size ``demo`` or ``city`` as demo_city.yaml defines it."""
    gen = (city or read_city())["generator"]
    if size not in gen["sizes"]:
        raise CityGridError(f"unknown demo size {size!r}: one of {', '.join(gen['sizes'])}")
    s = gen["sizes"][size]
    return SizeSpec(name=size, cases=int(s["cases"]), components=int(s["components"]),
                    cameras_elsewhere=int(s["cameras_elsewhere"]), core_cell_m=float(s["core_cell_m"]),
                    outer_cell_m=float(s["outer_cell_m"]), xlsx_months=tuple(s.get("xlsx_months", ())),
                    write_chunk_rows=int(gen.get("write_chunk_rows", 200_000)))


def _rng(seed: int, step: str, index: int = 0) -> np.random.Generator:
    """An independent, reproducible stream per step (and month): adding a step never shifts another."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(zlib.crc32(step.encode()), index)))


def _weights(mapping: dict[Any, float]) -> tuple[list[Any], np.ndarray]:
    keys = list(mapping)
    w = np.array([float(mapping[k]) for k in keys])
    return keys, w / w.sum()


# ======================================================================================= coordinates

_TO_METRIC = Transformer.from_crs(4326, METRIC_EPSG, always_xy=True)
_TO_WGS84 = Transformer.from_crs(METRIC_EPSG, 4326, always_xy=True)


def _metric_xy(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = _TO_METRIC.transform(np.asarray(lon, float), np.asarray(lat, float))
    return np.asarray(x), np.asarray(y)


def _wgs84_xy(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lon, lat = _TO_WGS84.transform(np.asarray(x, float), np.asarray(y, float))
    return np.asarray(lon), np.asarray(lat)


def _to_metric(geoms: np.ndarray) -> np.ndarray:
    return shapely.transform(geoms, lambda xy: np.column_stack(_metric_xy(xy[:, 0], xy[:, 1])))


def _to_wgs84(geoms: np.ndarray) -> np.ndarray:
    return shapely.transform(geoms, lambda xy: np.column_stack(_wgs84_xy(xy[:, 0], xy[:, 1])))


# ========================================================================================== tiling


def _polygons(geom: shapely.Geometry) -> list[shapely.Polygon]:
    return [p for p in shapely.get_parts(geom) if p.geom_type == "Polygon" and p.area > 0]


def _shared_length(a: shapely.Geometry, others: np.ndarray) -> np.ndarray:
    return shapely.length(shapely.intersection(shapely.boundary(a), shapely.boundary(others)))


def _seeds_inside(region: shapely.Geometry, seeds: np.ndarray, margin: float) -> np.ndarray:
    """Seeds moved inside ``region`` (at least ``margin`` from its edge) and apart from each other."""
    inner = shapely.buffer(region, -margin)
    if inner.is_empty:
        inner = region
    out = seeds.astype(float).copy()
    for i, (x, y) in enumerate(out):
        point = shapely.Point(x, y)
        if not inner.contains(point):
            nearest = shapely.shortest_line(point, inner).coords[-1]
            out[i] = nearest
        for _ in range(50):  # two seeds on one spot would share one Voronoi cell
            if i == 0 or np.hypot(*(out[:i] - out[i]).T).min() > 1.0:
                break
            candidate = out[i] + (margin / 2, margin / 3)
            if inner.contains(shapely.Point(*candidate)):
                out[i] = candidate
            else:
                out[i] = out[i] - (margin / 2, margin / 3)
    return out


def _tile(region: shapely.Geometry, seeds: np.ndarray) -> np.ndarray:
    """Cut ``region`` into one connected polygon per seed: Voronoi cells clipped to it, fragments merged.

    A clipped cell can fall apart where the region is concave; the part holding the seed stays, the others
    join the neighbour they share the longest border with.  All overlays are snap-rounded to
    :data:`PRECISION`, so neighbours share edges exactly and the pieces tile the region.
    """
    if len(seeds) == 1:
        return np.array([shapely.set_precision(region, PRECISION)], dtype=object)
    points = shapely.points(seeds)
    x0, y0, x1, y1 = region.bounds
    frame = shapely.box(x0 - 10_000, y0 - 10_000, x1 + 10_000, y1 + 10_000)
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(points), extend_to=frame, ordered=True))
    pieces = shapely.intersection(cells, region, grid_size=PRECISION)
    kept = np.empty(len(seeds), dtype=object)
    orphans: list[shapely.Polygon] = []
    for i, piece in enumerate(pieces):
        parts = _polygons(piece)
        own = next((p for p in parts if p.intersects(points[i])), None) or max(parts, key=lambda p: p.area)
        kept[i] = own
        orphans.extend(p for p in parts if p is not own)
    while orphans:
        left: list[shapely.Polygon] = []
        for orphan in orphans:
            lengths = _shared_length(orphan, kept)
            j = int(np.argmax(lengths))
            if lengths[j] <= 0:
                left.append(orphan)
                continue
            kept[j] = shapely.union(kept[j], orphan, grid_size=PRECISION)
        if len(left) == len(orphans):
            raise CityGridError("internal error: a fragment of a tiling touches no neighbour")
        orphans = left
    return kept


def _sample_points(rng: np.random.Generator, region: shapely.Geometry, n: int) -> np.ndarray:
    """``n`` points uniformly inside ``region`` (rejection in its bounding box)."""
    shapely.prepare(region)
    x0, y0, x1, y1 = region.bounds
    out = np.empty((0, 2))
    while len(out) < n:
        xy = rng.uniform((x0, y0), (x1, y1), size=(max(64, 3 * (n - len(out))), 2))
        out = np.vstack([out, xy[shapely.contains_xy(region, xy[:, 0], xy[:, 1])]])
    return out[:n]


def _relaxed(region: shapely.Geometry, seeds: np.ndarray, iterations: int) -> np.ndarray:
    """Lloyd relaxation: move each seed to (a point inside) its cell's centroid, a few times."""
    for _ in range(iterations):
        cells = _tile(region, seeds)
        centres = shapely.centroid(cells)
        outside = ~shapely.contains(cells, centres)
        centres[outside] = shapely.point_on_surface(cells[outside])
        seeds = _seeds_inside(region, shapely.get_coordinates(centres), 5.0)
    return seeds


def _reading_order(x: np.ndarray, y: np.ndarray, row_height: float) -> np.ndarray:
    """Indices sorting points north to south by rows of ``row_height``, west to east within a row."""
    row = np.floor((y.max() - y) / row_height + 1e-9).astype(np.int64)
    return np.lexsort((x, row))


# ============================================================================================ ground


@dataclass
class Ground:
    """The admin units in metric coordinates (EPSG:4548), with the built-up core per district."""

    districts: gpd.GeoDataFrame    # code, name, geometry
    streets: gpd.GeoDataFrame      # code, name, kind, character, district, geometry
    communities: gpd.GeoDataFrame  # code, name, level_word, street, district, urban, geometry
    grids: gpd.GeoDataFrame        # code, name, community, street, district, fine, geometry
    core: dict[str, shapely.Geometry]
    inner: dict[str, shapely.Geometry] = field(default_factory=dict)  # districts shrunk by EDGE_MARGIN_M

    def __post_init__(self) -> None:
        for code, geom in zip(self.districts["code"], self.districts.geometry, strict=True):
            self.inner[code] = shapely.buffer(geom, -EDGE_MARGIN_M)
            shapely.prepare(self.inner[code])
        self.grid_geoms = self.grids.geometry.to_numpy()
        shapely.prepare(self.grid_geoms)
        self.grid_tree = shapely.STRtree(self.grid_geoms)
        self.grid_area = shapely.area(self.grid_geoms)
        self.grid_bounds = shapely.bounds(self.grid_geoms)
        self.grid_fine = self.grids["fine"].to_numpy()
        self.grid_district = self.grids["district"].to_numpy()

    def inside(self, district: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """True where (x, y) lies safely inside the district named per point."""
        ok = np.zeros(len(x), dtype=bool)
        for code, geom in self.inner.items():
            mask = district == code
            if mask.any():
                ok[mask] = shapely.contains_xy(geom, x[mask], y[mask])
        return ok

    def locate(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Index of the grid holding each point (-1 for none)."""
        hit = np.full(len(x), -1, dtype=np.int64)
        points, grids = self.grid_tree.query(shapely.points(x, y), predicate="intersects")
        first = np.unique(points, return_index=True)[1]
        hit[points[first]] = grids[first]
        return hit


def _district_shapes() -> gpd.GeoDataFrame:
    """The shipped GCJ-02 boundaries converted to WGS 84 exactly as the ETL does, then to metres."""
    raw = gpd.read_file(DATA_DIR / "boundaries" / "zibo_districts_gcj02.geojson")
    wgs = transform_geometries(raw.geometry.to_numpy(), "GCJ02")
    metric = shapely.set_precision(_to_metric(wgs), PRECISION)
    return gpd.GeoDataFrame({"code": raw["adcode"].astype(str).to_numpy(), "name": raw["name"].to_numpy()},
                            geometry=metric, crs=METRIC_EPSG)


def _centre(lon_lat_gcj: list[float]) -> tuple[float, float]:
    lon, lat = transform_geometries(np.array([shapely.Point(*lon_lat_gcj)]), "GCJ02")[0].coords[0]
    x, y = _metric_xy(np.array([lon]), np.array([lat]))
    return float(x[0]), float(y[0])


def _names(rng: np.random.Generator, parts: dict[str, list[str]], n: int, taken: set[str]) -> list[str]:
    """``n`` composed names not in ``taken`` (and added to it)."""
    out: list[str] = []
    while len(out) < n:
        name = "".join(str(rng.choice(parts[k])) for k in ("first", "second", "suffix"))
        if name not in taken:
            taken.add(name)
            out.append(name)
    return out


def build_ground(city: dict[str, Any], spec: SizeSpec, seed: int) -> Ground:
    """Streets, communities and unit grids tiling both districts, and the built-up core."""
    rng = _rng(seed, "ground")
    gen = city["generator"]["ground"]
    districts = _district_shapes()
    by_code = dict(zip(districts["code"], districts.geometry, strict=True))
    street_rows, community_rows, cores = [], [], {}
    for district in city["districts"]:
        dcode = str(district["adcode"])
        region = by_code[dcode]
        streets = district["streets"]
        centres = _seeds_inside(region, np.array([_centre(s["approx_center_gcj02"]) for s in streets]), 300.0)
        discs = [shapely.Point(*c).buffer(gen["core_radius_m"][s["character"]], quad_segs=32)
                 for c, s in zip(centres, streets, strict=True)]
        core = shapely.intersection(shapely.union_all(discs), region, grid_size=PRECISION)
        cores[dcode] = core
        taken: set[str] = set()
        for s in streets:
            taken.update(s.get("communities", []))
            taken.update(s.get("villages_sample", []))
        for street, cell in zip(streets, _tile(region, centres), strict=True):
            scode = dcode + str(street["code"])
            street_rows.append({"code": scode, "name": street["name"], "kind": street["kind"],
                                "character": street["character"], "district": dcode, "geometry": cell})
            community_rows.extend(_communities(rng, gen, street, scode, dcode, cell, core, taken))
    streets = gpd.GeoDataFrame(street_rows, geometry="geometry", crs=METRIC_EPSG)
    communities = gpd.GeoDataFrame(community_rows, geometry="geometry", crs=METRIC_EPSG)
    grids = _grids(communities, cores, spec, gen)
    return Ground(districts, streets, communities, grids, cores)


def _communities(rng: np.random.Generator, gen: dict[str, Any], street: dict[str, Any], scode: str, dcode: str,
                 region: shapely.Geometry, core: shapely.Geometry, taken: set[str]) -> list[dict[str, Any]]:
    """The 社区 (codes 001..) and 村 (codes 201..) of one street, tiling it."""
    n_urban, n_rural = int(street["n_communities"]), int(street["n_villages"])
    urban_area = shapely.intersection(region, core, grid_size=PRECISION)
    rural_area = shapely.difference(region, core, grid_size=PRECISION)
    share = 0.05 * region.area

    def seeds(n: int, preferred: shapely.Geometry) -> np.ndarray:
        return _sample_points(rng, preferred if preferred.area > share else region, n)

    points = np.vstack([seeds(n_urban, urban_area), seeds(n_rural, rural_area)])
    points = _relaxed(region, _seeds_inside(region, points, 20.0), int(gen["lloyd_iterations"]))
    cells = _tile(region, points)
    reps = shapely.point_on_surface(cells)
    rows = []
    for urban, count, first_free, names, parts in (
        (True, n_urban, 1, list(street.get("communities", [])), gen["community_name_parts"]),
        (False, n_rural, 201, list(street.get("villages_sample", [])), gen["village_name_parts"]),
    ):
        if not count:
            continue
        idx = np.arange(count) + (0 if urban else n_urban)
        order = idx[_reading_order(shapely.get_x(reps[idx]), shapely.get_y(reps[idx]), 500.0)]
        # Named communities keep their NBS code; the others take the free serials, in reading order.
        fixed = {f"{int(v):03d}": str(k) for k, v in (street.get("community_codes") or {}).items()} if urban else {}
        free = (f"{s:03d}" for s in itertools.count(first_free) if f"{s:03d}" not in fixed)
        codes = sorted([*fixed, *(next(free) for _ in range(count - len(fixed)))])
        name_of = dict(fixed)
        unnamed = [c for c in codes if c not in fixed]
        name_of.update(zip(unnamed, [n for n in names if n not in fixed.values()], strict=False))
        rest = [c for c in codes if c not in name_of]
        name_of.update(zip(rest, _names(rng, parts, len(rest), taken), strict=True))
        for cell_index, code in zip(order, codes, strict=True):
            rows.append({"code": scode + code, "name": name_of[code], "level_word": "社区" if urban else "村",
                         "street": scode, "district": dcode, "urban": urban, "geometry": cells[cell_index]})
    return rows


def _lattice(bounds: tuple[float, float, float, float], size: float) -> np.ndarray:
    x0, y0, x1, y1 = bounds
    xs = np.arange(np.floor(x0 / size) * size, x1, size)
    ys = np.arange(np.floor(y0 / size) * size, y1, size)
    gx, gy = np.meshgrid(xs, ys)
    return shapely.box(gx.ravel(), gy.ravel(), gx.ravel() + size, gy.ravel() + size)


def _grid_pieces(community: shapely.Geometry, core: shapely.Geometry, spec: SizeSpec
                 ) -> tuple[list[shapely.Polygon], list[bool]]:
    """A community cut by the lattice: ``core_cell_m`` squares in the core, ``outer_cell_m`` outside."""
    polys: list[shapely.Polygon] = []
    fine: list[bool] = []
    parts = ((shapely.intersection(community, core, grid_size=PRECISION), spec.core_cell_m, True),
             (shapely.difference(community, core, grid_size=PRECISION), spec.outer_cell_m, False))
    for part, size, is_fine in parts:
        if part.is_empty or part.area < 1.0:
            continue
        boxes = _lattice(part.bounds, size)
        shapely.prepare(part)
        boxes = boxes[shapely.intersects(part, boxes)]
        inside = shapely.contains_properly(part, boxes)
        clipped = shapely.intersection(boxes[~inside], part, grid_size=PRECISION)
        for piece in [*boxes[inside], *clipped]:
            for poly in _polygons(piece):
                polys.append(poly)
                fine.append(is_fine)
    return polys, fine


def _merge_slivers(geoms: np.ndarray, fine: np.ndarray, group: np.ndarray, tiny: float, coarse_small: float
                   ) -> np.ndarray:
    """Join small pieces to the neighbour of their group sharing most border; the pieces kept (a mask).

    A piece under ``tiny`` m2 joins any neighbour of its community; a coarse piece under ``coarse_small``
    joins a coarse neighbour only.  Vectorised in rounds: first into neighbours that are not small
    themselves (so no chains form), then, for what is left, into any neighbour.  ``geoms`` is updated.
    """
    alive = np.ones(len(geoms), dtype=bool)
    for round_ in range(16):
        area = shapely.area(geoms)
        small = alive & ((area < tiny) | (~fine & (area < coarse_small)))
        if not small.any():
            break
        sources = np.flatnonzero(small)
        tree = shapely.STRtree(geoms)
        s, t = tree.query(geoms[sources], predicate="intersects")
        s = sources[s]
        ok = (t != s) & alive[t] & (group[t] == group[s])
        ok &= (area[s] < tiny) | ~fine[t]  # a merely small coarse piece stays coarse
        if round_ == 0:
            ok &= ~small[t]
        s, t = s[ok], t[ok]
        length = shapely.length(shapely.intersection(shapely.boundary(geoms[s]), shapely.boundary(geoms[t])))
        s, t, length = s[length > 0], t[length > 0], length[length > 0]
        if not len(s):
            if round_ > 0:
                break
            continue
        order = np.lexsort((-length, s))
        s, t = s[order], t[order]
        first = np.unique(s, return_index=True)[1]
        s, t = s[first], t[first]
        if round_ > 0:  # small into small: smaller into larger, and a target merged away this round waits
            rank = np.empty(len(geoms), dtype=np.int64)
            rank[np.lexsort((np.arange(len(geoms)), area))] = np.arange(len(geoms))
            up = rank[s] < rank[t]
            s, t = s[up], t[up]
            keep = ~np.isin(t, s)
            s, t = s[keep], t[keep]
            if not len(s):
                break
        order = np.argsort(t, kind="stable")
        s, t = s[order], t[order]
        bounds = np.flatnonzero(np.r_[True, t[1:] != t[:-1], True])
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            target = t[a]
            merged = shapely.union_all(np.concatenate([[geoms[target]], geoms[s[a:b]]]), grid_size=PRECISION)
            if merged.geom_type == "Polygon":
                geoms[target] = merged
                alive[s[a:b]] = False
    return alive


def _grids(communities: gpd.GeoDataFrame, cores: dict[str, shapely.Geometry], spec: SizeSpec,
           gen: dict[str, Any]) -> gpd.GeoDataFrame:
    """Unit grids of every community, slivers merged, numbered west to east and north to south."""
    width = int(gen["grid_serial_width"])
    polys: list[shapely.Polygon] = []
    fine: list[bool] = []
    group: list[int] = []
    for index, community in enumerate(communities.itertuples()):
        p, f = _grid_pieces(community.geometry, cores[community.district], spec)
        polys += p
        fine += f
        group += [index] * len(p)
    geoms = np.array(polys, dtype=object)
    fine_arr, group_arr = np.array(fine, dtype=bool), np.array(group, dtype=np.int64)
    share = float(gen["sliver_share"])
    alive = _merge_slivers(geoms, fine_arr, group_arr, share * spec.core_cell_m ** 2, share * spec.outer_cell_m ** 2)
    geoms, fine_arr, group_arr = geoms[alive], fine_arr[alive], group_arr[alive]
    reps = shapely.point_on_surface(geoms)
    x, y = shapely.get_x(reps), shapely.get_y(reps)
    # Reading order within each community: rows of one fine cell from the north, west to east in a row.
    top = pd.Series(y).groupby(group_arr).transform("max").to_numpy()
    row = np.floor((top - y) / spec.core_cell_m + 1e-9).astype(np.int64)
    order = np.lexsort((x, row, group_arr))
    geoms, fine_arr, group_arr = geoms[order], fine_arr[order], group_arr[order]
    serial = pd.Series(group_arr).groupby(group_arr).cumcount().to_numpy() + 1
    if len(serial) and serial.max() >= 10 ** width:
        worst = communities["code"].to_numpy()[group_arr[np.argmax(serial)]]
        raise CityGridError(f"community {worst} would have {serial.max()} grids, more than a {width}-digit serial "
                            "numbers: raise core_cell_m or grid_serial_width")
    code = communities["code"].to_numpy()[group_arr]
    name = communities["name"].to_numpy()[group_arr]
    serial_text = np.char.zfill(serial.astype(str), width).astype(object)
    return gpd.GeoDataFrame({
        "code": code + serial_text, "name": name + serial_text + "网格", "community": code,
        "street": communities["street"].to_numpy()[group_arr], "district": communities["district"].to_numpy()[group_arr],
        "fine": fine_arr}, geometry=geoms, crs=METRIC_EPSG)


# ================================================================================== management grids

#: A management grid (管理网格) in the core gathers the unit grids of one community whose label points fall in
#: one block of MGRID_BLOCK x MGRID_BLOCK core cells (9 at most); groups under MGRID_MIN join a neighbour of
#: the same community as long as it stays at or under MGRID_MAX, as a centre would draw a grid worker's patch.
MGRID_BLOCK = 3
MGRID_MIN = 4
MGRID_MAX = 12
MGRID_SERIAL_WIDTH = 2


def build_management_grids(ground: Ground, spec: SizeSpec) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """The management grids (metric) and, per unit grid of ``ground.grids``, the index of its management grid.

    In the built-up core, blocks of 3 x 3 unit grids within one community, small ones merged into a
    neighbour (groups of about 4-12); outside the core, each community's coarse grids (its outskirts, or the
    whole 村) form one management grid, which also takes in a small core group it borders when no core
    group can.  Each management grid is named after its community (``潘苑社区第3网格``, ``王家庄村网格``) and
    coded by the community's code plus a 2-digit serial in reading order, the outskirts last.
    """
    grids = ground.grids
    geoms = ground.grid_geoms
    fine = ground.grid_fine
    community = grids["community"].to_numpy()
    reps = shapely.point_on_surface(geoms)
    x, y = shapely.get_x(reps), shapely.get_y(reps)
    block = MGRID_BLOCK * spec.core_cell_m
    bx, by = np.floor(x / block).astype(np.int64), np.floor(y / block).astype(np.int64)
    key = pd.DataFrame({"community": community, "outer": ~fine, "bx": np.where(fine, bx, 0),
                        "by": np.where(fine, by, 0)})
    group = key.groupby(["community", "outer", "bx", "by"], sort=True).ngroup().to_numpy()
    group = _merge_small_groups(geoms, group, community, fine)
    # Number the groups of each community: core groups north to south by block rows, west to east, then outskirts.
    members = pd.DataFrame({"group": group, "community": community, "outer": ~fine, "x": x, "y": y})
    per = members.groupby("group").agg(community=("community", "first"), outer=("outer", "all"),
                                       x=("x", "mean"), y=("y", "max"), units=("x", "size"))
    top = per.groupby("community")["y"].transform("max")
    per["row"] = np.floor((top - per["y"]) / block + 1e-9).astype(np.int64)
    per = per.sort_values(["community", "outer", "row", "x"], kind="stable")
    per["serial"] = per.groupby("community").cumcount() + 1
    if len(per) and per["serial"].max() >= 10 ** MGRID_SERIAL_WIDTH:
        raise CityGridError(f"community {per.loc[per['serial'].idxmax(), 'community']} would have more than "
                            f"{10 ** MGRID_SERIAL_WIDTH - 1} management grids: raise MGRID_BLOCK")
    names = dict(zip(ground.communities["code"], ground.communities["name"], strict=True))
    cores = per[~per["outer"]].groupby("community").size()
    serial_text = per["serial"].astype(str).str.zfill(MGRID_SERIAL_WIDTH)
    community_name = per["community"].map(names)
    per["name"] = np.where(~per["outer"], community_name + "第" + per["serial"].astype(str) + "网格",
                           np.where(per["community"].map(cores).fillna(0) > 0, community_name + "外围网格",
                                    community_name + "网格"))
    per["code"] = per["community"] + serial_text
    per["geometry"] = _group_shapes(geoms, group, per.index.to_numpy())
    index_of = pd.Series(np.arange(len(per)), index=per.index)
    streets = dict(zip(ground.communities["code"], ground.communities["street"], strict=True))
    frame = gpd.GeoDataFrame({
        "code": per["code"].to_numpy(), "name": per["name"].to_numpy(), "community": per["community"].to_numpy(),
        "street": per["community"].map(streets).to_numpy(), "district": per["community"].str[:6].to_numpy(),
        "units": per["units"].to_numpy(), "outer": per["outer"].to_numpy()},
        geometry=per["geometry"].to_numpy(), crs=METRIC_EPSG)
    return frame, index_of[group].to_numpy()


def _merge_small_groups(geoms: np.ndarray, group: np.ndarray, community: np.ndarray, fine: np.ndarray
                        ) -> np.ndarray:
    """Join core groups under MGRID_MIN unit grids to the bordering group of their community they share most
    border with: a core group while the sum stays <= MGRID_MAX, else the community's outskirts."""
    tree = shapely.STRtree(geoms)
    for _ in range(4):
        sizes = np.bincount(group)
        outer = np.zeros(len(sizes), dtype=bool)
        outer[group[~fine]] = True  # a group is the outskirts once it holds a coarse grid
        small = np.flatnonzero((sizes > 0) & (sizes < MGRID_MIN) & ~outer)
        if not len(small):
            break
        sources = np.flatnonzero(np.isin(group, small))
        s, t = tree.query(geoms[sources], predicate="intersects")
        s = sources[s]
        ok = (community[s] == community[t]) & (group[s] != group[t])
        s, t = s[ok], t[ok]
        length = shapely.length(shapely.intersection(shapely.boundary(geoms[s]), shapely.boundary(geoms[t])))
        border = (pd.DataFrame({"s": group[s], "t": group[t], "length": length})[length > 0]
                  .groupby(["s", "t"], sort=True)["length"].sum().reset_index()
                  .sort_values(["s", "length", "t"], ascending=[True, False, True], kind="stable"))
        neighbours: dict[int, list[int]] = {}
        for source, target in zip(border["s"].tolist(), border["t"].tolist(), strict=True):
            neighbours.setdefault(source, []).append(target)
        into = np.arange(len(sizes))  # what each group became this round
        for source in small[np.lexsort((small, sizes[small]))].tolist():  # smallest first, then by number
            options = list(dict.fromkeys(_root(into, t) for t in neighbours.get(source, [])))
            core = [o for o in options if o != source and not outer[o] and sizes[o] + sizes[source] <= MGRID_MAX]
            rest = [o for o in options if outer[o]]
            target = core[0] if core else rest[0] if rest else None
            if target is not None and into[source] == source:
                into[source] = target
                sizes[target] += sizes[source]
                sizes[source] = 0
        roots = np.array([_root(into, g) for g in range(len(sizes))])
        if (roots == np.arange(len(sizes))).all():
            break
        group = np.unique(roots[group], return_inverse=True)[1]
    return group


def _root(into: np.ndarray, group: int) -> int:
    """What a group became after this round's merges (merged groups point at their target)."""
    while into[group] != group:
        group = int(into[group])
    return group


def _group_shapes(geoms: np.ndarray, group: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The union of each group's unit grids, for the groups in ``order``.

    A coverage union (the grids share their edges exactly) is ten times faster than an overlay union; the
    few groups it refuses or leaves invalid (a vertex of one grid on another's edge) are redone by the overlay union.
    """
    by_group = np.argsort(group, kind="stable")
    cuts = np.flatnonzero(np.r_[True, group[by_group][1:] != group[by_group][:-1], True])
    starts = dict(zip(group[by_group][cuts[:-1]], zip(cuts[:-1], cuts[1:], strict=True), strict=True))
    shapes = np.empty(len(order), dtype=object)
    for i, g in enumerate(order):
        a, b = starts[g]
        try:
            shapes[i] = shapely.coverage_union_all(geoms[by_group[a:b]])
        except GEOSException:  # edges not noded alike (a clipped piece beside a lattice square)
            shapes[i] = None
    redo = shapely.is_missing(shapes)
    redo[~redo] = ~shapely.is_valid(shapes[~redo])
    for i in np.flatnonzero(redo):
        a, b = starts[order[i]]
        shapes[i] = shapely.union_all(geoms[by_group[a:b]], grid_size=PRECISION)
    return shapes


# ============================================================================================ places


def _sample_in_grids(rng: np.random.Generator, ground: Ground, grid_index: np.ndarray) -> tuple[np.ndarray, ...]:
    """One uniform point inside each given grid, safely inside its district."""
    geoms, bounds, district = ground.grid_geoms, ground.grid_bounds, ground.grid_district
    x = np.empty(len(grid_index))
    y = np.empty(len(grid_index))
    todo = np.arange(len(grid_index))
    for _ in range(60):
        if not len(todo):
            break
        g = grid_index[todo]
        b = bounds[g]
        px = rng.uniform(b[:, 0], b[:, 2])
        py = rng.uniform(b[:, 1], b[:, 3])
        ok = shapely.contains_xy(geoms[g], px, py) & ground.inside(district[g], px, py)
        x[todo[ok]], y[todo[ok]] = px[ok], py[ok]
        todo = todo[~ok]
    if len(todo):  # slivers along the district edge: their point on surface (checked by the caller)
        reps = shapely.point_on_surface(geoms[grid_index[todo]])
        x[todo], y[todo] = shapely.get_x(reps), shapely.get_y(reps)
    return x, y


def _grid_weights(ground: Ground, core_factor: float, mask: np.ndarray | None = None) -> np.ndarray:
    w = ground.grid_area * np.where(ground.grid_fine, core_factor, 1.0)
    if mask is not None:
        w = w * mask
    return w / w.sum()


def _stem(name: str) -> str:
    for suffix in ("花园社区", "小区社区", "社区", "村"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def build_places(city: dict[str, Any], ground: Ground, seed: int) -> pd.DataFrame:
    """Hot spots of cases: markets, schools, old residential areas, and recurring exact spots."""
    rng = _rng(seed, "places")
    gen = city["generator"]["places"]
    grids = ground.grids
    character = dict(zip(ground.streets["code"], ground.streets["character"], strict=True))
    street_char = grids["street"].map(character).to_numpy()
    community_name = dict(zip(ground.communities["code"], ground.communities["name"], strict=True))
    frames = []
    kinds = (("market", ("urban", "mixed"), ("农贸市场", "早市", "夜市")),
             ("school", ("urban", "mixed", "rural"), ("小学", "中学", "幼儿园")))
    for kind, characters, words in kinds:
        for dcode, count in gen[f"{kind}s"].items():
            mask = (grids["district"].to_numpy() == str(dcode)) & grids["fine"].to_numpy() & np.isin(street_char,
                                                                                                        characters)
            idx = rng.choice(len(grids), size=int(count), p=_grid_weights(ground, 1.0, mask))
            x, y = _sample_in_grids(rng, ground, idx)
            names = [f"{_stem(community_name[c])}{rng.choice(words)}" for c in grids["community"].to_numpy()[idx]]
            frames.append(pd.DataFrame({"kind": kind, "x": x, "y": y, "radius": float(gen["radius_m"][kind]),
                                        "name": names, "weight": rng.uniform(0.5, 1.5, len(idx))}))
    comm = ground.communities
    old_rows = []
    named = [n for n in gen["named_old_residential"] if n in set(comm["name"])]
    for dcode, count in gen["old_residential"].items():
        in_district = comm["district"] == str(dcode)
        chosen = list(comm.index[in_district & comm["name"].isin(named)])
        rest = comm.index[in_district & comm["urban"] & comm["street"].map(character).eq("urban")].difference(chosen)
        chosen += list(rng.choice(rest, size=max(0, int(count) - len(chosen)), replace=False))
        for i in chosen:
            geom = comm.geometry[i]
            rep = geom.point_on_surface()
            old_rows.append({"kind": "old_residential", "x": rep.x, "y": rep.y,
                             "radius": min(float(gen["radius_m"]["old_residential"]), np.sqrt(geom.area) / 3),
                             "name": comm["name"][i], "weight": 2.0 if comm["name"][i] in named else 1.0})
    frames.append(pd.DataFrame(old_rows))
    hot = pd.concat(frames, ignore_index=True)
    n = int(gen["recurring_places"])
    half = n // 2  # half near the hot spots, half anywhere in the built-up area
    near = rng.integers(0, len(hot), half)
    angle, dist = rng.uniform(0, 2 * np.pi, half), rng.uniform(20, 300, half)
    far_x, far_y = _sample_in_grids(rng, ground, rng.choice(len(grids), n - half, p=_grid_weights(ground, 20.0)))
    rx = np.concatenate([hot["x"].to_numpy()[near] + dist * np.cos(angle), far_x])
    ry = np.concatenate([hot["y"].to_numpy()[near] + dist * np.sin(angle), far_y])
    located = ground.locate(rx, ry)
    ok = located >= 0
    ok[ok] &= ground.inside(grids["district"].to_numpy()[located[ok]], rx[ok], ry[ok])
    rank = np.arange(ok.sum())
    recurring = pd.DataFrame({"kind": "recurring", "x": rx[ok], "y": ry[ok], "radius": 4.0, "name": "",
                              "weight": 1.0 / (rank + 1.0) ** 0.6})
    places = pd.concat([hot, recurring], ignore_index=True)
    grid = ground.locate(places["x"].to_numpy(), places["y"].to_numpy())
    places = places[grid >= 0].reset_index(drop=True)
    places["grid"] = grid[grid >= 0]
    return places


# =========================================================================================== cameras


def _lens(rng: np.random.Generator, cfg: dict[str, Any], types: np.ndarray) -> tuple[np.ndarray, ...]:
    """Heading (compass degrees), field of view and range per camera, by type."""
    n = len(types)
    heading = rng.integers(0, 360, n).astype(float)
    fov = np.empty(n)
    reach = np.empty(n)
    for kind, lens in cfg["lens"].items():
        mask = types == kind
        k = int(mask.sum())
        if not k:
            continue
        fov[mask] = np.round(rng.uniform(*lens["fov"], k) / 5) * 5
        reach[mask] = np.round(rng.uniform(*lens["range"], k) / 5) * 5
        dome = rng.random(k) < float(lens["dome"])
        fov_k, reach_k, heading_k = fov[mask], reach[mask], heading[mask]
        fov_k[dome], reach_k[dome], heading_k[dome] = 360.0, np.round(reach_k[dome] * 0.6), 0.0
        fov[mask], reach[mask], heading[mask] = fov_k, reach_k, heading_k
    return heading, fov, reach


def build_cameras(city: dict[str, Any], ground: Ground, spec: SizeSpec, seed: int) -> pd.DataFrame:
    """Cameras: 闻韶街道's 3,600 HD cameras and 326 kitchen feeds, 潘苑社区's monitors, more elsewhere."""
    rng = _rng(seed, "cameras")
    cfg = city["generator"]["cameras"]
    grids = ground.grids
    street_of_name = dict(zip(ground.streets["name"], ground.streets["code"], strict=True))
    comm = ground.communities
    panyuan = comm.loc[comm["name"] == "潘苑社区"].iloc[0]
    in_wenshao = grids["street"].to_numpy() == street_of_name["闻韶街道"]
    in_panyuan = grids["community"].to_numpy() == panyuan["code"]
    fine = grids["fine"].to_numpy()
    batches: list[tuple[np.ndarray, np.ndarray, str]] = []  # (grid index, type, label)

    def draw(n: int, mask: np.ndarray, mix: dict[str, float], label: str, core_factor: float = 1.0) -> None:
        idx = rng.choice(len(grids), size=n, p=_grid_weights(ground, core_factor, mask))
        kinds, p = _weights(mix)
        batches.append((idx, np.asarray(rng.choice(kinds, size=n, p=p), dtype=object), label))

    wenshao = cfg["wenshao"]
    draw(int(wenshao["hd_cameras"]), in_wenshao & fine, wenshao["mix"], "")
    draw(int(wenshao["kitchen_feeds"]), in_wenshao & fine, {"kitchen": 1.0}, "后厨")
    faces = int(cfg["panyuan"]["face_cameras"])
    draw(faces, in_panyuan, {"community": 1.0}, "人脸识别")
    draw(int(cfg["panyuan"]["monitors"]) - faces, in_panyuan, {"community": 1.0}, "")
    draw(spec.cameras_elsewhere, ~in_wenshao & ~in_panyuan, cfg["elsewhere_mix"], "", core_factor=20.0)
    idx = np.concatenate([b[0] for b in batches])
    types = np.concatenate([b[1] for b in batches])
    labels = np.concatenate([np.full(len(b[0]), b[2], dtype=object) for b in batches])
    x, y = _sample_in_grids(rng, ground, idx)
    heading, fov, reach = _lens(rng, cfg, types)
    # 潘苑社区's high-altitude eagle eye (高空鹰眼): one 360-degree camera on a tall building.
    rep = panyuan.geometry.point_on_surface()
    eagle = int(cfg["panyuan"]["high_altitude_eagle_eye"])
    idx = np.concatenate([idx, ground.locate(np.full(eagle, rep.x), np.full(eagle, rep.y))])
    x, y = np.concatenate([x, np.full(eagle, rep.x)]), np.concatenate([y, np.full(eagle, rep.y)])
    types = np.concatenate([types, np.full(eagle, "urban_management", dtype=object)])
    labels = np.concatenate([labels, np.full(eagle, "高空鹰眼", dtype=object)])
    heading = np.concatenate([heading, np.zeros(eagle)])
    fov = np.concatenate([fov, np.full(eagle, float(cfg["eagle_eye"]["fov"]))])
    reach = np.concatenate([reach, np.full(eagle, float(cfg["eagle_eye"]["range"]))])
    n = len(idx)
    ai_share = np.array([float(cfg["ai_enabled"].get(t, 0.0)) for t in types])
    frame = pd.DataFrame({
        "grid": idx, "x": x, "y": y, "type": types, "label": labels, "heading": heading, "fov": fov, "range": reach,
        "online": rng.random(n) < float(cfg["online"]), "ai": (rng.random(n) < ai_share) | (labels == "高空鹰眼"),
        "district": grids["district"].to_numpy()[idx], "street": grids["street"].to_numpy()[idx],
        "community": grids["community"].to_numpy()[idx],
    })
    # GB/T 28181 device id: centre code (district + 00) + industry + type 131 (camera) + network 0 + serial.
    frame = frame.sort_values(["district", "street", "community", "y", "x"], kind="stable").reset_index(drop=True)
    industry = frame["type"].map(_CAMERA_INDUSTRY)
    serial = frame.groupby(["district", industry]).cumcount() + 1
    frame["camera_id"] = frame["district"] + "00" + industry + "1310" + serial.map("{:06d}".format)
    names = dict(zip(comm["code"], comm["name"], strict=True))
    per_place = frame.groupby(["community", "type", "label"]).cumcount() + 1
    frame["name"] = [f"{names[c]}{label or CAMERA_WORDS[t]}{k:03d}" for c, t, label, k in
                     zip(frame["community"], frame["type"], frame["label"], per_place, strict=True)]
    return frame


# ======================================================================================== components


def _endpoints_inside(ground: Ground, district: np.ndarray, xs: list[np.ndarray], ys: list[np.ndarray]
                      ) -> np.ndarray:
    ok = np.ones(len(district), dtype=bool)
    for x, y in zip(xs, ys, strict=True):
        ok &= ground.inside(district, x, y)
    return ok


def build_components(city: dict[str, Any], ground: Ground, cameras: pd.DataFrame, spec: SizeSpec, seed: int,
                     categories: pd.DataFrame) -> pd.DataFrame:
    """City components (部件) by category: points, railings as lines, green space as polygons; codes by census.

    Returns one row per component with its code, minor category, geometry (metric), anchor point (where a
    case about it is reported), grid, street, district and attributes.
    """
    rng = _rng(seed, "components")
    cfg = city["generator"]["components"]
    grids = ground.grids
    gdistrict = grids["district"].to_numpy()
    minors, shares = _weights({k: v[0] for k, v in cfg["categories"].items()})
    counts = np.round(shares * spec.components).astype(int)
    parts: list[pd.DataFrame] = []
    for minor, count in zip(minors, counts, strict=True):
        shape, factor = cfg["categories"][minor][1], float(cfg["categories"][minor][2])
        idx = rng.choice(len(grids), size=int(count), p=_grid_weights(ground, factor))
        parts.append(_shapes(rng, ground, str(minor), shape, idx))
    for minor, per_district in cfg["fixed"].items():
        for dcode, count in per_district.items():
            mask = gdistrict == str(dcode)
            idx = rng.choice(len(grids), size=int(count), p=_grid_weights(ground, 10.0, mask))
            parts.append(_shapes(rng, ground, str(minor), "point", idx))
    kitchen = cameras["type"].to_numpy() == "kitchen"
    parts.append(pd.DataFrame({"minor": np.where(kitchen, "0701", "0136"), "shape": "point",
                               "grid": cameras["grid"].to_numpy(), "x": cameras["x"].to_numpy(),
                               "y": cameras["y"].to_numpy(), "geometry": shapely.points(cameras["x"], cameras["y"]),
                               "camera": cameras["camera_id"].to_numpy()}))
    frame = pd.concat(parts, ignore_index=True)
    frame["district"] = gdistrict[frame["grid"]]
    anchors = shapely.point_on_surface(frame["geometry"].to_numpy())
    frame["ax"], frame["ay"] = shapely.get_x(anchors), shapely.get_y(anchors)
    # A case about a component is reported at its anchor: keep only shapes whose anchor is safely inside.
    frame = frame[ground.inside(frame["district"].to_numpy(), frame["ax"].to_numpy(), frame["ay"].to_numpy())]
    frame["street"] = grids["street"].to_numpy()[frame["grid"]]
    frame["grid_code"] = grids["code"].to_numpy()[frame["grid"]]
    frame = frame.sort_values(["district", "minor", "grid_code", "x"], kind="stable").reset_index(drop=True)
    serial = frame.groupby(["district", "minor"]).cumcount() + 1
    if serial.max() >= 10 ** 6:
        raise CityGridError("more than 999,999 components of one category in one district: lower the size")
    frame["code"] = frame["district"] + frame["minor"] + serial.map("{:06d}".format)
    states, p = _weights(cfg["states"])
    frame["state"] = rng.choice(states, size=len(frame), p=p)
    minor_names = categories[(categories["kind"] == "component")].set_index("code")["name_zh"]
    frame["name"] = frame["minor"].map(minor_names)
    district_names = dict(zip(ground.districts["code"], ground.districts["name"], strict=True))
    street_names = dict(zip(ground.streets["code"], ground.streets["name"], strict=True))
    owner = frame["minor"].str[:2].map({str(k): v for k, v in cfg["owners"].items()}).fillna("区城市管理局")
    frame["owner"] = frame["district"].map(district_names) + owner.str[1:]
    frame["maintainer"] = frame["street"].map(street_names) + "城市管理办公室"
    first, last = (np.datetime64(f"{y}-01-01") for y in (cfg["census_years"][0], cfg["census_years"][1] + 1))
    days = rng.integers(0, int((last - first).astype(int)), len(frame))
    frame["surveyed_on"] = np.datetime_as_string(first + days.astype("timedelta64[D]"), unit="D")
    return frame


def _shapes(rng: np.random.Generator, ground: Ground, minor: str, shape: str, idx: np.ndarray) -> pd.DataFrame:
    """Components of one category in the given grids: points, short lines or small rectangles."""
    district = ground.grids["district"].to_numpy()[idx]
    x, y = _sample_in_grids(rng, ground, idx)
    if shape == "point":
        geometry = shapely.points(x, y)
    elif shape == "line":  # a railing of 20-150 m; halved until both ends are inside the district
        angle, length = rng.uniform(0, np.pi, len(idx)), rng.uniform(20, 150, len(idx))
        for _ in range(6):
            ex, ey = x + length * np.cos(angle), y + length * np.sin(angle)
            ok = _endpoints_inside(ground, district, [ex], [ey])
            if ok.all():
                break
            length = np.where(ok, length, length / 2)
        geometry = shapely.linestrings(np.stack([np.column_stack([x, y]), np.column_stack([ex, ey])], axis=1))
    else:  # green space: a rotated rectangle of 20-120 m by 20-80 m, shrunk until inside the district
        angle = rng.uniform(0, np.pi, len(idx))
        a, b = rng.uniform(10, 60, len(idx)), rng.uniform(10, 40, len(idx))
        for _ in range(6):
            cx = [x + s * a * np.cos(angle) - t * b * np.sin(angle) for s, t in ((1, 1), (-1, 1), (-1, -1), (1, -1))]
            cy = [y + s * a * np.sin(angle) + t * b * np.cos(angle) for s, t in ((1, 1), (-1, 1), (-1, -1), (1, -1))]
            ok = _endpoints_inside(ground, district, cx, cy)
            if ok.all():
                break
            a, b = np.where(ok, a, a / 2), np.where(ok, b, b / 2)
        rings = np.stack([np.column_stack([cx[k], cy[k]]) for k in (0, 1, 2, 3, 0)], axis=1)
        geometry = shapely.polygons(rings)
    return pd.DataFrame({"minor": minor, "shape": shape, "grid": idx, "x": x, "y": y, "geometry": geometry,
                         "camera": None})


# ============================================================================================= cases

#: One month of cases: column name -> array (object arrays for text, datetime64[ns] local wall clock for
#: times, NaT where a stage is not reached).  Plain numpy keeps a city-size month (800,000 rows) fast.
Cases = dict[str, np.ndarray]


def _lookup(keys: np.ndarray, table: dict[Any, Any], default: Any = None) -> np.ndarray:
    """``table[key]`` for every key, hashing each distinct key once."""
    codes, uniques = pd.factorize(np.asarray(keys, dtype=object), use_na_sentinel=False)
    values = np.empty(len(uniques), dtype=object)
    values[:] = [table.get(u, default) for u in uniques]
    return values[codes]


def _take(cases: Cases, index: np.ndarray) -> Cases:
    return {name: values[index] for name, values in cases.items()}


def _local(day: date) -> np.datetime64:
    return np.datetime64(day.isoformat(), "ns")


@dataclass
class CaseSetting:
    """Everything the monthly case draws share: the city, its places and assets, rules and the plan."""

    city: dict[str, Any]
    ground: Ground
    places: pd.DataFrame
    components: pd.DataFrame
    cameras: pd.DataFrame
    categories: pd.DataFrame
    deadlines: pd.DataFrame
    calendar: pd.DataFrame
    now: np.datetime64                     # the reference date at 00:00, Asia/Shanghai wall clock
    days: np.ndarray                       # datetime64[D], the year ending yesterday
    counts: np.ndarray                     # cases per (day, channel)
    channels: list[str]
    seed: int

    def __post_init__(self) -> None:
        ground = self.ground
        grids = ground.grids
        names = {**dict(zip(ground.districts["code"], ground.districts["name"], strict=True)),
                 **dict(zip(ground.streets["code"], ground.streets["name"], strict=True)),
                 **dict(zip(ground.communities["code"], ground.communities["name"], strict=True))}
        self.grid_codes = {level: grids[level].to_numpy(dtype=object) for level in ("district", "street", "community")}
        self.grid_names = {level: _lookup(codes, names) for level, codes in self.grid_codes.items()}
        villages = set(ground.communities.loc[~ground.communities["urban"], "code"])
        is_village = np.isin(self.grid_codes["community"], list(villages))
        self.grid_committee = np.where(is_village, "村委会", "居委会").astype(object)
        cats = self.categories
        self.minor_names = {f"{k}:{c}": n for k, c, n, major in
                            zip(cats["kind"], cats["code"], cats["name_zh"], cats["is_major"], strict=True) if not major}
        self.major_names = {f"{k}:{c}": n for k, c, n, major in
                            zip(cats["kind"], cats["code"], cats["name_zh"], cats["is_major"], strict=True) if major}
        self.rules = {f"{k}:{c}:{u}": (float(h), float(cl), str(unit)) for k, c, u, h, cl, unit in
                      self.deadlines[["kind", "category_code", "urgency", "handle_limit", "close_limit",
                                      "limit_unit"]].itertuples(index=False)}
        comps = self.components
        factor = {str(k): float(v) for k, v in self.cfg["component_case_factor"].items()}
        minor = comps["minor"].to_numpy(dtype=object)
        weight = _lookup(_lookup(minor, {m: m[:2] for m in set(minor)}), factor, 0.5).astype(float)
        weight[minor == "0701"] = 0.0  # kitchen terminals are indoors: nobody reports them from the street
        self.component_p = weight / weight.sum()
        self.component_arrays = {"minor": minor, "code": comps["code"].to_numpy(dtype=object),
                                 "state": comps["state"].to_numpy(dtype=object),
                                 "x": comps["ax"].to_numpy(), "y": comps["ay"].to_numpy()}
        cams = self.cameras[self.cameras["ai"] & (self.cameras["type"] != "kitchen")]
        self.ai_cameras = {c: cams[c].to_numpy(dtype=float) for c in ("x", "y", "heading", "fov", "range")}
        self.place_arrays = {c: self.places[c].to_numpy() for c in ("kind", "x", "y", "radius", "weight")}
        self.place_names = self.places["name"].to_numpy(dtype=object)
        self.background_p = _grid_weights(ground, float(self.cfg["core_density_factor"]))

    @property
    def cfg(self) -> dict[str, Any]:
        return self.city["generator"]["cases"]

    def months(self) -> list[tuple[np.datetime64, np.datetime64]]:
        """(first day, cut-off) of each calendar month of the year: an export is made at its cut-off."""
        starts = np.unique(self.days.astype("datetime64[M]"))
        return [(max(m.astype("datetime64[D]"), self.days[0]),
                 min((m + 1).astype("datetime64[D]"), self.days[-1] + 1)) for m in starts]


def case_setting(city: dict[str, Any], ground: Ground, places: pd.DataFrame, components: pd.DataFrame,
                 cameras: pd.DataFrame, spec: SizeSpec, seed: int, reference: date) -> CaseSetting:
    """The year's plan: how many cases each channel reports on each day (weekly, seasonal, holiday rhythms)."""
    cfg = city["generator"]["cases"]
    calendar = read_calendar()
    days = np.arange(np.datetime64(reference) - 365, np.datetime64(reference), dtype="datetime64[D]")
    weekday = (days.astype(np.int64) + 3) % 7
    month = days.astype("datetime64[M]").astype(np.int64) % 12
    off = calendar.loc[~calendar["is_workday"], "day"].to_numpy(dtype="datetime64[D]")
    holiday = np.isin(days, off) & (weekday < 5)
    channels, share = _weights(cfg["channels"])
    weights = np.empty((len(days), len(channels)))
    for j, channel in enumerate(channels):
        factor = np.asarray(cfg["weekdays"][channel])[weekday] * np.asarray(cfg["months"])[month]
        if channel in ("patrol", "partner"):
            factor = np.where(holiday, factor * float(cfg["holiday_factor"]), factor)
        weights[:, j] = share[j] * factor
    counts = _rng(seed, "plan").multinomial(spec.cases, (weights / weights.sum()).ravel()).reshape(weights.shape)
    return CaseSetting(city, ground, places, components, cameras, read_categories(), read_deadlines(), calendar,
                       _local(reference), days, counts, channels, seed)


def _draw(rng: np.random.Generator, setting: CaseSetting, profile: str, n: int, month: int) -> np.ndarray:
    """Event categories of one kind of place (or channel) in a calendar month (1-12), seasons applied."""
    weights = {str(k): float(v) for k, v in setting.cfg["events"][profile].items()}
    for code, months in setting.cfg["seasons"].items():
        if str(code) in weights and month not in months:
            weights[str(code)] = 0.0
    codes, p = _weights(weights)
    return rng.choice(np.array(codes, dtype=object), size=n, p=p)


def _working_deadline(start: np.ndarray, amount: np.ndarray, unit: np.ndarray, calendar: pd.DataFrame
                      ) -> np.ndarray:
    """``start`` (local wall clock, datetime64[ns]) plus working time, by the dictionary's rules."""
    out = np.full(len(start), np.datetime64("NaT"), dtype="datetime64[ns]")
    ok = ~np.isnat(start)
    if ok.any():
        series = pd.Series(start[ok]).dt.tz_localize(TIMEZONE)
        result = add_working_time(series, amount[ok], unit[ok], calendar)
        out[ok] = result.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    return out


def _minutes(rng: np.random.Generator, median: float, sigma: float, n: int, cap: float) -> np.ndarray:
    """Lognormal delays in minutes, as timedelta64[ns]."""
    values = np.minimum(rng.lognormal(np.log(median), sigma, n), cap)
    return (values * 60e9).astype("timedelta64[ns]")


def _hours(values: np.ndarray) -> np.ndarray:
    return (np.asarray(values) * 3600e9).astype("timedelta64[ns]")


def _locations(rng: np.random.Generator, setting: CaseSetting, channel: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where each case lies: metric x, y, grid index, kind of place, component index (-1), place index (-1)."""
    cfg, ground, places = setting.cfg, setting.ground, setting.place_arrays
    n = len(channel)
    x, y = np.zeros(n), np.zeros(n)
    component = np.full(n, -1, dtype=np.int64)
    place = np.full(n, -1, dtype=np.int64)
    is_comp = rng.random(n) < _lookup(channel, {c: float(v) for c, v in cfg["component_share"].items()}).astype(float)
    is_ai = (channel == "ai_camera") & ~is_comp
    kinds, p = _weights(cfg["location"])
    place_kind = rng.choice(np.array(kinds, dtype=object), size=n, p=p)
    # Component cases: at a component, more often the fragile kinds (manholes, lamps, bins).
    comps = setting.component_arrays
    component[is_comp] = rng.choice(len(setting.component_p), size=int(is_comp.sum()), p=setting.component_p)
    x[is_comp], y[is_comp] = comps["x"][component[is_comp]], comps["y"][component[is_comp]]
    place_kind[is_comp] = "component"
    # AI detections: inside the view of an AI-enabled street camera.
    cams, k = setting.ai_cameras, int(is_ai.sum())
    pick = rng.integers(0, len(cams["x"]), k)
    bearing = np.radians(cams["heading"][pick] + rng.uniform(-0.5, 0.5, k) * cams["fov"][pick])
    dist = cams["range"][pick] * rng.uniform(0.15, 0.9, k)
    x[is_ai] = cams["x"][pick] + dist * np.sin(bearing)
    y[is_ai] = cams["y"][pick] + dist * np.cos(bearing)
    place_kind[is_ai] = "camera"
    # Hot spots: around a market, school, old estate, or exactly at a recurring spot.
    for kind in ("market", "school", "old_residential", "recurring"):
        mask = place_kind == kind
        k = int(mask.sum())
        candidates = np.flatnonzero(places["kind"] == kind)
        w = places["weight"][candidates]
        chosen = candidates[rng.choice(len(candidates), size=k, p=w / w.sum())]
        sd = places["radius"][chosen] / 1.5
        x[mask] = places["x"][chosen] + rng.normal(0, 1, k) * sd
        y[mask] = places["y"][chosen] + rng.normal(0, 1, k) * sd
        place[mask] = chosen
    # Points placed around something are located; those off the city's safe interior go to the background.
    grid = np.full(n, -1, dtype=np.int64)
    placed = np.flatnonzero(place_kind != "background")
    grid[placed] = ground.locate(x[placed], y[placed])
    ok = grid[placed] >= 0
    ok[ok] = ground.inside(ground.grid_district[grid[placed[ok]]], x[placed[ok]], y[placed[ok]])
    todo = np.flatnonzero(place_kind == "background")
    todo = np.concatenate([todo, placed[~ok]])
    # Background: a grid by the built-up weights, then a point in it (its grid is known).
    grid[todo] = rng.choice(len(setting.background_p), size=len(todo), p=setting.background_p)
    x[todo], y[todo] = _sample_in_grids(rng, ground, grid[todo])
    place_kind[todo], component[todo], place[todo] = "background", -1, -1
    return x, y, grid, place_kind, component, place


def month_cases(setting: CaseSetting, index: int) -> Cases:
    """The cases reported in one month of the year, with their whole (true) timeline up to the reference date.

    Stages are local wall-clock datetime64[ns] (NaT: not reached before ``setting.now``).  Drawn from the
    month's own random stream, so months can be generated one at a time, in any order.
    """
    rng = _rng(setting.seed, "cases", index)
    cfg = setting.cfg
    first, end = setting.months()[index]
    in_month = (setting.days >= first) & (setting.days < end)
    counts = setting.counts[in_month].ravel()
    day = np.repeat(np.repeat(setting.days[in_month], len(setting.channels)), counts)
    channel = np.repeat(np.tile(np.array(setting.channels, dtype=object), int(in_month.sum())), counts)
    n = len(day)
    calendar_month = int(str(first)[5:7])
    hour = np.empty(n, dtype=np.int64)
    for name in setting.channels:
        mask = channel == name
        w = np.asarray(cfg["hours"][name], dtype=float)
        hour[mask] = rng.choice(24, size=int(mask.sum()), p=w / w.sum())
    seconds = hour * 3600 + rng.integers(0, 3600, n)
    reported = day.astype("datetime64[ns]") + (seconds * 1e9).astype("timedelta64[ns]")
    x, y, grid, place_kind, component, place = _locations(rng, setting, channel)
    cases: Cases = {"reported": reported, "channel": channel, "x": x, "y": y, "grid": grid, "place": place,
                    **{level: codes[grid] for level, codes in setting.grid_codes.items()}}
    # What the case is about.
    is_comp = component >= 0
    comps = setting.component_arrays
    category = np.empty(n, dtype=object)
    category[is_comp] = comps["minor"][component[is_comp]]
    for profile in ("hotline", "ai_camera"):
        mask = ~is_comp & (channel == profile)
        category[mask] = _draw(rng, setting, profile, int(mask.sum()), calendar_month)
    for kind in ("background", "market", "school", "old_residential", "recurring", "camera"):
        mask = ~is_comp & (place_kind == kind) & (channel != "hotline") & (channel != "ai_camera")
        category[mask] = _draw(rng, setting, "background" if kind == "camera" else kind, int(mask.sum()),
                               calendar_month)
    cases["kind"] = np.where(is_comp, "component", "event").astype(object)
    cases["category"] = category
    safe = np.maximum(component, 0)
    cases["component_code"] = np.where(is_comp, comps["code"][safe], None)
    cases["component_state"] = np.where(is_comp, comps["state"][safe], None)
    emergency = (_lookup(category, {c: c[:2] for c in set(category)}) == "04") & ~is_comp
    cases["urgency"] = np.where(rng.random(n) < np.where(emergency, 0.3, float(cfg["urgent_share"])),
                                "urgent", "normal").astype(object)
    _timeline(rng, setting, cases)
    _people(rng, setting, cases)
    return _numbered(cases, {str(k): str(v) for k, v in setting.city["generator"]["case_prefix"].items()})


def _timeline(rng: np.random.Generator, setting: CaseSetting, cases: Cases) -> None:
    """The closed loop of every case: register or void, dispatch or self-handle, handle, close, evaluate."""
    cfg = setting.cfg
    channel, reported = cases["channel"], cases["reported"]
    n = len(channel)
    nat = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    zero = np.timedelta64(0, "ns")
    # Channel shares of the year as planned (the weekly rhythms shift them a little from the inputs').
    shares = dict(zip(setting.channels, setting.counts.sum(axis=0) / setting.counts.sum(), strict=True))
    # Self-handled (自行处置) are patrol cases solved on the spot; voided (作废) ones fail verification.
    self_share = float(cfg["self_handled_share"])
    self_handled = (channel == "patrol") & (rng.random(n) < self_share / shares["patrol"])
    void_factor = {c: float(v) for c, v in cfg["void_channel_factor"].items()}
    not_self = {c: shares[c] - (self_share if c == "patrol" else 0.0) for c in shares}  # share of all cases
    base = float(cfg["voided_share"]) / sum(not_self[c] * void_factor[c] for c in shares)
    void_p = base * _lookup(channel, void_factor).astype(float)
    voided = ~self_handled & (rng.random(n) < void_p)
    dispatched_case = ~self_handled & ~voided
    verify = np.where(channel == "patrol", _minutes(rng, 8, 0.8, n, 240), _minutes(rng, 25, 1.0, n, 720))
    verify = np.where(self_handled, _minutes(rng, 3, 0.6, n, 30), verify)
    registered = np.where(voided, nat, reported + verify)
    voided_at = np.where(voided, reported + verify, nat)
    # Deadlines by category and urgency (deadlines.csv), counted in working time from registration.
    rule = _lookup(cases["kind"] + ":" + cases["category"] + ":" + cases["urgency"], setting.rules)
    handle_limit = np.array([r[0] for r in rule])
    close_limit = np.array([r[1] for r in rule])
    unit = np.array([r[2] for r in rule], dtype=object)
    handle_deadline = _working_deadline(registered, handle_limit, unit, setting.calendar)
    close_deadline = _working_deadline(registered, close_limit, unit, setting.calendar)
    extended = dispatched_case & (rng.random(n) < float(cfg["extended_share"]))
    extra = rng.integers(2, 6, n).astype(float)
    if extended.any():  # 延期: both deadlines move by 2-5 working days
        work_days = np.full(n, "work_days", dtype=object)
        handle_deadline = np.where(extended, _working_deadline(np.where(extended, handle_deadline, nat), extra,
                                                               work_days, setting.calendar), handle_deadline)
        close_deadline = np.where(extended, _working_deadline(np.where(extended, close_deadline, nat), extra,
                                                              work_days, setting.calendar), close_deadline)
    returned = dispatched_case & (rng.random(n) < float(cfg["returned_share"]))
    dispatch_delay = _minutes(rng, 10, 0.8, n, 240) + np.where(returned, _hours(rng.uniform(1, 6, n)), zero)
    dispatched = np.where(dispatched_case, registered + dispatch_delay, nat)
    # Where it was solved, and how much of the allowed time it took (escalated cases take longer).
    levels, p = _weights(cfg["resolution_levels"])
    level = np.where(self_handled, "grid", rng.choice(np.array(levels, dtype=object), size=n, p=p)).astype(object)
    level[voided] = None
    fraction = np.zeros(n)
    for name, (a, b) in {"grid": (1.5, 6.0), "community": (2.0, 5.0), "street": (2.5, 4.0),
                         "district": (3.0, 3.0), "city": (3.0, 2.5)}.items():
        mask = level == name
        fraction[mask] = rng.beta(a, b, int(mask.sum()))
    minimum = np.timedelta64(10, "m").astype("timedelta64[ns]")
    allowed = np.maximum(handle_deadline - dispatched, minimum).astype(np.float64)
    handled = dispatched + (allowed * fraction).astype("timedelta64[ns]")
    handled_late = dispatched_case & (rng.random(n) < float(cfg["handled_late_share"]))
    closed_late = dispatched_case & (rng.random(n) < float(cfg["closed_late_share"]))
    window = np.maximum(close_deadline - handle_deadline, minimum).astype(np.float64)
    overshoot = (window * rng.uniform(0.05, 0.9, n)).astype("timedelta64[ns]")
    handled = np.where(handled_late, np.maximum(handle_deadline, dispatched) + overshoot, handled)
    handled = np.where(self_handled, registered + _minutes(rng, 20, 0.7, n, 180), handled)
    handled = np.where(voided, nat, handled)
    close_room = np.maximum(close_deadline - handled, minimum).astype(np.float64)
    closed = handled + (close_room * rng.beta(1.5, 5.0, n)).astype("timedelta64[ns]")
    late_by = _hours(rng.exponential(18, n)) + minimum
    closed = np.where(closed_late, np.maximum(close_deadline + late_by, handled + minimum), closed)
    closed = np.where(self_handled, handled + _minutes(rng, 30, 0.7, n, 240), closed)
    rework = dispatched_case & (rng.random(n) < float(cfg["rework_share"]))
    closed = closed + np.where(rework, _hours(rng.uniform(2, 24, n)), zero)
    rated = np.isin(channel, ["citizen", "hotline", "partner"]) & (rng.random(n) < float(cfg["rated_share"]))
    evaluated = np.where(rated, closed + _minutes(rng, 360, 1.0, n, 4320), nat)
    words, p = _weights(cfg["satisfaction"])
    satisfaction = np.where(rated, rng.choice(np.array(words, dtype=object), size=n, p=p), None)
    stages = {"registered": registered, "dispatched": dispatched, "handled": handled, "closed": closed,
              "voided": voided_at, "evaluated": evaluated}
    for name, values in stages.items():  # nothing lies in the future: later stages are simply not there yet
        cases[name] = np.where(values < setting.now, values, nat)
    unregistered = np.isnat(cases["registered"])
    cases["handle_deadline"] = np.where(unregistered, nat, handle_deadline)
    cases["close_deadline"] = np.where(unregistered, nat, close_deadline)
    cases["self_handled"] = self_handled
    cases["extended"] = extended
    cases["returned"] = returned.astype(np.int64)
    cases["rework"] = rework.astype(np.int64)
    cases["level"] = level
    cases["satisfaction"] = satisfaction


def _id_numbers(rng: np.random.Generator, region: str, n: int) -> np.ndarray:
    """18-character ID numbers with a valid ISO 7064 checksum, an unassigned region and a 30 February birthday."""
    year, sequence = rng.integers(1950, 2005, n), rng.integers(0, 1000, n)
    digits = np.empty((n, 17), dtype=np.int64)
    digits[:, :6] = [int(c) for c in region]
    digits[:, 6:10] = (year[:, None] // 10 ** np.arange(3, -1, -1)) % 10
    digits[:, 10:14] = [0, 2, 3, 0]
    digits[:, 14:] = (sequence[:, None] // 10 ** np.arange(2, -1, -1)) % 10
    weights = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2])
    chars = np.empty((n, 18), dtype=np.uint8)
    chars[:, :17] = digits + ord("0")
    chars[:, 17] = np.frombuffer(b"10X98765432", dtype=np.uint8)[(digits * weights).sum(axis=1) % 11]
    return chars.view("S18").ravel().astype(str).astype(object)


def _pick(rng: np.random.Generator, options: list[str], n: int) -> np.ndarray:
    return np.array(options, dtype=object)[rng.integers(0, len(options), n)]


def _people(rng: np.random.Generator, setting: CaseSetting, cases: Cases) -> None:
    """Reporters (synthetic personal data), free-text address, description and handling unit."""
    gen = setting.city["generator"]
    people, cfg = gen["cases"]["reporters"], gen["cases"]
    channel, grid = cases["channel"], cases["grid"]
    n = len(channel)
    name = _pick(rng, people["name_prefixes"], n) + _pick(rng, people["surnames"], n) + _pick(rng, people["given"], n)
    has_name = np.isin(channel, ["patrol", "citizen", "partner"]) | ((channel == "hotline") & (rng.random(n) < 0.7))
    phone = people["phone_prefix"] + np.char.zfill(rng.integers(0, 10000, n).astype(str), 4).astype(object)
    has_id = rng.random(n) < _lookup(channel, {c: float(v) for c, v in people["id_share"].items()}, 0.0).astype(float)
    ids = np.full(n, None, dtype=object)
    ids[has_id] = _id_numbers(rng, str(people["id_region"]), int(has_id.sum()))
    cases["reporter_name"] = np.where(has_name, name, None)
    cases["reporter_phone"] = np.where(np.isin(channel, ["citizen", "partner", "hotline"]), phone, None)
    cases["reporter_id"] = ids
    district_name, street_name, community_name = (setting.grid_names[level][grid]
                                                  for level in ("district", "street", "community"))
    road = np.empty(n, dtype=object)
    for code, roads in gen["ground"]["roads"].items():
        mask = cases["district"] == str(code)
        road[mask] = _pick(rng, roads, int(mask.sum()))
    side = _pick(rng, ["附近", "门口", "东侧", "西侧", "南侧", "北侧", "对面"], n)
    number = np.char.add(rng.integers(1, 400, n).astype(str), "号").astype(object)
    place = cases["place"]
    place_name = np.where(place >= 0, setting.place_names[np.maximum(place, 0)], "")
    named = (place >= 0) & (place_name != "")
    where = district_name + street_name
    cases["address"] = np.where(named, where + place_name + side, where + community_name + road + number + side)
    kind_code = cases["kind"] + ":" + cases["category"]
    minor_name = _lookup(kind_code, setting.minor_names)
    cases["minor_name"] = minor_name
    cases["major_name"] = _lookup(kind_code, {k: setting.major_names[k[:-2]] for k in set(kind_code)})
    problem = _lookup(cases["component_state"], {"damaged": "破损", "missing": "缺失", "occupied": "被占用"})
    problem = np.where(problem == None, _pick(rng, ["破损", "损坏", "松动", "倾斜", "缺失"], n), problem)  # noqa: E711
    tail = _pick(rng, ["，请及时处理", "，影响市容", "，群众反映强烈", "，存在安全隐患", ""], n)
    is_comp = cases["kind"] == "component"
    cases["description"] = np.where(is_comp, cases["address"] + minor_name + problem + tail,
                                    cases["address"] + "发现" + minor_name + tail)
    # 处置部门: who solved it, by level (the district level names the department of the category).
    units = cfg["handling_units"]
    departments = {f"{kind}:{major}": name[1:] for kind in units for major, name in units[kind].items()}
    dept = _lookup(_lookup(kind_code, {k: k[:-2] for k in set(kind_code)}), departments, "城市管理局")
    level = cases["level"]
    cases["unit"] = np.select(
        [level == "grid", level == "community", level == "street", level == "district", level == "city"],
        [community_name + "网格站", community_name + setting.grid_committee[grid], street_name + "综合执法中队",
         district_name + dept,
         np.full(n, "淄博市城市管理局", dtype=object)], default=None)


def _numbered(cases: Cases, prefixes: dict[str, str]) -> Cases:
    """Case numbers: district prefix + report date + a serial in report order within the district and day."""
    reported = cases["reported"]
    district, district_index = np.unique(cases["district"].astype(str), return_inverse=True)
    day = reported.astype("datetime64[D]")
    order = np.lexsort((reported, day, district_index))
    cases = _take(cases, order)
    day, group = day[order], district_index[order] * 1_000_000 + day[order].astype(np.int64)
    start = np.r_[0, np.flatnonzero(group[1:] != group[:-1]) + 1]
    serial = np.arange(len(group)) - np.repeat(start, np.diff(np.r_[start, len(group)])) + 1
    if len(serial) and serial.max() >= 10 ** 6:
        raise CityGridError("more than 999,999 cases in one district on one day: lower the size")
    prefix = _lookup(cases["district"], prefixes)
    day_text = np.strings.replace(np.datetime_as_string(day), "-", "").astype(object)
    cases["number"] = prefix + day_text + np.char.zfill(serial.astype(str), 6).astype(object)
    return _take(cases, np.lexsort((cases["number"].astype(str), cases["reported"])))


def as_exported(cases: Cases, cutoff: np.datetime64) -> Cases:
    """The cases as an export made at ``cutoff`` shows them: later stages blank, and what depends on them."""
    out = dict(cases)
    nat = np.datetime64("NaT")
    for stage in STAGES:
        out[stage] = np.where(cases[stage] < cutoff, cases[stage], nat)
    registered, dispatched = ~np.isnat(out["registered"]), ~np.isnat(out["dispatched"])
    for column in ("handle_deadline", "close_deadline"):
        out[column] = np.where(registered, cases[column], nat)
    out["extended"] = cases["extended"] & dispatched
    out["returned"] = np.where(dispatched, cases["returned"], 0)
    out["rework"] = np.where(~np.isnat(out["closed"]), cases["rework"], 0)
    out["level"] = np.where(~np.isnat(out["handled"]), cases["level"], None)
    out["unit"] = np.where(dispatched | (cases["self_handled"] & registered), cases["unit"], None)
    out["satisfaction"] = np.where(~np.isnat(out["evaluated"]), cases["satisfaction"], None)
    return out


# =========================================================================================== writers

_XML_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
_DOC_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_SHEET_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml"
_XLSX_PARTS = {
    "[Content_Types].xml": (
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        f'<Override PartName="/xl/workbook.xml" ContentType="{_SHEET_TYPE}.sheet.main+xml"/>'
        f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{_SHEET_TYPE}.worksheet+xml"/>'
        f'<Override PartName="/xl/sharedStrings.xml" ContentType="{_SHEET_TYPE}.sharedStrings+xml"/>'
        f'<Override PartName="/xl/styles.xml" ContentType="{_SHEET_TYPE}.styles+xml"/></Types>'),
    "_rels/.rels": (
        f'<Relationships xmlns="{_REL_NS}"><Relationship Id="rId1" Type="{_DOC_REL}/officeDocument" '
        'Target="xl/workbook.xml"/></Relationships>'),
    "xl/workbook.xml": (
        f'<workbook xmlns="{_MAIN_NS}" xmlns:r="{_DOC_REL}"><sheets>'
        '<sheet name="{sheet}" sheetId="1" r:id="rId1"/></sheets></workbook>'),
    "xl/_rels/workbook.xml.rels": (
        f'<Relationships xmlns="{_REL_NS}">'
        f'<Relationship Id="rId1" Type="{_DOC_REL}/worksheet" Target="worksheets/sheet1.xml"/>'
        f'<Relationship Id="rId2" Type="{_DOC_REL}/styles" Target="styles.xml"/>'
        f'<Relationship Id="rId3" Type="{_DOC_REL}/sharedStrings" Target="sharedStrings.xml"/></Relationships>'),
    # Style 1 shows a date and time (date cells are Excel serial days, as Excel and WPS write them).
    "xl/styles.xml": (
        f'<styleSheet xmlns="{_MAIN_NS}"><numFmts count="1"><numFmt numFmtId="164" '
        'formatCode="yyyy-mm-dd hh:mm:ss"/></numFmts><fonts count="1"><font><sz val="11"/><name val="宋体"/>'
        '</font></fonts><fills count="2"><fill><patternFill patternType="none"/></fill><fill>'
        '<patternFill patternType="gray125"/></fill></fills><borders count="1"><border><left/><right/><top/>'
        '<bottom/><diagonal/></border></borders><cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" '
        'borderId="0"/></cellStyleXfs><cellXfs count="2"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" '
        'xfId="0"/><xf numFmtId="164" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
        '</cellXfs><cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
        '</styleSheet>'),
}
#: Days from Excel's day 0 (1899-12-30) to the Unix epoch.
_EXCEL_EPOCH_DAYS = 25569.0


def _zip_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # fixed: byte-identical files
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


def _buffer_bytes(array: pa.Array | pa.ChunkedArray) -> memoryview:
    """The characters of a string array without nulls, concatenated (zero-copy from Arrow's buffers)."""
    array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    if not len(array):
        return memoryview(b"")
    _, offsets, data = array.buffers()
    width = np.int64 if pa.types.is_large_string(array.type) else np.int32
    bounds = np.frombuffer(offsets, dtype=width)[array.offset: array.offset + len(array) + 1]
    return memoryview(data)[int(bounds[0]): int(bounds[-1])]


def _escaped(text: pa.Array) -> pa.Array:
    for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;")):
        text = pc.replace_substring(text, char, entity)
    return text


class _XlsxWriter:
    """A streaming single-sheet XLSX writer, rows appended in chunks straight from Arrow tables.

    Text goes to the shared-string table (one entry per distinct value of a column in a chunk), timestamps
    become date cells, numbers numbers -- what Excel itself writes, and what spreadsheet readers parse
    fastest.  The sheet's XML is built by Arrow's vectorised string kernels: a month of a city's cases
    (800,000 rows) takes seconds, where a cell-by-cell writer takes many minutes.  The shared strings are
    spooled to a temporary file until the sheet is complete.
    """

    def __init__(self, path: Path, sheet: str, headers: list[str]) -> None:
        self._zip = zipfile.ZipFile(path, "w")
        for name, text in _XLSX_PARTS.items():
            self._zip.writestr(_zip_entry(name), _XML_HEAD + text.replace("{sheet}", sheet))
        self._sheet = self._zip.open(_zip_entry("xl/worksheets/sheet1.xml"), "w", force_zip64=True)
        self._sheet.write(f'{_XML_HEAD}<worksheet xmlns="{_MAIN_NS}"><sheetData>'.encode())
        self._strings = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self._unique = 0
        self._references = 0
        self._rows = 0
        self.write(pa.table({h: pa.array([h]) for h in headers}))

    def _cells(self, column: pa.Array) -> pa.Array:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            encoded = pc.dictionary_encode(column)
            entries = pc.binary_join_element_wise("<si><t>", _escaped(encoded.dictionary), "</t></si>", "")
            self._strings.write(_buffer_bytes(entries))
            index = pc.cast(pc.add(pc.cast(encoded.indices, pa.int64()), self._unique), pa.string())
            self._unique += len(encoded.dictionary)
            self._references += len(column) - column.null_count
            cell = pc.binary_join_element_wise('<c t="s"><v>', index, "</v></c>", "")
        elif pa.types.is_timestamp(column.type):
            seconds = pc.cast(pc.cast(column, pa.timestamp("s")), pa.int64())
            days = pc.add(pc.divide(pc.cast(seconds, pa.float64()), 86400.0), _EXCEL_EPOCH_DAYS)
            cell = pc.binary_join_element_wise('<c s="1"><v>', pc.cast(days, pa.string()), "</v></c>", "")
        else:
            cell = pc.binary_join_element_wise("<c><v>", pc.cast(column, pa.string()), "</v></c>", "")
        return pc.fill_null(cell, "<c/>")

    def write(self, table: pa.Table) -> None:
        """Append the table's rows (its columns in the order of the headers)."""
        cells = [self._cells(column.combine_chunks()) for column in table.itercolumns()]
        numbers = pc.cast(pa.array(np.arange(self._rows + 1, self._rows + table.num_rows + 1)), pa.string())
        rows = pc.binary_join_element_wise('<row r="', numbers, '">', *cells, "</row>", "")
        self._sheet.write(_buffer_bytes(rows))
        self._rows += table.num_rows

    def close(self) -> int:
        """Finish the file; the number of data rows written."""
        self._sheet.write(b"</sheetData></worksheet>")
        self._sheet.close()
        with self._zip.open(_zip_entry("xl/sharedStrings.xml"), "w", force_zip64=True) as target:
            target.write(f'{_XML_HEAD}<sst xmlns="{_MAIN_NS}" count="{self._references}" '
                         f'uniqueCount="{self._unique}">'.encode())
            self._strings.seek(0)
            shutil.copyfileobj(self._strings, target, 1 << 20)
            target.write(b"</sst>")
        self._strings.close()
        self._zip.close()
        return self._rows - 1


class _CsvWriter:
    """A CSV export written in chunks: UTF-8 with a byte-order mark (Excel's "CSV UTF-8") or GBK."""

    def __init__(self, path: Path, encoding: str, headers: tuple[str, ...]) -> None:
        self._file = path.open("wb")
        self._headers = headers
        self._encoding = encoding
        if encoding == "utf-8-sig":
            self._file.write(b"\xef\xbb\xbf")  # Excel's "CSV UTF-8" starts with a byte-order mark
        self._header = True
        self._rows = 0

    def write(self, table: pa.Table) -> None:
        buffer = io.BytesIO()
        pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=self._header, quoting_style="needed"))
        data = buffer.getvalue()
        if self._encoding not in ("utf-8", "utf-8-sig"):
            data = data.decode("utf-8").encode(self._encoding)
        self._file.write(data)
        self._header = False
        self._rows += table.num_rows

    def close(self) -> int:
        """Finish the file (a header alone if no row came); the number of data rows written."""
        if self._header:
            self.write(pa.table({h: pa.array([], type=pa.string()) for h in self._headers}))
        self._file.close()
        return self._rows


def _text(values: Any) -> pa.Array:
    return pa.array(np.asarray(values, dtype=object), type=pa.string(), from_pandas=True)


def _times(values: Any) -> pa.Array:
    """Wall-clock times to the second (null for NaT): CSV writes them 'YYYY-MM-DD HH:MM:SS', XLSX as dates."""
    return pa.array(np.asarray(values, dtype="datetime64[ns]").astype("datetime64[s]"), from_pandas=True)


def _yes_no(values: Any) -> pa.Array:
    return _text(np.where(np.asarray(values, dtype=bool), "是", "否"))


def _lon_lat(x: np.ndarray, y: np.ndarray, crs: str) -> tuple[np.ndarray, np.ndarray]:
    """Metric points as 6-decimal longitude/latitude in ``crs`` (EPSG:4326, EPSG:4490 or GCJ02)."""
    lon, lat = _wgs84_xy(x, y)
    if crs == "GCJ02":
        lon, lat = wgs84_to_gcj02(lon, lat)
    return np.round(lon, 6), np.round(lat, 6)


def _case_table(frame: Cases, crs: str) -> pa.Table:
    """Cases in the columns of the common Chinese case export (cn_case_export)."""
    lon, lat = _lon_lat(frame["x"], frame["y"], crs)
    columns = {
        "案件编号": _text(frame["number"]),
        "问题来源": _text(_lookup(frame["channel"], CHANNEL_WORDS)),
        "案件类型": _text(np.where(frame["kind"] == "component", "部件", "事件")),
        "大类": _text(frame["major_name"]),
        "小类": _text(frame["minor_name"]),
        "紧急程度": _text(np.where(frame["urgency"] == "urgent", "紧急", "一般")),
        "问题描述": _text(frame["description"]),
        "地址": _text(frame["address"]),
        "经度": pa.array(lon),
        "纬度": pa.array(lat),
        "部件编码": _text(frame["component_code"]),
        "上报时间": _times(frame["reported"]),
        "立案时间": _times(frame["registered"]),
        "派遣时间": _times(frame["dispatched"]),
        "处置时间": _times(frame["handled"]),
        "结案时间": _times(frame["closed"]),
        "作废时间": _times(frame["voided"]),
        "评价时间": _times(frame["evaluated"]),
        "处置时限": _times(frame["handle_deadline"]),
        "结案时限": _times(frame["close_deadline"]),
        "是否延期": _yes_no(frame["extended"]),
        "回退次数": pa.array(frame["returned"]),
        "返工次数": pa.array(frame["rework"]),
        "是否自行处置": _yes_no(frame["self_handled"]),
        "解决层级": _text(_lookup(frame["level"], LEVEL_WORDS)),
        "处置部门": _text(frame["unit"]),
        "满意度": _text(frame["satisfaction"]),
        "上报人": _text(frame["reporter_name"]),
        "联系电话": _text(frame["reporter_phone"]),
        "身份证号": _text(frame["reporter_id"]),
    }
    assert tuple(columns) == CASE_HEADERS
    return pa.table(columns)


def _entry(out_dir: Path, path: Path, kind: str, crs: str, rows: int, *, encoding: str | None = None,
           mapping: str | None = None, layer: str | None = None) -> dict[str, Any]:
    """One manifest line: what the loader passes to ``load_source`` for this file."""
    return {"path": path.relative_to(out_dir).as_posix(), "kind": kind, "crs": crs, "encoding": encoding,
            "mapping": mapping, "layer": layer, "rows": int(rows)}


def _write_layer(frame: gpd.GeoDataFrame, path: Path, layer: str | None = None, **options: Any) -> None:
    previous = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": _FILE_TIMESTAMP})  # fixed metadata timestamps
    try:
        pyogrio.write_dataframe(frame, path, layer=layer, **options)
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": previous})


def _write_admin(out_dir: Path, ground: Ground) -> list[dict[str, Any]]:
    """Districts (the shipped GCJ-02 GeoJSON), streets and communities (GeoPackage, CGCS2000), unit grids
    (Shapefile in Gauss-Krüger metres with a GBK code page)."""
    districts = out_dir / "01_districts_gcj02.geojson"
    shutil.copyfile(DATA_DIR / "boundaries" / "zibo_districts_gcj02.geojson", districts)
    admin = out_dir / "02_streets_communities_cgcs2000.gpkg"
    streets, communities, grids = ground.streets, ground.communities, ground.grids
    street_names = dict(zip(streets["code"], streets["name"], strict=True))
    _write_layer(gpd.GeoDataFrame({"区划代码": streets["code"], "名称": streets["name"], "层级": streets["kind"]},
                                  geometry=_to_wgs84(streets.geometry.to_numpy()), crs=4490), admin, "streets")
    _write_layer(gpd.GeoDataFrame({"区划代码": communities["code"], "名称": communities["name"],
                                   "层级": communities["level_word"],
                                   "所属街道": communities["street"].map(street_names)},
                                  geometry=_to_wgs84(communities.geometry.to_numpy()), crs=4490), admin, "communities")
    shp = out_dir / "03_unit_grids_gk117.shp"
    community_names = dict(zip(communities["code"], communities["name"], strict=True))
    _write_layer(gpd.GeoDataFrame({
        "网格编码": grids["code"], "网格名称": grids["name"], "所属社区": grids["community"].map(community_names),
        "层级": "单元网格", "责任单位": grids["community"].map(community_names) + "网格站",
        "网格类型": np.where(grids["fine"], "城区万米网格", "外围网格"),
        "面积": np.round(shapely.area(grids.geometry.to_numpy()), 1)},
        geometry=grids.geometry.to_numpy(), crs=METRIC_EPSG), shp, encoding="GBK",
        layer_options={"DBF_DATE_LAST_UPDATE": _FILE_TIMESTAMP[:10]})
    return [
        _entry(out_dir, districts, "admin_unit", "GCJ02", len(ground.districts), encoding="utf-8",
               mapping="admin_units"),
        _entry(out_dir, admin, "admin_unit", "EPSG:4490", len(streets), mapping="admin_units", layer="streets"),
        _entry(out_dir, admin, "admin_unit", "EPSG:4490", len(communities), mapping="admin_units",
               layer="communities"),
        _entry(out_dir, shp, "admin_unit", "EPSG:4548", len(grids), encoding="gbk", mapping="admin_units"),
    ]


def _write_management_grids(out_dir: Path, ground: Ground, mgrids: gpd.GeoDataFrame) -> dict[str, Any]:
    """Management grids as a GeoJSON in GCJ-02, as a centre's grid office draws them on an Amap map."""
    path = out_dir / "03b_management_grids_gcj02.geojson"
    community_names = dict(zip(ground.communities["code"], ground.communities["name"], strict=True))
    street_names = dict(zip(ground.streets["code"], ground.streets["name"], strict=True))
    wgs = _to_wgs84(mgrids.geometry.to_numpy())
    gcj = shapely.transform(wgs, lambda xy: np.column_stack(wgs84_to_gcj02(xy[:, 0], xy[:, 1])))
    with warnings.catch_warnings():  # no CRS on purpose: GeoJSON's only one is WGS 84, and these are GCJ-02
        warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
        _write_layer(gpd.GeoDataFrame({
            "网格编码": mgrids["code"], "网格名称": mgrids["name"], "所属街道": mgrids["street"].map(street_names),
            "所属社区": mgrids["community"].map(community_names), "社区编码": mgrids["community"],
            "网格类型": np.where(mgrids["outer"], "外围管理网格", "城区管理网格"), "单元网格数": mgrids["units"]},
            geometry=gcj, crs=None), path, driver="GeoJSON")
    return _entry(out_dir, path, "management_grid", "GCJ02", len(mgrids), encoding="utf-8",
                  mapping="management_grids")


def _write_components(out_dir: Path, components: pd.DataFrame, spec: SizeSpec) -> list[dict[str, Any]]:
    """Components as a GeoPackage in CGCS2000: one layer each of points, lines and polygons, by code."""
    path = out_dir / "04_components_cgcs2000.gpkg"
    entries = []
    for shape in ("point", "line", "polygon"):
        rows = components[components["shape"] == shape].sort_values("code")
        layer = f"components_{shape}"
        for start in range(0, max(len(rows), 1), spec.write_chunk_rows):
            chunk = rows.iloc[start: start + spec.write_chunk_rows]
            _write_layer(gpd.GeoDataFrame({
                "部件编码": chunk["code"], "部件名称": chunk["name"], "部件状态": chunk["state"].map(STATE_WORDS),
                "主管部门": chunk["owner"], "养护单位": chunk["maintainer"], "普查日期": chunk["surveyed_on"]},
                geometry=_to_wgs84(chunk["geometry"].to_numpy()), crs=4490), path, layer, append=start > 0)
        entries.append(_entry(out_dir, path, "component", "EPSG:4490", len(rows), mapping="components", layer=layer))
    return entries


def _write_cameras(out_dir: Path, cameras: pd.DataFrame, components: pd.DataFrame) -> dict[str, Any]:
    """Camera points as an XLSX with Chinese headers, coordinates in GCJ-02 (picked on an Amap map)."""
    path = out_dir / "05_cameras_gcj02.xlsx"
    linked = components.dropna(subset=["camera"]).set_index("camera")["code"]
    lon, lat = _lon_lat(cameras["x"].to_numpy(), cameras["y"].to_numpy(), "GCJ02")
    table = pa.table({
        "设备编码": _text(cameras["camera_id"]), "点位名称": _text(cameras["name"]),
        "点位类型": _text(cameras["type"].map(CAMERA_WORDS)), "经度": pa.array(lon), "纬度": pa.array(lat),
        "朝向": pa.array(cameras["heading"].to_numpy()), "视场角": pa.array(cameras["fov"].to_numpy()),
        "可视距离": pa.array(cameras["range"].to_numpy()),
        "在线状态": _text(np.where(cameras["online"], "在线", "离线")),
        "智能分析": _text(np.where(cameras["ai"], "是", "否")),
        "部件编码": _text(cameras["camera_id"].map(linked)),
    })
    writer = _XlsxWriter(path, "监控点位", table.column_names)
    writer.write(table)
    return _entry(out_dir, path, "camera", "GCJ02", writer.close(), mapping="cameras")


def _stage_changed(before: Cases, after: Cases) -> np.ndarray:
    changed = np.zeros(len(before["number"]), dtype=bool)
    for stage in STAGES:
        a, b = before[stage], after[stage]
        changed |= ~((a == b) | (np.isnat(a) & np.isnat(b)))
    return changed


def _chunks(cases: Cases, size: int) -> Iterator[Cases]:
    rows = len(cases["number"])
    for start in range(0, rows, size):
        yield {name: values[start: start + size] for name, values in cases.items()}  # views, no copies


def _write_cases(out_dir: Path, setting: CaseSetting, spec: SizeSpec, say: Progress,
                 emit: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    """One export per month as it stood at the month's cut-off, then the later stage updates."""
    folder = out_dir / "cases"
    folder.mkdir(exist_ok=True)
    months = setting.months()
    entries = []
    updates_path = folder / f"case_updates_{str(setting.now)[:10]}.csv"
    updates = _CsvWriter(updates_path, "utf-8-sig", CASE_HEADERS)
    for index, (first, cutoff) in enumerate(months):
        label = str(first)[:7]
        xlsx = index in spec.xlsx_months
        # The older system exported GBK; after an upgrade half-way through the year, UTF-8 with a BOM.
        encoding = None if xlsx else ("gbk" if index < len(months) // 2 else "utf-8-sig")
        crs = "GCJ02" if xlsx else "EPSG:4326"
        path = folder / f"cases_{label}.{'xlsx' if xlsx else 'csv'}"
        say(f"cases {label} ({index + 1}/{len(months)})")
        cases = month_cases(setting, index)
        exported = as_exported(cases, cutoff.astype("datetime64[ns]"))
        writer: _XlsxWriter | _CsvWriter = (_XlsxWriter(path, "案件导出", list(CASE_HEADERS)) if xlsx
                                            else _CsvWriter(path, encoding or "utf-8", CASE_HEADERS))
        for chunk in _chunks(exported, spec.write_chunk_rows):
            writer.write(_case_table(chunk, crs))
        entries.append(_entry(out_dir, path, "case", crs, writer.close(), encoding=encoding,
                              mapping="cn_case_export"))
        emit(entries[-1])
        final = as_exported(cases, setting.now)
        moved = _take(final, np.flatnonzero(_stage_changed(exported, final)))
        for chunk in _chunks(moved, spec.write_chunk_rows):
            updates.write(_case_table(chunk, "EPSG:4326"))
    entries.append(_entry(out_dir, updates_path, "case", "EPSG:4326", updates.close(), encoding="utf-8-sig",
                          mapping="cn_case_export"))
    emit(entries[-1])
    return entries


# ========================================================================================== manifest


def generator_inputs() -> dict[str, str]:
    """SHA-256 of everything a generated set depends on: the city's inputs, the boundaries, this generator.

    A set whose manifest names other inputs is stale (``etl.demo.manifest_matches`` says so and the demo is
    generated again): a changed generator writes other files, e.g. a new kind of source.
    """
    return {"demo_city.yaml": file_sha256(CITY_FILE),
            "boundaries": file_sha256(DATA_DIR / "boundaries" / "zibo_districts_gcj02.geojson"),
            "generator": file_sha256(Path(__file__))}


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    """The manifest of a generated set, or None when there is none (or it is not one of ours)."""
    path = Path(out_dir) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if manifest.get("format") == MANIFEST_FORMAT else None


def _remove_previous(out_dir: Path) -> None:
    """Delete the files of an earlier generation in ``out_dir`` (only those its manifest lists)."""
    manifest = read_manifest(out_dir)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    if manifest is None:
        return
    for entry in manifest["files"]:
        path = out_dir / entry["path"]
        for sibling in path.parent.glob(path.stem + ".*") if path.suffix == ".shp" else [path]:
            sibling.unlink(missing_ok=True)


def generate(out_dir: Path, size: Size | SizeSpec = "demo", *, seed: int = 20251125,
             reference_date: date | None = None, progress: Progress | None = None,
             on_file: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Write the demo city's source files and ``manifest.json`` (listing them in load order) to ``out_dir``.

    Parameters
    ----------
    out_dir
        Folder for the files; files of an earlier generation there are replaced.
    size
        ``"demo"`` (about 100,000 cases) or ``"city"`` (10,000,000 cases, 20,000+ grids, 1,000,000
        components, 10,000 cameras), as ``generator.sizes`` in demo_city.yaml sets them; or a
        :class:`SizeSpec` (e.g. ``size_spec("demo").scaled(0.1)`` for tests).
    seed
        The random seed; with the same inputs and reference date the files are byte-identical.
    reference_date
        "Today": cases cover the 365 days before it and no stage lies at or after its midnight
        (Asia/Shanghai).  Default: today's date in Asia/Shanghai.
    progress
        Called with a short message as each step starts.
    on_file
        Called with each file's manifest entry as soon as the file is complete, in load order (so that a
        loader can start on the first files while the cases are still being generated).  The manifest
        itself is written last: a folder without one holds no complete set.

    Returns
    -------
    dict
        The manifest: size, seed, reference date, counts, and per file its path (relative to
        ``out_dir``), kind, crs, encoding, mapping, layer and row count.
    """
    say = progress or (lambda message: None)
    city = read_city()
    spec = size if isinstance(size, SizeSpec) else size_spec(size, city)
    reference = reference_date or datetime.now(TIMEZONE).date()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_previous(out_dir)
    categories = read_categories()
    say("streets, communities and unit grids")
    ground = build_ground(city, spec, seed)
    emit = on_file or (lambda entry: None)
    say("writing admin units")
    files = _write_admin(out_dir, ground)
    for entry in files:
        emit(entry)
    say("management grids")
    mgrids, _ = build_management_grids(ground, spec)
    files.append(_write_management_grids(out_dir, ground, mgrids))
    emit(files[-1])
    say("places, cameras and components")
    places = build_places(city, ground, seed)
    cameras = build_cameras(city, ground, spec, seed)
    components = build_components(city, ground, cameras, spec, seed, categories)
    for entry in [*_write_components(out_dir, components, spec), _write_cameras(out_dir, cameras, components)]:
        files.append(entry)
        emit(entry)
    setting = case_setting(city, ground, places, components, cameras, spec, seed, reference)
    files += _write_cases(out_dir, setting, spec, say, emit)
    say("roads and a week of patrol and sanitation tracks")
    from etl.demo.tracks import write_tracks  # imported here: it builds on this module's helpers

    files += write_tracks(out_dir, city, ground, components, seed, reference, emit)
    case_files = [f for f in files if f["kind"] == "case"]
    manifest = {
        "format": MANIFEST_FORMAT,
        "size": spec.name,
        "seed": seed,
        "reference_date": reference.isoformat(),
        "period": [str(setting.days[0]), str(setting.days[-1])],
        "inputs": generator_inputs(),
        "counts": {
            "districts": len(ground.districts), "streets": len(ground.streets),
            "communities": len(ground.communities), "grids": len(ground.grids),
            "fine_grids": int(ground.grids["fine"].sum()), "management_grids": len(mgrids), "components": len(components),
            "cameras": len(cameras), "cases": sum(f["rows"] for f in case_files[:-1]),
            "case_updates": case_files[-1]["rows"],
        },
        "files": files,
    }
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n",
                                         encoding="utf-8")
    return manifest

