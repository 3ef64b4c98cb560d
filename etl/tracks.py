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
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import shapely
from pyproj import Transformer
from sqlalchemy import Connection, text

from etl import pgcopy
from etl.bulk import BackgroundWriter, copy_binary
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
    bad = ~work["device_id"].str.fullmatch(r"[0-9A-Za-z_.:-]+").fillna(False) | (work["device_id"].str.len() > 64)
    work = ctx.rejects.reject(work, bad, "device id must be 1-64 letters, digits or _.:-", "device_id")
    role = work["role"] if "role" in work else pd.Series(np.nan, index=work.index, dtype=STRING_DTYPE)
    return _reject(ctx, work, ~role.isin(list(TRACK_ROLES)).to_numpy(),
                   lambda m: [f"unknown role (角色) '{v}': patroller, cleaner or truck" for v in role[m]], "role")


def _parse_times(ctx: LoadContext, work: pd.DataFrame) -> pd.DataFrame:
    assert ctx.mapping is not None
    work = ctx.rejects.reject(work, work["time"].isna(), "time (定位时间) is empty", "time")
    parsed = _to_utc(work["time"], ctx.mapping.timezone)
    unreadable = parsed.isna().to_numpy()
    raw = work["time"]
    work = _reject(ctx, work, unreadable, lambda m: [f"cannot read time (定位时间) '{v}'" for v in raw[m]], "time")
    parsed = parsed[~unreadable]
    seconds = parsed.to_numpy(dtype="datetime64[s]").astype(np.int64)
    limit = int((ctx.now + _CLOCK_SKEW).timestamp())
    work = work.assign(_t=seconds)
    return ctx.rejects.reject(work, work["_t"] > limit, "time lies in the future (the device's clock is ahead)", "time")


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
    speed = pd.to_numeric(work["speed_kmh"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan) \
        if "speed_kmh" in work else np.full(len(work), np.nan)
    speed = np.where((speed >= 0) & (speed <= 400), speed, np.nan)
    numbers = pd.DataFrame({"_row": work["_row"].to_numpy(), "_dev": device.astype(np.int32), "_role": role,
                            "_t": work["_t"].to_numpy(), "_lon": work["_lon"].to_numpy(),
                            "_lat": work["_lat"].to_numpy(), "_speed": speed}, index=work.index)
    order = np.lexsort((numbers["_row"].to_numpy(), numbers["_t"].to_numpy(), numbers["_dev"].to_numpy()))
    return numbers.iloc[order], np.asarray(names, dtype=object)


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
    """COPY the new fixes: a day without a partition into a fresh table attached when full, others through the parent."""
    if not len(fixes):
        return
    days = fixes.day
    existing = set(ctx.conn.execute(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'core.track_fix'::regclass")).scalars())
    names = pa.array(fixes.names, type=pa.string())
    order = np.argsort(days, kind="stable")
    bounds = np.flatnonzero(np.diff(days[order])) + 1
    for index in np.split(order, bounds):
        day = int(days[index[0]])
        encoded = []
        for start in range(0, len(index), _ENCODE_ROWS):
            rows = index[start:start + _ENCODE_ROWS]
            speed = pd.Series(np.round(fixes.speed[rows])).astype("Int16")
            encoded.append(pgcopy.encode([
                ("device_id", "text", names.take(pa.array(fixes.device[rows]))),
                ("fix_time", "timestamptz", pd.Series(fixes.t[rows].astype("datetime64[s]"))),
                ("geom", "point", (fixes.lon[rows], fixes.lat[rows], 4326)),
                ("speed_kmh", "int2", speed),
                ("source_run_id", "int8", np.full(len(rows), ctx.run_id, dtype=np.int64)),
            ], len(rows)))
        name = _day_name(day)
        writer.submit(_fresh_day_job(name, day, encoded) if name not in existing else
                      (lambda driver, encoded=encoded: copy_binary(driver, "core.track_fix", encoded)))


def _fresh_day_job(name: str, day: int, encoded: list[pgcopy.BinaryRows]) -> Any:
    lo, hi = _bounds(day)

    def job(driver: Any) -> None:
        with driver.cursor() as cursor:
            cursor.execute(f"CREATE TABLE core.{name} (LIKE core.track_fix INCLUDING DEFAULTS INCLUDING CONSTRAINTS);"
                           f" ALTER TABLE core.{name} ADD CONSTRAINT {name}_bounds"
                           f" CHECK (fix_time IS NOT NULL AND fix_time >= {lo} AND fix_time < {hi})")
        copy_binary(driver, f"core.{name}", encoded)
        with driver.cursor() as cursor:
            cursor.execute(f"ALTER TABLE core.track_fix ATTACH PARTITION core.{name} FOR VALUES FROM ({lo}) TO ({hi});"
                           f" ALTER TABLE core.{name} DROP CONSTRAINT {name}_bounds")

    return job


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


def _metric(settings_crs: int, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    transformer = Transformer.from_crs(4326, settings_crs, always_xy=True)
    x, y = transformer.transform(lon, lat)
    return np.asarray(x), np.asarray(y)


@dataclass
class Lookups:
    """What the rollups need from the store, read before the writer thread owns the connection."""

    pieces: pd.DataFrame
    facilities: list[Any]
    cases: list[Any]

    @classmethod
    def read(cls, ctx: LoadContext, fixes: Fixes) -> Lookups:
        if not len(fixes):
            return cls(road_pieces(ctx.conn, ctx.settings.metric_crs), [], [])
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
        return cls(road_pieces(ctx.conn, ctx.settings.metric_crs), list(facilities), list(cases))


def compute_rollups(ctx: LoadContext, fixes: Fixes, lookups: Lookups) -> Rollups:
    """Daily lines, grid visits, swept road pieces, facility stops and case checks of ``fixes`` (no writes)."""
    from etl.locate import locate_points

    if not len(fixes):
        empty = pd.DataFrame()
        return Rollups([], empty, empty, empty, empty, empty)
    day = fixes.day
    group_start = np.concatenate([[True], (fixes.device[1:] != fixes.device[:-1]) | (day[1:] != day[:-1])])
    group = np.cumsum(group_start) - 1
    next_same = np.concatenate([~group_start[1:], [False]])
    dt_next = np.concatenate([np.diff(fixes.t), [0]])
    moving = next_same & (dt_next <= GAP_S)
    x, y = _metric(ctx.settings.metric_crs, fixes.lon, fixes.lat)
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
        "geom": shapely.to_wkb(lines, hex=True),
        "length_m": np.round(np.add.reduceat(step, starts), 1), "first_at": _iso(fixes.t[starts]),
        "last_at": _iso(fixes.t[ends]), "fix_count": counts, "source_run_id": ctx.run_id,
    })
    weight = np.where(next_same, np.minimum(dt_next, FIX_WEIGHT_CAP_S), 0)
    patrol = np.flatnonzero(fixes.is_role("patroller"))
    grid = locate_points(ctx.admin_index, fixes.lon[patrol], fixes.lat[patrol])["grid_code"].to_numpy()
    grid_visits = _grid_visits(grid, fixes.take(patrol), group[patrol], weight[patrol], day[patrol])
    crews = np.flatnonzero(~fixes.is_role("patroller"))
    road_sweeps = _road_sweeps(ctx, lookups.pieces, x, y, fixes, moving, day, crews)
    trucks = np.flatnonzero(fixes.is_role("truck"))
    facility_visits = _facility_visits(lookups.facilities, ctx.settings.metric_crs, fixes.take(trucks), x[trucks],
                                       y[trucks], group[trucks], day[trucks])
    case_checks = _case_checks(ctx, lookups.cases, fixes, x, y)
    return Rollups(sorted({str(d) for d in device_days["day"]}), device_days, grid_visits, road_sweeps,
                   facility_visits, case_checks)


def _day_text(days: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(np.asarray(days, dtype="datetime64[D]"))


def _grid_visits(grid: np.ndarray, fixes: Fixes, group: np.ndarray, weight: np.ndarray, day: np.ndarray
                 ) -> pd.DataFrame:
    """Per device-day and grid: visits (runs of fixes in the grid, broken by gaps) and minutes."""
    columns = ["day", "grid_code", "device_id", "visits", "minutes", "first_at", "last_at"]
    on_grid = pd.notna(grid)
    if not on_grid.any():
        return pd.DataFrame(columns=columns)
    new_run = np.ones(len(grid), dtype=bool)
    if len(grid) > 1:
        gap = np.diff(fixes.t) > GAP_S
        new_run[1:] = (grid[1:] != grid[:-1]) | (group[1:] != group[:-1]) | gap
    frame = pd.DataFrame({"group": group, "grid": grid, "start": new_run, "weight": weight, "t": fixes.t,
                          "device": fixes.device, "day": day})[on_grid]
    summary = frame.groupby(["group", "grid"], sort=False).agg(
        visits=("start", "sum"), seconds=("weight", "sum"), first=("t", "min"), last=("t", "max"),
        device=("device", "first"), day=("day", "first")).reset_index()
    return pd.DataFrame({"day": _day_text(summary["day"].to_numpy()), "grid_code": summary["grid"],
                         "device_id": fixes.names[summary["device"].to_numpy()],
                         "visits": summary["visits"].clip(lower=1),
                         "minutes": np.round(summary["seconds"].to_numpy() / 60, 2),
                         "first_at": _iso(summary["first"].to_numpy()), "last_at": _iso(summary["last"].to_numpy())})


def road_pieces(conn: Connection, metric_crs: int) -> pd.DataFrame:
    """Every road cut into pieces of about :data:`PIECE_M` m: road id, piece number, midpoint (metric), count."""
    rows = conn.execute(text("SELECT road_id, ST_AsBinary(geom) FROM core.road ORDER BY road_id")).all()
    if not rows:
        return pd.DataFrame(columns=["road_id", "piece", "x", "y", "pieces"])
    ids = np.array([r[0] for r in rows], dtype=object)
    geoms = shapely.from_wkb([bytes(r[1]) for r in rows])
    parts, owner = shapely.get_parts(geoms, return_index=True)
    transformer = Transformer.from_crs(4326, metric_crs, always_xy=True)
    parts = shapely.transform(parts, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))
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


def _road_sweeps(ctx: LoadContext, pieces: pd.DataFrame, x: np.ndarray, y: np.ndarray, fixes: Fixes,
                 moving: np.ndarray, day: np.ndarray, crews: np.ndarray) -> pd.DataFrame:
    """Per day and road: the pieces a cleaner's or truck's track passed within the tolerance, and by whom.

    The track is sampled every few metres (a truck's fixes 10 s apart are 80 m apart, so points are added
    between them); a piece counts as swept where a sample lies within the tolerance of its midpoint.  A
    track crossing a road touches one or two of its ~20 m pieces; one along it, all of them.
    """
    columns = ["day", "road_id", "pieces", "swept_pieces", "swept_by"]
    tolerance = ctx.settings.sweep_tolerance_m
    if pieces.empty or not len(crews):
        return pd.DataFrame(columns=columns)
    spacing = tolerance / 2
    seg = crews[moving[crews]]
    length = np.hypot(x[seg + 1] - x[seg], y[seg + 1] - y[seg])
    extra = np.minimum(np.floor(length / spacing), 200).astype(np.int64)  # a long gap is not swept in between
    extra[length > SEGMENT_MAX_M] = 0
    owner = np.repeat(seg, extra)
    fraction = (np.arange(extra.sum()) - np.repeat(np.cumsum(extra) - extra, extra) + 1) / np.repeat(extra + 1, extra)
    sx = np.concatenate([x[crews], x[owner] + fraction * (x[owner + 1] - x[owner])])
    sy = np.concatenate([y[crews], y[owner] + fraction * (y[owner + 1] - y[owner])])
    source = np.concatenate([crews, owner])
    px, py = pieces["x"].to_numpy(), pieces["y"].to_numpy()
    near = _near_mask(px, py, sx, sy, tolerance)
    sx, sy, source = sx[near], sy[near], source[near]
    if not len(source):
        return pd.DataFrame(columns=columns)
    tree = shapely.STRtree(shapely.points(px, py))
    which, piece = tree.query(shapely.points(sx, sy), predicate="dwithin", distance=tolerance)
    if not len(which):
        return pd.DataFrame(columns=columns)
    hits = pd.DataFrame({"day": day[source[which]], "device": fixes.device[source[which]], "piece_row": piece})
    hits = hits.drop_duplicates()
    hits["road_id"] = pieces["road_id"].to_numpy()[hits["piece_row"]]
    hits["piece"] = pieces["piece"].to_numpy()[hits["piece_row"]]
    hits["pieces"] = pieces["pieces"].to_numpy()[hits["piece_row"]]
    by_road = hits.groupby(["day", "road_id"]).agg(
        pieces=("pieces", "first"), swept=("piece", lambda v: sorted(set(v))),
        by=("device", lambda v: sorted(set(v)))).reset_index()
    return pd.DataFrame({"day": _day_text(by_road["day"].to_numpy()), "road_id": by_road["road_id"],
                         "pieces": by_road["pieces"],
                         "swept_pieces": ["{" + ",".join(map(str, v)) + "}" for v in by_road["swept"]],
                         "swept_by": ["{" + ",".join(fixes.names[v]) + "}" for v in by_road["by"]]})


def _facility_visits(rows: list[Any], metric_crs: int, trucks: Fixes, x: np.ndarray, y: np.ndarray,
                     group: np.ndarray, day: np.ndarray) -> pd.DataFrame:
    """Trucks staying at least :data:`FACILITY_DWELL_S` within :data:`FACILITY_RADIUS_M` of a facility."""
    columns = ["device_id", "arrived_at", "left_at", "component_code", "facility_kind", "day", "minutes"]
    if not rows or not len(trucks):
        return pd.DataFrame(columns=columns)
    codes = np.array([r[0] for r in rows], dtype=object)
    kinds = np.array([FACILITY_KINDS[r[1]] for r in rows], dtype=object)
    fx, fy = _metric(metric_crs, np.array([r[2] for r in rows]), np.array([r[3] for r in rows]))
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


def _case_checks(ctx: LoadContext, rows: list[Any], fixes: Fixes, x: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    """Patrol-reported cases: a patroller near at report time?  Dispatched cases: first crew fix near after."""
    columns = ["case_number", "case_reported_at", "source_channel", "patroller_present", "dispatched_at",
               "first_crew_fix_at", "crew_device_id", "arrival_minutes"]
    if not rows:
        return pd.DataFrame(columns=columns)
    cases = pd.DataFrame(rows, columns=["case_number", "reported_at", "channel", "reported", "dispatched", "lon",
                                        "lat"])
    cx, cy = _metric(ctx.settings.metric_crs, cases["lon"].to_numpy(float), cases["lat"].to_numpy(float))
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
    _stage(conn, "_track_day_in", rollups.device_days)
    conn.execute(text(
        "INSERT INTO core.track_day AS d (device_id, day, role, geom, length_m, first_at, last_at, fix_count,"
        " source_run_id) SELECT device_id, day::date, role, ST_SetSRID(ST_GeomFromWKB(decode(geom, 'hex')), 4326),"
        " length_m::float8, first_at::timestamptz, last_at::timestamptz, fix_count::int, source_run_id::bigint"
        " FROM _track_day_in ON CONFLICT (day, device_id) DO UPDATE SET geom = EXCLUDED.geom,"
        " length_m = EXCLUDED.length_m, first_at = EXCLUDED.first_at, last_at = EXCLUDED.last_at,"
        " fix_count = EXCLUDED.fix_count, source_run_id = EXCLUDED.source_run_id"))
    touched = "(SELECT device_id, day::date AS day FROM _track_day_in)"
    conn.execute(text(f"DELETE FROM core.track_grid_visit v USING {touched} t"  # noqa: S608 (our SQL)
                      " WHERE v.device_id = t.device_id AND v.day = t.day"))
    if len(rollups.grid_visits):
        _stage(conn, "_visit_in", rollups.grid_visits)
        conn.execute(text(
            "INSERT INTO core.track_grid_visit (day, grid_code, device_id, visits, minutes, first_at, last_at)"
            " SELECT day::date, grid_code, device_id, visits::int, minutes::float8, first_at::timestamptz,"
            " last_at::timestamptz FROM _visit_in"))
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
