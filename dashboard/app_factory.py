"""Builds the internal Dash app on a Flask server with the login in front of every route."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dash
import flask

from geodata.engines import writer_engine
from geodata.settings import Settings

ASSETS_DIR = Path(__file__).resolve().parent / "assets"

#: The pages' ``dash.callback`` registrations, taken from Dash's process-wide lists once (see below).
_PAGE_CALLBACKS: tuple[list[Any], dict[str, Any], list[Any]] | None = None


def _give_page_callbacks(app: dash.Dash) -> None:
    """Hand the pages' callbacks to this app, however many apps the process builds.

    Why: ``dash.callback`` keeps registrations in module globals that the first app to serve a request
    takes and empties, so a second internal app in the same process (the tests build several; a
    multi-tenant deployment could) would serve pages whose callbacks do not exist.  The pages register at
    import, once per process: take their callbacks then, and give every app its own copy.
    """
    global _PAGE_CALLBACKS
    from dash import _callback

    if _PAGE_CALLBACKS is None:
        _PAGE_CALLBACKS = (list(_callback.GLOBAL_CALLBACK_LIST), dict(_callback.GLOBAL_CALLBACK_MAP),
                           list(_callback.GLOBAL_INLINE_SCRIPTS))
        _callback.GLOBAL_CALLBACK_LIST.clear()
        _callback.GLOBAL_CALLBACK_MAP.clear()
        _callback.GLOBAL_INLINE_SCRIPTS.clear()
    callbacks, callback_map, scripts = _PAGE_CALLBACKS
    app._callback_list.extend(dict(c) for c in callbacks)
    app.callback_map.update(callback_map)
    app._inline_scripts.extend(scripts)


def create_internal_app(settings: Settings) -> dash.Dash:
    """The internal app: every page behind a login, scripts and styles served from the package (offline)."""
    from dashboard import auth, shell

    server = flask.Flask("citygrid")
    auth.install_auth(server, settings, writer_engine)
    app = dash.Dash(
        "citygrid",
        server=server,
        use_pages=True,
        pages_folder="",
        assets_folder=str(ASSETS_DIR),
        serve_locally=True,
        title="CityGrid",
        update_title=None,
        suppress_callback_exceptions=True,
    )
    # Pages register themselves on import, which Dash allows only once the app exists.
    import dashboard.pages.coverage
    import dashboard.pages.grid_stats
    import dashboard.pages.heatmap
    import dashboard.pages.patrol
    import dashboard.pages.sanitation  # noqa: F401
    from dashboard.pages import bigscreen, home  # noqa: F401

    _give_page_callbacks(app)
    app.layout = shell.layout
    shell.register_callbacks(app)
    bigscreen.register_callbacks(app)

    @server.get("/healthz")
    def _healthz() -> flask.Response:
        return flask.jsonify(status="ok")

    return app
