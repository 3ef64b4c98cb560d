"""The big screen's data and page logic without a browser: its period, its URL, its figures on the demo city
(equal to the raw-case reference), its cache, and what a kiosk may call."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from datetime import date, datetime
from typing import Any

import pytest

from dashboard.screen_cache import ScreenCache
from geodata import bigscreen as screen_data
from geodata import rollups
from geodata.kpi import TIMEZONE, KpiError, count_cases
from geodata.settings import Settings
from tests.conftest import DemoCity

SPAN = (date(2025, 10, 1), date(2026, 9, 30))


# --- the period -------------------------------------------------------------------------------------------


def test_default_period_is_this_month_to_today_when_the_data_is_current() -> None:
    period = screen_data.choose_period(SPAN, date(2026, 5, 17))
    assert (period.date_from, period.date_to, period.anchor) == (date(2026, 5, 1), date(2026, 5, 17), date(2026, 5, 17))
    assert not period.anchored_to_data and not period.custom
    assert (period.month_from, period.year_from) == (date(2026, 5, 1), date(2026, 1, 1))


def test_data_ending_before_today_anchors_today_on_its_last_day() -> None:
    period = screen_data.choose_period(SPAN, date(2026, 11, 25))
    assert (period.date_from, period.date_to, period.anchor) == (date(2026, 9, 1), date(2026, 9, 30), date(2026, 9, 30))
    assert period.anchored_to_data


def test_an_empty_store_counts_from_today() -> None:
    period = screen_data.choose_period(None, date(2026, 11, 25))
    assert (period.date_from, period.anchor, period.anchored_to_data) == (date(2026, 11, 1), date(2026, 11, 25), False)


def test_the_url_period_is_validated() -> None:
    period = screen_data.choose_period(SPAN, date(2026, 11, 25), "2026-01-01", "2026-03-31")
    assert (period.date_from, period.date_to, period.anchor, period.custom) == (
        date(2026, 1, 1), date(2026, 3, 31), date(2026, 3, 31), True)
    only_from = screen_data.choose_period(SPAN, date(2026, 11, 25), "2026-09-10")
    assert (only_from.date_from, only_from.date_to) == (date(2026, 9, 10), date(2026, 9, 30))
    for bad in (("2026-13-01", None), ("2026-1-1", None), ("yesterday", None), ("2026-03-02", "2026-03-01"),
                ("2025-01-01", "2026-06-30"), ("2026-01-01'; DROP TABLE x;--", None)):
        with pytest.raises(KpiError):  # BigScreenError is one; a reversed period is period_bounds' own
            screen_data.choose_period(SPAN, date(2026, 11, 25), *bad)


def test_the_area_must_be_a_district_of_the_store() -> None:
    known = [("370303", "张店区"), ("370305", "临淄区")]
    assert screen_data.check_area("370305", known) == "370305"
    assert screen_data.check_area(None, known) is None
    with pytest.raises(screen_data.BigScreenError, match="370303"):
        screen_data.check_area("370399", known)


# --- the URL -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The page module (Dash lets a page register only once an app exists)."""
    from dashboard.app_factory import create_internal_app

    create_internal_app(Settings(data_dir=tmp_path_factory.mktemp("app")))
    from dashboard.pages import bigscreen

    return bigscreen


def test_url_parameters_are_checked_and_bad_ones_named(settings: Settings, page: Any) -> None:
    parse_params = page.parse_params
    good = parse_params({"screen": "4k", "lang": "en", "kiosk": "1", "from": "2026-09-01", "to": "2026-09-30",
                         "area": "370303", "rotate": "districts", "rotate_seconds": "15"}, settings)
    assert (good.screen, good.lang, good.kiosk, good.date_from, good.date_to, good.area, good.rotate,
            good.rotate_seconds, good.errors) == ("4k", "en", True, "2026-09-01", "2026-09-30", "370303",
                                                  "districts", 15, ())
    bad = parse_params({"screen": "8k", "area": "37' OR 1=1", "rotate": "spin", "rotate_seconds": "-4",
                        "from": "x" * 500}, settings)
    assert (bad.screen, bad.area, bad.rotate, bad.date_from) == ("1080p", None, "off", None)
    assert set(bad.errors) == {"screen=8k", "area", "rotate", "rotate_seconds", "from"}
    assert parse_params({}, settings).rotate == "off"  # the default setting rotates nothing
    assert parse_params({"rotate": "themes"}, settings).rotate_seconds == 20


# --- the figures on the demo city ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def september(demo_city: DemoCity) -> screen_data.ScreenData:
    period = screen_data.choose_period(SPAN, date(2026, 11, 25))
    with demo_city.store.reader.connect() as conn:
        span = rollups.data_span(conn)
        assert span == SPAN
        return screen_data.read_screen(conn, period, None, screen_data.data_version(conn), span,
                                       as_of=datetime(2026, 11, 25, 12, tzinfo=TIMEZONE))


def test_headline_counts_equal_the_raw_case_reference(demo_city: DemoCity, september: screen_data.ScreenData) -> None:
    raw = count_cases(demo_city.store.reader, date(2026, 9, 1), date(2026, 9, 30),
                      as_of=datetime(2026, 11, 25, 12, tzinfo=TIMEZONE))
    got, want = asdict(september.counts), asdict(raw)
    # A float summed in another order (rollup rows, not cases) may differ in its last bit.
    assert got.pop("handle_hours_sum") == pytest.approx(want.pop("handle_hours_sum"), rel=1e-12)
    assert got == want and raw.reported > 1000


def test_every_panel_agrees_with_the_headline(demo_city: DemoCity, september: screen_data.ScreenData) -> None:
    counts = september.counts
    assert sum(september.channels.values()) == counts.reported
    month = september.ladder["month"]
    assert (month["grid"], month["community"], month["street"]) == (
        counts.resolved_grid, counts.resolved_community, counts.resolved_street)
    assert month["district"] == counts.resolved_district + counts.resolved_city
    assert sum(september.ladder["year"].values()) >= sum(month.values()) >= sum(september.ladder["today"].values())
    assert september.trend_days[-1] == date(2026, 9, 30) and len(september.trend_days) == screen_data.TREND_DAYS
    assert sum(september.trend_this_year) == count_cases(demo_city.store.reader, date(2026, 9, 1),
                                                         date(2026, 9, 30)).reported
    assert all(v is None for v in september.trend_last_year)  # the demo's data starts 2025-10-01
    rates = [r.value for r in september.streets_on_time]
    assert rates == sorted(rates, reverse=True) and 0 < len(rates) <= screen_data.RANKED_STREETS
    assert september.cameras.cameras > 0 and september.cameras.online <= september.cameras.cameras
    assert september.recurring and september.recurring[0].cases >= september.recurring[-1].cases >= 3
    ticker = september.ticker
    assert 0 < len(ticker) <= screen_data.TICKER_ROWS
    assert [r.reported_at for r in ticker] == sorted((r.reported_at for r in ticker), reverse=True)
    assert all(r.status not in ("closed", "voided") for r in ticker)
    assert {"张店区", "临淄区"} == {name for _code, name in september.districts}


def test_a_district_is_a_part_of_the_city(demo_city: DemoCity, september: screen_data.ScreenData) -> None:
    with demo_city.store.reader.connect() as conn:
        parts = [screen_data.read_screen(conn, september.period, code, september.data_version, SPAN,
                                         as_of=datetime(2026, 11, 25, 12, tzinfo=TIMEZONE))
                 for code, _name in september.districts]
    assert sum(p.counts.reported for p in parts) == september.counts.reported
    assert all(p.area_name for p in parts)
    assert all(r.code.startswith(p.area_code or "") for p in parts for r in p.streets_in_grid)


# --- the cache ------------------------------------------------------------------------------------------------


def test_the_cache_computes_once_per_key_and_stays_bounded() -> None:
    cache = ScreenCache(entries=3)
    calls: list[int] = []

    def compute(n: int) -> Any:
        calls.append(n)
        return {"n": n}

    key = cache.key("render", ("db", 7), "2026-09-01:2026-09-30", None)
    assert cache.get_or_compute(key, lambda: compute(1)) is cache.get_or_compute(key, lambda: compute(2))
    assert calls == [1]
    assert cache.key("render", ("db", 8), "2026-09-01:2026-09-30", None) != key  # a load moves every key on
    for n in range(5):
        cache.get_or_compute(cache.key("x", n), lambda n=n: compute(n))
    assert len(cache) == 3


@pytest.fixture()
def redis_url() -> Iterator[str]:
    """A Redis server of this test's own (Debian's redis-server), on a free loopback port."""
    import shutil
    import socket
    import subprocess
    import time

    server = shutil.which("redis-server")
    if server is None:
        raise AssertionError("redis-server is missing: apt install redis-server")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


def test_walls_on_several_workers_share_one_computation_through_redis(redis_url: str) -> None:
    first, second = ScreenCache(redis_url), ScreenCache(redis_url)  # two worker processes' caches
    calls: list[str] = []
    key = first.key("render", ("db", 3), "2026-09-01:2026-09-30", "370303", "4k", "zh-CN")
    assert first.get_or_compute(key, lambda: calls.append("first") or {"kpis": [1, 2]}) == {"kpis": [1, 2]}
    assert second.get_or_compute(key, lambda: calls.append("second") or {"kpis": []}) == {"kpis": [1, 2]}
    assert calls == ["first"]
    broken = ScreenCache("redis://127.0.0.1:9/0")  # no Redis there: the wall carries on in-process
    assert broken.get_or_compute(key, lambda: "computed") == "computed"
    assert broken.get_or_compute(key, lambda: "again") == "computed"
