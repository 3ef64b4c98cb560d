"""Bad ground under the store ends in one clear message naming the fix, never a bare traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid

from sqlalchemy import create_engine, text

from geodata.settings import PROJECT_ROOT
from tests.conftest import SuiteStore


def _citygrid(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", **env}, timeout=120)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_database_names_the_fix(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {"DATABASE_URL": f"postgresql://citygrid@127.0.0.1:{_closed_port()}/citygrid",
           "CITYGRID_DATA_DIR": str(tmp_path)}
    for command in (("db", "status"), ("migrate",)):
        result = _citygrid(*command, env=env)
        assert result.returncode == 1, result
        assert "Cannot reach the database" in result.stderr and "DATABASE_URL" in result.stderr
        assert "Traceback" not in result.stderr


def test_database_without_postgis_names_who_must_enable_it(store: SuiteStore, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A database made from template0 lacks PostGIS; a non-superuser writer cannot create it."""
    name = f"citygrid_nopostgis_{uuid.uuid4().hex[:8]}"
    with store.writer.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        superuser = conn.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar_one()
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
    try:
        url = store.writer.url.set(database=name).render_as_string(hide_password=False)
        result = _citygrid("migrate", env={"DATABASE_URL": url, "CITYGRID_DATA_DIR": str(tmp_path)})
        if superuser:  # a superuser writer simply enables it
            assert result.returncode == 0, result.stderr
        else:
            assert result.returncode == 1
            assert "CREATE EXTENSION postgis" in result.stderr and "Traceback" not in result.stderr
    finally:
        create_engine(store.writer.url).dispose()
        with store.writer.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
