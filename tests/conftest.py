"""Fixtures: a real PostGIS database for the suite, migrated to head, with engines for the three roles.

The server is TEST_DATABASE_URL when set (a superuser URL, e.g. CI's service), else CityGrid's own
embedded cluster (started if needed).  Each suite run makes a database of its own and drops it at the end,
so runs never see each other's rows.  No mock of the database anywhere.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url

from geodata import engines, migrate
from geodata.codes import PUBLIC_ROLE, READER_ROLE
from geodata.settings import Settings, get_settings


@dataclass(frozen=True)
class SuiteStore:
    """The suite's database: its name and an engine per role."""

    name: str
    writer: Engine
    reader: Engine
    public: Engine
    writer_url: str
    reader_url: str | None
    public_url: str | None
    admin_url: str

    def environment(self) -> dict[str, str]:
        """Environment variables that point CityGrid's own settings at this database."""
        env = {"DATABASE_URL": self.writer_url}
        if self.reader_url:
            env["DATABASE_READ_URL"] = self.reader_url
        if self.public_url:
            env["PUBLIC_DATABASE_URL"] = self.public_url
        return env


def _server_admin_url() -> tuple[str, dict[str, str] | None]:
    """An admin URL to the server, and per-role URL templates when the server has real login roles."""
    explicit = os.environ.get("TEST_DATABASE_URL")
    if explicit:
        return explicit, None
    from geodata.cluster import EmbeddedCluster

    info = EmbeddedCluster(get_settings()).ensure_running()
    return info.url("admin", database="postgres"), {
        role: info.url(role, database="{db}") for role in ("writer", "reader", "public")
    }


@pytest.fixture(scope="session")
def store() -> Iterator[SuiteStore]:
    """A freshly migrated database for this test session, dropped afterwards."""
    admin_url, role_urls = _server_admin_url()
    name = f"citygrid_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(engines.normalise_url(admin_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        owner = "citygrid" if role_urls else make_url(engines.normalise_url(admin_url)).username
        migrate.create_database(conn.connection.driver_connection, name, owner)
    try:
        if role_urls:
            writer_url = role_urls["writer"].replace("%7Bdb%7D", name).replace("{db}", name)
            reader_url = role_urls["reader"].replace("%7Bdb%7D", name).replace("{db}", name)
            public_url = role_urls["public"].replace("%7Bdb%7D", name).replace("{db}", name)
            with create_engine(
                engines.normalise_url(admin_url.rsplit("/", 1)[0] + f"/{name}"), isolation_level="AUTOCOMMIT"
            ).connect() as conn:
                conn.execute(text("CREATE EXTENSION IF NOT EXISTS postgis"))
            writer_url, reader_url, public_url = (
                engines.normalise_url(u) for u in (writer_url, reader_url, public_url)
            )
            writer = engines.build_engine(writer_url, "writer")
            reader = engines.build_engine(reader_url, "reader")
            public = engines.build_engine(public_url, "public")
        else:
            writer_url = engines.normalise_url(make_url(admin_url).set(database=name).render_as_string(False))
            reader_url = public_url = None
            writer = engines.build_engine(writer_url, "writer")
            reader = engines.build_engine(writer_url, "reader", set_role=READER_ROLE)
            public = engines.build_engine(writer_url, "public", set_role=PUBLIC_ROLE)
        migrate.upgrade(writer)
        yield SuiteStore(name, writer, reader, public, writer_url, reader_url, public_url,
                         engines.normalise_url(admin_url))
        for engine in (writer, reader, public):
            engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture()
def conn(store: SuiteStore) -> Iterator[Connection]:
    """A writer connection inside a transaction that is rolled back after the test."""
    with store.writer.connect() as connection:
        transaction = connection.begin()
        try:
            yield connection
        finally:
            transaction.rollback()


@pytest.fixture()
def settings(tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    """Settings for a test that must not touch the checkout's data folder."""
    return Settings(data_dir=tmp_path)


@contextmanager
def pointed_at(target: SuiteStore, data_dir: Path) -> Iterator[Settings]:
    """CityGrid's process-wide settings and engines on ``target``'s database (and ``data_dir``), then back."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in target.environment().items():
            patch.setenv(key, value)
        patch.setenv("CITYGRID_DATA_DIR", str(data_dir))
        get_settings.cache_clear()
        engines.dispose_all()
        try:
            yield get_settings()
        finally:
            engines.dispose_all()
            get_settings.cache_clear()
    engines.dispose_all()
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def app_environment(store: SuiteStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Point CityGrid's process-wide settings and engines at the suite's database for one module."""
    with pointed_at(store, tmp_path_factory.mktemp("app-data")) as settings:
        yield settings


@contextmanager
def separate_database(store: SuiteStore, prefix: str) -> Iterator[Engine]:
    """A second migrated database beside the suite's, for a test that replaces a whole city; dropped after."""
    with migrate.temporary_database(store.admin_url, store.writer_url, prefix) as engine:
        yield engine


#: The demo city every page test reads: the quick start's city, generated for a fixed year.
DEMO_SEED = 20251125
DEMO_REFERENCE = date(2026, 10, 1)  # the generated year is 2025-10-01 .. 2026-09-30


@dataclass(frozen=True)
class DemoCity:
    """The demo city loaded once per test session into a database of its own (read it, do not change it)."""

    store: SuiteStore
    report: Any  # etl.demo.DemoReport
    settings: Settings


def _sibling_store(store: SuiteStore, name: str, writer: Engine) -> SuiteStore:
    """Engines for the three roles on another database of the suite's server."""
    def swap(url: str) -> str:
        return make_url(url).set(database=name).render_as_string(hide_password=False)

    writer_url = swap(store.writer_url)
    if store.reader_url and store.public_url:
        reader_url, public_url = swap(store.reader_url), swap(store.public_url)
        reader = engines.build_engine(reader_url, "reader")
        public = engines.build_engine(public_url, "public")
    else:
        reader_url = public_url = None
        reader = engines.build_engine(writer_url, "reader", set_role=READER_ROLE)
        public = engines.build_engine(writer_url, "public", set_role=PUBLIC_ROLE)
    return SuiteStore(name, writer, reader, public, writer_url, reader_url, public_url, store.admin_url)


@pytest.fixture(scope="session")
def demo_city(store: SuiteStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoCity]:
    """The demo city (about 100,000 cases) generated and loaded through the ETL once for the whole session."""
    from etl.demo import build_demo

    settings = Settings(data_dir=tmp_path_factory.mktemp("demo-data"))
    with migrate.temporary_database(store.admin_url, store.writer_url, "citygrid_demo") as engine:
        demo_store = _sibling_store(store, engine.url.database or "", engine)
        try:
            report = build_demo(engine, "demo", settings.data_dir / "demo" / "demo", settings, seed=DEMO_SEED,
                                reference_date=DEMO_REFERENCE)
            yield DemoCity(demo_store, report, settings)
        finally:
            demo_store.reader.dispose()
            demo_store.public.dispose()


@pytest.fixture(scope="module")
def app_env_demo(demo_city: DemoCity, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings and engines on the session's demo city for one module (the planner pages' tests); the data
    folder (facts cache) is the module's own."""
    with pointed_at(demo_city.store, tmp_path_factory.mktemp("planner-data")) as settings:
        yield settings
