"""Cases that happened in blind spots (no camera sector covers the place), counted per unit grid.

Why this shape: "in a blind spot" does not depend on the page's filters, only on where a case is and where
the sectors are.  So each month of the facts engine (geodata/facts.py) gets one boolean column, "covered",
computed once per (month stamp, camera version) with :func:`etl.coverage.points_covered` on the cases'
exact WGS 84 coordinates, and any filter combination afterwards is a mask and a ``bincount`` — tens of
milliseconds at ten million cases.  The column is aligned with the facts' rows by case number, kept in
memory and written under ``<data_dir>/cache/blind`` so other workers and restarts reuse it.

A case counts as covered when it lies inside or on the edge of any camera's sector (the same sectors, the
same rule as ``core.grid_coverage``: a case in a grid's ``blind_geom`` is not covered).
"""

# SQL here is composed only from this module's constants; values are bound parameters.

from __future__ import annotations

import hashlib
import io
import os
import threading
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import shapely
from sqlalchemy import Engine, text

from etl.coverage import points_covered
from geodata.facts import FactQuery, facts_for
from geodata.kpi import period_bounds
from geodata.settings import get_settings
from layers.base import Layer, LayerError, MapView, register
from layers.i18n import t
from layers.version_cache import cached

_CASES_SQL: Final = """
COPY (SELECT case_number, ST_X(geom) AS lon, ST_Y(geom) AS lat FROM core.case_record
       WHERE reported_at >= '{start}' AND reported_at < '{end}') TO STDOUT WITH (FORMAT csv, HEADER true)
"""
_SECTORS_SQL = text("SELECT ST_AsBinary(coverage) FROM core.camera WHERE coverage IS NOT NULL ORDER BY camera_id")
#: The cameras' version: the last asset refresh (every camera, component or admin load ends with one).
_CAMERA_VERSION_SQL = text("SELECT coalesce((SELECT refreshed_at::text FROM rollup.refresh_log WHERE name = 'assets'),"
                           " '') || '/' || (SELECT count(*) FROM core.camera WHERE coverage IS NOT NULL)")
BLIND_RGB: Final = (215, 48, 39)

_lock = threading.Lock()
_covered: dict[tuple[str, date, str, str], np.ndarray] = {}
_sectors: dict[tuple[str, str], np.ndarray] = {}


def _db_key(engine: Engine) -> str:
    url = engine.url
    return hashlib.sha256(f"{url.host}:{url.port}/{url.database}".encode()).hexdigest()[:16]


def camera_version(engine: Engine) -> str:
    """A string that changes whenever the cameras' sectors may have changed.

    Read once per data version (every load bumps it, camera loads included), not once per callback.
    """

    def read() -> str:
        with engine.connect() as conn:
            return str(conn.execute(_CAMERA_VERSION_SQL).scalar_one())

    return cached(engine, "camera_version", None, read)


def _all_sectors(engine: Engine, version: str) -> np.ndarray:
    key = (_db_key(engine), version)
    if key not in _sectors:
        with engine.connect() as conn:
            blobs = [bytes(r[0]) for r in conn.execute(_SECTORS_SQL)]
        _sectors.clear()
        _sectors[key] = shapely.from_wkb(np.array(blobs, dtype=object)) if blobs else np.empty(0, dtype=object)
    return _sectors[key]


def _exact_coordinates(engine: Engine, month_start: date, case_numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float64 lon/lat of the month's cases in the order of ``case_numbers`` (the facts keep float32)."""
    start, _ = period_bounds(month_start, month_start)
    following = (month_start + timedelta(days=32)).replace(day=1)
    end, _ = period_bounds(following, following)
    buffer = io.BytesIO()
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        sql = _CASES_SQL.format(start=start.isoformat(), end=end.isoformat())  # our own instants
        with raw.cursor() as cursor, cursor.copy(sql) as copy:  # type: ignore[union-attr]
            for block in copy:
                buffer.write(block)
    buffer.seek(0)
    table = pacsv.read_csv(buffer, convert_options=pacsv.ConvertOptions(
        column_types={"case_number": pa.string(), "lon": pa.float64(), "lat": pa.float64()}))
    numbers = table.column("case_number").to_numpy(zero_copy_only=False).astype("S40")
    order = np.argsort(numbers, kind="stable")
    at = np.searchsorted(numbers[order], case_numbers)
    at = np.minimum(at, len(order) - 1)
    found = numbers[order][at] == case_numbers
    lon = np.full(len(case_numbers), np.nan)
    lat = np.full(len(case_numbers), np.nan)
    rows = order[at[found]]
    lon[found] = table.column("lon").to_numpy()[rows]
    lat[found] = table.column("lat").to_numpy()[rows]
    return lon, lat


def covered_column(engine: Engine, month: Any, version: str) -> np.ndarray:
    """The "covered by a camera" flag of each row of a facts month (cached in memory and on disk)."""
    key = (_db_key(engine), month.start, month.stamp, version)
    held = _covered.get(key)
    if held is not None:
        return held
    with _lock:
        held = _covered.get(key)
        if held is not None:
            return held
        digest = hashlib.sha256(f"{month.stamp}|{version}".encode()).hexdigest()[:16]
        folder = get_settings().data_dir / "cache" / "blind" / key[0]
        path = folder / f"{month.start:%Y-%m}_{digest}.npy"
        if path.exists():
            flags = np.load(path, allow_pickle=False)
        else:
            lon, lat = _exact_coordinates(engine, month.start, np.asarray(month.columns["case_number"]))
            flags = points_covered(lon, lat, _all_sectors(engine, version))
            _save(folder, path, flags)
        for old in [k for k in _covered if k[:2] == key[:2]]:
            del _covered[old]
        _covered[key] = flags
        return flags


def _save(folder: Path, path: Path, flags: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".{uuid.uuid4().hex}.npy"
    np.save(temporary, flags, allow_pickle=False)
    os.replace(temporary, path)
    for old in folder.glob(f"{path.name[:7]}_*.npy"):
        if old != path:
            old.unlink(missing_ok=True)


@dataclass(frozen=True)
class BlindCounts:
    """Per unit grid: the query's cases and those in blind spots (grids with no case are absent)."""

    frame: pd.DataFrame  # index grid_code; columns cases, blind_cases, blind_share

    @property
    def total_blind(self) -> int:
        return int(self.frame["blind_cases"].sum()) if len(self.frame) else 0


@dataclass(frozen=True)
class GridIndex:
    """Every unit grid of the city, sorted by code, with its name and label point (cached by data version)."""

    codes: np.ndarray  # str, sorted
    names: np.ndarray
    lon: np.ndarray
    lat: np.ndarray


_GRIDS_SQL = text("SELECT code, name, ST_X(label_point), ST_Y(label_point) FROM core.admin_unit"
                  " WHERE level = 'grid' ORDER BY code")


def grid_index(engine: Engine) -> GridIndex:
    """The city's grids as arrays (one query per data version)."""
    def compute() -> GridIndex:
        with engine.connect() as conn:
            rows = conn.execute(_GRIDS_SQL).all()
        codes = np.array([r[0] for r in rows], dtype=str)
        return GridIndex(codes, np.array([r[1] for r in rows], dtype=object),
                         np.array([r[2] for r in rows], dtype=np.float64),
                         np.array([r[3] for r in rows], dtype=np.float64))

    return cached(engine, "grid_index", (), compute)


def _grid_slots(month: Any, grids: GridIndex) -> np.ndarray:
    """Month-local grid index -> position in the city's grid list (the last slot: none / unknown)."""
    words = month.dictionaries["grid"]
    size = len(grids.codes)
    if not len(words) or not size:
        return np.full(len(words) + 1, size, dtype=np.int64)
    at = np.searchsorted(grids.codes, words.astype(grids.codes.dtype))
    at = np.where((at < size) & (grids.codes[np.minimum(at, size - 1)] == words), at, size)
    return np.append(at, size).astype(np.int64)


def blind_counts(engine: Engine, query: FactQuery) -> BlindCounts:
    """The query's cases and blind-spot cases per grid (the query's area narrows it, as everywhere)."""
    facts = facts_for(engine)
    version = camera_version(engine)
    grids = grid_index(engine)
    size = len(grids.codes)
    cases = np.zeros(size + 1, dtype=np.int64)  # the last slot: cases outside every known grid
    blind = np.zeros(size + 1, dtype=np.int64)
    for month in facts.months(query.date_from, query.date_to):
        keep = facts.mask(month, query)
        if keep is None:
            continue
        rows = np.flatnonzero(keep)
        if not len(rows):
            continue
        to_global = cached(engine, "grid_slots", (month.start, month.stamp), lambda m=month: _grid_slots(m, grids))
        local = month.columns["grid"][rows]
        slot = to_global[np.where(local >= 0, local, len(to_global) - 1)]
        cases += np.bincount(slot, minlength=size + 1)
        blind += np.bincount(slot, weights=~covered_column(engine, month, version)[rows],
                             minlength=size + 1).astype(np.int64)
    present = np.flatnonzero(cases[:size] > 0)
    frame = pd.DataFrame({"cases": cases[present], "blind_cases": blind[present]},
                         index=pd.Index(grids.codes[present].astype(object), name="grid_code"))
    frame["blind_share"] = (frame["blind_cases"] / frame["cases"]).round(4)
    return BlindCounts(frame.sort_values(["blind_cases", "cases"], ascending=False, kind="stable"))


def uncovered_points(engine: Engine, query: FactQuery) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat (float64) of the query's cases in blind spots, for choosing new camera sites."""
    facts = facts_for(engine)
    version = camera_version(engine)
    lons, lats = [], []
    for month in facts.months(query.date_from, query.date_to):
        keep = facts.mask(month, query)
        if keep is None:
            continue
        rows = np.flatnonzero(keep & ~covered_column(engine, month, version))
        lons.append(np.asarray(month.columns["lon"][rows], dtype=np.float64))
        lats.append(np.asarray(month.columns["lat"][rows], dtype=np.float64))
    if not lons:
        return np.empty(0), np.empty(0)
    return np.concatenate(lons), np.concatenate(lats)


@dataclass(frozen=True)
class BlindGrids:
    """Blind-spot case counts per grid with the grids' label points, for the map."""

    counts: BlindCounts
    points: pd.DataFrame  # grid_code, name, lon, lat


@register
class BlindCases(Layer[BlindGrids]):
    """Red circles on the grids, sized by how many of the query's cases happened in their blind spots."""

    name = "blind_cases"

    def query(self, engine: Engine, view: MapView, facts_query: FactQuery | None = None) -> BlindGrids:
        if facts_query is None:
            raise LayerError("blind-spot cases need a FactQuery (period and filters)")
        counts = blind_counts(engine, facts_query)
        grids = grid_index(engine)
        at = np.searchsorted(grids.codes, np.asarray(counts.frame.index, dtype=grids.codes.dtype))
        labels = pd.DataFrame({"grid_code": counts.frame.index, "name": grids.names[at], "lon": grids.lon[at],
                               "lat": grids.lat[at]})
        return BlindGrids(counts, labels)

    def draw(self, data: BlindGrids, lang: str, limit: int = 3000) -> list[dict[str, Any]]:
        frame = data.counts.frame
        frame = frame[frame["blind_cases"] > 0].head(limit)
        if frame.empty:
            return []
        placed = data.points.set_index("grid_code").reindex(frame.index).dropna(subset=["lon"])
        frame = frame.loc[placed.index]
        top = max(int(frame["blind_cases"].max()), 1)
        return [{
            "type": "scattermap",
            "mode": "markers",
            "lon": [round(float(x), 6) for x in placed["lon"]],
            "lat": [round(float(y), 6) for y in placed["lat"]],
            "marker": {"size": [5 + 14 * (int(b) / top) ** 0.5 for b in frame["blind_cases"]],
                       "color": "rgb({},{},{})".format(*BLIND_RGB), "opacity": 0.8},
            "customdata": [[code, name, int(b), int(c)] for code, name, b, c in zip(
                frame.index, placed["name"], frame["blind_cases"], frame["cases"], strict=True)],
            "hovertemplate": (f"%{{customdata[1]}} (%{{customdata[0]}})<br>{t('coverage.blind_cases', lang)} "
                              f"%{{customdata[2]}} / %{{customdata[3]}}<extra></extra>"),
            "name": t("coverage.blind_cases", lang),
        }]
