"""Browser-test plumbing: serve a WSGI app on 127.0.0.1 in a thread and drive Debian's headless Chromium.

Chromium and ChromeDriver come from Debian (`scripts/setup --with-browser`); their absence is a failure
with the fix named, never a skip.  Flags keep Chromium off the network (the city intranet has none) and let
WebGL map traces draw with SwiftShader.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@contextmanager
def serve(wsgi_app: Any) -> Iterator[str]:
    """Serve ``wsgi_app`` on a free loopback port for the duration; yields its base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, wsgi_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


@contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A headless Chromium of the given window size that records console messages and CSP violations."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        raise AssertionError(
            "Chromium is missing: run `scripts/setup --with-browser` (apt: chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--enable-unsafe-swiftshader",
        "--use-angle=swiftshader",
        f"--window-size={width},{height}",
        "--lang=zh-CN",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {
            "source": "window.__csp = []; document.addEventListener('securitypolicyviolation',"
            " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
        },
    )
    try:
        yield driver
    finally:
        driver.quit()


def wait_for_text(driver: Any, text: str, timeout: float = 30) -> None:
    """Wait until ``text`` is visible in the page body (what a person sees), or fail showing the page."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in (driver.execute_script("return document.body ? document.body.innerText : ''") or ""):
            return
        time.sleep(0.1)
    raise AssertionError(
        f"{text!r} did not appear; page text: {driver.execute_script('return document.body.innerText')[:2000]}"
    )


def wait_for_element(driver: Any, css: str, timeout: float = 30) -> None:
    """Wait until an element matching ``css`` exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.execute_script("return document.querySelector(arguments[0]) !== null", css):
            return
        time.sleep(0.1)
    raise AssertionError(f"{css} did not appear")


def severe_console_messages(driver: Any) -> list[str]:
    """Console errors the page logged (and CSP violations it saw)."""
    errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    return errors + [f"CSP: {v}" for v in driver.execute_script("return window.__csp || []")]


def set_viewport(driver: Any, width: int, height: int) -> None:
    """Make the page's viewport exactly ``width`` x ``height`` CSS pixels at device scale 1 (a wall display).

    ``--window-size`` sizes the window, whose viewport is smaller by the browser's own frame; call this
    before loading the page.
    """
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})


def screenshot(driver: Any, clip: tuple[float, float, float, float] | None = None) -> Any:
    """The viewport (or the ``clip`` left, top, width, height in CSS pixels) as an RGB PIL image.

    Taken through the DevTools protocol, tuned for speed: a full 3840x2160 screenshot through WebDriver
    takes Chromium's software renderer longer than ChromeDriver's 10 s limit on a busy machine.
    """
    import base64
    import io

    from PIL import Image

    params: dict[str, Any] = {"format": "png", "optimizeForSpeed": True}
    if clip is not None:
        left, top, width, height = clip
        params["clip"] = {"x": left, "y": top, "width": width, "height": height, "scale": 1}
    data = driver.execute_cdp_cmd("Page.captureScreenshot", params)["data"]
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def element_pixels(driver: Any, css: str) -> Any:
    """The element's pixels as an RGB PIL image, cut from a screenshot (what a person would see)."""
    rect = driver.execute_script(
        "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
        " return [r.left, r.top, r.width, r.height];", css)
    if rect[2] < 1 or rect[3] < 1:  # not laid out yet: nothing to see (DevTools refuses an empty clip)
        from PIL import Image

        return Image.new("RGB", (0, 0))
    return screenshot(driver, tuple(rect))


def share_of_colour(image: Any, rgb: tuple[int, int, int], tolerance: int = 40) -> float:
    """Share of the image's pixels within ``tolerance`` (per channel) of ``rgb``."""
    import numpy as np

    pixels = np.asarray(image, dtype=np.int16).reshape(-1, 3)
    close = (np.abs(pixels - np.array(rgb, dtype=np.int16)) <= tolerance).all(axis=1)
    return float(close.mean()) if len(pixels) else 0.0


def wait_for_map_pixels(driver: Any, css: str, rgb: tuple[int, int, int], minimum: float = 0.002,
                        timeout: float = 30, tolerance: int = 40) -> float:
    """Wait until a WebGL map has drawn: enough of its pixels carry the layer's colour (never the DOM)."""
    deadline = time.monotonic() + timeout
    share = 0.0
    while time.monotonic() < deadline:
        share = share_of_colour(element_pixels(driver, css), rgb, tolerance)
        if share >= minimum:
            return share
        time.sleep(0.3)
    raise AssertionError(f"the map {css} never drew: only {share:.4%} of its pixels are {rgb}")
