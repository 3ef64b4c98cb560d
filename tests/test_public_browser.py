"""The public map in a real headless Chromium, on a phone-sized window: no login, drawn map, click, language.

The map is proved drawn by its pixels (the green of places mostly solved on time), not by the DOM; the
page's CSP (no 'unsafe-eval', Dash's start-up script by hash) must let it run with a clean console.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from dashboard.public.app import create_public_app
from geodata.settings import Settings
from tests import browser, public_city
from tests.conftest import SuiteStore

SCREENSHOTS = Path(os.environ.get("CITYGRID_SCREENSHOT_DIR", "var/screenshots"))


@pytest.fixture(scope="module")
def public_url(store: SuiteStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, public_city.Secrets]]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), public_rate_limit_per_minute=100000)
    secrets = public_city.build(store.writer, tmp_path_factory.mktemp("city"), settings)
    app = create_public_app(settings, engine=lambda: store.public)
    with browser.serve(app.server) as url:
        yield url, secrets


def _coloured_share(driver: Any) -> float:
    """Share of the map's pixels that are saturated colour (the rate scale), not grey ground or grey places."""
    import numpy as np

    pixels = np.asarray(browser.element_pixels(driver, "#public-map"), dtype=np.int16).reshape(-1, 3)
    return float(((pixels.max(axis=1) - pixels.min(axis=1)) > 80).mean())


@pytest.mark.browser
def test_public_map_on_a_phone(public_url: tuple[str, public_city.Secrets]) -> None:
    url, secrets = public_url
    with browser.chromium(width=390, height=844) as driver:
        driver.get(url + "/")
        browser.wait_for_text(driver, "城市问题处置公开")
        browser.wait_for_element(driver, "#public-map .maplibregl-canvas, #public-map canvas")
        # At 30 days the small hexagons each hold fewer than k cases: drawn grey (#b8c2cc at 0.6 over the ground).
        browser.wait_for_map_pixels(driver, "#public-map", (206, 213, 221), minimum=0.005, tolerance=8)
        assert _coloured_share(driver) < 0.001
        # 90 days in large hexagons: enough cases per place, coloured by the share solved on time.
        driver.find_element(By.CSS_SELECTOR, "#public-days input[value='90']").click()
        driver.find_element(By.CSS_SELECTOR, "#public-unit input[value='h3_r7']").click()
        deadline = time.monotonic() + 30
        while _coloured_share(driver) < 0.01 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert _coloured_share(driver) >= 0.01, "no place was coloured by its rates"
        scroll, inner = driver.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll <= inner, f"the page scrolls sideways on a phone ({scroll} > {inner} px)"
        driver.find_element(By.CSS_SELECTOR, "#public-unit input[value='grid']").click()
        browser.wait_for_text(driver, "请选择一个街道以显示单元网格。")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOTS / "public-phone-zh.png"))
        driver.find_element(By.ID, "public-language").click()
        browser.wait_for_text(driver, "How the city fixes reported problems")
        browser.wait_for_text(driver, "Streets")
        body = driver.find_element(By.TAG_NAME, "body").text
        assert not [n for n in secrets.names + secrets.phones if n in body]
        assert "login" not in driver.current_url
        assert browser.severe_console_messages(driver) == []
