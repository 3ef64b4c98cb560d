"""The patrol coverage and sanitation pages: their callbacks on real PostGIS, then both in headless Chromium."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from geodata import accounts
from geodata.patrol import grid_patrol_status, patrol_shares
from geodata.settings import Settings
from tests import browser, factories
from tests.conftest import SuiteStore

USER, PASSWORD = "planner.patrol", "Patrol-pass-2025"
DAY = date(2025, 7, 1)
PATROLLED, BESIDE = "370303002001001", "370303002001002"  # street 2, community 1: grid 1 (west), grid 2 (east)


def _track_file(path: Path) -> Path:
    """A patroller crossing grid 370303002001001 (118.05-118.075, 36.78-36.805) west to east; a cleaner on a road."""
    start = datetime(2025, 7, 1, 9, 0)
    rows = [["G-77", "网格员", (start + timedelta(seconds=10 * i)).strftime("%Y-%m-%d %H:%M:%S"),
             f"{118.051 + 0.00015 * i:.6f}", "36.79"] for i in range(150)]
    rows += [["C-77", "保洁员", (start + timedelta(seconds=10 * i)).strftime("%Y-%m-%d %H:%M:%S"),
              f"{118.052 + 0.0001 * i:.6f}", "36.80"] for i in range(120)]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["设备编号", "角色", "定位时间", "经度", "纬度"])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def patrol_city(store: SuiteStore, app_environment: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    folder = tmp_path_factory.mktemp("patrol-city")
    factories.build_city(store.writer, folder, app_environment)
    roads = factories.write_geojson(folder / "roads.geojson", [
        {"type": "Feature", "properties": {"road_id": "P-ROAD", "name": "巡查测试路", "road_class": "支路"},
         "geometry": {"type": "LineString", "coordinates": [[118.053, 36.80], [118.062, 36.80]]}}])
    factories.load(store.writer, roads, "road", app_environment, crs="EPSG:4326")
    result = factories.load(store.writer, _track_file(folder / "tracks.csv"), "track", app_environment,
                            crs="EPSG:4326")
    assert result.rows_rejected == 0
    return app_environment


def test_the_day_callback_marks_the_crossed_grid_patrolled_and_its_neighbour_not(
        store: SuiteStore, patrol_city: Settings) -> None:
    from dashboard.patrol_view import grid_status_update

    figure, grid_rows, share_rows, _tiles = grid_status_update(DAY.isoformat(), "370303002", "zh-CN",
                                                               engine=store.reader)
    by_code = {row["grid_code"]: row for row in grid_rows}
    assert by_code[PATROLLED]["status"] == "已巡查" and by_code[PATROLLED]["visits"] == 1
    assert by_code[BESIDE]["status"] != "已巡查" and by_code[BESIDE]["minutes"] == 0
    trace = figure["data"][0]
    z = dict(zip(trace["locations"], trace["z"], strict=True))
    assert z[PATROLLED] == 2 and z[BESIDE] in (0, 1)
    community = next(row for row in share_rows if row["unit"] == "370303002001")
    # Other modules share the suite's store and may add grids to this community: count them, do not assume.
    assert (community["grids"], community["patrolled"]) == (_grids_in(store, "370303002001"), 1)


def test_grids_unpatrolled_for_the_set_number_of_days_are_flagged(store: SuiteStore, patrol_city: Settings) -> None:
    same_day = grid_patrol_status(store.reader, DAY, "370303002001", idle_days=2)
    later = grid_patrol_status(store.reader, DAY + timedelta(days=2), "370303002001", idle_days=2)
    day_after = grid_patrol_status(store.reader, DAY + timedelta(days=1), "370303002001", idle_days=2)
    flags = {name: dict(zip(frame["grid_code"], frame["flagged"], strict=True))
             for name, frame in (("same", same_day), ("later", later), ("next", day_after))}
    assert not flags["same"][PATROLLED] and flags["same"][BESIDE]  # never patrolled: flagged
    assert not flags["next"][PATROLLED]  # 1 day since: under the threshold
    assert flags["later"][PATROLLED]  # 2 days since: flagged
    assert patrol_shares(same_day, "community_code")["share"].tolist() == [1 / _grids_in(store, "370303002001")]


def _grids_in(store: SuiteStore, community: str) -> int:
    from sqlalchemy import text

    with store.reader.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM core.admin_unit WHERE level = 'grid' AND parent_code = :c"),
                            {"c": community}).scalar_one()


def test_invalid_callback_inputs_are_refused(patrol_city: Settings) -> None:
    from dashboard.patrol_view import grid_status_update

    for day, street in (("2025-07-01; DROP TABLE x", "370303002"), (DAY.isoformat(), "3703'--"),
                        (10**9, "370303002"), (None, None)):
        with pytest.raises(ValueError):
            grid_status_update(day, street, "zh-CN")


@pytest.fixture(scope="module")
def internal_url(store: SuiteStore, patrol_city: Settings) -> Iterator[str]:
    from dashboard.app_factory import create_internal_app

    if not any(u.username == USER for u in accounts.list_users(store.writer)):
        accounts.add_user(store.writer, USER, PASSWORD, "planner", "巡查测试")
    app = create_internal_app(patrol_city)
    with browser.serve(app.server) as url:
        yield url


def _login(driver: Any, base: str, path: str) -> None:
    driver.get(base + path)
    assert "/login" in driver.current_url, "the internal app must ask for a login first"
    driver.find_element(By.ID, "username").send_keys(USER)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


@pytest.mark.browser
def test_patrol_and_sanitation_pages_render_in_chromium(internal_url: str) -> None:
    from layers.patrol_grids import PATROLLED_RGB

    # The green of a patrolled grid at 85 % over the light ground, as the browser paints it.
    painted = tuple(round(0.85 * c + 0.15 * g) for c, g in zip(PATROLLED_RGB, (238, 242, 246), strict=True))
    with browser.chromium() as driver:
        _login(driver, internal_url, f"/patrol?street=370303002&day={DAY.isoformat()}")
        browser.wait_for_text(driver, "网格巡查覆盖")
        browser.wait_for_element(driver, "#patrol-table")
        assert "已巡查" in driver.find_element(By.ID, "patrol-table").text
        assert driver.find_element(By.ID, "patrol-tile-patrolled").text == "1"
        browser.wait_for_map_pixels(driver, "#patrol-map", painted, minimum=0.01, tolerance=12)
        assert browser.severe_console_messages(driver) == []
        driver.get(internal_url + f"/sanitation?area=370303002&day={DAY.isoformat()}&lang=en")
        browser.wait_for_text(driver, "Sanitation operations")
        browser.wait_for_element(driver, "#sanitation-roads")
        assert "P-ROAD" in driver.find_element(By.ID, "sanitation-roads").text
        assert "C-77" in driver.find_element(By.ID, "sanitation-crews").text
        assert browser.severe_console_messages(driver) == []


def test_a_day_change_sends_only_the_grids_colours(store: SuiteStore, patrol_city: Settings) -> None:
    from dash import Patch

    from dashboard.patrol_view import grid_status_update

    full = grid_status_update(DAY.isoformat(), "370303002", "zh-CN", engine=store.reader)[0]
    patch, rows, _shares, _tiles = grid_status_update((DAY + timedelta(days=1)).isoformat(), "370303002", "zh-CN",
                                                      engine=store.reader, day_only=True)
    assert isinstance(patch, Patch)
    operations = patch.to_plotly_json()["operations"]
    assert sorted(tuple(o["location"]) for o in operations) == [("data", 0, "customdata"), ("data", 0, "z")]
    z = next(o["params"]["value"] for o in operations if o["location"][-1] == "z")
    assert len(z) == len(full["data"][0]["z"]) == len(rows) and 2 not in z  # nobody patrolled the next day
