"""Cases (案件) and their updates: validate, reproject, locate, fill deadlines, and merge by case number.

A case number seen for the first time is inserted; seen again, its row is compared field by field with
the store: identical rows count as unchanged, later stages update the case and append one event per
changed stage to ``core.case_event``.  A stage never moves backwards silently: a row that clears or
moves back a stage the store already has is rejected with both values named.

The first sight of a case is its row in ``core.case_record`` (its timestamps are the stages as first
reported); ``core.case_event`` holds every change seen after that.  The timeline of a case is both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely
from sqlalchemy import text

from etl.context import LoadContext, coordinates_to_wgs84
from etl.store import copy_frame
from geodata.codes import RESOLUTION_LEVELS, SOURCE_CHANNELS, URGENCIES
from geodata.dictionaries import add_working_time, fetch_calendar

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


@dataclass(frozen=True)
class MergeCounts:
    """Stored rows of one source by what happened to them."""

    new: int
    updated: int
    unchanged: int


def load_cases(ctx: LoadContext, frame: pd.DataFrame) -> MergeCounts:
    """Validate, place and merge one source's cases; every row ends stored or in ``ctx.rejects``."""
    assert ctx.mapping is not None
    work = ctx.mapping.apply(frame, required=REQUIRED_FIELDS)
    work = _validate_identity(ctx, work)
    work = _validate_categories(ctx, work)
    work = _parse_times(ctx, work)
    work = _validate_values(ctx, work)
    work, lon, lat = coordinates_to_wgs84(ctx, work)
    work = _locate(ctx, work, lon, lat)
    work = _fill_deadlines(ctx, work)
    work = _check_order(ctx, work)
    return _merge(ctx, work)


# --- validation -----------------------------------------------------------------------------------------


def _validate_identity(ctx: LoadContext, work: pd.DataFrame) -> pd.DataFrame:
    number = work["case_number"]
    work = ctx.rejects.reject(work, number.isna(), "case number (案件编号) is empty", "case_number")
    bad = ~work["case_number"].astype(str).str.fullmatch(r"[0-9A-Za-z_-]{1,40}")
    work = ctx.rejects.reject(
        work, bad, "case number (案件编号) must be 1-40 letters, digits, '-' or '_'", "case_number"
    )
    first_row = work.groupby("case_number")["_row"].transform("min")
    duplicate = work["_row"] != first_row
    reasons = "duplicate of row " + first_row.astype(str) + " in this file (same case number 案件编号)"
    return ctx.rejects.reject(work, duplicate, reasons, "case_number")


def _categories(ctx: LoadContext) -> pd.DataFrame:
    return pd.read_sql(
        text("SELECT kind, code, major_code, is_major, name_zh FROM core.category"), ctx.conn
    )


def _validate_categories(ctx: LoadContext, work: pd.DataFrame) -> pd.DataFrame:
    """Resolve kind and minor category from codes or Chinese names; reject unknown ones."""
    categories = _categories(ctx)
    minors = categories[~categories["is_major"]]
    # A component code implies a component case; otherwise an event unless the source says so.
    kind = work.get("kind", pd.Series(pd.NA, index=work.index, dtype="object"))
    if "component_code" in work:
        kind = kind.where(kind.notna() | work["component_code"].isna(), "component")
    work = work.assign(kind=kind)
    code = work.get("category_code", pd.Series(pd.NA, index=work.index, dtype="object")).astype("object")
    if "minor_name" in work:
        by_name = minors.drop_duplicates(["kind", "name_zh"], keep=False)
        name_kind = work["kind"].fillna("event")
        looked_up = pd.merge(
            pd.DataFrame({"kind": name_kind, "name_zh": work["minor_name"]}),
            by_name[["kind", "name_zh", "code"]],
            on=["kind", "name_zh"],
            how="left",
        )["code"].to_numpy()
        code = code.where(code.notna(), pd.Series(looked_up, index=work.index))
    work = work.assign(category_code=code, kind=work["kind"].fillna("event"))
    work = ctx.rejects.reject(
        work, ~work["kind"].isin(["component", "event"]),
        "case kind (案件类型) " + work["kind"].astype(str) + " is neither 部件 (component) nor 事件 (event)", "kind",
    )
    missing = work["category_code"].isna()
    reason = "no category: neither 小类编码 nor a known 小类 name"
    if "minor_name" in work:
        reason = "unknown category 小类 '" + work["minor_name"].astype(str) + "' (not in the category dictionary)"
    work = ctx.rejects.reject(work, missing, reason, "category_code")
    known = set(zip(minors["kind"], minors["code"], strict=True))
    unknown = ~pd.Series([(k, c) in known for k, c in zip(work["kind"], work["category_code"], strict=True)],
                         index=work.index, dtype=bool)
    return ctx.rejects.reject(
        work, unknown,
        "unknown category code " + work["category_code"].astype(str) + " for kind " + work["kind"].astype(str),
        "category_code",
    )


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
        parsed = _to_utc(raw, tz)
        unreadable = raw.notna() & parsed.isna()
        label = STAGE_COLUMNS.get(column, column)
        work = ctx.rejects.reject(
            work, unreadable, f"cannot read {label} '" + raw.astype(str) + "' as a date and time", column
        )
        work[column] = parsed[~unreadable]
    if not has_handling_stage and work["closed_at"].notna().any():
        # Sources without a handling stage (Open311 has only closed_datetime): closing implies handling.
        work["handled_at"] = work["closed_at"]
        ctx.note("the source has no handling time (处置时间): closed cases are taken as handled when closed")
    future = pd.Series(False, index=work.index)
    for column in STAGE_COLUMNS:
        future |= work[column] > ctx.now + _CLOCK_SKEW
    work = ctx.rejects.reject(work, future, "a stage time lies in the future (clock or export error)", "reported_at")
    return ctx.rejects.reject(work, work["reported_at"].isna(), "report time (上报时间) is empty", "reported_at")


def _to_utc(raw: pd.Series, tz: str) -> pd.Series:
    text_values = raw.astype("string")
    parsed = pd.to_datetime(text_values, errors="coerce", format="mixed", utc=False)
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        return parsed.dt.tz_convert("UTC")
    if parsed.dtype == object:  # a mix of aware and naive values: parse each kind apart
        aware = text_values.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True, na=False)
        out = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]")
        out[aware] = pd.to_datetime(text_values[aware], errors="coerce", format="mixed", utc=True)
        naive = pd.to_datetime(text_values[~aware], errors="coerce", format="mixed")
        out[~aware] = naive.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
        return out
    return parsed.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")


def _truthy(series: pd.Series) -> pd.Series:
    lowered = series.astype("string").str.strip().str.lower()
    result = lowered.map({"true": True, "1": True, "yes": True, "y": True, "是": True,
                          "false": False, "0": False, "no": False, "n": False, "否": False})
    return result.astype("boolean")


def _validate_values(ctx: LoadContext, work: pd.DataFrame) -> pd.DataFrame:
    """Channels, urgency, levels, flags, counts and satisfaction: known words and sane numbers only."""
    if "source_channel" not in work:
        work["source_channel"] = pd.NA
    channel = work["source_channel"]
    work = ctx.rejects.reject(
        work, ~channel.isin(list(SOURCE_CHANNELS)),
        "unknown source channel (问题来源) '" + channel.astype(str) + "'", "source_channel",
    )
    work["urgency"] = work.get("urgency", pd.Series(pd.NA, index=work.index)).fillna("normal")
    work = ctx.rejects.reject(
        work, ~work["urgency"].isin(list(URGENCIES)), "unknown urgency (紧急程度) '" + work["urgency"].astype(str) + "'",
        "urgency",
    )
    level = work.get("resolution_level", pd.Series(pd.NA, index=work.index))
    work = ctx.rejects.reject(
        work, level.notna() & ~level.isin(list(RESOLUTION_LEVELS)),
        "unknown resolution level (解决层级) '" + level.astype(str) + "'", "resolution_level",
    )
    for flag in ("extended", "self_handled"):
        raw = work.get(flag, pd.Series(pd.NA, index=work.index))
        parsed = _truthy(raw)
        work = ctx.rejects.reject(work, raw.notna() & parsed.isna(), f"{flag} must be yes/no (是/否)", flag)
        work[flag] = parsed[work.index].fillna(False).astype(bool)
    for count in ("rework_count", "returned_count"):
        raw = work.get(count, pd.Series(pd.NA, index=work.index))
        parsed = pd.to_numeric(raw, errors="coerce")
        bad = raw.notna() & (parsed.isna() | (parsed < 0) | (parsed % 1 != 0) | (parsed > 1000))
        work = ctx.rejects.reject(work, bad, f"{count} must be a whole number from 0", count)
        work[count] = parsed[work.index].fillna(0).astype("int16")
    raw = work.get("satisfaction", pd.Series(pd.NA, index=work.index))
    parsed = pd.to_numeric(raw, errors="coerce")
    bad = raw.notna() & (parsed.isna() | ~parsed.isin([1, 2, 3, 4, 5]))
    work = ctx.rejects.reject(work, bad, "satisfaction (满意度) must be 1-5 or a rating word", "satisfaction")
    work["satisfaction"] = parsed[work.index].astype("Int16")
    component = work.get("component_code", pd.Series(pd.NA, index=work.index))
    bad = component.notna() & ~component.astype(str).str.fullmatch(r"[0-9]{16}")
    work = ctx.rejects.reject(work, bad, "component code (部件编码) must be 16 digits", "component_code")
    bad = work.get("component_code", pd.Series(pd.NA, index=work.index)).notna() & (work["kind"] != "component")
    return ctx.rejects.reject(work, bad, "an event case cannot carry a component code", "component_code")


def _locate(ctx: LoadContext, work: pd.DataFrame, lon: np.ndarray, lat: np.ndarray) -> pd.DataFrame:
    from etl.locate import h3_cells, locate_points

    units = locate_points(ctx.admin_index, lon, lat)
    outside = units["district_code"].isna().to_numpy()
    reasons = pd.Series(
        [f"outside the city: no district contains ({x:.6f}, {y:.6f}) after conversion to WGS 84"
         for x, y in zip(lon[outside], lat[outside], strict=True)],
        index=work.index[outside], dtype="object",
    ).reindex(work.index)
    keep = ~outside
    work = ctx.rejects.reject(work, pd.Series(outside, index=work.index), reasons, "lon")
    lon, lat = lon[keep], lat[keep]
    units = units[keep]
    for column in ("district_code", "street_code", "community_code", "grid_code"):
        work[column] = units[column].to_numpy()
    cells = h3_cells(lon, lat)
    for column in cells.columns:
        work[column] = cells[column].to_numpy()
    work["geom"] = shapely.to_wkb(shapely.points(lon, lat), hex=True, include_srid=True) if len(lon) else []
    # The component code's district must agree with where the case lies.
    component = work.get("component_code", pd.Series(pd.NA, index=work.index))
    wrong = component.notna() & (component.astype(str).str[:6] != work["district_code"])
    return ctx.rejects.reject(
        work, wrong, "component code (部件编码) names another district than the case's location", "component_code"
    )


def _fill_deadlines(ctx: LoadContext, work: pd.DataFrame) -> pd.DataFrame:
    """Missing deadlines come from the deadline rules (处置时限) of the category and urgency, in working time."""
    need = work["handle_deadline"].isna() | work["close_deadline"].isna()
    if not need.any():
        return work
    rules = pd.read_sql(
        text("SELECT kind, category_code, urgency, handle_limit, close_limit, limit_unit FROM core.deadline_rule"),
        ctx.conn,
    )
    subset = work.loc[need, ["kind", "category_code", "urgency", "reported_at", "registered_at"]]
    joined = subset.reset_index().merge(rules, on=["kind", "category_code", "urgency"], how="left").set_index("index")
    has_rule = joined["limit_unit"].notna()
    start = joined["registered_at"].fillna(joined["reported_at"])
    calendar = fetch_calendar(ctx.conn)
    if has_rule.any():
        s = start[has_rule]
        units = joined.loc[has_rule, "limit_unit"].to_numpy()
        handle = add_working_time(s, joined.loc[has_rule, "handle_limit"].astype(float).to_numpy(), units, calendar)
        close = add_working_time(s, joined.loc[has_rule, "close_limit"].astype(float).to_numpy(), units, calendar)
        idx = handle.index
        work.loc[idx, "handle_deadline"] = work.loc[idx, "handle_deadline"].fillna(handle.dt.tz_convert("UTC"))
        work.loc[idx, "close_deadline"] = work.loc[idx, "close_deadline"].fillna(close.dt.tz_convert("UTC"))
    return work


def _check_order(ctx: LoadContext, work: pd.DataFrame) -> pd.DataFrame:
    """The closed loop runs forward (the same rules as the table's CHECK constraints, with reasons)."""
    reported, registered = work["reported_at"], work["registered_at"]
    dispatched, handled, closed = work["dispatched_at"], work["handled_at"], work["closed_at"]
    before_dispatch = dispatched.fillna(registered).fillna(reported)
    checks = [
        (registered < reported, "立案时间 is before 上报时间"),
        (dispatched < registered.fillna(reported), "派遣时间 is before 立案时间/上报时间"),
        (handled < before_dispatch, "处置时间 is before 派遣时间"),
        (closed < handled.fillna(before_dispatch), "结案时间 is before 处置时间"),
        (closed.notna() & handled.isna(), "结案时间 without 处置时间: a case is handled before it is closed"),
        (work["voided_at"] < reported, "作废时间 is before 上报时间"),
        (work["voided_at"].notna() & closed.notna(), "a case cannot be both voided (作废) and closed (结案)"),
        (work["evaluated_at"] < closed, "评价时间 is before 结案时间"),
        (work["handle_deadline"] <= reported, "处置时限 is not after 上报时间"),
        (work["close_deadline"] < work["handle_deadline"], "结案时限 is before 处置时限"),
        (work["self_handled"] & dispatched.notna(), "a self-handled case (自行处置) is not dispatched"),
        (work["resolution_level"].notna() & handled.isna() if "resolution_level" in work
         else pd.Series(False, index=work.index), "a resolution level without 处置时间"),
    ]
    for mask, reason in checks:
        work = ctx.rejects.reject(work, mask.reindex(work.index), f"impossible timestamps: {reason}", "reported_at")
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
    both_na = a.isna().to_numpy() & b.isna().to_numpy()
    with np.errstate(invalid="ignore"):
        equal = (a.astype("object").to_numpy() == b.astype("object").to_numpy())
    return both_na | (equal & ~a.isna().to_numpy() & ~b.isna().to_numpy())


def _merge(ctx: LoadContext, work: pd.DataFrame) -> MergeCounts:
    work = work.copy()
    work["source_run_id"] = ctx.run_id
    for column in ("description", "handling_unit", "component_code", "resolution_level"):
        if column not in work:
            work[column] = pd.NA
    existing = _existing(ctx, work["case_number"])
    if existing.empty:
        new, old = work, work.iloc[0:0]
    else:
        known = work["case_number"].isin(existing["case_number"])
        new, old = work[~known], work[known]
    updated, unchanged = 0, 0
    if not old.empty:
        old, updated, unchanged = _apply_updates(ctx, old, existing.set_index("case_number"))
    if not new.empty:
        ctx.conn.execute(
            text("SELECT core.ensure_case_partitions(:first, :last)"),
            {"first": new["reported_at"].min().to_pydatetime(), "last": new["reported_at"].max().to_pydatetime()},
        )
        copy_frame(ctx.conn, "core.case_record", _for_copy(new), CASE_COLUMNS)
    _store_reporters(ctx, new, fresh=True)
    _store_reporters(ctx, old, fresh=False)
    return MergeCounts(new=len(new), updated=updated, unchanged=unchanged)


def _for_copy(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame[list(CASE_COLUMNS)].copy()
    for column in ("satisfaction",):
        out[column] = out[column].astype("Int16")
    for column in ("h3_r7", "h3_r8", "h3_r9", "h3_r10"):
        out[column] = out[column].astype("int64")
    for column in ("category_code", "component_code", "description", "handling_unit", "resolution_level",
                   "street_code", "community_code", "grid_code"):
        out[column] = out[column].astype("object").where(out[column].notna(), None).astype("string")
    return out


def _apply_updates(ctx: LoadContext, incoming: pd.DataFrame, stored: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """Compare incoming rows with the store: reject backward stages, update changed cases, log events."""
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
    changed_columns = {c: ~_same(incoming[c], base[c]) for c in MUTABLE_COLUMNS if c in base.columns}
    changed = np.zeros(len(incoming), dtype=bool)
    for mask in changed_columns.values():
        changed |= mask
    updates = incoming[changed]
    if not updates.empty:
        _write_updates(ctx, updates)
        _append_events(ctx, updates, base[changed], {c: m[changed] for c, m in changed_columns.items()})
    return incoming.reset_index(drop=True), int(changed.sum()), int((~changed).sum())


def _write_updates(ctx: LoadContext, updates: pd.DataFrame) -> None:
    ctx.conn.execute(text(
        "CREATE TEMP TABLE IF NOT EXISTS _case_update (LIKE core.case_record INCLUDING DEFAULTS) ON COMMIT DROP"
    ))
    ctx.conn.execute(text("TRUNCATE _case_update"))
    copy_frame(ctx.conn, "_case_update", _for_copy(updates), CASE_COLUMNS)
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
