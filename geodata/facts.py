"""Case facts: a columnar copy of every case's small codes, for the planners' filtered views at city scale.

Why: the planner pages combine filters freely (period, kind, category, channel, status, resolution level,
area) and group by any admin level, H3 cell, hour and weekday or category.  No rollup of a manageable size
holds every combination (at 10 million cases a year, day × unit × category × channel × level has about as
many rows as there are cases), and ``GROUP BY`` over raw cases takes seconds.  So each month of cases is
copied once into compact numpy columns (about 50 bytes a case) and scanned in memory: a filter and a
``bincount`` over 10 million rows take tens of milliseconds.

How it stays right: the ETL stamps each month it touches (``rollup.refresh_log``, see
``geodata.rollups.MONTH_STAMP_PREFIX``).  A month's columns are written to ``<data_dir>/cache/facts`` under
its stamp, memory-mapped read-only (several workers on one host share the pages), and re-read from the
database only when its stamp changes, so a daily load re-reads one month, not the year.  Files are
derived data: deleting the folder is always safe.

Counts follow geodata.kpi's cohort rule (cases reported in the period, their state as of a moment); the
tests hold :func:`group_counts` equal to ``kpi.count_cases`` on raw cases.
"""

# SQL here is composed only from this module's constants; values are bound parameters.
# ruff: noqa: S608

from __future__ import annotations

import hashlib
import io
import os
import shutil
import threading
import uuid
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sqlalchemy import Connection, Engine, text

from geodata.codes import CASE_KINDS, CASE_STATUSES, RESOLUTION_LEVELS, SOURCE_CHANNELS
from geodata.kpi import TIMEZONE, CaseCounts, KpiError, period_bounds
from geodata.rollups import MONTH_STAMP_PREFIX
from geodata.settings import Settings, get_settings

EPOCH: Final = date(2000, 1, 1)
CHANNELS: Final = tuple(SOURCE_CHANNELS)
STATUSES: Final = tuple(CASE_STATUSES)
LEVELS: Final = ("", *RESOLUTION_LEVELS)  # index 0: not resolved
UNIT_COLUMNS: Final = ("district", "street", "community", "grid")
GROUPINGS: Final = ("total", "district", "street", "community", "grid", "h3_r7", "h3_r8", "h3_r9", "hour_dow",
                    "category", "major", "channel", "level", "day")

# Bits of the ``flags`` column.
VOIDED, REGISTERED, SELF_HANDLED, DISPATCHED, HANDLED, HANDLED_ON_TIME, EXTENDED, CLOSED, CLOSED_ON_TIME, \
    REWORKED = (1 << i for i in range(10))
_FLAG_BITS: Final = 10
_LEVEL_SHIFT: Final = _FLAG_BITS  # resolution level index in bits 10-12

#: Every shift is parenthesised: in PostgreSQL `|` and `<<` share one precedence, left to right.
_MONTH_SQL: Final = f"""
COPY (
SELECT c.case_number,
       ((c.reported_at AT TIME ZONE 'Asia/Shanghai')::date - DATE '{EPOCH.isoformat()}') AS day,
       extract(hour FROM c.reported_at AT TIME ZONE 'Asia/Shanghai')::int AS hour,
       c.district_code AS district, c.street_code AS street, c.community_code AS community, c.grid_code AS grid,
       c.kind || '/' || c.category_code AS category, c.source_channel AS channel, c.status,
       ( ((c.voided_at IS NOT NULL)::int) | ((c.registered_at IS NOT NULL)::int << 1)
       | (c.self_handled::int << 2) | ((c.dispatched_at IS NOT NULL)::int << 3)
       | ((c.dispatched_at IS NOT NULL AND c.handled_at IS NOT NULL)::int << 4)
       | ((c.dispatched_at IS NOT NULL AND coalesce(c.handled_on_time, false))::int << 5)
       | (c.extended::int << 6) | ((c.closed_at IS NOT NULL)::int << 7)
       | (coalesce(c.closed_on_time, false)::int << 8) | ((c.rework_count > 0)::int << 9)
       | ((CASE WHEN c.closed_at IS NULL THEN 0 ELSE array_position(
             ARRAY[{', '.join(f"'{level}'" for level in RESOLUTION_LEVELS)}], c.resolution_level) END) << 10)
       ) AS flags,
       extract(epoch FROM c.handled_at - c.reported_at) / 3600.0 AS handle_hours,
       extract(epoch FROM c.handle_deadline) AS handle_deadline_s,
       extract(epoch FROM c.close_deadline) AS close_deadline_s,
       coalesce(c.satisfaction, 0) AS satisfaction,
       c.h3_r9, ST_X(c.geom) AS lon, ST_Y(c.geom) AS lat
  FROM core.case_record c
 WHERE c.reported_at >= '{{start}}' AND c.reported_at < '{{end}}'
) TO STDOUT WITH (FORMAT csv, HEADER true)
"""
_DICTIONARY_COLUMNS: Final = (*UNIT_COLUMNS, "category")
#: Written into each month's folder name: a change of the columns' encoding makes old files unused.
_FORMAT: Final = "f2"


class FactsError(KpiError):
    """A fact query that cannot be answered (named in the message)."""


@dataclass(frozen=True)
class FactQuery:
    """What to count: the cohort reported in [date_from, date_to] in ``area_code``, narrowed by filters.

    Empty tuples mean "all".  Categories are ``kind/code`` (``event/0101``; majors ``event/01``) because
    component and event codes overlap.  Every value is checked against its closed set here, so nothing a
    caller sends reaches SQL or an index unchecked.
    """

    date_from: date
    date_to: date
    area_code: str | None = None
    kinds: tuple[str, ...] = ()
    majors: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    levels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        period_bounds(self.date_from, self.date_to)
        if self.area_code is not None and (not self.area_code.isdigit() or not 6 <= len(self.area_code) <= 16
                                           or 6 < len(self.area_code) < 9 or 9 < len(self.area_code) < 12):
            raise FactsError(f"area code must be a district (6 digits), street (9), community (12) or grid "
                             f"(14-16), not {self.area_code!r}")
        closed = {"kinds": CASE_KINDS, "channels": SOURCE_CHANNELS, "statuses": CASE_STATUSES,
                  "levels": RESOLUTION_LEVELS}
        for name, allowed in closed.items():
            bad = [v for v in getattr(self, name) if v not in allowed]
            if bad:
                raise FactsError(f"{name}: {bad[0]!r} is not one of {', '.join(allowed)}")
        for name, digits in (("majors", 2), ("categories", 4)):
            for value in getattr(self, name):
                kind, _, code = str(value).partition("/")
                if kind not in CASE_KINDS or len(code) != digits or not code.isdigit():
                    raise FactsError(f"{name}: {value!r} is not kind/{'9' * digits} (e.g. event/{'0' * digits})")

    @property
    def area_level(self) -> str | None:
        if self.area_code is None:
            return None
        return {6: "district", 9: "street", 12: "community"}.get(len(self.area_code), "grid")


@dataclass
class _Month:
    """One month's columns (memory-mapped) and its dictionaries (unit codes, categories)."""

    start: date
    stamp: str
    columns: dict[str, np.ndarray]
    dictionaries: dict[str, np.ndarray]
    size: int = 0
    #: Dense workflow state per row (index into ``states``, the distinct ``flags`` values): counting states
    #: with one bincount and summing them per measure is what makes a grouped count cheap.
    state: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint8))
    states: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    #: Per unit level: the month's row positions ordered by that level's local id (stable, so ascending
    #: within a unit) and where each id's run starts (id -1, "none", first).  A unit's rows are then one
    #: slice, and a grid or a street costs its own rows, not a pass over the month's.
    unit_order: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def unit_rows(self, level: str, local_id: int) -> np.ndarray:
        """Positions (ascending) of the rows whose ``level`` column is ``local_id``."""
        order, starts = self.unit_order[level]
        return order[starts[local_id + 1]:starts[local_id + 2]]

    def local(self, column: str, values: tuple[str, ...] | list[str]) -> np.ndarray:
        """Month-local indices of ``values`` in a dictionary column (absent values are dropped)."""
        words = self.dictionaries[column]
        at = np.searchsorted(words, np.asarray(values, dtype=words.dtype))
        at = at[at < len(words)]
        return at[np.isin(words[at], np.asarray(values, dtype=words.dtype))]


def _db_key(engine: Engine) -> str:
    url = engine.url
    return hashlib.sha256(f"{url.host}:{url.port}/{url.database}".encode()).hexdigest()[:16]


class CaseFacts:
    """The facts of one database, month by month; thread-safe; one per process (see :func:`facts_for`)."""

    def __init__(self, engine: Engine, settings: Settings | None = None) -> None:
        self.engine = engine
        self.folder = (settings or get_settings()).data_dir / "cache" / "facts" / _db_key(engine)
        self._months: dict[date, _Month] = {}
        self._lock = threading.Lock()
        self._stamps_at: tuple[int, dict[date, str]] | None = None  # (data version, stamps)

    # --- keeping the months current -----------------------------------------------------------------

    def _stamps(self, conn: Connection) -> dict[date, str]:
        """Every month that has a partition of cases, with the stamp of its last change.

        A month the ETL has not stamped (a store loaded before the stamps existed) falls back on the store's
        data version: correct, only re-read more often than needed.
        """
        rows = conn.execute(text("SELECT name, refreshed_at FROM rollup.refresh_log WHERE name LIKE :prefix"),
                            {"prefix": f"{MONTH_STAMP_PREFIX}%"}).all()
        stamped = {date.fromisoformat(name[len(MONTH_STAMP_PREFIX):] + "-01"): f"{at.timestamp():.6f}"
                   for name, at in rows}
        version = conn.execute(text("SELECT version FROM core.data_version")).scalar_one()
        partitions = conn.execute(text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'core.case_record'::regclass")).scalars().all()
        months = {date(int(name[-6:-2]), int(name[-2:]), 1) for name in partitions
                  if len(name) == len("case_record_YYYYMM") and name[-6:].isdigit()}
        return {month: stamped.get(month, f"v{version}") for month in months}

    def months(self, date_from: date, date_to: date) -> list[_Month]:
        """The months overlapping the period, each current with the store (re-read where its stamp moved)."""
        with self.engine.connect() as conn:
            # Every load bumps the data version: while it stands still, the stamps read last still hold.
            version = conn.execute(text("SELECT version FROM core.data_version")).scalar_one()
            cached = self._stamps_at
            if cached is not None and cached[0] == version:
                stamps = cached[1]
            else:
                stamps = self._stamps(conn)
                self._stamps_at = (version, stamps)
        wanted = [m for m in sorted(stamps) if m <= date_to and _next_month(m) > date_from]
        out = []
        with self._lock:
            for month in wanted:
                held = self._months.get(month)
                if held is None or held.stamp != stamps[month]:
                    held = self._open(month, stamps[month])
                    self._months[month] = held
                out.append(held)
        return out

    def _open(self, month: date, stamp: str) -> _Month:
        folder = self.folder / f"{month:%Y-%m}" / f"{_FORMAT}_{stamp.replace('.', '_')}"
        if not (folder / "done").exists():
            self._build(month, folder)
        columns = {p.stem: np.load(p, mmap_mode="r") for p in folder.glob("*.npy") if not p.stem.startswith("dict_")}
        dictionaries = {p.stem[5:]: np.load(p, allow_pickle=False) for p in folder.glob("dict_*.npy")}
        for old in (self.folder / f"{month:%Y-%m}").iterdir():
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
        states, state = np.unique(np.asarray(columns["flags"]), return_inverse=True)
        unit_order = {}
        for level in UNIT_COLUMNS:
            ids = np.asarray(columns[level])
            order = np.argsort(ids, kind="stable").astype(np.int32)
            counts = np.bincount(ids + 1, minlength=len(dictionaries[level]) + 1)
            unit_order[level] = (order, np.concatenate(([0], np.cumsum(counts))))
        return _Month(month, stamp, columns, dictionaries, size=len(columns["day"]),
                      state=state.astype(np.uint16), states=states.astype(np.int64), unit_order=unit_order)

    def _build(self, month: date, folder: Path) -> None:
        """Copy one month out of PostgreSQL (CSV through COPY, parsed by Arrow) into .npy columns."""
        start, _ = period_bounds(month, month)
        end, _ = period_bounds(_next_month(month), _next_month(month))
        sql = _MONTH_SQL.format(start=start.isoformat(), end=end.isoformat())  # our own instants
        buffer = io.BytesIO()
        with self.engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            with raw.cursor() as cursor, cursor.copy(sql) as copy:  # type: ignore[union-attr]
                for block in copy:
                    buffer.write(block)
        buffer.seek(0)
        types = {"case_number": pa.string(), "district": pa.string(), "street": pa.string(),
                 "community": pa.string(), "grid": pa.string(), "category": pa.string(), "channel": pa.string(),
                 "status": pa.string(), "h3_r9": pa.int64()}
        table = pacsv.read_csv(buffer, convert_options=pacsv.ConvertOptions(column_types=types))
        temporary = folder.parent / f".{uuid.uuid4().hex}"
        temporary.mkdir(parents=True)
        arrays = _encode(table)
        for name, values in arrays.items():
            np.save(temporary / f"{name}.npy", values, allow_pickle=False)
        (temporary / "done").touch()
        try:
            os.rename(temporary, folder)
        except OSError:  # another worker finished it first: theirs is as good
            shutil.rmtree(temporary, ignore_errors=True)

    # --- answering ----------------------------------------------------------------------------------

    def group_counts(self, query: FactQuery, by: str = "total", as_of: datetime | None = None) -> pd.DataFrame:
        """One row per group with every field of :class:`CaseCounts` (plus ``from_<channel>`` columns).

        ``by``: one of :data:`GROUPINGS`.  Units group by code; ``h3_r*`` by cell id; ``hour_dow`` by
        ``hour * 7 + weekday`` (Monday 0); ``category``/``major`` by ``kind/code``; ``day`` by date.
        """
        if by not in GROUPINGS:
            raise FactsError(f"cannot group by {by!r}; one of {', '.join(GROUPINGS)}")
        as_of_s = (as_of or datetime.now(TIMEZONE)).timestamp()
        parts = [self._month_counts(month, query, by, as_of_s) for month in self.months(query.date_from,
                                                                                            query.date_to)]
        parts = [p for p in parts if p is not None]
        if not parts:
            return pd.DataFrame(columns=list(_OUTPUT_FIELDS)).rename_axis("key")
        # Months share labels (a street, a cell): sum their matrices by label, hashing the labels once.
        codes, uniques = pd.factorize(np.concatenate([labels for labels, _ in parts]), use_na_sentinel=False)
        total = np.zeros((len(uniques), len(_OUTPUT_FIELDS)))
        at = 0
        for labels, matrix in parts:
            total[codes[at:at + len(labels)]] += matrix
            at += len(labels)
        frame = pd.DataFrame(total, index=pd.Index(uniques, name="key"), columns=list(_OUTPUT_FIELDS))
        integral = [name for name in _OUTPUT_FIELDS if name != "handle_hours_sum"]
        frame[integral] = frame[integral].round().astype(np.int64)
        return frame[frame["reported"] > 0]

    def counts(self, query: FactQuery, as_of: datetime | None = None) -> CaseCounts:
        """The query's cohort counted as one (equal to ``kpi.count_cases`` with the same narrowing)."""
        frame = self.group_counts(query, "total", as_of)
        if frame.empty:
            return CaseCounts()
        return to_case_counts(frame.iloc[0])

    def mask(self, month: _Month, query: FactQuery) -> np.ndarray | None:
        """Rows of ``month`` in the query as a boolean mask over the month (None: none at all)."""
        rows = self.selection(month, query)
        if rows is None:
            return None
        if isinstance(rows, slice):
            return np.ones(month.size, dtype=bool)
        keep = np.zeros(month.size, dtype=bool)
        keep[rows] = True
        return keep

    def selection(self, month: _Month, query: FactQuery) -> np.ndarray | slice | None:
        """Rows of ``month`` in the query: ascending positions, ``slice(None)`` for all, None for none.

        The unit in view narrows first (its rows are one slice of the month's per-level order), then the
        other filters test only those rows.
        """
        cols = month.columns
        rows: np.ndarray | slice = slice(None)
        if query.area_code is not None:
            level = query.area_level or "grid"
            at = month.local(level, [query.area_code])
            if not len(at):
                return None
            rows = month.unit_rows(level, int(at[0]))
            if not len(rows):
                return None
        keep: np.ndarray | None = None

        def narrow(condition: np.ndarray) -> None:
            nonlocal keep
            keep = condition if keep is None else keep & condition

        first = (query.date_from - EPOCH).days
        last = (query.date_to - EPOCH).days
        if month.start < query.date_from or _next_month(month.start) > query.date_to + timedelta(days=1):
            day = cols["day"][rows]
            narrow((day >= first) & (day <= last))
        for name, column, vocabulary in (("kinds", "kind", tuple(CASE_KINDS)), ("channels", "channel", CHANNELS),
                                         ("statuses", "status", STATUSES)):
            wanted = getattr(query, name)
            if wanted:
                allowed = np.isin(np.arange(len(vocabulary)), [vocabulary.index(v) for v in wanted])
                narrow(allowed[cols[column][rows]])
        if query.levels:
            allowed = np.zeros(8, dtype=bool)
            allowed[[LEVELS.index(v) for v in query.levels]] = True
            flags = cols["flags"][rows]
            narrow(allowed[(flags >> _LEVEL_SHIFT) & 7] & ((flags & CLOSED) > 0))
        if query.majors or query.categories:
            words = month.dictionaries["category"]
            majors = np.array([w[:w.index("/") + 3] for w in words.tolist()], dtype=words.dtype)
            allowed = np.isin(words, np.asarray(query.categories, dtype=words.dtype)) | np.isin(
                majors, np.asarray(query.majors, dtype=words.dtype))
            narrow(allowed[cols["category"][rows]])
        if keep is None:
            return rows
        if isinstance(rows, slice):
            return np.flatnonzero(keep) if not keep.all() else rows
        return rows[keep]

    def _month_counts(self, month: _Month, query: FactQuery, by: str,
                      as_of_s: float) -> tuple[np.ndarray, np.ndarray] | None:
        rows = self.selection(month, query)
        if rows is None or (isinstance(rows, np.ndarray) and not len(rows)):
            return None
        keys, labels = _group_keys(month, by, rows)
        return _measure(month, rows, keys, labels, as_of_s)

    def rows(self, query: FactQuery, columns: tuple[str, ...], limit: int) -> pd.DataFrame:
        """Up to ``limit`` matching cases with the named columns (points for a map, a list's first page)."""
        out: list[pd.DataFrame] = []
        remaining = limit
        for month in reversed(self.months(query.date_from, query.date_to)):
            selected = self.selection(month, query)
            if selected is None:
                continue
            every = np.arange(month.size) if isinstance(selected, slice) else selected
            rows = every[::-1][:remaining]
            frame = pd.DataFrame({name: _decoded(month, name, rows) for name in columns})
            out.append(frame)
            remaining -= len(frame)
            if remaining <= 0:
                break
        return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=list(columns))


_COUNT_FIELDS: Final = tuple(f.name for f in fields(CaseCounts))
_CHANNEL_FIELDS: Final = tuple(f"from_{c}" for c in CHANNELS)


def to_case_counts(row: pd.Series) -> CaseCounts:
    """A group's row as :class:`CaseCounts`."""
    return CaseCounts(**{name: (float(row[name]) if name == "handle_hours_sum" else int(row[name]))
                         for name in _COUNT_FIELDS})


def _next_month(month: date) -> date:
    return (month.replace(day=1) + timedelta(days=32)).replace(day=1)


def _encode(table: pa.Table) -> dict[str, np.ndarray]:
    """Arrow columns -> compact numpy columns and sorted dictionaries for the text codes."""
    out: dict[str, np.ndarray] = {}
    for name in _DICTIONARY_COLUMNS:
        values = table.column(name).to_pandas()
        words = np.sort(values.dropna().unique().astype(str))
        words = words.astype(f"<U{max(1, max((len(w) for w in words), default=1))}")
        index = np.full(len(values), -1, dtype=np.int32)
        present = values.notna().to_numpy()
        index[present] = np.searchsorted(words, values[present].astype(str).to_numpy())
        out[name] = index
        out[f"dict_{name}"] = words
    for name, vocabulary in (("channel", CHANNELS), ("status", STATUSES)):
        values = table.column(name).to_pandas()
        out[name] = pd.Categorical(values, categories=list(vocabulary)).codes.astype(np.int8)
    out["kind"] = np.where(table.column("category").to_pandas().str.startswith("event/"), 1, 0).astype(np.int8)
    out["case_number"] = table.column("case_number").to_pandas().to_numpy().astype("S40")
    out["day"] = table.column("day").to_numpy().astype(np.int32)
    out["hour"] = table.column("hour").to_numpy().astype(np.int8)
    out["flags"] = table.column("flags").to_numpy().astype(np.uint16)
    out["handle_hours"] = table.column("handle_hours").to_pandas().to_numpy(dtype=np.float32, na_value=np.nan)
    for name in ("handle_deadline_s", "close_deadline_s"):
        out[name] = table.column(name).to_pandas().to_numpy(dtype=np.float64, na_value=np.nan)
    out["satisfaction"] = table.column("satisfaction").to_numpy().astype(np.int8)
    # Through float64 an H3 id (about 2**59) loses its low bits and rounds up into the r9 digit: keep int64.
    out["h3_r9"] = pc.fill_null(table.column("h3_r9"), 0).to_numpy().astype(np.int64)
    out["lon"] = table.column("lon").to_numpy().astype(np.float32)
    out["lat"] = table.column("lat").to_numpy().astype(np.float32)
    return out


def _group_keys(month: _Month, by: str, rows: np.ndarray | slice) -> tuple[np.ndarray, np.ndarray]:
    """Dense group ids of ``rows`` (positions, or ``slice(None)`` for all) and the label of each id."""
    cols = month.columns
    if by == "total":
        size = month.size if isinstance(rows, slice) else len(rows)
        return np.zeros(size, dtype=np.int64), np.array(["total"], dtype=object)
    if by in UNIT_COLUMNS or by == "category":
        # Only the codes that occur become groups: a grid's or a street's rows grouped by grid must not
        # cost a matrix over all 25,000 grids of the city in every month.
        words = month.dictionaries[by]
        local = np.asarray(cols[by][rows])
        keys = np.where(local >= 0, local, len(words)).astype(np.int64)
        if len(keys) > 4 * len(words):  # many rows: most codes occur, and the remap would only cost
            return keys, np.append(words.astype(object), None)
        seen = np.zeros(len(words) + 1, dtype=bool)
        seen[keys] = True
        ids = np.flatnonzero(seen)
        remap = np.zeros(len(words) + 1, dtype=np.int64)
        remap[ids] = np.arange(len(ids))
        labels = np.empty(len(ids), dtype=object)
        named = ids < len(words)
        labels[named] = words[ids[named]].tolist()
        labels[~named] = None
        return remap[keys], labels
    if by == "major":
        words = month.dictionaries["category"]
        majors = np.array([w[:w.index("/") + 3] for w in words.tolist()], dtype=object)
        labels, inverse = np.unique(majors, return_inverse=True)
        return inverse[cols["category"][rows]].astype(np.int64), labels.astype(object)
    if by.startswith("h3_r"):
        from etl.locate import h3_parents

        cells = cols["h3_r9"][rows]
        if by != "h3_r9":
            cells = h3_parents(cells, int(by[-1]))
        labels, inverse = np.unique(cells, return_inverse=True)
        return inverse.astype(np.int64), labels.astype(object)
    if by == "hour_dow":
        days = cols["day"][rows].astype(np.int64)
        weekday = (days + EPOCH.weekday()) % 7
        keys = cols["hour"][rows].astype(np.int64) * 7 + weekday
        return keys, np.arange(24 * 7, dtype=np.int64).astype(object)
    if by == "channel":
        return cols["channel"][rows].astype(np.int64), np.array(CHANNELS, dtype=object)
    if by == "level":
        level = ((cols["flags"][rows] >> _LEVEL_SHIFT) & 7).astype(np.int64)
        return level, np.array([*LEVELS, "", ""], dtype=object)
    days = cols["day"][rows].astype(np.int64)
    labels, inverse = np.unique(days, return_inverse=True)
    return inverse.astype(np.int64), np.array([EPOCH + timedelta(days=int(d)) for d in labels], dtype=object)


#: state (flags without the level bits) -> the stored measures it adds one to.
def _state_measures() -> dict[str, np.ndarray]:
    flags = np.arange(1 << (_FLAG_BITS + 3), dtype=np.int64)
    level = (flags >> _LEVEL_SHIFT) & 7

    def has(bit: int) -> np.ndarray:
        return (flags & bit) > 0

    closed = has(CLOSED)
    return {
        "reported": np.ones(len(flags), dtype=bool),
        "voided": has(VOIDED),
        "valid_reported": ~has(VOIDED),
        "registered": has(REGISTERED),
        "registered_voided": has(REGISTERED) & has(VOIDED),
        "self_handled": has(SELF_HANDLED),
        "dispatched": has(DISPATCHED),
        "handled": has(HANDLED),
        "handled_on_time": has(HANDLED_ON_TIME),
        "extended": has(EXTENDED),
        "closed": closed,
        "closed_on_time": has(CLOSED_ON_TIME),
        "closed_on_time_not_extended": has(CLOSED_ON_TIME) & ~has(EXTENDED),
        "reworked": has(REWORKED),
        **{f"resolved_{name}": closed & (level == i) for i, name in enumerate(LEVELS) if name},
        "_closed_not_extended": closed & ~has(EXTENDED),
    }


_STATE_MEASURES: Final = _state_measures()


_INDICATORS: Final = np.column_stack([v for k, v in _STATE_MEASURES.items()]).astype(np.float64)
_INDICATOR_NAMES: Final = tuple(_STATE_MEASURES)
_OUTPUT_FIELDS: Final = (*_COUNT_FIELDS, *_CHANNEL_FIELDS)
_OUTPUT_AT: Final = {name: i for i, name in enumerate(_OUTPUT_FIELDS)}


def _measure(month: _Month, rows: np.ndarray | slice, keys: np.ndarray, labels: np.ndarray,
             as_of_s: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The month's groups: their labels and a (groups x _OUTPUT_FIELDS) matrix of sums."""
    cols = month.columns
    groups, n_states = len(labels), len(month.states)
    table = np.bincount(keys * n_states + month.state[rows], minlength=groups * n_states).reshape(groups, n_states)
    stored = table.astype(np.float64) @ _INDICATORS[month.states]  # one BLAS product for every stored count
    out = np.zeros((groups, len(_OUTPUT_FIELDS)))
    for i, name in enumerate(_INDICATOR_NAMES):
        if name in _OUTPUT_AT:
            out[:, _OUTPUT_AT[name]] = stored[:, i]
    flags = np.asarray(cols["flags"][rows])

    def count(where: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        picked = np.flatnonzero(where)
        return np.bincount(keys[picked], weights=None if weights is None else weights[picked], minlength=groups)

    # As-of measures: only open cases (neither closed nor voided) depend on the moment; they are few.
    open_rows = (flags & (CLOSED | VOIDED)) == 0
    close_due = open_rows & (np.asarray(cols["close_deadline_s"][rows]) <= as_of_s)
    closed_not_extended = stored[:, _INDICATOR_NAMES.index("_closed_not_extended")]
    out[:, _OUTPUT_AT["due_close"]] = out[:, _OUTPUT_AT["closed"]] + count(close_due)
    out[:, _OUTPUT_AT["due_close_not_extended"]] = closed_not_extended + count(close_due & ((flags & EXTENDED) == 0))
    overdue = open_rows & ((flags & DISPATCHED) > 0) & ((flags & HANDLED) == 0) & (
        np.asarray(cols["handle_deadline_s"][rows]) < as_of_s)
    out[:, _OUTPUT_AT["overdue_open"]] = count(overdue)
    satisfaction = np.asarray(cols["satisfaction"][rows])
    rated = satisfaction > 0
    out[:, _OUTPUT_AT["satisfaction_sum"]] = count(rated, satisfaction.astype(np.float64))
    out[:, _OUTPUT_AT["satisfaction_count"]] = count(rated)
    hours = np.asarray(cols["handle_hours"][rows])
    handled = ~np.isnan(hours)
    # Most cases are handled: weigh every row instead of picking the handled ones first.
    out[:, _OUTPUT_AT["handle_hours_sum"]] = np.bincount(keys, weights=np.where(handled, hours, 0.0),
                                                         minlength=groups)
    out[:, _OUTPUT_AT["handle_hours_count"]] = np.bincount(keys, weights=handled, minlength=groups)
    channel = np.bincount(keys * len(CHANNELS) + np.asarray(cols["channel"][rows]), minlength=groups * len(CHANNELS))
    first = _OUTPUT_AT[_CHANNEL_FIELDS[0]]
    out[:, first:first + len(CHANNELS)] = channel.reshape(groups, len(CHANNELS))
    present = out[:, _OUTPUT_AT["reported"]] > 0
    return labels[present], out[present]


def _decoded(month: _Month, name: str, rows: np.ndarray) -> np.ndarray:
    values = month.columns[name][rows]
    if name in _DICTIONARY_COLUMNS:
        words = np.append(month.dictionaries[name].astype(object), None)
        return words[np.where(values >= 0, values, len(words) - 1)]
    if name == "case_number":
        return np.char.decode(values.astype("S40"), "ascii").astype(object)
    if name == "channel":
        return np.array(CHANNELS, dtype=object)[values]
    if name == "status":
        return np.array(STATUSES, dtype=object)[values]
    if name == "day":
        return np.array([EPOCH + timedelta(days=int(d)) for d in values], dtype=object)
    return np.asarray(values)


_FACTS: dict[str, CaseFacts] = {}
_FACTS_LOCK = threading.Lock()


def facts_for(engine: Engine, settings: Settings | None = None) -> CaseFacts:
    """The process's facts of ``engine``'s database (one per database)."""
    key = _db_key(engine)
    with _FACTS_LOCK:
        if key not in _FACTS:
            _FACTS[key] = CaseFacts(engine, settings)
        return _FACTS[key]
