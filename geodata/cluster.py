"""CityGrid's embedded private PostgreSQL + PostGIS cluster, used when ``DATABASE_URL`` is unset.

A command centre's box often has no DBA and no database server: CityGrid then runs a cluster of its
own, with the distribution's PostgreSQL binaries (``/usr/lib/postgresql/<ver>/bin``), in
``settings.data_dir / "postgres"``.  It is private to CityGrid:

* it listens on 127.0.0.1 only, on a port of its own (chosen free at first start, or
  ``CITYGRID_EMBEDDED_PORT``), and puts its unix socket inside the data folder, so it never clashes
  with a system cluster on 5432 or in ``/var/run/postgresql``;
* every login needs a password (scram-sha-256); the passwords are generated at first start and kept
  in ``settings.data_dir / "credentials.json"`` (mode 0600, owned by whoever runs CityGrid);
* it has four login roles: ``citygrid_admin`` (superuser, for set-up only), ``citygrid`` (the
  writer: owner of database ``citygrid``, may create databases for tests), ``citygrid_reader`` and
  ``citygrid_public`` (nothing but LOGIN: the schema migrations grant what they may read).

PostgreSQL refuses to run as root.  When CityGrid runs as root, the server runs as the ``postgres``
system user (which the Debian packages create), the data folder belongs to that user, and every
folder above it must be enterable by it.  Otherwise the server runs as the current user.

Every failure is a :class:`ClusterError` whose message says what to do about it.

Typical use::

    info = EmbeddedCluster(get_settings()).ensure_running()
    engine = create_engine(info.url("writer"))
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import pwd
import random
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Concatenate, Literal, ParamSpec, TypeVar, get_args
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from geodata.errors import CityGridError
from geodata.settings import Settings

__all__ = [
    "DATABASE",
    "ROLE_USERS",
    "ClusterError",
    "ClusterInfo",
    "ClusterStatus",
    "EmbeddedCluster",
    "Role",
    "bootstrap",
]

log = logging.getLogger(__name__)

Role = Literal["admin", "writer", "reader", "public"]

#: The PostgreSQL user behind each role name of :meth:`ClusterInfo.url`.
ROLE_USERS: Mapping[str, str] = MappingProxyType(
    {
        "admin": "citygrid_admin",
        "writer": "citygrid",
        "reader": "citygrid_reader",
        "public": "citygrid_public",
    }
)
#: The application database, owned by the writer.
DATABASE = "citygrid"
#: The only address the cluster listens on.
HOST = "127.0.0.1"

PG_ROOT = Path("/usr/lib/postgresql")
SYSTEM_USER = "postgres"
_CONF_NAME = "citygrid.conf"
_SETUP_MARK = "citygrid_setup_done"
_LOG_NAME = "postgres.log"
_CREDENTIALS_NAME = "credentials.json"
_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes with its NUL
#: Debian/Ubuntu release -> PostgreSQL major of its ``postgresql`` package, for install hints only.
_DISTRO_PG = {"11": "13", "12": "15", "13": "17", "22.04": "14", "24.04": "16", "24.10": "16", "25.04": "17"}


class ClusterError(CityGridError):
    """The embedded cluster cannot be set up, started or stopped; the message says how to fix it."""


# --------------------------------------------------------------------------------------------------
# Public value types
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    """A login of the cluster."""

    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class ClusterInfo:
    """Where the running cluster is and how to log in to it.

    Attributes
    ----------
    port
        TCP port on 127.0.0.1.
    data_dir
        The PostgreSQL data folder (``settings.data_dir / "postgres"``).
    credentials
        Login per role (``admin``, ``writer``, ``reader``, ``public``).  Kept out of ``repr`` so that a
        logged ``ClusterInfo`` never leaks a password.
    """

    port: int
    data_dir: Path
    credentials: Mapping[str, Credential] = field(repr=False, hash=False)

    def url(self, role: Role, database: str = DATABASE) -> str:
        """SQLAlchemy URL for ``role`` on ``database``.

        Parameters
        ----------
        role
            ``"admin"`` (superuser; set-up only), ``"writer"`` (ETL, migrations, accounts),
            ``"reader"`` (dashboards) or ``"public"`` (public views).
        database
            Database name; ``"citygrid"`` unless a test made its own.

        Returns
        -------
        str
            ``postgresql+psycopg://user:password@127.0.0.1:port/database``, user, password and database
            URL-quoted so that any character in them survives.
        """
        if role not in self.credentials:
            raise ValueError(f"unknown role {role!r}; expected one of {', '.join(get_args(Role))}")
        cred = self.credentials[role]
        return (
            f"postgresql+psycopg://{quote(cred.user, safe='')}:{quote(cred.password, safe='')}"
            f"@{HOST}:{self.port}/{quote(database, safe='')}"
        )


@dataclass(frozen=True)
class ClusterStatus:
    """What :meth:`EmbeddedCluster.status` found, without changing anything.

    Attributes
    ----------
    initialised
        The data folder holds a PostgreSQL cluster (``PG_VERSION`` exists).
    running
        Its postmaster is alive (checked against the process, not just ``postmaster.pid``).
    port
        The port it listens on when running, else the port kept in its configuration (None before
        the first start).
    pid
        The postmaster's process id when running.
    data_dir
        The PostgreSQL data folder.
    version
        PostgreSQL major version of the cluster (``PG_VERSION``), when initialised.
    log_file
        The server log (``settings.data_dir / "postgres.log"``).
    """

    initialised: bool
    running: bool
    port: int | None
    pid: int | None
    data_dir: Path
    version: str | None = None
    log_file: Path | None = None


# --------------------------------------------------------------------------------------------------
# Binaries
# --------------------------------------------------------------------------------------------------


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split("."))


def _installed_versions() -> list[Path]:
    """``/usr/lib/postgresql/<ver>`` folders holding a server, newest first."""
    if not PG_ROOT.is_dir():
        return []
    found = [
        d
        for d in PG_ROOT.iterdir()
        if re.fullmatch(r"\d+(\.\d+)?", d.name) and (d / "bin" / "postgres").is_file() and (d / "bin" / "initdb").is_file()
    ]
    return sorted(found, key=lambda d: _version_key(d.name), reverse=True)


def _sharedir(version_dir: Path) -> Path:
    """The version's share folder: ``pg_config --sharedir``, else the Debian default."""
    pg_config = version_dir / "bin" / "pg_config"
    if pg_config.is_file():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [str(pg_config), "--sharedir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out:
                return Path(out)
    return Path("/usr/share/postgresql") / version_dir.name


def _has_postgis(version_dir: Path) -> bool:
    return (_sharedir(version_dir) / "extension" / "postgis.control").is_file()


def _find_bin_dir(major: str | None = None) -> Path | None:
    """Bin folder of the newest PostgreSQL with PostGIS (of version ``major`` when given), or None."""
    for version_dir in _installed_versions():
        if major is not None and version_dir.name != major:
            continue
        if _has_postgis(version_dir):
            return version_dir / "bin"
    return None


def _os_release() -> dict[str, str]:
    values: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip().strip('"')
    return values


def _is_debian_like() -> bool:
    osr = _os_release()
    ids = {osr.get("ID", ""), *osr.get("ID_LIKE", "").split()}
    return bool(ids & {"debian", "ubuntu"}) or Path("/etc/debian_version").exists()


def _apt_default_version() -> str | None:
    """Major version the ``postgresql`` package of the configured apt sources installs."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["apt-cache", "depends", "postgresql"], capture_output=True, text=True, timeout=60, check=False
        ).stdout
        match = re.search(r"Depends:\s*postgresql-(\d+)\b", out)
        if match:
            return match.group(1)
    return None


def _packages(major: str | None) -> tuple[list[str], str]:
    """Packages to install, and the major version they bring (``<ver>`` when unknown)."""
    if major is not None:
        return [f"postgresql-{major}", f"postgresql-{major}-postgis-3"], major
    # A server without PostGIS is already there: only PostGIS for it is missing.
    installed = _installed_versions()
    if installed:
        ver = installed[0].name
        return [f"postgresql-{ver}-postgis-3"], ver
    ver = _apt_default_version() or _DISTRO_PG.get(_os_release().get("VERSION_ID", "")) or "<ver>"
    return ["postgresql", f"postgresql-{ver}-postgis-3"], ver


def _missing_message(major: str | None, extra: str = "") -> str:
    packages, _ver = _packages(major)
    what = f"PostgreSQL {major} with PostGIS 3" if major else "PostgreSQL with PostGIS 3"
    lines = [f"{what} not found under {PG_ROOT}/<ver>/bin (the embedded cluster needs it)."]
    if extra:
        lines.append(extra)
    if _is_debian_like():
        sudo = "" if os.geteuid() == 0 else "sudo "
        lines.append(
            f"Install it: {sudo}apt-get update && {sudo}apt-get install -y {' '.join(packages)}"
            + ("" if os.geteuid() == 0 else "  (or run CityGrid once as root: it installs them itself)")
        )
    else:
        lines.append(
            f"Install {' and '.join(packages)} (or your system's equivalent, so that "
            f"{PG_ROOT}/<ver>/bin and the postgis extension exist)."
        )
    lines.append("Or set DATABASE_URL to an existing PostGIS database instead of the embedded cluster.")
    return "\n".join(lines)


def _apt(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        return subprocess.run(
            ["apt-get", *args], capture_output=True, text=True, env=env, timeout=1800, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ClusterError(f"apt-get {' '.join(args)} failed to run: {exc}") from exc


def _apt_install(major: str | None) -> None:
    """Install the server and PostGIS with apt-get, refreshing the package lists when needed."""
    packages, ver = _packages(major)
    if ver == "<ver>":
        log.info("apt-get update (to learn which PostgreSQL this distribution ships)")
        _apt(["update"])
        packages, ver = _packages(major)
        if ver == "<ver>":
            raise ClusterError(_missing_message(major, "apt-cache knows no 'postgresql' package."))
    cmd = ["install", "-y", "--no-install-recommends", *packages]
    log.warning("installing %s with apt-get for the embedded cluster", " ".join(packages))
    result = _apt(cmd)
    if result.returncode != 0:
        log.info("apt-get install failed; running apt-get update and trying again")
        _apt(["update"])
        result = _apt(cmd)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise ClusterError(f"apt-get install {' '.join(packages)} failed:\n{tail}\n\n" + _missing_message(major))


def bootstrap(*, major: str | None = None) -> Path:
    """Locate (and, as root on Debian/Ubuntu, install) PostgreSQL with PostGIS; return its bin folder.

    The embedded cluster must run on binaries the distribution maintains (security updates come with
    the system's), so nothing is downloaded from elsewhere: the newest ``/usr/lib/postgresql/<ver>``
    whose share folder has ``extension/postgis.control`` is used.

    Parameters
    ----------
    major
        Require this major version (an existing cluster can only be run by its own major version).

    Returns
    -------
    Path
        E.g. ``/usr/lib/postgresql/15/bin``.

    Raises
    ------
    ClusterError
        Not found and not installable here; the message gives the exact install command.

    Notes
    -----
    Installing the ``postgresql`` package on Debian also creates and starts the system's own
    cluster ("main", port 5432); CityGrid does not use or touch it.
    """
    major = None if major is None else str(major)
    found = _find_bin_dir(major)
    if found is not None:
        return found
    if os.geteuid() == 0 and _is_debian_like() and shutil.which("apt-get"):
        _apt_install(major)
        found = _find_bin_dir(major)
        if found is not None:
            return found
        raise ClusterError(_missing_message(major, "apt-get install succeeded but the files are not there."))
    raise ClusterError(_missing_message(major))


# --------------------------------------------------------------------------------------------------
# Helpers: accounts, ports, files, processes
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Account:
    """The system user the server runs as, and how to run a command as it."""

    name: str
    uid: int
    gid: int
    prefix: tuple[str, ...]

    @property
    def switching(self) -> bool:
        return bool(self.prefix)

    def groups(self) -> set[int]:
        try:
            return set(os.getgrouplist(self.name, self.gid))
        except (KeyError, OSError):
            return {self.gid}


def _server_account() -> _Account:
    """Root: the ``postgres`` system user (PostgreSQL refuses root).  Anyone else: themselves."""
    euid = os.geteuid()
    if euid != 0:
        try:
            name = pwd.getpwuid(euid).pw_name
        except KeyError:
            name = str(euid)
        return _Account(name, euid, os.getegid(), ())
    try:
        pw = pwd.getpwnam(SYSTEM_USER)
    except KeyError as exc:
        raise ClusterError(
            f"CityGrid runs as root, and PostgreSQL refuses to run as root, so the embedded cluster runs as "
            f"the '{SYSTEM_USER}' system user, which does not exist.  Fix: install the postgresql package "
            f"(it creates the user), or: adduser --system --group --home /var/lib/postgresql {SYSTEM_USER}"
        ) from exc
    if shutil.which("runuser"):
        prefix: tuple[str, ...] = ("runuser", "-u", SYSTEM_USER, "--")
    elif shutil.which("setpriv"):
        prefix = ("setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "--")
    else:
        raise ClusterError(
            "CityGrid runs as root and must start PostgreSQL as the 'postgres' user, but neither runuser nor "
            "setpriv is installed.  Fix: apt-get install util-linux, or run CityGrid as an ordinary user."
        )
    return _Account(SYSTEM_USER, pw.pw_uid, pw.pw_gid, prefix)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _server_env() -> dict[str, str]:
    """The caller's environment without libpq/locale variables that would change what the tools do."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PG", "LC_")) and k not in {"LANG", "LANGUAGE", "PYTHONPATH"}
    }
    env["LC_ALL"] = "C"  # English messages, which start() reads to explain failures
    env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    return env


def _port_free(port: int) -> bool:
    """Whether PostgreSQL could listen on 127.0.0.1:``port`` now (it binds with SO_REUSEADDR too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _pick_port(avoid: set[int] | None = None) -> int:
    """A free port outside the kernel's ephemeral range, so outgoing connections rarely take it later."""
    avoid = {5432, *(avoid or set())}
    low, high = 32768, 60999
    with contextlib.suppress(OSError, ValueError):
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    pool = [p for p in range(15000, 32768) if not low <= p <= high and p not in avoid]
    rng = random.SystemRandom()
    for _ in range(64 if pool else 0):
        port = rng.choice(pool)
        if _port_free(port):
            return port
    for _ in range(16):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
        if port not in avoid:
            return port
    raise ClusterError("no free TCP port on 127.0.0.1; free some ports or set CITYGRID_EMBEDDED_PORT")


def _conf_string(value: str) -> str:
    """A postgresql.conf string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 4 << 30


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _same_dir(a: str | Path, b: str | Path) -> bool:
    try:
        return os.path.realpath(a) == os.path.realpath(b)
    except OSError:
        return False


def _is_postmaster_of(pid: int, pgdata: Path) -> bool:
    """Whether ``pid`` is a live postmaster of ``pgdata``.

    After a crash or a container restart, ``postmaster.pid`` may name a pid that another process has
    since been given (even the system cluster's postmaster).  A postmaster works in its data folder,
    so its ``/proc/<pid>/cwd`` tells; without /proc the pid being alive has to do.
    """
    if not _pid_alive(pid):
        return False
    if not Path("/proc/self/cwd").exists():
        return True
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except (FileNotFoundError, ProcessLookupError):
        return False  # gone, or a zombie
    except PermissionError:
        return False  # another user's process: ours runs as us (or as postgres, which root can read)
    return _same_dir(cwd, pgdata)


def _processes_in(pgdata: Path) -> list[int]:
    """Processes working in ``pgdata`` (a postmaster's backends outlive it for a moment after a crash)."""
    pids = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if _same_dir(os.readlink(f"/proc/{entry.name}/cwd"), pgdata):
                        pids.append(int(entry.name))
    return pids


def _read_pidfile(pgdata: Path) -> tuple[int | None, int | None]:
    """(pid, port) from ``postmaster.pid``, or (None, None)."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None, None
    except PermissionError as exc:
        raise ClusterError(f"cannot read {pgdata / 'postmaster.pid'}: {exc}") from exc
    pid = int(lines[0]) if lines and lines[0].strip().isdigit() else None
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    return pid, port


def _diagnose(text: str, port: int, pgdata: Path) -> str:
    """One line saying what a failed start means and what to do, from the server's own words."""
    low = text.lower()
    if "could not bind" in low or "address already in use" in low:
        return (
            f"Port {port} on 127.0.0.1 is taken by another program.  Free it (see `ss -ltnp 'sport = :{port}'`) "
            "or set CITYGRID_EMBEDDED_PORT to a free port."
        )
    if "lock file" in low and "already exists" in low:
        return (
            f"Another server seems to be using {pgdata} (postmaster.pid).  If `ps` shows no postgres process "
            f"working in that folder, the file is left from a crash: remove {pgdata / 'postmaster.pid'} and start again."
        )
    if "shared memory" in low and ("could not" in low or "in use" in low):
        if "in use" in low:
            return (
                "Processes of a crashed server still hold its shared memory: wait a few seconds (or kill the "
                f"leftover postgres processes working in {pgdata}) and start again."
            )
        return (
            "Not enough memory for the cluster's shared memory: free memory, enlarge /dev/shm (docker "
            "--shm-size), or lower shared_buffers with ALTER SYSTEM SET shared_buffers = '256MB'."
        )
    if "incompatible with server" in low:
        return (
            "The data folder was made by another PostgreSQL major version: install that version's "
            "postgresql-<ver> and postgresql-<ver>-postgis-3 packages, or upgrade the folder with pg_upgrade."
        )
    if "no space left" in low:
        return f"The disk holding {pgdata} is full: free space and start again."
    if "permission denied" in low:
        return (
            f"PostgreSQL may not read or write some file: {pgdata} and everything in it must belong to the "
            "user the server runs as."
        )
    if "did not start in time" in low or "still starting" in low:
        return (
            "The server is still starting (crash recovery after an unclean stop can take a while): wait, "
            "then start again."
        )
    return "See the log lines below."


# --------------------------------------------------------------------------------------------------
# The cluster
# --------------------------------------------------------------------------------------------------

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _explained(
    method: Callable[Concatenate[EmbeddedCluster, _P], _T],
) -> Callable[Concatenate[EmbeddedCluster, _P], _T]:
    """Turn a stray OS or driver error of a public method into a :class:`ClusterError` with a fix."""

    @functools.wraps(method)
    def wrapper(self: EmbeddedCluster, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(self, *args, **kwargs)
        except ClusterError:
            raise
        except OSError as exc:
            me = _user_name(os.geteuid())
            raise ClusterError(
                f"The embedded cluster in {self.root} failed: {exc}.  {self.root} and its files must be "
                f"writable by '{me}' (the user running CityGrid): run CityGrid as their owner, chown them to "
                f"'{me}', or set CITYGRID_DATA_DIR to a folder of its own."
            ) from exc
        except psycopg.Error as exc:
            raise ClusterError(
                f"The embedded cluster in {self.root} failed: {exc}\n{self._log_tail()}"
            ) from exc

    return wrapper



class EmbeddedCluster:
    """CityGrid's own PostgreSQL + PostGIS cluster in ``settings.data_dir / "postgres"``.

    Every method is safe to call from several processes at once (gunicorn workers, the CLI): changes
    are serialised by a lock file in ``settings.data_dir``.

    Parameters
    ----------
    settings
        Uses ``data_dir`` and ``embedded_port``.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = Path(settings.data_dir).expanduser().resolve()
        #: The PostgreSQL data folder.
        self.pgdata = self.root / "postgres"
        #: The server log; outside the data folder so the invoking user can always read it.
        self.log_file = self.root / _LOG_NAME
        self.credentials_file = self.root / _CREDENTIALS_NAME
        self._conf = self.pgdata / _CONF_NAME

    # ---------------------------------------------------------------------------------- public API

    @_explained
    def status(self) -> ClusterStatus:
        """What state the cluster is in; changes nothing, installs nothing.

        Raises
        ------
        ClusterError
            The data folder exists but cannot be read by this user.
        """
        initialised, running, pid, port, version = False, False, None, None, None
        if self.pgdata.exists():
            self._check_readable()
            version_file = self.pgdata / "PG_VERSION"
            if version_file.is_file():
                initialised = True
                version = version_file.read_text().strip()
            file_pid, file_port = _read_pidfile(self.pgdata)
            if file_pid is not None and _is_postmaster_of(file_pid, self.pgdata):
                running, pid, port = True, file_pid, file_port
            if port is None:
                port = self._kept_port()
        return ClusterStatus(initialised, running, port, pid, self.pgdata, version, self.log_file)

    @_explained
    def start(self, timeout: float = 60.0) -> ClusterInfo:
        """Initialise the cluster if needed, start it if not running, and return how to reach it.

        Idempotent: a running cluster is only checked.  Returns once the server accepts
        connections.

        Parameters
        ----------
        timeout
            Seconds to wait for the server to accept connections.

        Raises
        ------
        ClusterError
            Anything that stops it; the message names the fix and quotes the server log.
        """
        self.status()  # a folder this user cannot use fails here, with the precise fix
        with self._locked():
            current = self.status()
            account = _server_account()
            if current.running:
                creds = self._credentials(create=False)
                port = current.port or self._kept_port()
                if port is None:
                    raise ClusterError(
                        f"A server runs in {self.pgdata} (pid {current.pid}) but neither postmaster.pid nor "
                        f"{self._conf.name} says its port.  Stop it (pg_ctl stop -D {self.pgdata}) and start again."
                    )
                self._wait_accepting(port, creds, time.monotonic() + timeout, log_offset=None)
                if not (self.pgdata / _SETUP_MARK).exists():
                    self._setup(port, creds, account)
                return self._make_info(port, creds)

            self._check_data_folder(current, account)
            self._check_wanted_port()
            bin_dir = bootstrap(major=current.version)
            creds = self._credentials(create=not current.initialised)
            if not current.initialised:
                self._initdb(bin_dir, creds, account)
            port = self._choose_port(account)
            self._clear_stale_pidfile()
            self._prepare_log(account)
            port = self._pg_ctl_start(bin_dir, port, creds, timeout, account)
            if not (self.pgdata / _SETUP_MARK).exists():
                self._setup(port, creds, account)
            log.info("embedded PostGIS cluster running on %s:%s (%s)", HOST, port, self.pgdata)
            return self._make_info(port, creds)

    def ensure_running(self, timeout: float = 60.0) -> ClusterInfo:
        """Same as :meth:`start`; reads better at call sites that just need a database."""
        return self.start(timeout=timeout)

    @_explained
    def stop(self, timeout: float = 60.0) -> None:
        """Stop the server (fast shutdown: sessions are ended, transactions rolled back); idempotent.

        Raises
        ------
        ClusterError
            The server did not stop within ``timeout`` seconds.
        """
        if not self.root.exists() or not self.status().running:
            return
        with self._locked():
            current = self.status()
            if not current.running or current.pid is None:
                return
            bin_dir = _find_bin_dir(current.version)
            if bin_dir is None:  # binaries removed under a running server: signal it as pg_ctl would
                with contextlib.suppress(ProcessLookupError):
                    os.kill(current.pid, signal.SIGINT)
                deadline = time.monotonic() + timeout
                while _is_postmaster_of(current.pid, self.pgdata) and time.monotonic() < deadline:
                    time.sleep(0.1)
            else:
                result = self._run(
                    [bin_dir / "pg_ctl", "stop", "-D", self.pgdata, "-m", "fast", "-w", "-t", str(int(timeout)), "-s"],
                    _server_account(),
                    timeout=timeout + 30,
                )
                if result.returncode == 0:
                    return
            if self.status().running:
                raise ClusterError(
                    f"The embedded cluster (pid {current.pid}) did not stop within {timeout:.0f} s.  Wait and try "
                    f"again, or stop it at once (it recovers at next start): pg_ctl stop -m immediate -D {self.pgdata}\n"
                    f"{self._log_tail()}"
                )

    @_explained
    def info(self) -> ClusterInfo:
        """How to reach the cluster (port and logins), without starting it.

        Raises
        ------
        ClusterError
            The cluster has not been initialised yet (call :meth:`start`), or its credentials are gone.
        """
        current = self.status()
        if not current.initialised or current.port is None:
            raise ClusterError(
                f"The embedded cluster in {self.pgdata} is not initialised yet: start it first "
                "(EmbeddedCluster(settings).start())."
            )
        return self._make_info(current.port, self._credentials(create=False, repair=False))

    # ------------------------------------------------------------------------------ state checks

    def _check_readable(self) -> None:
        try:
            os.listdir(self.pgdata)
        except PermissionError as exc:
            owner = _user_name(self.pgdata.stat().st_uid)
            me = _user_name(os.geteuid())
            raise ClusterError(
                f"The embedded cluster's data folder {self.pgdata} belongs to '{owner}' and user '{me}' cannot "
                f"read it{' (it was made when CityGrid ran as root)' if owner == SYSTEM_USER else ''}.  Run "
                f"CityGrid as the user who made it, or take it over: sudo chown -R {me}: {self.pgdata} "
                f"{self.log_file} {self.credentials_file}"
            ) from exc

    def _check_data_folder(self, current: ClusterStatus, account: _Account) -> None:
        """Refuse folders PostgreSQL would refuse, with the fix spelt out; make missing ones."""
        if self.pgdata.exists():
            if not self.pgdata.is_dir():
                raise ClusterError(f"{self.pgdata} is a file, not a folder: move it away so CityGrid can make its cluster there.")
            owner = self.pgdata.stat().st_uid
            if owner != account.uid:
                raise ClusterError(
                    f"The embedded cluster's data folder {self.pgdata} belongs to '{_user_name(owner)}', but the "
                    f"server runs as '{account.name}'"
                    + (" (CityGrid runs as root, and PostgreSQL refuses root)" if account.switching else "")
                    + f".  Fix: chown -R {account.name}: {self.pgdata}"
                    + ("" if account.switching else f"  (or run CityGrid as '{_user_name(owner)}')")
                )
            if not current.initialised and any(self.pgdata.iterdir()):
                raise ClusterError(
                    f"{self.pgdata} is not empty but holds no PostgreSQL cluster (no PG_VERSION), so CityGrid will "
                    "not initialise a cluster over it.  Move its contents away (or delete them if they are "
                    "leftovers), or set CITYGRID_DATA_DIR to another folder."
                )
        self._make_dirs(account)
        if account.switching:
            self._check_traversable(account)

    def _make_root(self) -> None:
        """Make ``settings.data_dir`` (and missing parents) enterable by all: when CityGrid runs as root,
        the server's user must pass through, whatever the umask says."""
        missing = [p for p in (*reversed(self.root.parents), self.root) if not p.exists()]
        for folder in missing:
            with contextlib.suppress(FileExistsError):
                folder.mkdir()
            folder.chmod(0o755)

    def _make_dirs(self, account: _Account) -> None:
        self._make_root()
        if not self.pgdata.exists():
            self.pgdata.mkdir(mode=0o700)
            os.chown(self.pgdata, account.uid, account.gid)
            self.pgdata.chmod(0o700)

    def _check_traversable(self, account: _Account) -> None:
        """Every folder above the data folder must let the server's user through (checked by mode bits)."""
        groups = account.groups()
        for folder in (self.root, *self.root.parents):
            st = folder.stat()
            if st.st_uid == account.uid:
                ok = bool(st.st_mode & stat.S_IXUSR)
            elif st.st_gid in groups:
                ok = bool(st.st_mode & stat.S_IXGRP)
            else:
                ok = bool(st.st_mode & stat.S_IXOTH)
            if not ok:
                raise ClusterError(
                    f"PostgreSQL runs as '{account.name}' (it refuses root) and cannot enter {folder} "
                    f"(mode {stat.filemode(st.st_mode)}, owner {_user_name(st.st_uid)}), which holds the embedded "
                    f"cluster's data folder {self.pgdata}.  Fix: chmod o+x {folder}  — or set CITYGRID_DATA_DIR "
                    "to a folder it can reach, e.g. /var/lib/citygrid."
                )

    def _kept_port(self) -> int | None:
        try:
            text = self._conf.read_text()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except PermissionError:
            return None
        match = re.search(r"^\s*port\s*=\s*(\d+)", text, re.MULTILINE)
        return int(match.group(1)) if match else None

    def _clear_stale_pidfile(self) -> None:
        """Remove a ``postmaster.pid`` whose pid now belongs to some other process.

        PostgreSQL copes by itself when the pid is gone, but refuses when the pid was reused by another
        process of the same user (common after a container restart).  Status has already shown it is
        not our postmaster; it is only removed when no process works in the data folder any more.
        """
        pid, _port = _read_pidfile(self.pgdata)
        if pid is None or not _pid_alive(pid) or _is_postmaster_of(pid, self.pgdata):
            return
        leftovers = [p for p in _processes_in(self.pgdata) if p != os.getpid()]
        if leftovers:
            raise ClusterError(
                f"{self.pgdata / 'postmaster.pid'} is left from a crash, but processes {leftovers} still work in "
                f"that folder (backends of the crashed server?).  Stop them (kill {' '.join(map(str, leftovers))}) "
                "and start again."
            )
        log.warning("removing stale %s (pid %s now belongs to another process)", self.pgdata / "postmaster.pid", pid)
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
        # The unix socket's lock file names the same pid, and PostgreSQL would refuse it the same way.
        for lock in self.pgdata.glob(".s.PGSQL.*.lock"):
            lock.unlink(missing_ok=True)

    # ------------------------------------------------------------------------------- credentials

    def _credentials(self, *, create: bool, repair: bool = True) -> dict[str, Credential]:
        """Logins from credentials.json; with ``create``, missing ones are generated and saved.

        ``create`` is only for a cluster about to be initialised: an existing cluster's admin
        password cannot be regenerated (it is in the cluster, not here).  With ``repair``, a lost
        writer/reader/public password is regenerated and the next set-up applies it.
        """
        data: dict[str, dict[str, str]] = {}
        if self.credentials_file.exists():
            try:
                raw = json.loads(self.credentials_file.read_text())
                data = {
                    k: v for k, v in raw.get("roles", {}).items() if k in ROLE_USERS and isinstance(v, dict)
                }
            except PermissionError as exc:
                raise ClusterError(
                    f"Cannot read {self.credentials_file}: it belongs to '{_user_name(self.credentials_file.stat().st_uid)}'. "
                    "Run CityGrid as that user, or chown the file to this one."
                ) from exc
            except (ValueError, AttributeError) as exc:
                raise ClusterError(
                    f"{self.credentials_file} is damaged ({exc}).  Restore it from a backup; without it the cluster "
                    f"in {self.pgdata} cannot be logged in to."
                ) from exc
            mode = self.credentials_file.stat().st_mode
            if mode & 0o077:
                log.warning("%s was readable by others; setting mode 0600", self.credentials_file)
                self.credentials_file.chmod(0o600)
        missing = [role for role in ROLE_USERS if role not in data or not data[role].get("password")]
        if missing and not create:
            if "admin" in missing or not repair:
                raise ClusterError(
                    f"The embedded cluster in {self.pgdata} exists but its logins ({self.credentials_file}) are "
                    "missing.  Restore credentials.json from a backup, or — losing the data — delete "
                    f"{self.pgdata} and start again."
                )
            create = True  # other roles can get fresh passwords: set-up will apply them
            (self.pgdata / _SETUP_MARK).unlink(missing_ok=True)
        if missing and create:
            for role in missing:
                data[role] = {"user": ROLE_USERS[role], "password": _new_password()}
            self._save_credentials(data)
        return {role: Credential(ROLE_USERS[role], data[role]["password"]) for role in ROLE_USERS}

    def _save_credentials(self, roles: dict[str, dict[str, str]]) -> None:
        """Write credentials.json atomically, mode 0600, owned by the invoking user."""
        self._make_root()
        body = {
            "note": "Logins of CityGrid's embedded PostgreSQL cluster (geodata/cluster.py). Keep private.",
            "host": HOST,
            "roles": roles,
        }
        fd, tmp = tempfile.mkstemp(prefix=".credentials-", dir=self.root)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(body, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.credentials_file)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _make_info(self, port: int, creds: Mapping[str, Credential]) -> ClusterInfo:
        return ClusterInfo(port=port, data_dir=self.pgdata, credentials=MappingProxyType(dict(creds)))

    # -------------------------------------------------------------------------------- operations

    @contextlib.contextmanager
    def _locked(self, wait: float = 600.0) -> Iterator[None]:
        """Serialise start/stop across processes (two gunicorn workers must not both run initdb)."""
        self._make_root()
        with open(self.root / ".cluster.lock", "a+") as handle:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError as exc:
                    if time.monotonic() > deadline:
                        raise ClusterError(
                            f"Another process has held {self.root / '.cluster.lock'} for {wait:.0f} s while starting "
                            "or stopping the embedded cluster.  Find it (fuser -v that file) and let it finish or end it."
                        ) from exc
                    time.sleep(0.1)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _run(
        self, args: list[str | Path], account: _Account, *, timeout: float, new_session: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool as the server's user; never raises for a non-zero exit."""
        cmd = [*account.prefix, *map(str, args)]
        try:
            return subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                encoding="utf-8",
                errors="replace",
                env=_server_env(),
                cwd="/",
                timeout=timeout,
                # A server started from a terminal must not receive the terminal's Ctrl-C.
                start_new_session=new_session,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(f"{Path(str(args[0])).name} did not finish within {timeout:.0f} s.\n{self._log_tail()}") from exc
        except OSError as exc:
            raise ClusterError(f"cannot run {cmd[0]}: {exc}") from exc

    def _write_owned(self, path: Path, text: str, account: _Account) -> None:
        """Write a file in the data folder atomically, owned by the server's user, mode 0600."""
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
        try:
            os.fchmod(fd, 0o600)
            if account.switching:
                os.fchown(fd, account.uid, account.gid)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _initdb(self, bin_dir: Path, creds: Mapping[str, Credential], account: _Account) -> None:
        """Make the cluster: password logins only, UTF-8, superuser citygrid_admin."""
        workdir = Path(tempfile.mkdtemp(prefix=".initdb-", dir=self.root))
        try:
            pwfile = workdir / "pw"
            pwfile.write_text(creds["admin"].password + "\n")
            pwfile.chmod(0o600)
            if account.switching:
                os.chown(workdir, account.uid, account.gid)
                os.chown(pwfile, account.uid, account.gid)
            base: list[str | Path] = [
                bin_dir / "initdb",
                "-D",
                self.pgdata,
                "-U",
                creds["admin"].user,
                f"--pwfile={pwfile}",
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--data-checksums",
            ]
            for locale in ("C.UTF-8", "C"):
                log.info("initdb %s (locale %s)", self.pgdata, locale)
                result = self._run([*base, f"--locale={locale}"], account, timeout=600)
                if result.returncode == 0:
                    break
                output = result.stdout + result.stderr
                if locale != "C" and "locale" in output.lower():
                    log.warning("initdb with locale C.UTF-8 failed; falling back to locale C")
                    self._make_dirs(account)  # initdb empties (or removes) the folder when it fails
                    continue
                raise ClusterError(
                    f"initdb of {self.pgdata} failed.  {_diagnose(output, 0, self.pgdata)}\n{_tail(output)}"
                )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _ensure_include(self) -> None:
        """postgresql.conf must read citygrid.conf (checked each start: a crash may have come between)."""
        main = self.pgdata / "postgresql.conf"
        line = f"include = '{_CONF_NAME}'"
        if line not in main.read_text().splitlines():
            with open(main, "a") as handle:  # appending keeps the file's owner
                handle.write(f"\n# CityGrid's settings (geodata/cluster.py); ALTER SYSTEM still wins.\n{line}\n")

    def _config_text(self, port: int) -> str:
        ram = _memory_bytes()
        shared_mb = max(128, min(1024, ram // 4 >> 20))
        cache_mb = max(512, ram // 2 >> 20)
        socket_dir = str(self.pgdata)
        if len(f"{socket_dir}/.s.PGSQL.{port}") > _SOCKET_PATH_MAX:
            socket_dir = ""  # path too long for a unix socket: TCP on 127.0.0.1 only
        return "\n".join(
            [
                "# Written by CityGrid (geodata/cluster.py) and rewritten when the port has to move.",
                "# To tune, use ALTER SYSTEM (postgresql.auto.conf overrides this file).",
                "listen_addresses = '127.0.0.1'",
                f"port = {port}",
                f"unix_socket_directories = {_conf_string(socket_dir)}",
                "unix_socket_permissions = 0700",
                "password_encryption = 'scram-sha-256'",
                "max_connections = 200",
                f"shared_buffers = {shared_mb}MB",
                f"effective_cache_size = {cache_mb}MB",
                "work_mem = 64MB",
                "maintenance_work_mem = 512MB",
                "max_wal_size = 4GB",
                "min_wal_size = 512MB",
                "checkpoint_timeout = 15min",
                "checkpoint_completion_target = 0.9",
                "synchronous_commit = on",
                "fsync = on",
                "full_page_writes = on",
                "jit = off",
                "random_page_cost = 1.1",
                "effective_io_concurrency = 100",
                "max_parallel_workers_per_gather = 1",
                "lc_messages = 'C'",
                "log_line_prefix = '%m [%p] %q%u@%d '",
                "log_min_duration_statement = 5s",
                "log_lock_waits = on",
                "",
            ]
        )

    def _check_wanted_port(self) -> None:
        """A port the operator chose is never moved: fail (before any initdb) if it is taken."""
        wanted = self.settings.embedded_port
        if wanted is not None and not _port_free(wanted):
            raise ClusterError(
                f"Port {wanted} (CITYGRID_EMBEDDED_PORT) on 127.0.0.1 is taken by another program.  Free it "
                f"(see `ss -ltnp 'sport = :{wanted}'`), or unset CITYGRID_EMBEDDED_PORT and CityGrid picks a "
                "free port itself."
            )

    def _choose_port(self, account: _Account) -> int:
        """The kept port if still free; else a new one, written to the configuration (and said so)."""
        kept = self._kept_port()
        wanted = self.settings.embedded_port
        if wanted is not None:
            self._check_wanted_port()
            port = wanted
        elif kept is not None and _port_free(kept):
            port = kept
        else:
            port = _pick_port()
            if kept is not None:
                log.warning(
                    "port %s of the embedded cluster is taken by another program; moving the cluster to port %s",
                    kept,
                    port,
                )
        if port != kept or not self._conf.exists():
            self._write_owned(self._conf, self._config_text(port), account)
        self._ensure_include()
        return port

    def _prepare_log(self, account: _Account) -> None:
        """The log lives outside the data folder, written by the server's user, readable by ours."""
        self.log_file.touch(exist_ok=True)
        if account.switching:
            os.chown(self.log_file, account.uid, account.gid)
        self.log_file.chmod(0o640)

    def _log_size(self) -> int:
        try:
            return self.log_file.stat().st_size
        except OSError:
            return 0

    def _log_tail(self, offset: int | None = None, lines: int = 25) -> str:
        """The server log's last lines (only those written since ``offset`` when any were)."""
        try:
            with open(self.log_file, "rb") as handle:
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            return f"(no log at {self.log_file})"
        recent = text[offset:] if offset is not None and text[offset:].strip() else text
        return f"Last lines of {self.log_file}:\n{_tail(recent, lines)}"

    def _pg_ctl_start(
        self, bin_dir: Path, port: int, creds: Mapping[str, Credential], timeout: float, account: _Account
    ) -> int:
        """Start the server and wait until it accepts connections; returns the port it listens on."""
        for attempt in range(3):
            offset = self._log_size()
            result = self._run(
                [bin_dir / "pg_ctl", "start", "-D", self.pgdata, "-l", self.log_file, "-w", "-t", str(int(timeout)), "-s"],
                account,
                timeout=timeout + 30,
                new_session=True,
            )
            if result.returncode == 0:
                self._wait_accepting(port, creds, time.monotonic() + timeout, log_offset=offset)
                return port
            try:
                with open(self.log_file, "rb") as handle:
                    handle.seek(offset)
                    new_log = handle.read().decode("utf-8", "replace")
            except OSError:
                new_log = ""
            text = result.stdout + result.stderr + new_log
            low = text.lower()
            port_race = "could not bind" in low or "address already in use" in low
            if port_race and self.settings.embedded_port is None and attempt < 2:
                old, port = port, _pick_port(avoid={port})
                log.warning("port %s was taken as the embedded cluster started; moving it to port %s", old, port)
                self._write_owned(self._conf, self._config_text(port), account)
                continue
            raise ClusterError(
                f"The embedded cluster in {self.pgdata} did not start.  {_diagnose(text, port, self.pgdata)}\n"
                f"{_tail(result.stdout + result.stderr, 5)}\n{self._log_tail(offset)}"
            )
        raise AssertionError("unreachable")

    def _conninfo(self, port: int, cred: Credential, dbname: str) -> str:
        return make_conninfo(
            host=HOST,
            port=port,
            user=cred.user,
            password=cred.password,
            dbname=dbname,
            connect_timeout=5,
            sslmode="disable",
            gssencmode="disable",
            application_name="citygrid-cluster",
        )

    def _wait_accepting(
        self, port: int, creds: Mapping[str, Credential], deadline: float, *, log_offset: int | None
    ) -> None:
        """Poll until the admin can log in; a wrong password fails at once rather than at the deadline."""
        conninfo = self._conninfo(port, creds["admin"], "postgres")
        while True:
            try:
                with psycopg.connect(conninfo) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                message = str(exc)
                if "password authentication failed" in message:
                    raise ClusterError(
                        f"The embedded cluster on port {port} rejects the admin password in {self.credentials_file}: "
                        "the file does not belong to this cluster.  Restore the right credentials.json, or — losing "
                        f"the data — stop the cluster and delete {self.pgdata}."
                    ) from exc
                if time.monotonic() > deadline:
                    raise ClusterError(
                        f"The embedded cluster on port {port} did not accept connections in time ({message.strip()}).  "
                        f"{_diagnose(message, port, self.pgdata)}\n{self._log_tail(log_offset)}"
                    ) from exc
                time.sleep(0.2)

    def _setup(self, port: int, creds: Mapping[str, Credential], account: _Account) -> None:
        """Roles, database ``citygrid`` and PostGIS; idempotent, so an interrupted set-up just reruns."""
        admin = creds["admin"]
        try:
            with psycopg.connect(self._conninfo(port, admin, "template1"), autocommit=True) as conn:
                # In template1 too, so databases that tests create later have PostGIS already.
                conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
            with psycopg.connect(self._conninfo(port, admin, "postgres"), autocommit=True) as conn:
                for role in ("writer", "reader", "public"):
                    cred = creds[role]
                    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [cred.user]).fetchone() is None:
                        conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(cred.user)))
                    # Send the SCRAM verifier, never the password itself (it could end up in a log).
                    verifier = conn.pgconn.encrypt_password(
                        cred.password.encode(), cred.user.encode(), b"scram-sha-256"
                    ).decode()
                    conn.execute(
                        sql.SQL(
                            "ALTER ROLE {} WITH LOGIN NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS {} PASSWORD {}"
                        ).format(
                            sql.Identifier(cred.user),
                            sql.SQL("CREATEDB" if role == "writer" else "NOCREATEDB"),
                            sql.Literal(verifier),
                        )
                    )
                writer = creds["writer"].user
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone() is None:
                    from geodata.migrate import create_database  # UTF-8, LC_COLLATE "C": see there why

                    create_database(conn, DATABASE, writer)
            with psycopg.connect(self._conninfo(port, admin, DATABASE), autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        except psycopg.Error as exc:
            raise ClusterError(
                f"Setting up roles, database '{DATABASE}' and PostGIS in the embedded cluster failed: {exc}.  "
                f"If it says postgis is not available, install postgresql-<ver>-postgis-3.\n{self._log_tail()}"
            ) from exc
        self._write_owned(self.pgdata / _SETUP_MARK, "roles, database citygrid and postgis are set up\n", account)


def _new_password() -> str:
    """URL-safe already; :meth:`ClusterInfo.url` quotes anyway."""
    return secrets.token_urlsafe(24)
