"""The WSGI entry point of the public app for gunicorn (``public_app:server``): no login, public views only.

Kept apart from ``app.py`` so that a public deployment never builds the internal app: importing this module
creates only the public map page and the Open311 API.  Wiring only.
"""

from __future__ import annotations

from dashboard.public.app import create_public_app
from geodata.settings import get_settings

public_app = create_public_app(get_settings())
server = public_app.server
