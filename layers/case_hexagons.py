"""Case density as H3 hexagons whose resolution follows the zoom, and the same counts as a smooth density view.

Counts come from the facts engine (geodata/facts.py, ``group_counts(query, "h3_r7|8|9")``), so any filter
combination costs one in-memory scan, never a scan of raw cases.  Hexagon outlines come from
``h3.cell_to_boundary`` and are cached per cell for the life of the process (a cell's shape never changes),
so a redraw only looks up the cells it already drew.

Resolution follows the view: r7 (about 5 km²) for the city, r8 (0.7 km²) for a district, r9 (0.1 km²) for a
street and closer; when the map reports its zoom, the zoom decides (see :func:`resolution_for`).  A figure
must stay under 2 MB, so at most :data:`MAX_CELLS` hexagons are sent (the busiest ones; the page says so).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import h3
import numpy as np
from sqlalchemy import Engine

from etl.locate import h3_parents
from geodata.facts import FactQuery, facts_for
from layers.base import Layer, LayerError, MapView, register
from layers.i18n import t

RESOLUTIONS: Final = (7, 8, 9)
#: The resolution of each level of the view when the map's zoom is not known.
RESOLUTION_BY_LEVEL: Final = {"city": 7, "district": 8, "street": 9, "community": 9, "grid": 9}
#: Zoom at or above which r8, then r9 hexagons are drawn (MapLibre zoom levels).
ZOOM_R8: Final = 11.0
ZOOM_R9: Final = 12.5
#: At most this many hexagons in one figure: about 200 bytes each keeps the figure well under 2 MB.
MAX_CELLS: Final = 6000
#: Low (pale yellow) to high (deep red); the test looks for the top colour in the map's pixels.
COLOURSCALE: Final = [[0.0, "rgba(255,237,160,0.55)"], [0.35, "rgba(254,178,76,0.70)"],
                      [0.7, "rgba(240,59,32,0.80)"], [1.0, "rgba(189,0,38,0.88)"]]
HEX_RGB: Final = (240, 59, 32)

_DENSE: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = {}
_DENSE_LOCK = threading.Lock()


def resolution_for(zoom: float | None, level: str) -> int:
    """The H3 resolution to draw: from the map's zoom when known, else from the level of the unit in view."""
    if zoom is None:
        return RESOLUTION_BY_LEVEL.get(level, 7)
    if zoom >= ZOOM_R9:
        return 9
    if zoom >= ZOOM_R8:
        return 8
    return 7


@lru_cache(maxsize=200_000)
def hexagon(cell: int) -> tuple[tuple[float, float], ...]:
    """The closed ring (lon, lat) of an H3 cell, rounded to 1e-5 degrees (about 1 m), cached per cell."""
    ring = tuple((round(lng, 5), round(lat, 5)) for lat, lng in h3.cell_to_boundary(h3.int_to_str(int(cell))))
    return (*ring, ring[0])


@lru_cache(maxsize=200_000)
def centre(cell: int) -> tuple[float, float]:
    """The (lon, lat) centre of an H3 cell, cached."""
    lat, lng = h3.cell_to_latlng(h3.int_to_str(int(cell)))
    return lng, lat


@dataclass(frozen=True)
class HexCounts:
    """Cases per H3 cell at one resolution (busiest first), and how many cells were left out (beyond MAX_CELLS
    or outside the bounds asked for)."""

    resolution: int
    cells: np.ndarray  # int64 cell ids
    cases: np.ndarray  # int64 counts
    dropped: int = 0

    @property
    def total(self) -> int:
        return int(self.cases.sum()) if len(self.cases) else 0


def in_bounds(cells: np.ndarray, bounds: tuple[float, float, float, float] | None) -> np.ndarray:
    """Mask of the cells whose centre lies in ``bounds`` (west, south, east, north); all when None."""
    if bounds is None or not len(cells):
        return np.ones(len(cells), dtype=bool)
    west, south, east, north = bounds
    xy = np.array([centre(int(c)) for c in cells], dtype=np.float64).reshape(-1, 2)
    return (xy[:, 0] >= west) & (xy[:, 0] <= east) & (xy[:, 1] >= south) & (xy[:, 1] <= north)


def _dense_cells(month: Any) -> tuple[np.ndarray, np.ndarray]:
    """A month's distinct r9 cells and each row's index into them (computed once per month and stamp).

    With it a count is one ``bincount`` over the rows kept (linear), not a sort of their cell ids.
    """
    key = (month.start, month.stamp, id(month.columns["h3_r9"]))
    held = _DENSE.get(key)
    if held is None:
        labels, inverse = np.unique(np.asarray(month.columns["h3_r9"]), return_inverse=True)
        held = (labels.astype(np.int64), inverse.astype(np.int32).reshape(-1))
        with _DENSE_LOCK:
            for old in [k for k in _DENSE if k[0] == month.start]:
                del _DENSE[old]
            _DENSE[key] = held
    return held


def cases_per_cell(engine: Engine, query: FactQuery, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Cells (int64) and the query's cases in each, straight from the facts' columns.

    Only the case count is needed here, so this skips ``group_counts``' thirty measures and its frames per
    month (measured: 10x less time on the demo city); the tests hold it equal to ``group_counts``.
    """
    facts = facts_for(engine)
    labels: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    for month in facts.months(query.date_from, query.date_to):
        keep = facts.mask(month, query)
        if keep is None:
            continue
        cells, inverse = _dense_cells(month)
        found = np.bincount(inverse[keep], minlength=len(cells))
        present = (found > 0) & (cells != 0)
        labels.append(cells[present] if resolution == 9 else h3_parents(cells[present], resolution))
        counts.append(found[present])
    if not labels:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    merged, inverse = np.unique(np.concatenate(labels), return_inverse=True)
    total = np.bincount(inverse.reshape(-1), weights=np.concatenate(counts), minlength=len(merged))
    return merged.astype(np.int64), total.astype(np.int64)

@register
class CaseHexagons(Layer[HexCounts]):
    """Cases of a filtered cohort per H3 cell at r7, r8 or r9 (the facts engine's ``h3_r*`` groupings)."""

    name = "case_hexagons"

    def query(self, engine: Engine, view: MapView, facts_query: FactQuery | None = None,
              resolution: int | None = None, bounds: tuple[float, float, float, float] | None = None
              ) -> HexCounts:
        if facts_query is None:
            raise LayerError("the case hexagons need a FactQuery (period and filters)")
        res = resolution or RESOLUTION_BY_LEVEL[view.level]
        if res not in RESOLUTIONS:
            raise LayerError(f"hexagons are drawn at resolution 7, 8 or 9, not {res!r}")
        cells, cases = cases_per_cell(engine, facts_query, res)
        keep = in_bounds(cells, bounds)
        dropped = int((~keep).sum())
        cells, cases = cells[keep], cases[keep]
        order = np.argsort(-cases, kind="stable")
        dropped += max(0, len(order) - MAX_CELLS)
        order = order[:MAX_CELLS]
        return HexCounts(res, cells[order], cases[order], dropped)

    def draw(self, data: HexCounts, lang: str) -> list[dict[str, Any]]:
        if not len(data.cells):
            return []
        ids = [h3.int_to_str(int(c)) for c in data.cells]
        features = [{"type": "Feature", "id": cell_id,
                     "geometry": {"type": "Polygon", "coordinates": [hexagon(int(c))]}}
                    for cell_id, c in zip(ids, data.cells, strict=True)]
        top = float(max(1, np.percentile(data.cases, 98)))
        return [{
            "type": "choroplethmap",
            "geojson": {"type": "FeatureCollection", "features": features},
            "locations": ids,
            "z": data.cases.tolist(),
            "zmin": 0,
            "zmax": top,
            "colorscale": COLOURSCALE,
            "showscale": False,
            "marker": {"line": {"width": 0.3, "color": "rgba(120,60,0,0.35)"}},
            "hovertemplate": f"H3 r{data.resolution} %{{location}}<br>{t('heat.cases', lang)} %{{z:,}}<extra></extra>",
            "name": t("heatmap.hexagons", lang),
        }]

    def draw_density(self, data: HexCounts, lang: str, radius: int = 18) -> list[dict[str, Any]]:
        """The same counts as a smooth density surface (a ``densitymap`` weighted by each cell's cases)."""
        if not len(data.cells):
            return []
        xy = [centre(int(c)) for c in data.cells]
        return [{
            "type": "densitymap",
            "lon": [round(x, 5) for x, _ in xy],
            "lat": [round(y, 5) for _, y in xy],
            "z": data.cases.tolist(),
            "zmin": 0,
            "zmax": float(max(1, np.percentile(data.cases, 98))),
            "radius": radius,
            "colorscale": COLOURSCALE,
            "showscale": False,
            "hoverinfo": "skip",
            "name": t("heatmap.density", lang),
        }]
