"""The big screen in a real headless Chromium at 1920x1080 and 3840x2160, opened by a kiosk pass on the demo city.

Accounts and the kiosk pass live in the suite's own store (the app's writer URL); the pages read the session's
demo city through the read URL, so the demo city is only read.  Screenshots go to var/screenshots (or
CITYGRID_SCREENSHOT_DIR); with CITYGRID_DOCS_SCREENSHOTS=1 they are also written to docs/screenshots for the
README.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from geodata import accounts, engines, rollups
from geodata import bigscreen as screen_data
from geodata.kpi import RATES_BY_KEY, TIMEZONE, count_cases
from geodata.settings import PROJECT_ROOT, get_settings
from layers.attention_grids import ATTENTION_RGB
from layers.case_heat import HEAT_RGB
from tests import browser
from tests.conftest import DemoCity, SuiteStore

SIZES = {"1080p": (1920, 1080), "4k": (3840, 2160)}
ADMIN = "bigscreen.admin"
SCREENSHOTS = Path(os.environ.get("CITYGRID_SCREENSHOT_DIR", "var/screenshots"))
DOCS = PROJECT_ROOT / "docs" / "screenshots"
COUNTS = ("reported", "self_handled", "dispatched", "handled", "due_close", "closed_on_time")
RATES = ("handling_rate", "on_time_handling_rate", "closing_rate", "on_time_closing_rate")

#: Every box of the layout must hold its content: these may not scroll inside (text may end in an ellipsis).
_LAYOUT_JS = """
const vw = window.innerWidth, vh = window.innerHeight, s = document.scrollingElement;
const outside = [], clipped = [];
for (const el of document.querySelectorAll('#bigscreen-root *')) {
  const r = el.getBoundingClientRect();
  if (r.width === 0 && r.height === 0) continue;
  if (r.left < -1 || r.top < -1 || r.right > vw + 1 || r.bottom > vh + 1)
    outside.push((el.id || el.className || el.tagName) + ' ' + [r.left, r.top, r.right, r.bottom].map(Math.round));
}
for (const el of document.querySelectorAll('.bs-root, .bs-header, .bs-kpis, .bs-kpi, .bs-col, .bs-panel, '
                                           + '.bs-panel-body, .bs-list, .bs-cam, .bs-rank-row, .bs-tick-row, .bs-rec-row')) {
  if (el.scrollHeight > el.clientHeight + 1) clipped.push((el.id || el.className) + ' ' + el.scrollHeight + '>' + el.clientHeight);
}
return {vw, vh, sw: s.scrollWidth, sh: s.scrollHeight, cw: s.clientWidth, ch: s.clientHeight, outside, clipped};
"""


def cli_kpi(store: SuiteStore, date_from: date, date_to: date, area: str | None = None) -> dict[str, Any]:
    """What ``citygrid kpi`` prints for the period (run as a person would run it)."""
    env = {"PATH": "/usr/bin:/bin", **store.environment(), "CITYGRID_DATA_DIR": str(get_settings().data_dir)}
    command = [sys.executable, "-m", "cli", "kpi", "--from", date_from.isoformat(), "--to", date_to.isoformat()]
    if area:
        command += ["--area", area]
    out = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def page_figures(driver: Any) -> dict[str, str]:
    """The headline figures as the wall shows them."""
    ids = [f"bigscreen-kpi-{c}" for c in COUNTS] + [f"bigscreen-rate-{r}" for r in RATES]
    texts = driver.execute_script("return arguments[0].map(i => document.getElementById(i).innerText)", ids)
    return dict(zip(ids, texts, strict=True))


def expected_figures(report: dict[str, Any]) -> dict[str, str]:
    figures = {f"bigscreen-kpi-{c}": f"{report['counts'][c]:,}" for c in COUNTS}
    figures.update({f"bigscreen-rate-{r}": report["rates_percent"][RATES_BY_KEY[r].name_zh] for r in RATES})
    return figures


@pytest.fixture(scope="module")
def wall(store: SuiteStore, demo_city: DemoCity, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The internal app serving the demo city, and a kiosk pass for it."""
    from dashboard.app_factory import create_internal_app

    demo = demo_city.store
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATABASE_URL", store.writer_url)  # accounts, kiosk passes, audit
        patch.setenv("DATABASE_READ_URL", demo.reader_url or demo.writer_url)  # what the pages show
        patch.setenv("CITYGRID_DATA_DIR", str(tmp_path_factory.mktemp("wall-data")))
        get_settings.cache_clear()
        engines.dispose_all()
        if not any(u.username == ADMIN for u in accounts.list_users(store.writer)):
            accounts.add_user(store.writer, ADMIN, "Bigscreen-pass-2026", "administrator", "大屏测试")
        token = accounts.issue_kiosk_token(store.writer, "指挥大厅大屏", ADMIN)
        app = create_internal_app(get_settings())
        try:
            with browser.serve(app.server) as url:
                yield {"url": url, "token": token, "app": app}
        finally:
            engines.dispose_all()
            get_settings.cache_clear()


def open_wall(driver: Any, wall: dict[str, Any], size: str, query: str = "") -> None:
    width, height = SIZES[size]
    browser.set_viewport(driver, width, height)
    driver.get(f"{wall['url']}/kiosk/{wall['token']}")
    driver.get(f"{wall['url']}/bigscreen?kiosk=1&screen={size}{query}")
    browser.wait_for_element(driver, "#bigscreen-kpi-reported", timeout=60)


@pytest.mark.browser
@pytest.mark.parametrize("size", ["1080p", "4k"])
def test_the_wall_fills_the_screen_and_shows_the_kpi_figures(wall: dict[str, Any], demo_city: DemoCity,
                                                             size: str) -> None:
    with demo_city.store.reader.connect() as conn:
        span = rollups.data_span(conn)
    period = screen_data.choose_period(span, datetime.now(TIMEZONE).date())
    with browser.chromium(*SIZES[size]) as driver:
        open_wall(driver, wall, size)
        # The map drew: the heat's amber and the attention grids' red are in its pixels, not just in the DOM.
        browser.wait_for_map_pixels(driver, "#bigscreen-map", HEAT_RGB, minimum=0.003, timeout=120, tolerance=60)
        browser.wait_for_map_pixels(driver, "#bigscreen-map", ATTENTION_RGB, minimum=0.001, timeout=60,
                                    tolerance=30)
        layout = driver.execute_script(_LAYOUT_JS)
        assert (layout["vw"], layout["vh"]) == SIZES[size]
        assert (layout["sw"], layout["sh"]) == (layout["cw"], layout["ch"]) == SIZES[size], layout
        assert layout["outside"] == [] and layout["clipped"] == [], layout
        body = driver.execute_script("return document.body.innerText")
        assert f"{period.date_from:%Y-%m-%d} — {period.date_to:%Y-%m-%d}" in body
        if period.anchored_to_data:
            assert f"数据截至 {period.anchor:%Y-%m-%d}" in body
        assert "退出登录" not in body and "返回" not in body  # kiosk: no navigation chrome
        assert page_figures(driver) == expected_figures(cli_kpi(demo_city.store, period.date_from, period.date_to))
        assert browser.severe_console_messages(driver) == []
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot = browser.screenshot(driver)
        assert shot.size == SIZES[size]
        shot.save(SCREENSHOTS / f"bigscreen-{size}.png")
        if os.environ.get("CITYGRID_DOCS_SCREENSHOTS") == "1":
            shot.save(DOCS / f"bigscreen-{size}.png", optimize=True)


@pytest.mark.browser
def test_english_and_rotation_through_districts_run_as_a_kiosk(wall: dict[str, Any], demo_city: DemoCity) -> None:
    query = "&lang=en&from=2026-09-01&to=2026-09-30&rotate=districts&rotate_seconds=8"
    with demo_city.store.reader.connect() as conn:
        districts = screen_data.districts(conn)
    with browser.chromium(*SIZES["1080p"]) as driver:
        open_wall(driver, wall, "1080p", query)
        browser.wait_for_text(driver, "Whole city")
        assert "Reported" in driver.execute_script("return document.body.innerText")
        code, name = districts[0]
        district = count_cases(demo_city.store.reader, date(2026, 9, 1), date(2026, 9, 30), code)
        # The title and the headline change together when the wall turns to the first district.
        wanted = [f"Urban management command centre · {name}", f"{district.reported:,}"]
        seen: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and seen != wanted:
            seen = driver.execute_script("return [document.getElementById('bigscreen-area').innerText,"
                                         " document.getElementById('bigscreen-kpi-reported').innerText]")
            time.sleep(0.2)
        assert seen == wanted
        assert browser.severe_console_messages(driver) == []  # every callback ran: none refused to the kiosk


def _update_body(outputs: list[tuple[str, str]], inputs: list[tuple[str, str, Any]],
                 state: list[tuple[str, str, Any]] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    """What Dash's renderer posts to /_dash-update-component."""
    return {
        "output": ".." + "...".join(f"{i}.{p}" for i, p in outputs) + "..",
        "outputs": [{"id": i, "property": p} for i, p in outputs],
        "inputs": [{"id": i, "property": p, "value": v} for i, p, v in inputs],
        "state": [{"id": i, "property": p, "value": v} for i, p, v in state],
        "changedPropIds": [f"{i}.{p}" for i, p, _v in inputs],
    }


def test_a_kiosk_runs_the_big_screens_callbacks_and_no_shell_callback(wall: dict[str, Any]) -> None:
    from dashboard.pages.bigscreen import GRAPH_PANELS, PANELS

    client = wall["app"].server.test_client()
    assert client.get(f"/kiosk/{wall['token']}").status_code == 302
    assert client.get("/bigscreen?kiosk=1").status_code == 200
    outputs = [(f"bigscreen-{n}", "figure" if n in GRAPH_PANELS else "children") for n in PANELS] + [
        ("bigscreen-refreshed", "children"), ("bigscreen-banner", "children"), ("bigscreen-banner", "className"),
        ("bigscreen-state", "data")]
    body = _update_body(outputs, [("bigscreen-tick", "n_intervals", 1), ("bigscreen-rotate", "n_intervals", None)],
                        [("bigscreen-params", "data", {"screen": "1080p", "lang": "zh-CN"}),
                         ("bigscreen-state", "data", None)])
    refreshed = client.post("/_dash-update-component", json=body)
    assert refreshed.status_code == 200, refreshed.text[:300]
    response = refreshed.get_json()["response"]
    assert response["bigscreen-kpis"]["children"] and response["bigscreen-state"]["data"]["key"]
    shell = _update_body([("shell-title", "children"), ("shell-nav", "children")],
                         [("shell-url", "search", "?lang=en")])
    assert client.post("/_dash-update-component", json=shell).status_code == 403
    assert client.get("/").status_code == 403  # and no other page
