"""Database engines for the three roles: writer (ETL, migrations, accounts), reader (dashboards), public.

The URLs come from the settings; with no DATABASE_URL, from the embedded cluster, which is started on
first use.  When only a writer URL is given, the read engines connect with it and ``SET ROLE`` to the read
roles, so a dashboard's connection holds the read role's rights and no more.  Read engines also make
every transaction read-only and bound statement time, so a runaway query cannot hold a page or a pool.
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from geodata.codes import PUBLIC_ROLE, READER_ROLE
from geodata.errors import StoreError
from geodata.settings import Settings, get_settings

Role = Literal["writer", "reader", "public"]

_STATEMENT_TIMEOUT_MS: dict[Role, int] = {"writer": 0, "reader": 30_000, "public": 5_000}


def normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs as people write them; CityGrid talks psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def resolve_url(role: Role, settings: Settings | None = None) -> tuple[str, str | None]:
    """The URL to connect with for ``role`` and the role to SET after connecting (None: none needed)."""
    settings = settings or get_settings()
    if settings.embedded:
        from geodata.cluster import EmbeddedCluster

        info = EmbeddedCluster(settings).ensure_running()
        return normalise_url(info.url(role)), None
    assert settings.database_url is not None
    if role == "writer":
        return normalise_url(settings.database_url), None
    if role == "reader":
        if settings.read_database_url:
            return normalise_url(settings.read_database_url), None
        return normalise_url(settings.database_url), READER_ROLE
    if settings.public_database_url:
        return normalise_url(settings.public_database_url), None
    base = settings.read_database_url or settings.database_url
    return normalise_url(base), PUBLIC_ROLE


def build_engine(url: str, role: Role, set_role: str | None = None, pool_size: int = 5) -> Engine:
    """An engine for ``url`` that behaves as ``role`` on every connection it hands out."""
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"application_name": f"citygrid-{role}", "connect_timeout": 5},
    )
    timeout = _STATEMENT_TIMEOUT_MS[role]

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        with dbapi_connection.cursor() as cursor:
            if set_role:
                cursor.execute(f'SET SESSION ROLE "{set_role}"')  # a constant of geodata.codes, never input
            if role != "writer":
                cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            if timeout:
                cursor.execute(f"SET statement_timeout = {int(timeout)}")
            cursor.execute("SET TIME ZONE 'Asia/Shanghai'")
        dbapi_connection.commit()

    return engine


_ENGINES: dict[Role, Engine] = {}


def engine_for(role: Role) -> Engine:
    """The process-wide engine of ``role``, created on first use."""
    if role not in _ENGINES:
        url, set_role = resolve_url(role)
        _ENGINES[role] = build_engine(url, role, set_role)
    return _ENGINES[role]


def writer_engine() -> Engine:
    """The ETL's and the accounts' engine (the only one that may write)."""
    return engine_for("writer")


def reader_engine() -> Engine:
    """The dashboards' read-only engine."""
    return engine_for("reader")


def public_engine() -> Engine:
    """The public app's engine: public views only."""
    return engine_for("public")


def dispose_all() -> None:
    """Close every pool (after a fork, before stopping the embedded cluster, between test databases)."""
    for engine in _ENGINES.values():
        engine.dispose()
    _ENGINES.clear()


def check_connection(engine: Engine) -> str:
    """Connect once and return the server version, or raise StoreError saying how to fix it."""
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar_one())
    except OperationalError as exc:
        url = engine.url
        raise StoreError(
            f"Cannot reach the database at {url.host}:{url.port}/{url.database} as {url.username}: "
            f"{str(exc.orig).strip().splitlines()[0] if exc.orig else exc}. Check that the server runs and "
            "DATABASE_URL is right, or unset DATABASE_URL to use CityGrid's embedded PostGIS."
        ) from None
