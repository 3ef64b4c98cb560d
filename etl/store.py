"""Bulk writes for the ETL: COPY a frame into a table, keep rejected rows, the run log and the load lock.

Everything here runs on the caller's connection and transaction, so one source is one transaction: a crash
or a kill leaves the store as it was before that source.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
from sqlalchemy import Connection, text

#: Advisory lock key shared by every load (one load at a time keeps merges and rollups consistent).
ETL_LOCK_KEY = 0x43495459_4752_4944 & 0x7FFFFFFFFFFFFFFF  # "CITYGRID"

_COPY_CHUNK_ROWS = 200_000


def raw_connection(conn: Connection) -> Any:
    """The psycopg connection under a SQLAlchemy connection (for COPY)."""
    return conn.connection.driver_connection


def copy_frame(conn: Connection, table: str, frame: pd.DataFrame, columns: Sequence[str]) -> int:
    """COPY ``frame[columns]`` into ``table`` (a trusted identifier of ours) as CSV; returns rows written.

    pyarrow writes the CSV (in C++, several times faster than pandas); NULL is an unquoted empty field and an
    empty string a quoted one, which is exactly COPY's CSV convention.
    """
    if frame.empty:
        return 0
    column_list = ", ".join(columns)
    driver = raw_connection(conn)
    with driver.cursor() as cursor, cursor.copy(f"COPY {table} ({column_list}) FROM STDIN (FORMAT csv)") as copy:
        for start in range(0, len(frame), _COPY_CHUNK_ROWS):
            part = frame.iloc[start : start + _COPY_CHUNK_ROWS][list(columns)]
            buffer = io.BytesIO()
            pa_csv.write_csv(
                pa.Table.from_pandas(part, preserve_index=False),
                buffer,
                pa_csv.WriteOptions(include_header=False, quoting_style="needed"),
            )
            copy.write(buffer.getvalue())
    return len(frame)


def acquire_load_lock(conn: Connection, wait: bool) -> bool:
    """Take the transaction-scoped load lock; with ``wait`` False, return False at once if it is held."""
    if wait:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ETL_LOCK_KEY})
        return True
    return bool(conn.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": ETL_LOCK_KEY}).scalar_one())


def start_run(conn: Connection, source_kind: str, source_name: str, sha256: str | None, options: dict[str, Any]) -> int:
    """Open a run-log row in this transaction (it commits with the data, or vanishes with it)."""
    return int(
        conn.execute(
            text(
                "INSERT INTO core.etl_run (source_kind, source_name, source_sha256, options)"
                " VALUES (:kind, :name, :sha, CAST(:options AS jsonb)) RETURNING run_id"
            ),
            {"kind": source_kind, "name": source_name, "sha": sha256, "options": json.dumps(options)},
        ).scalar_one()
    )


def finish_run(conn: Connection, run_id: int, counts: dict[str, int], notes: list[str]) -> None:
    """Close the run as succeeded with its counts (the table's CHECK enforces read = stored + rejected)."""
    conn.execute(
        text(
            "UPDATE core.etl_run SET status = 'succeeded', finished_at = clock_timestamp(),"
            " rows_read = :read, rows_new = :new, rows_updated = :updated, rows_unchanged = :unchanged,"
            " rows_rejected = :rejected, notes = CAST(:notes AS jsonb) WHERE run_id = :run_id"
        ),
        {**counts, "notes": json.dumps(notes, ensure_ascii=False), "run_id": run_id},
    )


def record_failed_run(conn: Connection, source_kind: str, source_name: str, sha256: str | None, error: str) -> int:
    """After a rollback, log the failed attempt in a transaction of its own, so failures are visible too."""
    return int(
        conn.execute(
            text(
                "INSERT INTO core.etl_run (source_kind, source_name, source_sha256, status, finished_at, error)"
                " VALUES (:kind, :name, :sha, 'failed', clock_timestamp(), :error) RETURNING run_id"
            ),
            {"kind": source_kind, "name": source_name, "sha": sha256, "error": error[:4000]},
        ).scalar_one()
    )


def bump_data_version(conn: Connection) -> int:
    """Advance the data version every cache key carries, so nothing cached before this load is served."""
    return int(
        conn.execute(
            text("UPDATE core.data_version SET version = version + 1, updated_at = now() RETURNING version")
        ).scalar_one()
    )


def _jsonable(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool, list, dict)):
        return value
    return str(value)


def store_rejects(conn: Connection, run_id: int, source_name: str, rejects: pd.DataFrame) -> int:
    """Keep every rejected row with its number, raw content and reason (private: raw rows may hold people)."""
    if rejects.empty:
        return 0
    frame = pd.DataFrame(
        {
            "run_id": run_id,
            "source_name": source_name,
            "row_number": rejects["_row"].astype("int64").to_numpy(),
            "raw": [
                json.dumps(
                    {str(k): _jsonable(v) for k, v in raw.items()} if isinstance(raw, dict) else {"text": str(raw)},
                    ensure_ascii=False,
                )
                for raw in rejects["raw"]
            ],
            "reason": rejects["reason"].astype(str).to_numpy(),
            "field": rejects["field"].astype("object").where(rejects["field"].notna(), None).to_numpy(),
        }
    )
    return copy_frame(
        conn, "private.rejected_row", frame, ["run_id", "source_name", "row_number", "raw", "reason", "field"]
    )
