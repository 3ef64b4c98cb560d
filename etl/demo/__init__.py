"""The demo city: Zibo's 张店区 and 临淄区 as a command centre would hand them over, generated then loaded by the ETL.

Real ground, generated content.  The district boundaries are real (shipped in GCJ-02, as Amap delivers
them); streets and towns carry their real names and codes; communities, unit grids, components, cameras
and a year of cases are generated on top (:mod:`etl.demo.generate`), deterministically from a seed, and
calibrated to the figures of the seed reports (self-handled share, on-time rates, 闻韶街道's 3,600
cameras, 张店区's 112 public toilets ...).  They are written as the files a real centre exports --
GeoJSON, GeoPackage, Shapefile with a GBK code page, XLSX with Chinese headers, GBK and UTF-8 CSV case
exports, a later file of stage updates -- and then loaded through :func:`etl.pipeline.load_source`, the
only door data comes in by.  The demo never writes to the database directly.

Two sizes (``generator.sizes`` in ``geodata/data/demo_city.yaml``): ``demo``, the quick start (about
100,000 cases; generated and loaded in under a minute), and ``city``, the benchmark scale of the design
(10 million cases, 20,000+ unit grids, a million components, 10,000 cameras), streamed to disk in chunks.
Nothing generated is committed: the files go to ``Settings.data_dir / "demo" / size``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine

from etl.demo.generate import generate as write_files
from etl.demo.generate import generator_inputs, read_manifest
from etl.pipeline import LoadOptions, LoadResult, load_source
from geodata.dictionaries import load_dictionaries
from geodata.errors import CityGridError
from geodata.settings import Settings

__all__ = ["DemoReport", "build_demo", "manifest_matches", "read_manifest"]

#: Called with a message and, while loading, the file's position and the number of files.
Progress = Callable[[str, int, int], None]


@dataclass
class DemoReport:
    """What :func:`build_demo` did: the generated set (its manifest), and each file's load result in order."""

    size: str
    seed: int
    out_dir: Path
    manifest: dict[str, Any]
    generated: bool
    generate_seconds: float
    load_seconds: float
    results: list[LoadResult] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        return sum(r.rows_read for r in self.results)

    @property
    def rows_stored(self) -> int:
        return sum(r.rows_stored for r in self.results)

    @property
    def rows_rejected(self) -> int:
        return sum(r.rows_rejected for r in self.results)


def manifest_matches(out_dir: Path, size: str, seed: int) -> bool:
    """True when ``out_dir`` holds a complete generated set of this size and seed (every file present), made
    by this generator from these inputs (a set from an older generator lacks what it adds since)."""
    manifest = read_manifest(out_dir)
    if manifest is None or manifest.get("size") != size or manifest.get("seed") != seed:
        return False
    if manifest.get("inputs") != generator_inputs():
        return False
    return all((Path(out_dir) / entry["path"]).is_file() for entry in manifest["files"])


def build_demo(
    engine: Engine,
    size: Literal["demo", "city"],
    out_dir: Path,
    settings: Settings,
    seed: int = 20251125,
    progress: Progress | None = None,
    *,
    regenerate: bool = True,
    reference_date: date | None = None,
) -> DemoReport:
    """Generate the demo city's source files into ``out_dir`` and load them, in order, through the ETL.

    Each file is loaded as soon as it is written: the generator runs in a worker thread one file ahead of
    the loader (the load waits on PostgreSQL most of the time, so the two overlap on two cores).

    Parameters
    ----------
    engine
        The writer engine of a migrated store (``citygrid migrate``).  The shipped code dictionaries are
        loaded first (idempotent), then districts, streets, communities, unit grids, management grids,
        components, cameras, the monthly case exports and the case updates, each file as one ETL run.
    size
        ``"demo"`` or ``"city"``.
    out_dir
        Where the files are written (and read back from).
    settings
        CityGrid's settings (metric CRS, grid serial width, category edition).
    seed
        The generator's seed; the same seed and reference date give byte-identical files.
    progress
        Called with ``(message, done, total)``: ``total`` is 0 while the number of files is not known yet.
    regenerate
        False reuses a complete set of this size and seed already in ``out_dir`` (its manifest says so).
    reference_date
        The generated year ends the day before it (default: today in Asia/Shanghai).

    Returns
    -------
    DemoReport
        The manifest and every file's :class:`~etl.pipeline.LoadResult` (rows read = stored + rejected).

    Raises
    ------
    CityGridError
        The generator's inputs are unreadable or a file cannot be loaded (the failed run is logged).
    """
    say = progress or (lambda message, done, total: None)
    out_dir = Path(out_dir)
    with engine.begin() as conn:
        load_dictionaries(conn, settings.category_edition)
    report = DemoReport(size=size, seed=seed, out_dir=out_dir, manifest={}, generated=False,
                        generate_seconds=0.0, load_seconds=0.0)
    started = time.perf_counter()
    if not regenerate and manifest_matches(out_dir, size, seed):
        manifest = read_manifest(out_dir)
        assert manifest is not None
        for entry in manifest["files"]:
            _load(engine, out_dir, entry, settings, report, say, len(manifest["files"]))
    else:
        manifest = _generate_and_load(engine, size, out_dir, settings, seed, reference_date, report, say)
    report.manifest = manifest
    report.load_seconds = time.perf_counter() - started
    say("loaded", len(manifest["files"]), len(manifest["files"]))
    return report


class _Stop(Exception):
    """Raised in the generator thread to end it early when a load failed."""


def _load(engine: Engine, out_dir: Path, entry: dict[str, Any], settings: Settings, report: DemoReport,
          say: Progress, total: int) -> None:
    label = entry["path"] + (f" [{entry['layer']}]" if entry.get("layer") else "")
    say(f"loading {label}", len(report.results), total)
    options = LoadOptions(kind=entry["kind"], crs=entry["crs"], mapping=entry.get("mapping"),
                          encoding=entry.get("encoding"), layer=entry.get("layer"))
    report.results.append(load_source(engine, out_dir / entry["path"], options, settings))


def _generate_and_load(engine: Engine, size: Literal["demo", "city"], out_dir: Path, settings: Settings, seed: int,
                       reference_date: date | None, report: DemoReport, say: Progress) -> dict[str, Any]:
    """Run the generator in a thread, loading each file it announces; return the manifest."""
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    stop = threading.Event()

    def announce(entry: dict[str, Any]) -> None:
        if stop.is_set():
            raise _Stop
        events.put(("file", entry))

    def produce() -> None:
        started = time.perf_counter()
        try:
            manifest = write_files(out_dir, size, seed=seed, reference_date=reference_date, on_file=announce,
                                progress=lambda message: say(f"generating: {message}", len(report.results), 0))
            report.generate_seconds = time.perf_counter() - started
            events.put(("done", manifest))
        except BaseException as exc:  # handed to the loading thread, which raises it
            events.put(("error", exc))

    worker = threading.Thread(target=produce, name="demo-generator", daemon=True)
    worker.start()
    report.generated = True
    try:
        while True:
            what, item = events.get()
            if what == "file":
                _load(engine, out_dir, item, settings, report, say, 0)
            elif what == "done":
                return item
            elif isinstance(item, _Stop):  # pragma: no cover - only after a failed load, which raised already
                raise CityGridError("demo generation stopped")
            else:
                raise item
    finally:
        stop.set()
        worker.join()
