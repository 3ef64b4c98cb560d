"""What every loader of one source shares: the transaction, the run, the mapping, the rejects, the city."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, text

from etl.chinese_crs import looks_swapped, to_wgs84
from etl.mapping import ColumnMapping
from etl.rejects import RejectLog
from geodata.settings import Settings


@dataclass
class LoadContext:
    """One source's load: its connection (one transaction), run id, options and the rejects it collects."""

    conn: Connection
    run_id: int
    source_name: str
    crs: str
    mapping: ColumnMapping | None
    settings: Settings
    rejects: RejectLog
    notes: list[str] = field(default_factory=list)
    now: pd.Timestamp = field(default_factory=lambda: pd.Timestamp.now(tz="UTC"))

    @cached_property
    def city_bbox(self) -> tuple[float, float, float, float] | None:
        """The loaded districts' extent in WGS 84 (None before any district is loaded)."""
        row = self.conn.execute(
            text(
                "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM"
                " (SELECT ST_Extent(geom)::geometry AS e FROM core.admin_unit WHERE level = 'district') s"
            )
        ).one()
        return None if row[0] is None else (float(row[0]), float(row[1]), float(row[2]), float(row[3]))

    @cached_property
    def admin_index(self):  # type: ignore[no-untyped-def]
        """The in-memory spatial index of the admin units (built once per source).

        The units come as WKB through a binary cursor: 0.15 s for 20,000 grids, against 0.5 s through
        geopandas' ``read_postgis`` (hex text, a frame of objects).
        """
        import shapely

        from etl.locate import ADMIN_UNIT_SQL, AdminIndex
        from etl.store import raw_connection

        sql = ADMIN_UNIT_SQL.replace("geom FROM", "ST_AsBinary(geom) FROM", 1)
        with raw_connection(self.conn).cursor(binary=True) as cursor:
            cursor.execute(sql)
            rows = cursor.fetchall()
        codes, levels, wkb = (list(column) for column in zip(*rows, strict=True)) if rows else ([], [], [])
        return AdminIndex.from_frame(pd.DataFrame({
            "code": np.array(codes, dtype=object), "level": np.array(levels, dtype=object),
            "geometry": shapely.from_wkb(np.array(wkb, dtype=object)),
        }))

    def note(self, message: str) -> None:
        """A remark for the run log and the summary (e.g. swapped coordinates corrected)."""
        self.notes.append(message)


def coordinates_to_wgs84(
    ctx: LoadContext, work: pd.DataFrame, lon_field: str = "lon", lat_field: str = "lat"
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Parse, un-swap, reproject and extent-check point coordinates; reject what cannot be placed.

    Returns the remaining rows and their WGS 84 longitude and latitude.  Swapped pairs are detected against
    the city's extent (widened by 0.1 degrees, more than any GCJ-02/BD-09 offset) in geographic source
    systems only; a projected system's metres cannot be mistaken that way.
    """
    work, lon, lat, swapped_rows = parse_coordinates(ctx, work, lon_field, lat_field)
    note_swapped(ctx, swapped_rows)
    return work, lon, lat


def parse_coordinates(
    ctx: LoadContext, work: pd.DataFrame, lon_field: str = "lon", lat_field: str = "lat"
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`coordinates_to_wgs84` without the note: also returns the row numbers of swapped pairs.

    For a caller that works batch by batch and notes the swapped rows of all batches once.
    """
    lon = _numbers(work[lon_field]) if lon_field in work else np.full(len(work), np.nan)
    lat = _numbers(work[lat_field]) if lat_field in work else np.full(len(work), np.nan)
    empty = ~(np.isfinite(lon) & np.isfinite(lat))
    if empty.any():
        work = ctx.rejects.reject(work, pd.Series(empty, index=work.index), "empty or non-numeric coordinates (经度/纬度)",
                                  "lon")
        lon, lat = lon[~empty], lat[~empty]
    bbox = ctx.city_bbox
    geographic = not _is_projected(ctx.crs)
    rows = np.empty(0, dtype=np.int64)
    if bbox is not None and geographic and len(lon):
        wide = (bbox[0] - 0.1, bbox[1] - 0.1, bbox[2] + 0.1, bbox[3] + 0.1)
        swapped = looks_swapped(lon, lat, wide)
        if swapped.any():
            lon, lat = np.where(swapped, lat, lon), np.where(swapped, lon, lat)
            rows = work["_row"].to_numpy()[swapped]
    lon, lat = to_wgs84(lon, lat, ctx.crs)
    return work, np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64), rows


def note_swapped(ctx: LoadContext, rows: np.ndarray) -> None:
    """The note for rows whose longitude and latitude were swapped and corrected (none: no note)."""
    if len(rows):
        rows = np.sort(rows)
        ctx.note(f"{len(rows)} rows had longitude and latitude swapped and were corrected "
                 f"(rows {', '.join(map(str, rows[:10]))}{' …' if len(rows) > 10 else ''})")


def _numbers(values: pd.Series) -> np.ndarray:
    """Text or numbers as float64, NaN where not a number (arrow's cast first: 20x pandas' to_numeric)."""
    if isinstance(values.array, pd.arrays.ArrowStringArray):
        try:
            array = pa.chunked_array(values.array._pa_array)
            return np.asarray(pc.cast(array, pa.float64()).to_numpy(), dtype=np.float64)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # some value is not a plain number: pandas decides value by value
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _is_projected(crs: str) -> bool:
    normalised = crs.upper().replace("-", "").replace("_", "")
    if normalised in {"GCJ02", "BD09", "WGS84", "CGCS2000", "EPSG:4326", "EPSG:4490", "4326", "4490"}:
        return False
    from pyproj import CRS

    try:
        return bool(CRS.from_user_input(crs if not crs.isdigit() else int(crs)).is_projected)
    except Exception:  # an unknown CRS fails loudly in to_wgs84 with the accepted forms
        return False
