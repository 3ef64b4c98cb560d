"""The public server's guard: methods, body size, Dash request shape, rate limit, headers, and plain errors.

The public app has no login, so what protects it is narrowness: GET everywhere except Dash's one callback
endpoint (POST, a JSON body of the shape Dash sends, naming a callback this app has), bodies of a few KB,
a per-client rate limit (``CITYGRID_PUBLIC_RATE_LIMIT_PER_MINUTE``, 429 past it), and errors that say what
was wrong in one line — never a traceback, never a database message.

Headers reuse the internal app's policy (dashboard/auth.py): the same CSP built for Dash — Dash's inline
start-up script allowed by its hash, never ``'unsafe-inline'`` for scripts — minus ``'unsafe-eval'``,
which only WebGL traces need and the public page does not draw; nosniff, DENY framing, a referrer policy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

import flask
from markupsafe import escape
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from werkzeug.exceptions import HTTPException

from dashboard.auth import content_security_policy, inline_script_hashes
from dashboard.public.cache import AnswerCache
from geodata.errors import CityGridError
from geodata.settings import Settings
from layers.base import LayerError

log = logging.getLogger(__name__)

DASH_UPDATE: Final = "/_dash-update-component"
OPEN311_PREFIX: Final = "/open311/"
#: Paths that cost nothing to serve (bundles, styles; cacheable by the browser): not rate-limited.
STATIC_PREFIXES: Final = ("/_dash-component-suites/", "/assets/", "/_favicon.ico")
#: Dash's catch-all (its index on any path) and its hot-reload route: the public app has one page, no dev tools.
UNROUTED: Final = frozenset({"/<path:path>", "/_reload-hash", "/static/<path:filename>"})
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


class PublicInputError(CityGridError):
    """A parameter of a public request that is refused (the message says which and why)."""


def public_csp(settings: Settings, script_hashes: list[str] | tuple[str, ...] = ()) -> str:
    """The internal CSP (dashboard.auth) without 'unsafe-eval': the public page draws no WebGL trace."""
    return content_security_policy(settings, script_hashes).replace(" 'unsafe-eval'", "")


def wants_json() -> bool:
    """Whether this request's errors answer in JSON (Dash endpoints and the API) rather than a page."""
    path = flask.request.path
    return path.startswith("/_dash-") or path.startswith(OPEN311_PREFIX)


def error_response(status: int, message: str) -> flask.Response:
    """A short error in the request's format: Open311's error list (JSON/XML), JSON, or a tiny page."""
    path = flask.request.path
    if path.startswith(OPEN311_PREFIX):
        from dashboard.public.open311_api import open311_error  # the API's own error format

        return open311_error(status, message)
    if wants_json():
        response = flask.jsonify({"error": message, "status": status})
    else:
        body = (f'<!doctype html><html lang="zh-CN"><meta charset="utf-8"><title>{status}</title>'
                f"<p>{status}: {escape(message)}</p></html>")
        response = flask.Response(body, mimetype="text/html")
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def _dash_body_ok(body: Any, outputs: set[str]) -> bool:
    """The shape Dash's renderer sends to its callback endpoint, naming a callback of this app."""
    if not isinstance(body, dict) or body.get("output") not in outputs:
        return False
    inputs = body.get("inputs", [])
    state = body.get("state", [])
    if not isinstance(inputs, list) or not isinstance(state, list):
        return False
    for item in inputs + state:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str | dict) \
                or not isinstance(item.get("property"), str):
            return False
    changed = body.get("changedPropIds", [])
    return isinstance(changed, list) and all(isinstance(c, str) for c in changed) \
        and isinstance(body.get("outputs"), dict | list)


def client_key() -> str:
    """Who a request counts against for the rate limit: the client address (after ProxyFix, if set)."""
    return flask.request.remote_addr or "unknown"


def install_guard(server: flask.Flask, settings: Settings, cache: AnswerCache,
                  callback_outputs: Callable[[], set[str]]) -> None:
    """Install methods, size, shape and rate checks, the headers, and the error handlers on ``server``."""
    server.config.update(MAX_CONTENT_LENGTH=settings.public_max_request_bytes, PROPAGATE_EXCEPTIONS=False,
                         TRAP_HTTP_EXCEPTIONS=False, SESSION_COOKIE_NAME="citygrid_public_session")
    base_csp = public_csp(settings)
    limit = settings.public_rate_limit_per_minute

    def guard() -> flask.Response | None:
        request = flask.request
        path = request.path
        rule = request.url_rule.rule if request.url_rule is not None else None
        if rule in UNROUTED:
            return error_response(404, "not found")  # one page only: no catch-all, no dev routes
        if not path.startswith(STATIC_PREFIXES):
            count = cache.incr_window(client_key(), 60)
            if count > limit:
                response = error_response(429, "too many requests; slow down")
                response.headers["Retry-After"] = "60"
                return response
        if request.method in SAFE_METHODS:
            return None
        if request.method == "POST" and path == DASH_UPDATE:
            if request.content_length is not None and request.content_length > settings.public_max_request_bytes:
                return error_response(413, "request body too large")
            body = request.get_json(silent=True)
            if not _dash_body_ok(body, callback_outputs()):
                return error_response(400, "not a callback of this page")
            return None
        if path.startswith(OPEN311_PREFIX) and request.method == "POST":
            response = error_response(405, "service request submissions are not accepted here; "
                                      "this is a read-only Open311 GeoReport v2 endpoint")
            response.headers["Allow"] = "GET, HEAD"
            return response
        response = error_response(405, "this server is read-only")
        response.headers["Allow"] = "GET, HEAD"
        return response

    server.before_request_funcs.setdefault(None, []).insert(0, guard)

    def headers(response: flask.Response) -> flask.Response:
        h = response.headers
        h["X-Content-Type-Options"] = "nosniff"
        h["X-Frame-Options"] = "DENY"
        h["Referrer-Policy"] = "no-referrer"
        h["Cross-Origin-Opener-Policy"] = "same-origin"
        h["Permissions-Policy"] = "geolocation=(), camera=(), microphone=()"
        if "Content-Security-Policy" not in h:
            csp = base_csp
            if response.mimetype == "text/html" and not response.direct_passthrough:
                hashes = inline_script_hashes(response.get_data(as_text=True))
                if hashes:
                    csp = public_csp(settings, hashes)
            h["Content-Security-Policy"] = csp
        if flask.request.path.startswith(OPEN311_PREFIX) and response.status_code == 200:
            h.setdefault("Access-Control-Allow-Origin", "*")  # open data: any client may read it
        response.headers.pop("Set-Cookie", None)  # nothing to remember about anyone
        return response

    server.after_request(headers)

    @server.errorhandler(HTTPException)
    def _http(error: HTTPException) -> flask.Response:
        status = error.code or 500
        messages = {404: "not found", 405: "method not allowed", 413: "request body too large",
                    400: "bad request"}
        return error_response(status, messages.get(status, error.name.lower()))

    @server.errorhandler(PublicInputError)
    @server.errorhandler(LayerError)
    def _input(error: CityGridError) -> flask.Response:
        return error_response(400, str(error))

    @server.errorhandler(OperationalError)
    def _down(error: OperationalError) -> flask.Response:
        log.error("public app: database unavailable: %s", str(error.orig).splitlines()[0] if error.orig else error)
        response = error_response(503, "data temporarily unavailable")
        response.headers["Retry-After"] = "30"
        return response

    @server.errorhandler(SQLAlchemyError)
    def _db(error: SQLAlchemyError) -> flask.Response:
        log.exception("public app: database error")
        return error_response(500, "internal error")

    @server.errorhandler(Exception)
    def _any(error: Exception) -> flask.Response:
        log.exception("public app: unhandled error")
        return error_response(500, "internal error")
