"""GPS tracks of patrollers, cleaners and trucks: validate fixes, store them by day, and roll them up.

Sources are CSV/XLSX exports of a fleet platform (device or person id, role, time, longitude, latitude,
optional speed; preset ``tracks``) or GPX files (one ``<trk>`` per device, its ``<type>`` the role).  Every
fix ends stored or rejected with a reason: empty coordinates, a place outside the city, a clock in the
future, a duplicate timestamp of the same device, or a jump faster than the role can move.

Why the rollups are made here, in the load's transaction: a district's fleet sends millions of fixes a day,
and no page may read them.  From the fixes of every device-day the load touches (the new ones plus those
already stored for the same device and day) this module derives, in memory and vectorised:

* ``core.track_day``: the day's line, its length, first and last fix;
* ``core.track_grid_visit`` (patrollers) and from it ``core.grid_patrol_day``: visits and minutes per grid;
* ``core.road_sweep_day``: which ~20 m pieces of each road a cleaner or truck passed within the tolerance
  (``CITYGRID_SWEEP_TOLERANCE_M``); a track that only crosses a road touches one or two of its pieces;
* ``core.facility_visit``: trucks stopping at transfer stations and public toilets;
* ``core.device``: where each device was last seen;
* ``core.case_track_check``: for the days' patrol-reported cases, whether a patroller was there, and for
  dispatched cases the first crew fix near the place.

Fixes of a day that has no partition yet go into a fresh table that is attached when full (as cases do,
see :mod:`etl.bulk`), in a writer thread while the rollups are computed.
"""

from __future__ import annotations

import hashlib
import itertools
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import shapely
from sqlalchemy import Connection, text

from etl import pgcopy
from etl.bulk import BackgroundWriter
from etl.cases import MergeCounts, _reject, _to_utc
from etl.context import LoadContext, coordinates_to_wgs84
from etl.readers import STRING_DTYPE, RawTable, SourceError
from etl.store import copy_frame
from geodata.codes import TRACK_ROLE_MAX_KMH, TRACK_ROLES

PARTITION_TZ = "Asia/Shanghai"
#: A gap longer than this between two fixes of a device ends a visit and is not drawn as movement.
GAP_S = 600
#: A fix stands for the time until the next one, at most this long (a device that goes quiet is not "there").
FIX_WEIGHT_CAP_S = 120
#: Below this distance a fast pair of fixes is GPS noise, not a jump.
JUMP_MIN_M = 80.0
#: Road pieces for the swept share.
PIECE_M = 20.0
#: Two fixes farther apart than this are not joined when sampling a sweeping track (a gap, not a sweep).
SEGMENT_MAX_M = 500.0
#: A truck within this distance of a facility for at least FACILITY_DWELL_S is visiting it.
FACILITY_RADIUS_M = 40.0
FACILITY_DWELL_S = 60
FACILITY_KINDS = {"0312": "transfer_station", "0301": "public_toilet"}
#: A patroller within this distance of a case within this time of its report "was there".
CASE_RADIUS_M = 50.0
CASE_WINDOW_S = 15 * 60
#: A crew first near a dispatched case later than this after the dispatch was not sent there (a later pass).
ARRIVAL_WINDOW_S = 24 * 3600
_CLOCK_SKEW = pd.Timedelta(minutes=10)
_DAY_S = 86400
_ENCODE_ROWS = 250_000
_TZ_OFFSET_S = 8 * 3600  # Asia/Shanghai has had no daylight saving since 1991

ROLES: tuple[str, ...] = tuple(TRACK_ROLES)
FIX_COPY = (("device_id", "text"), ("fix_time", "timestamptz"), ("geom", "point"), ("speed_kmh", "int2"),
            ("source_run_id", "int8"))


# --- reading GPX --------------------------------------------------------------------------------------------


def read_gpx(path: Path) -> RawTable:
    """A GPX file as a table of text: one row per ``<trkpt>`` (``_row`` counts them from 1).

    Columns: ``device_id`` (the track's ``<name>``, else the file name), ``role`` (its ``<type>``),
    ``time``, ``lon``, ``lat`` and ``speed_kmh`` (GPX 1.0's ``<speed>`` in m/s, or an extension's, converted).
    """
    rows: dict[str, list[str | None]] = {k: [] for k in ("device_id", "role", "time", "lon", "lat", "speed_kmh")}
    try:
        tree = ET.parse(path)  # ElementTree expands no external entities; expat bounds entity growth
    except ET.ParseError as exc:
        raise SourceError(f"{path.name}: not a readable GPX file ({exc})") from None

    def local(tag: str) -> str:
        return tag.rsplit("}", 1)[-1]

    for track in (e for e in tree.getroot() if local(e.tag) == "trk"):
        name = role = None
        for child in track:
            if local(child.tag) == "name":
                name = (child.text or "").strip() or None
            elif local(child.tag) == "type":
                role = (child.text or "").strip() or None
        for point in (e for e in track.iter() if local(e.tag) == "trkpt"):
            time = speed = None
            for child in point.iter():
                tag = local(child.tag)
                if tag == "time":
                    time = (child.text or "").strip() or None
                elif tag == "speed" and child.text:
                    try:
                        speed = f"{float(child.text) * 3.6:.1f}"
                    except ValueError:
                        speed = None
            rows["device_id"].append(name or path.stem)
            rows["role"].append(role)
            rows["time"].append(time)
            rows["lon"].append(point.get("lon"))
            rows["lat"].append(point.get("lat"))
            rows["speed_kmh"].append(speed)
    frame = pd.DataFrame({k: pd.array(v, dtype=STRING_DTYPE) for k, v in rows.items()})
    frame["_row"] = np.arange(1, len(frame) + 1, dtype=np.int64)
    rejects = pd.DataFrame({"_row": pd.Series(dtype="int64"), "raw": pd.Series(dtype=object),
                            "reason": pd.Series(dtype=object), "field": pd.Series(dtype=object)})
    return RawTable(frame=frame, rejects=rejects, encoding="utf-8", source_name=path.name,
                    notes=[f"GPX: {len(frame):,} track points"])


# --- validation ---------------------------------------------------------------------------------------------


def _pseudonym(person_ids: pd.Series) -> pd.Series:
    """A device key for sources that name only the person (工号): a hash, so the key is not the identity."""
    distinct = person_ids.dropna().unique()
    keys = {p: "W" + hashlib.blake2b(str(p).encode(), digest_size=8).hexdigest() for p in distinct}
    return person_ids.map(keys)


def _identify(ctx: LoadContext, work: pd.DataFrame) -> pd.DataFrame:
    """Device key (the device id, else a pseudonym of the person id) and a known role, or a reject."""
    if "person_id" in work:
        missing = work["device_id"].isna() if "device_id" in work else pd.Series(True, index=work.index)
        if missing.any():
            device = work["device_id"].astype("object") if "device_id" in work else \
                pd.Series(None, index=work.index, dtype="object")
            device[missing] = _pseudonym(work.loc[missing, "person_id"]).astype("object")
            work = work.assign(device_id=device.astype(STRING_DTYPE))
    elif "device_id" not in work:
        work = work.assign(device_id=pd.Series(np.nan, index=work.index, dtype=STRING_DTYPE))
    work = ctx.rejects.reject(work, work["device_id"].isna(), "no device or person id (设备编号/人员编号)", "device_id")
    bad = _per_distinct(work["device_id"], lambda ids: (
        ~ids.str.fullmatch(r"[0-9A-Za-z_.:-]+").fillna(False) | (ids.str.len() > 64)).to_numpy(dtype=bool), True)
    work = ctx.rejects.reject(work, pd.Series(bad, index=work.index), "device id must be 1-64 letters, digits or _.:-",
                              "device_id")
    role = work["role"] if "role" in work else pd.Series(np.nan, index=work.index, dtype=STRING_DTYPE)
    return _reject(ctx, work, ~role.isin(list(TRACK_ROLES)).to_numpy(),
                   lambda m: [f"unknown role (角色) '{v}': patroller, cleaner or truck" for v in role[m]], "role")


def _parse_times(ctx: LoadContext, work: pd.DataFrame) -> pd.DataFrame:
    assert ctx.mapping is not None
    work = ctx.rejects.reject(work, work["time"].isna(), "time (定位时间) is empty", "time")
    tz = ctx.mapping.timezone
    # A day of a fleet has at most 86,400 distinct seconds however many fixes: each is parsed once.
    parsed = _per_distinct(work["time"], lambda stamps: _to_utc(stamps, tz).to_numpy(dtype="datetime64[s]"),
                           np.datetime64("NaT", "s"))
    unreadable = np.isnat(parsed)
    raw = work["time"]
    work = _reject(ctx, work, unreadable, lambda m: [f"cannot read time (定位时间) '{v}'" for v in raw[m]], "time")
    seconds = parsed[~unreadable].astype(np.int64)
    limit = int((ctx.now + _CLOCK_SKEW).timestamp())
    work = work.assign(_t=seconds)
    return ctx.rejects.reject(work, work["_t"] > limit, "time lies in the future (the device's clock is ahead)", "time")


def _per_distinct(values: pd.Series, compute: Callable[[pd.Series], np.ndarray], missing: Any) -> np.ndarray:
    """``compute`` of a text column, evaluated once per distinct value (``missing`` where a value is missing).

    Fixes repeat their device ids and, a few thousand devices reporting at the same ticks, their times:
    six million rows hold a few thousand ids and tens of thousands of times.  Arrow's hash finds them.
    """
    if not isinstance(values.array, pd.arrays.ArrowStringArray) or not len(values):
        result = np.asarray(compute(values))
        return np.where(values.isna().to_numpy(), missing, result) if len(result) else result
    array = pa.chunked_array(values.array._pa_array).combine_chunks()
    if array.type != pa.string():
        array = array.cast(pa.string())
    encoded = pc.dictionary_encode(array)
    distinct = pd.Series(pd.arrays.ArrowStringArray(encoded.dictionary), dtype=values.dtype)
    results = np.asarray(compute(distinct))
    results = np.concatenate([results, np.array([missing], dtype=results.dtype)])
    return results[encoded.indices.fill_null(len(distinct)).to_numpy(zero_copy_only=False)]


def _distance_m(lon0: np.ndarray, lat0: np.ndarray, lon1: np.ndarray, lat1: np.ndarray) -> np.ndarray:
    """Metres between points on the ellipsoid's local plane (error far below GPS noise at city scale)."""
    mid = np.radians((lat0 + lat1) / 2)
    dx = (lon1 - lon0) * (111_320.0 * np.cos(mid))
    dy = (lat1 - lat0) * 110_574.0
    return np.hypot(dx, dy)


def _inside_city(ctx: LoadContext, work: pd.DataFrame) -> pd.DataFrame:
    """Fixes outside every district are rejected (one prepared union of the districts: no full locate here)."""
    districts = ctx.admin_index.levels["district"].tree.geometries
    city = shapely.union_all(districts) if len(districts) else shapely.Polygon()
    shapely.prepare(city)
    inside = shapely.contains_xy(city, work["_lon"].to_numpy(), work["_lat"].to_numpy())
    return ctx.rejects.reject(work, pd.Series(~inside, index=work.index),
                              "outside the city: no district contains this fix after conversion to WGS 84", "lon")


def _encode(work: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The validated columns as numbers only, sorted by device, time and row: device codes index ``names``."""
    device, names = _codes(work["device_id"])
    role_codes, role_names = _codes(work["role"])
    role = np.array([ROLES.index(r) for r in role_names], dtype=np.int8)[role_codes]
    speed = _numbers(work["speed_kmh"]) if "speed_kmh" in work else np.full(len(work), np.nan)
    speed = np.where((speed >= 0) & (speed <= 400), speed, np.nan)
    numbers = pd.DataFrame({"_row": work["_row"].to_numpy(), "_dev": device.astype(np.int32), "_role": role,
                            "_t": work["_t"].to_numpy(), "_lon": work["_lon"].to_numpy(),
                            "_lat": work["_lat"].to_numpy(), "_speed": speed}, index=work.index)
    t, rows = numbers["_t"].to_numpy(), numbers["_row"].to_numpy()
    if len(t) and np.all(rows[1:] > rows[:-1]) and int(t.max()) - int(t.min()) < (1 << 40):
        # One integer key and a stable sort (rows already in order): a few ms on an export sorted by device
        # and time, 0.7 s shuffled, where lexsort took 0.3 s and 1.7 s.
        order = np.argsort(device.astype(np.int64) * (1 << 40) + (t - t.min()), kind="stable")
    else:
        order = np.lexsort((rows, t, device))
    return numbers.iloc[order], np.asarray(names, dtype=object)


def _numbers(values: pd.Series) -> np.ndarray:
    """A text column as float64, NaN where empty or not a number.

    Arrow's cast parses a column of six million numbers in 0.08 s; ``pd.to_numeric`` took 1.6 s.  The cast
    refuses the whole column at the first word that is not a number, and then pandas reads it value by value.
    """
    if isinstance(values.array, pd.arrays.ArrowStringArray):
        try:
            parsed = pc.cast(values.array._pa_array, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        else:
            return parsed.to_numpy().astype(np.float64) if parsed.null_count == 0 else \
                np.asarray(parsed.fill_null(np.nan).to_numpy(), dtype=np.float64)
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes and the distinct values of a text column without nulls (arrow's hash in C++, no sort)."""
    encoded = pc.dictionary_encode(pa.chunked_array(values.array._pa_array) if isinstance(
        values.array, pd.arrays.ArrowStringArray) else pa.array(values.astype("object"), type=pa.string()))
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.unify_dictionaries().combine_chunks()
    return (encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32),
            np.asarray(encoded.dictionary.to_pylist(), dtype=object))


def _drop_duplicates(ctx: LoadContext, work: pd.DataFrame) -> pd.DataFrame:
    """A device has one place at a time: a second fix at the same second is rejected (the first row stays)."""
    device, t = work["_dev"].to_numpy(), work["_t"].to_numpy()
    same = np.zeros(len(work), dtype=bool)
    same[1:] = (device[1:] == device[:-1]) & (t[1:] == t[:-1])
    if not same.any():
        return work
    first_row = pd.Series(np.where(same, np.nan, work["_row"].to_numpy())).ffill().to_numpy(dtype=np.int64)
    return _reject(ctx, work, same, lambda m: [f"duplicate timestamp: this device already has a fix at this time "
                                               f"(row {r})" for r in first_row[m]], "time")


def _drop_jumps(ctx: LoadContext, work: pd.DataFrame) -> pd.DataFrame:
    """Reject spikes: fixes the device would have had to reach, and leave, faster than its role can move.

    A spike is too fast both from the previous fix and to the next (a device's first or last fix: on its one
    side).  Repeated a few times, so that a spike next to a spike is found once its neighbour is gone.
    """
    role_limit = np.array([TRACK_ROLE_MAX_KMH[r] for r in ROLES])
    for _ in range(3):
        if len(work) < 2:
            return work
        device = work["_dev"].to_numpy()
        lon, lat, t = work["_lon"].to_numpy(), work["_lat"].to_numpy(), work["_t"].to_numpy()
        limit = role_limit[work["_role"].to_numpy()]
        same = device[1:] == device[:-1]
        dist = _distance_m(lon[:-1], lat[:-1], lon[1:], lat[1:])
        kmh = dist / np.maximum(t[1:] - t[:-1], 1) * 3.6
        fast = same & (kmh > limit[1:]) & (dist > JUMP_MIN_M)
        into = np.concatenate([[False], fast])
        out_of = np.concatenate([fast, [False]])
        has_prev = np.concatenate([[False], same])
        has_next = np.concatenate([same, [False]])
        spike = (into & (out_of | ~has_next)) | (out_of & ~has_prev)
        if not spike.any():
            return work
        speed = np.where(into, np.concatenate([[0.0], kmh]), np.concatenate([kmh, [0.0]]))
        roles = np.array(ROLES, dtype=object)[work["_role"].to_numpy()]
        work = _reject(ctx, work, spike, lambda m, speed=speed, roles=roles, limit=limit: [  # type: ignore[misc]
            f"jump: {v:.0f} km/h from the fix before or after, faster than a {r} can move (at most {x:.0f} km/h)"
            for v, r, x in zip(speed[m], roles[m], limit[m], strict=True)], "lon")
    return work


def _check_roles(ctx: LoadContext, work: pd.DataFrame, names: np.ndarray) -> pd.DataFrame:
    """One role per device: the store's if it knows the device, else the device's first row's in this file."""
    known = dict(ctx.conn.execute(text("SELECT device_id, role FROM core.device WHERE device_id = ANY(:ids)"),
                                  {"ids": list(names)}).all())
    device, role = work["_dev"].to_numpy(), work["_role"].to_numpy()
    first = pd.Series(role).groupby(device).first()
    expected_by_code = np.full(len(names), -1, dtype=np.int8)
    expected_by_code[first.index.to_numpy()] = first.to_numpy()
    for code, name in enumerate(names):
        if name in known:
            expected_by_code[code] = ROLES.index(known[name])
    expected = expected_by_code[device]
    role_names = np.array(ROLES, dtype=object)
    return _reject(ctx, work, role != expected, lambda m: [
        f"device {d} is a {e}, not a {r}" for d, e, r in
        zip(names[device[m]], role_names[expected[m]], role_names[role[m]], strict=True)], "role")


# --- the load -----------------------------------------------------------------------------------------------


@dataclass
class Fixes:
    """Fixes of the device-days a load touches, sorted by device and time, as numpy arrays.

    Devices are codes into ``names`` and roles codes into :data:`ROLES`: a few million fixes carry no
    Python string each.
    """

    device: np.ndarray  # int32 codes into names
    names: np.ndarray  # object: device ids
    role: np.ndarray  # int8 codes into ROLES
    t: np.ndarray  # int64 seconds since 1970 (UTC)
    lon: np.ndarray
    lat: np.ndarray
    speed: np.ndarray  # float64 km/h, NaN when unknown

    def __len__(self) -> int:
        return len(self.t)

    @property
    def day(self) -> np.ndarray:
        """Local day of each fix, as days since 1970-01-01."""
        return (self.t + _TZ_OFFSET_S) // _DAY_S

    def take(self, index: np.ndarray) -> Fixes:
        return Fixes(self.device[index], self.names, self.role[index], self.t[index], self.lon[index],
                     self.lat[index], self.speed[index])

    def is_role(self, role: str) -> np.ndarray:
        return self.role == ROLES.index(role)


def load_tracks(ctx: LoadContext, frame: pd.DataFrame) -> MergeCounts:
    """Validate and store one source's fixes, then rebuild the rollups of the device-days it touches."""
    assert ctx.mapping is not None
    work = ctx.mapping.apply(frame, required=("time", "lon", "lat"), as_text=True)
    work = _identify(ctx, work)
    work = _parse_times(ctx, work)
    work, lon, lat = coordinates_to_wgs84(ctx, work)
    work = work.assign(_lon=lon, _lat=lat)
    work = _inside_city(ctx, work)
    people = _people(work)
    numbers, names = _encode(work)
    del work
    numbers = _drop_duplicates(ctx, numbers)
    numbers = _drop_jumps(ctx, numbers)
    numbers = _check_roles(ctx, numbers, names)
    incoming = Fixes(numbers["_dev"].to_numpy(), names, numbers["_role"].to_numpy(), numbers["_t"].to_numpy(),
                     numbers["_lon"].to_numpy(), numbers["_lat"].to_numpy(), numbers["_speed"].to_numpy())
    stored, new_mask = _already_stored(ctx, incoming)
    new = incoming.take(np.flatnonzero(new_mask))
    _upsert_devices(ctx, incoming, people)
    everything = _combine(incoming, stored)
    lookups = Lookups.read(ctx, everything)
    writer = BackgroundWriter(ctx.conn)
    try:
        _write_fixes(ctx, writer, new)
        rollups = compute_rollups(ctx, everything, lookups)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    write_rollups(ctx, rollups)
    return MergeCounts(new=len(new), updated=0, unchanged=len(incoming) - len(new))


def _people(work: pd.DataFrame) -> pd.DataFrame | None:
    """Who carries each device, if the source says (for private.worker), None if it does not."""
    columns = [c for c in ("person_id", "name", "team") if c in work]
    if not columns:
        return None
    return work.sort_values("_row").drop_duplicates("device_id")[["device_id", *columns]]


def _already_stored(ctx: LoadContext, fixes: Fixes) -> tuple[Fixes, np.ndarray]:
    """The stored fixes of the device-days in ``fixes``, and which of ``fixes`` are not stored yet."""
    conn = ctx.conn
    empty = Fixes(np.empty(0, np.int32), fixes.names, np.empty(0, np.int8), np.empty(0, np.int64),
                  np.empty(0), np.empty(0), np.empty(0))
    if not len(fixes):
        return empty, np.ones(0, dtype=bool)
    days = np.unique(fixes.day)
    known = pd.DataFrame(conn.execute(text(
        "SELECT device_id, day - DATE '1970-01-01' AS day FROM core.track_day"
        " WHERE day = ANY(CAST(:days AS date[])) AND device_id = ANY(:ids)"),
        {"days": [str(np.datetime64(int(d), "D")) for d in days], "ids": list(fixes.names)}).all(),
        columns=["device_id", "day"])
    if known.empty:
        return empty, np.ones(len(fixes), dtype=bool)
    parts = []
    for day, group in known.groupby("day"):
        start = int(day) * _DAY_S - _TZ_OFFSET_S
        parts.extend(conn.execute(text(
            "SELECT f.device_id, d.role, extract(epoch FROM f.fix_time)::bigint, ST_X(f.geom), ST_Y(f.geom),"
            " f.speed_kmh FROM core.track_fix f JOIN core.device d USING (device_id)"
            " WHERE f.fix_time >= to_timestamp(:lo) AND f.fix_time < to_timestamp(:hi) AND f.device_id = ANY(:ids)"),
            {"lo": start, "hi": start + _DAY_S, "ids": list(group["device_id"])}).all())
    if not parts:
        return empty, np.ones(len(fixes), dtype=bool)
    columns = list(zip(*parts, strict=True))
    codes = pd.Index(fixes.names).get_indexer(np.array(columns[0], dtype=object)).astype(np.int32)
    stored = Fixes(codes, fixes.names, np.array([ROLES.index(r) for r in columns[1]], dtype=np.int8),
                   np.array(columns[2], dtype=np.int64), np.array(columns[3], dtype=float),
                   np.array(columns[4], dtype=float), np.array([np.nan if v is None else v for v in columns[5]], float))
    stored_keys = stored.device.astype(np.int64) * (1 << 40) + stored.t
    new = ~np.isin(fixes.device.astype(np.int64) * (1 << 40) + fixes.t, stored_keys)
    return stored, new


def _combine(incoming: Fixes, stored: Fixes) -> Fixes:
    """Incoming and stored fixes of the touched device-days, each fix once, sorted by device and time."""
    if not len(stored):
        return incoming
    both = Fixes(*(np.concatenate([getattr(stored, f), getattr(incoming, f)]) if f != "names" else incoming.names
                   for f in ("device", "names", "role", "t", "lon", "lat", "speed")))
    key = both.device.astype(np.int64) * (1 << 40) + both.t
    _, first = np.unique(key, return_index=True)  # sorted by key = by device, then time
    return both.take(first)


def _upsert_devices(ctx: LoadContext, fixes: Fixes, people: pd.DataFrame | None) -> None:
    """Each device once, with where it was last seen (a later fix in the store wins); then who carries it."""
    from etl.locate import locate_points

    if not len(fixes):
        return
    last = np.flatnonzero(np.concatenate([fixes.device[1:] != fixes.device[:-1], [True]]))
    first = np.flatnonzero(np.concatenate([[True], fixes.device[1:] != fixes.device[:-1]]))
    units = locate_points(ctx.admin_index, fixes.lon[last], fixes.lat[last])
    frame = pd.DataFrame({
        "device_id": fixes.names[fixes.device[last]], "role": np.array(ROLES, dtype=object)[fixes.role[last]],
        "first_seen_at": _iso(fixes.t[first]), "last_seen_at": _iso(fixes.t[last]),
        "lon": fixes.lon[last], "lat": fixes.lat[last],
        "last_grid_code": units["grid_code"].to_numpy(), "last_street_code": units["street_code"].to_numpy(),
        "source_run_id": ctx.run_id,
    })
    _stage(ctx.conn, "_device_in", frame)
    ctx.conn.execute(text(
        "INSERT INTO core.device AS d (device_id, role, first_seen_at, last_seen_at, last_geom, last_grid_code,"
        " last_street_code, source_run_id)"
        " SELECT device_id, role, first_seen_at::timestamptz, last_seen_at::timestamptz,"
        " ST_SetSRID(ST_MakePoint(lon::float8, lat::float8), 4326), last_grid_code, last_street_code,"
        " source_run_id::bigint FROM _device_in"
        " ON CONFLICT (device_id) DO UPDATE SET"
        " first_seen_at = least(d.first_seen_at, EXCLUDED.first_seen_at),"
        " last_seen_at = greatest(d.last_seen_at, EXCLUDED.last_seen_at),"
        " last_geom = CASE WHEN EXCLUDED.last_seen_at > d.last_seen_at THEN EXCLUDED.last_geom ELSE d.last_geom END,"
        " last_grid_code = CASE WHEN EXCLUDED.last_seen_at > d.last_seen_at THEN EXCLUDED.last_grid_code"
        " ELSE d.last_grid_code END,"
        " last_street_code = CASE WHEN EXCLUDED.last_seen_at > d.last_seen_at THEN EXCLUDED.last_street_code"
        " ELSE d.last_street_code END"))
    if people is not None:
        people = people[people["device_id"].isin(set(frame["device_id"]))]
    if people is not None and len(people):
        columns = [c for c in ("person_id", "name", "team") if c in people]
        _stage(ctx.conn, "_worker_in", people[["device_id", *columns]].astype("object").where(people.notna(), None))
        ctx.conn.execute(text(
            f"INSERT INTO private.worker (device_id, {', '.join(columns)})"  # noqa: S608 (our column names)
            f" SELECT device_id, {', '.join(columns)} FROM _worker_in"
            f" ON CONFLICT (device_id) DO UPDATE SET {', '.join(f'{c} = EXCLUDED.{c}' for c in columns)}"))


def _iso(seconds: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(np.asarray(seconds, dtype="datetime64[s]"), unit="s", timezone="UTC")


def _stage(conn: Connection, name: str, frame: pd.DataFrame) -> None:
    """A temporary table of text columns holding ``frame`` (dropped at commit)."""
    conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
    conn.execute(text(f"CREATE TEMP TABLE {name} ({', '.join(f'{c} text' for c in frame.columns)}) ON COMMIT DROP"))
    copy_frame(conn, name, frame.astype("string"), list(frame.columns))


# --- storing the fixes --------------------------------------------------------------------------------------


def _day_name(day: int) -> str:
    return "track_fix_" + str(np.datetime64(int(day), "D")).replace("-", "")


def _bounds(day: int) -> tuple[str, str]:
    start = str(np.datetime64(int(day), "D"))
    end = str(np.datetime64(int(day) + 1, "D"))
    return (f"(DATE '{start}'::timestamp AT TIME ZONE '{PARTITION_TZ}')",
            f"(DATE '{end}'::timestamp AT TIME ZONE '{PARTITION_TZ}')")


def _write_fixes(ctx: LoadContext, writer: BackgroundWriter, fixes: Fixes) -> None:
    """COPY the new fixes: a day without a partition into a fresh table attached when full, others through the parent.

    One writer job for all of them, which also encodes them (batch by batch, each batch sent while the next
    is encoded): the calling thread goes on to the rollups at once, and the server starts on the first
    batch instead of waiting for all six million rows to be encoded.
    """
    if not len(fixes):
        return
    days = fixes.day
    existing = set(ctx.conn.execute(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'core.track_fix'::regclass")).scalars())
    names = pa.array(fixes.names, type=pa.string())
    order = np.argsort(days, kind="stable")
    bounds = np.flatnonzero(np.diff(days[order])) + 1
    run_id = ctx.run_id

    def batches(index: np.ndarray) -> Iterator[pgcopy.BinaryRows]:
        for start in range(0, len(index), _ENCODE_ROWS):
            rows = index[start:start + _ENCODE_ROWS]
            speed = pd.Series(np.round(fixes.speed[rows])).astype("Int16")
            yield pgcopy.encode([
                ("device_id", "text", names.take(pa.array(fixes.device[rows]))),
                ("fix_time", "timestamptz", pd.Series(fixes.t[rows].astype("datetime64[s]"))),
                ("geom", "point", (fixes.lon[rows], fixes.lat[rows], 4326)),
                ("speed_kmh", "int2", speed),
                ("source_run_id", "int8", np.full(len(rows), run_id, dtype=np.int64)),
            ], len(rows))

    def job(driver: Any) -> None:
        for index in np.split(order, bounds):
            day = int(days[index[0]])
            name = _day_name(day)
            if name in existing:
                _copy_batches(driver, "core.track_fix", batches(index))
                continue
            lo, hi = _bounds(day)
            with driver.cursor() as cursor:
                cursor.execute(f"CREATE TABLE core.{name} (LIKE core.track_fix INCLUDING DEFAULTS INCLUDING"
                               f" CONSTRAINTS); ALTER TABLE core.{name} ADD CONSTRAINT {name}_bounds"
                               f" CHECK (fix_time IS NOT NULL AND fix_time >= {lo} AND fix_time < {hi})")
            _copy_batches(driver, f"core.{name}", batches(index))
            with driver.cursor() as cursor:
                cursor.execute(f"ALTER TABLE core.track_fix ATTACH PARTITION core.{name} FOR VALUES FROM ({lo})"
                               f" TO ({hi}); ALTER TABLE core.{name} DROP CONSTRAINT {name}_bounds")

    writer.submit(job)


def _copy_batches(driver: Any, table: str, batches: Iterator[pgcopy.BinaryRows]) -> None:
    """One binary COPY into ``table`` of batches encoded as they are sent (all with the same column order)."""
    first = next(batches, None)
    if first is None:
        return
    columns = ", ".join(first.columns)
    with driver.cursor() as cursor, cursor.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT binary)") as copy:
        copy.write(pgcopy.HEADER)
        for batch in itertools.chain([first], batches):
            if batch.rows:
                copy.write(batch.data)
        copy.write(pgcopy.TRAILER)


# --- rollups ------------------------------------------------------------------------------------------------


@dataclass
class Rollups:
    """What the fixes of the touched device-days add up to, as frames ready to merge."""

    days: list[str]
    device_days: pd.DataFrame
    grid_visits: pd.DataFrame
    road_sweeps: pd.DataFrame
    facility_visits: pd.DataFrame
    case_checks: pd.DataFrame


@dataclass(frozen=True)
class Plane:
    """A local east/north plane in metres around the city's centre, for the rollups' distances.

    Why not ``Settings.metric_crs`` through pyproj: the rollups measure metres between fixes and to roads,
    facilities and cases a few tens of metres away, for millions of fixes (pyproj took 1.2 s for a day of
    2,000 devices, this plane 0.05 s).  An equirectangular plane on the WGS 84 ellipsoid's radii of
    curvature at the centre's latitude is true to scale there and off by tan(lat) x the latitude
    difference elsewhere: 0.3 % 20 km north or south of the centre at Zibo, 5 cm at the 15 m sweep
    tolerance.  (A projected CRS is no better here: Web Mercator is 25 % off at 37 N, Gauss-Krueger
    0.01 % a degree from its meridian.)  Pieces, fixes, facilities and cases of one load share one plane.
    """

    lon0: float
    lat0: float

    @classmethod
    def around(cls, bbox: tuple[float, float, float, float] | None, lon: np.ndarray, lat: np.ndarray) -> Plane:
        """Centred on ``bbox`` (the city's extent), else on the fixes, else on 0, 0."""
        if bbox is not None:
            return cls((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2)
        if len(lon):
            return cls(float(np.mean(lon)), float(np.mean(lat)))
        return cls(0.0, 0.0)

    @property
    def scale(self) -> tuple[float, float]:
        """Metres per degree of longitude and of latitude at the centre (WGS 84 ellipsoid)."""
        a, e2 = 6_378_137.0, 0.00669437999014
        phi = np.radians(self.lat0)
        w = 1 - e2 * np.sin(phi) ** 2
        n, m = a / np.sqrt(w), a * (1 - e2) / w**1.5
        return float(np.radians(1) * n * np.cos(phi)), float(np.radians(1) * m)

    def xy(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        kx, ky = self.scale
        return ((np.asarray(lon, dtype=np.float64) - self.lon0) * kx,
                (np.asarray(lat, dtype=np.float64) - self.lat0) * ky)


@dataclass
class Lookups:
    """What the rollups need from the store, read before the writer thread owns the connection."""

    plane: Plane
    pieces: pd.DataFrame
    facilities: list[Any]
    cases: list[Any]

    @classmethod
    def read(cls, ctx: LoadContext, fixes: Fixes) -> Lookups:
        plane = Plane.around(ctx.city_bbox, fixes.lon, fixes.lat)
        if not len(fixes):
            return cls(plane, road_pieces(ctx.conn, plane), [], [])
        day = fixes.day
        facilities = ctx.conn.execute(text(
            "SELECT code, category_code, ST_X(ST_PointOnSurface(geom)), ST_Y(ST_PointOnSurface(geom))"
            " FROM core.component WHERE category_code = ANY(:codes) ORDER BY code"),
            {"codes": list(FACILITY_KINDS)}).all()
        lo = int(day.min()) * _DAY_S - _TZ_OFFSET_S
        hi = (int(day.max()) + 1) * _DAY_S - _TZ_OFFSET_S
        cases = ctx.conn.execute(text(
            "SELECT case_number, reported_at, source_channel, extract(epoch FROM reported_at)::bigint,"
            " extract(epoch FROM dispatched_at)::bigint, ST_X(geom), ST_Y(geom) FROM core.case_record"
            " WHERE (source_channel = 'patrol' AND reported_at >= to_timestamp(:lo)"
            " AND reported_at < to_timestamp(:hi))"
            " OR (dispatched_at >= to_timestamp(:lo) AND dispatched_at < to_timestamp(:hi))"),
            {"lo": lo, "hi": hi}).all()
        return cls(plane, road_pieces(ctx.conn, plane), list(facilities), list(cases))


def compute_rollups(ctx: LoadContext, fixes: Fixes, lookups: Lookups) -> Rollups:
    """Daily lines, grid visits, swept road pieces, facility stops and case checks of ``fixes`` (no writes)."""
    if not len(fixes):
        empty = pd.DataFrame()
        return Rollups([], empty, empty, empty, empty, empty)
    day = fixes.day
    group_start = np.concatenate([[True], (fixes.device[1:] != fixes.device[:-1]) | (day[1:] != day[:-1])])
    group = np.cumsum(group_start) - 1
    next_same = np.concatenate([~group_start[1:], [False]])
    dt_next = np.concatenate([np.diff(fixes.t), [0]])
    moving = next_same & (dt_next <= GAP_S)
    x, y = lookups.plane.xy(fixes.lon, fixes.lat)
    step = np.where(moving, np.hypot(np.diff(x, append=x[-1]), np.diff(y, append=y[-1])), 0.0)
    starts = np.flatnonzero(group_start)
    ends = np.concatenate([starts[1:], [len(fixes)]]) - 1
    counts = ends - starts + 1
    lines = np.full(len(starts), None, dtype=object)
    keep = np.repeat(counts >= 2, counts)
    if keep.any():
        shapely.linestrings(fixes.lon[keep], fixes.lat[keep], indices=group[keep], out=lines)
        # About 8 m, above GPS noise: the line drawn (a tenth of the vertices or less), not the distance
        # measured, which is summed from every fix above.
        lines = shapely.simplify(lines, 0.00008, preserve_topology=False)
    device_days = pd.DataFrame({
        "device_id": fixes.names[fixes.device[starts]], "day": _day_text(day[starts]),
        "role": np.array(ROLES, dtype=object)[fixes.role[starts]],
        "geom": shapely.to_wkb(shapely.set_srid(lines, 4326), hex=True, include_srid=True),
        "length_m": np.round(np.add.reduceat(step, starts), 1), "first_at": _iso(fixes.t[starts]),
        "last_at": _iso(fixes.t[ends]), "fix_count": counts, "source_run_id": ctx.run_id,
    })
    weight = np.where(next_same, np.minimum(dt_next, FIX_WEIGHT_CAP_S), 0)
    patrol = np.flatnonzero(fixes.is_role("patroller"))
    unit, codes = locate_grids(ctx.admin_index, fixes.lon[patrol], fixes.lat[patrol], group[patrol])
    grid_visits = _grid_visits(unit, codes, fixes.take(patrol), group[patrol], weight[patrol], day[patrol])
    crews = np.flatnonzero(~fixes.is_role("patroller"))
    road_sweeps = _road_sweeps(ctx.settings.sweep_tolerance_m, lookups.pieces, x, y, fixes, moving, day, crews)
    trucks = np.flatnonzero(fixes.is_role("truck"))
    facility_visits = _facility_visits(lookups.facilities, lookups.plane, fixes.take(trucks), x[trucks],
                                       y[trucks], group[trucks], day[trucks])
    case_checks = _case_checks(lookups.plane, lookups.cases, fixes, x, y)
    return Rollups(sorted({str(d) for d in device_days["day"]}), device_days, grid_visits, road_sweeps,
                   facility_visits, case_checks)


#: Every this many of a patroller's fixes one is located in full; the others first try its grid.
ANCHOR_EVERY = 8


def locate_grids(index: Any, lon: np.ndarray, lat: np.ndarray, group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The unit grid of each fix, for fixes sorted by device-day (``group``) and time.

    Returns each fix's number in the grid codes (-1 outside every grid) and the grid codes.

    Why not :func:`etl.locate.locate_points` on every fix: a walking patroller stays in a grid for a
    dozen fixes or more, so every :data:`ANCHOR_EVERY`-th fix of a device-day is located in full and the
    fixes between two such anchors are tested, each with one prepared point-in-polygon, against the grid of
    the anchor before them and then the one after; only what neither holds is located in full (0.8 s for
    2.3 million fixes instead of 1.3-2.7 s).  The grid is the one :func:`locate_points` finds except where
    grids touch or overlap: a fix on a shared edge stays in the grid the patroller was in (locate_points
    would take the smaller code), which is what a visit means anyway.
    """
    from etl.locate import locate_points

    n = len(lon)
    level = index.levels.get("grid")
    if level is None or not len(level):
        return np.full(n, -1, dtype=np.int64), np.empty(0, dtype=object)
    codes = np.asarray(level.codes, dtype=object)
    lookup = pd.Index(codes)

    def located(rows: np.ndarray) -> np.ndarray:
        found = locate_points(index, lon[rows], lat[rows])["grid_code"].to_numpy()
        return lookup.get_indexer(pd.Index(found, dtype=object)).astype(np.int64)

    if n < 4 * ANCHOR_EVERY:
        return located(np.arange(n)), codes
    anchor = np.zeros(n, dtype=bool)
    anchor[::ANCHOR_EVERY] = True
    anchor[np.flatnonzero(np.diff(group)) + 1] = True
    anchor[-1] = True
    at = np.flatnonzero(anchor)
    unit = np.full(n, -1, dtype=np.int64)
    unit[at] = located(at)
    geometries = level.tree.geometries
    before = at[np.searchsorted(at, np.arange(n), side="right") - 1]  # the anchor at or before each fix
    after = at[np.minimum(np.searchsorted(at, np.arange(n), side="left"), len(at) - 1)]  # at or after
    todo = np.flatnonzero(~anchor)
    for neighbour in (before, after):
        candidate = unit[neighbour[todo]]
        usable = (candidate >= 0) & (group[neighbour[todo]] == group[todo])
        rows = todo[usable]
        inside = shapely.intersects_xy(geometries[candidate[usable]], lon[rows], lat[rows])
        unit[rows[inside]] = candidate[usable][inside]
        todo = todo[unit[todo] < 0]
    if len(todo):
        unit[todo] = located(todo)
    return unit, codes


def _day_text(days: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(np.asarray(days, dtype="datetime64[D]"))


def _grid_visits(unit: np.ndarray, codes: np.ndarray, fixes: Fixes, group: np.ndarray, weight: np.ndarray,
                 day: np.ndarray) -> pd.DataFrame:
    """Per device-day and grid: visits (runs of fixes in the grid, broken by gaps) and minutes.

    ``unit`` numbers each fix's grid in ``codes`` (-1: none).  Summed with one integer key per
    (device-day, grid) and bincounts: no text compared per fix, no DataFrame.groupby.
    """
    columns = ["day", "grid_code", "device_id", "visits", "minutes", "first_at", "last_at"]
    on_grid = np.flatnonzero(unit >= 0)
    if not len(on_grid):
        return pd.DataFrame(columns=columns)
    new_run = np.ones(len(unit), dtype=bool)
    if len(unit) > 1:
        gap = np.diff(fixes.t) > GAP_S
        new_run[1:] = (unit[1:] != unit[:-1]) | (group[1:] != group[:-1]) | gap
    key = group[on_grid].astype(np.int64) * (len(codes) + 1) + unit[on_grid]
    keys, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    last = len(key) - 1 - np.unique(key[::-1], return_index=True)[1]  # fixes are in time order per group
    visits = np.bincount(inverse, weights=new_run[on_grid], minlength=len(keys)).astype(np.int64)
    seconds = np.bincount(inverse, weights=weight[on_grid], minlength=len(keys))
    first, last = on_grid[first], on_grid[last]
    return pd.DataFrame({"day": _day_text(day[first]), "grid_code": codes[unit[first]],
                         "device_id": fixes.names[fixes.device[first]], "visits": np.maximum(visits, 1),
                         "minutes": np.round(seconds / 60, 2), "first_at": _iso(fixes.t[first]),
                         "last_at": _iso(fixes.t[last])})


def road_pieces(conn: Connection, plane: Plane) -> pd.DataFrame:
    """Every road cut into pieces of about :data:`PIECE_M` m: road id, piece number, midpoint (on ``plane``), count."""
    rows = conn.execute(text("SELECT road_id, ST_AsBinary(geom) FROM core.road ORDER BY road_id")).all()
    if not rows:
        return pd.DataFrame(columns=["road_id", "piece", "x", "y", "pieces"])
    ids = np.array([r[0] for r in rows], dtype=object)
    geoms = shapely.from_wkb([bytes(r[1]) for r in rows])
    parts, owner = shapely.get_parts(geoms, return_index=True)
    parts = shapely.transform(parts, lambda xy: np.column_stack(plane.xy(xy[:, 0], xy[:, 1])))
    length = shapely.length(parts)
    n = np.maximum(1, np.round(length / PIECE_M)).astype(np.int64)
    part_of = np.repeat(np.arange(len(parts)), n)
    first = np.concatenate([[0], np.cumsum(n)[:-1]])
    k = np.arange(n.sum()) - np.repeat(first, n)
    points = shapely.line_interpolate_point(parts[part_of], (k + 0.5) * (length / n)[part_of])
    road = owner[part_of]
    frame = pd.DataFrame({"road_id": ids[road], "x": shapely.get_x(points), "y": shapely.get_y(points)})
    frame["piece"] = frame.groupby("road_id").cumcount()
    frame["pieces"] = frame.groupby("road_id")["piece"].transform("size")
    return frame


def _near_mask(px: np.ndarray, py: np.ndarray, x: np.ndarray, y: np.ndarray, reach: float) -> np.ndarray:
    """Which (x, y) may lie within ``reach`` of some (px, py): a raster of cells of ``reach`` metres, dilated by one.

    A cheap filter before the exact distance test: most of a fleet's fixes lie nowhere near a road piece
    in a given cell, and are dropped with one array lookup each.
    """
    x0, y0 = px.min() - 2 * reach, py.min() - 2 * reach
    width = int((px.max() - x0) // reach) + 3
    height = int((py.max() - y0) // reach) + 3
    raster = np.zeros((width, height), dtype=bool)
    ix, iy = ((px - x0) // reach).astype(np.int64), ((py - y0) // reach).astype(np.int64)
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            raster[ix + dx, iy + dy] = True
    cx, cy = np.floor((x - x0) / reach), np.floor((y - y0) / reach)
    inside = (cx >= 0) & (cx < width) & (cy >= 0) & (cy < height)
    out = np.zeros(len(x), dtype=bool)
    out[inside] = raster[cx[inside].astype(np.int64), cy[inside].astype(np.int64)]
    return out


def _road_sweeps(tolerance: float, pieces: pd.DataFrame, x: np.ndarray, y: np.ndarray, fixes: Fixes,
                 moving: np.ndarray, day: np.ndarray, crews: np.ndarray) -> pd.DataFrame:
    """Per day and road: the pieces a cleaner's or truck's track passed within the tolerance, and by whom.

    The track is the segments between a crew's consecutive fixes (a gap longer than :data:`GAP_S` or a
    segment longer than :data:`SEGMENT_MAX_M` is not swept in between: its fixes count as points); a
    piece counts as swept where a segment passes within the tolerance of its midpoint.  A track crossing a
    road touches one or two of its ~20 m pieces; one along it, all of them.  See :class:`_PieceGrid` for
    how the segments find their pieces without a geometry each.
    """
    columns = ["day", "road_id", "pieces", "swept_pieces", "swept_by"]
    if pieces.empty or not len(crews):
        return pd.DataFrame(columns=columns)
    ax, ay = x[crews], y[crews]
    following = np.minimum(crews + 1, len(x) - 1)
    bx, by = x[following], y[following]
    joined = moving[crews] & (np.hypot(bx - ax, by - ay) <= SEGMENT_MAX_M)
    bx, by = np.where(joined, bx, ax), np.where(joined, by, ay)
    segment, piece = _PieceGrid(pieces["x"].to_numpy(), pieces["y"].to_numpy(), tolerance).near(ax, ay, bx, by)
    if not len(segment):
        return pd.DataFrame(columns=columns)
    fix = crews[segment]
    piece_count = len(pieces)
    key = np.unique((day[fix].astype(np.int64) * (int(fixes.device.max()) + 1) + fixes.device[fix]) * piece_count
                    + piece)
    hit_piece = key % piece_count
    device = (key // piece_count) % (int(fixes.device.max()) + 1)
    hit_day = key // piece_count // (int(fixes.device.max()) + 1)
    hits = pd.DataFrame({"day": hit_day, "road_id": pieces["road_id"].to_numpy()[hit_piece],
                         "piece": pieces["piece"].to_numpy()[hit_piece], "pieces": pieces["pieces"].to_numpy()[hit_piece],
                         "device": device})
    by_road = hits.groupby(["day", "road_id"]).agg(
        pieces=("pieces", "first"), swept=("piece", lambda v: sorted(set(v))),
        by=("device", lambda v: sorted(set(v)))).reset_index()
    return pd.DataFrame({"day": _day_text(by_road["day"].to_numpy()), "road_id": by_road["road_id"],
                         "pieces": by_road["pieces"],
                         "swept_pieces": ["{" + ",".join(map(str, v)) + "}" for v in by_road["swept"]],
                         "swept_by": ["{" + ",".join(fixes.names[v]) + "}" for v in by_road["by"]]})


class _PieceGrid:
    """Road pieces' midpoints binned in square cells, for finding the segments that pass near them.

    A fleet's day is millions of short segments, and most lie nowhere near a road: a summed-area table of
    the pieces per cell tells, with four lookups, whether a segment's box (widened by the tolerance) holds
    any piece at all.  Only those segments are paired with the pieces of the cells their box covers, and
    each pair's exact point-to-segment distance decides.  All in numpy: no geometry object per fix, no
    densified samples (1 s for a day of 2,000 devices against 3.4 s through an STRtree of samples).
    """

    #: Cells at most (a larger city gets larger cells: the table stays under ~100 MB).
    MAX_CELLS = 12_000_000

    def __init__(self, px: np.ndarray, py: np.ndarray, tolerance: float) -> None:
        self.px, self.py, self.tolerance = px, py, tolerance
        span_x, span_y = float(np.ptp(px)) + 4 * tolerance, float(np.ptp(py)) + 4 * tolerance
        self.cell = max(2 * tolerance, float(np.sqrt(span_x * span_y / self.MAX_CELLS)))
        self.x0, self.y0 = float(px.min()) - self.cell, float(py.min()) - self.cell
        self.nx = int((px.max() - self.x0) // self.cell) + 2
        self.ny = int((py.max() - self.y0) // self.cell) + 2
        cells = ((px - self.x0) // self.cell).astype(np.int64) * self.ny + ((py - self.y0) // self.cell).astype(np.int64)
        self.order = np.argsort(cells, kind="stable")
        counts = np.bincount(cells, minlength=self.nx * self.ny)
        self.first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.counts = counts
        table = np.zeros((self.nx + 1, self.ny + 1), dtype=np.int32)
        table[1:, 1:] = counts.reshape(self.nx, self.ny).cumsum(axis=0).cumsum(axis=1)
        self.table = table

    def _cell_range(self, lo: np.ndarray, hi: np.ndarray, origin: float, size: int) -> tuple[np.ndarray, np.ndarray]:
        """First and last cell (clipped to the table) along one axis of [lo, hi]; first > last when outside."""
        first = np.maximum(np.floor((lo - origin) / self.cell), 0).astype(np.int64)
        last = np.minimum(np.floor((hi - origin) / self.cell), size - 1).astype(np.int64)
        return first, last

    def near(self, ax: np.ndarray, ay: np.ndarray, bx: np.ndarray, by: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pairs (segment number, piece number) of segments A-B passing within the tolerance of a piece."""
        reach = self.tolerance
        ix0, ix1 = self._cell_range(np.minimum(ax, bx) - reach, np.maximum(ax, bx) + reach, self.x0, self.nx)
        iy0, iy1 = self._cell_range(np.minimum(ay, by) - reach, np.maximum(ay, by) + reach, self.y0, self.ny)
        valid = (ix1 >= ix0) & (iy1 >= iy0)
        t = self.table
        seg = np.flatnonzero(valid)
        x0, x1, y0, y1 = ix0[seg], ix1[seg], iy0[seg], iy1[seg]
        inside = t[x1 + 1, y1 + 1] - t[x0, y1 + 1] - t[x1 + 1, y0] + t[x0, y0]
        keep = inside > 0
        seg, x0, x1, y0, y1 = seg[keep], x0[keep], x1[keep], y0[keep], y1[keep]
        if not len(seg):
            return np.empty(0, np.int64), np.empty(0, np.int64)
        # Every cell of every kept box, then every piece of those cells.
        width, height = x1 - x0 + 1, y1 - y0 + 1
        n_cells = width * height
        owner = np.repeat(np.arange(len(seg)), n_cells)
        k = np.arange(int(n_cells.sum())) - np.repeat(np.cumsum(n_cells) - n_cells, n_cells)
        cell = (x0[owner] + k // height[owner]) * self.ny + (y0[owner] + k % height[owner])
        count = self.counts[cell]
        has = count > 0
        owner, cell, count = owner[has], cell[has], count[has]
        pair_owner = np.repeat(owner, count)
        j = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
        piece = self.order[np.repeat(self.first[cell], count) + j]
        s = seg[pair_owner]
        px, py = self.px[piece], self.py[piece]
        sx, sy, dx, dy = ax[s], ay[s], bx[s] - ax[s], by[s] - ay[s]
        length2 = dx * dx + dy * dy
        along = np.clip(((px - sx) * dx + (py - sy) * dy) / np.where(length2 > 0, length2, 1.0), 0.0, 1.0)
        ex, ey = sx + along * dx - px, sy + along * dy - py
        close = ex * ex + ey * ey <= reach * reach
        return s[close], piece[close]


def _facility_visits(rows: list[Any], plane: Plane, trucks: Fixes, x: np.ndarray, y: np.ndarray,
                     group: np.ndarray, day: np.ndarray) -> pd.DataFrame:
    """Trucks staying at least :data:`FACILITY_DWELL_S` within :data:`FACILITY_RADIUS_M` of a facility."""
    columns = ["device_id", "arrived_at", "left_at", "component_code", "facility_kind", "day", "minutes"]
    if not rows or not len(trucks):
        return pd.DataFrame(columns=columns)
    codes = np.array([r[0] for r in rows], dtype=object)
    kinds = np.array([FACILITY_KINDS[r[1]] for r in rows], dtype=object)
    fx, fy = plane.xy(np.array([r[2] for r in rows], dtype=float), np.array([r[3] for r in rows], dtype=float))
    tree = shapely.STRtree(shapely.points(fx, fy))
    candidates = np.flatnonzero(_near_mask(fx, fy, x, y, FACILITY_RADIUS_M))
    near, facility = tree.query(shapely.points(x[candidates], y[candidates]), predicate="dwithin",
                                distance=FACILITY_RADIUS_M)
    at = np.full(len(trucks), -1, dtype=np.int64)
    at[candidates[near[::-1]]] = facility[::-1]  # the first facility listed for a fix wins
    present = at >= 0
    if not present.any():
        return pd.DataFrame(columns=columns)
    change = np.ones(len(at), dtype=bool)
    change[1:] = (at[1:] != at[:-1]) | (group[1:] != group[:-1]) | (np.diff(trucks.t) > FIX_WEIGHT_CAP_S)
    run = np.cumsum(change)
    frame = pd.DataFrame({"run": run, "at": at, "t": trucks.t, "device": trucks.device, "day": day})[present]
    visits = frame.groupby("run").agg(at=("at", "first"), arrived=("t", "min"), left=("t", "max"),
                                      device=("device", "first"), day=("day", "first"))
    visits = visits[(visits["left"] - visits["arrived"]) >= FACILITY_DWELL_S]
    return pd.DataFrame({"device_id": trucks.names[visits["device"].to_numpy()],
                         "arrived_at": _iso(visits["arrived"].to_numpy()),
                         "left_at": _iso(visits["left"].to_numpy()),
                         "component_code": codes[visits["at"].to_numpy()],
                         "facility_kind": kinds[visits["at"].to_numpy()],
                         "day": _day_text(visits["day"].to_numpy()),
                         "minutes": np.round((visits["left"] - visits["arrived"]).to_numpy() / 60, 2)})


def _case_checks(plane: Plane, rows: list[Any], fixes: Fixes, x: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    """Patrol-reported cases: a patroller near at report time?  Dispatched cases: first crew fix near after."""
    columns = ["case_number", "case_reported_at", "source_channel", "patroller_present", "dispatched_at",
               "first_crew_fix_at", "crew_device_id", "arrival_minutes"]
    if not rows:
        return pd.DataFrame(columns=columns)
    cases = pd.DataFrame(rows, columns=["case_number", "reported_at", "channel", "reported", "dispatched", "lon",
                                        "lat"])
    cx, cy = plane.xy(cases["lon"].to_numpy(float), cases["lat"].to_numpy(float))
    candidates = np.flatnonzero(_near_mask(cx, cy, x, y, CASE_RADIUS_M))
    tree = shapely.STRtree(shapely.points(cx, cy))
    near, case = tree.query(shapely.points(x[candidates], y[candidates]), predicate="dwithin", distance=CASE_RADIUS_M)
    fix = candidates[near]
    pairs = pd.DataFrame({"case": case, "t": fixes.t[fix], "patroller": fixes.is_role("patroller")[fix],
                          "device": fixes.device[fix]})
    reported = cases["reported"].to_numpy()[pairs["case"]]
    dispatched = cases["dispatched"].to_numpy(dtype=float)[pairs["case"]]
    present = pairs[pairs["patroller"] & (np.abs(pairs["t"] - reported) <= CASE_WINDOW_S)]["case"]
    after = pairs["t"].to_numpy() - dispatched
    arrivals = pairs[(after >= 0) & (after <= ARRIVAL_WINDOW_S)].sort_values("t").drop_duplicates("case")
    arrivals = arrivals.set_index("case")
    patrol = (cases["channel"] == "patrol").to_numpy()
    out = pd.DataFrame({
        "case_number": cases["case_number"], "case_reported_at": cases["reported_at"].astype(str),
        "source_channel": cases["channel"],
        "patroller_present": np.where(patrol, np.isin(np.arange(len(cases)), present.to_numpy()), None),
        "dispatched_at": [None if pd.isna(v) else _iso([int(v)])[0] for v in cases["dispatched"]],
    })
    first = arrivals["t"].reindex(np.arange(len(cases)))
    out["first_crew_fix_at"] = [None if pd.isna(v) else _iso([int(v)])[0] for v in first]
    device = arrivals["device"].reindex(np.arange(len(cases))).to_numpy()
    out["crew_device_id"] = [None if pd.isna(d) else fixes.names[int(d)] for d in device]
    out["arrival_minutes"] = np.round((first.to_numpy() - cases["dispatched"].to_numpy(dtype=float)) / 60, 1)
    return out[columns]


def write_rollups(ctx: LoadContext, rollups: Rollups) -> None:
    """Replace the touched device-days' rollups and rebuild the touched days' per-grid totals."""
    conn = ctx.conn
    days = rollups.days
    if not days:
        return
    # Every rollup of a touched device-day is replaced: delete, then COPY the new rows straight in.
    _stage(conn, "_track_day_in", rollups.device_days[["device_id", "day"]])
    touched = "(SELECT device_id, day::date AS day FROM _track_day_in)"
    conn.execute(text(f"DELETE FROM core.track_day d USING {touched} t"  # noqa: S608 (our SQL)
                      " WHERE d.device_id = t.device_id AND d.day = t.day"))
    copy_frame(conn, "core.track_day", rollups.device_days, list(rollups.device_days.columns))
    conn.execute(text(f"DELETE FROM core.track_grid_visit v USING {touched} t"  # noqa: S608 (our SQL)
                      " WHERE v.device_id = t.device_id AND v.day = t.day"))
    if len(rollups.grid_visits):  # straight in: the touched device-days' visits are gone, nothing conflicts
        copy_frame(conn, "core.track_grid_visit", rollups.grid_visits, list(rollups.grid_visits.columns))
    conn.execute(text("DELETE FROM core.grid_patrol_day WHERE day = ANY(CAST(:days AS date[]))"), {"days": days})
    conn.execute(text(
        "INSERT INTO core.grid_patrol_day (day, grid_code, visits, minutes, devices, first_at, last_at)"
        " SELECT day, grid_code, sum(visits), sum(minutes), count(*), min(first_at), max(last_at)"
        " FROM core.track_grid_visit WHERE day = ANY(CAST(:days AS date[])) GROUP BY day, grid_code"),
        {"days": days})
    if len(rollups.road_sweeps):
        _stage(conn, "_sweep_in", rollups.road_sweeps)
        conn.execute(text(
            "INSERT INTO core.road_sweep_day AS s (day, road_id, pieces, swept_pieces, swept_share, swept_by)"
            " SELECT day::date, road_id, pieces::int, swept_pieces::int[],"
            " cardinality(swept_pieces::int[])::float8 / pieces::int, swept_by::text[] FROM _sweep_in"
            " ON CONFLICT (day, road_id) DO UPDATE SET"
            " swept_pieces = (SELECT array_agg(DISTINCT p ORDER BY p) FROM unnest(s.swept_pieces || EXCLUDED.swept_pieces) p),"
            " swept_by = (SELECT array_agg(DISTINCT b ORDER BY b) FROM unnest(s.swept_by || EXCLUDED.swept_by) b),"
            " swept_share = (SELECT count(DISTINCT p) FROM unnest(s.swept_pieces || EXCLUDED.swept_pieces) p)::float8"
            " / s.pieces"))
    conn.execute(text(f"DELETE FROM core.facility_visit v USING {touched} t"  # noqa: S608 (our SQL)
                      " WHERE v.device_id = t.device_id AND v.day = t.day"))
    if len(rollups.facility_visits):
        _stage(conn, "_facility_in", rollups.facility_visits)
        conn.execute(text(
            "INSERT INTO core.facility_visit (device_id, arrived_at, left_at, component_code, facility_kind, day,"
            " minutes) SELECT device_id, arrived_at::timestamptz, left_at::timestamptz, component_code, facility_kind,"
            " day::date, minutes::float8 FROM _facility_in"))
    if len(rollups.case_checks):
        _stage(conn, "_case_check_in", rollups.case_checks)
        conn.execute(text(
            "INSERT INTO core.case_track_check AS c (case_number, case_reported_at, source_channel, patroller_present,"
            " dispatched_at, first_crew_fix_at, crew_device_id, arrival_minutes)"
            " SELECT case_number, case_reported_at::timestamptz, source_channel, patroller_present::boolean,"
            " dispatched_at::timestamptz, first_crew_fix_at::timestamptz, crew_device_id, arrival_minutes::float8"
            " FROM _case_check_in ON CONFLICT (case_number, case_reported_at) DO UPDATE SET"
            " patroller_present = c.patroller_present OR EXCLUDED.patroller_present,"
            " dispatched_at = EXCLUDED.dispatched_at,"
            " crew_device_id = CASE WHEN c.first_crew_fix_at <= EXCLUDED.first_crew_fix_at"
            " OR EXCLUDED.first_crew_fix_at IS NULL THEN c.crew_device_id ELSE EXCLUDED.crew_device_id END,"
            " first_crew_fix_at = least(c.first_crew_fix_at, EXCLUDED.first_crew_fix_at),"
            " arrival_minutes = least(c.arrival_minutes, EXCLUDED.arrival_minutes)"))
