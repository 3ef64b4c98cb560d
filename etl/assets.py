"""City components (城市部件) and cameras: validate, reproject, locate, merge by code; camera coverage per grid.

Both come as vector files or as tables with 经度/纬度.  A camera's sector is derived here from its position,
heading, field of view and range (indoor kitchen feeds see no street and get none); after cameras or grids
change, every grid's covered share and blind part are recomputed into ``core.grid_coverage``.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy import text

from etl.cases import MergeCounts
from etl.chinese_crs import transform_geometries
from etl.context import LoadContext, coordinates_to_wgs84
from etl.store import copy_frame
from geodata.codes import CAMERA_TYPES, COMPONENT_STATES

LOCATION_COLUMNS = ("district_code", "street_code", "community_code", "grid_code",
                    "h3_r7", "h3_r8", "h3_r9", "h3_r10")


def _geometries_to_wgs84(ctx: LoadContext, work: pd.DataFrame, frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Geometry from the file's geometry column, or points from 经度/纬度 columns; reject what is unusable."""
    if "geometry" in frame.columns:
        geoms = frame.loc[work.index, "geometry"].to_numpy()
        bad = shapely.is_missing(geoms) | shapely.is_empty(geoms)
        if "lon" in work and "lat" in work:  # a point file may also carry coordinates: use them if no shape
            bad &= work["lon"].isna().to_numpy()
        work = ctx.rejects.reject(work, pd.Series(bad, index=work.index), "geometry is missing or empty", "geometry")
        geoms = frame.loc[work.index, "geometry"].to_numpy()
        invalid = ~shapely.is_valid(geoms)
        reasons = pd.Series(["malformed geometry: " + str(r) for r in shapely.is_valid_reason(geoms)],
                            index=work.index, dtype="object")
        work = ctx.rejects.reject(work, pd.Series(invalid, index=work.index), reasons, "geometry")
        return work, transform_geometries(frame.loc[work.index, "geometry"].to_numpy(), ctx.crs)
    work, lon, lat = coordinates_to_wgs84(ctx, work)
    return work, shapely.points(lon, lat)


def _locate(ctx: LoadContext, work: pd.DataFrame, geoms: np.ndarray, what: str) -> tuple[pd.DataFrame, np.ndarray]:
    from etl.locate import h3_cells, locate_geometries, representative_points

    units = locate_geometries(ctx.admin_index, geoms)
    outside = units["district_code"].isna().to_numpy()
    work = ctx.rejects.reject(work, pd.Series(outside, index=work.index),
                              f"outside the city: no district contains this {what}", "geometry")
    geoms = geoms[~outside]
    units = units[~outside]
    for column in ("district_code", "street_code", "community_code", "grid_code"):
        work[column] = units[column].to_numpy()
    lon, lat = representative_points(geoms)
    cells = h3_cells(lon, lat)
    for column in cells.columns:
        work[column] = cells[column].to_numpy()
    return work, geoms


def _upsert(ctx: LoadContext, table: str, key: str, frame: pd.DataFrame, geometry_columns: dict[str, str]) -> MergeCounts:
    """Stage ``frame`` and merge it into ``table`` by ``key``; count inserted, updated and unchanged rows."""
    staging = f"_{table.split('.')[-1]}_in"
    columns = list(frame.columns)
    ctx.conn.execute(text(f"CREATE TEMP TABLE IF NOT EXISTS {staging} ({', '.join(f'{c} text' for c in columns)})"
                          " ON COMMIT DROP"))
    ctx.conn.execute(text(f"TRUNCATE {staging}"))
    copy_frame(ctx.conn, staging, frame.astype("string"), columns)
    types = dict(ctx.conn.execute(text(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " WHERE a.attrelid = CAST(:t AS regclass) AND a.attnum > 0 AND NOT a.attisdropped"), {"t": table}).all())
    select = ", ".join(
        f"ST_SetSRID(ST_GeomFromWKB(decode({c}, 'hex')), 4326)" if c in geometry_columns else f"CAST({c} AS {types[c]})"
        for c in columns
    )
    mutable = [c for c in columns if c != key]
    result = ctx.conn.execute(text(
        f"INSERT INTO {table} AS t ({', '.join(columns)}) SELECT {select} FROM {staging}"  # noqa: S608 (our names)
        f" ON CONFLICT ({key}) DO UPDATE SET {', '.join(f'{c} = EXCLUDED.{c}' for c in mutable)}"
        f" WHERE ({', '.join(f't.{c}' for c in mutable if c != 'source_run_id')}) IS DISTINCT FROM"
        f" ({', '.join(f'EXCLUDED.{c}' for c in mutable if c != 'source_run_id')})"
        " RETURNING (xmax = 0)"
    )).scalars().all()
    new = sum(1 for r in result if r)
    return MergeCounts(new=new, updated=len(result) - new, unchanged=len(frame) - len(result))


def _first_of_each(ctx: LoadContext, work: pd.DataFrame, key: str, label: str) -> pd.DataFrame:
    first = work.groupby(key)["_row"].transform("min")
    return ctx.rejects.reject(work, work["_row"] != first, "duplicate of row " + first.astype(str) + f" (same {label})", key)


# --- components -----------------------------------------------------------------------------------------


def load_components(ctx: LoadContext, frame: pd.DataFrame) -> MergeCounts:
    """Components by their 16-digit code (district 6 + major 2 + minor 2 + serial 6, GB/T 30428.2)."""
    assert ctx.mapping is not None
    work = ctx.mapping.apply(frame, required=("code",))
    code = work["code"].astype("string")
    work = ctx.rejects.reject(work, ~code.str.fullmatch(r"[0-9]{16}").fillna(False),
                              "component code (部件编码) must be 16 digits: district 6 + major 2 + minor 2 + serial 6",
                              "code")
    work = _first_of_each(ctx, work, "code", "component code")
    known = set(ctx.conn.execute(text(
        "SELECT code FROM core.category WHERE kind = 'component' AND NOT is_major")).scalars())
    minor = work["code"].str[6:10]
    work = ctx.rejects.reject(work, ~minor.isin(known),
                              "unknown component category " + minor.astype(str) + " in the code", "code")
    state = work.get("state", pd.Series(pd.NA, index=work.index)).fillna("intact")
    work = work.assign(state=state)
    work = ctx.rejects.reject(work, ~work["state"].isin(list(COMPONENT_STATES)),
                              "unknown state (部件状态) '" + work["state"].astype(str) + "'", "state")
    work, geoms = _geometries_to_wgs84(ctx, work, frame)
    work, geoms = _locate(ctx, work, geoms, "component")
    wrong = work["code"].str[:6] != work["district_code"]
    keep = ~wrong.to_numpy()
    work = ctx.rejects.reject(work, wrong, "the code names another district than where the component lies", "code")
    geoms = geoms[keep]
    surveyed = pd.to_datetime(work.get("surveyed_on", pd.Series(pd.NA, index=work.index)), errors="coerce")
    out = pd.DataFrame({
        "code": work["code"], "name": work.get("name"), "state": work["state"],
        "owner_dept": work.get("owner_dept"), "maintainer": work.get("maintainer"),
        "geom": shapely.to_wkb(geoms, hex=True) if len(geoms) else [],
        **{c: work[c] for c in LOCATION_COLUMNS},
        "surveyed_on": surveyed.dt.strftime("%Y-%m-%d"), "source_run_id": ctx.run_id,
    })
    return _upsert(ctx, "core.component", "code", out, {"geom": "geom"})


# --- cameras --------------------------------------------------------------------------------------------


def _number(ctx: LoadContext, work: pd.DataFrame, column: str, low: float, high: float, label: str,
            default: float | None = None) -> pd.DataFrame:
    raw = work.get(column, pd.Series(pd.NA, index=work.index))
    value = pd.to_numeric(raw, errors="coerce")
    if default is not None:
        value = value.where(raw.notna(), default)
    bad = value.isna() | (value < low) | (value > high)
    work = ctx.rejects.reject(work, bad, f"{label} must be a number from {low:g} to {high:g}", column)
    work[column] = value[work.index].astype(float)
    return work


def load_cameras(ctx: LoadContext, frame: pd.DataFrame) -> MergeCounts:
    """Cameras by device id, with their view sector; then every grid's coverage is recomputed."""
    from etl.coverage import camera_sectors

    assert ctx.mapping is not None
    work = ctx.mapping.apply(frame, required=("camera_id",))
    ident = work["camera_id"].astype("string")
    work = ctx.rejects.reject(work, ~ident.str.fullmatch(r"[0-9A-Za-z_.:-]{1,64}").fillna(False),
                              "camera id (设备编码) must be 1-64 letters, digits or _.:-", "camera_id")
    work = _first_of_each(ctx, work, "camera_id", "camera id")
    kind = work.get("camera_type", pd.Series(pd.NA, index=work.index)).fillna("other")
    work = work.assign(camera_type=kind)
    work = ctx.rejects.reject(work, ~work["camera_type"].isin(list(CAMERA_TYPES)),
                              "unknown camera type (点位类型) '" + work["camera_type"].astype(str) + "'", "camera_type")
    work = _number(ctx, work, "heading_deg", 0, 360, "heading (朝向, compass degrees)", default=0)
    work = _number(ctx, work, "fov_deg", 1, 360, "field of view (视场角, degrees)", default=360)
    work = _number(ctx, work, "range_m", 1, 2000, "range (可视距离, metres)")
    work["heading_deg"] = work["heading_deg"] % 360
    work, geoms = _geometries_to_wgs84(ctx, work, frame)
    point = np.isin(shapely.get_type_id(geoms), [0])
    work = ctx.rejects.reject(work, pd.Series(~point, index=work.index), "a camera must be a point", "geometry")
    geoms = geoms[point]
    work, geoms = _locate(ctx, work, geoms, "camera")
    indoor = (work["camera_type"] == "kitchen").to_numpy()
    lon, lat = shapely.get_x(geoms), shapely.get_y(geoms)
    sectors = np.full(len(work), None, dtype=object)
    if (~indoor).any():
        sectors[~indoor] = camera_sectors(lon[~indoor], lat[~indoor], work["heading_deg"].to_numpy()[~indoor],
                                          work["fov_deg"].to_numpy()[~indoor], work["range_m"].to_numpy()[~indoor],
                                          ctx.settings.metric_crs)
    flags = {}
    for flag, default in (("online", True), ("ai_enabled", False)):
        raw = work.get(flag, pd.Series(None, index=work.index, dtype="object"))
        words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        flags[flag] = pd.Series([words.get(str(v).strip().lower(), default) if v is not None else default
                                 for v in raw.astype("object")], index=work.index, dtype=bool)
    out = pd.DataFrame({
        "camera_id": work["camera_id"], "component_code": work.get("component_code"), "name": work.get("name"),
        "camera_type": work["camera_type"], "geom": shapely.to_wkb(geoms, hex=True) if len(geoms) else [],
        "heading_deg": work["heading_deg"], "fov_deg": work["fov_deg"], "range_m": work["range_m"],
        "indoor": indoor, "ai_enabled": flags["ai_enabled"], "online": flags["online"],
        "coverage": [None if s is None else shapely.to_wkb(s, hex=True) for s in sectors],
        **{c: work[c] for c in LOCATION_COLUMNS}, "source_run_id": ctx.run_id,
    })
    counts = _upsert(ctx, "core.camera", "camera_id", out, {"geom": "geom", "coverage": "coverage"})
    refresh_grid_coverage(ctx)
    return counts


def refresh_grid_coverage(ctx: LoadContext) -> int:
    """Recompute every unit grid's covered share and blind part from the stored sectors (a few seconds)."""
    from etl.coverage import grid_coverage

    grids = gpd.read_postgis(text("SELECT code, geom FROM core.admin_unit WHERE level = 'grid'"), ctx.conn,
                             geom_col="geom").rename_geometry("geometry")
    sectors = gpd.read_postgis(text("SELECT coverage FROM core.camera WHERE coverage IS NOT NULL"), ctx.conn,
                               geom_col="coverage")
    ctx.conn.execute(text("DELETE FROM core.grid_coverage"))
    if grids.empty:
        return 0
    table = grid_coverage(grids, sectors.geometry.to_numpy(), ctx.settings.metric_crs)
    table["blind_geom"] = [None if g is None else shapely.to_wkb(g, hex=True) for g in table["blind_geom"]]
    table = table.rename(columns={"code": "grid_code"})
    ctx.conn.execute(text(
        "CREATE TEMP TABLE IF NOT EXISTS _coverage_in (grid_code text, area_m2 float8, covered_m2 float8,"
        " covered_share float8, camera_count int, blind_geom text) ON COMMIT DROP"))
    ctx.conn.execute(text("TRUNCATE _coverage_in"))
    columns = ["grid_code", "area_m2", "covered_m2", "covered_share", "camera_count", "blind_geom"]
    table["covered_share"] = table["covered_share"].clip(0, 1)
    copy_frame(ctx.conn, "_coverage_in", table[columns], columns)
    ctx.conn.execute(text(
        "INSERT INTO core.grid_coverage (grid_code, area_m2, covered_m2, covered_share, camera_count, blind_geom)"
        " SELECT grid_code, area_m2, covered_m2, covered_share, camera_count,"
        " ST_Multi(ST_SetSRID(ST_GeomFromWKB(decode(blind_geom, 'hex')), 4326)) FROM _coverage_in"))
    return len(table)
