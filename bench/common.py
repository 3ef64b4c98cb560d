"""What the benchmarks share: a scratch database, a synthetic city of ~20,000 unit grids, case files.

The scratch database lives on the same server CityGrid uses (the embedded cluster, or DATABASE_URL's),
is migrated like any other and is dropped at the end, so a benchmark never touches real data.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from geodata import engines, migrate
from geodata.dictionaries import load_dictionaries
from geodata.settings import Settings, get_settings

#: The synthetic district: 0.3° x 0.2° near Zibo, 4 x 4 streets, 3 x 3 communities each, 12 x 12 grids each.
DISTRICT = "370303"
WEST, SOUTH, WIDTH, HEIGHT = 118.00, 36.70, 0.30, 0.20
STREETS, COMMUNITIES, GRIDS = 4, 3, 12


def _server_urls() -> tuple[str, str]:
    """(admin URL on the ``postgres`` database, writer URL) of CityGrid's server."""
    settings = get_settings()
    if settings.embedded:
        from geodata.cluster import EmbeddedCluster

        info = EmbeddedCluster(settings).ensure_running()
        return info.url("admin", "postgres"), info.url("writer")
    assert settings.database_url is not None
    writer_url = settings.database_url
    return make_url(engines.normalise_url(writer_url)).set(database="postgres").render_as_string(
        hide_password=False), writer_url


def checkpoint() -> bool:
    """CHECKPOINT the server, so a timed step does not pay for writing out the dirty pages of the step before.

    Needs the admin role (or pg_checkpoint); returns False when the server refuses.
    """
    admin = create_engine(engines.normalise_url(_server_urls()[0]), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("CHECKPOINT"))
        return True
    except DBAPIError:
        return False
    finally:
        admin.dispose()


@contextmanager
def scratch_database(prefix: str) -> Iterator[Engine]:
    """A migrated database with the code dictionaries on CityGrid's server, dropped afterwards."""
    settings = get_settings()
    admin_url, writer_url = _server_urls()
    with migrate.temporary_database(admin_url, writer_url, prefix) as engine:
        with engine.begin() as conn:
            load_dictionaries(conn, settings.category_edition)
        yield engine


def _box(x: float, y: float, w: float, h: float) -> dict[str, object]:
    return {"type": "Polygon", "coordinates": [[[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]]}


def write_city(path: Path) -> int:
    """Write the synthetic district as GeoJSON (grids numbered W->E, N->S); return the number of grids."""
    features = [(DISTRICT, "基准区", _box(WEST, SOUTH, WIDTH, HEIGHT))]
    sw, sh = WIDTH / STREETS, HEIGHT / STREETS
    cw, ch = sw / COMMUNITIES, sh / COMMUNITIES
    gw, gh = cw / GRIDS, ch / GRIDS
    grids = 0
    for si in range(STREETS * STREETS):
        sx, sy = WEST + (si % STREETS) * sw, SOUTH + (si // STREETS) * sh
        street = f"{DISTRICT}{si + 1:03d}"
        features.append((street, f"街道{si + 1}", _box(sx, sy, sw, sh)))
        for ci in range(COMMUNITIES * COMMUNITIES):
            cx, cy = sx + (ci % COMMUNITIES) * cw, sy + (ci // COMMUNITIES) * ch
            community = f"{street}{ci + 1:03d}"
            features.append((community, f"社区{si + 1}-{ci + 1}", _box(cx, cy, cw, ch)))
            for gi in range(GRIDS * GRIDS):
                column, row_from_north = gi % GRIDS, gi // GRIDS
                gx, gy = cx + column * gw, cy + ch - (row_from_north + 1) * gh
                features.append((f"{community}{gi + 1:03d}", f"网格{gi + 1}", _box(gx, gy, gw, gh)))
                grids += 1
    collection = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"code": c, "name": n}, "geometry": g} for c, n, g in features]}
    path.write_text(json.dumps(collection, ensure_ascii=False), encoding="utf-8")
    return grids


CASE_HEADERS = ["案件编号", "问题来源", "案件类型", "大类", "小类", "上报时间", "立案时间", "派遣时间", "处置时间",
                "结案时间", "经度", "纬度", "解决层级", "是否自行处置", "满意度", "上报人", "联系电话", "地址"]


def write_cases(path: Path, rows: int, seed: int = 7) -> None:
    """Write ``rows`` closed-loop cases in the common Chinese export layout (UTF-8 CSV), vectorised."""
    rng = np.random.default_rng(seed)
    end = np.datetime64("2025-10-31T00:00:00")
    reported = end - rng.integers(0, 300 * 86400, rows).astype("timedelta64[s]")
    reported = np.sort(reported)
    steps = np.cumsum(rng.integers(60, 4 * 3600, (rows, 4)), axis=1).astype("timedelta64[s]")
    fmt = lambda a: np.datetime_as_string(a, unit="s").astype(object)  # noqa: E731
    channels = np.array(["网格员上报", "群众随手拍", "多元力量上报", "12345热线", "视频AI识别"], dtype=object)
    minors = np.array([("市容环境", "暴露垃圾"), ("市容环境", "道路不洁"), ("宣传广告", "非法小广告"),
                       ("街面秩序", "机动车乱停放"), ("街面秩序", "店外经营")], dtype=object)
    pick = rng.integers(0, len(minors), rows)
    levels = np.array(["网格", "网格", "网格", "网格", "社区", "街道", "区"], dtype=object)
    table = pa.table({
        "案件编号": [f"B{i:09d}" for i in range(rows)],
        "问题来源": channels[rng.integers(0, len(channels), rows)],
        "案件类型": np.full(rows, "事件", dtype=object),
        "大类": minors[pick, 0],
        "小类": minors[pick, 1],
        "上报时间": fmt(reported),
        "立案时间": fmt(reported + steps[:, 0]),
        "派遣时间": fmt(reported + steps[:, 1]),
        "处置时间": fmt(reported + steps[:, 2]),
        "结案时间": fmt(reported + steps[:, 3]),
        "经度": np.round(rng.uniform(WEST + 0.001, WEST + WIDTH - 0.001, rows), 6),
        "纬度": np.round(rng.uniform(SOUTH + 0.001, SOUTH + HEIGHT - 0.001, rows), 6),
        "解决层级": levels[rng.integers(0, len(levels), rows)],
        "是否自行处置": np.full(rows, "否", dtype=object),
        "满意度": rng.integers(3, 6, rows),
        "上报人": np.full(rows, "测试市民", dtype=object),
        "联系电话": [f"1990000{i % 10000:04d}" for i in range(rows)],
        "地址": np.full(rows, "测试路", dtype=object),
    })
    buffer = io.BytesIO()
    pa_csv.write_csv(table, buffer, pa_csv.WriteOptions(quoting_style="needed"))
    path.write_bytes(buffer.getvalue())


def timed(label: str, func, *args, **kwargs):  # type: ignore[no-untyped-def]
    """Run ``func`` and print how long it took; return (seconds, result)."""
    started = time.perf_counter()
    result = func(*args, **kwargs)
    seconds = time.perf_counter() - started
    print(f"{label}: {seconds:.2f} s", flush=True)
    return seconds, result


def settings_for(data_dir: Path) -> Settings:
    return get_settings().model_copy(update={"data_dir": data_dir})
