"""ETL speed: loading N cases end to end against a bare COPY and against geopandas' to_postgis.

    .venv/bin/python bench/etl.py [--rows 1000000]

All three load the same CSV file into the same scratch database in one run.  The ETL reads, validates,
reprojects, locates (unit grid and parents among ~20,700 grids), computes H3 cells at 4 resolutions, stores
and logs; COPY only moves the rows into a table with a point column; to_postgis builds points and inserts
(it locates nothing).  Last line: ``etl_vs_copy=<x> etl_vs_to_postgis=<y> rows_per_s=<z>``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import geopandas as gpd
import pandas as pd
from sqlalchemy import Engine, text

from bench.common import (
    CASE_HEADERS,
    checkpoint,
    scratch_database,
    settings_for,
    timed,
    write_cases,
    write_city,
)
from etl.pipeline import LoadOptions, load_source


def bare_copy(engine: Engine, csv_path: Path) -> int:
    """COPY the CSV as it is into a table of text columns with a generated point column."""
    columns = ", ".join(f'"{h}" text' for h in CASE_HEADERS)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS bench_copy"))
        conn.execute(text(
            f"CREATE TABLE bench_copy ({columns}, geom geometry(Point, 4326) GENERATED ALWAYS AS"
            ' (ST_SetSRID(ST_MakePoint("经度"::float8, "纬度"::float8), 4326)) STORED)'))
        driver = conn.connection.driver_connection
        with driver.cursor() as cursor, cursor.copy(
            f"COPY bench_copy ({', '.join(chr(34) + h + chr(34) for h in CASE_HEADERS)}) FROM STDIN"
            " (FORMAT csv, HEADER true)"
        ) as copy, csv_path.open("rb") as handle:
            while block := handle.read(1 << 20):
                copy.write(block)
        return int(conn.execute(text("SELECT count(*) FROM bench_copy")).scalar_one())


def with_to_postgis(engine: Engine, csv_path: Path) -> int:
    """geopandas' way: read the CSV, make points, to_postgis (no validation, no location)."""
    frame = pd.read_csv(csv_path, dtype=str)
    geo = gpd.GeoDataFrame(frame, geometry=gpd.points_from_xy(frame["经度"].astype(float),
                                                              frame["纬度"].astype(float)), crs=4326)
    geo.to_postgis("bench_to_postgis", engine, if_exists="replace", index=False)
    return len(geo)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="cases to load (default 1,000,000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="citygrid-bench-") as folder, scratch_database("citygrid_bench_etl") as engine:
        tmp = Path(folder)
        settings = settings_for(tmp)
        grids = write_city(tmp / "city.geojson")
        _, city = timed(f"load the benchmark city ({grids:,} grids)", load_source, engine, tmp / "city.geojson",
                        LoadOptions(kind="admin_unit", crs="EPSG:4326"), settings)
        assert city.rows_rejected == 0, city
        csv_path = tmp / "cases.csv"
        timed(f"write {args.rows:,} cases as CSV", write_cases, csv_path, args.rows)
        # Each timing starts from a checkpointed server, with the file in the page cache (written just before
        # the first; read by each), so none pays for the dirty pages of the one before.
        settled = checkpoint()
        copy_s, copied = timed("bare COPY", bare_copy, engine, csv_path)
        checkpoint()
        postgis_s, _ = timed("geopandas to_postgis", with_to_postgis, engine, csv_path)
        checkpoint()
        etl_s, result = timed("CityGrid ETL", load_source, engine, csv_path,
                              LoadOptions(kind="case", crs="EPSG:4326"), settings)
        if not settled:
            print("(no CHECKPOINT between the timings: the server refused it to this role)")
        assert copied == args.rows and result.rows_read == args.rows, (copied, result)
        print(f"ETL stored {result.rows_stored:,} and rejected {result.rows_rejected:,} of {result.rows_read:,} rows")
        print(f"bare COPY {copy_s:.2f} s, to_postgis {postgis_s:.2f} s, ETL {etl_s:.2f} s")
        print(f"etl_vs_copy={etl_s / copy_s:.2f} etl_vs_to_postgis={etl_s / postgis_s:.2f} "
              f"rows_per_s={args.rows / etl_s:.0f}")


if __name__ == "__main__":
    main()
