"""What the store holds, in a few counts: the overview page and `citygrid db status` read it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, text


@dataclass(frozen=True)
class EtlRunRow:
    """One line of the ETL run log, as people read it."""

    run_id: int
    source_kind: str
    source_name: str
    status: str
    rows_read: int
    rows_stored: int
    rows_rejected: int
    finished_at: datetime | None


@dataclass(frozen=True)
class StoreSummary:
    """Counts per admin level and of components, cameras and cases, the data version and recent loads."""

    units_by_level: dict[str, int]
    components: int
    cameras: int
    cases: int
    data_version: int
    recent_runs: list[EtlRunRow]

    @property
    def is_empty(self) -> bool:
        return not any(self.units_by_level.values()) and not self.cases


def store_summary(engine: Engine, runs: int = 10) -> StoreSummary:
    """Read the summary with the given (reader) engine.

    Case counts use the planner's estimate from ``pg_class`` rather than ``count(*)``: an overview must not
    scan ten million rows to print one number.
    """
    with engine.connect() as conn:
        levels = dict(conn.execute(text("SELECT level, count(*) FROM core.admin_unit GROUP BY level")).all())
        components = conn.execute(text("SELECT count(*) FROM core.component")).scalar_one()
        cameras = conn.execute(text("SELECT count(*) FROM core.camera")).scalar_one()
        cases = conn.execute(
            text(
                "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint FROM pg_inherits i"
                " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'core.case_record'::regclass"
            )
        ).scalar_one()
        if cases == 0:  # never analysed yet: small enough to count
            cases = conn.execute(text("SELECT count(*) FROM core.case_record")).scalar_one()
        version = conn.execute(text("SELECT version FROM core.data_version")).scalar_one()
        recent = [
            EtlRunRow(*row)
            for row in conn.execute(
                text(
                    "SELECT run_id, source_kind, source_name, status, rows_read,"
                    " rows_new + rows_updated + rows_unchanged, rows_rejected, finished_at"
                    " FROM core.etl_run ORDER BY run_id DESC LIMIT :n"
                ),
                {"n": runs},
            )
        ]
    return StoreSummary(
        units_by_level={
            level: int(levels.get(level, 0)) for level in ("district", "street", "community", "grid")
        },
        components=int(components),
        cameras=int(cameras),
        cases=int(cases),
        data_version=int(version),
        recent_runs=recent,
    )
