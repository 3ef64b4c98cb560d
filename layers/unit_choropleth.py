"""The children of the unit in view as a choropleth, coloured by one figure per unit (the grid statistics map).

Geometry is simplified in PostGIS per level (ST_SimplifyPreserveTopology, so neighbours still meet) and
cached per process by (level, parent, data version): a load bumps the version, so a cached outline is never
stale.  Only one parent's children are drawn — a community's grids, never the city's 25,000 grids at once —
so a figure stays far below 2 MB.  A grid in view draws its community's grids with the grid outlined.
Each feature's id is the unit's code, so a click names the code to drill into.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Engine, text

from layers.base import Layer, MapView, register
from layers.i18n import t

#: Simplification tolerance in degrees by the level drawn (about 50 m, 15 m, 5 m, 1 m).
TOLERANCE_BY_LEVEL: Final = {"district": 0.0005, "street": 0.00015, "community": 0.00005, "grid": 0.00001}
#: Decimals of the coordinates sent (1e-5 degrees is about 1 m).
DECIMALS: Final = 5
CACHE_ENTRIES: Final = 128
COLOURSCALE: Final = [[0.0, "#f7fbff"], [0.5, "#6baed6"], [1.0, "#08306b"]]
#: The no-data fill and the outline of the unit picked.
EMPTY_RGBA: Final = "rgba(200,200,200,0.35)"
PICKED_COLOUR: Final = "#ff7a00"

_SQL = text(
    "SELECT code, name, ST_AsGeoJSON(ST_SimplifyPreserveTopology(geom, :tolerance), :decimals) AS geometry,"
    " ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom)"
    " FROM core.admin_unit WHERE level = :level"
    " AND (CAST(:parent AS text) IS NULL OR parent_code = :parent) ORDER BY code"
)


@dataclass(frozen=True)
class UnitShapes:
    """Simplified outlines of one parent's children: FeatureCollection, codes, names, bounds."""

    level: str
    parent: str | None
    geojson: dict[str, Any]
    codes: tuple[str, ...]
    names: tuple[str, ...]
    bounds: tuple[float, float, float, float] | None


@dataclass(frozen=True)
class UnitValues:
    """The shapes and, per code, the value that colours it and the text shown for it."""

    shapes: UnitShapes
    values: Mapping[str, float | None]
    labels: Mapping[str, str]
    measure_name: str
    picked: str | None = None
    zmax: float | None = None


_cache: OrderedDict[tuple[str, str | None, int], UnitShapes] = OrderedDict()
_cache_lock = threading.Lock()


def drawn_level(view: MapView) -> tuple[str, str | None]:
    """The level drawn and its parent: the children of the unit in view, or a grid's siblings."""
    if view.child_level is None:  # a grid: its community's grids
        assert view.area_code is not None
        return "grid", view.area_code[:12]
    return view.child_level, view.area_code


def unit_shapes(engine: Engine, view: MapView, version: int) -> UnitShapes:
    """The simplified outlines drawn for ``view`` (cached by level, parent and data version)."""
    level, parent = drawn_level(view)
    key = (level, parent, version)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    with engine.connect() as conn:
        rows = conn.execute(_SQL, {"tolerance": TOLERANCE_BY_LEVEL[level], "decimals": DECIMALS, "level": level,
                                   "parent": parent}).all()
    features = [{"type": "Feature", "id": r[0], "properties": {"name": r[1]}, "geometry": json.loads(r[2])}
                for r in rows]
    bounds = (min(r[3] for r in rows), min(r[4] for r in rows), max(r[5] for r in rows),
              max(r[6] for r in rows)) if rows else None
    shapes = UnitShapes(level, parent, {"type": "FeatureCollection", "features": features},
                        tuple(r[0] for r in rows), tuple(r[1] for r in rows), bounds)
    with _cache_lock:
        _cache[key] = shapes
        while len(_cache) > CACHE_ENTRIES:
            _cache.popitem(last=False)
    return shapes


@register
class UnitChoropleth(Layer[UnitValues]):
    """The children of the unit in view coloured by a figure the page computed (e.g. the share solved in the grid)."""

    name = "unit_choropleth"

    def query(self, engine: Engine, view: MapView, values: Mapping[str, float | None] | None = None,  # type: ignore[override]
              labels: Mapping[str, str] | None = None, measure_name: str = "", version: int = 0,
              zmax: float | None = None) -> UnitValues:
        shapes = unit_shapes(engine, view, version)
        picked = view.area_code if view.child_level is None else None
        return UnitValues(shapes, dict(values or {}), dict(labels or {}), measure_name, picked, zmax)

    def draw(self, data: UnitValues, lang: str) -> list[dict[str, Any]]:
        shapes = data.shapes
        if not shapes.codes:
            return []
        level_name = t(f"level.{shapes.level}", lang)
        known = [c for c in shapes.codes if data.values.get(c) is not None]
        unknown = [c for c in shapes.codes if data.values.get(c) is None]
        names = dict(zip(shapes.codes, shapes.names, strict=True))

        def only(codes: list[str]) -> dict[str, Any]:  # each trace carries just its own features
            wanted = set(codes)
            return {"type": "FeatureCollection",
                    "features": [f for f in shapes.geojson["features"] if f["id"] in wanted]}

        hover = f"%{{customdata[1]}}<br>{level_name} %{{customdata[0]}}<br>{data.measure_name}: %{{customdata[2]}}<extra></extra>"
        traces: list[dict[str, Any]] = []
        if unknown:
            traces.append({
                "type": "choroplethmap", "geojson": only(unknown), "locations": unknown, "z": [0] * len(unknown),
                "customdata": [[c, names[c], data.labels.get(c, "—")] for c in unknown],
                "colorscale": [[0, EMPTY_RGBA], [1, EMPTY_RGBA]], "showscale": False,
                "marker": {"line": {"color": "#8c8c8c", "width": 0.6}}, "hovertemplate": hover,
                "name": t("grids.no_data", lang)})
        if known:
            z = [float(data.values[c]) for c in known]  # type: ignore[arg-type]
            traces.append({
                "type": "choroplethmap", "geojson": only(known), "locations": known, "z": z,
                "zmin": 0, "zmax": data.zmax if data.zmax is not None else max(max(z), 1e-9),
                "customdata": [[c, names[c], data.labels.get(c, "")] for c in known],
                "colorscale": COLOURSCALE, "marker": {"opacity": 0.85, "line": {"color": "#1f3b57", "width": 0.8}},
                "colorbar": {"title": {"text": data.measure_name}, "thickness": 12},
                "hovertemplate": hover, "name": level_name})
        if data.picked in names:
            traces.append({
                "type": "choroplethmap", "geojson": only([data.picked]), "locations": [data.picked], "z": [1],
                "customdata": [[data.picked, names[data.picked], data.labels.get(data.picked, "")]],
                "colorscale": [[0, "rgba(0,0,0,0)"], [1, "rgba(0,0,0,0)"]], "showscale": False,
                "marker": {"line": {"color": PICKED_COLOUR, "width": 3}}, "hovertemplate": hover,
                "name": names[data.picked]})
        return traces
