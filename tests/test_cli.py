"""The `citygrid` command: help for every command, users and kiosk tokens end to end on the suite's database."""

from __future__ import annotations

import re
import subprocess
import sys

from sqlalchemy import text

from geodata.settings import PROJECT_ROOT
from tests.conftest import SuiteStore


def _citygrid(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", **(env or {})}, input=stdin, timeout=120)


def test_every_command_explains_itself() -> None:
    top = _citygrid("--help")
    assert top.returncode == 0
    for command in ("db", "migrate", "load", "rejects", "kpi", "serve", "user", "kiosk", "version"):
        assert command in top.stdout, command
    for command in (("db", "start"), ("db", "stop"), ("db", "status"), ("load",), ("kpi",), ("user", "add"),
                    ("user", "list"), ("user", "disable"), ("kiosk", "issue"), ("kiosk", "revoke")):
        result = _citygrid(*command, "--help")
        assert result.returncode == 0 and "Usage" in result.stdout, command


def test_users_and_kiosk_tokens_from_the_command_line(store: SuiteStore, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**store.environment(), "CITYGRID_DATA_DIR": str(tmp_path)}
    added = _citygrid("user", "add", "cli.admin", "--role", "administrator", "--password", "Cli-admin-pass-1",
                      env=env)
    assert added.returncode == 0, added.stderr
    weak = _citygrid("user", "add", "cli.weak", "--password", "short", env=env)
    assert weak.returncode == 1 and "Traceback" not in weak.stderr
    listing = _citygrid("user", "list", env=env)
    assert "cli.admin" in listing.stdout and "administrator" in listing.stdout
    assert "argon2" not in listing.stdout, "hashes are never shown"
    issued = _citygrid("kiosk", "issue", "指挥中心大屏", "--created-by", "cli.admin", env=env)
    assert issued.returncode == 0, issued.stderr
    token = re.search(r"/kiosk/(\S+)", issued.stdout)
    assert token is not None
    with store.writer.connect() as conn:
        token_id, stored = conn.execute(text(
            "SELECT token_id, token_sha256 FROM private.kiosk_token WHERE label = '指挥中心大屏'")).one()
    assert token.group(1) not in stored, "only the token's hash is kept"
    assert _citygrid("kiosk", "revoke", str(token_id), env=env).returncode == 0
    assert _citygrid("user", "disable", "cli.admin", env=env).returncode == 0
    with store.writer.connect() as conn:
        actions = [a for (a,) in conn.execute(text(
            "SELECT action FROM private.audit_log WHERE actor = 'cli' OR detail::text LIKE '%cli.admin%'"
            " ORDER BY audit_id"))]
        disabled = conn.execute(text("SELECT disabled FROM private.app_user WHERE username = 'cli.admin'")).scalar_one()
    assert disabled
    assert actions.count("user.add") == 1 and actions.count("user.disable") == 1, actions
