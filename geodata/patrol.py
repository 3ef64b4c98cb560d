"""Patrol and sanitation coverage as pages read it: from the track rollups, never from raw fixes.

* per unit grid and day: patrolled or not, minutes, visits, devices, the last patrol on or before the day,
  and whether it has gone unpatrolled for ``CITYGRID_PATROL_IDLE_DAYS`` days (flagged);
* per community and management grid: the share of their unit grids patrolled that day (a pure function of
  the per-grid frame, :func:`patrol_shares`);
* per road and day: the swept share; facility stops; where each crew was last seen.

Every query is bounded by an area code prefix (a street, community or district) and a day, bound as
parameters, and served by the rollups' primary keys.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
from sqlalchemy import Engine, text

from geodata.codes import code_range

#: How far back a grid's last patrol is looked for (a grid unpatrolled longer shows "more than this").
LOOKBACK_DAYS = 60

_GRID_STATUS_SQL = text("""
    SELECT g.code AS grid_code, g.name, g.community_code, g.management_grid_code,
           coalesce(p.visits, 0) AS visits, coalesce(p.minutes, 0) AS minutes, coalesce(p.devices, 0) AS devices,
           :day - last.day AS idle_days, c.name AS community_name, m.name AS management_name
      FROM core.admin_unit g
      LEFT JOIN core.admin_unit c ON c.code = g.community_code
      LEFT JOIN core.management_grid m ON m.code = g.management_grid_code
      LEFT JOIN core.grid_patrol_day p ON p.day = :day AND p.grid_code = g.code
      LEFT JOIN LATERAL (
            SELECT q.day FROM core.grid_patrol_day q
             WHERE q.grid_code = g.code AND q.day <= :day AND q.day > :since
             ORDER BY q.day DESC LIMIT 1) last ON true
     WHERE g.level = 'grid' AND g.code LIKE :prefix AND g.code >= :low AND g.code < :high
     ORDER BY g.code
""")


def _prefix(area_code: str | None) -> str:
    if area_code is not None and not (area_code.isdigit() and 6 <= len(area_code) <= 16):
        raise ValueError(f"area code must be 6-16 digits, not {area_code!r}")
    return (area_code or "") + "%"


def patrol_days(engine: Engine, limit: int = 62) -> list[date]:
    """The days that have any track (newest last), at most ``limit`` of the latest."""
    with engine.connect() as conn:
        days = conn.execute(text(
            "SELECT day FROM (SELECT DISTINCT day FROM core.track_day ORDER BY day DESC LIMIT :n) d ORDER BY day"),
            {"n": limit}).scalars().all()
    return list(days)


def grid_patrol_status(engine: Engine, day: date, area_code: str | None, idle_days: int) -> pd.DataFrame:
    """One row per unit grid in the area: the day's patrol and the days since the last one.

    Columns: grid_code, name, community_code, management_grid_code (and their names community_name,
    management_name), patrolled, visits, minutes, devices, last_patrolled (None if none in
    :data:`LOOKBACK_DAYS`), idle_days (days since the last patrol, None if none), flagged (no patrol for
    ``idle_days`` days or more).
    """
    with engine.connect() as conn:
        low, high = code_range(area_code)
        result = conn.execute(_GRID_STATUS_SQL, {"day": day, "since": day - timedelta(days=LOOKBACK_DAYS),
                                                 "prefix": _prefix(area_code), "low": low, "high": high})
        names = list(result.keys())
        rows = result.all()
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    # Object columns, not inferred arrow strings: the page iterates them row by row right after.
    frame = pd.DataFrame({name: pd.Series(values, dtype=object) for name, values in zip(names, columns, strict=True)})
    visits = frame["visits"].to_numpy(dtype=np.int64)
    idle = np.array([np.nan if v is None else v for v in frame["idle_days"]], dtype=np.float64)
    frame["visits"] = visits
    frame["devices"] = frame["devices"].to_numpy(dtype=np.int64)
    frame["minutes"] = np.round(frame["minutes"].to_numpy(dtype=np.float64), 1)
    frame["idle_days"] = pd.array(idle, dtype="Int64") if len(idle) else pd.array([], dtype="Int64")
    last = (np.datetime64(day, "D") - np.nan_to_num(idle).astype("timedelta64[D]")).astype(object)
    last[np.isnan(idle)] = None
    frame["last_patrolled"] = pd.Series(last, index=frame.index, dtype=object)
    frame["patrolled"] = visits > 0
    frame["flagged"] = ~frame["patrolled"].to_numpy() & (np.isnan(idle) | (np.nan_to_num(idle) >= idle_days))
    return frame


def patrol_shares(status: pd.DataFrame, by: str) -> pd.DataFrame:
    """Per ``by`` (``community_code`` or ``management_grid_code``): grids, patrolled grids, their share, flagged.

    Counted with numpy on the unit codes (a street's thousand grids: well under a millisecond).
    """
    units, grids, patrolled, flagged = share_counts(status, by)
    if not len(units):
        return pd.DataFrame(columns=[by, "grids", "patrolled", "share", "flagged"])
    return pd.DataFrame({by: units, "grids": grids, "patrolled": patrolled,
                         "share": np.round(patrolled / grids, 3), "flagged": flagged})


def share_counts(status: pd.DataFrame, by: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`patrol_shares` as arrays (units, grids, patrolled, flagged), for a caller that makes rows of them."""
    codes = status[by].to_numpy(dtype=object)
    known = np.array([c is not None and c == c for c in codes.tolist()], dtype=bool)
    if not known.any():
        empty = np.empty(0, dtype=np.int64)
        return np.empty(0, dtype=object), empty, empty, empty
    units, inverse = np.unique(codes[known].astype(str), return_inverse=True)
    grids = np.bincount(inverse)
    patrolled = np.bincount(inverse, weights=status["patrolled"].to_numpy()[known]).astype(np.int64)
    flagged = np.bincount(inverse, weights=status["flagged"].to_numpy()[known]).astype(np.int64)
    return units.astype(object), grids, patrolled, flagged


def road_sweep(engine: Engine, day: date, area_code: str | None) -> pd.DataFrame:
    """Roads whose representative point lies in the area, with the day's swept share (0 where nobody swept)."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT r.road_id, r.name, r.road_class, r.length_m, coalesce(s.swept_share, 0) AS swept_share,"
            " coalesce(cardinality(s.swept_by), 0) AS crews, ST_AsGeoJSON(r.geom, 6) AS geometry"
            " FROM core.road r LEFT JOIN core.road_sweep_day s ON s.day = :day AND s.road_id = r.road_id"
            " WHERE coalesce(r.street_code, r.district_code) LIKE :prefix OR r.district_code LIKE :prefix"
            " ORDER BY r.road_id"), {"day": day, "prefix": _prefix(area_code)}).mappings().all()
    return pd.DataFrame(rows, columns=["road_id", "name", "road_class", "length_m", "swept_share", "crews",
                                       "geometry"])


def crews_last_seen(engine: Engine, area_code: str | None) -> pd.DataFrame:
    """Cleaners and trucks (and patrollers) last seen in the area: device, role, when and where."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT device_id, role, last_seen_at, ST_X(last_geom) AS lon, ST_Y(last_geom) AS lat,"
            " last_grid_code FROM core.device WHERE coalesce(last_street_code, '') LIKE :prefix"
            " OR CAST(:area AS text) IS NULL ORDER BY last_seen_at DESC"),
            {"prefix": _prefix(area_code), "area": area_code}).mappings().all()
    return pd.DataFrame(rows, columns=["device_id", "role", "last_seen_at", "lon", "lat", "last_grid_code"])


def facility_visits(engine: Engine, day: date) -> pd.DataFrame:
    """Per facility (transfer station, public toilet): the day's truck stops and minutes."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT v.component_code, v.facility_kind, coalesce(c.name, v.component_code) AS name,"
            " count(*) AS stops, count(DISTINCT v.device_id) AS trucks, round(sum(v.minutes)::numeric, 1) AS minutes"
            " FROM core.facility_visit v LEFT JOIN core.component c ON c.code = v.component_code"
            " WHERE v.day = :day GROUP BY 1, 2, 3 ORDER BY stops DESC, 1"), {"day": day}).mappings().all()
    return pd.DataFrame(rows, columns=["component_code", "facility_kind", "name", "stops", "trucks", "minutes"])


def response_summary(engine: Engine, first: date, last: date) -> dict[str, float | int | None]:
    """Over cases of the period: patrol reports confirmed by a patroller's track, and dispatch-to-crew minutes."""
    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT count(*) FILTER (WHERE source_channel = 'patrol') AS patrol_cases,"
            " count(*) FILTER (WHERE patroller_present) AS patrol_confirmed,"
            " count(*) FILTER (WHERE dispatched_at IS NOT NULL) AS dispatched,"
            " count(*) FILTER (WHERE first_crew_fix_at IS NOT NULL) AS reached,"
            " percentile_cont(0.5) WITHIN GROUP (ORDER BY arrival_minutes) AS median_minutes"
            " FROM core.case_track_check WHERE case_reported_at >= CAST(:a AS date)"
            " AND case_reported_at < CAST(:b AS date) + 1"), {"a": first, "b": last}).mappings().one()
    return dict(row)
