"""The planner pages' tests read the session's demo city: point CityGrid's settings and engines at it.

Import the fixture into a test module (``from tests.planner_env import app_env_demo  # noqa: F401``); it
lasts for the module.  The demo city is read-only; the data folder (facts cache) is the module's own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from geodata import engines
from geodata.settings import Settings, get_settings
from tests.conftest import DemoCity


@pytest.fixture(scope="module")
def app_env_demo(demo_city: DemoCity, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Process-wide settings and engines on the demo city's database for one module."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in demo_city.store.environment().items():
            patch.setenv(key, value)
        patch.setenv("CITYGRID_DATA_DIR", str(tmp_path_factory.mktemp("planner-data")))
        get_settings.cache_clear()
        engines.dispose_all()
        try:
            yield get_settings()
        finally:
            engines.dispose_all()
            get_settings.cache_clear()
    engines.dispose_all()
    get_settings.cache_clear()
