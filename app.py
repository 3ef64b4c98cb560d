"""The WSGI entry point for gunicorn (``app:server``): the internal app, login required. Wiring only."""

from __future__ import annotations

from dashboard.app_factory import create_internal_app
from geodata.settings import get_settings

internal_app = create_internal_app(get_settings())
server = internal_app.server
