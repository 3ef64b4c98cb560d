"""Grid statistics (/grids) on the demo city: figures equal geodata.kpi, drill-down, paging, timelines, exports,
hostile callback payloads, and the page in a real headless Chromium (map drawn, a click drills down)."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any
from urllib.parse import parse_qs, urlparse

import dash
import openpyxl
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from sqlalchemy import text

from geodata import accounts
from geodata.kpi import RATES, TIMEZONE, CaseFilter, compute_rates, count_cases, format_percent
from geodata.settings import Settings
from tests import browser
from tests.conftest import DemoCity
from tests.test_auth import login

USER, PASSWORD = "planner.grids", "Planner-grids-2025"
FIRST, LAST = date(2026, 6, 1), date(2026, 8, 31)
AS_OF = datetime(2026, 10, 1, tzinfo=TIMEZONE)


@pytest.fixture(scope="module")
def app(demo_city: DemoCity, app_env_demo: Settings) -> dash.Dash:
    from dashboard.app_factory import create_internal_app

    if not any(u.username == USER for u in accounts.list_users(demo_city.store.writer)):
        accounts.add_user(demo_city.store.writer, USER, PASSWORD, "planner", "网格统计测试")
    return create_internal_app(app_env_demo)


@pytest.fixture(scope="module")
def units(demo_city: DemoCity) -> dict[str, str]:
    """A district, street, community and grid that hold cases in the period (the busiest grid's parents)."""
    with demo_city.store.reader.connect() as conn:
        grid = conn.execute(text(
            "SELECT grid_code FROM core.case_record WHERE reported_at >= :a AND reported_at < :b"
            " AND grid_code IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"),
            {"a": datetime(2026, 6, 1, tzinfo=TIMEZONE), "b": datetime(2026, 9, 1, tzinfo=TIMEZONE)}).scalar_one()
    return {"district": grid[:6], "street": grid[:9], "community": grid[:12], "grid": grid}


def _search(area: str | None = None, **extra: str) -> str:
    params = {"from": FIRST.isoformat(), "to": LAST.isoformat(), **extra}
    if area:
        params["area"] = area
    return "?" + "&".join(f"{k}={v}" for k, v in params.items())


@pytest.mark.parametrize("level", ["city", "district", "street", "community", "grid"])
def test_every_rate_equals_geodata_kpi_on_the_same_filters(app: dash.Dash, demo_city: DemoCity,
                                                           units: dict[str, str], level: str) -> None:
    from dashboard import filters
    from dashboard import grid_stats_view as view

    area = None if level == "city" else units[level]
    state = filters.from_search(_search(area, channel="patrol,hotline"))
    stats = view.unit_stats(state, as_of=AS_OF)
    with demo_city.store.reader.connect() as conn:
        expected = [count_cases(conn, FIRST, LAST, area, CaseFilter(source_channel=c), AS_OF)
                    for c in ("patrol", "hotline")]
    reported = sum(c.reported for c in expected)
    assert stats.counts.reported == reported > 0
    # The two channels' counts add up field by field, so the page's rates equal kpi's on their sum.
    summed = type(expected[0])(**{f: getattr(expected[0], f) + getattr(expected[1], f)
                                  for f in expected[0].__dataclass_fields__})
    rates = compute_rates(summed)
    shown = {row["key"]: row["value"] for row in view.rate_rows(stats)}
    assert shown == {rate.key: format_percent(rates[rate.key]) for rate in RATES}
    assert len(shown) == len(RATES) >= 11
    # Children add up to the parent's cases that name a child (a grid: its siblings are listed instead).
    if level != "grid":
        child = {"city": "district_code", "district": "street_code", "street": "community_code",
                 "community": "grid_code"}[level]
        with demo_city.store.reader.connect() as conn:
            named = conn.execute(text(
                f"SELECT count(*) FROM core.case_record WHERE reported_at >= :a AND reported_at < :b"  # noqa: S608
                f" AND source_channel IN ('patrol', 'hotline') AND {child} IS NOT NULL"
                + ("" if area is None else f" AND left({child}, {len(area)}) = :area")),
                {"a": datetime(2026, 6, 1, tzinfo=TIMEZONE), "b": datetime(2026, 9, 1, tzinfo=TIMEZONE),
                 "area": area}).scalar_one()
        assert stats.children["reported"].sum() == named
    else:
        assert area in set(stats.children["code"]) and len(stats.children) > 1


def test_render_draws_children_and_stays_small(app: dash.Dash, units: dict[str, str]) -> None:
    from dashboard import grid_stats_view as view

    for level, area in (("city", None), *units.items()):
        out = view.render(_search(area), "grid_resolution_share")
        size = len(json.dumps(out["map"], default=str))
        assert size < 2_000_000, (level, size)
        drawn = {code for trace in out["map"]["data"] for code in trace["locations"]}
        ranked = {row["code"] for row in out["ranking"]}
        assert drawn == ranked and drawn, level
        assert out["cases_visible"] == (level == "grid")
        if level == "grid":
            assert area in drawn and len(drawn) > 1  # the community's grids, the grid among them
        elif area:
            assert all(code.startswith(area) and len(code) > len(area) for code in drawn)


def test_a_grids_cases_page_by_page_with_a_timeline(app: dash.Dash, demo_city: DemoCity,
                                                    units: dict[str, str]) -> None:
    from dashboard import grid_stats_view as view

    grid = units["grid"]
    first, pages, total = view.case_page(_search(grid), 0, page_size=5)
    with demo_city.store.reader.connect() as conn:
        expected = conn.execute(text(
            "SELECT count(*) FROM core.case_record WHERE grid_code = :g AND reported_at >= :a AND reported_at < :b"),
            {"g": grid, "a": datetime(2026, 6, 1, tzinfo=TIMEZONE),
             "b": datetime(2026, 9, 1, tzinfo=TIMEZONE)}).scalar_one()
    assert total == expected > 5 and pages == -(-expected // 5)
    second, _, _ = view.case_page(_search(grid), 1, page_size=5)
    assert len(first) == 5 and second and not {r["id"] for r in first} & {r["id"] for r in second}
    assert [r["reported_at"] for r in first] == sorted((r["reported_at"] for r in first), reverse=True)
    steps = view.timeline(first[0]["case_number"], first[0]["reported_at"], "zh-CN")
    assert steps and steps[0]["stage"] == "信息收集/上报" and steps[0]["at"] == first[0]["reported_at"]
    assert [s["at"] for s in steps] == sorted(s["at"] for s in steps)
    assert view.case_page(_search(units["community"]), 0) == ([], 1, 0)


@pytest.fixture()
def client(app: dash.Dash) -> Iterator[Any]:
    client = app.server.test_client()
    client.environ_base["REMOTE_ADDR"] = "10.66.0.1"
    assert login(client, USER, PASSWORD).status_code in (302, 303)
    yield client


def _callback_body(app: dash.Dash, output_part: str, inputs: list[tuple[Any, str, Any]],
                   state: list[tuple[Any, str, Any]] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    """The body Dash's renderer posts for the callback whose output key contains ``output_part``."""
    key = next(k for k in app.callback_map if output_part in k)
    spec = app.callback_map[key]
    outputs = [{"id": o.component_id, "property": o.component_property} for o in spec["output"]] \
        if isinstance(spec["output"], list) else {"id": spec["output"].component_id,
                                                  "property": spec["output"].component_property}
    return {"output": key, "outputs": outputs,
            "inputs": [entry if isinstance(entry, list) else {"id": entry[0], "property": entry[1], "value": entry[2]}
                       for entry in inputs],
            "state": [{"id": i, "property": p, "value": v} for i, p, v in state],
            "changedPropIds": [f"{entry[0]}.{entry[1]}" for entry in inputs[:1] if not isinstance(entry, list)]}


HOSTILE = [
    "?from=2026-06-01&to=2026-08-31&area=370303' OR '1'='1",
    "?from=2026-06-01&to=2026-08-31&channel=patrol');DROP TABLE core.case_record;--",
    "?from=1900-01-01&to=2026-08-31",
    "?from=2026-06-01&to=2026-08-31&cat=" + "9" * 5000,
    {"from": "2026-06-01"},
    ["?area=370303"],
    12345,
]


@pytest.mark.parametrize("hostile", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_filter_values_get_a_clear_message_and_no_traceback(app: dash.Dash, client: Any,
                                                                    demo_city: DemoCity, hostile: Any) -> None:
    body = _callback_body(app, "grids-heading.children",
                          [("filters-url", "search", hostile), ("grids-measure", "value", "x' OR 1=1")])
    response = client.post("/_dash-update-component", json=body)
    assert response.status_code == 200, response.text[:500]
    text_ = response.get_data(as_text=True)
    assert "Traceback" not in text_ and "psycopg" not in text_ and "sqlalchemy" not in text_.lower()
    error = response.get_json()["response"]["grids-error"]["children"]
    assert "筛选条件无效" in json.dumps(error, ensure_ascii=False)
    with demo_city.store.reader.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM core.case_record")).scalar_one() > 0
    cases = client.post("/_dash-update-component", json=_callback_body(
        app, "grids-cases.data", [("filters-url", "search", hostile), ("grids-cases", "page_current", "1; --")]))
    assert cases.status_code == 200 and cases.get_json()["response"]["grids-cases"]["data"] == []


def test_hostile_drill_and_timeline_payloads_change_nothing(app: dash.Dash, client: Any) -> None:
    drill = client.post("/_dash-update-component", json=_callback_body(
        app, "filters-url.search", [("filters-dates", "start_date", "2026-06-01"),
                                    ("filters-dates", "end_date", "2026-08-31"),
                                    ("filters-kind", "value", []), ("filters-major", "value", []),
                                    ("filters-category", "value", []), ("filters-channel", "value", ["nope"]),
                                    ("filters-status", "value", []), ("filters-level", "value", []),
                                    [], ("filters-drill", "data", {"area": "370303; DROP", "nonce": "x"})],
        [("filters-url", "search", "?from=2026-06-01")]) | {"changedPropIds": ["filters-drill.data"]})
    assert drill.status_code in (200, 204)
    if drill.status_code == 200:
        assert "filters-url" not in drill.get_json()["response"], "a bad value never reaches the URL"
        assert "Traceback" not in drill.get_data(as_text=True)
    timeline = client.post("/_dash-update-component", json=_callback_body(
        app, "grids-timeline.children", [("grids-cases", "active_cell", {"row": 0, "column": 0})],
        [("grids-cases", "data", [{"case_number": "x' OR 1=1 --", "reported_at": "2026-06-01"}]),
         ("filters-url", "search", "?lang=en")]))
    assert timeline.status_code == 200
    assert "not a case number" in timeline.get_data(as_text=True)


@pytest.mark.parametrize(("what", "fmt"), [("ranking", "csv"), ("rates", "xlsx"), ("categories", "csv"),
                                           ("cases", "xlsx"), ("map", "geojson")])
def test_exports_carry_the_view_and_are_audited(app: dash.Dash, client: Any, demo_city: DemoCity,
                                                units: dict[str, str], what: str, fmt: str) -> None:
    import base64

    area = units["grid"] if what == "cases" else units["district"]
    body = _callback_body(app, "grids-download.data",
                          [({"type": "grids-export", "what": what, "fmt": fmt}, "n_clicks", 1)],
                          [("filters-url", "search", _search(area)), ("grids-measure", "value", "reported")])
    body["inputs"] = [{"id": {"type": "grids-export", "what": what, "fmt": fmt}, "property": "n_clicks", "value": 1}]
    body["inputs"] = [body["inputs"]]  # an ALL wildcard input arrives as a list
    body["changedPropIds"] = [json.dumps({"fmt": fmt, "type": "grids-export", "what": what},
                                         separators=(",", ":")) + ".n_clicks"]
    response = client.post("/_dash-update-component", json=body)
    assert response.status_code == 200, response.text[:500]
    download = response.get_json()["response"]["grids-download"]["data"]
    content = base64.b64decode(download["content"]) if download["base64"] else download["content"].encode()
    assert download["filename"].endswith(f".{fmt}") and area in download["filename"]
    if fmt == "csv":
        assert content.startswith(b"\xef\xbb\xbf"), "Excel needs the BOM to read UTF-8"
        rows = list(csv.reader(io.StringIO(content.decode("utf-8-sig"))))
        assert rows[0][0] in ("排名", "小类") and len(rows) > 1
    elif fmt == "xlsx":
        sheet = openpyxl.load_workbook(io.BytesIO(content)).active
        header = [c.value for c in next(sheet.iter_rows(max_row=1))]
        assert header[0] in ("指标", "案件编号") and sheet.max_row > 1
    else:
        collection = json.loads(content)
        assert collection["type"] == "FeatureCollection" and all(
            f["id"].startswith(area) for f in collection["features"])
    audit = accounts.recent_audit(demo_city.store.writer, 5, actor=USER)
    assert any(r.action == "export" and r.detail.get("table") == what and r.detail.get("format") == fmt
               and r.detail["filters"].get("area") == area for r in audit)


def _blue_share(image: Any) -> float:
    """Share of pixels in the choropleth's blues (blue well above red), which the grey ground never is."""
    import numpy as np

    pixels = np.asarray(image, dtype=np.int16).reshape(-1, 3)
    return float(((pixels[:, 2] - pixels[:, 0]) > 40).mean()) if len(pixels) else 0.0


def _wait_until(condition: Any, timeout: float = 30) -> None:
    """Poll ``condition`` until it holds (what a person sees changes), or fail."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.1)


@pytest.mark.browser
def test_the_page_draws_and_a_click_on_a_unit_drills_down(app: dash.Dash, demo_city: DemoCity,
                                                          units: dict[str, str]) -> None:
    district = units["district"]
    with demo_city.store.reader.connect() as conn:
        streets = conn.execute(text("SELECT code, name, ST_X(label_point), ST_Y(label_point) FROM core.admin_unit"
                                    " WHERE parent_code = :d ORDER BY area_m2 DESC"), {"d": district}).all()
    code, name, lon, lat = streets[0]
    with browser.serve(app.server) as base, browser.chromium() as driver:
        driver.get(base + "/login")
        driver.find_element(By.ID, "username").send_keys(USER)
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        browser.wait_for_text(driver, "退出登录")
        browser.set_viewport(driver, 1280, 1800)  # the map sits below the filters: keep it on screen
        driver.get(base + "/grids" + _search(district))
        browser.wait_for_text(driver, "标准考核指标")
        browser.wait_for_text(driver, "按期结案率")
        # The choropleth drew: blue fills cover part of the map (pixels, not the DOM).
        browser.wait_for_element(driver, "#grids-map .maplibregl-canvas")
        _wait_until(lambda: _blue_share(browser.element_pixels(driver, "#grids-map")) > 0.05)
        heading = driver.find_element(By.ID, "grids-heading").text
        x, y = driver.execute_script(
            "const gd = document.querySelector('#grids-map .js-plotly-plot');"
            " const p = gd._fullLayout.map._subplot.map.project([arguments[0], arguments[1]]);"
            " return [p.x, p.y];", lon, lat)
        graph = driver.find_element(By.CSS_SELECTOR, "#grids-map .js-plotly-plot")
        width, height = graph.size["width"], graph.size["height"]
        ActionChains(driver).move_to_element_with_offset(graph, x - width / 2, y - height / 2).click().perform()
        _wait_until(lambda: parse_qs(urlparse(driver.current_url).query).get("area") == [code])
        assert parse_qs(urlparse(driver.current_url).query).get("area") == [code], driver.current_url
        browser.wait_for_text(driver, name + " · 网格统计")
        assert driver.find_element(By.ID, "grids-heading").text != heading
        assert name in driver.find_element(By.ID, "filters-breadcrumb").text
        _wait_until(lambda: _blue_share(browser.element_pixels(driver, "#grids-map")) > 0.05)
        # The breadcrumb climbs back to the district.
        driver.find_element(By.CSS_SELECTOR, "#filters-breadcrumb button:last-of-type").click()
        browser.wait_for_text(driver, heading)
        assert parse_qs(urlparse(driver.current_url).query).get("area") == [district]
        assert browser.severe_console_messages(driver) == []
