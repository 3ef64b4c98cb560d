"""The public map's layer: cases of the last N days aggregated to unit grids or H3 cells, from open_data only.

Everything here reads the ``open_data`` views with the public engine, so the policy of those views (delay,
window, no sensitive category, no voided case, no exact place, no person) holds whatever is asked.  On top
of it, a place with fewer than k cases (``open_data.public_policy.min_cases``) is drawn without rates and
gets no breakdown: a count of one or two cases in one grid can point at a household.

The map, the streets and a place's headline numbers come from the public rollups (migration 0006: sums per
report day, read through ``open_data.case_public_h3`` / ``_grid`` / ``_street``), never from raw cases: at
10 million cases a year, 90 days of ``case_public`` is 2.5 million rows per question.  So the window is
"the last N whole days" (``open_data.public_days``: a day is public once it ended ``delay_hours`` ago).
A click's counts by category read that one place's cases over the same whole days
(``open_data.case_public_day``) through the grid index of core.case_record: a grid's own, an H3 cell's
through the grids that touch it (0.1-0.4 s at 10 million cases instead of a 1 s scan of the window).

Colour: the share of a place's cases solved on time (按期解决占比: closed at or before the deadline, over
all its cases), which says at once how many were solved and how fast; the hover adds the average handling
time (上报 → 处置).  A place below k is grey.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Final, Literal

import h3
from sqlalchemy import Connection, Engine, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import Text

from geodata.kpi import RATES_BY_KEY, format_percent
from layers.base import Layer, LayerError, MapView, register
from layers.i18n import t

Unit = Literal["grid", "h3_r7", "h3_r8"]
UNITS: Final[tuple[str, ...]] = ("h3_r8", "h3_r7", "grid")
DAY_CHOICES: Final[tuple[int, ...]] = (7, 30, 90)
GRID_SIMPLIFY_DEG: Final = 0.00002  # about 2 m: grids stay recognisable, vertices drop
BELOW_K_COLOUR: Final = "#b8c2cc"
#: Red (few solved on time) → amber → green (all solved on time).
COLOURSCALE: Final = [[0.0, "#d73027"], [0.5, "#fdae61"], [0.8, "#a6d96a"], [1.0, "#1a9850"]]

# The window: the last N whole public days (the views already hold only the policy's days).
_DAYS = " r.day > (SELECT last_day FROM open_data.public_days) - :days"
_AGGREGATES = (
    " sum(r.cases) AS cases, sum(r.solved) AS solved, sum(r.solved_on_time) AS solved_on_time,"
    " sum(r.solved_in_grid) AS solved_in_grid, sum(r.solved_with_level) AS solved_with_level,"
    " coalesce(sum(r.handle_hours_sum), 0) AS handle_hours_sum, sum(r.handle_hours_count) AS handle_hours_count"
)
#: The view each unit reads and the column it groups or filters by (a closed set, never input).
_SOURCE: Final = {
    "grid": ("open_data.case_public_grid", "r.grid_code"),
    "h3_r7": ("open_data.case_public_h3", "r.h3_r7"),
    "h3_r8": ("open_data.case_public_h3", "r.h3_r8"),
}
_CELLS_SQL: Final = {
    unit: text(f"SELECT {column} AS cell,{_AGGREGATES} FROM {view} r WHERE{_DAYS}"  # noqa: S608
               + (" AND r.street_code = :street" if unit == "grid"
                  else " AND (CAST(:street AS text) IS NULL OR r.street_code = :street)")
               + f" GROUP BY {column}")
    for unit, (view, column) in _SOURCE.items()
}
_STREETS_SQL: Final = text(
    f"SELECT r.street_code AS cell,{_AGGREGATES} FROM open_data.case_public_street r WHERE{_DAYS}"  # noqa: S608
    " GROUP BY r.street_code"
)
_PLACE_SQL: Final = {
    unit: text(f"SELECT{_AGGREGATES} FROM {view} r WHERE{_DAYS} AND {column} = :cell")
    for unit, (view, column) in _SOURCE.items()
}
# Counts by category of one place over the same whole days, from open_data.case_public_day (its cases).
# case_record has an index by grid, not by H3 cell: a cell's cases are read as those of the grids that
# touch the cell (and of no grid), then kept by cell; "by_cell" alone, a scan of the days, is the fallback.
_CATEGORY_FILTER: Final = {
    "grid": " AND c.grid_code = :cell",
    "h3_r7": " AND c.h3_r7 = :cell AND (c.grid_code = ANY(CAST(:grids AS text[])) OR c.grid_code IS NULL)",
    "h3_r8": " AND c.h3_r8 = :cell AND (c.grid_code = ANY(CAST(:grids AS text[])) OR c.grid_code IS NULL)",
    "h3_r7_by_cell": " AND c.h3_r7 = :cell",
    "h3_r8_by_cell": " AND c.h3_r8 = :cell",
}
_CATEGORIES_SQL: Final = {
    key: text(
        "SELECT c.kind, c.category_code, cat.name_zh, cat.name_en, count(*) AS cases"  # noqa: S608
        " FROM open_data.case_public_day c"
        " JOIN open_data.category cat ON cat.kind = c.kind AND cat.code = c.category_code"
        " WHERE c.day > (SELECT last_day FROM open_data.public_days) - :days"
        + clause + " GROUP BY c.kind, c.category_code, cat.name_zh, cat.name_en"
        " ORDER BY cases DESC, c.category_code"
    ).bindparams(*([bindparam("grids", type_=ARRAY(Text))] if ":grids" in clause else []))
    for key, clause in _CATEGORY_FILTER.items()
}
#: Unit grids that touch a place given as GeoJSON (a cell's finest descendants; 0.00005° ≈ 5 m of slack).
_GRIDS_TOUCHING_SQL: Final = text(
    "SELECT code FROM open_data.admin_unit WHERE level = 'grid'"
    " AND ST_Intersects(geom, ST_Buffer(ST_SetSRID(ST_GeomFromGeoJSON(:shape), 4326), 0.00005))"
)
_GRID_SHAPES_SQL: Final = text(
    "SELECT code, name, ST_AsGeoJSON(ST_SimplifyPreserveTopology(geom, :tolerance), 6) AS geometry"
    " FROM open_data.admin_unit WHERE level = 'grid' AND street_code = :street"
)
_STREET_NAMES_SQL: Final = text("SELECT code, name FROM open_data.admin_unit WHERE level IN ('district', 'street')")
_POLICY_SQL: Final = text("SELECT delay_hours, window_days, min_cases FROM open_data.public_policy")
_PUBLIC_DAYS_SQL: Final = text("SELECT first_day, last_day FROM open_data.public_days")


@dataclass(frozen=True)
class Policy:
    """What the public views enforce (open_data.public_policy): delay, window and k."""

    delay_hours: int
    window_days: int
    min_cases: int


@dataclass(frozen=True)
class PlaceStats:
    """The aggregate of one place (a cell, a grid or a street) over the window."""

    code: str
    cases: int
    solved: int
    solved_on_time: int
    solved_in_grid: int
    solved_with_level: int
    handle_hours_sum: float
    handle_hours_count: int

    def shown(self, k: int) -> bool:
        """Whether the place has enough cases to show its rates and breakdown."""
        return self.cases >= k

    @property
    def on_time_share(self) -> float | None:
        """按期解决占比: cases closed at or before the deadline, over all the place's cases."""
        return self.solved_on_time / self.cases if self.cases else None

    @property
    def solved_share(self) -> float | None:
        """Share of the place's cases closed."""
        return self.solved / self.cases if self.cases else None

    @property
    def in_grid_share(self) -> float | None:
        """网格解决率 as geodata.kpi defines it: solved in the grid over solved with a known level."""
        return self.solved_in_grid / self.solved_with_level if self.solved_with_level else None

    @property
    def average_handle_hours(self) -> float | None:
        """Mean hours from report to handled, over the handled cases."""
        return self.handle_hours_sum / self.handle_hours_count if self.handle_hours_count else None


@dataclass(frozen=True)
class PublicCells:
    """What the map draws: the places of one unit with their stats and shapes, and k."""

    unit: str
    days: int
    min_cases: int
    places: list[PlaceStats]
    geojson: dict[str, Any]
    names: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Breakdown:
    """One place's detail: its stats and its counts by category (empty when below k)."""

    stats: PlaceStats | None
    min_cases: int
    categories: list[dict[str, Any]]


def check_days(days: object, policy: Policy) -> int:
    """``days`` as an int in 1..policy.window_days, else LayerError."""
    if isinstance(days, bool) or not isinstance(days, int | str):
        raise LayerError("days must be a whole number")
    try:
        value = int(days)
    except ValueError:
        raise LayerError("days must be a whole number") from None
    if not 1 <= value <= policy.window_days:
        raise LayerError(f"days must be between 1 and {policy.window_days}")
    return value


def check_unit(unit: object) -> str:
    """``unit`` if it is one of UNITS, else LayerError."""
    if not isinstance(unit, str) or unit not in UNITS:
        raise LayerError(f"unit must be one of {', '.join(UNITS)}")
    return unit


def check_street(street: object) -> str | None:
    """A 9-digit street code or None, else LayerError."""
    if street is None or street == "":
        return None
    if not isinstance(street, str) or len(street) != 9 or not street.isdigit():
        raise LayerError("street must be a 9-digit street code")
    return street


def check_cell(unit: str, cell: object) -> str | int:
    """A grid code (14-16 digits) or an H3 cell of the unit's resolution (as its integer), else LayerError."""
    if not isinstance(cell, str) or len(cell) > 32:
        raise LayerError("cell must be a grid code or an H3 index")
    if unit == "grid":
        if not (cell.isdigit() and 14 <= len(cell) <= 16):
            raise LayerError("cell must be a 14-16 digit grid code")
        return cell
    resolution = int(unit[-1])
    if not all(ch in "0123456789abcdef" for ch in cell) or not h3.is_valid_cell(cell) \
            or h3.get_resolution(cell) != resolution:
        raise LayerError(f"cell must be an H3 index of resolution {resolution}")
    return h3.str_to_int(cell)


def read_policy(conn: Connection) -> Policy:
    """The public policy the views enforce."""
    row = conn.execute(_POLICY_SQL).mappings().one()
    return Policy(int(row["delay_hours"]), int(row["window_days"]), int(row["min_cases"]))


def public_days(conn: Connection, days: int) -> tuple[date, date]:
    """The first and last report day of "the last ``days`` whole days" the public sees now."""
    last = conn.execute(_PUBLIC_DAYS_SQL).one().last_day
    return last - timedelta(days=days - 1), last


def _stats(row: Any, code: str) -> PlaceStats:
    return PlaceStats(code, int(row["cases"]), int(row["solved"]), int(row["solved_on_time"]),
                      int(row["solved_in_grid"]), int(row["solved_with_level"]), float(row["handle_hours_sum"]),
                      int(row["handle_hours_count"]))


def _cell_code(unit: str, value: Any) -> str:
    return str(value) if unit == "grid" else h3.int_to_str(int(value))


def _hexagon(cell: str) -> dict[str, Any]:
    ring = [[round(lng, 5), round(lat, 5)] for lat, lng in h3.cell_to_boundary(cell)]  # 1 m is plenty
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


def street_stats(conn: Connection, days: int) -> list[PlaceStats]:
    """Every street's aggregate over the last ``days`` days (streets with cases only)."""
    rows = conn.execute(_STREETS_SQL, {"days": days}).mappings().all()
    return sorted((_stats(r, str(r["cell"])) for r in rows), key=lambda s: s.code)


def unit_names(conn: Connection) -> dict[str, str]:
    """Names of districts and streets by code (the public admin view)."""
    return {str(r.code): str(r.name) for r in conn.execute(_STREET_NAMES_SQL)}


#: The resolution the ETL computes H3 cells at (etl/locate.py); coarser cells are its parents, so a cell's
#: cases lie in its descendants at this resolution, not exactly in its own hexagon.
FINEST_H3: Final = 10


def breakdown(conn: Connection, unit: str, cell: str | int, days: int, policy: Policy) -> Breakdown:
    """Counts by category and the average handling time of one place; no categories when below k.

    The headline comes from the rollups; the categories from the place's cases over the same days, and
    they add up to the headline (else, e.g. a case whose grid does not touch its cell, the cell is read
    by its H3 column instead).
    """
    params: dict[str, Any] = {"days": days, "cell": cell}
    row = conn.execute(_PLACE_SQL[unit], params).mappings().one()
    code = cell if isinstance(cell, str) else h3.int_to_str(cell)
    stats = _stats(row, code) if row["cases"] else None
    if stats is None or not stats.shown(policy.min_cases):
        return Breakdown(stats, policy.min_cases, [])
    if unit != "grid":
        shape = h3.cells_to_geo(h3.cell_to_children(code, FINEST_H3))
        params["grids"] = list(conn.execute(_GRIDS_TOUCHING_SQL, {"shape": json.dumps(shape)}).scalars())
    rows = conn.execute(_CATEGORIES_SQL[unit], params).mappings().all()
    if unit != "grid" and sum(int(r["cases"]) for r in rows) != stats.cases:
        rows = conn.execute(_CATEGORIES_SQL[f"{unit}_by_cell"], params).mappings().all()
    return Breakdown(stats, policy.min_cases, [dict(r) for r in rows])


@register
class PublicCases(Layer[PublicCells]):
    """Cases of the last N days per unit grid (inside one street) or per H3 cell, from the public views."""

    name = "public_cases"

    def query(self, engine: Engine, view: MapView, *, days: int = 30, unit: str = "h3_r8",
              street: str | None = None) -> PublicCells:
        """The places of ``unit`` over the last ``days`` days; grids are drawn one street at a time."""
        unit = check_unit(unit)
        street = check_street(street if street is not None else (view.area_code if view.level == "street" else None))
        if unit == "grid" and street is None:
            raise LayerError("unit grids are drawn one street at a time: choose a street")
        with engine.connect() as conn:
            policy = read_policy(conn)
            days = check_days(days, policy)
            rows = conn.execute(_CELLS_SQL[unit], {"days": days, "street": street}).mappings().all()
            places = [_stats(r, _cell_code(unit, r["cell"])) for r in rows]
            names: dict[str, str] = {}
            if unit == "grid":
                shapes = conn.execute(_GRID_SHAPES_SQL, {"street": street, "tolerance": GRID_SIMPLIFY_DEG}).all()
                geometry = {s.code: json.loads(s.geometry) for s in shapes}
                names = {s.code: s.name for s in shapes}
            else:
                geometry = {p.code: _hexagon(p.code) for p in places}
        places = sorted((p for p in places if p.code in geometry), key=lambda p: p.code)
        features = [{"type": "Feature", "id": p.code, "properties": {}, "geometry": geometry[p.code]} for p in places]
        return PublicCells(unit, days, policy.min_cases, places, {"type": "FeatureCollection", "features": features},
                           names)

    def draw(self, data: PublicCells, lang: str) -> list[dict[str, Any]]:
        """Two choropleth traces: places with k cases or more coloured by on-time share, the others grey."""
        k = data.min_cases
        shown = [p for p in data.places if p.shown(k)]
        hidden = [p for p in data.places if not p.shown(k)]
        cases_word, on_time_word = t("public.cases", lang), t("public.on_time_share", lang)
        grid_word = RATES_BY_KEY["grid_resolution_share"].name_zh if lang == "zh-CN" \
            else RATES_BY_KEY["grid_resolution_share"].name_en
        hours_word = t("public.avg_hours", lang)
        traces: list[dict[str, Any]] = []
        if shown:
            traces.append({
                "type": "choroplethmap",
                "geojson": _subset(data.geojson, shown),
                "locations": [p.code for p in shown],
                "z": [round(p.on_time_share or 0.0, 4) for p in shown],
                "zmin": 0, "zmax": 1,
                "colorscale": COLOURSCALE,
                "marker": {"opacity": 0.75, "line": {"color": "#ffffff", "width": 0.5}},
                "colorbar": {"title": {"text": on_time_word}, "tickformat": ".0%", "thickness": 10, "len": 0.6},
                "customdata": [[
                    p.code, data.names.get(p.code, p.code), p.cases, format_percent(p.on_time_share),
                    format_percent(p.in_grid_share),
                    "—" if p.average_handle_hours is None else f"{p.average_handle_hours:.1f}",
                ] for p in shown],
                "hovertemplate": (f"%{{customdata[1]}}<br>{cases_word} %{{customdata[2]}}<br>{on_time_word} "
                                  f"%{{customdata[3]}}<br>{grid_word} %{{customdata[4]}}<br>{hours_word} "
                                  "%{customdata[5]}<extra></extra>"),
                "name": on_time_word,
            })
        if hidden:
            traces.append({
                "type": "choroplethmap",
                "geojson": _subset(data.geojson, hidden),
                "locations": [p.code for p in hidden],
                "z": [0] * len(hidden),
                "colorscale": [[0, BELOW_K_COLOUR], [1, BELOW_K_COLOUR]],
                "showscale": False,
                "marker": {"opacity": 0.6, "line": {"color": "#ffffff", "width": 0.5}},
                "customdata": [[p.code, data.names.get(p.code, p.code)] for p in hidden],
                "hovertemplate": "%{customdata[1]}<br>" + t("public.below_k", lang).format(k=k) + "<extra></extra>",
                "name": t("public.below_k", lang).format(k=k),
            })
        return traces


def _subset(geojson: dict[str, Any], places: list[PlaceStats]) -> dict[str, Any]:
    """The features of ``places`` only: each trace carries its own shapes, not everybody's."""
    wanted = {p.code for p in places}
    return {"type": "FeatureCollection", "features": [f for f in geojson["features"] if f["id"] in wanted]}


_OUTLINES_SQL: Final = text(
    "SELECT code, name, ST_AsGeoJSON(ST_SimplifyPreserveTopology(geom, 0.0003), 5) AS geometry"
    " FROM open_data.admin_unit WHERE level = 'street' ORDER BY code"
)
_EXTENT_SQL: Final = text(
    "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e)"
    " FROM (SELECT ST_Extent(geom) AS e FROM open_data.admin_unit WHERE level = 'district') x"
)


@dataclass(frozen=True)
class Outlines:
    """The streets' outlines (the public map's ground) and the city's extent."""

    geojson: dict[str, Any]
    codes: list[str]
    bounds: tuple[float, float, float, float] | None


def street_outlines(conn: Connection) -> Outlines:
    """Simplified street outlines from the public admin view, and the districts' extent."""
    rows = conn.execute(_OUTLINES_SQL).all()
    extent = conn.execute(_EXTENT_SQL).one()
    features = [{"type": "Feature", "id": r.code, "properties": {}, "geometry": json.loads(r.geometry)} for r in rows]
    bounds = None if extent[0] is None else (float(extent[0]), float(extent[1]), float(extent[2]), float(extent[3]))
    return Outlines({"type": "FeatureCollection", "features": features}, [r.code for r in rows], bounds)


def draw_outlines(outlines: Outlines) -> dict[str, Any]:
    """One transparent choropleth with thin outlines; it takes no hover and no click."""
    return {
        "type": "choroplethmap",
        "geojson": outlines.geojson,
        "locations": outlines.codes,
        "z": [0] * len(outlines.codes),
        "colorscale": [[0, "rgba(0,0,0,0)"], [1, "rgba(0,0,0,0)"]],
        "showscale": False,
        "marker": {"line": {"color": "#5b6b7c", "width": 1}},
        "hoverinfo": "skip",
        "name": "streets",
    }
