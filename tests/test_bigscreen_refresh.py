"""The big screen refreshes in place after a load, and keeps its figures when the store cannot be reached.

A small city in a database of its own (the test loads cases into it through the ETL), the app pointed at it,
a kiosk wall open in Chromium: after a second case file is loaded, the wall's headline figures change to
what ``citygrid kpi`` prints for the same day — without a page reload.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from geodata import accounts, engines
from geodata.settings import Settings, get_settings
from tests import browser, factories
from tests.conftest import SuiteStore, _sibling_store, separate_database
from tests.test_bigscreen_browser import SIZES, cli_kpi, expected_figures, page_figures
from tests.test_kpi import BOUNDARY_CASES, HEADERS, _row

DAY = date(2024, 6, 3)
ADMIN = "bigscreen.refresh"
MORE_CASES = [_row(f"BSR{i}", 处置时间="2024-06-03 10:00:00", 结案时间="2024-06-03 11:00:00", 解决层级="网格")
              for i in range(1, 5)]


def wait_for_figure(driver: Any, element_id: str, text: str, timeout: float = 60) -> None:
    """Wait until the element shows ``text`` (what a person would see), or fail saying what it shows."""
    deadline = time.monotonic() + timeout
    shown = None
    while time.monotonic() < deadline:
        shown = driver.execute_script("return document.getElementById(arguments[0]).innerText", element_id)
        if shown == text:
            return
        time.sleep(0.25)
    raise AssertionError(f"#{element_id} shows {shown!r}, not {text!r}")


_UPDATES_JS = ("return performance.getEntriesByType('resource')"
               ".filter(e => e.name.includes('/_dash-update-component')).length")


def wait_for_updates(driver: Any, count: int, timeout: float = 60) -> None:
    """Wait until the page has completed ``count`` more callback requests (its refreshes)."""
    start = driver.execute_script(_UPDATES_JS)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.execute_script(_UPDATES_JS) >= start + count:
            return
        time.sleep(0.25)
    raise AssertionError(f"the page made fewer than {count} refreshes in {timeout} s")


def _write_cases(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADERS)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def small_city(store: SuiteStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A test city with the KPI boundary cases of 2024-06-03, in a database this module may change."""
    tmp = tmp_path_factory.mktemp("bigscreen-refresh")
    settings = Settings(data_dir=tmp / "data")
    with separate_database(store, "citygrid_bigscreen") as engine:
        city = _sibling_store(store, engine.url.database or "", engine)
        try:
            factories.build_city(engine, tmp, settings)
            loaded = factories.load(engine, _write_cases(tmp / "first.csv", BOUNDARY_CASES), "case", settings,
                                    crs="EPSG:4326")
            assert loaded.rows_new == len(BOUNDARY_CASES)
            yield {"store": city, "settings": settings, "tmp": tmp}
        finally:
            city.reader.dispose()
            city.public.dispose()


@pytest.fixture(scope="module")
def app_on_small_city(small_city: dict[str, Any]) -> Iterator[dict[str, Any]]:
    from dashboard.app_factory import create_internal_app

    city: SuiteStore = small_city["store"]
    with pytest.MonkeyPatch.context() as patch:
        for key, value in city.environment().items():
            patch.setenv(key, value)
        patch.setenv("CITYGRID_DATA_DIR", str(small_city["tmp"] / "app"))
        patch.setenv("CITYGRID_BIGSCREEN_REFRESH_SECONDS", "5")
        get_settings.cache_clear()
        engines.dispose_all()
        accounts.add_user(city.writer, ADMIN, "Bigscreen-pass-2026", "administrator", "刷新测试")
        token = accounts.issue_kiosk_token(city.writer, "刷新测试大屏", ADMIN)
        app = create_internal_app(get_settings())
        try:
            yield {"app": app, "token": token, "store": city}
        finally:
            engines.dispose_all()
            get_settings.cache_clear()


@pytest.mark.browser
def test_a_load_updates_the_wall_in_place(small_city: dict[str, Any], app_on_small_city: dict[str, Any]) -> None:
    city: SuiteStore = small_city["store"]
    with browser.serve(app_on_small_city["app"].server) as url, browser.chromium(*SIZES["1080p"]) as driver:
        browser.set_viewport(driver, *SIZES["1080p"])
        driver.get(f"{url}/kiosk/{app_on_small_city['token']}")
        driver.get(f"{url}/bigscreen?kiosk=1&from={DAY}&to={DAY}")
        browser.wait_for_element(driver, "#bigscreen-kpi-reported", timeout=60)
        assert page_figures(driver) == expected_figures(cli_kpi(city, DAY, DAY))
        assert page_figures(driver)["bigscreen-kpi-reported"] == str(len(BOUNDARY_CASES))
        # Two refreshes with nothing new come and go: the figures' elements are left as they are.
        driver.execute_script("document.getElementById('bigscreen-kpi-reported').dataset.mark = 'kept'")
        wait_for_updates(driver, 2)
        assert driver.execute_script("return document.getElementById('bigscreen-kpi-reported').dataset.mark") == "kept"
        driver.execute_script("window.__notReloaded = true")

        result = factories.load(city.writer, _write_cases(small_city["tmp"] / "more.csv", MORE_CASES), "case",
                                small_city["settings"], crs="EPSG:4326")
        assert result.rows_new == len(MORE_CASES)
        total = len(BOUNDARY_CASES) + len(MORE_CASES)
        wait_for_figure(driver, "bigscreen-kpi-reported", str(total))  # the wall refreshes every 5 s
        assert page_figures(driver) == expected_figures(cli_kpi(city, DAY, DAY))
        assert driver.execute_script("return window.__notReloaded === true")  # in place, no page reload
        assert browser.severe_console_messages(driver) == []


def test_an_unreachable_store_keeps_the_figures_and_says_so(app_on_small_city: dict[str, Any]) -> None:
    from dash import no_update

    from dashboard.pages import bigscreen

    state = {"key": "earlier", "map": [None, "all"], "shown": "2024-06-03T18:00:00+08:00"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATABASE_READ_URL", "postgresql://citygrid_reader:x@127.0.0.1:9/nowhere")  # port 9: discard
        get_settings.cache_clear()
        engines.dispose_all()
        try:
            out = bigscreen.refresh(3, None, {"screen": "1080p", "lang": "zh-CN"}, state)
        finally:
            engines.dispose_all()
            get_settings.cache_clear()
    panels, (refreshed, banner, banner_class, new_state) = out[:-4], out[-4:]
    assert all(p is no_update for p in panels) and refreshed is no_update and new_state is no_update
    assert banner == "数据库暂时无法连接，显示的是 2024-06-03 18:00 的数据" and "bs-hidden" not in banner_class


def test_a_refresh_with_nothing_new_sends_nothing(app_on_small_city: dict[str, Any]) -> None:
    from dash import Patch, no_update

    from dashboard.pages import bigscreen

    params = {"screen": "4k", "lang": "en", "from": str(DAY), "to": str(DAY)}
    first = bigscreen.refresh(1, None, params, None)
    state = first[-1]
    assert state["key"] and all(p is not no_update for p in first[:len(bigscreen.PANELS)])
    second = bigscreen.refresh(2, None, params, state)
    assert all(p is no_update for p in second[:len(bigscreen.PANELS)])  # the browser redraws nothing
    stale_state = {**state, "key": "an older version"}
    third = bigscreen.refresh(3, None, params, stale_state)
    map_out = third[bigscreen.PANELS.index("map")]
    assert isinstance(map_out, Patch)  # same area and theme: only the map's traces go
