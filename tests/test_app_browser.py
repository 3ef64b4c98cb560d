"""The internal app in a real headless Chromium: login, the overview with the store's counts, the language switch."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from sqlalchemy import text

from geodata import accounts
from geodata.settings import Settings
from tests import browser, factories
from tests.conftest import SuiteStore

USER, PASSWORD = "planner.browser", "Planner-pass-2025"
SCREENSHOTS = Path(os.environ.get("CITYGRID_SCREENSHOT_DIR", "var/screenshots"))


@pytest.fixture(scope="module")
def internal_url(store: SuiteStore, app_environment: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from dashboard.app_factory import create_internal_app

    factories.build_city(store.writer, tmp_path_factory.mktemp("city"), app_environment)
    if not any(u.username == USER for u in accounts.list_users(store.writer)):
        accounts.add_user(store.writer, USER, PASSWORD, "planner", "浏览器测试")
    app = create_internal_app(app_environment)
    with browser.serve(app.server) as url:
        yield url


def _login(driver: Any, base: str) -> None:
    driver.get(base + "/")
    assert "/login" in driver.current_url, "the internal app must ask for a login first"
    driver.find_element(By.ID, "username").send_keys(USER)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


@pytest.mark.browser
def test_login_then_overview_shows_the_store_in_chinese(store: SuiteStore, internal_url: str) -> None:
    with store.reader.connect() as conn:
        grids = conn.execute(text("SELECT count(*) FROM core.admin_unit WHERE level = 'grid'")).scalar_one()
    with browser.chromium() as driver:
        _login(driver, internal_url)
        browser.wait_for_text(driver, "数据总览")
        browser.wait_for_element(driver, "#home-count-grid")
        assert driver.find_element(By.ID, "home-count-grid").text == f"{grids:,}"
        assert "单元网格" in driver.find_element(By.TAG_NAME, "body").text
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        # The offline map drew the district (10 % #1f6feb over the #eef2f6 ground) and left ground around it:
        # proved by the pixels, not by the DOM.
        filled = browser.wait_for_map_pixels(driver, "#home-map", (217, 229, 245), minimum=0.05, tolerance=6)
        ground = browser.share_of_colour(browser.element_pixels(driver, "#home-map"), (238, 242, 246), tolerance=3)
        assert filled < 0.9 and ground > 0.05, (filled, ground)
        browser.element_pixels(driver, "#home-map").save(SCREENSHOTS / "overview-map.png")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOTS / "overview-zh.png"))
        driver.find_element(By.ID, "shell-language").click()
        browser.wait_for_text(driver, "Data overview")
        assert "Unit grids" in driver.find_element(By.TAG_NAME, "body").text
        assert browser.severe_console_messages(driver) == []
