"""The big screen's server time per whole-screen refresh, cold after a load, and the server's memory over refreshes.

    DATABASE_URL=... [DATABASE_READ_URL=...] .venv/bin/python bench/bigscreen.py [--refreshes 100]

Runs against the store in DATABASE_URL (the 10,000,000-case city for the claim of issue #7) and calls the
page's real refresh callback (``dashboard.pages.bigscreen.refresh``) server side, as Dash would for a wall
that has nothing yet (every panel rendered and serialised to JSON, as Dash sends it):

* cold: the in-process cache cleared and ``core.data_version`` bumped as a load bumps it, then one refresh
  (the worst of several trials is reported);
* refresh: many refreshes cycling through the city and each district (rotation) on both layouts and both
  languages, as several walls would ask them; p95 of their server time;
* uncached: the same with the cache cleared before each refresh (no version bump), for reference;
* rss growth: the process's resident memory after a warm-up pass and after all the refreshes.

Writes only ``core.data_version`` (as every load does).  Last line:
``refresh_p95_ms=<x> cold_ms=<y> rss_growth_mb=<z>``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil
from sqlalchemy import text

COLD_TRIALS = 5
UNCACHED_RUNS = 20


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refreshes", type=int, default=100, help="timed warm refreshes (at least 50)")
    args = parser.parse_args()
    refreshes = max(50, args.refreshes)

    from dash._utils import to_json

    from dashboard.app_factory import create_internal_app
    from geodata import engines
    from geodata.settings import Settings, get_settings

    settings = get_settings()
    with tempfile.TemporaryDirectory() as tmp:
        create_internal_app(Settings(**{**settings.model_dump(), "data_dir": Path(tmp)}))
    from dashboard.pages import bigscreen

    reader, writer = engines.reader_engine(), engines.writer_engine()
    with reader.connect() as conn:
        cases = conn.execute(text("SELECT coalesce(sum(reported), 0) FROM rollup.case_day_unit"
                                  " WHERE level = 'district'")).scalar_one()
        districts = conn.execute(text("SELECT count(*) FROM core.admin_unit WHERE level = 'district'")).scalar_one()
        grids = conn.execute(text("SELECT count(*) FROM core.admin_unit WHERE level = 'grid'")).scalar_one()
        open_cases = conn.execute(text("SELECT count(*) FROM rollup.open_case")).scalar_one()
    print(f"store: {reader.url.database}: {cases:,} cases, {districts} districts, {grids:,} grids, "
          f"{open_cases:,} open cases")
    cache = bigscreen.screen_cache(settings)
    process = psutil.Process()

    def refresh(screen: str, lang: str, step: int) -> float:
        params = {"screen": screen, "lang": lang, "rotate": "districts", "rotate_seconds": "20"}
        started = time.perf_counter()
        out = bigscreen.refresh(1, step, params, None)
        to_json(out)  # what Dash does with it before it leaves the server
        return time.perf_counter() - started

    colds = []
    for _ in range(COLD_TRIALS):
        with writer.begin() as conn:  # as a load does (etl.store.bump_data_version)
            conn.execute(text("UPDATE core.data_version SET version = version + 1, updated_at = now()"))
        cache.clear()
        colds.append(refresh("1080p", "zh-CN", 0))
    print("cold ms (after a version bump, empty cache):", [_ms(c) for c in colds])

    combos = [(screen, lang, step) for step in range(districts + 1) for screen in ("1080p", "4k")
              for lang in ("zh-CN", "en")]
    for combo in combos:  # warm-up: one wall of each kind asks once
        refresh(*combo)
    rss_before = process.memory_info().rss
    warm = [refresh(*combos[i % len(combos)]) for i in range(refreshes)]
    rss_after = process.memory_info().rss

    uncached = []
    for i in range(UNCACHED_RUNS):
        cache.clear()
        uncached.append(refresh(*combos[i % len(combos)]))

    p95 = statistics.quantiles(warm, n=20)[18]
    uncached_p95 = statistics.quantiles(uncached, n=20)[18]
    print(f"refreshes: {refreshes} warm over {len(combos)} walls (area x layout x language); "
          f"median {_ms(statistics.median(warm))} ms, p95 {_ms(p95)} ms, max {_ms(max(warm))} ms")
    print(f"uncached (cache cleared before each, {UNCACHED_RUNS} runs): median "
          f"{_ms(statistics.median(uncached))} ms, p95 {_ms(uncached_p95)} ms")
    print(f"cache entries held: {len(cache)}; rss {rss_before / 2**20:.1f} MB -> {rss_after / 2**20:.1f} MB")
    print(f"refresh_p95_ms={_ms(p95)} cold_ms={_ms(max(colds))} "
          f"rss_growth_mb={(rss_after - rss_before) / 2**20:.1f}")


if __name__ == "__main__":
    main()
