"""The login gate on a small real Dash app, through Flask's test client, against the real database.

One browser test (``-m browser``) logs in through the form in headless Chromium and checks that the
Content-Security-Policy lets Dash run with no console error, for a user and for a kiosk.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dash
import flask
import pytest
from dash import Input, Output, dash_table, dcc, html
from flask.testing import FlaskClient

from dashboard import auth
from geodata import accounts
from geodata.settings import Settings
from tests import browser as browser_tools

PASSWORD = "Dongcheng-2024!"
PLANNER, ADMIN, DISABLED_LATER, RESET_LATER = "auth.planner", "auth.admin", "auth.leaver", "auth.reset"
_addresses = itertools.count(10)


# --- the app under test -------------------------------------------------------------------------------


def build_app(settings: Settings, engine_provider: Any, *, install_first: bool = True) -> dash.Dash:
    """A trivial internal app: a big-screen part, another part, and a few Flask routes."""
    server = flask.Flask(__name__)
    if install_first:
        auth.install_auth(server, settings, engine_provider)
    app = dash.Dash(__name__, server=server, url_base_pathname="/", serve_locally=True)
    app.layout = html.Div(
        [
            dcc.Interval(id="bigscreen-tick", interval=60_000, n_intervals=0),
            html.Div(id="bigscreen-kpis"),
            html.Div(id="bigscreen-a"),
            html.Div(id="bigscreen-b"),
            html.Button("go", id="other-button"),
            html.Div(id="secret-table"),
            html.Div(id="other-d"),
        ]
    )

    @app.callback(Output("bigscreen-kpis", "children"), Input("bigscreen-tick", "n_intervals"))
    def kpis(n: int | None) -> str:
        user = auth.current_user()
        return f"KPI {n} for {user.role if user else None}"

    @app.callback(
        Output("bigscreen-a", "children"),
        Output("bigscreen-b", "children"),
        Input("bigscreen-tick", "n_intervals"),
    )
    def two(n: int | None) -> tuple[str, str]:
        return f"a{n}", f"b{n}"

    @app.callback(
        Output("secret-table", "children"), Input("other-button", "n_clicks"), prevent_initial_call=True
    )
    def secret(n: int | None) -> str:
        user = auth.current_user()
        return f"secret rows for {user.username if user else None}"

    @app.callback(
        Output("bigscreen-kpis", "title"),
        Output("other-d", "children"),
        Input("other-button", "n_clicks"),
        prevent_initial_call=True,
    )
    def mixed(n: int | None) -> tuple[str, str]:
        return "t", "leak"

    if not install_first:
        auth.install_auth(server, settings, engine_provider)
        return app

    @server.get("/healthz")
    def healthz() -> flask.Response:
        return flask.jsonify(status="ok")

    @server.get("/admin-only")
    @auth.role_required("administrator")
    def admin_only() -> str:
        return "admin page"

    @server.get("/export-test")
    def export_test() -> str:
        auth.audit_export({"page": "test", "format": "csv", "rows": 3})
        return "exported"

    return app


@pytest.fixture(scope="module")
def app_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        data_dir=tmp_path_factory.mktemp("auth-data"),
        login_max_failures=3,
        login_lockout_minutes=15,
        session_hours=12,
    )


@pytest.fixture(scope="module")
def users(store) -> dict[str, str]:  # type: ignore[no-untyped-def]
    for name, role in (
        (PLANNER, "planner"),
        (ADMIN, "administrator"),
        (DISABLED_LATER, "leader"),
        (RESET_LATER, "planner"),
    ):
        accounts.add_user(store.writer, name, PASSWORD, role, display_name=name.upper())
    return {"planner": PLANNER, "admin": ADMIN}


@pytest.fixture(scope="module")
def app(store, app_settings: Settings, users: dict[str, str]) -> dash.Dash:  # type: ignore[no-untyped-def]
    return build_app(app_settings, lambda: store.writer)


def make_client(server: flask.Flask, address: str | None = None) -> FlaskClient:
    """A browser of its own, from an address of its own (so the per-address limit never mixes tests)."""
    client = server.test_client()
    number = next(_addresses)
    client.environ_base["REMOTE_ADDR"] = address or f"10.20.{number // 250}.{number % 250 + 1}"
    return client


@pytest.fixture()
def client(app: dash.Dash) -> FlaskClient:
    return make_client(app.server)


def csrf_from(body: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', body)
    assert match, body
    return match.group(1)


def login(client: FlaskClient, username: str, password: str = PASSWORD, **extra: str) -> Any:
    page = client.get("/login")
    data = {"csrf_token": csrf_from(page.text), "username": username, "password": password, **extra}
    return client.post("/login", data=data)


def update_body(outputs: list[tuple[str, str]], inputs: list[tuple[str, str, Any]]) -> dict[str, Any]:
    """What Dash's renderer posts to /_dash-update-component."""
    if len(outputs) == 1:
        output = f"{outputs[0][0]}.{outputs[0][1]}"
        outputs_json: Any = {"id": outputs[0][0], "property": outputs[0][1]}
    else:
        output = ".." + "...".join(f"{i}.{p}" for i, p in outputs) + ".."
        outputs_json = [{"id": i, "property": p} for i, p in outputs]
    return {
        "output": output,
        "outputs": outputs_json,
        "inputs": [{"id": i, "property": p, "value": v} for i, p, v in inputs],
        "changedPropIds": [f"{i}.{p}" for i, p, _v in inputs],
        "state": [],
    }


KPIS = update_body([("bigscreen-kpis", "children")], [("bigscreen-tick", "n_intervals", 1)])
TWO = update_body(
    [("bigscreen-a", "children"), ("bigscreen-b", "children")], [("bigscreen-tick", "n_intervals", 2)]
)
SECRET = update_body([("secret-table", "children")], [("other-button", "n_clicks", 1)])
MIXED = update_body([("bigscreen-kpis", "title"), ("other-d", "children")], [("other-button", "n_clicks", 1)])


def audit_actions(store, actor: str) -> list[tuple[str, dict[str, Any], str | None]]:  # type: ignore[no-untyped-def]
    rows = accounts.recent_audit(store.writer, 50, actor=actor)
    return [(r.action, r.detail, r.remote_addr) for r in reversed(rows)]


# --- unauthenticated ----------------------------------------------------------------------------------


def test_unauthenticated_page_redirects_to_login(client: FlaskClient) -> None:
    response = client.get("/reports?district=110101")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=%2Freports%3Fdistrict%3D110101"
    assert client.get("/").headers["Location"] == "/login"
    assert client.get("/bigscreen").status_code == 302


@pytest.mark.parametrize("path", ["/_dash-layout", "/_dash-dependencies"])
def test_unauthenticated_dash_json_gets_401(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 401
    assert response.get_json() == {"error": "login required", "login": "/login"}


def test_unauthenticated_dash_update_gets_401(client: FlaskClient) -> None:
    response = client.post("/_dash-update-component", json=KPIS)
    assert response.status_code == 401 and response.is_json
    assert client.post("/anything-else", data={"a": "b"}).status_code == 401


def test_open_routes(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    css = client.get("/login/login.css")
    assert css.status_code == 200 and css.mimetype == "text/css"


def test_gate_runs_first_even_when_installed_after_dash(store, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    app = build_app(settings, lambda: store.writer, install_first=False)
    client = make_client(app.server)
    assert client.get("/").status_code == 302
    assert client.get("/_dash-layout").status_code == 401
    # No health route here: Dash's catch-all would answer /healthz with its page, so it stays closed.
    assert client.get("/healthz").status_code == 302


# --- the login form -----------------------------------------------------------------------------------


def test_login_page_is_chinese_by_default_with_english_switch(client: FlaskClient) -> None:
    page = client.get("/login")
    assert page.status_code == 200 and page.mimetype == "text/html"
    for word in ("用户名", "密码", "登录", 'lang="zh-CN"', 'href="/login?lang=en"'):
        assert word in page.text
    assert "<script" not in page.text and "http://" not in page.text and "https://" not in page.text
    assert page.headers["Cache-Control"] == "no-store"

    english = client.get("/login?lang=en&next=/bigscreen")
    for word in ("Username", "Password", "Sign in", 'lang="en"', "中文"):
        assert word in english.text
    assert 'name="next" value="/bigscreen"' in english.text


def test_missing_or_wrong_csrf_token_is_400(client: FlaskClient) -> None:
    client.get("/login")
    missing = client.post("/login", data={"username": PLANNER, "password": PASSWORD})
    assert missing.status_code == 400 and "页面已过期" in missing.text
    wrong = client.post("/login", data={"csrf_token": "x" * 43, "username": PLANNER, "password": PASSWORD})
    assert wrong.status_code == 400
    # A fresh session (no token at all) is refused too.
    fresh = make_client(client.application)
    assert (
        fresh.post("/login", data={"csrf_token": "", "username": PLANNER, "password": PASSWORD}).status_code
        == 400
    )


def test_wrong_password_and_unknown_user_read_alike(store, client: FlaskClient) -> None:  # type: ignore[no-untyped-def]
    wrong = login(client, PLANNER, "Not-The-Password-1")
    unknown = login(client, "nobody.at.all", "Not-The-Password-1")
    assert wrong.status_code == unknown.status_code == 200
    assert "用户名或密码错误" in wrong.text and "用户名或密码错误" in unknown.text
    strip = re.compile(r'name="(csrf_token|username)" value="[^"]*"')
    assert strip.sub("", wrong.text) == strip.sub("", unknown.text)
    address = client.environ_base["REMOTE_ADDR"]
    failures = [a for a in audit_actions(store, PLANNER) if a[0] == "login.failure" and a[2] == address]
    assert failures == [("login.failure", {"reason": "bad_password", "failures": 1}, address)]
    english = login(client, PLANNER, "Not-The-Password-1", lang="en")
    assert "Wrong username or password." in english.text
    # Not locked: the right password still works and resets the count.
    assert login(client, PLANNER).status_code == 303


def test_lockout_message(client: FlaskClient) -> None:
    for i in range(2):
        assert login(client, "auth.lockme", f"Wrong-{i}-password").status_code == 200
    locked = login(client, "auth.lockme", "Wrong-2-password")
    assert locked.status_code == 429 and "15 分钟后再试" in locked.text


def test_right_password_sets_a_safe_cookie_and_opens_pages(store, client: FlaskClient) -> None:  # type: ignore[no-untyped-def]
    client.get("/login")
    with client.session_transaction() as session:
        session["planted"] = "by an attacker"
        before = dict(session)
    response = login(client, PLANNER, next="/bigscreen?x=1")
    assert response.status_code == 303 and response.headers["Location"] == "/bigscreen?x=1"
    cookie = next(
        c for c in response.headers.getlist("Set-Cookie") if c.startswith(auth.SESSION_COOKIE_NAME + "=")
    )
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Expires=" in cookie
    assert "Secure" not in cookie  # cookie_secure is off in these settings
    with client.session_transaction() as session:
        assert "planted" not in session  # cleared and re-issued at login (no fixation)
        assert session["csrf"] != before["csrf"]
        assert session["u"] == PLANNER and session["r"] == "planner"

    page = client.get("/")
    assert page.status_code == 200 and "_dash-renderer" in page.text
    assert client.get("/_dash-layout").status_code == 200
    result = client.post("/_dash-update-component", json=SECRET)
    assert result.status_code == 200
    assert result.get_json()["response"]["secret-table"]["children"] == f"secret rows for {PLANNER}"
    assert audit_actions(store, PLANNER)[-1][0] == "login.success"


def test_secure_cookie_when_configured(store, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    server = flask.Flask("secure")
    auth.install_auth(server, settings.model_copy(update={"cookie_secure": True}), lambda: store.writer)
    client = make_client(server, "10.30.0.1")
    response = login(client, PLANNER)
    assert response.status_code == 303
    cookie = next(
        c for c in response.headers.getlist("Set-Cookie") if c.startswith(auth.SESSION_COOKIE_NAME + "=")
    )
    assert "Secure" in cookie and "HttpOnly" in cookie


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
        "javascript:alert(1)",
        "evil.example",
        "/%0d%0aSet-Cookie:x=1".replace("%0d%0a", "\r\n"),
        "\\\\evil.example",
    ],
)
def test_open_redirect_is_refused(client: FlaskClient, target: str) -> None:
    page = client.get("/login", query_string={"next": target})
    assert 'name="next" value="/"' in page.text
    response = client.post(
        "/login",
        data={"csrf_token": csrf_from(page.text), "username": PLANNER, "password": PASSWORD, "next": target},
    )
    assert response.status_code == 303 and response.headers["Location"] == "/"


def test_logout_ends_the_session(store, client: FlaskClient) -> None:  # type: ignore[no-untyped-def]
    login(client, ADMIN)
    assert client.get("/").status_code == 200
    response = client.get("/logout")
    assert response.status_code == 303 and response.headers["Location"] == "/login"
    assert client.get("/").status_code == 302
    assert audit_actions(store, ADMIN)[-1][:2] == ("logout", {"kiosk": False})


def test_disabled_user_and_changed_password_end_sessions(store, app: dash.Dash) -> None:  # type: ignore[no-untyped-def]
    leaver = make_client(app.server, "10.40.0.1")
    reset = make_client(app.server, "10.40.0.2")
    login(leaver, DISABLED_LATER)
    login(reset, RESET_LATER)
    accounts.disable_user(store.writer, DISABLED_LATER, actor=ADMIN)
    accounts.set_password(store.writer, RESET_LATER, "Brand-New-Pass-1", actor=ADMIN)
    for client in (leaver, reset):
        with client.session_transaction() as session:
            session["chk"] = 0  # the minute between re-checks has passed
        assert client.get("/").status_code == 302
        assert client.get("/").status_code == 302  # the session is gone, not just refused once


def test_session_ends_after_session_hours(client: FlaskClient, app_settings: Settings) -> None:
    login(client, PLANNER)
    with client.session_transaction() as session:
        session["iat"] = int(time.time()) - app_settings.session_hours * 3600 - 1
    assert client.get("/").status_code == 302


def test_role_required_and_current_user(store, app: dash.Dash) -> None:  # type: ignore[no-untyped-def]
    planner = make_client(app.server, "10.50.0.1")
    admin = make_client(app.server, "10.50.0.2")
    login(planner, PLANNER)
    login(admin, ADMIN)
    assert planner.get("/admin-only").status_code == 403
    assert admin.get("/admin-only").text == "admin page"
    with pytest.raises(ValueError, match="role_required"):
        auth.role_required("mayor")
    with app.server.test_request_context("/"):
        assert auth.current_user() is None
    assert auth.current_user() is None  # outside any request


def test_audit_export(store, client: FlaskClient) -> None:  # type: ignore[no-untyped-def]
    login(client, ADMIN)
    assert client.get("/export-test").text == "exported"
    action, detail, address = audit_actions(store, ADMIN)[-1]
    assert (action, detail, address) == (
        "export",
        {"page": "test", "format": "csv", "rows": 3},
        client.environ_base["REMOTE_ADDR"],
    )


# --- kiosk --------------------------------------------------------------------------------------------


@pytest.fixture()
def kiosk_token(store, users: dict[str, str]) -> str:  # type: ignore[no-untyped-def]
    return accounts.issue_kiosk_token(store.writer, "大屏-测试", ADMIN)


def open_kiosk(client: FlaskClient, token: str) -> int:
    response = client.get(f"/kiosk/{token}")
    assert response.status_code == 302 and response.headers["Location"] == "/bigscreen?kiosk=1"
    with client.session_transaction() as session:
        return int(session["k"])


def test_kiosk_sees_the_big_screen_only(store, client: FlaskClient, kiosk_token: str) -> None:  # type: ignore[no-untyped-def]
    token_id = open_kiosk(client, kiosk_token)
    assert audit_actions(store, f"kiosk:{token_id}")[-1][:2] == (
        "kiosk.open",
        {"token_id": token_id, "label": "大屏-测试"},
    )
    page = client.get("/bigscreen?kiosk=1")
    assert page.status_code == 200
    for path in ("/_dash-layout", "/_dash-dependencies", "/_favicon.ico"):
        assert client.get(path).status_code == 200, path
    bundle = re.search(r'src="(/_dash-component-suites/[^"]+)"', page.text)
    assert bundle and client.get(bundle.group(1)).status_code == 200

    kpis = client.post("/_dash-update-component", json=KPIS)
    assert kpis.status_code == 200
    assert kpis.get_json()["response"]["bigscreen-kpis"]["children"] == "KPI 1 for kiosk"
    two = client.post("/_dash-update-component", json=TWO)
    assert two.status_code == 200 and two.get_json()["response"]["bigscreen-b"]["children"] == "b2"

    assert client.post("/_dash-update-component", json=SECRET).status_code == 403
    assert client.post("/_dash-update-component", json=MIXED).status_code == 403
    spoofed = {**SECRET, "outputs": KPIS["outputs"]}  # Dash runs the function named by "output"
    assert client.post("/_dash-update-component", json=spoofed).status_code == 403
    assert client.post("/_dash-update-component", data="not json").status_code == 403
    for path in ("/", "/reports", "/admin-only", "/export-test"):
        assert client.get(path).status_code == 403, path
    assert client.post("/bigscreen").status_code == 403


def test_revoked_token_ends_the_kiosk_session(store, client: FlaskClient, kiosk_token: str) -> None:  # type: ignore[no-untyped-def]
    token_id = open_kiosk(client, kiosk_token)
    assert client.post("/_dash-update-component", json=KPIS).status_code == 200
    accounts.revoke_kiosk_token(store.writer, token_id, actor=ADMIN)
    with client.session_transaction() as session:
        session["chk"] = 0  # next re-check is due (at most a minute after the revocation)
    assert client.post("/_dash-update-component", json=KPIS).status_code == 401
    assert client.get("/bigscreen").status_code == 302
    assert client.get(f"/kiosk/{kiosk_token}").status_code == 403


def test_bad_kiosk_token_is_refused_and_audited(store, client: FlaskClient) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/kiosk/not-a-real-token-at-all-0123456789")
    assert response.status_code == 403 and "大屏授权无效" in response.text
    assert client.get("/kiosk/x?lang=en").text.count("screen pass is invalid") == 1
    rows = [a for a in audit_actions(store, "(kiosk)") if a[2] == client.environ_base["REMOTE_ADDR"]]
    assert [a[0] for a in rows] == ["kiosk.denied", "kiosk.denied"]
    assert client.get("/bigscreen").status_code == 302


@pytest.mark.parametrize(
    ("output", "outputs", "allowed"),
    [
        ("bigscreen-kpis.children", {"id": "bigscreen-kpis", "property": "children"}, True),
        ("..bigscreen-a.children...bigscreen-b.figure..", None, True),
        ("..bigscreen-a.children...table.data..", None, False),
        ("bigscreen-kpis.children@0a1b2c", None, True),  # allow_duplicate output
        ('{"index":1,"type":"bigscreen-card"}.children', None, True),  # pattern-matching id
        ('{"index":1,"type":"card"}.children', None, False),
        ("bigscreen\\.x.children", None, False),  # "bigscreen.x": not the prefix
        ("3f2a" * 16, None, False),  # a no-output callback: refused
        ("secret.children", {"id": "bigscreen-kpis", "property": "children"}, False),
        ("bigscreen-kpis.children", [{"id": "secret", "property": "children"}], False),
        ("", None, False),
    ],
)
def test_kiosk_may_call(app: dash.Dash, output: str, outputs: Any, allowed: bool) -> None:
    body: dict[str, Any] = {"output": output}
    if outputs is not None:
        body["outputs"] = outputs
    with app.server.test_request_context("/_dash-update-component", method="POST"):
        assert auth.kiosk_may_call(body) is allowed
        assert auth.kiosk_may_call(None) is False


@pytest.mark.parametrize(
    ("pathname", "allowed"), [("/bigscreen", True), ("/bigscreen/", True), ("/", False), ("/cases", False)]
)
def test_kiosk_may_route_dash_pages_to_the_big_screen_only(
    app: dash.Dash, pathname: str, allowed: bool
) -> None:
    body = {
        "output": ".._pages_content.children..._pages_store.data..",
        "outputs": [
            {"id": "_pages_content", "property": "children"},
            {"id": "_pages_store", "property": "data"},
        ],
        "inputs": [
            {"id": "_pages_location", "property": "pathname", "value": pathname},
            {"id": "_pages_location", "property": "search", "value": ""},
        ],
    }
    with app.server.test_request_context("/_dash-update-component", method="POST"):
        assert auth.kiosk_may_call(body) is allowed


# --- headers and secret key ---------------------------------------------------------------------------


def test_security_headers_on_every_response(client: FlaskClient) -> None:
    responses = {
        "login": client.get("/login"),
        "redirect": client.get("/somewhere"),
        "401": client.get("/_dash-layout"),
    }
    login(client, PLANNER)
    responses |= {
        "index": client.get("/"),
        "layout": client.get("/_dash-layout"),
        "update": client.post("/_dash-update-component", json=KPIS),
        "500": client.get("/_dash-component-suites/dash/nothing.js"),  # Dash raises on an unknown bundle
    }
    for name, response in responses.items():
        headers = response.headers
        assert headers["X-Content-Type-Options"] == "nosniff", name
        assert headers["X-Frame-Options"] == "DENY", name
        assert headers["Referrer-Policy"] == "same-origin", name
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], name

    assert "script-src" not in responses["login"].headers["Content-Security-Policy"]  # no script at all
    csp = responses["index"].headers["Content-Security-Policy"]
    renderer = base64.b64encode(hashlib.sha256(b"var renderer = new DashRenderer();").digest()).decode()
    assert f"script-src 'self' 'unsafe-eval' 'sha256-{renderer}'" in csp
    assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    assert auth.inline_script_hashes(responses["index"].text) == [f"'sha256-{renderer}'"]


def test_csp_names_an_intranet_tile_server(settings: Settings) -> None:
    tiles = settings.model_copy(update={"map_style": "http://{s}.tiles.city.intranet:8080/{z}/{x}/{y}.png"})
    csp = auth.content_security_policy(tiles)
    assert "img-src 'self' data: blob: http://*.tiles.city.intranet:8080;" in csp
    assert "connect-src 'self' http://*.tiles.city.intranet:8080;" in csp
    assert "tiles" not in auth.content_security_policy(settings)


def test_secret_key_is_generated_once_with_mode_0600(settings: Settings) -> None:
    first, second = flask.Flask("one"), flask.Flask("two")
    auth.install_auth(first, settings, lambda: None)  # type: ignore[arg-type,return-value]
    auth.install_auth(second, settings, lambda: None)  # type: ignore[arg-type,return-value]
    key_file = Path(settings.data_dir) / "secret_key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert first.secret_key == second.secret_key == key_file.read_text().strip()
    assert len(first.secret_key) >= 64
    given = flask.Flask("three")
    auth.install_auth(given, settings.model_copy(update={"secret_key": "k" * 40}), lambda: None)  # type: ignore[arg-type,return-value]
    assert given.secret_key == "k" * 40
    with pytest.raises(RuntimeError, match="already"):
        auth.install_auth(given, settings, lambda: None)  # type: ignore[arg-type,return-value]


# --- in a real browser --------------------------------------------------------------------------------


@pytest.fixture()
def live_server(store, tmp_path: Path, users: dict[str, str]) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The test app with a chart, a table and a clientside callback, served on 127.0.0.1 in a thread."""
    app = build_app(Settings(data_dir=tmp_path), lambda: store.writer)
    app.layout = html.Div(
        [
            *app.layout.children,
            dcc.Dropdown(["东城区", "西城区"], "东城区", id="bigscreen-district"),
            dcc.Graph(id="bigscreen-chart", figure={"data": [{"type": "bar", "x": ["a", "b"], "y": [3, 1]}]}),
            dash_table.DataTable(
                id="bigscreen-table",
                data=[{"区": "东城区", "案件": 12}],
                columns=[{"id": "区", "name": "区"}, {"id": "案件", "name": "案件"}],
            ),
            html.Div(id="bigscreen-echo"),
        ]
    )
    app.clientside_callback(
        "function(v) { return 'echo ' + v; }",
        Output("bigscreen-echo", "children"),
        Input("bigscreen-district", "value"),
    )
    with browser_tools.serve(app.server) as url:
        yield url


@pytest.fixture()
def browser() -> Iterator[Any]:
    with browser_tools.chromium() as driver:
        yield driver


_wait_for_text = browser_tools.wait_for_text
_wait_for_element = browser_tools.wait_for_element


def _severe(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


@pytest.mark.browser
@pytest.mark.filterwarnings("ignore:The dash_table.DataTable will be removed:DeprecationWarning")
def test_browser_login_and_kiosk_without_console_errors(store, live_server: str, browser: Any) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    browser.get(live_server + "/bigscreen")
    assert "/login?next=%2Fbigscreen" in browser.current_url
    assert browser.find_element(By.TAG_NAME, "button").text == "登录"
    browser.find_element(By.ID, "username").send_keys(PLANNER)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait_for_text(browser, "KPI 0 for planner")
    _wait_for_text(browser, "echo 东城区")  # the clientside callback ran: its inline script was allowed
    assert browser.current_url == live_server + "/bigscreen"
    _wait_for_element(browser, "#bigscreen-chart .main-svg .bars")  # plotly.js drew the chart
    time.sleep(1)
    assert browser.execute_script("return window.__csp") == []
    assert _severe(browser) == []

    browser.find_element(By.ID, "other-button").click()
    _wait_for_text(browser, f"secret rows for {PLANNER}")

    token = accounts.issue_kiosk_token(store.writer, "大屏-浏览器", ADMIN)
    browser.get(live_server + "/logout")
    browser.get(live_server + f"/kiosk/{token}")
    _wait_for_text(browser, "KPI 0 for kiosk")
    _wait_for_text(browser, "echo 东城区")
    _wait_for_element(browser, "#bigscreen-chart .main-svg .bars")
    assert browser.current_url == live_server + "/bigscreen?kiosk=1"
    time.sleep(1)
    assert browser.execute_script("return window.__csp") == []
    assert _severe(browser) == []
    logs = json.dumps(browser.get_log("browser"))
    assert "403" not in logs and "401" not in logs
