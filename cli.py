"""The ``citygrid`` command: a thin shell over geodata, etl and dashboard (no logic of its own)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from geodata.errors import CityGridError
from geodata.settings import get_settings

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

app = typer.Typer(
    name="citygrid",
    help="CityGrid: GIS command-centre dashboard for digital urban management (数字城管).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(
    help="The embedded PostgreSQL + PostGIS cluster (used when DATABASE_URL is unset).", no_args_is_help=True
)
user_app = typer.Typer(help="Internal users: leaders, planners and administrators.", no_args_is_help=True)
kiosk_app = typer.Typer(
    help="Kiosk tokens: revocable read-only passes for wall displays (big screen only).", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")
app.add_typer(kiosk_app, name="kiosk")
rollups_app = typer.Typer(help="The dashboards' rollups (refreshed by every load; rebuild them by hand here).",
                          no_args_is_help=True)
app.add_typer(rollups_app, name="rollups")

F = TypeVar("F", bound=Callable[..., Any])


def friendly(func: F) -> F:
    """Print CityGrid's own errors as one message naming the fix, and exit 1, instead of a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CityGridError as exc:
            err_console.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


# --- the embedded cluster -------------------------------------------------------------------------------


def _cluster():  # type: ignore[no-untyped-def]
    from geodata.cluster import EmbeddedCluster

    settings = get_settings()
    if not settings.embedded:
        raise CityGridError("DATABASE_URL is set: CityGrid uses that server and runs no cluster of its own.")
    return EmbeddedCluster(settings)


@db_app.command("start")
@friendly
def db_start() -> None:
    """Start the embedded cluster (initialising it on first use, installing PostgreSQL/PostGIS if root)."""
    info = _cluster().start()
    console.print(f"embedded PostGIS running on 127.0.0.1:{info.port}, data in {info.data_dir}")


@db_app.command("stop")
@friendly
def db_stop() -> None:
    """Stop the embedded cluster cleanly (a fast shutdown: sessions end, data is kept)."""
    _cluster().stop()
    console.print("embedded PostGIS stopped")


@db_app.command("status")
@friendly
def db_status() -> None:
    """Say whether the embedded cluster is initialised and running, on which port, and the schema revision."""
    settings = get_settings()
    if not settings.embedded:
        from geodata import engines, migrate

        engine = engines.writer_engine()
        version = engines.check_connection(engine)
        console.print(
            f"external server {engine.url.host}:{engine.url.port} (PostgreSQL {version}), "
            f"schema revision {migrate.current_revision(engine) or 'none'}"
        )
        return
    status = _cluster().status()
    state = "running" if status.running else ("stopped" if status.initialised else "not initialised")
    console.print(f"embedded PostGIS {state}; data folder {status.data_dir}"
                  + (f"; port {status.port}" if status.port else "")
                  + (f"; PostgreSQL {status.version}" if status.version else "")
                  + (f"; log {status.log_file}" if status.log_file else ""))


# --- schema ---------------------------------------------------------------------------------------------


@app.command()
@friendly
def migrate() -> None:
    """Bring the schema to the newest revision and load the shipped code dictionaries (idempotent)."""
    from geodata import dictionaries, engines
    from geodata import migrate as migrations

    engine = engines.writer_engine()
    engines.check_connection(engine)
    revision = migrations.upgrade(engine)
    with engine.begin() as conn:
        counts = dictionaries.load_dictionaries(conn, get_settings().category_edition)
        seconds = _fill_empty_rollups(conn)
    console.print(f"schema at revision {revision}; dictionaries loaded: {counts}")
    if seconds is not None:
        console.print(f"rollups built for the cases already stored ({seconds:.1f} s)")


def _fill_empty_rollups(conn) -> float | None:  # type: ignore[no-untyped-def]
    """A store migrated past 0003 with cases but no rollups yet gets them built once."""
    from sqlalchemy import text

    from geodata import rollups

    has_cases = conn.execute(text("SELECT EXISTS (SELECT 1 FROM core.case_record)")).scalar_one()
    has_rollups = conn.execute(text("SELECT EXISTS (SELECT 1 FROM rollup.refresh_log)")).scalar_one()
    return rollups.refresh_all(conn) if has_cases and not has_rollups else None


@rollups_app.command("refresh")
@friendly
def rollups_refresh() -> None:
    """Rebuild every rollup from the stored cases and assets (loads refresh them already; this repairs)."""
    from etl.store import bump_data_version
    from geodata import engines, rollups

    with engines.writer_engine().begin() as conn:
        seconds = rollups.refresh_all(conn)
        bump_data_version(conn)
    console.print(f"rollups rebuilt in {seconds:.1f} s")


# --- loading data ---------------------------------------------------------------------------------------


@app.command()
@friendly
def load(
    kind: Annotated[str, typer.Argument(help="admin_unit, management_grid, component, camera, case, road or track")],
    paths: Annotated[list[Path], typer.Argument(help="Files to load, each one transaction")],
    crs: Annotated[str | None, typer.Option(help="Source CRS: EPSG:4326, EPSG:4490, EPSG:4548, GCJ02, BD09 ...")] = None,
    mapping: Annotated[str | None, typer.Option(help="Mapping preset name or YAML file")] = None,
    encoding: Annotated[str | None, typer.Option(help="Text encoding (default: detected)")] = None,
    layer: Annotated[str | None, typer.Option(help="Layer of a GeoPackage")] = None,
    sheet: Annotated[str | None, typer.Option(help="Sheet of an XLSX workbook")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit non-zero when any row was rejected")] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Queue behind a running load, or refuse")] = True,
) -> None:
    """Load source files through the ETL; print rows read = stored (new + updated + unchanged) + rejected."""
    from rich.progress import Progress

    from etl.pipeline import LoadOptions, load_source
    from geodata import engines

    engine = engines.writer_engine()
    options = LoadOptions(kind=kind, crs=crs, mapping=mapping, encoding=encoding, layer=layer, sheet=sheet,
                          wait=wait)
    table = Table("run", "source", "read", "new", "updated", "unchanged", "rejected", "seconds")
    rejected = 0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("loading", total=len(paths))
        for path in paths:
            progress.update(task, description=f"loading {path.name}")
            result = load_source(engine, path, options)
            rejected += result.rows_rejected
            table.add_row(str(result.run_id), result.source_name, f"{result.rows_read:,}", f"{result.rows_new:,}",
                          f"{result.rows_updated:,}", f"{result.rows_unchanged:,}", f"{result.rows_rejected:,}",
                          f"{result.seconds:.1f}")
            for note in result.notes:
                console.print(f"[yellow]note[/] {result.source_name}: {note}")
            progress.advance(task)
    console.print(table)
    if rejected:
        console.print(f"{rejected:,} rows rejected, each kept with its reason: `citygrid rejects RUN_ID` lists them")
    if strict and rejected:
        raise typer.Exit(3)


@app.command()
@friendly
def rejects(
    run_id: Annotated[int, typer.Argument(help="The run id the load printed")],
    limit: Annotated[int, typer.Option(min=1, max=100000)] = 50,
) -> None:
    """List a run's rejected rows with their row numbers and reasons."""
    from sqlalchemy import text

    from geodata import engines

    table = Table("row", "field", "reason")
    with engines.writer_engine().connect() as conn:
        for row_number, field, reason in conn.execute(
            text("SELECT row_number, field, reason FROM private.rejected_row WHERE run_id = :run"
                 " ORDER BY row_number LIMIT :limit"),
            {"run": run_id, "limit": limit},
        ):
            table.add_row(str(row_number), field or "", reason)
    console.print(table)


@app.command()
@friendly
def demo(
    size: Annotated[str, typer.Option(
        "--size", help="demo: the quick start (~100,000 cases, under a minute); city: benchmark scale "
        "(10,000,000 cases, 20,000+ grids, 1,000,000 components, 10,000 cameras)")] = "demo",
    seed: Annotated[int, typer.Option(help="Generator seed: the same seed gives the same files")] = 20251125,
    regenerate: Annotated[bool, typer.Option(
        "--regenerate", help="Generate the files again even if a set of this size and seed exists")] = False,
    if_empty: Annotated[bool, typer.Option(
        "--if-empty", help="Do nothing when the store already holds cases (the quick start's second run)")] = False,
) -> None:
    """Generate the demo city (张店区 + 临淄区) as a command centre's source files and load them through the ETL."""
    from rich.progress import Progress

    from etl.demo import build_demo
    from geodata import engines
    from geodata import migrate as migrations

    if size not in ("demo", "city"):
        raise CityGridError(f"--size must be demo or city, not {size!r}")
    settings = get_settings()
    engine = engines.writer_engine()
    engines.check_connection(engine)
    if migrations.current_revision(engine) != migrations.head_revision():
        raise CityGridError("The schema is not at the newest revision: run `citygrid migrate` first.")
    if if_empty:
        from sqlalchemy import text

        with engine.connect() as conn:
            if conn.execute(text("SELECT EXISTS (SELECT 1 FROM core.case_record)")).scalar_one():
                console.print("the store already holds cases: the demo city is not loaded again")
                return
    out_dir = settings.data_dir / "demo" / size
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("demo city", total=None)

        def report(message: str, done: int, total: int) -> None:
            progress.update(task, description=message, completed=done, total=total or None)

        result = build_demo(engine, size, out_dir, settings, seed=seed, progress=report,  # type: ignore[arg-type]
                            regenerate=regenerate)
    table = Table("run", "source", "read", "new", "updated", "unchanged", "rejected", "seconds")
    for run, entry in zip(result.results, result.manifest["files"], strict=True):
        source = f"{run.source_name}:{entry['layer']}" if entry.get("layer") else run.source_name
        table.add_row(str(run.run_id), source, f"{run.rows_read:,}", f"{run.rows_new:,}", f"{run.rows_updated:,}",
                      f"{run.rows_unchanged:,}", f"{run.rows_rejected:,}", f"{run.seconds:.1f}")
    console.print(table)
    counts = result.manifest["counts"]
    console.print(
        f"{'generated' if result.generated else 'reused'} {out_dir} (seed {seed}, year to "
        f"{result.manifest['reference_date']}): {counts['grids']:,} grids, {counts['components']:,} components, "
        f"{counts['cameras']:,} cameras, {counts['cases']:,} cases + {counts['case_updates']:,} updates; "
        f"{result.rows_read:,} rows read, {result.rows_rejected:,} rejected, {result.load_seconds:.0f} s")
    if result.rows_rejected:
        console.print("rejected rows are kept with their reasons: `citygrid rejects RUN_ID` lists them")


# --- figures --------------------------------------------------------------------------------------------


@app.command()
@friendly
def kpi(
    date_from: Annotated[datetime, typer.Option("--from", formats=["%Y-%m-%d"], help="First day (YYYY-MM-DD)")],
    date_to: Annotated[datetime, typer.Option("--to", formats=["%Y-%m-%d"], help="Last day, inclusive")],
    area: Annotated[str | None, typer.Option(help="Admin code: district, street, community or grid")] = None,
    exclude_extended: Annotated[bool, typer.Option(help="Leave extended cases out of 应结案数")] = False,
) -> None:
    """Print the period's counts and every standard rate as one JSON object (the pages show the same)."""
    from geodata import engines
    from geodata.kpi import count_cases, kpi_report

    counts = count_cases(engines.reader_engine(), date_from.date(), date_to.date(), area)
    report = {"from": date_from.date().isoformat(), "to": date_to.date().isoformat(), "area": area,
              **kpi_report(counts, exclude_extended)}
    print(json.dumps(report, ensure_ascii=False, indent=2))


# --- users and kiosk tokens -----------------------------------------------------------------------------


@user_app.command("add")
@friendly
def user_add(
    username: Annotated[str, typer.Argument(help="Login name: 3-64 of a-z 0-9 _ . -")],
    role: Annotated[str, typer.Option(help="leader, planner or administrator")] = "planner",
    display_name: Annotated[str, typer.Option(help="Name shown in the dashboard")] = "",
    password: Annotated[str | None, typer.Option(help="Omit to be prompted (never echoed)")] = None,
) -> None:
    """Add an internal user; the password is stored only as an Argon2id hash."""
    from geodata import accounts, engines

    if password is None:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    engine = engines.writer_engine()
    accounts.add_user(engine, username, password, role, display_name, actor="cli")
    console.print(f"user {username} added as {role}")


@user_app.command("ensure-admin")
@friendly
def user_ensure_admin(
    username: Annotated[str, typer.Option(help="Login name of the first administrator")] = "admin",
) -> None:
    """Create a first administrator with a random password, printed once, unless one exists already."""
    import secrets

    from geodata import accounts, engines

    engine = engines.writer_engine()
    if any(user.role == "administrator" and not user.disabled for user in accounts.list_users(engine)):
        console.print("an administrator exists already; nothing to do")
        return
    password = secrets.token_urlsafe(12)
    accounts.add_user(engine, username, password, "administrator", "Administrator", actor="cli")
    console.print(f"first administrator created — log in as [bold]{username}[/] with password "
                  f"[bold]{password}[/] (shown once; change it with `citygrid user passwd {username}`)")


@user_app.command("passwd")
@friendly
def user_passwd(username: str) -> None:
    """Set a user's password (prompted, never echoed); unlocks the account."""
    from geodata import accounts, engines

    password = typer.prompt("new password", hide_input=True, confirmation_prompt=True)
    engine = engines.writer_engine()
    accounts.set_password(engine, username, password, actor="cli")
    console.print(f"password of {username} changed")


@user_app.command("list")
@friendly
def user_list() -> None:
    """List internal users with their role, state and last login."""
    from geodata import accounts, engines

    table = Table("username", "role", "display name", "disabled", "locked until", "last login")
    for user in accounts.list_users(engines.writer_engine()):
        table.add_row(
            user.username,
            user.role,
            user.display_name,
            str(user.disabled),
            str(user.locked_until or ""),
            str(user.last_login_at or ""),
        )
    console.print(table)


@user_app.command("disable")
@friendly
def user_disable(username: str) -> None:
    """Disable a user: they can no longer log in (their audit history stays)."""
    from geodata import accounts, engines

    engine = engines.writer_engine()
    accounts.disable_user(engine, username, actor="cli")
    console.print(f"user {username} disabled")


@kiosk_app.command("issue")
@friendly
def kiosk_issue(
    label: Annotated[str, typer.Argument(help="Where the display hangs, e.g. 'command centre wall'")],
    created_by: Annotated[str, typer.Option(help="The administrator issuing it")],
) -> None:
    """Issue a kiosk token and print the URL a wall display opens (shown once; only its hash is kept)."""
    from geodata import accounts, engines

    engine = engines.writer_engine()
    token = accounts.issue_kiosk_token(engine, label, created_by)
    settings = get_settings()
    console.print(
        f"kiosk URL (keep it safe, it is shown once):\n  http://{settings.host}:{settings.port}/kiosk/{token}"
    )


@kiosk_app.command("list")
@friendly
def kiosk_list() -> None:
    """List kiosk tokens (never the tokens themselves)."""
    from geodata import accounts, engines

    table = Table("id", "label", "created by", "created", "revoked", "last used")
    for row in accounts.list_kiosk_tokens(engines.writer_engine()):
        table.add_row(
            str(row.token_id),
            row.label,
            row.created_by,
            str(row.created_at),
            str(row.revoked_at or ""),
            str(row.last_used_at or ""),
        )
    console.print(table)


@kiosk_app.command("revoke")
@friendly
def kiosk_revoke(token_id: int) -> None:
    """Revoke a kiosk token: the display it opened is logged out at its next refresh."""
    from geodata import accounts, engines

    engine = engines.writer_engine()
    accounts.revoke_kiosk_token(engine, token_id, actor="cli")
    console.print(f"kiosk token {token_id} revoked")


# --- serving --------------------------------------------------------------------------------------------


@app.command()
@friendly
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default: settings)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8050 internal, 8051 public)")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="gunicorn worker processes")] = 2,
    dev: Annotated[bool, typer.Option("--dev", help="Flask's single-process server with reload")] = False,
    public: Annotated[
        bool, typer.Option("--public", help="Serve the public map and Open311 API instead (no login, public views)")
    ] = False,
) -> None:
    """Serve the internal dashboard (login required), or with --public the public app, under gunicorn."""
    from geodata import engines
    from geodata import migrate as migrations

    settings = get_settings()
    host = host or settings.host
    port = port or (settings.public_port if public else settings.port)
    engine = engines.writer_engine()
    engines.check_connection(engine)
    if migrations.current_revision(engine) != migrations.head_revision():
        raise CityGridError("The schema is not at the newest revision: run `citygrid migrate` first.")
    if public:
        from geodata.public_policy import apply_public_policy

        delay, window, k = apply_public_policy(engine, settings)
        console.print(f"public policy: {delay} h delay, {window} days, k = {k}")
    console.print(f"CityGrid{' public' if public else ''} on http://{host}:{port}")
    wsgi_module = "public_app" if public else "app"
    if dev:
        import importlib

        importlib.import_module(wsgi_module).server.run(host=host, port=port, debug=False)
        return
    from gunicorn.app.wsgiapp import run as gunicorn_run

    sys.argv = [
        "gunicorn",
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(workers),
        "--threads",
        "4",
        "--timeout",
        "120",
        "--access-logfile",
        "-",
        f"{wsgi_module}:server",
    ]
    gunicorn_run()


@app.command()
@friendly
def version() -> None:
    """Print CityGrid's version and the schema revision it expects."""
    from importlib.metadata import version as package_version

    from geodata import migrate as migrations

    console.print(
        json.dumps(
            {
                "citygrid": package_version("citygrid"),
                "schema": migrations.head_revision(),
                "at": datetime.now().isoformat(timespec="seconds"),
            }
        )
    )


if __name__ == "__main__":
    app()
