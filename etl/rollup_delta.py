"""Incremental rollups: what a load changes, added to the rollups instead of re-aggregating its days.

Why: re-aggregating the touched report days in SQL costs a scan with thirty aggregates per row, about as
much as storing the cases again, and a daily file of stage updates touches days all over the year, which
would mean re-reading the year (ten million cases at city scale) every day.  Every stored measure is a sum
over cases of a function of one case's state, so a load's effect is exact as a delta: + the new cases,
+ the new state of each updated case, − its old state (an update never moves a case: both states have
its stored place).  The ETL computes those sums in numpy while the server stores the cases.  Rows of days
that had no stored case (a first load, a new month) are COPYed in, each month's as soon as its last batch
is in (:meth:`CaseRollupDelta.flush`); rows of other days are staged and merged at the end.

The public rollups (rollup.public_day_*, migration 0006) hold only what ``open_data.case_public`` shows:
cases not voided, of categories not marked sensitive, and only days the public may still see.  Both live
in the store (core.category, core.public_policy), which this module cannot read while the load's writer
owns the connection; so the delta sorts cases by ``CaseRollupDelta.sensitive`` and ``public_from`` (when
the load does not give them: the shipped dictionary the store was loaded from, and the policy settings),
and :meth:`CaseRollupDelta.apply` checks them against the store.  Should they not hold, the public rollups
of the load's days are rebuilt in SQL instead: never a sensitive case in them, never a day missing.

``geodata.rollups.refresh_all`` rebuilds everything from raw cases in SQL; the tests hold the two equal.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any, Final
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from sqlalchemy import Connection, text

from etl.bulk import copy_frame_binary
from etl.store import copy_frame, raw_connection
from geodata import rollups

LOCAL_TZ: Final = "Asia/Shanghai"
_LEVEL_COLUMNS: Final = (("district", "district_code"), ("street", "street_code"), ("community", "community_code"))
_CATEGORY_MEASURES: Final = ("reported", "handled_all", "closed", "closed_on_time", "handle_hours_sum",
                             "handle_hours_count")
_OPEN_COLUMNS: Final = ("case_number", "reported_at", "day", "district_code", "street_code", "community_code",
                        "grid_code", "kind", "category_code", "source_channel", "status", "dispatched", "handled",
                        "extended", "handle_deadline", "close_deadline")


#: Keys of the public partial sums: the cell table's; streets are summed from them (h3 may be missing).
_PUBLIC_CELL_KEYS: Final = ["day", "h3_r8", "h3_r7", "street_code"]
_PUBLIC_GRID_KEYS: Final = ["day", "grid_code", "street_code"]

#: What the recurring places keep of a recent case (with its day and whether it is still open).
_RECURRING_CODES: Final = ("grid_code", "kind", "category_code", "district_code", "street_code", "community_code",
                           "closed_at")

_TIME_COLUMNS: Final = ("reported_at", "registered_at", "dispatched_at", "handled_at", "closed_at", "voided_at",
                        "handle_deadline", "close_deadline")


def _with_times(cases: pd.DataFrame) -> pd.DataFrame:
    """Time columns as timezone-aware datetimes (a stored frame read back can hold all-NULL object columns)."""
    fixes = {c: pd.to_datetime(cases[c], utc=True) for c in _TIME_COLUMNS
             if c in cases and not isinstance(cases[c].dtype, pd.DatetimeTZDtype)}
    return cases.assign(**fixes) if fixes else cases


_NAT: Final = np.iinfo(np.int64).min
_DAY_NS: Final = 86_400 * 10**9
#: Row of each stored measure in :attr:`CaseMeasures.values` (geodata.rollups.MEASURES' order).
MEASURE_ROW: Final = {name: i for i, name in enumerate(rollups.MEASURES)}
_RESOLUTION_LEVELS: Final = ("grid", "community", "street", "district", "city")


def _nanos(cases: pd.DataFrame, column: str) -> np.ndarray:
    """A time column as int64 nanoseconds since the epoch (UTC), NaT as the int64 minimum; all NaT if absent."""
    if column not in cases:
        return np.full(len(cases), _NAT, dtype=np.int64)
    return cases[column].to_numpy(dtype="datetime64[ns]").view(np.int64)


def _notna(cases: pd.DataFrame, column: str) -> np.ndarray:
    if column not in cases:
        return np.zeros(len(cases), dtype=bool)
    return cases[column].notna().to_numpy()


def _flag(cases: pd.DataFrame, column: str) -> np.ndarray:
    if column not in cases:
        return np.zeros(len(cases), dtype=bool)
    return cases[column].fillna(False).to_numpy(dtype=bool)


def _word_masks(cases: pd.DataFrame, column: str, words: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Where the column holds each word (nowhere when the column is absent).

    Compared as integer codes after one factorization: comparing a million Python strings once per word
    cost ten times more.
    """
    if column not in cases:
        return {word: np.zeros(len(cases), dtype=bool) for word in words}
    codes, uniques = pd.factorize(cases[column])
    code_of = {value: i for i, value in enumerate(uniques)}
    return {word: codes == code_of[word] if word in code_of else np.zeros(len(cases), dtype=bool) for word in words}


@dataclass(frozen=True)
class CaseMeasures:
    """Each case's contribution to every stored measure, and its keys as integer codes.

    Why this shape: the rollups group the same cases by seven different keys.  Each key column is
    factorized once here (``codes[name]`` indexes ``uniques[name]``; a missing value is a value of its own)
    and the measures are one float block, a row per measure (``values[MEASURE_ROW[name]]``), so every
    grouping is integer arithmetic and one ``bincount`` per measure -- no frame is copied or re-hashed.
    The definitions are those of the SQL aggregates in geodata/rollups.py, case by case.
    """

    codes: dict[str, np.ndarray]
    uniques: dict[str, pd.Index]
    values: np.ndarray
    #: Local report day of each case, days since 1970-01-01 (Asia/Shanghai).
    day: np.ndarray
    voided: np.ndarray

    @classmethod
    def of(cls, cases: pd.DataFrame) -> CaseMeasures:
        cases = _with_times(cases)
        size = len(cases)
        local = cases["reported_at"].dt.tz_convert(LOCAL_TZ).dt.tz_localize(None)
        day = local.to_numpy(dtype="datetime64[ns]").view(np.int64) // _DAY_NS
        reported, handled_at = _nanos(cases, "reported_at"), _nanos(cases, "handled_at")
        closed_at, voided_at = _nanos(cases, "closed_at"), _nanos(cases, "voided_at")
        voided, closed, handled_any = voided_at != _NAT, closed_at != _NAT, handled_at != _NAT
        registered = _nanos(cases, "registered_at") != _NAT
        dispatched = _nanos(cases, "dispatched_at") != _NAT
        handle_deadline, close_deadline = _nanos(cases, "handle_deadline"), _nanos(cases, "close_deadline")
        extended = _flag(cases, "extended")
        closed_on_time = closed & (close_deadline != _NAT) & (closed_at <= close_deadline)
        level = _word_masks(cases, "resolution_level", _RESOLUTION_LEVELS)
        channel = _word_masks(cases, "source_channel", tuple(rollups.CHANNEL_MEASURES))
        kind = _word_masks(cases, "kind", ("component", "event"))
        values = np.zeros((len(MEASURE_ROW), size), dtype=np.float64)

        def put(name: str, value: np.ndarray | float) -> None:
            values[MEASURE_ROW[name]] = value

        put("reported", 1.0)
        put("voided", voided)
        put("registered", registered)
        put("registered_voided", registered & voided)
        put("self_handled", _flag(cases, "self_handled"))
        put("dispatched", dispatched)
        put("handled", dispatched & handled_any)
        put("handled_on_time", dispatched & handled_any & (handle_deadline != _NAT) & (handled_at <= handle_deadline))
        put("extended", extended)
        put("closed", closed)
        put("closed_not_extended", closed & ~extended)
        put("closed_on_time", closed_on_time)
        put("closed_on_time_not_extended", closed_on_time & ~extended)
        if "rework_count" in cases:
            put("reworked", pd.to_numeric(cases["rework_count"], errors="coerce").fillna(0).to_numpy() > 0)
        for name in _RESOLUTION_LEVELS:
            put(f"resolved_{name}", closed & level[name])
        if "satisfaction" in cases:
            satisfaction = pd.to_numeric(cases["satisfaction"], errors="coerce")
            put("satisfaction_sum", satisfaction.fillna(0).to_numpy(dtype=np.float64))
            put("satisfaction_count", satisfaction.notna().to_numpy())
        # In whole microseconds until the rows are written (:func:`_rollup_rows`): integer sums are exact in
        # any order, so partial sums of batches and days add up to what SQL's numeric sum gives.
        micros = ((handled_at - reported) // 1000).astype(np.float64)
        put("handle_hours_sum", np.where(handled_any, micros, 0.0))
        put("handle_hours_count", handled_any)
        for name, measure in rollups.CHANNEL_MEASURES.items():
            put(measure, channel[name])
        put("kind_component", kind["component"])
        put("kind_event", kind["event"])
        codes: dict[str, np.ndarray] = {}
        uniques: dict[str, Any] = {}
        for column in ("district_code", "street_code", "community_code", "grid_code", "kind", "category_code",
                       "h3_r8", "h3_r7"):
            source = cases[column] if column in cases else pd.Series(np.full(size, np.nan), index=cases.index)
            code, unique = pd.factorize(source, use_na_sentinel=False)
            codes[column], uniques[column] = code.astype(np.int64, copy=False), unique
        days, day_code = np.unique(day, return_inverse=True)
        codes["day"], uniques["day"] = day_code.astype(np.int64), pd.Index((days * _DAY_NS).astype("datetime64[ns]"))
        months = days.astype("datetime64[D]").astype("datetime64[M]")
        month_values, month_of_day = np.unique(months, return_inverse=True)
        codes["month"] = month_of_day.astype(np.int64)[codes["day"]]
        uniques["month"] = pd.Index(month_values.astype("datetime64[ns]"))
        return cls(codes, uniques, values, day, voided)

    def present(self, column: str) -> np.ndarray:
        """Where the key column has a value."""
        return ~np.asarray(pd.isna(self.uniques[column]), dtype=bool)[self.codes[column]]

    def sums(self, keys: list[str], rows: list[int] | np.ndarray, names: list[str], sign: int,
             where: np.ndarray | None = None, values: np.ndarray | None = None) -> pd.DataFrame:
        """Sum the measure rows ``rows`` (of ``values``, default the stored measures) by ``keys``, over the
        cases ``where`` is True (all by default), times ``sign``; a frame of the keys then ``names``."""
        block = self.values if values is None else values
        return _grouped_sums([self.codes[k] for k in keys], [self.uniques[k] for k in keys], keys,
                             [block[row] for row in rows], names, sign, where)

    def public(self, sensitive: frozenset[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
        """Which cases the public view shows, and their contribution to rollups.PUBLIC_MEASURES (7 rows).

        Public: not voided and (kind, category) not in ``sensitive``; the measures are those of
        layers/public_cases.py over open_data.case_public, case by case.
        """
        shown = ~self.voided
        if sensitive and len(shown):
            kinds, categories = self.uniques["kind"], self.uniques["category_code"]
            table = np.array([[(k, c) in sensitive for c in categories] for k in kinds], dtype=bool)
            shown &= ~table[self.codes["kind"], self.codes["category_code"]]
        v, row = self.values, MEASURE_ROW
        resolved = sum(v[row[f"resolved_{level}"]] for level in _RESOLUTION_LEVELS)
        measures = np.stack([v[row["reported"]], v[row["closed"]], v[row["closed_on_time"]], v[row["resolved_grid"]],
                             resolved, v[row["handle_hours_sum"]], v[row["handle_hours_count"]]])
        return shown, measures


@functools.lru_cache(maxsize=4)
def shipped_sensitive(edition: str) -> frozenset[tuple[str, str]]:
    """The categories the shipped dictionary of ``edition`` marks sensitive (what ``citygrid migrate`` loads)."""
    from geodata.dictionaries import read_categories

    frame = read_categories(edition)
    flagged = frame[frame["sensitive"]]
    return frozenset(zip(flagged["kind"], flagged["code"], strict=True))


def settings_public_from() -> date:
    """The oldest report day the public rollups can need under the policy settings (``serve --public``
    writes them into core.public_policy), with two days to spare; :meth:`CaseRollupDelta.apply` checks it."""
    from geodata.settings import get_settings

    settings = get_settings()
    reach = settings.public_window_days + math.ceil(settings.public_delay_hours / 24) + 3
    return datetime.now(ZoneInfo(LOCAL_TZ)).date() - timedelta(days=reach)


def stored_sensitive(conn: Connection) -> frozenset[tuple[str, str]]:
    """The categories the store marks sensitive (what open_data.case_public hides)."""
    return frozenset((r.kind, r.code) for r in conn.execute(
        text("SELECT kind, code FROM core.category WHERE sensitive")))


@dataclass
class CaseRollupDelta:
    """The rollup changes of one load, summed batch by batch (memory stays that of the sums)."""

    units: list[pd.DataFrame] = field(default_factory=list)
    grids: list[pd.DataFrame] = field(default_factory=list)
    categories: list[pd.DataFrame] = field(default_factory=list)
    cells: list[pd.DataFrame] = field(default_factory=list)
    open_rows: list[pd.DataFrame] = field(default_factory=list)
    gone: list[pd.DataFrame] = field(default_factory=list)
    public_cells: list[pd.DataFrame] = field(default_factory=list)
    public_grids: list[pd.DataFrame] = field(default_factory=list)
    #: The categories kept out of the public rollups; None: the shipped dictionary's (checked in apply).
    sensitive: frozenset[tuple[str, str]] | None = None
    #: Older report days are left out of the public sums; None: from the settings (checked in apply).
    public_from: date | None = None
    #: New cases reported on or after this day are kept for the recurring places (None: none are); see
    #: :meth:`_recurring`.  The load sets it to its file's newest report day minus the window.
    recurring_horizon: date | None = None
    recurring_rows: list[pd.DataFrame] = field(default_factory=list)
    #: The days of the load's span that had no case before it, and the store's newest day then: read by
    #: the load before it writes anything (:meth:`read_store`), else by :meth:`apply`.
    fresh: FreshDays | None = None
    newest_before: date | None = None
    first_day: date | None = None
    last_day: date | None = None
    #: The places :meth:`count_recurring` counted, under the key of what they were counted from.
    _counted: tuple[tuple[int, date, date | None], pd.DataFrame | None] | None = field(default=None, repr=False)
    #: The key of the places :meth:`recurring_job` handed to the load's writer.
    _stored_key: tuple[int, date, date | None] | None = field(default=None, repr=False)

    def add(self, cases: pd.DataFrame, sign: int) -> None:
        """Add (sign +1) or take away (sign −1) these cases' contributions."""
        if cases.empty:
            return
        m = CaseMeasures.of(cases)
        measures = list(rollups.MEASURES)
        every = list(range(len(measures)))
        self.units.append(m.sums(["district_code", "street_code", "community_code", "day"], every, measures, sign))
        self.grids.append(m.sums(["grid_code", "month"], every, measures, sign, where=m.present("grid_code")))
        # The category rollup's "handled" counts every handled case, dispatched or not: handle_hours_count.
        category_rows = [MEASURE_ROW["handle_hours_count" if n == "handled_all" else n] for n in _CATEGORY_MEASURES]
        self.categories.append(m.sums(["district_code", "day", "kind", "category_code"], category_rows,
                                      list(_CATEGORY_MEASURES), sign))
        self.cells.append(m.sums(["district_code", "day", "h3_r8"], [MEASURE_ROW["reported"], MEASURE_ROW["closed"]],
                                 ["reported", "closed"], sign, where=m.present("h3_r8")))
        if self.sensitive is None:
            from geodata.settings import get_settings

            self.sensitive = shipped_sensitive(get_settings().category_edition)
        if self.public_from is None:
            self.public_from = settings_public_from()
        public, public_values = m.public(self.sensitive)
        public &= m.day >= (self.public_from - date(1970, 1, 1)).days
        if public.any():
            names, rows = list(rollups.PUBLIC_MEASURES), list(range(len(rollups.PUBLIC_MEASURES)))
            self.public_cells.append(m.sums(_PUBLIC_CELL_KEYS, rows, names, sign, where=public, values=public_values))
            self.public_grids.append(m.sums(_PUBLIC_GRID_KEYS, rows, names, sign, where=public & m.present("grid_code"),
                                            values=public_values))
        cases = _with_times(cases)
        if sign > 0 and self.recurring_horizon is not None:
            recent = (m.day >= (self.recurring_horizon - date(1970, 1, 1)).days) & m.present("grid_code") & ~m.voided
            if recent.any():
                rows = cases.loc[recent, list(_RECURRING_CODES)]
                self.recurring_rows.append(rows.assign(day=m.day[recent], open=_nanos(rows, "closed_at") == _NAT)
                                           .drop(columns="closed_at"))
        if sign < 0:
            self.gone.append(cases[["case_number", "reported_at"]])
        else:
            is_open = (_nanos(cases, "closed_at") == _NAT) & (_nanos(cases, "voided_at") == _NAT)
            if is_open.any():
                day = pd.Series((m.day[is_open] * _DAY_NS).astype("datetime64[ns]"), index=cases.index[is_open])
                self.open_rows.append(_open_rows(cases[is_open], day))
        lo, hi = (date(1970, 1, 1) + timedelta(days=int(d)) for d in (m.day.min(), m.day.max()))
        self.first_day = lo if self.first_day is None else min(self.first_day, lo)
        self.last_day = hi if self.last_day is None else max(self.last_day, hi)

    def read_store(self, conn: Connection, first: date, last: date) -> None:
        """Read what :meth:`flush` and :meth:`apply` need of the store as it is before the load writes:
        the fresh days of [first, last] and the newest report day."""
        self.fresh = FreshDays.read(conn, first, last)
        self.newest_before = rollups.newest_day(conn)

    @property
    def empty(self) -> bool:
        return self.first_day is None

    def flush(self, months: Sequence[int]) -> list[RollupRows]:
        """Take out the final rollup rows of these months' fresh days, for the load to COPY now.

        The load calls this when every new case of ``months`` (``YYYYMM``, the partitions' months) has been
        added: it stores its batches in month order, so nothing more comes for those days -- updates touch
        only days that had cases already, which are not fresh.  Storing them while the next batches are
        prepared keeps the server busy then, instead of after the last batch.  Without :attr:`fresh` (read
        before the load wrote anything) nothing is flushed.
        """
        if self.fresh is None or not months:
            return []
        fresh, wanted = self.fresh, np.asarray(sorted(months), dtype=np.int64)

        def take(parts: list[pd.DataFrame], column: str) -> list[pd.DataFrame]:
            if not parts:
                return []
            frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
            done = fresh.rows(frame) & np.isin(_month_keys(frame[column]), wanted)
            parts[:] = [frame[~done]] if not done.all() else []
            return [frame[done]] if done.any() else []

        return _rollup_rows(take(self.units, "day"), take(self.grids, "month"), take(self.categories, "day"),
                            take(self.cells, "day"), take(self.public_cells, "day"), take(self.public_grids, "day"))

    def apply(self, conn: Connection, run_id: int | None = None) -> float:
        """Upsert the summed changes into the rollups (in the load's transaction); returns seconds."""
        import time

        started = time.perf_counter()
        if self.empty:
            return 0.0
        assert self.first_day is not None and self.last_day is not None
        if self.fresh is None:  # read before any rollup row is written: days new to the store, its newest day
            self.fresh = FreshDays.read(conn, self.first_day, self.last_day)
            self.newest_before = rollups.newest_day(conn)
        keep = conn.execute(text("SELECT rollup.public_keep_from()")).scalar_one()
        assert self.public_from is not None
        # The public sums assumed the store's sensitive categories and window: rebuild the days if not.
        public_holds = self.sensitive == stored_sensitive(conn) and keep >= self.public_from
        if public_holds:
            for table in ("public_day_h3", "public_day_grid", "public_day_street"):  # days that left the window
                conn.execute(text(f"DELETE FROM rollup.{table} WHERE day < :keep"), {"keep": keep})  # noqa: S608
        kept = pd.Timestamp(keep)

        def public(parts: list[pd.DataFrame]) -> list[pd.DataFrame]:
            if not public_holds:
                return []
            return [p[(pd.to_datetime(p["day"]) >= kept).to_numpy()] for p in parts]

        for table, frame, keys, measures, attributes in _rollup_rows(
                self.units, self.grids, self.categories, self.cells, public(self.public_cells),
                public(self.public_grids)):
            _upsert(conn, table, frame, keys, measures, self.fresh, attributes)
        if not public_holds:
            rollups.refresh_public_rollups(conn, self.first_day, self.last_day)
        if self.gone:
            gone = pd.concat(self.gone)
            conn.execute(text("CREATE TEMP TABLE IF NOT EXISTS _rollup_gone (case_number text,"
                              " reported_at timestamptz) ON COMMIT DROP"))
            conn.execute(text("TRUNCATE _rollup_gone"))
            copy_frame(conn, "_rollup_gone", gone, ["case_number", "reported_at"])
            conn.execute(text("DELETE FROM rollup.open_case o USING _rollup_gone g"
                              " WHERE o.case_number = g.case_number AND o.reported_at = g.reported_at"))
        if self.open_rows:
            copy_frame_binary(raw_connection(conn), "rollup.open_case", pd.concat(self.open_rows), _OPEN_COLUMNS)
        span = {"first": self.first_day, "last": self.last_day, "first_month": self.first_day.replace(day=1)}
        # Units whose every case moved away by an update keep zero rows: drop them, as a rebuild would.  Only
        # a load that took cases away (updates) can leave one.
        for table, column, count in (("case_day_unit", "day", "reported"), ("case_month_grid", "month", "reported"),
                                     ("case_day_category", "day", "reported"), ("case_day_h3", "day", "reported"),
                                     ("public_day_h3", "day", "cases"), ("public_day_grid", "day", "cases"),
                                     ("public_day_street", "day", "cases")):
            if not self.gone:
                break
            lower = ":first_month" if column == "month" else ":first"
            conn.execute(text(f"DELETE FROM rollup.{table} WHERE {column} BETWEEN {lower} AND :last"  # noqa: S608
                              f" AND {count} = 0"), span)
        places = self.count_recurring()
        store: Callable[[Connection], None] | None = None
        if places is not None and self._counted is not None and self._stored_key == self._counted[0]:
            store = _already_stored  # by the load's writer, after its last batch (recurring_job)
        elif places is not None:
            store = partial(_store_places, places=places)
        rollups.finish_case_refresh(conn, self.first_day, self.last_day, run_id, time.perf_counter() - started,
                                    store_recurring=store)
        return time.perf_counter() - started

    def recurring_job(self) -> Callable[[Any], None] | None:
        """A job for the load's writer thread that stores the recurring places counted now, or None when they
        are to be counted by SQL (:meth:`_recurring`).

        The load submits it after its last batch, so the places are stored while the server finishes the
        other months; :meth:`apply` then skips them, unless rows added since (updates) changed the count.
        Stored early or late, it is the same rows in the same transaction: :func:`rollups.finish_case_refresh`
        always stores the places counted in memory (they exist only when the window holds just this load's
        cases, which then reach the store's newest day).
        """
        places = self.count_recurring()
        if places is None or self._counted is None:
            return None
        self._stored_key = self._counted[0]
        return partial(_store_places, places=places)

    def count_recurring(self) -> pd.DataFrame | None:
        """:meth:`_recurring` for the store as :meth:`read_store` found it, counted once for the rows added so far.

        Both :meth:`recurring_job` (after the load's last batch) and :meth:`apply` ask; rows added in between
        (updates) make it count again.
        """
        if self.last_day is None:  # nothing added
            return None
        key = (len(self.recurring_rows), self.last_day, self.newest_before)
        if self._counted is None or self._counted[0] != key:
            self._counted = (key, self._recurring(self.newest_before))
        return self._counted[1]

    def _recurring(self, newest_before: date | None) -> pd.DataFrame | None:
        """The recurring places, when this load's new cases are all the window holds; else None (SQL).

        The window is the RECURRING_WINDOW_DAYS days up to the newest report day.  When the store had no
        case in it before this load (a first load, or a jump past the old data), every case in it is one
        this load added -- and kept, for days from ``recurring_horizon`` on -- so the places are counted
        here in memory instead of by a query over the window's cases (~1 s per 300,000 cases, planned
        without statistics on freshly loaded months).  Updated cases lie before the window then (a case's
        report day never changes), so only additions matter.  The same definition as the SQL: a minor
        category at one grid at least RECURRING_MIN_CASES times, voided cases left out.
        """
        assert self.last_day is not None
        newest = max(self.last_day, newest_before) if newest_before is not None else self.last_day
        start = newest - timedelta(days=rollups.RECURRING_WINDOW_DAYS - 1)
        if self.recurring_horizon is None or self.recurring_horizon > start or (
                newest_before is not None and newest_before >= start):
            return None
        columns = ["grid_code", "kind", "category_code", "district_code", "street_code", "community_code",
                   "cases", "open_cases", "first_day", "last_day"]
        if not self.recurring_rows:
            return pd.DataFrame(columns=columns)
        rows = pd.concat(self.recurring_rows, ignore_index=True)
        rows = rows[rows["day"].to_numpy() >= (start - date(1970, 1, 1)).days]
        places = rows.groupby(["grid_code", "kind", "category_code"], sort=False, dropna=False).agg(
            district_code=("district_code", "min"), street_code=("street_code", "min"),
            community_code=("community_code", "min"), cases=("day", "size"), open_cases=("open", "sum"),
            first_day=("day", "min"), last_day=("day", "max"),
        ).reset_index()
        places = places[places["cases"].to_numpy() >= rollups.RECURRING_MIN_CASES]
        for column in ("first_day", "last_day"):
            places[column] = (places[column].to_numpy(dtype=np.int64) * _DAY_NS).astype("datetime64[ns]")
        return places[columns]


#: One rollup table's rows: (table, rows, key columns, measure columns, attribute columns).
RollupRows = tuple[str, pd.DataFrame, list[str], list[str], tuple[str, ...]]


def _month_keys(values: pd.Series) -> np.ndarray:
    """Year * 100 + month of each day or month (the partitions' month keys)."""
    months = pd.to_datetime(values).to_numpy(dtype="datetime64[M]").astype(np.int64)
    return (months // 12 + 1970) * 100 + months % 12 + 1


def _regroup(parts: list[pd.DataFrame], keys: list[str], names: list[str]) -> pd.DataFrame:
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return _sum_by(frame, keys, frame[names].to_numpy(dtype=np.float64), names)


def _rollup_rows(units: list[pd.DataFrame], grids: list[pd.DataFrame], categories: list[pd.DataFrame],
                 cells: list[pd.DataFrame], public_cells: list[pd.DataFrame],
                 public_grids: list[pd.DataFrame]) -> list[RollupRows]:
    """The rows of every rollup table from partial sums (each list: frames of the same keys, any overlap)."""
    measures = list(rollups.MEASURES)
    out: list[RollupRows] = []
    if any(len(p) for p in units):
        summed = _regroup(units, ["district_code", "street_code", "community_code", "day"], measures)
        per_level = []
        for level, column in _LEVEL_COLUMNS:
            present = summed[summed[column].notna().to_numpy()]
            part = _sum_by(present, [column, "day"], present[measures].to_numpy(dtype=np.float64), measures)
            per_level.append(part.rename(columns={column: "unit_code"}).assign(level=level))
        out.append(("rollup.case_day_unit", pd.concat(per_level, ignore_index=True), ["level", "unit_code", "day"],
                    measures, ()))
    if any(len(p) for p in grids):
        out.append(("rollup.case_month_grid", _regroup(grids, ["grid_code", "month"], measures),
                    ["grid_code", "month"], measures, ()))
    if any(len(p) for p in categories):
        keys = ["district_code", "day", "kind", "category_code"]
        summed = _regroup(categories, keys, list(_CATEGORY_MEASURES)).rename(columns={"handled_all": "handled"})
        out.append(("rollup.case_day_category", summed, keys,
                    ["reported", "handled", "closed", "closed_on_time", "handle_hours_sum", "handle_hours_count"],
                    ()))
    if any(len(p) for p in cells):
        summed = _regroup(cells, ["district_code", "day", "h3_r8"], ["reported", "closed"])
        summed["h3_r8"] = summed["h3_r8"].astype(np.int64)
        out.append(("rollup.case_day_h3", summed, ["district_code", "day", "h3_r8"], ["reported", "closed"], ()))
    names = list(rollups.PUBLIC_MEASURES)
    if any(len(p) for p in public_cells):
        summed = _regroup(public_cells, _PUBLIC_CELL_KEYS, names)
        with_street = summed[summed["street_code"].notna().to_numpy()]
        streets = _sum_by(with_street, ["day", "street_code"], with_street[names].to_numpy(dtype=np.float64), names)
        out.append(("rollup.public_day_street", streets, ["day", "street_code"], names, ()))
        located = summed[(summed["h3_r8"].notna() & summed["h3_r7"].notna()).to_numpy()].copy()
        located["h3_r8"] = located["h3_r8"].astype(np.int64)
        located["h3_r7"] = located["h3_r7"].astype(np.int64)
        located["street_code"] = located["street_code"].fillna("")  # '' = no street (a key column)
        out.append(("rollup.public_day_h3", located, _PUBLIC_CELL_KEYS, names, ()))
    if any(len(p) for p in public_grids):
        out.append(("rollup.public_day_grid", _regroup(public_grids, _PUBLIC_GRID_KEYS, names),
                    ["day", "grid_code"], names, ("street_code",)))
    for _, frame, _, _, _ in out:
        if "handle_hours_sum" in frame:  # summed in microseconds (see CaseMeasures.of)
            frame["handle_hours_sum"] = frame["handle_hours_sum"].to_numpy(dtype=np.float64) / 3.6e9
    return [row for row in out if len(row[1])]


def copy_rollup_rows(driver: Any, rows: list[RollupRows]) -> None:
    """(The load's writer thread) COPY rollup rows of fresh days (see :meth:`CaseRollupDelta.flush`)."""
    for table, frame, keys, measures, attributes in rows:
        copy_frame_binary(driver, table, frame, [*keys, *attributes, *measures])


def _sum_by(frame: pd.DataFrame, keys: list[str], values: np.ndarray, names: list[str]) -> pd.DataFrame:
    """Sum ``values`` (rows x names) by the key columns of ``frame``, missing keys a group of their own."""
    if frame.empty:
        return pd.DataFrame(columns=[*keys, *names])
    factorized = [pd.factorize(frame[key], use_na_sentinel=False) for key in keys]
    return _grouped_sums([code.astype(np.int64) for code, _ in factorized], [unique for _, unique in factorized],
                         keys, [values[:, j] for j in range(len(names))], names)


def _grouped_sums(codes: list[np.ndarray], uniques: list[pd.Index], keys: list[str], columns: list[np.ndarray],
                  names: list[str], sign: int = 1, where: np.ndarray | None = None) -> pd.DataFrame:
    """The sums of ``columns`` (one array per name) by the keys given as codes into their ``uniques``, over
    the rows ``where`` is True (all by default), times ``sign``: a frame of the keys, then ``names``.

    Why not ``DataFrame.groupby``: on text keys with thirty value columns it took seconds per hundred
    thousand cases; combining integer codes and summing with one ``bincount`` per column takes a tenth.
    """
    combined = codes[0].copy()
    for code, unique in zip(codes[1:], uniques[1:], strict=True):
        if (int(combined.max(initial=0)) + 1) * len(unique) >= 2**62:  # renumber before it could overflow
            combined = pd.factorize(combined)[0].astype(np.int64)
        combined *= len(unique)
        combined += code
    if where is not None:
        combined[~where] = -1  # one group of its own, dropped below
    group, distinct = pd.factorize(combined)
    first = np.empty(len(distinct), dtype=np.int64)
    first[group[::-1]] = np.arange(len(group) - 1, -1, -1)  # each group's first row
    keep = distinct >= 0
    sums = np.empty((len(names), int(keep.sum())), dtype=np.float64)
    for j, column in enumerate(columns):
        sums[j] = np.bincount(group, weights=column, minlength=len(distinct))[keep] * sign
    out = pd.DataFrame(sums.T, columns=names, copy=False)
    for i, key in enumerate(keys):
        taken = uniques[i].take(codes[i][first[keep]])
        # Text and time keys keep their dtype; others are object arrays, as the upserts have read them.
        typed = isinstance(taken.dtype, pd.StringDtype) or taken.dtype.kind == "M"
        out.insert(i, key, taken.array if typed else np.asarray(taken, dtype=object))
    return out


def _store_places(target: Connection | Any, places: pd.DataFrame) -> None:
    """Replace the recurring places, on the load's connection or (psycopg) its writer thread's."""
    driver = raw_connection(target) if isinstance(target, Connection) else target
    with driver.cursor() as cursor:
        cursor.execute("DELETE FROM rollup.recurring_place")
    copy_frame_binary(driver, "rollup.recurring_place", places, list(places.columns))


def _already_stored(conn: Connection) -> None:
    """The recurring places were stored by the load's writer (CaseRollupDelta.recurring_job)."""


def _open_rows(cases: pd.DataFrame, day: pd.Series) -> pd.DataFrame:
    dispatched, handled = _notna(cases, "dispatched_at"), _notna(cases, "handled_at")
    registered = _notna(cases, "registered_at")
    status = np.where(handled, "handled", np.where(dispatched, "dispatched",
                                                   np.where(registered, "registered", "reported")))
    return pd.DataFrame({
        "case_number": cases["case_number"].to_numpy(), "reported_at": cases["reported_at"].to_numpy(),
        "day": day.dt.date.to_numpy(), "district_code": cases["district_code"].to_numpy(),
        "street_code": cases["street_code"].to_numpy(), "community_code": cases["community_code"].to_numpy(),
        "grid_code": cases["grid_code"].to_numpy(), "kind": cases["kind"].to_numpy(),
        "category_code": cases["category_code"].to_numpy(), "source_channel": cases["source_channel"].to_numpy(),
        "status": status, "dispatched": dispatched, "handled": handled, "extended": _flag(cases, "extended"),
        "handle_deadline": cases["handle_deadline"].to_numpy(), "close_deadline": cases["close_deadline"].to_numpy(),
    })


@dataclass(frozen=True)
class FreshDays:
    """The report days of a load's span on which no case was stored before it (no rollup row can exist).

    Why: a first load of a month -- the city's history, or a new month's first file -- only adds rows.  Its
    rollup rows are COPYed straight in instead of staged and upserted with ON CONFLICT (measured on a
    million cases: 5 s of the server's time down to ~1 s).  Read from the district rows of
    rollup.case_day_unit before the load writes any rollup: every stored case counts in its district's row
    of its day, and every other rollup row counts stored cases, so a day without a district row has no
    rollup row in any table.
    """

    stored: np.ndarray  # datetime64[D], the days of the span that have cases

    @classmethod
    def read(cls, conn: Connection, first: date | None, last: date | None) -> FreshDays:
        if first is None or last is None:
            return cls(np.array([], dtype="datetime64[D]"))
        month_end = (last.replace(day=28) + timedelta(days=4)).replace(day=1)  # the month tables need whole months
        days = conn.execute(text(
            "SELECT day FROM rollup.case_day_unit WHERE level = 'district' AND day >= :first AND day < :end"
        ), {"first": first.replace(day=1), "end": month_end}).scalars().all()
        return cls(np.array(sorted(set(days)), dtype="datetime64[D]"))

    def rows(self, frame: pd.DataFrame) -> np.ndarray:
        """Which rows of a rollup frame (by its ``day`` or ``month`` column) fall on fresh days or months."""
        if "day" in frame:
            return ~np.isin(pd.to_datetime(frame["day"]).to_numpy(dtype="datetime64[D]"), self.stored)
        months = pd.to_datetime(frame["month"]).to_numpy(dtype="datetime64[M]")
        return ~np.isin(months, self.stored.astype("datetime64[M]"))


def _upsert(conn: Connection, table: str, frame: pd.DataFrame, keys: list[str], measures: list[str],
            fresh: FreshDays, attributes: tuple[str, ...] = ()) -> None:
    """Add ``frame``'s measures to ``table``'s rows with the same keys (new keys are inserted with
    ``attributes``, columns that follow from the key, such as a grid's street).  Rows of fresh days are
    COPYed in; the others are staged and merged."""
    if frame.empty:
        return
    columns = [*keys, *attributes, *measures]
    driver = raw_connection(conn)
    new = fresh.rows(frame)
    copy_frame_binary(driver, table, frame[new], columns)
    if new.all():
        return
    staging = f"_delta_{table.split('.')[1]}"
    conn.execute(text(f"CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE {table}) ON COMMIT DROP"))
    conn.execute(text(f"TRUNCATE {staging}"))
    copy_frame_binary(driver, staging, frame[~new], columns)
    assignments = ", ".join(f"{m} = t.{m} + excluded.{m}" for m in measures)
    conn.execute(text(
        f"INSERT INTO {table} AS t ({', '.join(columns)}) SELECT {', '.join(columns)} FROM {staging}"  # noqa: S608
        f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {assignments}"))
