"""Small data factories that go through the real ETL, so tests walk the same road as production."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from etl.pipeline import LoadOptions, LoadResult, load_source
from geodata.dictionaries import load_dictionaries
from geodata.settings import Settings

#: A test city: district 370303 (0.1° square near Zibo) with streets, communities and unit grids as squares.
DISTRICT = "370303"
ORIGIN = (118.00, 36.78)


def _square(x: float, y: float, size_x: float, size_y: float) -> dict[str, Any]:
    ring = [[x, y], [x + size_x, y], [x + size_x, y + size_y], [x, y + size_y], [x, y]]
    return {"type": "Polygon", "coordinates": [ring]}


def city_features() -> list[dict[str, Any]]:
    """District > 2 streets > 2 communities each > 4 grids per community (last community: no grids)."""
    x0, y0 = ORIGIN
    features = [(DISTRICT, "测试区", _square(x0, y0, 0.1, 0.1))]
    for s in range(2):  # streets split the district west/east
        street = f"{DISTRICT}{s + 1:03d}"
        sx = x0 + 0.05 * s
        features.append((street, f"测试街道{s + 1}", _square(sx, y0, 0.05, 0.1)))
        for c in range(2):  # communities split the street south/north
            community = f"{street}{c + 1:03d}"
            cy = y0 + 0.05 * c
            features.append((community, f"测试社区{s + 1}-{c + 1}", _square(sx, cy, 0.05, 0.05)))
            if (s, c) == (1, 1):
                continue  # a community without unit grids, as outside a built-up core
            for g in range(4):  # 2 x 2 grids per community
                gx, gy = sx + 0.025 * (g % 2), cy + 0.025 * (g // 2)
                features.append((f"{community}{g + 1:03d}", f"网格{g + 1}", _square(gx, gy, 0.025, 0.025)))
    return [{"type": "Feature", "properties": {"code": code, "name": name}, "geometry": geometry}
            for code, name, geometry in features]


def write_geojson(path: Path, features: Iterable[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": list(features)}, ensure_ascii=False),
                    encoding="utf-8")
    return path


def load(engine: Engine, path: Path, kind: str, settings: Settings, **options: Any) -> LoadResult:
    return load_source(engine, path, LoadOptions(kind=kind, **options), settings)


def build_city(engine: Engine, tmp: Path, settings: Settings) -> LoadResult:
    """Load the dictionaries and the test city through the ETL (idempotent)."""
    with engine.begin() as conn:
        load_dictionaries(conn, settings.category_edition)
    return load(engine, write_geojson(tmp / "city.geojson", city_features()), "admin_unit", settings,
                crs="EPSG:4326")
