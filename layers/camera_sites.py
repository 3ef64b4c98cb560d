"""Proposed new camera sites: a ranked list that would cover the most cases now in blind spots.

A greedy maximum-coverage choice (:func:`etl.coverage.greedy_camera_sites`) over candidate sites in the unit
in view: the unit grids' label points, the street lights (component 路灯 0118: a pole with power is where a
camera goes) and the centres of the densest clusters of uncovered cases (bins about 50 m a side).
Each site is assumed to see a full disc of :data:`SITE_RANGE_M` metres; the first site adds the most cases,
each later one the most of those still uncovered.  Chosen for a street, a community or a grid (city-wide
the candidates and cases would be too many to answer while a planner waits); cached by data version and
filters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd
from sqlalchemy import Engine, text

from etl.coverage import greedy_camera_sites
from geodata.facts import FactQuery
from geodata.settings import get_settings
from layers.base import Layer, LayerError, MapView, register
from layers.blind_cases import uncovered_points
from layers.blind_spots import DETAIL_LEVELS
from layers.i18n import t
from layers.version_cache import cached

SITE_RANGE_M: Final = 80.0
SITES: Final = 20
#: Cluster-centre candidates: the busiest bins of uncovered cases, about 50 m a side at 37 degrees north.
CLUSTER_CANDIDATES: Final = 400
CLUSTER_BIN_DEG: Final = (0.00056, 0.00045)
LAMP_CATEGORY: Final = "0118"
SITE_RGB: Final = (255, 127, 0)
COLUMNS: Final = ("rank", "source", "lon", "lat", "cases_added", "cumulative")

#: Every fixed candidate of the city, ordered by (source, grid code): grids' label points, then street lamps.
_CANDIDATES_SQL = text("""
    SELECT 'grid' AS source, code AS grid_code, ST_X(label_point) AS lon, ST_Y(label_point) AS lat
      FROM core.admin_unit WHERE level = 'grid' AND label_point IS NOT NULL
    UNION ALL
    SELECT 'lamp', grid_code, ST_X(ST_PointOnSurface(geom)), ST_Y(ST_PointOnSurface(geom))
      FROM core.component WHERE category_code = :lamp AND grid_code IS NOT NULL
    ORDER BY 1, 2, 3, 4""")


@dataclass(frozen=True)
class Sites:
    """The ranked sites (columns :data:`COLUMNS`) and the uncovered cases they were chosen for."""

    frame: pd.DataFrame
    uncovered: int
    candidates: int


def _cluster_centres(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean position of the uncovered cases in each of the busiest ~50 m bins (numpy only: no per-point call)."""
    if not len(lon):
        return np.empty(0), np.empty(0)
    bx = np.floor(lon / CLUSTER_BIN_DEG[0]).astype(np.int64)
    by = np.floor(lat / CLUSTER_BIN_DEG[1]).astype(np.int64)
    labels, inverse, counts = np.unique(bx * 10_000_000 + by, return_inverse=True, return_counts=True)
    busiest = np.argsort(-counts, kind="stable")[:CLUSTER_CANDIDATES]
    sum_lon = np.bincount(inverse, weights=lon, minlength=len(labels))
    sum_lat = np.bincount(inverse, weights=lat, minlength=len(labels))
    return sum_lon[busiest] / counts[busiest], sum_lat[busiest] / counts[busiest]


@dataclass(frozen=True)
class _CityCandidates:
    """The city's fixed candidates, each source sorted by grid code (so a unit's are one slice of each)."""

    sources: tuple[tuple[str, np.ndarray, np.ndarray, np.ndarray], ...]  # (source, grid codes, lon, lat)


def _city_candidates(engine: Engine) -> _CityCandidates:
    def read() -> _CityCandidates:
        with engine.connect() as conn:
            frame = pd.DataFrame([tuple(row) for row in conn.execute(_CANDIDATES_SQL, {"lamp": LAMP_CATEGORY})],
                                 columns=["source", "grid_code", "lon", "lat"])
        return _CityCandidates(tuple(
            (str(source), part["grid_code"].to_numpy(dtype=str), part["lon"].to_numpy(dtype=np.float64),
             part["lat"].to_numpy(dtype=np.float64))
            for source, part in ((s, p.sort_values("grid_code", kind="stable"))  # numpy's order, not the server's
                                 for s, p in frame.groupby("source", sort=True))))

    return cached(engine, "camera_site_candidates", None, read)


def fixed_candidates(engine: Engine, area_code: str) -> list[tuple[str, float, float]]:
    """The unit's grid label points, then its street lamps, as (source, lon, lat).

    They depend on the store, not on the page's filters: the whole city's (some 25,000 grids and 16,000
    lamps) are read once per data version, and a unit's are the slice whose grid codes start with its
    code (codes are digits, so the prefix's range is [code, code + '~')).  Reading them per request with
    ``LIKE 'code%'`` cost 30-40 ms at a million components: no index serves a prefix under this collation.
    """
    out: list[tuple[str, float, float]] = []
    for source, codes, lon, lat in _city_candidates(engine).sources:
        lo = np.searchsorted(codes, area_code, side="left")
        hi = np.searchsorted(codes, area_code + "~", side="left")
        out += [(source, float(x), float(y)) for x, y in zip(lon[lo:hi], lat[lo:hi], strict=True)]
    return out


def propose_sites(engine: Engine, view: MapView, query: FactQuery, k: int = SITES,
                  range_m: float = SITE_RANGE_M) -> Sites:
    """The ``k`` best new sites in the unit in view for the query's uncovered cases (cached)."""
    if view.level not in DETAIL_LEVELS:
        raise LayerError("new camera sites are proposed for a street, a community or a grid")

    def compute() -> Sites:
        lon, lat = uncovered_points(engine, query)
        fixed = fixed_candidates(engine, str(view.area_code))
        c_lon, c_lat = _cluster_centres(lon, lat)
        sources = np.array([r[0] for r in fixed] + ["cluster"] * len(c_lon), dtype=object)
        cand_lon = np.concatenate([np.array([r[1] for r in fixed], dtype=np.float64), c_lon])
        cand_lat = np.concatenate([np.array([r[2] for r in fixed], dtype=np.float64), c_lat])
        chosen = greedy_camera_sites(cand_lon, cand_lat, lon, lat, range_m, k, get_settings().metric_crs)
        frame = pd.DataFrame({"rank": chosen["rank"], "source": sources[chosen["candidate"].to_numpy()]
                              if len(chosen) else [], "lon": chosen["lon"].round(6), "lat": chosen["lat"].round(6),
                              "cases_added": chosen["cases_added"], "cumulative": chosen["cumulative"]},
                             columns=list(COLUMNS))
        return Sites(frame, len(lon), len(cand_lon))

    return cached(engine, "camera_sites", (view.area_code, query, k, range_m), compute)


@register
class CameraSites(Layer[Sites]):
    """Proposed sites as numbered orange stars-like markers (rank 1 is the best)."""

    name = "camera_sites"

    def query(self, engine: Engine, view: MapView, facts_query: FactQuery | None = None) -> Sites:
        if facts_query is None:
            raise LayerError("camera sites need a FactQuery (period and filters)")
        return propose_sites(engine, view, facts_query)

    def draw(self, data: Sites, lang: str) -> list[dict[str, Any]]:
        frame = data.frame
        if frame.empty:
            return []
        return [{
            "type": "scattermap",
            "mode": "markers",
            "lon": frame["lon"].tolist(),
            "lat": frame["lat"].tolist(),
            "marker": {"size": 16, "color": "rgb({},{},{})".format(*SITE_RGB), "opacity": 0.95},
            "customdata": [[int(r), t(f"coverage.source.{s}", lang), int(a), int(c)] for r, s, a, c in zip(
                frame["rank"], frame["source"], frame["cases_added"], frame["cumulative"], strict=True)],
            "hovertemplate": (f"{t('coverage.site', lang)} #%{{customdata[0]}} (%{{customdata[1]}})<br>"
                              f"{t('coverage.adds', lang)} %{{customdata[2]}} · {t('coverage.cumulative', lang)} "
                              "%{customdata[3]}<extra></extra>"),
            "name": t("coverage.sites", lang),
        }]

