"""What every loader of one source shares: the transaction, the run, the mapping, the rejects, the city."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
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
        """The in-memory spatial index of the admin units (built once per source)."""
        from etl.locate import AdminIndex

        return AdminIndex.from_engine(self.conn)

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
    lon = pd.to_numeric(work[lon_field], errors="coerce") if lon_field in work else pd.Series(np.nan, work.index)
    lat = pd.to_numeric(work[lat_field], errors="coerce") if lat_field in work else pd.Series(np.nan, work.index)
    empty = lon.isna() | lat.isna() | ~np.isfinite(lon) | ~np.isfinite(lat)
    work = ctx.rejects.reject(work, empty, "empty or non-numeric coordinates (经度/纬度)", "lon")
    lon, lat = lon[~empty].to_numpy(np.float64), lat[~empty].to_numpy(np.float64)
    bbox = ctx.city_bbox
    geographic = not _is_projected(ctx.crs)
    if bbox is not None and geographic and len(lon):
        wide = (bbox[0] - 0.1, bbox[1] - 0.1, bbox[2] + 0.1, bbox[3] + 0.1)
        swapped = looks_swapped(lon, lat, wide)
        if swapped.any():
            lon, lat = np.where(swapped, lat, lon), np.where(swapped, lon, lat)
            rows = work["_row"].to_numpy()[swapped]
            ctx.note(f"{int(swapped.sum())} rows had longitude and latitude swapped and were corrected "
                     f"(rows {', '.join(map(str, rows[:10]))}{' …' if len(rows) > 10 else ''})")
    lon, lat = to_wgs84(lon, lat, ctx.crs)
    return work, np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)


def _is_projected(crs: str) -> bool:
    normalised = crs.upper().replace("-", "").replace("_", "")
    if normalised in {"GCJ02", "BD09", "WGS84", "CGCS2000", "EPSG:4326", "EPSG:4490", "4326", "4490"}:
        return False
    from pyproj import CRS

    try:
        return bool(CRS.from_user_input(crs if not crs.isdigit() else int(crs)).is_projected)
    except Exception:  # an unknown CRS fails loudly in to_wgs84 with the accepted forms
        return False
