"""Run one source through the ETL in one transaction: read, map, validate, reproject, locate, store, log.

``load_source`` is the only door data comes in by (the CLI, the demo city and the tests all use it).  A run
holds the load lock for its transaction, so two loads never interleave: the second waits, or with
``wait=False`` refuses at once saying so.  The run log row commits with the data; a failed run rolls back
everything and then logs itself as failed in a transaction of its own.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine

from etl.admin import load_admin_units
from etl.assets import load_cameras, load_components
from etl.cases import MergeCounts, load_cases
from etl.context import LoadContext
from etl.management import load_management_grids
from etl.mapping import load_mapping
from etl.rejects import RejectLog
from etl.roads import load_roads
from etl.store import (
    acquire_load_lock,
    bump_data_version,
    finish_run,
    record_failed_run,
    start_run,
    store_rejects,
)
from etl.tracks import load_tracks, read_gpx
from geodata import rollups
from geodata.errors import CityGridError
from geodata.settings import Settings, get_settings

Loader = Callable[[LoadContext, pd.DataFrame], MergeCounts]

#: Source kind -> (loader, default mapping preset, how it is read: "features", "table" or "auto" by suffix).
LOADERS: dict[str, tuple[Loader, str, str]] = {
    "admin_unit": (load_admin_units, "admin_units", "features"),
    "management_grid": (load_management_grids, "management_grids", "features"),
    "component": (load_components, "components", "auto"),
    "camera": (load_cameras, "cameras", "auto"),
    "case": (load_cases, "cn_case_export", "table"),
    "road": (load_roads, "roads", "features"),
    "track": (load_tracks, "tracks", "auto"),
}
#: Loads after which the per-unit asset rollup (components, cameras, coverage) is rebuilt.
ASSET_KINDS = frozenset({"admin_unit", "management_grid", "component", "camera"})
TABLE_SUFFIXES = {".csv", ".txt", ".xlsx", ".json"}


class LoadBusyError(CityGridError):
    """Another load holds the lock and the caller asked not to wait."""


@dataclass(frozen=True)
class LoadOptions:
    """How to read one source.  ``crs`` is required unless the file states its own (GeoPackage, .prj)."""

    kind: str
    crs: str | None = None
    mapping: str | None = None
    encoding: str | None = None
    layer: str | None = None
    sheet: str | None = None
    wait: bool = True


@dataclass
class LoadResult:
    """What one source's run did: the counts the run log keeps, its notes, and the time it took."""

    run_id: int
    source_name: str
    kind: str
    rows_read: int
    rows_new: int
    rows_updated: int
    rows_unchanged: int
    rows_rejected: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def rows_stored(self) -> int:
        return self.rows_new + self.rows_updated + self.rows_unchanged


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks (the run log keeps it; the demo manifest names its inputs by it)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read(path: Path, options: LoadOptions, how: str):  # type: ignore[no-untyped-def]
    from etl import readers

    if path.suffix.lower() == ".gpx":  # GPS tracks: one row per track point
        return read_gpx(path)
    if how == "features" or (how == "auto" and path.suffix.lower() not in TABLE_SUFFIXES):
        return readers.read_features(path, layer=options.layer, encoding=options.encoding)
    return readers.read_table(path, encoding=options.encoding, sheet=options.sheet)


def _source_crs(options: LoadOptions, raw: object) -> tuple[str, list[str]]:
    """The stated CRS wins; else the file's own; else WGS 84, said in a note."""
    if options.crs:
        return options.crs, []
    file_crs = getattr(getattr(raw, "frame", None), "crs", None)
    if file_crs is not None:
        epsg = file_crs.to_epsg()
        if epsg:
            return f"EPSG:{epsg}", []
        return file_crs.to_wkt(), []
    return "EPSG:4326", ["no CRS stated or found in the file: read as WGS 84 (EPSG:4326); pass --crs otherwise"]


def load_source(engine: Engine, path: Path, options: LoadOptions, settings: Settings | None = None) -> LoadResult:
    """Load one file as one transaction; return its counts (rows read = stored + rejected).

    Raises
    ------
    CityGridError
        The file cannot be read at all, the mapping finds no required column, or the lock is busy with
        ``wait=False``.  Nothing is stored then, and the attempt is logged as a failed run.
    """
    settings = settings or get_settings()
    if options.kind not in LOADERS:
        raise CityGridError(f"unknown source kind {options.kind!r}: one of {', '.join(LOADERS)}")
    loader, preset, how = LOADERS[options.kind]
    started = time.perf_counter()
    path = Path(path)
    if not path.exists():
        raise CityGridError(f"{path}: no such file")
    # The file is hashed while it is read (hashlib releases the GIL): ~0.2 s per 250 MB off the load.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="citygrid-sha256")
    digest = pool.submit(file_sha256, path)
    pool.shutdown(wait=False)
    option_log = {k: v for k, v in options.__dict__.items() if v is not None}
    sha: str | None = None
    try:
        raw = _read(path, options, how)
        sha = digest.result()
        mapping = load_mapping(options.mapping or preset)
        crs, crs_notes = _source_crs(options, raw)
        with engine.begin() as conn:
            if not acquire_load_lock(conn, options.wait):
                raise LoadBusyError("another load is running; try again when it ends (or omit --no-wait to queue)")
            run_id = start_run(conn, options.kind, path.name, sha, option_log)
            rejects = RejectLog(raw.frame, raw.rejects)
            ctx = LoadContext(conn=conn, run_id=run_id, source_name=path.name, crs=crs, mapping=mapping,
                              settings=settings, rejects=rejects, notes=[*raw.notes, *crs_notes])
            counts = loader(ctx, raw.frame)
            if counts.rollup_delta is not None:
                counts.rollup_delta.apply(conn, run_id=run_id)
            elif counts.report_days is not None:
                rollups.refresh_case_rollups(conn, *counts.report_days, run_id=run_id)
            elif options.kind in ASSET_KINDS:
                rollups.refresh_asset_rollups(conn, run_id=run_id)
            rejected = rejects.frame()
            store_rejects(conn, run_id, path.name, rejected)
            rows_read = len(raw.frame) + len(raw.rejects)
            totals = {"read": rows_read, "new": counts.new, "updated": counts.updated,
                      "unchanged": counts.unchanged, "rejected": len(rejected)}
            if rows_read != counts.new + counts.updated + counts.unchanged + len(rejected):
                raise CityGridError(f"internal error: rows do not balance for {path.name}: {totals}")
            finish_run(conn, run_id, totals, ctx.notes)
            bump_data_version(conn)
    except Exception as exc:
        if sha is None and digest.exception() is None:
            sha = digest.result()
        with engine.begin() as conn:
            record_failed_run(conn, options.kind, path.name, sha, f"{type(exc).__name__}: {exc}")
        raise
    return LoadResult(run_id=run_id, source_name=path.name, kind=options.kind, rows_read=rows_read,
                      rows_new=counts.new, rows_updated=counts.updated, rows_unchanged=counts.unchanged,
                      rows_rejected=len(rejected), seconds=time.perf_counter() - started, notes=ctx.notes)
