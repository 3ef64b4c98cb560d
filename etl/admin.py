"""Admin units and unit grids (区 > 街道 > 社区 > 单元网格): validate codes and shapes, reproject, merge by code.

The level follows from the code's length, the parent from its prefix (GB/T 30428.1 / CJ/T 213).  Rows are
checked here one by one, with reasons, before the table's own constraints see them, so a bad unit is a
kept reject rather than a failed load.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer
from sqlalchemy import text

from etl.cases import MergeCounts
from etl.chinese_crs import transform_geometries
from etl.context import LoadContext
from etl.store import copy_frame

REQUIRED_FIELDS = ("code", "name")
PARENT_TOLERANCE_DEG = 0.00002  # about 2 m, as the table's trigger allows


def level_of(code: pd.Series, serial_width: int) -> pd.Series:
    """The admin level a code's length implies (None for a length that fits no level)."""
    lengths = code.str.len()
    return pd.Series(
        np.select(
            [lengths == 6, lengths == 9, lengths == 12, lengths == 12 + serial_width],
            ["district", "street", "community", "grid"],
            default=None,
        ),
        index=code.index,
        dtype="object",
    )


PARENT_LENGTH = {"street": 6, "community": 9, "grid": 12}
PARENT_LEVEL = {"street": "district", "community": "street", "grid": "community"}


def load_admin_units(ctx: LoadContext, frame: pd.DataFrame) -> MergeCounts:
    """Validate, reproject and merge admin units; every row ends stored or in ``ctx.rejects``."""
    assert ctx.mapping is not None
    work = ctx.mapping.apply(frame, required=REQUIRED_FIELDS)
    work["geometry"] = frame.loc[work.index, "geometry"].to_numpy()
    code = work["code"].astype("string")
    work = ctx.rejects.reject(work, code.isna() | ~code.str.fullmatch(r"[0-9]+").fillna(False),
                              "code must be digits only (GB/T 30428 / GB/T 2260)", "code")
    work["level_implied"] = level_of(work["code"].astype(str), ctx.settings.grid_serial_width)
    work = ctx.rejects.reject(
        work, work["level_implied"].isna(),
        "code length " + work["code"].astype(str).str.len().astype(str)
        + f" fits no level (6 district, 9 street, 12 community, {12 + ctx.settings.grid_serial_width} unit grid)",
        "code",
    )
    if "level" in work:
        clash = work["level"].notna() & (work["level"] != work["level_implied"])
        work = ctx.rejects.reject(
            work, clash, "level '" + work["level"].astype(str) + "' contradicts the code's length ("
            + work["level_implied"].astype(str) + ")", "level")
    work["level"] = work["level_implied"]
    first = work.groupby("code")["_row"].transform("min")
    work = ctx.rejects.reject(work, work["_row"] != first,
                              "duplicate of row " + first.astype(str) + " (same code)", "code")
    work = ctx.rejects.reject(work, work["name"].isna(), "name is empty", "name")
    work = validate_polygons(ctx, work)
    work = _check_parents(ctx, work)
    counts = _merge(ctx, work)
    if counts.new or counts.updated:
        _assign_management_grids(ctx)
    return counts


def _assign_management_grids(ctx: LoadContext) -> None:
    """Unit grids loaded or moved after the management grids get theirs too, whatever the load order."""
    if not ctx.conn.execute(text("SELECT EXISTS (SELECT 1 FROM core.management_grid)")).scalar_one():
        return
    from etl.management import assign_unit_grids  # etl.management builds on this module

    inside, changed, outside = assign_unit_grids(ctx.conn)
    if changed:
        ctx.note(f"unit grids: {changed:,} changed their management grid ({inside:,} in one, {outside:,} in none)")


def validate_polygons(ctx: LoadContext, work: pd.DataFrame) -> pd.DataFrame:
    """Reject rows whose ``geometry`` is missing, not polygonal or invalid; the rest as WGS 84 multipolygons.

    Shared with the management grids (:mod:`etl.management`), which are polygons of the same kind.
    """
    geoms = work["geometry"].to_numpy()
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    work = ctx.rejects.reject(work, pd.Series(missing, index=work.index), "geometry is missing or empty", "geometry")
    geoms = work["geometry"].to_numpy()
    polygonal = np.isin(shapely.get_type_id(geoms), [3, 6])
    work = ctx.rejects.reject(work, pd.Series(~polygonal, index=work.index),
                              "geometry must be a polygon or multipolygon", "geometry")
    geoms = work["geometry"].to_numpy()
    valid = shapely.is_valid(geoms)
    reasons = pd.Series(
        ["malformed geometry: " + str(r) for r in shapely.is_valid_reason(geoms)], index=work.index, dtype="object"
    )
    work = ctx.rejects.reject(work, pd.Series(~valid, index=work.index), reasons, "geometry")
    wgs = transform_geometries(work["geometry"].to_numpy(), ctx.crs)
    wgs = np.array([g if g.geom_type == "MultiPolygon" else shapely.MultiPolygon([g]) for g in wgs], dtype=object)
    still_valid = shapely.is_valid(wgs)
    work = work.assign(geometry=wgs)
    return ctx.rejects.reject(work, pd.Series(~still_valid, index=work.index),
                              "geometry becomes invalid after conversion to WGS 84", "geometry")


def _check_parents(ctx: LoadContext, work: pd.DataFrame) -> pd.DataFrame:
    """Each unit's parent must exist (in this file or the store) and contain it."""
    stored = pd.read_sql(text("SELECT code, ST_AsBinary(geom) AS wkb FROM core.admin_unit"), ctx.conn)
    parents = dict(zip(stored["code"], shapely.from_wkb(stored["wkb"].to_numpy()), strict=True)) if len(stored) else {}
    # Coarse to fine, so a parent rejected in this file also rejects its children.
    order = {"district": 0, "street": 1, "community": 2, "grid": 3}
    work = work.assign(_order=work["level"].map(order)).sort_values(["_order", "code"])
    buffered: dict[str, object] = {}  # each parent is widened once, not once per child
    keep = np.ones(len(work), dtype=bool)
    reasons: list[str | None] = [None] * len(work)
    for i, (code, level, geom) in enumerate(zip(work["code"], work["level"], work["geometry"], strict=True)):
        if level != "district":
            parent_code = code[: PARENT_LENGTH[level]]
            parent = parents.get(parent_code)
            if parent is None:
                keep[i], reasons[i] = False, f"parent {PARENT_LEVEL[level]} {parent_code} is not loaded (load it first or in the same file)"
                continue
            if parent_code not in buffered:
                widened = shapely.buffer(parent, PARENT_TOLERANCE_DEG)
                shapely.prepare(widened)
                buffered[parent_code] = widened
            if not shapely.covered_by(geom, buffered[parent_code]):
                keep[i], reasons[i] = False, f"lies outside its parent {PARENT_LEVEL[level]} {parent_code}"
                continue
        parents[code] = geom
    reason_series = pd.Series(reasons, index=work.index, dtype="object")
    work = ctx.rejects.reject(work, pd.Series(~keep, index=work.index), reason_series, "code")
    return work.drop(columns=["_order"])


def _merge(ctx: LoadContext, work: pd.DataFrame) -> MergeCounts:
    if work.empty:
        return MergeCounts(0, 0, 0)
    geoms = work["geometry"].to_numpy()
    to_metric = Transformer.from_crs(4326, ctx.settings.metric_crs, always_xy=True)
    metric = shapely.transform(geoms, lambda xy: np.column_stack(to_metric.transform(xy[:, 0], xy[:, 1])))
    frame = pd.DataFrame({
        "code": work["code"].to_numpy(),
        "level": work["level"].to_numpy(),
        "parent_code": [c[: PARENT_LENGTH[lv]] if lv != "district" else None for c, lv in zip(work["code"], work["level"], strict=True)],
        "parent_level": [PARENT_LEVEL.get(lv) for lv in work["level"]],
        "name": work["name"].to_numpy(),
        "geom": shapely.to_wkb(geoms, hex=True, include_srid=False),
        "label_point": shapely.to_wkb(shapely.point_on_surface(geoms), hex=True),
        "area_m2": shapely.area(metric),
        "responsible_unit": work.get("responsible_unit", pd.Series(None, index=work.index)).to_numpy(),
        "source_run_id": ctx.run_id,
    })
    ctx.conn.execute(text(
        "CREATE TEMP TABLE IF NOT EXISTS _admin_in (code text, level text, parent_code text, parent_level text,"
        " name text, geom text, label_point text, area_m2 double precision, responsible_unit text,"
        " source_run_id bigint) ON COMMIT DROP"))
    ctx.conn.execute(text("TRUNCATE _admin_in"))
    columns = list(frame.columns)
    copy_frame(ctx.conn, "_admin_in", frame, columns)
    result = ctx.conn.execute(text(
        "INSERT INTO core.admin_unit AS a (code, level, parent_code, parent_level, name, geom, label_point, area_m2,"
        " responsible_unit, source_run_id)"
        " SELECT code, level, parent_code, parent_level, name,"
        " ST_SetSRID(ST_GeomFromWKB(decode(geom, 'hex')), 4326), ST_SetSRID(ST_GeomFromWKB(decode(label_point, 'hex')), 4326),"
        " area_m2, responsible_unit, source_run_id FROM _admin_in"
        " ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, geom = EXCLUDED.geom,"
        " label_point = EXCLUDED.label_point, area_m2 = EXCLUDED.area_m2,"
        " responsible_unit = EXCLUDED.responsible_unit, source_run_id = EXCLUDED.source_run_id"
        " WHERE (a.name, ST_AsBinary(a.geom), a.responsible_unit) IS DISTINCT FROM"
        " (EXCLUDED.name, ST_AsBinary(EXCLUDED.geom), EXCLUDED.responsible_unit)"
        " RETURNING (xmax = 0) AS inserted"
    )).scalars().all()
    new = sum(1 for r in result if r)
    updated = len(result) - new
    return MergeCounts(new=new, updated=updated, unchanged=len(frame) - len(result))
