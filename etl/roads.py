"""Roads (道路): a line layer of road segments, the ground the sanitation rollups measure sweeping on.

Loaded from GeoJSON, Shapefile or GeoPackage like any vector source (preset ``roads``): an id, a name and
a class (主干路, 次干路, 支路 ...).  Each road is stored as a MultiLineString in WGS 84 with its length in the
metric CRS and the district, street and community of its representative point, merged by its id.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer

from etl.assets import _first_of_each, _geometries_to_wgs84, _locate, _upsert
from etl.cases import MergeCounts
from etl.context import LoadContext
from geodata.codes import ROAD_CLASSES


def load_roads(ctx: LoadContext, frame: pd.DataFrame) -> MergeCounts:
    """Road segments by id: lines only, inside the city, with their metric length."""
    assert ctx.mapping is not None
    work = ctx.mapping.apply(frame, required=("road_id",))
    ident = work["road_id"].astype("string")
    work = ctx.rejects.reject(work, ~ident.str.fullmatch(r"[0-9A-Za-z_.:-]{1,64}").fillna(False),
                              "road id (道路编码) must be 1-64 letters, digits or _.:-", "road_id")
    work = _first_of_each(ctx, work, "road_id", "road id")
    road_class = work.get("road_class", pd.Series(None, index=work.index, dtype="object")).fillna("other")
    work = work.assign(road_class=road_class)
    work = ctx.rejects.reject(work, ~work["road_class"].isin(list(ROAD_CLASSES)),
                              "unknown road class (道路等级) '" + work["road_class"].astype(str) + "'", "road_class")
    work, geoms = _geometries_to_wgs84(ctx, work, frame)
    lines = np.isin(shapely.get_type_id(geoms), [1, 5])  # LineString, MultiLineString
    work = ctx.rejects.reject(work, pd.Series(~lines, index=work.index), "a road must be a line", "geometry")
    geoms = geoms[lines]
    work, geoms = _locate(ctx, work, geoms, "road")
    transformer = Transformer.from_crs(4326, ctx.settings.metric_crs, always_xy=True)
    metric = shapely.transform(geoms, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))
    length = shapely.length(metric)
    short = length <= 0
    work = ctx.rejects.reject(work, pd.Series(short, index=work.index), "a road of zero length", "geometry")
    geoms, length = geoms[~short], length[~short]
    if len(geoms):  # every road a MultiLineString, the column's type
        parts, owner = shapely.get_parts(shapely.force_2d(geoms), return_index=True)
        geoms = shapely.multilinestrings(parts, indices=owner)
    out = pd.DataFrame({
        "road_id": work["road_id"], "name": work.get("name"), "road_class": work["road_class"],
        "geom": shapely.to_wkb(geoms, hex=True) if len(geoms) else [],
        "length_m": np.round(length, 2), "district_code": work["district_code"],
        "street_code": work["street_code"], "community_code": work["community_code"], "source_run_id": ctx.run_id,
    })
    return _upsert(ctx, "core.road", "road_id", out, {"geom": "geom"})
