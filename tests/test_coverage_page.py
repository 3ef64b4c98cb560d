"""Camera coverage and blind spots (/coverage) on the demo city: callbacks against PostGIS, then Chromium."""

from __future__ import annotations

from datetime import date, datetime

import dash
import numpy as np
import pytest
from plotly.io.json import to_json_plotly
from pyproj import Geod
from sqlalchemy import text

from geodata import accounts
from geodata.kpi import TIMEZONE
from geodata.settings import Settings
from tests.conftest import DemoCity
from tests.planner_app import shared_internal_app
from tests.test_auth import login, update_body

USER, PASSWORD = "planner.coverage", "Planner-cover-2025"
FIRST, LAST = date(2026, 4, 1), date(2026, 8, 31)
START, END = datetime(2026, 4, 1, tzinfo=TIMEZONE), datetime(2026, 9, 1, tzinfo=TIMEZONE)
MAX_FIGURE_BYTES = 2_000_000


def _search(area: str | None = None, **extra: str) -> str:
    params = {"from": FIRST.isoformat(), "to": LAST.isoformat(), **extra}
    if area:
        params["area"] = area
    return "?" + "&".join(f"{k}={v}" for k, v in params.items())


@pytest.fixture(scope="module")
def units(demo_city: DemoCity, app_env_demo: Settings) -> dict[str, str]:
    """A community with both cameras and blind-spot cases in the period, and its parents."""
    with demo_city.store.reader.connect() as conn:
        community = conn.execute(text(
            "SELECT c.community_code FROM core.case_record c JOIN core.camera k ON k.community_code = c.community_code"
            " WHERE c.reported_at >= :a AND c.reported_at < :b GROUP BY 1 ORDER BY count(DISTINCT k.camera_id) DESC,"
            " 1 LIMIT 1"), {"a": START, "b": END}).scalar_one()
    return {"district": community[:6], "street": community[:9], "community": community}


def test_blind_spot_case_counts_equal_a_direct_postgis_check(demo_city: DemoCity, units: dict[str, str]) -> None:
    from dashboard.coverage_view import coverage_tables

    _units, grids = coverage_tables(_search(units["community"]), engine=demo_city.store.reader)
    assert len(grids) and grids["blind_cases"].sum() > 0
    partly = grids[(grids["blind_cases"] > 0) & (grids["blind_cases"] < grids["cases"])]
    chosen = list(dict.fromkeys([*partly["grid_code"].head(3), *grids["grid_code"].head(2),
                                 *grids["grid_code"].tail(1)]))
    with demo_city.store.reader.connect() as conn:
        reference = {r.grid_code: (r.cases, r.blind) for r in conn.execute(text(
            "SELECT c.grid_code, count(*) AS cases, count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM core.camera k"
            "  WHERE k.coverage IS NOT NULL AND ST_Intersects(k.coverage, c.geom))) AS blind"
            " FROM core.case_record c WHERE c.grid_code = ANY(:g) AND c.reported_at >= :a AND c.reported_at < :b"
            " GROUP BY 1"), {"g": chosen, "a": START, "b": END})}
    ours = {r.grid_code: (r.cases, r.blind_cases) for r in grids.itertuples() if r.grid_code in chosen}
    assert ours == reference and len(ours) == len(chosen) >= 3
    assert partly.shape[0] > 0, "the demo community should have grids with cases both seen and unseen"


def test_sectors_and_blind_spots_only_from_a_street_in(demo_city: DemoCity, units: dict[str, str]) -> None:
    from dashboard.coverage_view import map_update

    names = {}
    for level in ("city", "district", "street", "community"):
        figure, summary, unit_rows, _grid_rows = map_update(_search(units.get(level)), engine=demo_city.store.reader)
        assert len(to_json_plotly(figure).encode()) < MAX_FIGURE_BYTES, level  # what Dash sends
        names[level] = [t["name"] for t in figure["data"]]
        assert unit_rows and all(0 <= r["covered_share"] <= 1 for r in unit_rows)
    assert names["city"] == ["覆盖率"] and names["district"] == ["覆盖率"]
    assert {"监控盲区", "摄像机视域", "盲区案件"} <= set(names["community"])
    figure, *_ = map_update(_search(units["community"]), engine=demo_city.store.reader)
    sectors = next(t for t in figure["data"] if t["name"] == "摄像机视域")
    shares = next(t for t in figure["data"] if t["name"] == "覆盖率")
    with demo_city.store.reader.connect() as conn:
        cameras = conn.execute(text("SELECT count(*) FROM core.camera WHERE coverage IS NOT NULL AND grid_code LIKE :p"),
                               {"p": units["community"] + "%"}).scalar_one()
        stored = dict(conn.execute(text("SELECT grid_code, covered_share FROM core.grid_coverage"
                                        " WHERE grid_code LIKE :p"), {"p": units["community"] + "%"}).all())
    parts = sum(1 if f["geometry"]["type"] == "Polygon" else len(f["geometry"]["coordinates"])
                for f in sectors["geojson"]["features"])  # (merged into two multipolygons above 600 cameras)
    assert parts == cameras > 0
    drawn = dict(zip(shares["locations"], shares["z"], strict=True))
    assert all(abs(drawn[code] - share) < 1e-4 for code, share in stored.items())


def test_the_first_proposed_site_adds_the_most_cases(demo_city: DemoCity, units: dict[str, str]) -> None:
    from dashboard.coverage_view import sites_update
    from geodata.facts import FactQuery
    from layers.base import MapView
    from layers.blind_cases import uncovered_points
    from layers.camera_sites import SITE_RANGE_M, propose_sites

    rows, traces, note = sites_update(_search(units["community"]), engine=demo_city.store.reader)
    assert rows and traces and "80" in note
    added = [r["cases_added"] for r in rows]
    assert added == sorted(added, reverse=True) and rows[-1]["cumulative"] == sum(added)
    # Independently: every candidate's uncovered cases within range, by geodesic distance; none beats rank 1.
    query = FactQuery(FIRST, LAST, units["community"])
    lon, lat = uncovered_points(demo_city.store.reader, query)
    sites = propose_sites(demo_city.store.reader, MapView(units["community"]), query)
    geod = Geod(ellps="GRS80")
    with demo_city.store.reader.connect() as conn:
        candidates = conn.execute(text("SELECT ST_X(label_point), ST_Y(label_point) FROM core.admin_unit"
                                       " WHERE level = 'grid' AND code LIKE :p"), {"p": units["community"] + "%"}).all()
    best_grid_centre = 0
    for c_lon, c_lat in candidates:
        _az, _back, distance = geod.inv(np.full(len(lon), c_lon), np.full(len(lat), c_lat), lon, lat)
        best_grid_centre = max(best_grid_centre, int((distance <= SITE_RANGE_M - 0.05).sum()))
    first = sites.frame.iloc[0]
    _az, _back, distance = geod.inv(np.full(len(lon), first["lon"]), np.full(len(lat), first["lat"]), lon, lat)
    assert int(first["cases_added"]) >= best_grid_centre > 0
    assert abs(int((distance <= SITE_RANGE_M).sum()) - int(first["cases_added"])) <= 1  # (6-decimal rounding)
    assert sites_update(_search(units["district"]), engine=demo_city.store.reader)[0] == []


def test_invalid_values_give_a_clear_error(demo_city: DemoCity) -> None:
    from dashboard import filters
    from dashboard.coverage_view import drill_from_click, export_content, map_update, sites_update

    for search, named in (("?to=tomorrow", "to"), ("?status=lost", "status"), ("?area=12345", "area"),
                          ("?level=moon", "level")):
        for call in (map_update, sites_update):
            with pytest.raises(filters.FilterError, match=named):
                call(search, engine=demo_city.store.reader)
    with pytest.raises(filters.FilterError):
        export_content("sectors_map", "geojson", "", engine=demo_city.store.reader)  # no sectors city-wide
    with pytest.raises(filters.FilterError):
        drill_from_click({"points": [{"curveNumber": 0, "location": "370303'--"}]})
    assert drill_from_click({"points": [{"curveNumber": 2, "location": "cam-37030300001310000001"}]}) is None
    assert drill_from_click({"points": [{"curveNumber": 0, "location": "370303001"}]}) == "370303001"
    assert drill_from_click(None) is None


@pytest.fixture(scope="module")
def app(demo_city: DemoCity, app_env_demo: Settings) -> dash.Dash:
    if not any(u.username == USER for u in accounts.list_users(demo_city.store.writer)):
        accounts.add_user(demo_city.store.writer, USER, PASSWORD, "planner", "覆盖测试")
    return shared_internal_app(app_env_demo)


def test_exports_are_audited_and_a_bad_payload_answers_with_a_message(app: dash.Dash, demo_city: DemoCity,
                                                                      units: dict[str, str]) -> None:
    client = app.server.test_client()
    assert login(client, USER, PASSWORD).status_code in (302, 303)
    bad = update_body([("coverage-map", "figure"), ("coverage-summary", "children"), ("coverage-units", "data"),
                       ("coverage-grids", "data"), ("coverage-error", "children")],
                      [("filters-url", "search", "?from=2026-02-30"), ("coverage-sites-ready", "data", None)])
    response = client.post("/_dash-update-component", json=bad)
    assert response.status_code == 200 and "Traceback" not in response.text
    assert "coverage-error-message" in response.text and "2026-02-30" in response.text
    # The export's outputs as Dash registered them (a shared output carries an ``@hash`` suffix).
    key = next(k for k in app.callback_map if k.startswith("..coverage-download.data"))
    outputs = [tuple(part.rsplit(".", 1)) for part in key.strip(".").split("...")]
    export = update_body(outputs, [("coverage-export", "n_clicks", 1)])
    export["inputs"] = [[{"id": {"type": "coverage-export", "what": "sites", "fmt": "csv"}, "property": "n_clicks",
                          "value": 1}]]
    export["changedPropIds"] = ['{"fmt":"csv","type":"coverage-export","what":"sites"}.n_clicks']
    export["state"] = [{"id": "filters-url", "property": "search", "value": _search(units["community"])}]
    response = client.post("/_dash-update-component", json=export)
    assert response.status_code == 200, response.text[:500]
    download = response.get_json()["response"]["coverage-download"]["data"]
    assert download["filename"].endswith(".csv") and download["filename"].startswith("coverage_sites_")
    with demo_city.store.writer.connect() as conn:
        audited = conn.execute(text("SELECT detail FROM private.audit_log WHERE actor = :u AND action = 'export'"
                                    " ORDER BY audit_id DESC LIMIT 1"), {"u": USER}).scalar_one()
    assert audited["page"] == "coverage" and audited["table"] == "sites"


@pytest.mark.browser
def test_the_page_draws_coverage_and_a_click_drills_down(app: dash.Dash, units: dict[str, str]) -> None:
    from selenium.webdriver.common.by import By

    from tests import browser

    with browser.serve(app.server) as base, browser.chromium() as driver:
        driver.get(base + "/")
        driver.find_element(By.ID, "username").send_keys(USER)
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        browser.wait_for_text(driver, "数据总览")
        driver.get(base + "/coverage" + _search(units["street"]))
        browser.wait_for_text(driver, "发生在监控盲区")
        browser.wait_for_text(driver, "网格中心")  # the proposed sites' table
        # Blind parts (grey over the red of low coverage) and camera sectors (blue) drew: pixels, not the DOM.
        browser.wait_for_map_pixels(driver, "#coverage-map", (136, 96, 88), minimum=0.02, tolerance=24)
        pixels = np.asarray(browser.element_pixels(driver, "#coverage-map"), dtype=np.int16).reshape(-1, 3)
        assert ((pixels[:, 2] - pixels[:, 0]) > 40).mean() > 0.0005, "no camera sector drew"
        driver.execute_script(
            "const gd = document.querySelector('#coverage-map .js-plotly-plot');"
            " gd.emit('plotly_click', {points: [{curveNumber: 0, pointNumber: 0, location: arguments[0]}]});",
            units["community"] + "001")
        browser.wait_for_element(driver, "#filters-crumb-here")
        _deadline_text(driver, units["community"] + "001")
        assert browser.severe_console_messages(driver) == []


def _deadline_text(driver: object, code: str, timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f"area={code}" in driver.current_url:  # type: ignore[attr-defined]
            return
        time.sleep(0.2)
    raise AssertionError(f"the click did not drill into {code}: {driver.current_url}")  # type: ignore[attr-defined]
