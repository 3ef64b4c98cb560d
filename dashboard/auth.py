"""Login, kiosk sessions and security headers for the internal Flask/Dash server.

``install_auth`` puts one gate in front of every route of the internal server — the Dash pages, Dash's
JSON endpoints, and anything added later — so no page can forget to check.  Open without a login are
only ``/login`` (and its stylesheet), ``/logout``, ``/kiosk/<token>`` and ``/healthz``.

Sessions are Flask's signed cookies (nothing to store server-side, so several workers need no shared
state); what a cookie cannot do by itself is notice that its user was disabled or its kiosk token
revoked, so each session re-reads its account row at most once a minute.

A kiosk session (a big screen in a command hall, opened by ``/kiosk/<token>``) is read-only and narrow:
it may load ``/bigscreen`` and Dash's own resources, and run only callbacks whose outputs are all
``bigscreen-*`` components.

The login page is plain HTML served by Flask with a stylesheet of its own: no script, no CDN, no web
font, because CityGrid runs on city intranets without internet access.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlencode, urlsplit

import flask
from markupsafe import escape
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from geodata import accounts
from geodata.codes import USER_ROLES
from geodata.errors import CityGridError
from geodata.settings import Settings

log = logging.getLogger(__name__)

#: The role a kiosk session carries; not a user role (see geodata.codes.USER_ROLES).
KIOSK_ROLE: Final = "kiosk"
#: The only page a kiosk may open, and the prefix of the only component ids its callbacks may update.
BIGSCREEN_PATH: Final = "/bigscreen"
BIGSCREEN_ID_PREFIX: Final = "bigscreen-"
#: How often (seconds) a session re-reads its user or kiosk-token row.
RECHECK_SECONDS: Final = 60
SESSION_COOKIE_NAME: Final = "citygrid_session"
SECRET_KEY_FILE: Final = "secret_key"

_EXTENSION: Final = "citygrid_auth"
_EP_LOGIN: Final = "citygrid_auth_login"
_EP_LOGIN_CSS: Final = "citygrid_auth_login_css"
_EP_LOGOUT: Final = "citygrid_auth_logout"
_EP_KIOSK: Final = "citygrid_auth_kiosk"
_PUBLIC_ENDPOINTS: Final = frozenset({_EP_LOGIN, _EP_LOGIN_CSS, _EP_LOGOUT, _EP_KIOSK})
_HEALTH_PATH: Final = "/healthz"

#: Dash's JSON endpoints: an unauthenticated call gets 401 JSON, which Dash's renderer can show.
_DASH_JSON_PATHS: Final = frozenset({"/_dash-update-component", "/_dash-layout", "/_dash-dependencies"})
_DASH_UPDATE_PATH: Final = "/_dash-update-component"
#: What a kiosk may GET besides the big screen: Dash's own resources.
_KIOSK_GET_PATHS: Final = frozenset(
    {BIGSCREEN_PATH, BIGSCREEN_PATH + "/", "/_dash-layout", "/_dash-dependencies", "/_favicon.ico",
     "/_reload-hash"}
)
_KIOSK_GET_PREFIXES: Final = ("/_dash-component-suites/", "/assets/")
#: Dash pages' router callback (``use_pages``): a kiosk may run it, but only to route to the big screen.
_PAGES_ROUTER_OUTPUT: Final = ".._pages_content.children..._pages_store.data.."
_PAGES_LOCATION_ID: Final = "_pages_location"

# Session keys (short: the whole session travels in a cookie).
_K_USER, _K_ROLE, _K_NAME, _K_KIOSK = "u", "r", "n", "k"
_K_ISSUED, _K_CHECKED, _K_STAMP, _K_CSRF, _K_SID = "iat", "chk", "st", "csrf", "sid"

# --- the session user -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionUser:
    """Who the current request is for: a user with a role, or a kiosk (read-only big screen)."""

    username: str
    role: str
    is_kiosk: bool
    display_name: str = ""


def current_user() -> SessionUser | None:
    """The logged-in user or kiosk of this request (None outside a request or without a login).

    Pages and callbacks call this to decide what to show; the gate has already refused anyone without a
    session, so inside a page it is None only for open routes.
    """
    if not flask.has_request_context():
        return None
    session = flask.session
    username, role = session.get(_K_USER), session.get(_K_ROLE)
    if not isinstance(username, str) or not isinstance(role, str):
        return None
    return SessionUser(username, role, role == KIOSK_ROLE, str(session.get(_K_NAME, "")))


F = TypeVar("F", bound=Callable[..., Any])


def role_required(*roles: str) -> Callable[[F], F]:
    """Decorate a Flask view (or a Dash callback) so only these user roles reach it; others get 403.

    Kiosk sessions never pass.  The roles are checked against geodata.codes.USER_ROLES when decorating,
    so a typo fails at import rather than letting everyone (or no one) in.
    """
    unknown = [role for role in roles if role not in USER_ROLES]
    if unknown or not roles:
        raise ValueError(f"role_required needs roles from {sorted(USER_ROLES)}, got {list(roles)}")
    allowed = frozenset(roles)

    def decorate(func: F) -> F:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            user = current_user()
            if user is None:
                flask.abort(401)
            if user.is_kiosk or user.role not in allowed:
                flask.abort(403)
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def audit_export(action_detail: dict[str, Any]) -> None:
    """Record an export (a download of data) by the current user in the audit log.

    Pages call this right before handing out a file, with what was exported, e.g.
    ``{"page": "cases", "format": "xlsx", "rows": 1234, "filters": {...}}``.
    """
    user = current_user()
    state = flask.current_app.extensions[_EXTENSION]
    accounts.audit(
        state.engine(), user.username if user else "(anonymous)", "export", action_detail,
        flask.request.remote_addr,
    )


# --- texts ----------------------------------------------------------------------------------------------

_TEXTS: Final[dict[str, dict[str, str]]] = {
    "zh-CN": {
        "title": "登录 · CityGrid",
        "heading": "CityGrid 数字城管指挥中心",
        "username": "用户名",
        "password": "密码",
        "submit": "登录",
        "switch": "English",
        "bad": "用户名或密码错误。",
        "locked": "登录失败次数过多，请 {minutes} 分钟后再试，或联系管理员解锁。",
        "rate_limited": "登录尝试过于频繁，请稍后再试。",
        "csrf": "页面已过期，请重新输入并登录。",
        "unavailable": "系统暂时无法登录（数据库不可用），请稍后再试。",
        "kiosk_denied": "大屏授权无效、已过期或已被撤销，请联系管理员。",
        "kiosk_ended": "大屏授权已失效，请联系管理员。",
        "forbidden": "无权访问此页面。",
        "footer": "仅限授权人员使用，所有登录均被记录。",
    },
    "en": {
        "title": "Sign in · CityGrid",
        "heading": "CityGrid urban management command centre",
        "username": "Username",
        "password": "Password",
        "submit": "Sign in",
        "switch": "中文",
        "bad": "Wrong username or password.",
        "locked": "Too many failed attempts. Try again in {minutes} minutes or ask an administrator to unlock.",
        "rate_limited": "Too many sign-in attempts. Please try again later.",
        "csrf": "The page expired. Please enter your details and sign in again.",
        "unavailable": "Signing in is unavailable (the database cannot be reached). Please try again later.",
        "kiosk_denied": "This screen pass is invalid, expired or revoked. Please contact an administrator.",
        "kiosk_ended": "This screen pass is no longer valid. Please contact an administrator.",
        "forbidden": "You may not open this page.",
        "footer": "Authorised staff only. Every sign-in is recorded.",
    },
}

_LOGIN_CSS: Final = """\
*{box-sizing:border-box}
html,body{margin:0;height:100%}
body{display:flex;align-items:center;justify-content:center;background:#0b1a2b;color:#1d2733;
font:16px/1.5 "PingFang SC","Microsoft YaHei","Noto Sans CJK SC","Source Han Sans SC","WenQuanYi Micro Hei",
system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{width:min(24rem,calc(100% - 2rem));background:#fff;border-radius:10px;padding:2rem 2rem 1.25rem;
box-shadow:0 12px 40px rgba(0,0,0,.35)}
h1{font-size:1.25rem;margin:0 0 1.25rem;color:#0b1a2b;text-align:center}
label{display:block;font-size:.9rem;margin:.75rem 0 .25rem;color:#394656}
input[type=text],input[type=password]{width:100%;padding:.6rem .7rem;border:1px solid #b8c2cc;border-radius:6px;
font:inherit}
input:focus{outline:2px solid #1f6feb;outline-offset:1px;border-color:#1f6feb}
button{width:100%;margin-top:1.25rem;padding:.65rem;border:0;border-radius:6px;background:#1f6feb;color:#fff;
font:inherit;font-weight:600;cursor:pointer}
button:hover{background:#1858c4}
.error{margin:0 0 .5rem;padding:.6rem .75rem;border-radius:6px;background:#fdecea;color:#8a1c13;font-size:.9rem}
nav{margin-top:1rem;text-align:right;font-size:.85rem}
nav a{color:#1f6feb;text-decoration:none}
footer{margin-top:.75rem;font-size:.75rem;color:#6b7785;text-align:center}
"""

#: The login page's own policy: stricter than the app's (no script at all).
_LOGIN_CSP: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)


def _lang(settings: Settings) -> str:
    """``?lang=en`` (or the form's hidden field) switches; otherwise the deployment's language."""
    requested = flask.request.values.get("lang", "")
    if requested in _TEXTS:
        return requested
    if requested.lower().startswith("zh"):
        return "zh-CN"
    return settings.lang if settings.lang in _TEXTS else "zh-CN"


def _login_page(lang: str, next_path: str, error: str = "", username: str = "") -> str:
    t = _TEXTS[lang]
    other = "en" if lang == "zh-CN" else "zh-CN"
    query = {"lang": other}
    if next_path != _default_next():
        query["next"] = next_path
    switch_href = flask.url_for(_EP_LOGIN) + "?" + urlencode(query)
    error_html = f'<p class="error" role="alert">{escape(error)}</p>\n' if error else ""
    return f"""<!doctype html>
<html lang="{escape(lang)}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<title>{escape(t["title"])}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{escape(flask.url_for(_EP_LOGIN_CSS))}">
</head>
<body>
<main>
<h1>{escape(t["heading"])}</h1>
{error_html}<form method="post" action="{escape(flask.url_for(_EP_LOGIN))}" autocomplete="on">
<input type="hidden" name="csrf_token" value="{escape(_csrf_token())}">
<input type="hidden" name="next" value="{escape(next_path)}">
<input type="hidden" name="lang" value="{escape(lang)}">
<label for="username">{escape(t["username"])}</label>
<input type="text" id="username" name="username" value="{escape(username)}" autocomplete="username"
 autocapitalize="none" spellcheck="false" maxlength="64" required autofocus>
<label for="password">{escape(t["password"])}</label>
<input type="password" id="password" name="password" autocomplete="current-password" maxlength="1024" required>
<button type="submit">{escape(t["submit"])}</button>
</form>
<nav><a href="{escape(switch_href)}" hreflang="{escape(other)}">{escape(t["switch"])}</a></nav>
<footer>{escape(t["footer"])}</footer>
</main>
</body>
</html>
"""


def _message_page(lang: str, message: str, status: int) -> flask.Response:
    """A small page for refusals (kiosk denied, forbidden) in the login page's style."""
    t = _TEXTS[lang]
    body = f"""<!doctype html>
<html lang="{escape(lang)}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(t["heading"])}</title><link rel="icon" href="data:,">
<link rel="stylesheet" href="{escape(flask.url_for(_EP_LOGIN_CSS))}"></head>
<body><main><h1>{escape(t["heading"])}</h1><p class="error" role="alert">{escape(message)}</p></main></body></html>
"""
    response = flask.Response(body, status=status, mimetype="text/html")
    response.headers["Content-Security-Policy"] = _LOGIN_CSP
    response.headers["Cache-Control"] = "no-store"
    return response


# --- secret key, CSRF, redirects ------------------------------------------------------------------------


def load_secret_key(settings: Settings) -> str:
    """settings.secret_key, else the key in ``data_dir/secret_key``, generated (mode 0600) on first use.

    Kept in a file rather than made per process so sessions survive a restart and every worker of a
    deployment signs alike.  The file is created complete in one step (written aside, then hard-linked
    into place), so workers starting together agree on one key.
    """
    if settings.secret_key:
        return settings.secret_key
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / SECRET_KEY_FILE
    if not path.exists():
        temp = data_dir / f".{SECRET_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(secrets.token_hex(32) + "\n")
            with contextlib.suppress(FileExistsError):  # another worker won the race: use its key
                os.link(temp, path)
        finally:
            temp.unlink(missing_ok=True)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("%s was readable by others (mode %o); tightening to 0600", path, mode)
        path.chmod(0o600)
    key = path.read_text(encoding="ascii").strip()
    if len(key) < 32:
        raise CityGridError(f"{path} holds no usable secret key; delete it to have a new one made.")
    return key


def _csrf_token() -> str:
    token = flask.session.get(_K_CSRF)
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        flask.session[_K_CSRF] = token
    return token


def _default_next() -> str:
    return (flask.request.script_root or "") + "/"


_UNSAFE_NEXT: Final = re.compile(r"[\x00-\x1f\x7f\\]")


def safe_next(candidate: str | None) -> str:
    """``candidate`` if it is a path on this server, else the home page: the login never redirects away.

    Refused: absolute URLs, scheme-relative ``//host``, backslashes (browsers read ``/\\host`` as a host),
    control characters, and anything not starting with ``/``.
    """
    if not candidate or not candidate.startswith("/") or candidate.startswith("//"):
        return _default_next()
    if _UNSAFE_NEXT.search(candidate):
        return _default_next()
    parts = urlsplit(candidate)
    if parts.scheme or parts.netloc:
        return _default_next()
    return candidate


def _login_redirect() -> flask.Response:
    target = (flask.request.script_root or "") + flask.request.full_path.rstrip("?")
    query = {"next": target} if target != _default_next() else {}
    url = flask.url_for(_EP_LOGIN) + ("?" + urlencode(query) if query else "")
    return flask.redirect(url, code=302)


# --- Dash callback inspection ---------------------------------------------------------------------------


def _callback_output_ids(output: str) -> list[str | dict[str, Any]]:
    """The component ids in Dash's ``output`` string: ``"id.prop"`` or ``"..a.prop...b.prop.."``.

    Dash escapes dots inside ids as ``\\.``, appends ``@hash`` to the property of ``allow_duplicate``
    outputs, and writes pattern-matching ids as JSON objects.  A string it cannot read yields a
    placeholder id that matches no prefix, so the caller refuses it.
    """
    parts = output[2:-2].split("...") if output.startswith("..") and output.endswith("..") else [output]
    ids: list[str | dict[str, Any]] = []
    for part in parts:
        match = re.fullmatch(r"(?P<id>.*?)(?<!\\)\.(?P<prop>[A-Za-z_][\w-]*)(@[0-9a-f]+)?", part, re.DOTALL)
        if not match:
            ids.append("\x00unparsed")
            continue
        raw = match.group("id").replace("\\.", ".")
        if raw.startswith("{"):
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = "\x00unparsed"
            ids.append(parsed if isinstance(parsed, dict) else "\x00unparsed")
        else:
            ids.append(raw)
    return ids


def _is_bigscreen_id(component_id: Any) -> bool:
    """A string id starting ``bigscreen-``, or a pattern-matching id whose ``type`` does."""
    if isinstance(component_id, dict):
        component_id = component_id.get("type")
    return isinstance(component_id, str) and component_id.startswith(BIGSCREEN_ID_PREFIX)


def _flatten_outputs(outputs: Any) -> Iterable[Any]:
    if isinstance(outputs, dict):
        yield outputs.get("id")
    elif isinstance(outputs, list):
        for item in outputs:
            yield from _flatten_outputs(item)
    elif outputs is not None:
        yield outputs  # not a shape Dash sends: checked as an id, so it fails


def kiosk_may_call(body: Any) -> bool:
    """Whether a kiosk may run the callback of this ``/_dash-update-component`` body.

    Dash picks the function by ``output``, so that string decides; the ``outputs`` list (what the
    renderer will write to) must agree.  The one exception is the router of a ``use_pages`` app, allowed
    only while it routes to the big screen.
    """
    if not isinstance(body, dict) or not isinstance(body.get("output"), str):
        return False
    output: str = body["output"]
    if output == _PAGES_ROUTER_OUTPUT:
        return _routes_to_bigscreen(body.get("inputs"))
    ids = _callback_output_ids(output)
    if not ids or not all(_is_bigscreen_id(i) for i in ids):
        return False
    return all(_is_bigscreen_id(i) for i in _flatten_outputs(body.get("outputs")))


def _routes_to_bigscreen(inputs: Any) -> bool:
    if not isinstance(inputs, list):
        return False
    for item in inputs:
        if isinstance(item, dict) and item.get("id") == _PAGES_LOCATION_ID and item.get("property") == "pathname":
            path = item.get("value")
            root = flask.request.script_root or ""
            return isinstance(path, str) and path.removeprefix(root).rstrip("/") == BIGSCREEN_PATH
    return False


# --- security headers -----------------------------------------------------------------------------------

_SCRIPT_TAG: Final = re.compile(r"<script\b(?P<attrs>[^>]*)>(?P<body>.*?)</script\s*>", re.IGNORECASE | re.DOTALL)
_HTML_COMMENT: Final = re.compile(r"<!--.*?-->", re.DOTALL)
_TYPE_ATTR: Final = re.compile(r"""\btype\s*=\s*["']?([^"'\s>]+)""", re.IGNORECASE)
_JS_TYPES: Final = frozenset({"", "text/javascript", "application/javascript", "module"})


def inline_script_hashes(html: str) -> list[str]:
    """CSP source expressions (``'sha256-…'``) for the executable inline scripts of ``html``.

    Used on Dash's index page only: Dash writes its renderer start-up (``new DashRenderer(...)``) and
    any string clientside callbacks as inline scripts, generated by the server from code, never from
    request data — hashing them allows exactly those without ``'unsafe-inline'``.
    """
    hashes: list[str] = []
    for match in _SCRIPT_TAG.finditer(_HTML_COMMENT.sub("", html)):  # e.g. Dash's <!--[if IE]> warning
        attrs = match.group("attrs")
        if re.search(r"\bsrc\s*=", attrs, re.IGNORECASE):
            continue
        type_match = _TYPE_ATTR.search(attrs)
        if (type_match.group(1).lower() if type_match else "") not in _JS_TYPES:
            continue  # e.g. Dash's config, type="application/json": data, not run
        digest = base64.b64encode(hashlib.sha256(match.group("body").encode("utf-8")).digest()).decode("ascii")
        source = f"'sha256-{digest}'"
        if source not in hashes:
            hashes.append(source)
    return hashes


def _tile_source(settings: Settings) -> str | None:
    """The origin of an intranet tile service (settings.map_style), for img-src and connect-src."""
    if settings.map_style == "offline":
        return None
    parts = urlsplit(settings.map_style)
    host = re.sub(r"^\{[^}]*\}", "*", parts.netloc)  # {s}.tiles.example → *.tiles.example
    if not parts.scheme or not host or "{" in host:
        log.warning("cannot derive a CSP source from CITYGRID_MAP_STYLE=%s; tiles may be blocked", settings.map_style)
        return None
    return f"{parts.scheme}://{host}"


def content_security_policy(settings: Settings, script_hashes: Iterable[str] = ()) -> str:
    """The internal server's Content-Security-Policy.

    Settled by loading Dash 4.4 pages (dropdown, table, date picker, slider, tabs, bar chart, WebGL
    scatter, map trace, a clientside callback) in headless Chromium and removing one source at a time:

    * ``script-src 'self'`` + hashes: every bundle comes from the server itself (``serve_locally``);
      Dash's inline start-up script (``new DashRenderer()``) and string clientside callbacks are allowed
      by their hashes (see inline_script_hashes), never by ``'unsafe-inline'``.
    * ``'unsafe-eval'``: plotly.js 4's WebGL traces (scattergl and the like, through regl) compile their
      draw calls with ``Function``; without it those charts stay empty.  Core Dash does not need it.
    * ``style-src 'self' 'unsafe-inline'``: React, Dash components and plotly.js inject ``<style>``
      elements and style attributes (dozens of violations without it); styles cannot run code.
    * ``worker-src 'self' blob:``: the map traces' maplibre starts its workers from a ``blob:`` URL.
    * ``img-src``/``font-src`` ``data:`` (and ``blob:``): inline icons and image exports.
    * ``frame-ancestors 'none'`` (with X-Frame-Options DENY): nobody frames the command centre.
    * An intranet tile service in settings.map_style is added to img-src and connect-src.
    """
    tiles = _tile_source(settings)
    extra = f" {tiles}" if tiles else ""
    scripts = " ".join(["'self'", "'unsafe-eval'", *script_hashes])
    return (
        "default-src 'self'; "
        f"script-src {scripts}; "
        "style-src 'self' 'unsafe-inline'; "
        f"img-src 'self' data: blob:{extra}; "
        "font-src 'self' data:; "
        f"connect-src 'self'{extra}; "
        "worker-src 'self' blob:; "
        "object-src 'none'; "
        "base-uri 'self'; "
        "form-action 'self'; "
        "frame-ancestors 'none'"
    )


def _is_dash_index(server: flask.Flask) -> bool:
    """Whether this request was answered by a Dash index view (its HTML carries Dash's inline scripts)."""
    view = server.view_functions.get(flask.request.endpoint or "")
    return bool(view is not None and getattr(view, "__module__", "").startswith("dash."))


# --- install ------------------------------------------------------------------------------------------


@dataclass
class _AuthState:
    settings: Settings
    engine: Callable[[], Engine]
    base_csp: str


def install_auth(server: flask.Flask, settings: Settings, engine_provider: Callable[[], Engine]) -> None:
    """Require a login for every route of ``server`` and add the login, logout and kiosk routes.

    Call once on the internal server, before or after the Dash app is made on it: the gate is put first
    among the server's before-request functions, so it runs before Dash's.  ``engine_provider`` is
    called per request that needs the database (a writer engine: logins write counters and the audit
    log), so the server can start before the database does.
    """
    if _EXTENSION in server.extensions:
        raise RuntimeError("install_auth was already called on this server")
    server.secret_key = load_secret_key(settings)
    server.config.update(
        SESSION_COOKIE_NAME=SESSION_COOKIE_NAME,  # distinct from the public app's, which may share the host
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.cookie_secure,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.session_hours),
        SESSION_REFRESH_EACH_REQUEST=True,
    )
    state = _AuthState(settings, engine_provider, content_security_policy(settings))
    server.extensions[_EXTENSION] = state
    session_seconds = settings.session_hours * 3600

    def remote_addr() -> str | None:
        return flask.request.remote_addr

    def start_session(username: str, role: str, display_name: str, extra: dict[str, Any]) -> None:
        """A fresh session: nothing from before the login survives (no fixation), new CSRF token."""
        session = flask.session
        session.clear()
        session.permanent = True
        now = int(time.time())
        session.update({_K_USER: username, _K_ROLE: role, _K_NAME: display_name, _K_ISSUED: now,
                        _K_CHECKED: now, _K_SID: secrets.token_urlsafe(16), _K_CSRF: secrets.token_urlsafe(32)})
        session.update(extra)

    # --- routes ---

    def login() -> Any:
        lang = _lang(settings)
        t = _TEXTS[lang]
        next_path = safe_next(flask.request.values.get("next"))
        if flask.request.method in ("GET", "HEAD"):
            return _html(_login_page(lang, next_path), 200)
        sent = flask.request.form.get("csrf_token", "")
        expected = flask.session.get(_K_CSRF)
        if not isinstance(expected, str) or not sent or not hmac.compare_digest(sent, expected):
            flask.session.pop(_K_CSRF, None)
            return _html(_login_page(lang, next_path, t["csrf"]), 400)
        username = flask.request.form.get("username", "")[:200]
        password = flask.request.form.get("password", "")
        try:
            result = accounts.verify_login(state.engine(), username, password, remote_addr(), settings=settings)
        except (SQLAlchemyError, CityGridError):
            log.exception("login could not reach the database")
            return _html(_login_page(lang, next_path, t["unavailable"], username), 503)
        if not result.ok or result.user is None:
            if result.reason == "locked":
                message, status = t["locked"].format(minutes=settings.login_lockout_minutes), 429
            elif result.reason == "rate_limited":
                message, status = t["rate_limited"], 429
            else:
                message, status = t["bad"], 200  # unknown, wrong password and disabled all read alike
            return _html(_login_page(lang, next_path, message, username), status)
        user = result.user
        start_session(user.username, user.role, user.display_name, {_K_STAMP: user.credential_stamp})
        return flask.redirect(next_path, code=303)

    def login_css() -> flask.Response:
        response = flask.Response(_LOGIN_CSS, mimetype="text/css")
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    def logout() -> flask.Response:
        user = current_user()
        lang = _lang(settings)
        flask.session.clear()
        if user is not None:
            try:
                accounts.audit(state.engine(), user.username, "logout", {"kiosk": user.is_kiosk}, remote_addr())
            except (SQLAlchemyError, CityGridError):
                log.exception("could not audit a logout")
        target = flask.url_for(_EP_LOGIN) + ("?lang=en" if lang == "en" else "")
        return flask.redirect(target, code=303)

    def kiosk(token: str) -> flask.Response:
        lang = _lang(settings)
        try:
            row = accounts.check_kiosk_token(state.engine(), token)
            if row is None:
                accounts.audit(state.engine(), "(kiosk)", "kiosk.denied", {}, remote_addr())
        except (SQLAlchemyError, CityGridError):
            log.exception("kiosk token check could not reach the database")
            return _message_page(lang, _TEXTS[lang]["unavailable"], 503)
        if row is None:
            flask.session.clear()
            return _message_page(lang, _TEXTS[lang]["kiosk_denied"], 403)
        start_session(f"kiosk:{row.token_id}", KIOSK_ROLE, row.label, {_K_KIOSK: row.token_id})
        accounts.audit(state.engine(), f"kiosk:{row.token_id}", "kiosk.open",
                       {"token_id": row.token_id, "label": row.label}, remote_addr())
        response = flask.redirect((flask.request.script_root or "") + BIGSCREEN_PATH + "?kiosk=1", code=302)
        response.headers["Cache-Control"] = "no-store"
        return response

    server.add_url_rule("/login", _EP_LOGIN, login, methods=["GET", "POST"])
    server.add_url_rule("/login/login.css", _EP_LOGIN_CSS, login_css, methods=["GET"])
    server.add_url_rule("/logout", _EP_LOGOUT, logout, methods=["GET", "POST"])
    server.add_url_rule("/kiosk/<token>", _EP_KIOSK, kiosk, methods=["GET"])

    # --- the gate ---

    def unauthenticated() -> flask.Response:
        path = flask.request.path
        page_get = flask.request.method in ("GET", "HEAD") and path not in _DASH_JSON_PATHS and not (
            path.startswith("/_dash-") or path.startswith("/_reload-hash")
        )
        if page_get:
            return _login_redirect()
        response = flask.jsonify({"error": "login required", "login": flask.url_for(_EP_LOGIN)})
        response.status_code = 401
        response.headers["Cache-Control"] = "no-store"
        return response

    def forbidden() -> flask.Response:
        path = flask.request.path
        if path.startswith("/_dash-") or flask.request.method not in ("GET", "HEAD"):
            response = flask.jsonify({"error": "forbidden"})
            response.status_code = 403
            return response
        lang = _lang(settings)
        return _message_page(lang, _TEXTS[lang]["forbidden"], 403)

    def unavailable() -> flask.Response:
        response = flask.jsonify({"error": "the account database cannot be reached"})
        response.status_code = 503
        response.headers["Retry-After"] = "30"
        return response

    def session_still_valid() -> bool | None:
        """Re-read the account behind the session when due; None when the database cannot answer."""
        session = flask.session
        now = int(time.time())
        is_kiosk = session.get(_K_ROLE) == KIOSK_ROLE
        issued = session.get(_K_ISSUED)
        if not isinstance(issued, int) or (not is_kiosk and now - issued > session_seconds):
            return False  # a user session ends session_hours after login; a kiosk lives with its token
        checked = session.get(_K_CHECKED)
        if isinstance(checked, int) and 0 <= now - checked < RECHECK_SECONDS:
            return True
        try:
            if is_kiosk:
                token_id = session.get(_K_KIOSK)
                if not isinstance(token_id, int) or accounts.check_kiosk_token_id(state.engine(), token_id) is None:
                    return False
            else:
                user = accounts.get_user(state.engine(), str(session.get(_K_USER)))
                if user is None or user.disabled or user.credential_stamp != session.get(_K_STAMP):
                    return False
                session[_K_ROLE], session[_K_NAME] = user.role, user.display_name
        except (SQLAlchemyError, CityGridError):
            log.exception("session re-check could not reach the database")
            return None
        session[_K_CHECKED] = now
        return True

    def kiosk_allowed() -> bool:
        path, method = flask.request.path, flask.request.method
        if method in ("GET", "HEAD"):
            return path in _KIOSK_GET_PATHS or path.startswith(_KIOSK_GET_PREFIXES)
        if method == "POST" and path == _DASH_UPDATE_PATH:
            return kiosk_may_call(flask.request.get_json(silent=True))
        return False

    def gate() -> flask.Response | None:
        endpoint = flask.request.endpoint
        if endpoint in _PUBLIC_ENDPOINTS:
            return None
        rule = flask.request.url_rule
        if flask.request.path == _HEALTH_PATH and rule is not None and rule.rule == _HEALTH_PATH:
            return None  # a real health route, not Dash's catch-all serving its index there
        user = current_user()
        if user is None:
            return unauthenticated()
        valid = session_still_valid()
        if valid is None:
            return unavailable()
        if not valid:
            flask.session.clear()
            return unauthenticated()
        if user.is_kiosk and not kiosk_allowed():
            return forbidden()
        return None

    server.before_request_funcs.setdefault(None, []).insert(0, gate)

    def security_headers(response: flask.Response) -> flask.Response:
        headers = response.headers
        headers["X-Content-Type-Options"] = "nosniff"
        headers["X-Frame-Options"] = "DENY"
        headers["Referrer-Policy"] = "same-origin"
        if "Content-Security-Policy" not in headers:
            csp = state.base_csp
            if (
                response.mimetype == "text/html"
                and not response.direct_passthrough
                and flask.request.endpoint
                and _is_dash_index(server)
            ):
                hashes = inline_script_hashes(response.get_data(as_text=True))
                if hashes:
                    csp = content_security_policy(settings, hashes)
            headers["Content-Security-Policy"] = csp
        return response

    server.after_request(security_headers)


def _html(body: str, status: int) -> flask.Response:
    response = flask.Response(body, status=status, mimetype="text/html")
    response.headers["Content-Security-Policy"] = _LOGIN_CSP
    response.headers["Cache-Control"] = "no-store"
    return response
