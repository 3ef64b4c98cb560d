"""Builds the public app: the map page and the Open311 API on a Flask server of their own, no login.

Separate from the internal app by construction: its own Flask server, its own Dash app and callback map,
no session, no account, no route of the internal app, and the public engine (role citygrid_public, the
open_data views only) as its sole connection.  ``public_app.py`` at the top of the checkout exposes it to
gunicorn as ``public_app:server``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dash
import flask
from sqlalchemy import Engine

from geodata.engines import public_engine
from geodata.settings import Settings

ASSETS_DIR = Path(__file__).resolve().parent / "assets"


def create_public_app(settings: Settings, engine: Callable[[], Engine] = public_engine) -> dash.Dash:
    """The public Dash app on its own Flask server; ``engine`` is called per query (default: the public engine)."""
    import layers.public_cases  # noqa: F401  (registers the layer)
    from dashboard.public import map_page, open311_api, security
    from dashboard.public.cache import AnswerCache

    server = flask.Flask("citygrid_public")
    if settings.public_proxy_hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        server.wsgi_app = ProxyFix(server.wsgi_app, x_for=settings.public_proxy_hops)  # type: ignore[method-assign]
    cache = AnswerCache(engine, settings.redis_url)
    app = dash.Dash(
        "citygrid_public",
        server=server,
        assets_folder=str(ASSETS_DIR),
        serve_locally=True,
        title="CityGrid",
        update_title=None,
        compress=False,
    )
    app.layout = map_page.layout
    map_page.register_callbacks(app, settings, cache, engine)
    security.install_guard(server, settings, cache, lambda: set(app.callback_map))
    server.register_blueprint(open311_api.create_blueprint(cache, engine))

    @server.get("/healthz")
    def _healthz() -> flask.Response:
        return flask.jsonify(status="ok")

    return app
