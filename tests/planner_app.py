"""One internal app per test process for the planner pages' browser and payload tests.

Why: ``dash.callback`` hands its callbacks to the first app that serves, so a second app built in the same
process has none of the pages' callbacks; modules that test pages share the first one.  Engines are read
from the environment at call time, so the shared app follows each module's ``app_env_demo``.
"""

from __future__ import annotations

import dash

from geodata.settings import Settings

_APP: list[dash.Dash] = []


def shared_internal_app(settings: Settings) -> dash.Dash:
    """The process's internal app (built on first use with ``settings``)."""
    if not _APP:
        from dashboard.app_factory import create_internal_app

        _APP.append(create_internal_app(settings))
    return _APP[0]
