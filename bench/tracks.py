"""Tracks speed: one day of a district's fleet through the ETL (with every rollup) against a bare COPY, and the
patrol coverage page's answer time.

    .venv/bin/python bench/tracks.py [--devices 2000] [--hours 8] [--interval 10] [--queries 200]

2,000 devices (800 patrollers, 1,000 cleaners, 200 trucks) on 8-hour shifts with a fix every 10 s: about 5.8
million fixes in one CSV, over the synthetic district of bench/common.py (~20,700 unit grids) with a lattice of
~1,700 road segments.  The bare COPY moves the same CSV into a table with a point column; the ETL reads,
validates (jumps, duplicates, extent, clocks), locates every fix, stores it in a fresh day partition and builds
the daily lines, grid visits, per-grid patrol totals, swept road pieces and last-seen positions, in one
transaction.  Then the /patrol page's day-slider callback is timed for random days and streets.
Last line: ``tracks_vs_copy=<x> coverage_p95_ms=<y>``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
from plotly.utils import PlotlyJSONEncoder
from sqlalchemy import Engine, text

from bench.common import HEIGHT, SOUTH, WEST, WIDTH, scratch_database, settings_for, timed, write_city
from etl.pipeline import LoadOptions, load_source

DAY = np.datetime64("2025-06-02")
HEADERS = ["设备编号", "角色", "定位时间", "经度", "纬度", "速度"]
ROLE_WORDS = {"patroller": "网格员", "cleaner": "保洁员", "truck": "垃圾车"}
SPEED_MS = {"patroller": 1.2, "cleaner": 0.8, "truck": 7.0}
M_PER_DEG_LON, M_PER_DEG_LAT = 89_150.0, 110_950.0


def write_fixes(path: Path, devices: int, hours: float, interval: int, seed: int = 11) -> int:
    """One day of fixes for ``devices`` devices, each a random walk on its shift; return the row count."""
    rng = np.random.default_rng(seed)
    steps = int(hours * 3600 // interval)
    roles = np.array(["patroller"] * (devices * 2 // 5) + ["truck"] * (devices // 10), dtype=object)
    roles = np.concatenate([roles, np.full(devices - len(roles), "cleaner", dtype=object)])
    speed = np.array([SPEED_MS[r] for r in roles])
    heading = rng.uniform(0, 2 * np.pi, devices)[:, None] + np.cumsum(rng.normal(0, 0.25, (devices, steps)), axis=1)
    dx = np.cos(heading) * speed[:, None] * interval / M_PER_DEG_LON
    dy = np.sin(heading) * speed[:, None] * interval / M_PER_DEG_LAT
    margin = 0.002
    lon = rng.uniform(WEST + margin, WEST + WIDTH - margin, devices)[:, None] + np.cumsum(dx, axis=1)
    lat = rng.uniform(SOUTH + margin, SOUTH + HEIGHT - margin, devices)[:, None] + np.cumsum(dy, axis=1)
    # Walls reflect: keep everyone inside the district.
    lo_x, hi_x, lo_y, hi_y = WEST + margin, WEST + WIDTH - margin, SOUTH + margin, SOUTH + HEIGHT - margin
    lon = lo_x + np.abs(((lon - lo_x) + (hi_x - lo_x)) % (2 * (hi_x - lo_x)) - (hi_x - lo_x))
    lat = lo_y + np.abs(((lat - lo_y) + (hi_y - lo_y)) % (2 * (hi_y - lo_y)) - (hi_y - lo_y))
    lon += rng.normal(0, 0.00003, lon.shape)
    lat += rng.normal(0, 0.00003, lat.shape)
    start = DAY + np.timedelta64(6, "h") + rng.integers(0, 4 * 3600, devices).astype("timedelta64[s]")
    times = start[:, None] + (np.arange(steps) * interval).astype("timedelta64[s]")[None, :]
    local = np.datetime_as_string(times.ravel(), unit="s").astype(object)
    table = pa.table({
        "设备编号": np.repeat(np.array([f"D{i:05d}" for i in range(devices)], dtype=object), steps),
        "角色": np.repeat(np.array([ROLE_WORDS[r] for r in roles], dtype=object), steps),
        "定位时间": np.char.replace(local.astype(str), "T", " ").astype(object),
        "经度": np.round(lon.ravel(), 6), "纬度": np.round(lat.ravel(), 6),
        "速度": np.round(np.repeat(speed * 3.6, steps), 1),
    })
    buffer = io.BytesIO()
    pa_csv.write_csv(table, buffer, pa_csv.WriteOptions(quoting_style="needed"))
    path.write_bytes(buffer.getvalue())
    return table.num_rows


def write_roads(path: Path, lines: int = 30) -> int:
    """A lattice of roads, each cut at every crossing into block-long segments; return the segment count."""
    features = []
    xs = np.linspace(WEST + 0.003, WEST + WIDTH - 0.003, lines)
    ys = np.linspace(SOUTH + 0.003, SOUTH + HEIGHT - 0.003, lines)
    for i, x in enumerate(xs):
        for j in range(lines - 1):
            features.append((f"NS{i:02d}-{j:02d}", [[x, ys[j]], [x, ys[j + 1]]]))
    for j, y in enumerate(ys):
        for i in range(lines - 1):
            features.append((f"EW{j:02d}-{i:02d}", [[xs[i], y], [xs[i + 1], y]]))
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"road_id": rid, "name": rid, "road_class": "支路"},
         "geometry": {"type": "LineString", "coordinates": coords}} for rid, coords in features]}), encoding="utf-8")
    return len(features)


def bare_copy(engine: Engine, csv_path: Path) -> int:
    """COPY the CSV as it is into a table with typed columns and a generated point column."""
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS bench_fix_copy"))
        conn.execute(text(
            'CREATE TABLE bench_fix_copy ("设备编号" text, "角色" text, "定位时间" timestamptz, "经度" float8,'
            ' "纬度" float8, "速度" float8, geom geometry(Point, 4326) GENERATED ALWAYS AS'
            ' (ST_SetSRID(ST_MakePoint("经度", "纬度"), 4326)) STORED)'))
        driver = conn.connection.driver_connection
        columns = ", ".join(f'"{h}"' for h in HEADERS)
        with driver.cursor() as cursor, cursor.copy(
                f"COPY bench_fix_copy ({columns}) FROM STDIN (FORMAT csv, HEADER true)") as copy, \
                csv_path.open("rb") as handle:
            while block := handle.read(1 << 20):
                copy.write(block)
        count = int(conn.execute(text("SELECT count(*) FROM bench_fix_copy")).scalar_one())
        conn.execute(text("DROP TABLE bench_fix_copy"))
        return count


def coverage_p95_ms(engine: Engine, queries: int, seed: int = 5) -> tuple[float, float]:
    """p95 of the /patrol page's callbacks over random days (loaded or not) and streets, in ms.

    Returns (day slider, street change).  Timed: the callback body (validation, the day's rollup for the
    street's grids, the figure or its patch, the tables) and the JSON encoding of what Dash sends.  A person
    moves the slider on a street whose page (and grid outlines) is already open, so each street is shown
    once before its slider is timed; the street-change figure (outlines included, cached per data version
    after their first read) is timed on its own.
    """
    from dashboard import patrol_view

    with engine.connect() as conn:
        streets = list(conn.execute(text("SELECT code FROM core.admin_unit WHERE level = 'street'")).scalars())
    rng = np.random.default_rng(seed)
    days = [str(DAY + np.timedelta64(int(k), "D")) for k in rng.integers(-3, 4, queries)]
    picks = [streets[int(i)] for i in rng.integers(0, len(streets), queries)]

    def timed_ms(day: str, street: str, day_only: bool) -> float:
        started = time.perf_counter()
        outputs = patrol_view.grid_status_update(day, street, "zh-CN", engine=engine, day_only=day_only)
        json.dumps(outputs[:3], cls=PlotlyJSONEncoder)
        return (time.perf_counter() - started) * 1000

    street_ms = [timed_ms(str(DAY), street, False) for street in streets]  # each street's page, once
    slider_ms = [timed_ms(day, street, True) for day, street in zip(days, picks, strict=True)]
    street_ms += [timed_ms(day, street, False) for day, street in zip(days[:50], picks[:50], strict=True)]
    return float(np.percentile(slider_ms, 95)), float(np.percentile(street_ms, 95))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--interval", type=int, default=10, help="seconds between fixes")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    started_load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="citygrid-bench-") as folder, \
            scratch_database("citygrid_bench_tracks") as engine:
        tmp = Path(folder)
        settings = settings_for(tmp)
        grids = write_city(tmp / "city.geojson")
        timed(f"load the benchmark city ({grids:,} grids)", load_source, engine, tmp / "city.geojson",
              LoadOptions(kind="admin_unit", crs="EPSG:4326"), settings)
        roads = write_roads(tmp / "roads.geojson")
        timed(f"load {roads:,} road segments", load_source, engine, tmp / "roads.geojson",
              LoadOptions(kind="road", crs="EPSG:4326"), settings)
        csv_path = tmp / "fixes.csv"
        _, rows = timed("write the fixes as CSV", write_fixes, csv_path, args.devices, args.hours, args.interval)
        copy_s, copied = timed(f"bare COPY of {rows:,} fixes", bare_copy, engine, csv_path)
        etl_s, result = timed("CityGrid ETL + rollups", load_source, engine, csv_path,
                              LoadOptions(kind="track", crs="EPSG:4326"), settings)
        assert copied == rows == result.rows_read, (copied, rows, result)
        print(f"ETL stored {result.rows_stored:,} and rejected {result.rows_rejected:,} of {result.rows_read:,} fixes")
        with engine.connect() as conn:
            summary = conn.execute(text(
                "SELECT (SELECT count(*) FROM core.track_day), (SELECT count(*) FROM core.grid_patrol_day),"
                " (SELECT count(*) FROM core.road_sweep_day), (SELECT round(avg(swept_share)::numeric, 3)"
                " FROM core.road_sweep_day)")).one()
        print(f"rollups: {summary[0]:,} device-days, {summary[1]:,} patrolled grid-days, {summary[2]:,} swept"
              f" road-days (mean share {summary[3]})")
        p95, street_p95 = coverage_p95_ms(engine, args.queries)
        print(f"bare COPY {copy_s:.2f} s, ETL {etl_s:.2f} s; /patrol callback p95: day slider {p95:.1f} ms,"
              f" street change (whole figure) {street_p95:.1f} ms")
        # The ratio is measured side by side and bears a busy machine; the p95 does not: say how busy it was.
        print("load average (1, 5, 15 min) at the start: {:.2f} {:.2f} {:.2f}, at the end: {:.2f} {:.2f} {:.2f}".format(
            *started_load, *os.getloadavg()))
        print(f"tracks_vs_copy={etl_s / copy_s:.2f} coverage_p95_ms={p95:.1f}")


if __name__ == "__main__":
    main()
