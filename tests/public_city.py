"""A small city with cases full of personal data, loaded through the real ETL, for the public app's tests.

The test city of tests/factories.py plus cases reported over the last 60 days in three grids (two above
k = 5, one below), some in a sensitive category (0601 关爱对象求助), each with a reporter's name, phone, ID
number, exact address and exact coordinates, and descriptions that repeat the phone and ID number.  The
``Secrets`` it returns are what no response of the public app may contain.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, text

from geodata.settings import Settings
from tests import factories

TZ = ZoneInfo("Asia/Shanghai")
HEADERS = ["案件编号", "问题来源", "案件类型", "大类", "小类", "问题描述", "上报时间", "立案时间", "派遣时间", "处置时间",
           "结案时间", "经度", "纬度", "解决层级", "是否自行处置", "上报人", "联系电话", "身份证号", "地址"]
#: Grid code → (west, south) corner, 0.025° squares (see tests/factories.py), and how many cases it gets.
GRIDS = {
    "370303001001001": ((118.000, 36.780), 40),
    "370303001002003": ((118.000, 36.855), 30),
    "370303002001002": ((118.075, 36.780), 3),
}
BUSY_GRID, QUIET_GRID = "370303001001001", "370303002001002"
SENSITIVE_CASES = 10
SURNAMES = "王李张刘陈杨赵黄周吴徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超霞平刚"


@dataclass
class Secrets:
    """What the public app must never answer: people, exact places, sensitive cases, raw descriptions."""

    names: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    id_numbers: list[str] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)
    descriptions: list[str] = field(default_factory=list)
    coordinates: list[str] = field(default_factory=list)
    sensitive_numbers: list[str] = field(default_factory=list)
    public_numbers: list[str] = field(default_factory=list)

    def needles(self) -> list[str]:
        """Every string to look for."""
        return (self.names + self.phones + self.id_numbers + self.addresses + self.descriptions
                + self.coordinates + self.sensitive_numbers)


def _point(rng: random.Random, corner: tuple[float, float]) -> tuple[float, float]:
    """A point inside the grid, kept away from its centre (the label point the public view shows)."""
    while True:
        dx, dy = rng.uniform(0.001, 0.024), rng.uniform(0.001, 0.024)
        lon, lat = round(corner[0] + dx, 7), round(corner[1] + dy, 7)
        seventh_digits_set = f"{lon:.7f}"[-1] != "0" and f"{lat:.7f}"[-1] != "0"
        if (abs(dx - 0.0125) > 0.002 or abs(dy - 0.0125) > 0.002) and seventh_digits_set:
            return lon, lat


def _fmt(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


_BUILT: dict[str, Secrets] = {}


def build(engine: Engine, tmp: Path, settings: Settings, seed: int = 8) -> Secrets:
    """Load the city and its cases once per database (times are relative to now) and return the secrets."""
    key = f"{engine.url.database}:{seed}"
    if key not in _BUILT:
        _BUILT[key] = _build(engine, tmp, settings, seed)
    return _BUILT[key]


def _build(engine: Engine, tmp: Path, settings: Settings, seed: int) -> Secrets:
    factories.build_city(engine, tmp, settings)
    rng = random.Random(seed)
    now = datetime.now(TZ).replace(microsecond=0)
    secrets = Secrets()
    rows: list[list[str]] = []
    plan = [(grid, corner, False) for grid, (corner, n) in GRIDS.items() for _ in range(n)]
    plan += [(BUSY_GRID, GRIDS[BUSY_GRID][0], True)] * SENSITIVE_CASES
    for i, (_grid, corner, sensitive) in enumerate(plan):
        number = f"PUB{seed:02d}{i:05d}"
        name = "示例" + SURNAMES[i % 20] + GIVEN[(i * 7) % 20] + GIVEN[(i * 3 + 1) % 20]
        phone = f"1390000{i:04d}"
        id_number = f"9900001990023{i:04d}X"
        address = f"测试路{100 + i}号{i % 20 + 1}单元"
        description = f"{address}门口发现暴露垃圾，联系人王先生{phone}，身份证{id_number}，座机0533-{2000000 + i}"
        lon, lat = _point(rng, corner)
        reported = now - timedelta(days=rng.uniform(2, 60))
        registered, dispatched = reported + timedelta(minutes=10), reported + timedelta(minutes=20)
        solved = rng.random() < 0.8
        handled = dispatched + timedelta(hours=rng.uniform(0.5, 30)) if solved else None
        closed = handled + timedelta(minutes=30) if handled else None
        minor = ("扩展事件", "关爱对象求助") if sensitive else ("市容环境", "暴露垃圾")
        values = {
            "案件编号": number, "问题来源": "群众举报", "案件类型": "事件", "大类": minor[0], "小类": minor[1],
            "问题描述": description, "上报时间": _fmt(reported), "立案时间": _fmt(registered),
            "派遣时间": _fmt(dispatched), "处置时间": _fmt(handled), "结案时间": _fmt(closed),
            "经度": f"{lon:.7f}", "纬度": f"{lat:.7f}", "解决层级": ("网格" if i % 3 else "社区") if solved else "",
            "是否自行处置": "否", "上报人": name, "联系电话": phone, "身份证号": id_number, "地址": address,
        }
        rows.append([values[h] for h in HEADERS])
        secrets.names.append(name)
        secrets.phones.append(phone)
        secrets.id_numbers.append(id_number)
        secrets.addresses.append(address)
        secrets.descriptions.append(description)
        # Seven decimals: nothing public is written that finely (H3 and grid shapes use six), so any
        # appearance is the case's own place.
        secrets.coordinates += [f"{lon:.7f}", f"{lat:.7f}"]
        (secrets.sensitive_numbers if sensitive else secrets.public_numbers).append(number)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADERS)
    writer.writerows(rows)
    path = tmp / "public_cases.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8")
    result = factories.load(engine, path, "case", settings, crs="EPSG:4326")
    assert result.rows_rejected == 0, result
    with engine.begin() as conn:
        conn.execute(text("UPDATE core.public_policy SET delay_hours = 24, window_days = 90, min_cases = 5"))
    return secrets


_DIGIT_RUN = re.compile(r"[0-9][0-9 ()+-]{8,}[0-9Xx]")


def leaks(body: bytes, secrets: Secrets) -> list[str]:
    """The secrets found in a response body: raw, JSON-unescaped, HTML-unescaped, and digits with separators."""
    import html

    raw = body.decode("utf-8", errors="replace")
    views = [raw, html.unescape(raw)]
    with contextlib.suppress(ValueError):
        views.append(json.dumps(json.loads(raw), ensure_ascii=False))
    digits = {re.sub(r"[^0-9Xx]", "", run) for view in views for run in _DIGIT_RUN.findall(view)}
    found = []
    for needle in secrets.needles():
        escaped = json.dumps(needle)[1:-1]
        number_like = needle.isdigit() or (needle[:-1].isdigit() and len(needle) == 18)
        in_text = any(needle in view or escaped in view for view in views)
        if in_text or (number_like and any(needle in run for run in digits)):
            found.append(needle)
    return found


def scan_all(responses: list[tuple[str, Any]], secrets: Secrets) -> dict[str, list[str]]:
    """Leaks per response label, for the responses that leak."""
    out = {}
    for label, response in responses:
        found = leaks(response.get_data(), secrets)
        if found:
            out[label] = found[:5]
    return out
