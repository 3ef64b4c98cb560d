"""The embedded PostGIS cluster, against the real PostgreSQL binaries (no mock).

One cluster serves the module (initdb + PostGIS in template1 cost a few seconds); the tests run in
file order and each starts it again (``start`` is idempotent), so any one of them also passes alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.pool import NullPool

from geodata.cluster import (
    ClusterError,
    ClusterInfo,
    Credential,
    EmbeddedCluster,
    _find_bin_dir,
    _processes_in,
    bootstrap,
)
from geodata.settings import Settings

pytestmark = pytest.mark.skipif(
    _find_bin_dir() is None,
    reason="needs PostgreSQL + PostGIS under /usr/lib/postgresql (apt-get install postgresql postgresql-15-postgis-3)",
)

IS_ROOT = os.geteuid() == 0


def _tmp_data_dir() -> Path:
    """A fresh data_dir in /tmp that the ``postgres`` user can pass through when the tests run as root."""
    path = Path(tempfile.mkdtemp(prefix="citygrid-cluster-", dir="/tmp"))
    path.chmod(0o755)
    return path


def _settings(path: Path, **extra: Any) -> Settings:
    # embedded_port given explicitly so that a CITYGRID_EMBEDDED_PORT in the environment cannot leak in.
    return Settings(data_dir=path, **{"embedded_port": None, **extra})


def _discard(cluster: EmbeddedCluster) -> None:
    """Stop (kill, if it must) the cluster and remove its folder."""
    try:
        cluster.stop(timeout=30)
    except ClusterError:
        pid = cluster.status().pid
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT)
    shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedCluster]:
    """The module's cluster, in its own temporary data_dir."""
    embedded = EmbeddedCluster(_settings(_tmp_data_dir()))
    try:
        yield embedded
    finally:
        _discard(embedded)


@pytest.fixture()
def scratch_dir() -> Iterator[Path]:
    """A data_dir for a test that must not disturb the module's cluster."""
    path = _tmp_data_dir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _sql(info: ClusterInfo, role: str, statement: str, database: str = "citygrid") -> list[Any]:
    """Run one statement as ``role`` (autocommit, no pool left behind); rows, or [] for none."""
    engine = create_engine(info.url(role, database), poolclass=NullPool, isolation_level="AUTOCOMMIT")  # type: ignore[arg-type]
    try:
        with engine.connect() as conn:
            result = conn.execute(text(statement))
            return list(result.fetchall()) if result.returns_rows else []
    finally:
        engine.dispose()


def _wait_no_processes_in(pgdata: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while _processes_in(pgdata) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _processes_in(pgdata), "backends of the killed postmaster did not exit"


def _kill_postmaster(cluster: EmbeddedCluster) -> int:
    """Simulate a crash (power cut, OOM killer): SIGKILL the postmaster, leave postmaster.pid behind."""
    pid = cluster.status().pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while cluster.status().running and time.monotonic() < deadline:
        time.sleep(0.05)
    _wait_no_processes_in(cluster.pgdata)
    assert (cluster.pgdata / "postmaster.pid").exists()
    return pid


# --------------------------------------------------------------------------------------------------


def test_bootstrap_finds_the_installed_binaries() -> None:
    bin_dir = bootstrap()
    assert bin_dir.parent.parent == Path("/usr/lib/postgresql")
    assert (bin_dir / "postgres").is_file() and (bin_dir / "initdb").is_file()


def test_url_quotes_the_password_and_repr_hides_it() -> None:
    password = "p@ss:/w#rd%?"
    info = ClusterInfo(
        port=15433,
        data_dir=Path("/nowhere"),
        credentials={"writer": Credential("citygrid", password)},
    )
    url = info.url("writer")
    assert url == "postgresql+psycopg://citygrid:p%40ss%3A%2Fw%23rd%25%3F@127.0.0.1:15433/citygrid"
    assert make_url(url).password == password
    assert make_url(info.url("writer", database="other")).database == "other"
    assert password not in repr(info)
    with pytest.raises(ValueError, match="unknown role"):
        info.url("admin")


def test_first_start_initialises_with_postgis(cluster: EmbeddedCluster) -> None:
    before = cluster.status()
    assert (before.initialised, before.running, before.port, before.pid) == (False, False, None, None)
    with pytest.raises(ClusterError, match="not initialised"):
        cluster.info()

    info = cluster.start()

    status = cluster.status()
    assert status.initialised and status.running
    assert status.port == info.port and status.pid and status.version
    assert status.data_dir == info.data_dir == cluster.pgdata == cluster.root / "postgres"
    assert cluster.info() == info

    [(version,)] = _sql(info, "writer", "SELECT postgis_full_version()")
    assert version.startswith("POSTGIS=")
    [(user, owner)] = _sql(
        info, "writer", "SELECT current_user, pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'citygrid'"
    )
    assert user == owner == "citygrid"
    # Text compares byte by byte in CityGrid's database (geodata.migrate.DATABASE_OPTIONS).
    [(collate, encoding)] = _sql(info, "writer", "SELECT datcollate, pg_encoding_to_char(encoding) FROM pg_database"
                                                 " WHERE datname = 'citygrid'")
    assert (collate, encoding) == ("C", "UTF8")

    settings = dict(
        _sql(
            info,
            "admin",
            "SELECT name, setting FROM pg_settings WHERE name IN ('listen_addresses', 'unix_socket_directories',"
            " 'synchronous_commit', 'jit', 'max_connections', 'password_encryption', 'server_encoding')",
            database="postgres",
        )
    )
    assert settings == {
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": str(cluster.pgdata),
        "synchronous_commit": "on",
        "jit": "off",
        "max_connections": "200",
        "password_encryption": "scram-sha-256",
        "server_encoding": "UTF8",
    }

    # Credentials: outside the server's folder, private to whoever runs CityGrid.
    creds = cluster.credentials_file.stat()
    assert cluster.credentials_file.parent == cluster.root
    assert stat.S_IMODE(creds.st_mode) == 0o600 and creds.st_uid == os.geteuid()
    assert os.access(cluster.log_file, os.R_OK)
    if IS_ROOT:  # PostgreSQL refuses root: the server and its folder belong to 'postgres'
        assert cluster.pgdata.stat().st_uid == Path(f"/proc/{status.pid}").stat().st_uid != 0

    # Every login needs its password.
    wrong = make_url(info.url("writer")).set(password="wrong")
    with pytest.raises(OperationalError, match="password authentication failed"):
        create_engine(wrong, poolclass=NullPool).connect()


def test_second_start_reuses_port_and_keeps_data(cluster: EmbeddedCluster) -> None:
    info = cluster.start()
    pid = cluster.status().pid
    assert cluster.start() == info and cluster.status().pid == pid  # idempotent: nothing restarted

    _sql(info, "writer", "CREATE TABLE kept (id int PRIMARY KEY, name text); INSERT INTO kept VALUES (1, '张店区')")
    cluster.stop()
    stopped = cluster.status()
    assert stopped.initialised and not stopped.running and stopped.pid is None
    assert stopped.port == info.port  # kept in the configuration

    again = cluster.start()
    assert again.port == info.port
    assert _sql(again, "writer", "SELECT id, name FROM kept") == [(1, "张店区")]


def test_stop_is_clean_and_idempotent(cluster: EmbeddedCluster) -> None:
    cluster.start()
    cluster.stop()
    cluster.stop()
    status = cluster.status()
    assert status.initialised and not status.running and status.pid is None
    assert not (cluster.pgdata / "postmaster.pid").exists()
    assert not _processes_in(cluster.pgdata)
    assert cluster.log_file.read_text().rstrip().endswith("database system is shut down")


def test_taken_port_moves_the_cluster(cluster: EmbeddedCluster, caplog: pytest.LogCaptureFixture) -> None:
    info = cluster.start()
    _sql(info, "writer", "CREATE TABLE moved (id int); INSERT INTO moved VALUES (7)")
    cluster.stop()

    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the stopped server's TIME_WAITs
        squatter.bind(("127.0.0.1", info.port))
        squatter.listen()
        with caplog.at_level(logging.WARNING, logger="geodata.cluster"):
            moved = cluster.start()
    finally:
        squatter.close()

    assert moved.port != info.port
    assert any(f"port {info.port}" in r.getMessage() and "taken" in r.getMessage() for r in caplog.records)
    assert _sql(moved, "writer", "SELECT id FROM moved") == [(7,)]
    assert cluster.status().port == moved.port

    cluster.stop()  # the new port is the kept one now, even with the old one free again
    assert cluster.status().port == moved.port
    assert cluster.start().port == moved.port


def test_reader_and_public_may_not_create_tables(cluster: EmbeddedCluster) -> None:
    info = cluster.start()
    for role, user in (("reader", "citygrid_reader"), ("public", "citygrid_public")):
        assert _sql(info, role, "SELECT current_user") == [(user,)]
        with pytest.raises(ProgrammingError, match="permission denied for schema public"):
            _sql(info, role, "CREATE TABLE public.not_allowed (id int)")
        with pytest.raises(ProgrammingError, match="permission denied to create database"):
            _sql(info, role, "CREATE DATABASE not_allowed")
    [(superuser, createdb)] = _sql(
        info, "admin", "SELECT rolsuper, rolcreatedb FROM pg_roles WHERE rolname = 'citygrid_reader'", "postgres"
    )
    assert (superuser, createdb) == (False, False)


def test_writer_databases_come_with_postgis(cluster: EmbeddedCluster) -> None:
    info = cluster.start()
    _sql(info, "writer", "CREATE DATABASE citygrid_scratch", database="postgres")
    try:
        [(version,)] = _sql(info, "writer", "SELECT postgis_lib_version()", database="citygrid_scratch")
        assert version.startswith("3.")
    finally:
        _sql(info, "writer", "DROP DATABASE citygrid_scratch WITH (FORCE)", database="postgres")


def test_crash_leftovers_are_handled(cluster: EmbeddedCluster) -> None:
    info = cluster.start()
    _sql(info, "writer", "CREATE TABLE survived (id int); INSERT INTO survived VALUES (1)")

    # 1. Crash: the stale postmaster.pid names a dead process; start recovers.
    _kill_postmaster(cluster)
    status = cluster.status()
    assert status.initialised and not status.running and status.pid is None
    cluster.stop()  # nothing to stop: must not fail
    recovered = cluster.start()
    assert _sql(recovered, "writer", "SELECT id FROM survived") == [(1,)]

    # 2. Crash, then the dead postmaster's pid is given to an unrelated process (a container restart).
    _kill_postmaster(cluster)
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        pidfile = cluster.pgdata / "postmaster.pid"
        lines = pidfile.read_text().splitlines()
        pidfile.write_text("\n".join([str(stranger.pid), *lines[1:]]) + "\n")
        assert not cluster.status().running
        cluster.stop()  # must not signal the stranger
        assert stranger.poll() is None
        again = cluster.start()
        assert stranger.poll() is None
        assert _sql(again, "writer", "SELECT id FROM survived") == [(1,)]
    finally:
        stranger.kill()
        stranger.wait()


# --------------------------------------------------------------------------------------------------
# Failures name their fix (none of these gets as far as initdb).


def test_non_empty_folder_that_is_no_cluster_is_refused(scratch_dir: Path) -> None:
    (scratch_dir / "postgres").mkdir(mode=0o700)
    (scratch_dir / "postgres" / "notes.txt").write_text("someone else's files")
    if IS_ROOT:
        shutil.chown(scratch_dir / "postgres", "postgres", "postgres")
    with pytest.raises(ClusterError, match="not empty but holds no PostgreSQL cluster") as caught:
        EmbeddedCluster(_settings(scratch_dir)).start()
    assert "CITYGRID_DATA_DIR" in str(caught.value)
    assert (scratch_dir / "postgres" / "notes.txt").exists()


@pytest.mark.skipif(not IS_ROOT, reason="only root can make a folder owned by someone else")
def test_folder_owned_by_someone_else_is_refused(scratch_dir: Path) -> None:
    (scratch_dir / "postgres").mkdir(mode=0o700)
    (scratch_dir / "postgres" / "PG_VERSION").write_text("15\n")  # owned by root, not by postgres
    with pytest.raises(ClusterError, match=r"chown -R postgres: "):
        EmbeddedCluster(_settings(scratch_dir)).start()


@pytest.mark.skipif(not IS_ROOT, reason="the server only runs as another user when CityGrid runs as root")
def test_folder_the_postgres_user_cannot_enter_is_refused() -> None:
    closed = Path(tempfile.mkdtemp(prefix="citygrid-closed-", dir="/tmp"))  # mode 0700, owner root
    try:
        with pytest.raises(ClusterError, match=rf"cannot enter {closed}.*chmod o\+x {closed}"):
            EmbeddedCluster(_settings(closed / "var")).start()
    finally:
        shutil.rmtree(closed, ignore_errors=True)


def test_taken_explicit_port_is_refused(scratch_dir: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(ClusterError, match=f"Port {port} \\(CITYGRID_EMBEDDED_PORT\\)"):
            EmbeddedCluster(_settings(scratch_dir, embedded_port=port)).start()
    assert not (scratch_dir / "postgres" / "PG_VERSION").exists()
