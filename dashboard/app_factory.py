"""Builds the internal Dash app on a Flask server with the login in front of every route."""

from __future__ import annotations

from pathlib import Path

import dash
import flask

from geodata.engines import writer_engine
from geodata.settings import Settings

ASSETS_DIR = Path(__file__).resolve().parent / "assets"


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

    app.layout = shell.layout
    shell.register_callbacks(app)
    bigscreen.register_callbacks(app)

    @server.get("/healthz")
    def _healthz() -> flask.Response:
        return flask.jsonify(status="ok")

    return app
