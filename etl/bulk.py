"""Bulk writing of new cases: fresh month partitions, binary COPY, and a writer thread beside validation.

A month that has no partition yet (most rows of a big load) is built the way PostgreSQL builds fastest,
all inside the load's one transaction:

1. when the month's first rows are stored, ``core.case_record_YYYYMM`` is created as a plain table
   ``LIKE`` the parent (columns, defaults, generated columns, CHECK constraints -- ATTACH demands every
   CHECK of the parent) plus a CHECK of the month's bounds, and no index (:func:`create_month`);
2. the month's rows are COPYed in (binary format, see :mod:`etl.pgcopy`): no index to maintain row by row
   and no foreign-key trigger per row;
3. after its last batch, ``ATTACH PARTITION`` builds each of the parent's indexes once, from sorted input,
   clones the foreign key to ``core.category`` and checks it
   with one query, and skips the scan of the bounds because the CHECK implies them; the CHECK is dropped
   afterwards (:func:`attach_month`).  The partition ends up exactly like one made by
   :func:`core.ensure_case_partitions` (bounds, indexes, constraints, grants), with its planner row count
   already set by the index builds.

Measured on 200,000 cases over 10 months (backend CPU): COPY through the parent 9.2 s; the way above
2.3-2.6 s for the COPY (binary) plus 1.5 s for the indexes and the key.  ATTACH also takes a lighter lock
than ``CREATE TABLE ... PARTITION OF`` (SHARE UPDATE EXCLUSIVE on the parent instead of ACCESS EXCLUSIVE),
so the dashboards keep reading cases while a load runs.  The same month's ``core.case_event`` partition is
made and attached alongside (empty), as :func:`core.ensure_case_partitions` would.

Months that already have a partition take the ordinary path (COPY through the parent: the indexes, the
key and the routing per row) -- the daily increment, small by nature.

The COPYs and ATTACHes run in :class:`BackgroundWriter`, a thread that owns the connection while the main
thread prepares the next batch; psycopg waits for the server without holding the GIL.  A kill at any
moment leaves nothing: the tables, the rows and the attachments are one transaction.  The same thread
stores each finished month's rollup rows (etl.rollup_delta.CaseRollupDelta.flush).

What the server still does per row, and what it costs (backend CPU per 1,000,000 cases, 2026-12): the
binary COPY itself ~3.1 s, of which the generated columns ~0.8 s; the table's 27 CHECK constraints ~1.6 s
(evaluated in the COPY or added afterwards, the same); the month's index builds (the key, the grid index,
the small index of grid-less cases, migration 0009) ~1.5 s; the reporters ~1 s.  Text compares bytewise
(databases made with LC_COLLATE "C", see geodata.migrate.DATABASE_OPTIONS), which made the index builds
~30 % cheaper than under C.UTF-8.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, text

from etl import pgcopy
from etl.store import raw_connection

#: Local time zone of the month partitions (the one :func:`core.ensure_case_partitions` uses).
PARTITION_TZ = "Asia/Shanghai"
_ENCODE_ROWS = 100_000

Job = Callable[[Any], None]


class BackgroundWriter:
    """Runs database jobs in order in a thread of its own, on the load's connection and transaction.

    While it runs, only it uses the connection.  The first failing job stops it; the error comes back to
    the caller at the next :meth:`submit` or at :meth:`close`.  ``max_pending`` bounds the batches waiting
    in memory.
    """

    def __init__(self, conn: Connection, max_pending: int = 3) -> None:
        self._driver = raw_connection(conn)
        self._jobs: queue.Queue[Job | None] = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="citygrid-etl-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if self._error is not None or self._stop:
                continue
            try:
                job(self._driver)
            except BaseException as exc:  # handed back to the caller's thread
                self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, job: Job) -> None:
        """Queue a job (waits while ``max_pending`` are queued); raises a failed job's error."""
        self._raise()
        self._jobs.put(job)

    def close(self) -> None:
        """Run what is queued, stop the thread, raise the first error if any job failed."""
        self._jobs.put(None)
        self._thread.join()
        self._raise()

    def abort(self) -> None:
        """Skip what is queued and stop (the caller rolls back); waits for a job already running."""
        self._stop = True
        self._jobs.put(None)
        self._thread.join()


def copy_binary(driver: Any, table: str, parts: Sequence[pgcopy.BinaryRows]) -> None:
    """One COPY of encoded rows (all with the same column order) into ``table``."""
    parts = [p for p in parts if p.rows]
    if not parts:
        return
    columns = ", ".join(parts[0].columns)
    with driver.cursor() as cursor, cursor.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT binary)") as copy:
        for block in pgcopy.stream(parts):
            copy.write(block)


#: PostgreSQL column types (format_type) -> the binary encoder's names (etl.pgcopy).
_COPY_TYPE_OF: dict[str, str] = {
    "text": "text", "integer": "int4", "smallint": "int2", "bigint": "int8", "double precision": "float8",
    "date": "date", "boolean": "bool", "timestamp with time zone": "timestamptz",
}


def copy_frame_binary(driver: Any, table: str, frame: pd.DataFrame, columns: Sequence[str]) -> int:
    """Binary COPY of ``frame[columns]`` into ``table`` (a trusted identifier of ours), each column encoded
    as the table declares it; returns the rows written.  For the few types :mod:`etl.pgcopy` knows."""
    if frame.empty:
        return 0
    with driver.cursor() as cursor:
        declared = dict(cursor.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped", (table,)).fetchall())
    unknown = [c for c in columns if declared.get(c) not in _COPY_TYPE_OF]
    if unknown:
        raise ValueError(f"{table}: no binary encoding for {', '.join(f'{c} ({declared.get(c)})' for c in unknown)}")
    copy_binary(driver, table, encode_frame([(c, _COPY_TYPE_OF[declared[c]]) for c in columns], frame))
    return len(frame)


def encode_frame(columns: Sequence[tuple[str, str]], frame: pd.DataFrame,
                 extra: dict[str, Any] | None = None) -> list[pgcopy.BinaryRows]:
    """Encode ``frame``'s ``(name, type)`` columns in slices (``extra`` gives arrays for some names)."""
    parts = []
    for start in range(0, len(frame), _ENCODE_ROWS):
        stop = min(start + _ENCODE_ROWS, len(frame))
        part = frame.iloc[start:stop]
        values = []
        for name, kind in columns:
            if extra and name in extra:
                value = extra[name]
                value = tuple(v[start:stop] if isinstance(v, np.ndarray) else v for v in value) \
                    if isinstance(value, tuple) else value[start:stop]
            else:
                value = part[name]
            values.append((name, kind, value))
        parts.append(pgcopy.encode(values, stop - start))
    return parts


def month_keys(reported_at: pd.Series) -> np.ndarray:
    """Year * 100 + month of each time in the partitions' time zone (the month partition it belongs in); 0 for NaT."""
    local = reported_at.dt.tz_convert(PARTITION_TZ)
    return (local.dt.year * 100 + local.dt.month).fillna(0).to_numpy(dtype=np.int64)


def _bounds_sql(month: int) -> tuple[str, str]:
    year, mon = divmod(int(month), 100)
    start = f"{year:04d}-{mon:02d}-01"
    end = f"{year + (mon == 12):04d}-{mon % 12 + 1:02d}-01"
    return (f"(DATE '{start}'::timestamp AT TIME ZONE '{PARTITION_TZ}')",
            f"(DATE '{end}'::timestamp AT TIME ZONE '{PARTITION_TZ}')")


def existing_months(conn: Connection, months: Iterable[int]) -> set[int]:
    """The months among ``months`` that have their case partition already."""
    months = sorted({int(m) for m in months})
    if not months:
        return set()
    names = [f"core.case_record_{m}" for m in months]
    found = conn.execute(
        text("SELECT name FROM unnest(CAST(:names AS text[])) AS name WHERE to_regclass(name) IS NOT NULL"),
        {"names": names},
    ).scalars()
    return {int(name.rsplit("_", 1)[1]) for name in found}


def create_month(driver: Any, month: int) -> None:
    """Create the case table of a month, unattached and without indexes, and its empty event table."""
    lo, hi = _bounds_sql(month)
    with driver.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE core.case_record_{month} (LIKE core.case_record"
            " INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMPRESSION);"
            f" ALTER TABLE core.case_record_{month} ADD CONSTRAINT case_record_{month}_bounds"
            f" CHECK (reported_at IS NOT NULL AND reported_at >= {lo} AND reported_at < {hi});"
            f" CREATE TABLE core.case_event_{month} (LIKE core.case_event"
            " INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMPRESSION)"
        )


def attach_month(driver: Any, month: int) -> None:
    """Attach a filled month: builds its indexes, clones and checks the key; its bounds CHECK is dropped."""
    lo, hi = _bounds_sql(month)
    with driver.cursor() as cursor:
        cursor.execute(
            f"ALTER TABLE core.case_record ATTACH PARTITION core.case_record_{month} FOR VALUES FROM ({lo}) TO ({hi})"
        )
        cursor.execute(f"ALTER TABLE core.case_record_{month} DROP CONSTRAINT case_record_{month}_bounds")
        cursor.execute(
            f"ALTER TABLE core.case_event ATTACH PARTITION core.case_event_{month} FOR VALUES FROM ({lo}) TO ({hi})"
        )


#: A first load of reporters this big goes into the table without its key, which is then built in one pass.
REPORTER_BULK_ROWS = 100_000


def drop_empty_reporter_key(conn: Connection, rows: int) -> tuple[str, str] | None:
    """Drop the primary key of an empty ``private.case_reporter`` before ``rows`` reporters are copied in.

    Maintaining the key row by row costs more than the rows themselves (0.4-0.8 s against 0.3 s per
    200,000); building it after the COPY, once and sorted, costs 0.2 s.  Only for a large first load: the
    table must be empty (so no reader misses anything while the ACCESS EXCLUSIVE lock of the DROP is held
    until commit).  Returns the key's name and definition for :func:`restore_reporter_key`, or None.
    """
    if rows < REPORTER_BULK_ROWS:
        return None
    if conn.execute(text("SELECT EXISTS (SELECT 1 FROM private.case_reporter)")).scalar_one():
        return None
    key = conn.execute(text(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = 'private.case_reporter'::regclass AND contype = 'p'"
    )).one_or_none()
    if key is None:
        return None
    conn.exec_driver_sql(f'ALTER TABLE private.case_reporter DROP CONSTRAINT "{key[0]}"')
    return str(key[0]), str(key[1])


def restore_reporter_key(driver: Any, key: tuple[str, str]) -> None:
    """Build the dropped key again (a duplicate fails here, as it would have failed the COPY)."""
    with driver.cursor() as cursor:
        cursor.execute(f'ALTER TABLE private.case_reporter ADD CONSTRAINT "{key[0]}" {key[1]}')


# --- months filled beside the load's transaction ----------------------------------------------------------

#: Months filled by the helper connection live, until the load attaches them, in ``core.case_stage_<run>_<month>``.
STAGE_PREFIX = "case_stage_"
STAGE_LOCK_TIMEOUT = "60s"


def stage_table(run_id: int, month: int) -> str:
    """The staging table of a month filled by the helper connection of run ``run_id``."""
    return f"core.{STAGE_PREFIX}{int(run_id)}_{int(month)}"


def drop_stale_stages(conn: Connection) -> list[str]:
    """Drop staging tables a killed or failed load left behind; call holding the load lock.

    A staging table is never a partition until the load that filled it attaches (and renames) it in its own
    transaction, so one found unattached under the lock belongs to a load that ended without committing:
    readers never saw it (they read ``core.case_record``), and nothing refers to it.
    """
    names = conn.execute(text(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'core' AND c.relkind = 'r' AND NOT c.relispartition"
        " AND starts_with(c.relname, :prefix)"
    ), {"prefix": STAGE_PREFIX}).scalars().all()
    for name in names:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
    return list(names)


def _parent_definitions(driver: Any) -> tuple[list[str], list[tuple[str, str]]]:
    """The parent's non-key index definitions and its primary key (name, definition)."""
    with driver.cursor() as cursor:
        indexes = [row[0] for row in cursor.execute(
            "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i"
            " WHERE i.indrelid = 'core.case_record'::regclass AND NOT i.indisprimary AND NOT i.indisunique"
        ).fetchall()]
        constraints = [(row[0], row[1]) for row in cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'core.case_record'::regclass AND contype = 'p'"
        ).fetchall()]
    return indexes, constraints


class StageWriter:
    """A second connection that fills some fresh months in staging tables, so both cores work on the server.

    Why: the COPY of a month with its CHECKs and generated columns, and its index builds, cost the server
    ~16 s of one backend's CPU per million cases; the months are independent until they are attached, so
    two of three go through this connection while the load's own connection stores the third (and every
    month's reporters and rollup rows).  Each month is one transaction here: create ``core.case_stage_<run>_<month>`` (the
    parent's columns, CHECKs and a CHECK of the month's bounds), COPY its batches in, build the parent's
    key and indexes on it, commit.  The load's transaction then attaches it (:func:`attach_stage`): ATTACH
    adopts the key and the indexes instead of building them, the bounds CHECK spares it the scan, and it
    clones and checks the foreign key to ``core.category`` (one query).

    Atomicity: a committed staging table is not a partition, so no reader sees its rows; only the load's
    commit makes it one.  A load killed before that leaves unattached staging tables, which the next load
    drops (:func:`drop_stale_stages`, under the load lock); a load that fails drops its own here.
    """

    def __init__(self, engine: Engine, run_id: int, months: Iterable[int]) -> None:
        self.run_id = run_id
        self.months = frozenset(int(m) for m in months)
        self._conn = engine.connect()
        # Waiting for a lock here could mean waiting for the load's own transaction: fail instead of hanging.
        self._conn.exec_driver_sql(f"SET lock_timeout = '{STAGE_LOCK_TIMEOUT}'")
        self._conn.commit()
        self._writer = BackgroundWriter(self._conn)
        self._committed: list[tuple[int, str]] = []
        self._definitions: tuple[list[str], list[tuple[str, str]]] | None = None

    def copy(self, month: int, parts: Sequence[pgcopy.BinaryRows], first: bool) -> None:
        """Queue the COPY of a batch of ``month`` (creating its staging table with the first)."""
        self._writer.submit(partial(self._copy, month, list(parts), first))

    def finish(self, month: int) -> None:
        """Queue the key and indexes of a month whose last rows are in, and its commit."""
        self._writer.submit(partial(self._finish, month))

    def close(self) -> list[tuple[int, str]]:
        """Wait for every queued job; returns the committed months and their staging tables (to attach)."""
        try:
            self._writer.close()
        finally:
            self._conn.close()
        return list(self._committed)

    def abort(self) -> None:
        """Stop, roll back the open month and drop the committed ones (best effort: see drop_stale_stages)."""
        self._writer.abort()
        try:
            with contextlib.suppress(Exception):  # the next load drops what is left
                driver = raw_connection(self._conn)
                driver.rollback()
                with driver.cursor() as cursor:
                    for _, name in self._committed:
                        cursor.execute(f"DROP TABLE IF EXISTS {name}")
                driver.commit()
        finally:
            self._conn.close()

    def _copy(self, month: int, parts: list[pgcopy.BinaryRows], first: bool, driver: Any) -> None:
        name = stage_table(self.run_id, month)
        if first:
            lo, hi = _bounds_sql(month)
            with driver.cursor() as cursor:
                cursor.execute(
                    f"CREATE TABLE {name} (LIKE core.case_record INCLUDING DEFAULTS INCLUDING GENERATED"
                    " INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMPRESSION);"
                    f" ALTER TABLE {name} ADD CONSTRAINT {STAGE_PREFIX}bounds_{month}"
                    f" CHECK (reported_at IS NOT NULL AND reported_at >= {lo} AND reported_at < {hi})"
                )
        copy_binary(driver, name, parts)

    def _finish(self, month: int, driver: Any) -> None:
        name = stage_table(self.run_id, month)
        if self._definitions is None:
            self._definitions = _parent_definitions(driver)
        indexes, constraints = self._definitions
        with driver.cursor() as cursor:
            # Not the foreign keys: adding one locks the referenced table (its triggers), which the load's
            # own ATTACHes hold until commit -- they would wait for each other.  ATTACH clones and checks them.
            for _, definition in constraints:
                if definition.startswith("PRIMARY KEY"):
                    cursor.execute(f'ALTER TABLE {name} ADD CONSTRAINT "{name.split(".", 1)[1]}_pkey" {definition}')
            for definition in indexes:
                _, _, rest = definition.partition(" ON ONLY core.case_record ")
                cursor.execute(f"CREATE INDEX ON {name} {rest}")
        driver.commit()
        self._committed.append((month, name))


def attach_stage(driver: Any, name: str, month: int) -> None:
    """(Load's transaction) Attach a filled staging table as ``core.case_record_<month>`` with its event table.

    The key and the indexes are adopted (no build); the foreign key is cloned and checked; the bounds CHECK
    spares the scan and is dropped; the table and its indexes are renamed as if ATTACH had made them.
    """
    lo, hi = _bounds_sql(month)
    table = f"case_record_{month}"
    stage = name.split(".", 1)[1]
    with driver.cursor() as cursor:
        cursor.execute(
            f"ALTER TABLE core.case_record ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi});"
            f" ALTER TABLE {name} DROP CONSTRAINT {STAGE_PREFIX}bounds_{month};"
            f" ALTER TABLE {name} RENAME TO {table}"
        )
        renames = cursor.execute(
            "SELECT c.relname, con.conname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid"
            " WHERE i.indrelid = %s::regclass",
            (f"core.{table}",),
        ).fetchall()
        for index, constraint in renames:
            if constraint is not None and constraint.startswith(stage):
                cursor.execute(f'ALTER TABLE core.{table} RENAME CONSTRAINT "{constraint}" TO "{table}_pkey"')
            elif index.startswith(stage):
                cursor.execute(f'ALTER INDEX core."{index}" RENAME TO "{table}{index[len(stage):]}"')
        cursor.execute(
            f"CREATE TABLE core.case_event_{month} (LIKE core.case_event INCLUDING DEFAULTS INCLUDING GENERATED"
            " INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMPRESSION);"
            f" ALTER TABLE core.case_event ATTACH PARTITION core.case_event_{month} FOR VALUES FROM ({lo}) TO ({hi})"
        )
