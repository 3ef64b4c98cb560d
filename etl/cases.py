"""Cases (案件) and their updates: validate, reproject, locate, fill deadlines, and merge by case number.

A case number seen for the first time is inserted; seen again, its row is compared field by field with
the store: identical rows count as unchanged, later stages update the case and append one event per
changed stage to ``core.case_event``.  A stage never moves backwards silently: a row that clears or
moves back a stage the store already has is rejected with both values named.

The first sight of a case is its row in ``core.case_record`` (its timestamps are the stages as first
reported); ``core.case_event`` holds every change seen after that.  The timeline of a case is both.

How a million rows go through (see bench/etl.py):

* for the whole file: case number and report time are mapped, duplicates within the file rejected, and
  the store asked once which of the file's numbers it knows; categories, deadline rules, the working
  calendar and the admin units (read beside the mapping) are fetched before any batch;
* then batch by batch, in month order: the other fields are mapped and every check runs, then reprojection,
  location, H3, deadlines and the order of the stages.  Every check is row by row, so a row gets the same
  reason in any batch.  New cases are encoded for a binary COPY and handed to the writer thread of
  :mod:`etl.bulk`, which stores batch *i* (into fresh month tables, attached when their last batch is in)
  while this thread prepares batch *i + 1*;
* known cases are merged at the end (updates, events), in the same transaction.

Validation works on arrow-backed text columns and on the distinct values of low-cardinality columns
(channels, kinds, categories, flags), and reasons are only written for the rows rejected.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import text

from etl import pgcopy
from etl.bulk import (
    PARTITION_TZ,
    BackgroundWriter,
    StageWriter,
    attach_month,
    attach_stage,
    copy_binary,
    create_month,
    drop_empty_reporter_key,
    drop_stale_stages,
    encode_frame,
    existing_months,
    month_keys,
    restore_reporter_key,
)
from etl.context import LoadContext, note_swapped, parse_coordinates
from etl.locate import CODE_COLUMNS, H3_COLUMNS
from etl.mapping import TEXT_DTYPE
from etl.rollup_delta import CaseRollupDelta, copy_rollup_rows
from etl.store import copy_frame, raw_connection
from geodata.codes import RESOLUTION_LEVELS, SOURCE_CHANNELS, URGENCIES
from geodata.dictionaries import add_working_time, fetch_calendar
from geodata.rollups import RECURRING_WINDOW_DAYS

#: Workflow timestamps in order, with the header people know them by (for reasons in rejects).
STAGE_COLUMNS: dict[str, str] = {
    "reported_at": "上报时间",
    "registered_at": "立案时间",
    "dispatched_at": "派遣时间",
    "handled_at": "处置时间",
    "closed_at": "结案时间",
    "voided_at": "作废时间",
    "evaluated_at": "评价时间",
}
DEADLINE_COLUMNS = ("handle_deadline", "close_deadline")
TIME_COLUMNS = (*STAGE_COLUMNS, *DEADLINE_COLUMNS)
STAGE_EVENT = {
    "registered_at": "registered",
    "dispatched_at": "dispatched",
    "handled_at": "handled",
    "closed_at": "closed",
    "voided_at": "voided",
    "evaluated_at": "evaluated",
}

#: Columns written to core.case_record, in COPY order.
CASE_COLUMNS = (
    "case_number", "reported_at", "source_channel", "kind", "category_code", "component_code", "urgency",
    "description", "geom", "district_code", "street_code", "community_code", "grid_code",
    "h3_r7", "h3_r8", "h3_r9", "h3_r10",
    "registered_at", "dispatched_at", "handled_at", "closed_at", "voided_at", "evaluated_at",
    "handle_deadline", "close_deadline", "extended", "rework_count", "returned_count", "self_handled",
    "resolution_level", "handling_unit", "satisfaction", "source_run_id",
)
#: Fields an update may change (everything but the identity and the place, which are the case's own).
MUTABLE_COLUMNS = (
    "source_channel", "kind", "category_code", "component_code", "urgency", "description",
    "registered_at", "dispatched_at", "handled_at", "closed_at", "voided_at", "evaluated_at",
    "handle_deadline", "close_deadline", "extended", "rework_count", "returned_count", "self_handled",
    "resolution_level", "handling_unit", "satisfaction",
)
PERSONAL_COLUMNS = ("reporter_name", "reporter_phone", "reporter_id_number", "address_text")
REQUIRED_FIELDS = ("case_number", "reported_at", "lon", "lat")

_CLOCK_SKEW = pd.Timedelta(minutes=10)
#: Fields mapped for the whole file at once: duplicates and months are decided on all rows.
_GLOBAL_FIELDS = ("case_number", "reported_at")

#: Cases are placed and stored in batches of about an eighth of the file (at least this many rows), so the
#: server stores one batch while the next is located: see :mod:`etl.bulk`.
_BATCH_ROWS_MIN = 50_000
_BATCHES = 8
#: From this many rows on, a load with two fresh months or more fills two of every three through a second
#: connection (both cores on the server; see :class:`etl.bulk.StageWriter` and :func:`_staged_months`).
STAGE_MIN_ROWS = 100_000

#: How each column of core.case_record travels in the binary COPY (see :mod:`etl.pgcopy`).
CASE_COPY_TYPES: dict[str, str] = {
    "case_number": "text", "reported_at": "timestamptz", "source_channel": "text", "kind": "text",
    "category_code": "text", "component_code": "text", "urgency": "text", "description": "text",
    "geom": "point", "district_code": "text", "street_code": "text", "community_code": "text",
    "grid_code": "text", "h3_r7": "int8", "h3_r8": "int8", "h3_r9": "int8", "h3_r10": "int8",
    "registered_at": "timestamptz", "dispatched_at": "timestamptz", "handled_at": "timestamptz",
    "closed_at": "timestamptz", "voided_at": "timestamptz", "evaluated_at": "timestamptz",
    "handle_deadline": "timestamptz", "close_deadline": "timestamptz", "extended": "bool",
    "rework_count": "int2", "returned_count": "int2", "self_handled": "bool", "resolution_level": "text",
    "handling_unit": "text", "satisfaction": "int2", "source_run_id": "int8",
}
REPORTER_COPY_TYPES: dict[str, str] = {
    "case_number": "text", "case_reported_at": "timestamptz", "district_code": "text",
    **{column: "text" for column in PERSONAL_COLUMNS},
}


@dataclass(frozen=True)
class MergeCounts:
    """Stored rows of one source by what happened to them.

    ``report_days``: the first and last report day (Asia/Shanghai) of the cases this source inserted or
    changed, None when it changed none.  ``rollup_delta``: what those changes add to the rollups (the
    pipeline applies it in the load's transaction; see etl/rollup_delta.py).
    """

    new: int
    updated: int
    unchanged: int
    report_days: tuple[date, date] | None = None
    rollup_delta: CaseRollupDelta | None = None


def load_cases(ctx: LoadContext, frame: pd.DataFrame) -> MergeCounts:
    """Validate, place and merge one source's cases; every row ends stored or in ``ctx.rejects``."""
    assert ctx.mapping is not None
    # The admin units are read and indexed (~0.25 s for 20,000 grids) while the rows are mapped.
    index = threading.Thread(target=_read_admin_index, args=(ctx,), name="citygrid-admin-index")
    index.start()
    try:
        # Only what the whole file is needed for is mapped here; the other fields batch by batch (_prepare).
        work = ctx.mapping.apply(frame, required=REQUIRED_FIELDS, as_text=True, fields=_GLOBAL_FIELDS)
        work = _validate_identity(ctx, work)
    finally:
        index.join()
    return _place_and_merge(ctx, work, frame)


def _read_admin_index(ctx: LoadContext) -> None:
    with contextlib.suppress(Exception):  # a failure shows again, in the caller's thread, at the next use
        ctx.admin_index  # noqa: B018 (cached on the context)


def _prepare(ctx: LoadContext, work: pd.DataFrame, frame: pd.DataFrame, lookups: _Lookups) -> pd.DataFrame:
    """Map, validate, reproject, locate and complete one batch of rows (no database access: see _Lookups).

    ``work`` holds the batch's globally mapped fields, ``frame`` the source rows.
    """
    assert ctx.mapping is not None
    fields = ctx.mapping.apply(_source_rows(frame, work.index), as_text=True, exclude=_GLOBAL_FIELDS)
    work = pd.concat([work, fields.drop(columns="_row")], axis=1)
    for column in ("description", "handling_unit", "component_code", "resolution_level"):
        if column not in work:
            work[column] = _column(work, column)
    work = _validate_categories(ctx, work, lookups.categories)
    work = _parse_times(ctx, work)
    work = _validate_values(ctx, work)
    work, lon, lat, swapped = parse_coordinates(ctx, work)
    lookups.swapped_rows.append(swapped)
    work = work.assign(_lon=lon, _lat=lat)
    work = _locate(ctx, work)
    work = _fill_deadlines(work, lookups.rules, lookups.calendar)
    return _check_order(ctx, work)


def _source_rows(frame: pd.DataFrame, index: pd.Index) -> pd.DataFrame:
    """``frame.loc[index]``, as a view when the labels are one run of the frame's default index."""
    if isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 and frame.index.step == 1 and len(index):
        positions = index.to_numpy()
        if positions.dtype.kind in "iu" and positions[0] >= 0 and positions[-1] < len(frame):
            return _take(frame, positions)
    return frame.loc[index]


@dataclass
class _Lookups:
    """What the batches need from the store, read before the writer thread owns the connection."""

    categories: pd.DataFrame
    rules: pd.DataFrame
    calendar: pd.DataFrame
    swapped_rows: list[np.ndarray]

    @classmethod
    def read(cls, ctx: LoadContext) -> _Lookups:
        ctx.admin_index  # noqa: B018 (cached on the context)
        ctx.city_bbox  # noqa: B018
        rules, calendar = _deadline_rules(ctx)
        return cls(_categories(ctx), rules, calendar, [])


# --- helpers ----------------------------------------------------------------------------------------------


def _mask(values: Any) -> np.ndarray:
    """A boolean mask as numpy, missing as False."""
    if isinstance(values, pd.Series):
        if values.dtype == bool:
            return values.to_numpy()
        return values.fillna(False).to_numpy(dtype=bool)
    return np.asarray(values, dtype=bool)


def _reject(ctx: LoadContext, work: pd.DataFrame, mask: Any, reason: str | Callable[[np.ndarray], Sequence[str]],
            field: str) -> pd.DataFrame:
    """Reject ``work[mask]``; ``reason`` is one text or, given the mask, the texts of the rejected rows.

    Costs nothing when no row is rejected (no copy of the frame, no reasons built).
    """
    mask = _mask(mask)
    if not mask.any():
        return work
    if callable(reason):
        texts = np.empty(len(work), dtype=object)
        texts[mask] = list(reason(mask))
        reason = pd.Series(texts, index=work.index)
    return ctx.rejects.reject(work, pd.Series(mask, index=work.index), reason, field)


def _shown(values: Any) -> list[str]:
    """Values as a reason shows them ('None' for a missing one)."""
    return ["None" if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else str(v)
            for v in pd.Series(values).astype("object")]


def _contiguous(positions: np.ndarray) -> slice | None:
    """``positions`` as a slice when they are one ascending run (exports sorted by time give such batches)."""
    if not len(positions):
        return slice(0, 0)
    first, last = int(positions[0]), int(positions[-1])
    if last - first + 1 == len(positions) and (len(positions) < 2 or bool((np.diff(positions) == 1).all())):
        return slice(first, last + 1)
    return None


def _take(frame: pd.DataFrame, positions: np.ndarray) -> pd.DataFrame:
    """``frame.iloc[positions]``, as a view when the positions are one run.

    Why: a gather of arrow text columns copies every string (pyarrow ``take``, ~4 s CPU over the batches of
    a million rows); a slice of them copies nothing.
    """
    run = _contiguous(positions)
    return frame.iloc[run] if run is not None else frame.iloc[positions]


def _where(frame: pd.DataFrame, mask: np.ndarray) -> pd.DataFrame:
    """``frame[mask]`` without a copy when the mask keeps every row or one run of rows."""
    if mask.all():
        return frame
    return _take(frame, np.flatnonzero(mask))


def _column(work: pd.DataFrame, name: str) -> pd.Series:
    """A column, or an all-missing text column if the source has none."""
    if name in work:
        return work[name]
    return pd.Series(np.nan, index=work.index, dtype=TEXT_DTYPE)


def _arrow(series: pd.Series) -> pa.Array:
    if isinstance(series.array, pd.arrays.ArrowStringArray):
        return pa.chunked_array(series.array._pa_array).combine_chunks()
    return pa.array(series.astype("object").where(series.notna(), None).to_numpy(), from_pandas=True)


def _text(values: pa.Array | np.ndarray, index: pd.Index) -> pd.Series:
    """Arrow or object values as an arrow-backed text column."""
    if not isinstance(values, pa.Array):
        values = pa.array(values, type=pa.string(), from_pandas=True)
    return pd.Series(pd.arrays.ArrowStringArray(values, dtype=TEXT_DTYPE), index=index)


def _distinct(work: pd.DataFrame, keys: dict[str, pd.Series]) -> tuple[pd.DataFrame, np.ndarray]:
    """The distinct combinations of ``keys`` (one row each, as object columns) and each row's combination.

    Validation of low-cardinality columns (channels, kinds, categories, flags) runs on these few rows and
    is spread back with one gather, instead of running on every row.
    """
    codes = []
    for series in keys.values():
        encoded = pc.dictionary_encode(_arrow(series)) if not pd.api.types.is_bool_dtype(series.dtype) else None
        if encoded is None:
            codes.append((series.to_numpy(dtype=np.int64), 2))
        else:
            size = len(encoded.dictionary)
            codes.append((encoded.indices.fill_null(size).to_numpy(zero_copy_only=False).astype(np.int64), size + 1))
    if not codes:
        return pd.DataFrame(index=[0]), np.zeros(len(work), dtype=np.intp)
    total = 1
    for _, size in codes:
        total *= max(size, 1)
    if total <= 4 * len(work) + 4096:  # few combinations: counted densely, no sort (what np.unique gives)
        key = np.zeros(len(work), dtype=np.int64)
        for values, size in codes:
            key = key * size + values
        first, inverse = _dense_unique(key, total)
    elif total < 2**62:
        key = np.zeros(len(work), dtype=np.int64)
        for values, size in codes:
            key = key * size + values
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    else:  # pragma: no cover - only for absurdly many distinct values
        frame = pd.DataFrame({name: s.to_numpy() for name, s in keys.items()})
        inverse = frame.groupby(list(keys), dropna=False, sort=False).ngroup().to_numpy()
        _, first = np.unique(inverse, return_index=True)
        _, inverse = np.unique(inverse, return_inverse=True)
    sample = pd.DataFrame({
        name: pd.Series(series.iloc[first].to_numpy(), dtype=series.dtype if series.dtype == bool else "object")
        for name, series in keys.items()
    })
    sample = sample.astype("object").where(sample.notna(), None) if len(sample.columns) else sample
    return sample, inverse.astype(np.intp)


def _dense_unique(key: np.ndarray, total: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(key, return_index=True, return_inverse=True)[1:]`` for keys in ``range(total)``.

    Why: the validation keys are small codes (a few hundred combinations), so a pass over a table of
    ``total`` slots replaces the sort of a million keys that np.unique does on every call.
    """
    present = np.zeros(total, dtype=bool)
    present[key] = True
    first_at = np.empty(total, dtype=np.int64)
    first_at[key[::-1]] = np.arange(len(key) - 1, -1, -1)  # repeated slots: the last write (first row) wins
    rank = np.cumsum(present) - 1
    return first_at[np.flatnonzero(present)], rank[key]


def _aligned(series: pd.Series, work: pd.DataFrame) -> pd.Series:
    """``series`` (computed before some rows of ``work`` were rejected) on ``work``'s rows."""
    return series if len(series) == len(work) else series.loc[work.index]


def _per_value(series: pd.Series, func: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """``func`` applied to the distinct values of a text column (None for missing), spread back to every row."""
    if series.isna().all():  # the source has no such column (or leaves it empty): one value, no encoding
        result = func(pd.Series([None], dtype=object)).reset_index(drop=True)
        return pd.Series(result.array.take(np.zeros(len(series), dtype=np.intp)), index=series.index)
    sample, inverse = _distinct(series.to_frame(), {"value": series})
    result = func(sample["value"]).reset_index(drop=True)
    return pd.Series(result.array.take(inverse), index=series.index)


# --- validation -----------------------------------------------------------------------------------------


def _validate_identity(ctx: LoadContext, work: pd.DataFrame) -> pd.DataFrame:
    work = _reject(ctx, work, work["case_number"].isna(), "case number (案件编号) is empty", "case_number")
    bad = ~work["case_number"].str.fullmatch(r"[0-9A-Za-z_-]{1,40}")
    work = _reject(ctx, work, bad, "case number (案件编号) must be 1-40 letters, digits, '-' or '_'", "case_number")
    first_row = _first_rows(work)
    if first_row is None:
        return work
    duplicate = work["_row"].to_numpy() != first_row
    return _reject(
        ctx, work, duplicate,
        lambda m: [f"duplicate of row {r} in this file (same case number 案件编号)" for r in first_row[m]], "case_number",
    )


def _first_rows(work: pd.DataFrame) -> np.ndarray | None:
    """Per row, the first row number with its case number; None when every number is unique."""
    if len(work) < 2:
        return None
    numbers = _arrow(work["case_number"])
    if pc.all(pc.less(numbers[:-1], numbers[1:])).as_py():  # sorted exports: unique at a glance
        return None
    encoded = pc.dictionary_encode(numbers)
    if len(encoded.dictionary) == len(numbers):
        return None
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    rows = work["_row"].to_numpy(dtype=np.int64)
    first = np.full(len(encoded.dictionary), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, codes, rows)
    return first[codes]


def _categories(ctx: LoadContext) -> pd.DataFrame:
    return pd.read_sql(
        text("SELECT kind, code, major_code, is_major, name_zh, sensitive FROM core.category"), ctx.conn
    )


def _validate_categories(ctx: LoadContext, work: pd.DataFrame, categories: pd.DataFrame | None = None) -> pd.DataFrame:
    """Resolve kind and minor category from codes or Chinese names; reject unknown ones.

    The rules run once per distinct (kind, has component code, category code, minor name) and are spread
    back to the rows.
    """
    categories = _categories(ctx) if categories is None else categories
    minors = categories[~categories["is_major"]]
    keys = {"kind": _column(work, "kind"), "category_code": _column(work, "category_code")}
    if "component_code" in work:
        keys["has_component"] = work["component_code"].notna()
    if "minor_name" in work:
        keys["minor_name"] = work["minor_name"]
    sample, inverse = _distinct(work, keys)
    # A component code implies a component case; otherwise an event unless the source says so.
    kind = sample["kind"]
    if "has_component" in sample:
        kind = kind.where(kind.notna() | ~sample["has_component"].astype(bool), "component")
    code = sample["category_code"]
    if "minor_name" in sample:
        by_name = minors.drop_duplicates(["kind", "name_zh"], keep=False)
        looked_up = pd.merge(
            pd.DataFrame({"kind": kind.fillna("event"), "name_zh": sample["minor_name"]}),
            by_name[["kind", "name_zh", "code"]], on=["kind", "name_zh"], how="left",
        )["code"].to_numpy()
        code = code.where(code.notna(), pd.Series(looked_up, index=sample.index))
    kind = kind.fillna("event")
    known = set(zip(minors["kind"], minors["code"], strict=True))
    bad_kind = ~kind.isin(["component", "event"])
    missing = code.isna()
    unknown = ~pd.Series([(k, c) in known for k, c in zip(kind, code, strict=True)], index=sample.index, dtype=bool)
    kinds, codes = kind.to_numpy(dtype=object), code.to_numpy(dtype=object)
    work = work.assign(kind=_text(pc.take(pa.array(kinds, pa.string()), inverse), work.index),
                       category_code=_text(pc.take(pa.array(codes, pa.string(), from_pandas=True), inverse), work.index))

    def reasons(texts: list[str], inverse: np.ndarray) -> Callable[[np.ndarray], list[str]]:
        return lambda m: [texts[i] for i in inverse[m]]

    if "minor_name" in sample:
        missing_texts = [f"unknown category 小类 '{n}' (not in the category dictionary)" for n in _shown(sample["minor_name"])]
    else:
        missing_texts = ["no category: neither 小类编码 nor a known 小类 name"] * len(sample)
    steps = [
        (bad_kind, [f"case kind (案件类型) {k} is neither 部件 (component) nor 事件 (event)" for k in _shown(kind)], "kind"),
        (missing, missing_texts, "category_code"),
        (unknown, [f"unknown category code {c} for kind {k}" for c, k in zip(_shown(code), _shown(kind), strict=True)],
         "category_code"),
    ]
    for bad, texts, field in steps:
        rows = bad.to_numpy()[inverse]
        work, inverse = _reject(ctx, work, rows, reasons(texts, inverse), field), inverse[~rows]
    return work


def _parse_times(ctx: LoadContext, work: pd.DataFrame) -> pd.DataFrame:
    """Parse every time column; naive times are in the mapping's time zone; unreadable ones reject the row."""
    assert ctx.mapping is not None
    tz = ctx.mapping.timezone
    has_handling_stage = "handled_at" in work
    for column in TIME_COLUMNS:
        if column not in work:
            work[column] = pd.Series(pd.NaT, index=work.index, dtype="datetime64[ns, UTC]")
            continue
        raw = work[column]
        parsed = work["_reported_utc"] if column == "reported_at" and "_reported_utc" in work else _to_utc(raw, tz)
        unreadable = _mask(raw.notna()) & parsed.isna().to_numpy()
        label = STAGE_COLUMNS.get(column, column)
        work = _reject(ctx, work, unreadable,
                       lambda m, raw=raw, label=label:  # type: ignore[misc]
                       [f"cannot read {label} '{v}' as a date and time" for v in _shown(raw[m])], column)
        work[column] = parsed[~unreadable] if unreadable.any() else parsed
    if not has_handling_stage and work["closed_at"].notna().any():
        # Sources without a handling stage (Open311 has only closed_datetime): closing implies handling.
        work["handled_at"] = work["closed_at"]
        note = "the source has no handling time (处置时间): closed cases are taken as handled when closed"
        if note not in ctx.notes:
            ctx.note(note)
    limit = (ctx.now + _CLOCK_SKEW).as_unit("ns").value
    future = np.zeros(len(work), dtype=bool)
    for column in STAGE_COLUMNS:
        values = work[column].to_numpy(dtype="datetime64[ns]").view(np.int64)
        future |= (values > limit) & (values != np.iinfo(np.int64).min)
    work = _reject(ctx, work, future, "a stage time lies in the future (clock or export error)", "reported_at")
    return _reject(ctx, work, work["reported_at"].isna(), "report time (上报时间) is empty", "reported_at")


def _fast_times(raw: pd.Series) -> np.ndarray:
    """Naive datetime64[s] of values written 'YYYY-MM-DD HH:MM[:SS]' (or with '/' or 'T'); NaT otherwise.

    The layout every Chinese export and CityGrid's XLSX reader use, parsed with integer arithmetic on the
    bytes (about 15 ms a column of 200,000); anything else is left to pandas (NaT here).
    """
    out = np.full(len(raw), np.datetime64("NaT"), dtype="datetime64[s]")
    array = _arrow(raw)
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)) or len(array) == 0:
        return out
    width = 8 if pa.types.is_large_string(array.type) else 4
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64 if width == 8 else np.int32, count=len(array) + 1,
                            offset=array.offset * width).astype(np.int64)
    if array.buffers()[2] is None:
        return out
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8)
    lengths = np.diff(offsets)
    valid = np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    for size in (19, 16):
        rows = np.flatnonzero(valid & (lengths == size))
        if not len(rows):
            continue
        if (lengths[valid] == size).all():  # contiguous: nulls take no bytes
            chars = data[offsets[rows[0]] : offsets[rows[0]] + size * len(rows)].reshape(len(rows), size)
        else:
            chars = data[offsets[rows][:, None] + np.arange(size)]
        stamp, ok = _civil_seconds(chars, size)
        out[rows[ok]] = stamp[ok].astype("datetime64[s]")
    return out


_DIGITS_AT = {19: [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18], 16: [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15]}
_MONTH_DAYS = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int32)


def _civil_seconds(chars: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Seconds after 1970 of 'YYYY-MM-DD HH:MM[:SS]' byte rows, and which rows are valid dates."""
    ok = ((chars[:, _DIGITS_AT[size]] - np.uint8(ord("0"))) <= 9).all(axis=1)
    ok &= ((chars[:, 4] == ord("-")) | (chars[:, 4] == ord("/"))) & (chars[:, 7] == chars[:, 4])
    ok &= ((chars[:, 10] == ord(" ")) | (chars[:, 10] == ord("T"))) & (chars[:, 13] == ord(":"))
    if size == 19:
        ok &= chars[:, 16] == ord(":")

    def number(*at: int) -> np.ndarray:
        value = np.zeros(len(chars), dtype=np.int32)
        for i in at:
            value = value * 10 + (chars[:, i].astype(np.int32) - ord("0"))
        return value

    year, month, day = number(0, 1, 2, 3), number(5, 6), number(8, 9)
    hour, minute = number(11, 12), number(14, 15)
    second = number(17, 18) if size == 19 else np.zeros(len(chars), dtype=np.int32)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = _MONTH_DAYS[np.clip(month - 1, 0, 11)] + ((month == 2) & leap)
    ok &= (month >= 1) & (month <= 12) & (day >= 1) & (day <= month_days)
    ok &= (hour < 24) & (minute < 60) & (second < 60)
    ok &= (year >= 1678) & (year <= 2261)  # the range of datetime64[ns]; others are left to pandas
    # Days from the civil date (H. Hinnant's algorithm; years here are positive).
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    days = (era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468).astype(np.int64)
    return days * 86400 + (hour * 3600 + minute * 60 + second), ok


def _to_utc(raw: pd.Series, tz: str) -> pd.Series:
    fast = _fast_times(raw)
    local = pd.DatetimeIndex(fast.astype("datetime64[ns]"))
    out = pd.Series(local.tz_localize(tz, ambiguous="NaT", nonexistent="NaT").tz_convert("UTC"), index=raw.index)
    rest = _mask(raw.notna()) & np.isnat(fast)
    if rest.any():
        values = out.to_numpy(dtype="datetime64[ns]")
        values[rest] = _to_utc_any(raw[rest], tz)
        out = _utc(values, raw.index)
    return out


_NS_RANGE = (np.datetime64("1678-01-01"), np.datetime64("2262-01-01"))


def _to_utc_any(raw: pd.Series, tz: str) -> np.ndarray:
    """Any layout pandas reads, value by value, as UTC datetime64[ns] (NaT where unreadable).

    Values with an offset or Z keep it; naive ones are in ``tz``.
    """
    text_values = raw.astype("string")
    aware = _mask(text_values.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True, na=False))
    out = np.full(len(raw), np.datetime64("NaT"), dtype="datetime64[ns]")
    for group in (aware, ~aware):
        if group.any():
            out[group] = _utc_values(text_values[group], tz)
    return out


def _utc_values(values: pd.Series, tz: str) -> np.ndarray:
    try:
        parsed = pd.to_datetime(values, errors="coerce", format="mixed")
    except (ValueError, TypeError):  # offsets mixed with naive values pandas cannot hold in one column
        return np.concatenate([_utc_values(values.iloc[i : i + 1], tz) for i in range(len(values))])
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        parsed = parsed.dt.tz_convert("UTC")
    else:
        parsed = parsed.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
    naive = parsed.dt.tz_localize(None).to_numpy()
    fits = (naive >= _NS_RANGE[0]) & (naive < _NS_RANGE[1])
    return np.where(fits, naive, np.datetime64("NaT")).astype("datetime64[ns]")


def _truthy(series: pd.Series) -> pd.Series:
    lowered = series.astype("string").str.strip().str.lower()
    result = lowered.map({"true": True, "1": True, "yes": True, "y": True, "是": True,
                          "false": False, "0": False, "no": False, "n": False, "否": False})
    return result.astype("boolean")


def _whole_count(values: pd.Series) -> pd.Series:
    """Whole numbers 0-1000 as floats; anything else NaN."""
    number = pd.to_numeric(values, errors="coerce").astype("float64")
    return number.where((number >= 0) & (number % 1 == 0) & (number <= 1000))


def _rating(values: pd.Series) -> pd.Series:
    """Satisfaction 1-5 as floats; anything else NaN."""
    number = pd.to_numeric(values, errors="coerce").astype("float64")
    return number.where(number.isin([1, 2, 3, 4, 5]))


def _validate_values(ctx: LoadContext, work: pd.DataFrame) -> pd.DataFrame:
    """Channels, urgency, levels, flags, counts and satisfaction: known words and sane numbers only."""
    if "source_channel" not in work:
        work["source_channel"] = _column(work, "source_channel")
    channel = work["source_channel"]
    work = _reject(
        ctx, work, ~channel.isin(list(SOURCE_CHANNELS)),
        lambda m: [f"unknown source channel (问题来源) '{v}'" for v in _shown(channel[m])], "source_channel",
    )
    work["urgency"] = _column(work, "urgency").fillna("normal")
    urgency = work["urgency"]
    work = _reject(
        ctx, work, ~urgency.isin(list(URGENCIES)),
        lambda m: [f"unknown urgency (紧急程度) '{v}'" for v in _shown(urgency[m])], "urgency",
    )
    level = _column(work, "resolution_level")
    work = _reject(
        ctx, work, _mask(level.notna()) & ~_mask(level.isin(list(RESOLUTION_LEVELS))),
        lambda m: [f"unknown resolution level (解决层级) '{v}'" for v in _shown(level[m])], "resolution_level",
    )
    for flag in ("extended", "self_handled"):
        raw = _column(work, flag)
        parsed = _per_value(raw, _truthy)
        work = _reject(ctx, work, _mask(raw.notna()) & _mask(parsed.isna()), f"{flag} must be yes/no (是/否)", flag)
        work[flag] = _aligned(parsed, work).fillna(False).astype(bool)
    # Numbers are parsed and judged on the distinct values (NaN: not acceptable), then spread to the rows.
    for count in ("rework_count", "returned_count"):
        raw = _column(work, count)
        parsed = _per_value(raw, _whole_count)
        bad = _mask(raw.notna()) & _mask(parsed.isna())
        work = _reject(ctx, work, bad, f"{count} must be a whole number from 0", count)
        work[count] = _aligned(parsed, work).fillna(0).astype("int16")
    raw = _column(work, "satisfaction")
    parsed = _per_value(raw, _rating)
    bad = _mask(raw.notna()) & _mask(parsed.isna())
    work = _reject(ctx, work, bad, "satisfaction (满意度) must be 1-5 or a rating word", "satisfaction")
    work["satisfaction"] = _aligned(parsed, work).astype("Int16")
    component = _column(work, "component_code")
    bad = _mask(component.notna()) & ~_mask(component.str.fullmatch(r"[0-9]{16}"))
    work = _reject(ctx, work, bad, "component code (部件编码) must be 16 digits", "component_code")
    bad = _mask(_column(work, "component_code").notna()) & _mask(work["kind"] != "component")
    return _reject(ctx, work, bad, "an event case cannot carry a component code", "component_code")


def _locate(ctx: LoadContext, work: pd.DataFrame) -> pd.DataFrame:
    from etl.locate import h3_cells, locate_units, unit_codes

    lon, lat = work["_lon"].to_numpy(), work["_lat"].to_numpy()
    units = locate_units(ctx.admin_index, lon, lat)
    outside = units < 0  # every unit has its district: -1 (nowhere) is the only way to have none
    work = _reject(
        ctx, work, outside,
        lambda m: [f"outside the city: no district contains ({x:.6f}, {y:.6f}) after conversion to WGS 84"
                   for x, y in zip(lon[m], lat[m], strict=True)], "lon",
    )
    keep = ~outside
    for column in CODE_COLUMNS:
        work[column] = _text(unit_codes(ctx.admin_index, units[keep], column), work.index)
    cells = h3_cells(lon[keep], lat[keep])
    for column in cells.columns:
        work[column] = cells[column].to_numpy()
    # The component code's district must agree with where the case lies.
    component = _column(work, "component_code")
    wrong = _mask(component.notna()) & _mask(component.str[:6] != work["district_code"])
    return _reject(
        ctx, work, wrong, "component code (部件编码) names another district than the case's location", "component_code"
    )


def _deadline_rules(ctx: LoadContext) -> tuple[pd.DataFrame, pd.DataFrame]:
    rules = pd.read_sql(
        text("SELECT kind, category_code, urgency, handle_limit, close_limit, limit_unit FROM core.deadline_rule"),
        ctx.conn,
    )
    return rules, fetch_calendar(ctx.conn)


def _fill_deadlines(work: pd.DataFrame, rules: pd.DataFrame, calendar: pd.DataFrame) -> pd.DataFrame:
    """Missing deadlines come from the deadline rules (处置时限) of the category and urgency, in working time."""
    need = _mask(work["handle_deadline"].isna() | work["close_deadline"].isna())
    if not need.any():
        return work
    subset = work[need]
    sample, inverse = _distinct(subset, {c: subset[c] for c in ("kind", "category_code", "urgency")})
    matched = sample.merge(rules, on=["kind", "category_code", "urgency"], how="left")
    has_rule = matched["limit_unit"].notna().to_numpy()[inverse]
    if not has_rule.any():
        return work
    rule = matched.iloc[inverse[has_rule]]
    ruled = subset[has_rule]
    start = ruled["registered_at"].fillna(ruled["reported_at"])
    units = rule["limit_unit"].to_numpy()
    positions = np.flatnonzero(need)[has_rule]
    for column, limit in (("handle_deadline", "handle_limit"), ("close_deadline", "close_limit")):
        deadline = add_working_time(start, rule[limit].astype(float).to_numpy(), units, calendar)
        values = work[column].to_numpy(dtype="datetime64[ns]")
        empty = np.isnat(values[positions])
        values[positions[empty]] = deadline.to_numpy(dtype="datetime64[ns]")[empty]
        work[column] = _utc(values, work.index)
    return work


def _utc(values: np.ndarray, index: pd.Index) -> pd.Series:
    """UTC datetime64[ns] values as a timezone-aware column."""
    return pd.Series(pd.DatetimeIndex(values.astype("datetime64[ns]")).tz_localize("UTC"), index=index)


def _check_order(ctx: LoadContext, work: pd.DataFrame) -> pd.DataFrame:
    """The closed loop runs forward (the same rules as the table's CHECK constraints, with reasons)."""
    rows = work  # the checks read the rows as they came
    reported, registered = rows["reported_at"], rows["registered_at"]
    dispatched, handled, closed = rows["dispatched_at"], rows["handled_at"], rows["closed_at"]
    before_dispatch = dispatched.fillna(registered).fillna(reported)
    checks = [
        (lambda: registered < reported, "立案时间 is before 上报时间"),
        (lambda: dispatched < registered.fillna(reported), "派遣时间 is before 立案时间/上报时间"),
        (lambda: handled < before_dispatch, "处置时间 is before 派遣时间"),
        (lambda: closed < handled.fillna(before_dispatch), "结案时间 is before 处置时间"),
        (lambda: closed.notna() & handled.isna(), "结案时间 without 处置时间: a case is handled before it is closed"),
        (lambda: rows["voided_at"] < reported, "作废时间 is before 上报时间"),
        (lambda: rows["voided_at"].notna() & closed.notna(), "a case cannot be both voided (作废) and closed (结案)"),
        (lambda: rows["evaluated_at"] < closed, "评价时间 is before 结案时间"),
        (lambda: rows["handle_deadline"] <= reported, "处置时限 is not after 上报时间"),
        (lambda: rows["close_deadline"] < rows["handle_deadline"], "结案时限 is before 处置时限"),
        (lambda: rows["self_handled"] & dispatched.notna(), "a self-handled case (自行处置) is not dispatched"),
        (lambda: rows["resolution_level"].notna() & handled.isna() if "resolution_level" in rows
         else pd.Series(False, index=rows.index), "a resolution level without 处置时间"),
    ]
    remaining = np.ones(len(work), dtype=bool)
    for check, reason in checks:
        hit = _mask(check()) & remaining
        # The checks read the rows as they came; each rejects what is left of its hits.
        work = _reject(ctx, work, hit[remaining], f"impossible timestamps: {reason}", "reported_at")
        remaining &= ~hit
    return work


# --- merge ----------------------------------------------------------------------------------------------


def _existing(ctx: LoadContext, numbers: pd.Series) -> pd.DataFrame:
    """The stored versions of these case numbers (skipped when the store has none in their range)."""
    columns = ", ".join(c for c in CASE_COLUMNS if c not in ("geom", "source_run_id"))
    if numbers.empty:
        return pd.DataFrame()
    lo, hi = str(numbers.min()), str(numbers.max())
    overlap = ctx.conn.execute(
        text("SELECT EXISTS (SELECT 1 FROM core.case_record WHERE case_number BETWEEN :lo AND :hi)"),
        {"lo": lo, "hi": hi},
    ).scalar_one()
    if not overlap:
        return pd.DataFrame()
    ctx.conn.execute(text("CREATE TEMP TABLE IF NOT EXISTS _incoming_case (case_number text) ON COMMIT DROP"))
    ctx.conn.execute(text("TRUNCATE _incoming_case"))
    copy_frame(ctx.conn, "_incoming_case", pd.DataFrame({"case_number": numbers.to_numpy()}), ["case_number"])
    ctx.conn.execute(text("ANALYZE _incoming_case"))
    return pd.read_sql(
        text(f"SELECT {columns} FROM core.case_record JOIN _incoming_case USING (case_number)"),  # noqa: S608
        ctx.conn,
    )


def _same(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Element-wise equality where two missing values are equal (NA-safe for nullable and object columns)."""
    a_na, b_na = a.isna().to_numpy(), b.isna().to_numpy()
    both = ~a_na & ~b_na
    equal = np.zeros(len(a), dtype=bool)
    if both.any():
        left, right = a.astype("object").to_numpy()[both], b.astype("object").to_numpy()[both]
        equal[both] = np.fromiter((bool(x == y) for x, y in zip(left, right, strict=True)), dtype=bool,
                                  count=int(both.sum()))
    return (a_na & b_na) | equal


def _batches(months: np.ndarray) -> list[tuple[np.ndarray, list[int]]]:
    """Row positions of each batch, in month order, and the months whose last rows are in that batch."""
    if not len(months):
        return []
    order = np.argsort(months, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(_batch_sizes(len(order))))).tolist()
    ordered = months[order]
    distinct, first = np.unique(ordered, return_index=True)
    last = np.append(first[1:], len(ordered)) - 1
    batches = []
    for start, stop in itertools.pairwise(bounds):
        done = [int(m) for m, end in zip(distinct, last, strict=True) if start <= end < stop]
        batches.append((order[start:stop], done))
    return batches


def _batch_sizes(rows: int) -> list[int]:
    """Batch sizes for ``rows`` rows: small ones first and last, about an eighth of the file in between.

    Why: the server has nothing to do until the first batch is ready, and while it stores one batch the
    next (1.5 times as many rows) is prepared in about the same time; at the end the other way round, so
    that what the server still has to store after the last batch is prepared is little.
    """
    size = max(_BATCH_ROWS_MIN, -(-rows // _BATCHES))
    ramp: list[int] = []
    step = min(size, max(_BATCH_ROWS_MIN // 10, size // 8))
    while step < size and 2 * (sum(ramp) + step) <= rows:
        ramp.append(step)
        step = step * 3 // 2
    middle = rows - 2 * sum(ramp)
    sizes = [*ramp, *([size] * (middle // size)), *([middle % size] if middle % size else []), *ramp[::-1]]
    assert sum(sizes) == rows
    return sizes


def _report_days(*frames: pd.DataFrame) -> tuple[date, date] | None:
    times = [f["reported_at"] for f in frames if len(f)]
    if not times:
        return None
    lo = min(t.min() for t in times).tz_convert(PARTITION_TZ).date()
    hi = max(t.max() for t in times).tz_convert(PARTITION_TZ).date()
    return lo, hi


def _place_and_merge(ctx: LoadContext, work: pd.DataFrame, frame: pd.DataFrame) -> MergeCounts:
    """Validate, locate and complete the rows batch by batch, storing each batch while the next is prepared.

    What needs the whole file ran before (duplicates within it); what needs the store is read first (the
    stored cases among the file's numbers, categories, admin units, deadline rules), so that while the
    batches run the writer thread alone uses the connection.  Every check is row by row, so a row gets the
    same reason whichever batch it is in.  Known cases are merged at the end.
    """
    assert ctx.mapping is not None
    # Report times are read once here: they decide the batches (by month) and the partitions to make.
    work = work.assign(_reported_utc=_to_utc(work["reported_at"], ctx.mapping.timezone))
    existing = _existing(ctx, work["case_number"])
    known_numbers = existing["case_number"] if not existing.empty else pd.Series([], dtype=object)
    lookups = _Lookups.read(ctx)
    months = month_keys(work["_reported_utc"])
    new_months = set(np.unique(months[~_mask(work["case_number"].isin(known_numbers)) & (months > 0)]).tolist())
    # Months without a partition get a fresh table when their first row is stored (so a month whose rows
    # all fail validation gets none), attached after their last batch.
    fresh = new_months - existing_months(ctx.conn, new_months)
    created: set[int] = set()
    drop_stale_stages(ctx.conn)
    staged = _staged_months(fresh, len(work))
    # (The personal fields are mapped batch by batch: whether the source has any is the mapping's answer.)
    mapped = ctx.mapping.resolve([c for c in frame.columns if c != "_row"])
    has_personal = any(c in mapped or c in ctx.mapping.defaults for c in PERSONAL_COLUMNS)
    reporter_key = drop_empty_reporter_key(ctx.conn, len(work)) if has_personal else None
    writer = BackgroundWriter(ctx.conn)
    helper = StageWriter(ctx.conn.engine, ctx.run_id, staged) if staged else None
    # The public rollups' two assumptions, read from the store now (the writer owns the connection later):
    # which categories open_data hides, and the oldest report day the public window still keeps.
    hidden = lookups.categories[lookups.categories["sensitive"].astype(bool)]
    oldest, newest = work["_reported_utc"].min(), work["_reported_utc"].max()
    delta = CaseRollupDelta(
        sensitive=frozenset(zip(hidden["kind"], hidden["code"], strict=True)),
        public_from=ctx.conn.execute(text("SELECT rollup.public_keep_from()")).scalar_one(),
        # The recurring places' window can start no later than this file's newest day allows.
        recurring_horizon=None if pd.isna(newest) else
        newest.tz_convert(PARTITION_TZ).date() - timedelta(days=RECURRING_WINDOW_DAYS - 1),
    )
    if not pd.isna(newest):  # so that finished months' rollups can be stored while the next are prepared
        delta.read_store(ctx.conn, oldest.tz_convert(PARTITION_TZ).date(), newest.tz_convert(PARTITION_TZ).date())
    new_count, old_parts, new_days = 0, [], []
    try:
        attached: set[int] = set()
        for positions, done in _batches(months):
            batch = _prepare(ctx, _take(work, positions), frame, lookups).assign(source_run_id=ctx.run_id)
            is_known = _mask(batch["case_number"].isin(known_numbers)) if len(known_numbers) else \
                np.zeros(len(batch), dtype=bool)
            if is_known.any():
                old_parts.append(batch[is_known])
            new = _where(batch, ~is_known)
            if len(new):
                copies, stage_copies = _new_case_copies(new, fresh, created, staged)
                writer.submit(partial(_copy_all, copies))
                for month, rows, first in stage_copies:
                    assert helper is not None
                    helper.copy(month, rows, first)
                new_count += len(new)
                new_days.append(new[["reported_at"]])
                delta.add(new, +1)
            if rollup_rows := delta.flush(done):
                writer.submit(partial(copy_rollup_rows, rows=rollup_rows))
            for month in done:
                if month in created:
                    _finish_month(writer, helper, month)
                    attached.add(month)
        for month in sorted(created - attached):
            _finish_month(writer, helper, month)
        # While the helper still fills and indexes its last month: the recurring places and the reporters'
        # key, on this connection.
        if (store_places := delta.recurring_job()) is not None:
            writer.submit(store_places)
        if reporter_key is not None:
            writer.submit(partial(restore_reporter_key, key=reporter_key))
        if helper is not None:
            for month, name in helper.close():
                writer.submit(partial(attach_stage, name=name, month=month))
        writer.close()
    except BaseException:
        writer.abort()
        if helper is not None:
            helper.abort()
        raise
    note_swapped(ctx, np.concatenate(lookups.swapped_rows) if lookups.swapped_rows else np.empty(0, np.int64))
    old = pd.concat(old_parts) if old_parts else work.iloc[0:0]
    updated, unchanged = 0, 0
    if not old.empty:
        old, updated, unchanged, changed = _apply_updates(ctx, old, existing.set_index("case_number"))
        new_days.append(changed[["reported_at"]])
        if not changed.empty:
            before = existing.set_index("case_number").loc[changed["case_number"]].reset_index()
            delta.add(before, -1)
            delta.add(changed, +1)
    _store_reporters(ctx, old, fresh=False)
    return MergeCounts(new=new_count, updated=updated, unchanged=unchanged, report_days=_report_days(*new_days),
                       rollup_delta=delta)


def _finish_month(writer: BackgroundWriter, helper: StageWriter | None, month: int) -> None:
    """A fresh month's last rows are in: attach it (the load's own) or index and commit it (the helper's)."""
    if helper is not None and month in helper.months:
        helper.finish(month)
    else:
        writer.submit(partial(attach_month, month=month))


#: Columns of core.case_record that are nullable and have no default: when a whole frame has none of one,
#: the COPY leaves it out (the server fills NULL) -- a source without voiding, evaluation or component codes
#: then costs nothing for them, neither to encode nor to parse.
_OMITTABLE = frozenset({
    "component_code", "description", "registered_at", "dispatched_at", "handled_at", "closed_at", "voided_at",
    "evaluated_at", "handle_deadline", "close_deadline", "resolution_level", "handling_unit", "satisfaction",
})


def _case_copy(frame: pd.DataFrame) -> list[pgcopy.BinaryRows]:
    geom = (frame["_lon"].to_numpy(), frame["_lat"].to_numpy(), 4326)
    columns = [(c, CASE_COPY_TYPES[c]) for c in CASE_COLUMNS
               if c not in _OMITTABLE or (c in frame and not frame[c].isna().all())]
    return encode_frame(columns, frame, {"geom": geom})


def _reporter_copy(frame: pd.DataFrame) -> list[pgcopy.BinaryRows]:
    """The reporters of these cases (rows with any personal field), encoded for private.case_reporter."""
    present = [c for c in PERSONAL_COLUMNS if c in frame]
    if not present or frame.empty:
        return []
    any_personal = np.zeros(len(frame), dtype=bool)
    for column in present:
        any_personal |= _mask(frame[column].notna())
    rows = _where(frame, any_personal)
    if rows.empty:
        return []
    out = rows[["case_number", "reported_at", "district_code"]].rename(columns={"reported_at": "case_reported_at"})
    for column in PERSONAL_COLUMNS:
        out[column] = _column(rows, column)
    return encode_frame(list(REPORTER_COPY_TYPES.items()), out)


def _new_case_copies(new: pd.DataFrame, fresh: set[int], created: set[int], staged: frozenset[int] = frozenset(),
                     ) -> tuple[list[tuple[str, Any, int | None]], list[tuple[int, Any, bool]]]:
    """New cases encoded per table: their fresh month tables (made first if still to make in ``created``),
    or the parent; and their reporters.  The months in ``staged`` come apart, as (month, rows, first), for
    the helper connection (:class:`etl.bulk.StageWriter`).
    """
    months = month_keys(new["reported_at"])
    in_fresh = np.isin(months, list(fresh)) if fresh else np.zeros(len(new), dtype=bool)
    copies: list[tuple[str, Any, int | None]] = []
    stage_copies: list[tuple[int, Any, bool]] = []
    for month in np.unique(months[in_fresh]).tolist():
        rows = _case_copy(_where(new, months == month))
        if month in staged:
            stage_copies.append((month, rows, month not in created))
        else:
            copies.append((f"core.case_record_{month}", rows, None if month in created else month))
        created.add(month)
    if (~in_fresh).any():
        copies.append(("core.case_record", _case_copy(new[~in_fresh]), None))
    copies.append(("private.case_reporter", _reporter_copy(new), None))
    return copies, stage_copies


def _staged_months(fresh: set[int], rows: int) -> frozenset[int]:
    """The fresh months the helper connection fills: two of every three, for a load big enough to gain by it.

    Two of three because the load's own connection also stores every month's reporters and rollup rows.
    The last month is one of them: its index builds then run beside the load connection's closing work
    (the reporters' key, the rollups) instead of after it.
    """
    if rows < STAGE_MIN_ROWS or len(fresh) < 2:
        return frozenset()
    return frozenset(month for i, month in enumerate(sorted(fresh, reverse=True)) if i % 3 != 2)


def _copy_all(copies: list[tuple[str, list[pgcopy.BinaryRows], int | None]], driver: Any) -> None:
    """(Writer thread) The COPYs of one batch, each after making its month's tables if it is the first."""
    for table, parts, make_month in copies:
        if make_month is not None:
            create_month(driver, make_month)
        copy_binary(driver, table, parts)


def _apply_updates(ctx: LoadContext, incoming: pd.DataFrame,
                   stored: pd.DataFrame) -> tuple[pd.DataFrame, int, int, pd.DataFrame]:
    """Compare incoming rows with the store: reject backward stages, update changed cases, log events.

    Returns the rows kept, the counts of updated and unchanged cases, and the updated rows.
    """
    incoming = incoming.set_index("case_number", drop=False)
    base = stored.loc[incoming.index]
    moved_report = ~_same(incoming["reported_at"], base["reported_at"])
    reasons = {
        number: f"case {number} is stored as reported at {base.at[number, 'reported_at']}; this row says "
        f"{incoming.at[number, 'reported_at']} (a case's report time never changes)"
        for number in incoming.index[moved_report]
    }
    backwards = pd.Series(False, index=incoming.index)
    for column, label in STAGE_COLUMNS.items():
        if column == "reported_at":
            continue
        was, now = base[column], incoming[column]
        cleared = was.notna() & now.isna()
        earlier = was.notna() & now.notna() & (now < was)
        for number in incoming.index[(cleared | earlier) & ~backwards & ~moved_report]:
            reasons[number] = (
                f"stage going backwards: the store has {label} {was[number]}, this row "
                + ("has none" if pd.isna(now[number]) else f"says {now[number]}")
            )
        backwards |= cleared | earlier
    bad = moved_report | backwards.to_numpy()
    if bad.any():
        ctx.rejects.reject_rows(incoming.loc[bad, "_row"], [reasons[n] for n in incoming.index[bad]], "reported_at")
        incoming, base = incoming[~bad], base[~bad]
    # The place is the case's own: an update never moves it, so what follows (the events' district, the
    # rollups' delta) takes the stored one -- else the rollups would count the case where the row says
    # and the store keeps it where it was first located.
    place = [c for c in (*CODE_COLUMNS, *H3_COLUMNS) if c in base.columns and c in incoming.columns]
    elsewhere = np.zeros(len(incoming), dtype=bool)
    for column in place:
        elsewhere |= ~_same(incoming[column], base[column])
    if elsewhere.any():
        ctx.notes.append(f"{int(elsewhere.sum())} update row(s) place their case elsewhere than it is stored; the "
                         "stored place is kept (a case's place never changes with an update)")
    incoming = incoming.assign(**{column: base[column].to_numpy() for column in place})
    changed_columns = {c: ~_same(incoming[c], base[c]) for c in MUTABLE_COLUMNS if c in base.columns}
    changed = np.zeros(len(incoming), dtype=bool)
    for mask in changed_columns.values():
        changed |= mask
    updates = incoming[changed]
    if not updates.empty:
        _write_updates(ctx, updates)
        _append_events(ctx, updates, base[changed], {c: m[changed] for c, m in changed_columns.items()})
    return incoming.reset_index(drop=True), int(changed.sum()), int((~changed).sum()), updates


def _write_updates(ctx: LoadContext, updates: pd.DataFrame) -> None:
    ctx.conn.execute(text(
        "CREATE TEMP TABLE IF NOT EXISTS _case_update (LIKE core.case_record INCLUDING DEFAULTS) ON COMMIT DROP"
    ))
    ctx.conn.execute(text("TRUNCATE _case_update"))
    copy_binary(raw_connection(ctx.conn), "_case_update", _case_copy(updates))
    assignments = ", ".join(f"{c} = u.{c}" for c in MUTABLE_COLUMNS) + ", source_run_id = u.source_run_id, updated_at = now()"
    ctx.conn.execute(text(
        f"UPDATE core.case_record c SET {assignments} FROM _case_update u"  # noqa: S608 (our own column names)
        " WHERE c.case_number = u.case_number AND c.reported_at = u.reported_at"
    ))


def _append_events(ctx: LoadContext, updates: pd.DataFrame, before: pd.DataFrame,
                   changed: dict[str, np.ndarray]) -> None:
    """One event per stage that changed, at the stage's time; extensions and rework at the load's time."""
    events = []
    for column, stage in STAGE_EVENT.items():
        mask = changed.get(column)
        if mask is None or not mask.any():
            continue
        rows = updates[mask]
        was = before.loc[rows.index, column]
        events.append(pd.DataFrame({
            "case_number": rows["case_number"].to_numpy(), "case_reported_at": rows["reported_at"].to_numpy(),
            "district_code": rows["district_code"].to_numpy(), "stage": stage,
            "occurred_at": rows[column].to_numpy(),
            "note": ["" if pd.isna(w) else f"was {w}" for w in was],
        }))
    for column, stage in (("extended", "extended"), ("rework_count", "reworked"), ("returned_count", "returned")):
        mask = changed.get(column)
        if mask is None or not mask.any():
            continue
        rows = updates[mask]
        events.append(pd.DataFrame({
            "case_number": rows["case_number"].to_numpy(), "case_reported_at": rows["reported_at"].to_numpy(),
            "district_code": rows["district_code"].to_numpy(), "stage": stage,
            "occurred_at": ctx.now, "note": [f"{column}: {b} -> {a}" for b, a in
                                             zip(before.loc[rows.index, column], rows[column], strict=True)],
        }))
    if not events:
        return
    frame = pd.concat(events, ignore_index=True).dropna(subset=["occurred_at"])
    frame["source_run_id"] = ctx.run_id
    # ON CONFLICT: the same update loaded twice appends nothing the second time.
    ctx.conn.execute(text(
        "CREATE TEMP TABLE IF NOT EXISTS _case_event_in (LIKE core.case_event) ON COMMIT DROP"))
    ctx.conn.execute(text("TRUNCATE _case_event_in"))
    columns = ["case_number", "case_reported_at", "district_code", "stage", "occurred_at", "note", "source_run_id"]
    copy_frame(ctx.conn, "_case_event_in", frame[columns], columns)
    ctx.conn.execute(text(
        "INSERT INTO core.case_event (case_number, case_reported_at, district_code, stage, occurred_at, note,"
        " source_run_id) SELECT case_number, case_reported_at, district_code, stage, occurred_at, note,"
        " source_run_id FROM _case_event_in ON CONFLICT DO NOTHING"
    ))


def _store_reporters(ctx: LoadContext, frame: pd.DataFrame, fresh: bool) -> None:
    """Reporters' personal data goes to the private schema, keyed by the case.

    New cases' reporters are copied straight in; known cases' are upserted (a later export may add a phone
    number the first lacked, never erase one).
    """
    present = [c for c in PERSONAL_COLUMNS if c in frame]
    if not present or frame.empty:
        return
    rows = frame[frame[present].notna().any(axis=1)]
    if rows.empty:
        return
    out = pd.DataFrame({
        "case_number": rows["case_number"].to_numpy(), "case_reported_at": rows["reported_at"].to_numpy(),
        "district_code": rows["district_code"].to_numpy(),
    })
    for column in PERSONAL_COLUMNS:
        out[column] = rows[column].to_numpy() if column in rows else None
        out[column] = out[column].astype("string")
    columns = ["case_number", "case_reported_at", "district_code", *PERSONAL_COLUMNS]
    if fresh:
        copy_frame(ctx.conn, "private.case_reporter", out, columns)
        return
    ctx.conn.execute(text(
        "CREATE TEMP TABLE IF NOT EXISTS _reporter_in (LIKE private.case_reporter) ON COMMIT DROP"))
    ctx.conn.execute(text("TRUNCATE _reporter_in"))
    copy_frame(ctx.conn, "_reporter_in", out, columns)
    ctx.conn.execute(text(
        "INSERT INTO private.case_reporter SELECT * FROM _reporter_in"
        " ON CONFLICT (case_number, case_reported_at) DO UPDATE SET"
        " reporter_name = coalesce(EXCLUDED.reporter_name, case_reporter.reporter_name),"
        " reporter_phone = coalesce(EXCLUDED.reporter_phone, case_reporter.reporter_phone),"
        " reporter_id_number = coalesce(EXCLUDED.reporter_id_number, case_reporter.reporter_id_number),"
        " address_text = coalesce(EXCLUDED.address_text, case_reporter.address_text)"
    ))
