"""The demo city's roads and a week of GPS tracks: patrollers walking their communities, cleaners sweeping their
roads, trucks driving between public toilets and transfer stations, as a fleet platform exports them.

Plausible, not random: patrollers walk at about 1.1 m/s through the unit grids of their community in a
serpentine, 08:30-17:30 with a lunch break and a day off now and then; each leaves a few grids of its beat
alone all week (the grids nobody visits); cleaners sweep their roads back and forth at walking pace,
06:00-11:00 and 14:00-17:30; trucks drive at 20-35 km/h and stop 4-12 minutes at each facility.  GPS noise of
a few metres and dropouts of 10-40 minutes.  (The errors real exports also carry -- jumps, repeated
timestamps -- are the ETL tests' business: the demo loads without rejects.)

Written as the city would hand them over, in GCJ-02 (phone and vehicle terminals report Amap coordinates):
the roads as a GeoJSON line layer, patrollers and cleaners as one CSV for the week with Chinese headers,
trucks as one GPX for the week (a track per truck and day).  Deterministic from the seed and the reference date.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import shapely
import shapely.ops

from etl.demo.generate import Ground, _entry, _lon_lat

DAYS = 7
ROAD_SPACING_M = {"370303": 380.0, "370305": 450.0}
ROAD_PIECE_MAX_M = 1_500.0
#: Streets whose communities have grid patrollers in the demo (雪宫街道 of the reports, and 公园街道).
PATROL_STREETS = ("雪宫街道", "公园街道")
PATROLLERS_PER_COMMUNITY = 2
CLEANERS = 60
TRUCKS = 12
FIX_S = {"patroller": 60, "cleaner": 60, "truck": 30}
SPEED_MS = {"patroller": 1.1, "cleaner": 0.7, "truck": 8.0}
NOISE_M = 4.0
UNVISITED_SHARE = 0.06
HEADERS = ("设备编号", "姓名", "角色", "定位时间", "经度", "纬度", "速度")
ROLE_WORDS = {"patroller": "网格员", "cleaner": "保洁员"}


def _rng(seed: int, step: str) -> np.random.Generator:
    return np.random.default_rng([seed, sum(ord(c) * 31**i for i, c in enumerate(step)) % (2**32)])


# --- roads --------------------------------------------------------------------------------------------------


def build_roads(city: dict[str, Any], ground: Ground, seed: int) -> pd.DataFrame:
    """Road segments on a jittered lattice over each district's built-up core (metric): id, name, class, line."""
    rng = _rng(seed, "roads")
    names = city["generator"]["ground"]["roads"]
    rows = []
    for dcode, core in ground.core.items():
        spacing = ROAD_SPACING_M[dcode]
        x0, y0, x1, y1 = shapely.bounds(core)
        lines = []
        for k, x in enumerate(np.arange(x0 + spacing / 2, x1, spacing)):
            wobble = rng.normal(0, 25, 2)
            lines.append((k, "ns", shapely.LineString([(x + wobble[0], y0), (x + wobble[1], y1)])))
        for k, y in enumerate(np.arange(y0 + spacing / 2, y1, spacing)):
            wobble = rng.normal(0, 25, 2)
            lines.append((k, "ew", shapely.LineString([(x0, y + wobble[0]), (x1, y + wobble[1])])))
        pool = list(names[dcode])
        region = shapely.intersection(ground.inner[dcode], core)
        clipped_all = shapely.intersection(np.array([line for _, _, line in lines], dtype=object), region)
        for index, ((k, _, _), clipped) in enumerate(zip(lines, clipped_all, strict=True)):
            base = pool[index % len(pool)] + ("" if index < len(pool) else f"{index // len(pool) + 1}")
            road_class = "primary" if k % 4 == 0 else ("secondary" if k % 2 == 0 else "branch")
            for part in shapely.get_parts(clipped):
                if part.geom_type != "LineString" or part.length < 60:
                    continue
                n = int(np.ceil(part.length / ROAD_PIECE_MAX_M))
                for j in range(n):
                    piece = shapely.ops.substring(part, j * part.length / n, (j + 1) * part.length / n)
                    rows.append({"district": dcode, "name": f"{base}({j + 1}段)" if n > 1 else base,
                                 "road_class": road_class, "geometry": piece})
    frame = pd.DataFrame(rows)
    frame["road_id"] = [f"R{d}{i:05d}" for i, d in enumerate(frame["district"], start=1)]
    return frame


def _write_roads(out_dir: Path, roads: pd.DataFrame) -> dict[str, Any]:
    path = out_dir / "tracks" / "roads_gcj02.geojson"
    features = []
    words = {"primary": "主干路", "secondary": "次干路", "branch": "支路"}
    coords, owner = shapely.get_coordinates(roads["geometry"].to_numpy(), return_index=True)
    lon, lat = _lon_lat(coords[:, 0], coords[:, 1], "GCJ02")
    lon_lat = np.column_stack([lon, lat])
    for index, row in enumerate(roads.itertuples()):
        features.append({"type": "Feature", "properties": {"道路编码": row.road_id, "道路名称": row.name,
                                                           "道路等级": words[row.road_class]},
                         "geometry": {"type": "LineString", "coordinates": lon_lat[owner == index].tolist()}})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False),
                    encoding="utf-8")
    return _entry(out_dir, path, "road", "GCJ02", len(roads), encoding="utf-8", mapping="roads")


# --- movement -----------------------------------------------------------------------------------------------


def _along(path_xy: np.ndarray, distance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points at ``distance`` metres along a polyline, walking it back and forth."""
    seg = np.hypot(*np.diff(path_xy, axis=0).T)
    total = seg.sum()
    if total <= 0:
        return np.full(len(distance), path_xy[0, 0]), np.full(len(distance), path_xy[0, 1])
    d = np.mod(distance, 2 * total)
    d = np.where(d > total, 2 * total - d, d)
    cum = np.concatenate([[0], np.cumsum(seg)])
    i = np.clip(np.searchsorted(cum, d, side="right") - 1, 0, len(seg) - 1)
    f = (d - cum[i]) / np.where(seg[i] > 0, seg[i], 1)
    return path_xy[i, 0] + f * (path_xy[i + 1, 0] - path_xy[i, 0]), path_xy[i, 1] + f * (path_xy[i + 1, 1] - path_xy[i, 1])


def _shift_times(day: date, spans: list[tuple[float, float]], step: int) -> np.ndarray:
    """Seconds after local midnight of every fix in the shift's spans (hours)."""
    return np.concatenate([np.arange(a * 3600, b * 3600, step) for a, b in spans]).astype(np.int64)


def _day_fixes(rng: np.random.Generator, day: date, path_xy: np.ndarray, role: str, spans: list[tuple[float, float]],
               offset_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One device-day: local seconds, x, y (with noise and a dropout) and speed in km/h."""
    seconds = _shift_times(day, spans, FIX_S[role])
    speed = SPEED_MS[role] * rng.uniform(0.85, 1.15)
    moving = np.diff(seconds, prepend=seconds[0]).clip(0, FIX_S[role])
    x, y = _along(path_xy, offset_m + np.cumsum(moving) * speed)
    if rng.random() < 0.3:  # a dropout: the phone in a pocket, a tunnel, a flat battery
        start = rng.integers(0, len(seconds))
        keep = (seconds < seconds[start]) | (seconds > seconds[start] + rng.integers(600, 2400))
        seconds, x, y = seconds[keep], x[keep], y[keep]
    x = x + rng.normal(0, NOISE_M, len(x))
    y = y + rng.normal(0, NOISE_M, len(y))
    return seconds, x, y, np.round(np.full(len(x), speed * 3.6) + rng.normal(0, 0.3, len(x)), 1).clip(0)


def _serpentine(points: np.ndarray) -> np.ndarray:
    """Grid centres in rows of ~150 m, west to east then back: the order a patroller walks a beat."""
    row = np.floor((points[:, 1] - points[:, 1].min()) / 150).astype(int)
    key = np.where(row % 2 == 0, points[:, 0], -points[:, 0])
    return points[np.lexsort((key, row))]


# --- writing ------------------------------------------------------------------------------------------------


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    pa_csv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), buffer,
                     pa_csv.WriteOptions(quoting_style="needed"))
    path.write_bytes(buffer.getvalue())


def _write_gpx(path: Path, tracks: list[tuple[str, dict[str, np.ndarray]]]) -> None:
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n<gpx version="1.1" creator="CityGrid demo (GCJ-02)"'
             ' xmlns="http://www.topografix.com/GPX/1/1">\n']
    for name, frame in tracks:
        parts.append(f"<trk><name>{name}</name><type>truck</type><trkseg>\n")
        parts.extend(f'<trkpt lat="{lat:.6f}" lon="{lon:.6f}"><time>{time}</time></trkpt>\n'
                     for lon, lat, time in zip(frame["lon"], frame["lat"], frame["time"], strict=True))
        parts.append("</trkseg></trk>\n")
    parts.append("</gpx>\n")
    path.write_text("".join(parts), encoding="utf-8")


def _local_text(day: date, seconds: np.ndarray) -> np.ndarray:
    stamps = np.datetime64(day.isoformat()) + seconds.astype("timedelta64[s]")
    return np.char.replace(np.datetime_as_string(stamps, unit="s"), "T", " ")


def _utc_text(day: date, seconds: np.ndarray) -> np.ndarray:
    stamps = np.datetime64(day.isoformat()) + (seconds - 8 * 3600).astype("timedelta64[s]")
    return np.char.add(np.datetime_as_string(stamps, unit="s"), "Z")


def write_tracks(out_dir: Path, city: dict[str, Any], ground: Ground, components: pd.DataFrame, seed: int,
                 reference: date, emit: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    """Write the roads and the week of tracks before ``reference``; return their manifest entries in load order."""
    folder = out_dir / "tracks"
    folder.mkdir(exist_ok=True)
    roads = build_roads(city, ground, seed)
    entries = [_write_roads(out_dir, roads)]
    emit(entries[-1])
    rng = _rng(seed, "tracks")
    grids = ground.grids
    streets = ground.streets.set_index("name")["code"]
    beats: list[tuple[str, np.ndarray]] = []
    for street in PATROL_STREETS:
        if street not in streets.index:
            continue
        in_street = grids[(grids["street"] == streets[street]) & grids["fine"]]
        for community, cells in in_street.groupby("community"):
            centres = shapely.get_coordinates(shapely.point_on_surface(cells.geometry.to_numpy()))
            keep = rng.random(len(centres)) >= UNVISITED_SHARE  # grids this beat never walks
            if keep.sum() < 2:
                continue
            order = _serpentine(centres[keep])
            halves = np.array_split(order, PATROLLERS_PER_COMMUNITY)
            beats += [(f"{community}-{k + 1}", half) for k, half in enumerate(halves) if len(half) >= 2]
    road_lines = roads["geometry"].to_numpy()
    facilities = components[components["minor"].isin(["0301", "0312"])]
    days = [reference - timedelta(days=DAYS - k) for k in range(DAYS)]
    cleaner_paths = [np.concatenate([shapely.get_coordinates(line)
                                     for line in road_lines[(index * 3 + np.arange(3)) % len(road_lines)]])
                     for index in range(CLEANERS)]
    tables: list[pd.DataFrame] = []
    trucks: list[tuple[str, dict[str, np.ndarray]]] = []
    for day in days:
        parts: dict[str, list[Any]] = {k: [] for k in ("device", "name", "role", "t", "x", "y", "v")}

        def add(device: str, name: str, role: str, fixes: tuple[np.ndarray, ...],
                parts: dict[str, list[Any]] = parts) -> None:
            n = len(fixes[0])
            parts["device"].append(np.full(n, device, dtype=object))
            parts["name"].append(np.full(n, name, dtype=object))
            parts["role"].append(np.full(n, role, dtype=object))
            for key, values in zip(("t", "x", "y", "v"), fixes, strict=True):
                parts[key].append(values)

        for index, (_, path_xy) in enumerate(beats):
            if rng.random() < 0.08:  # a day off
                continue
            add(f"PT{index + 1:04d}", f"网格员{index + 1:03d}", "patroller",
                _day_fixes(rng, day, path_xy, "patroller", [(8.5, 12.0), (13.0, 17.5)], rng.uniform(0, 200)))
        for index, path_xy in enumerate(cleaner_paths):
            add(f"CL{index + 1:04d}", f"保洁员{index + 1:03d}", "cleaner",
                _day_fixes(rng, day, path_xy, "cleaner", [(6.0, 11.0), (14.0, 17.5)], 0.0))
        people = pd.DataFrame({k: np.concatenate(v) for k, v in parts.items()})
        people = people[_in_city(ground, people["x"].to_numpy(), people["y"].to_numpy())]
        lon, lat = _lon_lat(people["x"].to_numpy(), people["y"].to_numpy(), "GCJ02")
        tables.append(pd.DataFrame({"设备编号": people["device"], "姓名": people["name"],
                                    "角色": people["role"].map(ROLE_WORDS),
                                    "定位时间": _local_text(day, people["t"].to_numpy()),
                                    "经度": lon, "纬度": lat, "速度": people["v"]}))
        trucks += _truck_tracks(ground, rng, day, facilities)
    # One export for the week per platform: each file is one ETL run, and the week loads as two.
    path = folder / f"patrol_cleaning_{days[0].isoformat()}_{days[-1].isoformat()}.csv"
    table = pd.concat(tables, ignore_index=True)
    _write_csv(path, table)
    entries.append(_entry(out_dir, path, "track", "GCJ02", len(table), encoding="utf-8", mapping="tracks"))
    emit(entries[-1])
    path = folder / f"trucks_{days[0].isoformat()}_{days[-1].isoformat()}.gpx"
    _write_gpx(path, trucks)
    entries.append(_entry(out_dir, path, "track", "GCJ02", sum(len(t["time"]) for _, t in trucks), encoding="utf-8"))
    emit(entries[-1])
    return entries


def _in_city(ground: Ground, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fixes safely inside a district: a device beyond the boundary is outside the platform's fence (no fix)."""
    inside = np.zeros(len(x), dtype=bool)
    for region in ground.inner.values():
        inside |= shapely.contains_xy(region, x, y)
    return inside


def _truck_tracks(ground: Ground, rng: np.random.Generator, day: date, facilities: pd.DataFrame
                  ) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Each truck's day: a round of 5-8 facilities (toilets, then a transfer station), stopping at each."""
    tracks = []
    where = {(district, minor): group[["ax", "ay"]].to_numpy()
             for (district, minor), group in facilities.groupby(["district", "minor"])}
    for index in range(TRUCKS):
        district = "370303" if index % 3 else "370305"
        toilets, stations = where[(district, "0301")], where[(district, "0312")]
        picked = rng.choice(len(toilets), size=min(len(toilets), int(rng.integers(5, 8))), replace=False)
        xy = np.vstack([toilets[picked], stations[[int(rng.integers(0, len(stations)))]]])
        seconds, x, y = [], [], []
        clock = 7 * 3600 + int(rng.integers(0, 3600))
        here = xy[0] + rng.normal(0, 300, 2)
        for target in xy:
            distance = float(np.hypot(*(target - here)))
            drive = int(distance / (SPEED_MS["truck"] * rng.uniform(0.7, 1.1)))
            steps = np.arange(0, drive, FIX_S["truck"])
            f = steps / max(drive, 1)
            seconds.append(clock + steps)
            x.append(here[0] + f * (target[0] - here[0]))
            y.append(here[1] + f * (target[1] - here[1]))
            clock += drive
            stay = np.arange(0, int(rng.integers(240, 720)), FIX_S["truck"])
            seconds.append(clock + stay)
            x.append(np.full(len(stay), target[0]))
            y.append(np.full(len(stay), target[1]))
            clock += int(stay[-1]) + FIX_S["truck"] if len(stay) else FIX_S["truck"]
            here = target
        s = np.concatenate(seconds)
        tx, ty = np.concatenate(x) + rng.normal(0, NOISE_M, len(s)), np.concatenate(y) + rng.normal(0, NOISE_M, len(s))
        keep = _in_city(ground, tx, ty)
        s, tx, ty = s[keep], tx[keep], ty[keep]
        lon, lat = _lon_lat(tx, ty, "GCJ02")
        tracks.append((f"TK{index + 1:03d}", {"lon": lon, "lat": lat, "time": _utc_text(day, s)}))
    return tracks
