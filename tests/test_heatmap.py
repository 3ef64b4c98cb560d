"""The case heatmap (/heatmap) on the demo city: its callbacks against real PostGIS, then the page in Chromium."""

from __future__ import annotations

from datetime import date, datetime

import dash
import h3
import numpy as np
import pytest
from plotly.io.json import to_json_plotly
from sqlalchemy import text

from geodata import accounts
from geodata.facts import FactQuery, facts_for
from geodata.kpi import TIMEZONE
from geodata.settings import Settings
from tests.conftest import DemoCity
from tests.planner_app import shared_internal_app
from tests.test_auth import login, update_body

USER, PASSWORD = "planner.heatmap", "Planner-heat-2025"
FIRST, LAST = date(2026, 6, 1), date(2026, 8, 31)
MAX_FIGURE_BYTES = 2_000_000


@pytest.fixture(scope="module")
def units(demo_city: DemoCity, app_env_demo: Settings) -> dict[str, str]:
    """The busiest grid of the period and its parents."""
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


def _hexagon_trace(figure: dict) -> dict:
    return next(t for t in figure["data"] if t["type"] == "choroplethmap" and t["locations"]
                and h3.is_valid_cell(t["locations"][0]))


def _relayout(lon: float, lat: float, zoom: float, half: float) -> dict:
    corners = [[lon - half, lat + half], [lon + half, lat + half], [lon + half, lat - half], [lon - half, lat - half]]
    return {"map.center": {"lon": lon, "lat": lat}, "map.zoom": zoom, "map._derived": {"coordinates": corners}}


def test_hexagon_resolution_follows_the_view(demo_city: DemoCity, units: dict[str, str]) -> None:
    from dashboard.heatmap_view import map_update

    resolutions = {}
    for level in ("city", "district", "street"):
        figure, summary = map_update(_search(units.get(level)), engine=demo_city.store.reader)
        cells = _hexagon_trace(figure)["locations"]
        assert all(h3.is_valid_cell(c) for c in cells)
        resolutions[level] = {h3.get_resolution(c) for c in cells}
        assert len(to_json_plotly(figure).encode()) < MAX_FIGURE_BYTES  # what Dash sends
    assert resolutions == {"city": {7}, "district": {8}, "street": {9}}
    # The map's own zoom decides once the planner pans or zooms: zoomed out over a street, r7 again.
    with demo_city.store.reader.connect() as conn:
        lon, lat = conn.execute(text("SELECT ST_X(label_point), ST_Y(label_point) FROM core.admin_unit"
                                     " WHERE code = :c"), {"c": units["grid"]}).one()
    figure, _ = map_update(_search(units["street"]), _relayout(lon, lat, 9.5, 0.2), engine=demo_city.store.reader)
    assert {h3.get_resolution(c) for c in _hexagon_trace(figure)["locations"]} == {7}
    assert not [t for t in figure["data"] if t.get("cluster")]  # no single cases that far out
    figure, summary = map_update(_search(units["street"]), _relayout(lon, lat, 15.5, 0.004),
                                 engine=demo_city.store.reader)
    assert {h3.get_resolution(c) for c in _hexagon_trace(figure)["locations"]} == {9}
    points = next(t for t in figure["data"] if t.get("cluster"))
    assert points["cluster"]["enabled"] and points["lon"]
    assert all(abs(x - lon) <= 0.004 and abs(y - lat) <= 0.004 for x, y in zip(points["lon"], points["lat"],
                                                                                strict=True))
    with demo_city.store.reader.connect() as conn:  # every case of the street in that square, counted by PostGIS
        in_view = conn.execute(text(
            "SELECT count(*) FROM core.case_record WHERE street_code = :s AND reported_at >= :a AND reported_at < :b"
            " AND geom && ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4326)"),
            {"s": units["street"], "a": datetime(2026, 6, 1, tzinfo=TIMEZONE),
             "b": datetime(2026, 9, 1, tzinfo=TIMEZONE), "x0": lon - 0.004, "y0": lat - 0.004, "x1": lon + 0.004,
             "y1": lat + 0.004}).scalar_one()
    assert f"{min(in_view, 5000):,}" in summary and len(points["lon"]) == min(in_view, 5000)


def test_hexagon_and_hour_counts_equal_the_facts_groupings(demo_city: DemoCity, units: dict[str, str]) -> None:
    from dashboard.heatmap_view import cases_by_hour_and_weekday
    from layers.case_hexagons import cases_per_cell

    engine = demo_city.store.reader
    query = FactQuery(FIRST, LAST, units["district"], channels=("patrol", "citizen"))
    facts = facts_for(engine)
    for resolution in (7, 8, 9):
        cells, cases = cases_per_cell(engine, query, resolution)
        reference = facts.group_counts(query, f"h3_r{resolution}")["reported"]
        assert dict(zip(cells.tolist(), cases.tolist(), strict=True)) == {int(k): int(v) for k, v in reference.items()}
    grid = cases_by_hour_and_weekday(engine, query)
    reference = facts.group_counts(query, "hour_dow")["reported"]
    expected = np.zeros((7, 24), dtype=np.int64)
    for key, value in reference.items():
        expected[int(key) % 7, int(key) // 7] = int(value)
    assert (grid == expected).all() and grid.sum() == reference.sum() > 0


def test_a_clicked_case_shows_its_stages_and_no_personal_data(demo_city: DemoCity, units: dict[str, str]) -> None:
    from dashboard.heatmap_view import detail_update, map_update

    figure, _ = map_update(_search(units["grid"], lang="en"), engine=demo_city.store.reader)
    points = next(t for t in figure["data"] if t.get("cluster"))
    number = points["customdata"][0][0]
    fields = dict(detail_update({"points": [{"customdata": points["customdata"][0]}]}, "?lang=en",
                                engine=demo_city.store.reader))
    assert fields["Case number"] == number and fields["Grid code"] == units["grid"]
    with demo_city.store.writer.connect() as conn:
        private = conn.execute(text("SELECT * FROM private.case_reporter WHERE case_number = :n"),
                               {"n": number}).mappings().all()
    secrets = {str(v) for row in private for k, v in row.items() if k != "case_number" and v not in (None, "")}
    assert not secrets & set(fields.values())
    assert detail_update({"points": [{"customdata": ["x' OR 1=1 --"]}]}, "", engine=demo_city.store.reader) is None
    assert detail_update("garbage", "", engine=demo_city.store.reader) is None


def test_recurring_places_listed_for_the_unit_and_exported(demo_city: DemoCity, units: dict[str, str]) -> None:
    from dashboard.heatmap_view import export_content, side_update

    figure, rows = side_update(_search(units["district"]), engine=demo_city.store.reader)
    with demo_city.store.reader.connect() as conn:
        expected = conn.execute(text("SELECT count(*) FROM rollup.recurring_place WHERE district_code = :d"),
                                {"d": units["district"]}).scalar_one()
    assert len(rows) == min(expected, 500) > 0
    assert all(r["grid_code"].startswith(units["district"]) and r["cases"] >= 3 for r in rows)
    assert [r["cases"] for r in rows] == sorted((r["cases"] for r in rows), reverse=True)
    assert len(figure["data"][0]["z"]) == 7
    table, stem = export_content("places", "csv", _search(units["district"]), engine=demo_city.store.reader)
    assert list(table.columns)[:2] == ["网格编码", "网格名称"] and len(table) == len(rows)
    features, _ = export_content("hexagons", "geojson", _search(units["district"]), engine=demo_city.store.reader)
    assert sum(f["properties"]["cases"] for f in features) == int(
        facts_for(demo_city.store.reader).counts(FactQuery(FIRST, LAST, units["district"])).reported)


def test_invalid_filters_give_a_clear_error(demo_city: DemoCity) -> None:
    from dashboard import filters
    from dashboard.heatmap_view import export_content, map_update, side_update, viewport_of

    for search, named in (("?from=2026-13-01", "from"), ("?channel=drone", "channel"),
                          ("?area=370303';DROP TABLE x", "area"), ("?cat=event/01x2", "categor")):
        for call in (lambda s: map_update(s, engine=demo_city.store.reader),
                     lambda s: side_update(s, engine=demo_city.store.reader)):
            with pytest.raises(filters.FilterError, match=named):
                call(search)
    with pytest.raises(filters.FilterError, match="export"):
        export_content("../../etc/passwd", "csv", "", engine=demo_city.store.reader)
    for nonsense in (None, [], {"map.zoom": "9"}, {"map.zoom": float("nan")}, {"map.zoom": 99}, {"map.zoom": True}):
        assert viewport_of(nonsense) is None
    assert viewport_of({"map.zoom": 12, "map._derived": {"coordinates": [["a", 1]]}}).bounds is None


@pytest.fixture(scope="module")
def app(demo_city: DemoCity, app_env_demo: Settings) -> dash.Dash:
    if not any(u.username == USER for u in accounts.list_users(demo_city.store.writer)):
        accounts.add_user(demo_city.store.writer, USER, PASSWORD, "planner", "热力测试")
    return shared_internal_app(app_env_demo)


def test_a_bad_filter_in_a_callback_payload_answers_with_a_message(app: dash.Dash) -> None:
    client = app.server.test_client()
    assert login(client, USER, PASSWORD).status_code in (302, 303)
    body = update_body([("heatmap-map", "figure"), ("heatmap-summary", "children"), ("heatmap-error", "children")],
                       [("filters-url", "search", "?from=2026-06-01&channel=ufo';--"),
                        ("heatmap-map", "relayoutData", None), ("heatmap-mode", "value", "hexagons")])
    body["changedPropIds"] = ["filters-url.search"]
    response = client.post("/_dash-update-component", json=body)
    assert response.status_code == 200, response.text[:500]
    assert "Traceback" not in response.text and "channels" in response.text and "ufo" in response.text
    assert "heatmap-error-message" in response.text


@pytest.mark.browser
def test_the_page_draws_hexagons_then_points_with_a_popup(app: dash.Dash, units: dict[str, str]) -> None:
    from selenium.webdriver.common.by import By

    from tests import browser

    with browser.serve(app.server) as base, browser.chromium() as driver:
        driver.get(base + "/")
        driver.find_element(By.ID, "username").send_keys(USER)
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        browser.wait_for_text(driver, "数据总览")
        driver.get(base + "/heatmap" + _search(units["district"]))
        browser.wait_for_text(driver, "H3 第 8 级六边形")
        # Warm hexagons (orange to red over the pale ground) are on screen: pixels, not the DOM.
        warm = _wait_for(lambda: _warm_share(browser.element_pixels(driver, "#heatmap-map")) > 0.03)
        assert warm, "no hexagon drew"
        resolution_js = ("const gd = document.querySelector('#heatmap-map .js-plotly-plot');"
                         " const t = gd.data.find(d => d.type === 'choroplethmap' && d.locations.length"
                         " && d.locations[0].length === 15); return t ? parseInt(t.locations[0][1], 16) : null;")
        # The summary text and the figure come in one answer, but Plotly draws the figure after React
        # has put the text on the page: poll the drawn traces rather than read them once.
        assert _wait_for(lambda: driver.execute_script(resolution_js) == 8), driver.execute_script(resolution_js)
        # Zoom in (as a planner's scroll does): the resolution follows and single cases appear, clustered.
        lon, lat = _label_point(units["grid"])
        driver.execute_script("const gd = document.querySelector('#heatmap-map .js-plotly-plot');"
                              " Plotly.relayout(gd, {'map.center': {lon: arguments[0], lat: arguments[1]},"
                              " 'map.zoom': 15.5});", lon, lat)
        browser.wait_for_text(driver, "H3 第 9 级六边形")
        browser.wait_for_text(driver, "视野内")
        assert _wait_for(lambda: driver.execute_script(resolution_js) == 9), driver.execute_script(resolution_js)
        number = driver.execute_script(
            "const gd = document.querySelector('#heatmap-map .js-plotly-plot');"
            " const t = gd.data.find(d => d.cluster); const p = {customdata: t.customdata[0], curveNumber:"
            " gd.data.indexOf(t), pointNumber: 0};"
            " gd.emit('plotly_click', {points: [p]}); return t.customdata[0][0];")
        browser.wait_for_text(driver, number)
        assert "案件详情" in driver.find_element(By.TAG_NAME, "body").text
        driver.find_element(By.CSS_SELECTOR, "input[value=density]").click()
        _wait_for(lambda: driver.execute_script(
            "return document.querySelector('#heatmap-map .js-plotly-plot').data.some(d => d.type === 'densitymap')"))
        assert browser.severe_console_messages(driver) == []


def _warm_share(image: object) -> float:
    pixels = np.asarray(image, dtype=np.int16).reshape(-1, 3)
    warm = (pixels[:, 0] > 180) & (pixels[:, 0] - pixels[:, 2] > 60)
    return float(warm.mean())


def _wait_for(condition: object, timeout: float = 30) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.3)
    return False


def _label_point(grid: str) -> tuple[float, float]:
    from geodata.engines import reader_engine

    with reader_engine().connect() as conn:
        lon, lat = conn.execute(text("SELECT ST_X(label_point), ST_Y(label_point) FROM core.admin_unit"
                                     " WHERE code = :c"), {"c": grid}).one()
    return float(lon), float(lat)
