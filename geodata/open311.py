"""Open311 GeoReport v2 read side: services (the case categories) and service requests (the public cases).

Reads only the ``open_data`` views with the public engine: the delay, the window, the hidden sensitive
categories and the snapped locations come from the views; descriptions come from
``open_data.case_description`` (scrubbed in the database) and are scrubbed here once more with the same
rules (``scrub_text``), so a rule added on one side alone still protects.

Vocabulary (GeoReport v2): a *service* is a category, ``service_code`` = ``<kind>-<code>`` (``event-0102``
暴露垃圾, ``component-0101`` 上水井盖: category codes repeat between kinds); a *request* is a case,
``service_request_id`` = its case number.  ``status`` is ``open`` or ``closed``; the finer stage
(上报, 立案, 派遣, 处置, 结案) goes into ``status_notes``; ``expected_datetime`` is the handling deadline
(处置时限); ``lat``/``long`` are the grid's representative point, never the case's own place.

Paging past the specification's 1,000 per answer: ``page`` (1-based) and ``page_size`` (1..1000), newest
first; or step ``end_date`` back to the oldest ``requested_datetime`` of the previous answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, TIMESTAMP
from sqlalchemy.types import Text

from geodata.errors import CityGridError

TIMEZONE: Final = ZoneInfo("Asia/Shanghai")
MAX_WINDOW: Final = timedelta(days=90)  # GeoReport v2: a date range "may not span more than 90 days"
MAX_PAGE_SIZE: Final = 1000  # GeoReport v2: at most 1,000 requests per answer
MAX_PAGE: Final = 1000  # deeper than 1,000,000 rows: step end_date instead (cheaper for the server)
MAX_IDS: Final = 100
MAX_CODES: Final = 50
STATUSES: Final = ("open", "closed")
_SERVICE_CODE = re.compile(r"^(component|event)-([0-9]{4})$")
_CASE_NUMBER = re.compile(r"^[0-9A-Za-z_-]{1,40}$")

#: Stage words for status_notes, by the view's status.
STAGE_NOTES: Final[dict[str, dict[str, str]]] = {
    "reported": {"zh-CN": "已上报，待立案", "en": "Reported, awaiting registration"},
    "registered": {"zh-CN": "已立案，待派遣", "en": "Registered, awaiting dispatch"},
    "dispatched": {"zh-CN": "已派遣，处置中", "en": "Dispatched, being handled"},
    "handled": {"zh-CN": "已处置，待核查结案", "en": "Handled, awaiting verification"},
    "closed": {"zh-CN": "已结案", "en": "Closed"},
}
LEVEL_NOTES: Final[dict[str, dict[str, str]]] = {
    "grid": {"zh-CN": "网格内解决", "en": "solved in the grid"},
    "community": {"zh-CN": "社区解决", "en": "solved by the community"},
    "street": {"zh-CN": "街道解决", "en": "solved by the street"},
    "district": {"zh-CN": "区级部门解决", "en": "solved by a district department"},
    "city": {"zh-CN": "市级部门解决", "en": "solved by a city department"},
}

# --- scrubbing (the same rules as open_data.scrub_text in migration 0004) -------------------------------

_SCRUB_RULES: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    (re.compile(r"(?<![0-9])[0-9]{17}[0-9Xx](?![0-9A-Za-z])|(?<![0-9])[0-9]{15}(?![0-9])"), "[证件号已隐去]"),
    (re.compile(r"(?<![0-9])(\+?86[- ]?)?1[3-9][0-9]([- ]?[0-9]{4}){2}(?![0-9])"), "[电话已隐去]"),
    (re.compile(r"(?<![0-9])(\(?0[0-9]{2,3}\)?[- ]?)?[2-9][0-9]{6,7}(?![0-9])"), "[电话已隐去]"),
    (re.compile(r"[0-9０-９]+(-[0-9]+)?(号楼|号院|号|栋|幢|单元|室|层|楼)"), r"*\2"),
    (re.compile(r"[一-龥](先生|女士|小姐|师傅|阿姨|大爷|大妈)"), r"某\1"),
    (re.compile(r"\s+"), " "),
)


def scrub_text(raw: str | None) -> str | None:
    """Free text with ID numbers, mobile and landline numbers, house numbers and 王先生-style names blanked."""
    if raw is None:
        return None
    for pattern, replacement in _SCRUB_RULES:
        raw = pattern.sub(replacement, raw)
    return raw


# --- parameters ---------------------------------------------------------------------------------------


class Open311Error(CityGridError):
    """A request the API refuses; ``status`` is the HTTP status it answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RequestQuery:
    """Validated filters of GET requests: [start, end), service codes, statuses, ids and the page."""

    start: datetime
    end: datetime
    service_codes: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    page: int = 1
    page_size: int = MAX_PAGE_SIZE

    def cache_key(self) -> tuple[Any, ...]:
        """The query as plain values, for the answer cache."""
        return (self.start.isoformat(), self.end.isoformat(), self.service_codes, self.statuses, self.ids,
                self.page, self.page_size)


def parse_datetime(value: str, name: str) -> datetime:
    """An ISO 8601 date or date-time; without an offset it is Asia/Shanghai time."""
    if len(value) > 40:
        raise Open311Error(f"{name} is not an ISO 8601 date-time")
    try:
        parsed = datetime.fromisoformat(value.strip().replace(" ", "T", 1) if "T" not in value else value.strip())
    except ValueError:
        raise Open311Error(f"{name} is not an ISO 8601 date-time, e.g. 2025-03-01T00:00:00+08:00") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=TIMEZONE)
    if not 1990 <= parsed.year <= 2200:
        raise Open311Error(f"{name} is out of range")
    return parsed


def parse_service_code(code: str) -> tuple[str, str]:
    """``event-0102`` → ("event", "0102"), else Open311Error."""
    match = _SERVICE_CODE.match(code)
    if not match:
        raise Open311Error(f"service_code must look like event-0102 or component-0101, not {code[:40]!r}")
    return match.group(1), match.group(2)


def _split(value: str | None, name: str, limit: int) -> tuple[str, ...]:
    if value is None or value.strip() == "":
        return ()
    items = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if len(items) > limit:
        raise Open311Error(f"at most {limit} values of {name}")
    return items


def _whole(value: str | None, name: str, low: int, high: int, default: int) -> int:
    if value is None or value == "":
        return default
    if not value.isdigit() or len(value) > 9:
        raise Open311Error(f"{name} must be a whole number between {low} and {high}")
    number = int(value)
    if not low <= number <= high:
        raise Open311Error(f"{name} must be a whole number between {low} and {high}")
    return number


def request_query(args: dict[str, str | None], now: datetime | None = None) -> RequestQuery:
    """Validate GET requests' parameters (GeoReport v2 plus ``page``/``page_size``); Open311Error if bad.

    Defaults as the specification: the last 90 days; a range given on one side runs 90 days from it; a
    range longer than 90 days, or ending before it starts, is refused.
    """
    # The default end is the next full hour: the views hide the newest hours anyway, and a default window
    # that moves once an hour lets answers be cached for that hour.
    now = now or (datetime.now(TIMEZONE).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1))
    start_raw, end_raw = args.get("start_date"), args.get("end_date")
    start = parse_datetime(start_raw, "start_date") if start_raw else None
    end = parse_datetime(end_raw, "end_date") if end_raw else None
    if start is None and end is None:
        end = now
    if start is None:
        assert end is not None
        start = end - MAX_WINDOW
    if end is None:
        end = min(start + MAX_WINDOW, max(now, start))
    if end < start:
        raise Open311Error("end_date is before start_date")
    if end - start > MAX_WINDOW:
        raise Open311Error("start_date and end_date may not span more than 90 days")
    codes = _split(args.get("service_code"), "service_code", MAX_CODES)
    for code in codes:
        parse_service_code(code)
    statuses = tuple(s.lower() for s in _split(args.get("status"), "status", 2))
    for status in statuses:
        if status not in STATUSES:
            raise Open311Error("status must be open, closed or both (open,closed)")
    ids = _split(args.get("service_request_id"), "service_request_id", MAX_IDS)
    for number in ids:
        if not _CASE_NUMBER.match(number):
            raise Open311Error("service_request_id holds letters, digits, - and _ only")
    page = _whole(args.get("page"), "page", 1, MAX_PAGE, 1)
    page_size = _whole(args.get("page_size"), "page_size", 1, MAX_PAGE_SIZE, MAX_PAGE_SIZE)
    return RequestQuery(start, end, codes, statuses, ids, page, page_size)


def check_request_id(value: str) -> str:
    """A case number as the schema allows it, else Open311Error (400)."""
    if not _CASE_NUMBER.match(value):
        raise Open311Error("service_request_id holds letters, digits, - and _ only")
    return value


# --- reading ------------------------------------------------------------------------------------------

_SERVICES_SQL: Final = text(
    "SELECT c.kind, c.code, c.name_zh, c.name_en, m.name_zh AS group_zh, m.name_en AS group_en"
    " FROM open_data.category c LEFT JOIN open_data.category m ON m.kind = c.kind AND m.code = c.major_code"
    " WHERE NOT c.is_major ORDER BY c.kind, c.code"
)
_REQUESTS_SQL: Final = text(
    "SELECT c.case_number, c.reported_at, c.kind, c.category_code, c.status, c.registered_at, c.dispatched_at,"
    " c.handled_at, c.closed_at, c.handle_deadline, c.resolution_level, c.street_code, c.community_code,"
    " c.district_code"
    " FROM open_data.case_public c"
    " WHERE c.reported_at >= :start AND c.reported_at < :end"
    " AND (CAST(:codes AS text[]) IS NULL OR (c.kind || '-' || c.category_code) = ANY(CAST(:codes AS text[])))"
    " AND (:want_open OR c.status = 'closed') AND (:want_closed OR c.status <> 'closed')"
    " AND (CAST(:ids AS text[]) IS NULL OR c.case_number = ANY(CAST(:ids AS text[])))"
    " ORDER BY c.reported_at DESC, c.case_number LIMIT :limit OFFSET :offset"
).bindparams(bindparam("codes", type_=ARRAY(Text)), bindparam("ids", type_=ARRAY(Text)))
# Location and description only for the page's rows, by key (the view's joins then run for those alone).
# The description is a LATERAL lookup by each of the page's keys (OFFSET 0 keeps the planner from pulling
# it up): as a plain LEFT JOIN on the view, the planner joined the whole of case_description (every public
# case, 18 s at 10 million cases) before keeping the page's rows.
_DETAILS_SQL: Final = text(
    "SELECT c.case_number, c.reported_at, ST_X(c.geom) AS lon, ST_Y(c.geom) AS lat, d.description"
    " FROM unnest(CAST(:numbers AS text[]), CAST(:times AS timestamptz[])) AS k(case_number, reported_at)"
    " JOIN open_data.case_public c ON c.case_number = k.case_number AND c.reported_at = k.reported_at"
    " LEFT JOIN LATERAL (SELECT d.description FROM open_data.case_description d"
    "   WHERE d.case_number = k.case_number AND d.reported_at = k.reported_at OFFSET 0) d ON true"
).bindparams(bindparam("numbers", type_=ARRAY(Text)), bindparam("times", type_=ARRAY(TIMESTAMP(timezone=True))))
_NAMES_SQL: Final = text("SELECT code, name FROM open_data.admin_unit WHERE code = ANY(CAST(:codes AS text[]))"
                         ).bindparams(bindparam("codes", type_=ARRAY(Text)))


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(TIMEZONE).isoformat(timespec="seconds") if value is not None else None


def services(conn: Connection, lang: str = "zh-CN") -> list[dict[str, Any]]:
    """GET services: every public (not sensitive) minor category as a GeoReport v2 service."""
    english = lang == "en"
    out = []
    for row in conn.execute(_SERVICES_SQL).mappings():
        kind_word = ("Component" if row["kind"] == "component" else "Event") if english else \
            ("部件" if row["kind"] == "component" else "事件")
        out.append({
            "service_code": f"{row['kind']}-{row['code']}",
            "service_name": row["name_en"] if english else row["name_zh"],
            "description": f"{kind_word} {row['code']}: {row['name_en'] if english else row['name_zh']}",
            "metadata": False,
            "type": "realtime",
            "keywords": row["kind"],
            "group": (row["group_en"] if english else row["group_zh"]) or "",
        })
    return out


def service_definition(conn: Connection, code: str) -> dict[str, Any]:
    """GET service definition: no extra attributes (metadata is false); Open311Error 404 if unknown."""
    kind, category = parse_service_code(code)
    found = conn.execute(
        text("SELECT 1 FROM open_data.category WHERE kind = :kind AND code = :code AND NOT is_major"),
        {"kind": kind, "code": category},
    ).first()
    if not found:
        raise Open311Error("no such service", status=404)
    return {"service_code": code, "attributes": []}


def _status_notes(row: dict[str, Any], lang: str) -> str:
    note = STAGE_NOTES.get(row["status"], {}).get(lang) or row["status"]
    level = LEVEL_NOTES.get(row["resolution_level"] or "", {}).get(lang)
    return f"{note}（{level}）" if level and lang == "zh-CN" else (f"{note} ({level})" if level else note)


_VISIBLE_END_SQL: Final = text("SELECT now() - make_interval(hours => delay_hours) FROM open_data.public_policy")
#: Lower bounds tried before the query's own start, newest first (see :func:`service_requests`).
PROBE_SPANS: Final = (timedelta(hours=6), timedelta(days=2), timedelta(days=10), timedelta(days=30))


def service_requests(conn: Connection, query: RequestQuery, lang: str = "zh-CN") -> list[dict[str, Any]]:
    """GET requests: one page of the public cases that match ``query``, newest first.

    Why probe: cases have no index by report time alone, so "the newest 200 of 90 days" sorted the whole
    window (2.5 million cases at city scale, seconds).  The page is first sought among the cases of the
    last few hours before ``end``, then of wider spans: a span that yields a full page holds the page's
    exact rows (every case before it is older), so the answer is the same as over the whole window.
    Requests by id need no probing (the primary key finds them).
    """
    statuses = set(query.statuses or STATUSES)
    params: dict[str, Any] = {
        "start": query.start, "end": query.end,
        "codes": list(query.service_codes) or None, "ids": list(query.ids) or None,
        "want_open": "open" in statuses, "want_closed": "closed" in statuses,
        "limit": query.page_size, "offset": (query.page - 1) * query.page_size,
    }
    # Spans end where the view's visible cases end (the delay), not at ``end``, which is often later.
    visible = conn.execute(_VISIBLE_END_SQL).scalar_one()
    end = min(query.end, visible)
    starts = [end - span for span in ([] if query.ids else PROBE_SPANS) if end - span > query.start]
    for start in starts:  # a full page from a span is the page of the whole window
        rows = [dict(r) for r in conn.execute(_REQUESTS_SQL, {**params, "start": start}).mappings()]
        if len(rows) == query.page_size:
            return _complete(conn, rows, lang)
    rows = [dict(r) for r in conn.execute(_REQUESTS_SQL, params).mappings()]
    return _complete(conn, rows, lang)


def service_request(conn: Connection, number: str, lang: str = "zh-CN") -> list[dict[str, Any]]:
    """GET one request by id: a list (GeoReport v2 answers a list) of the public cases with that number."""
    check_request_id(number)
    far = datetime(1990, 1, 1, tzinfo=TIMEZONE)
    query = RequestQuery(far, datetime(2200, 1, 1, tzinfo=TIMEZONE), ids=(number,), page_size=10)
    found = service_requests(conn, query, lang)
    if not found:
        raise Open311Error("no such public service request", status=404)
    return found


def _complete(conn: Connection, rows: list[dict[str, Any]], lang: str) -> list[dict[str, Any]]:
    if not rows:
        return []
    details = {
        (d["case_number"], d["reported_at"]): d
        for d in conn.execute(_DETAILS_SQL, {"numbers": [r["case_number"] for r in rows],
                                             "times": [r["reported_at"] for r in rows]}).mappings()
    }
    codes = {c for r in rows for c in (r["district_code"], r["street_code"], r["community_code"]) if c}
    names = {n.code: n.name for n in conn.execute(_NAMES_SQL, {"codes": sorted(codes)})}
    category_names = {
        (c.kind, c.code): (c.name_en if lang == "en" else c.name_zh)
        for c in conn.execute(text("SELECT kind, code, name_zh, name_en FROM open_data.category"))
    }
    out = []
    for row in rows:
        detail = details.get((row["case_number"], row["reported_at"]), {})
        stages = [row[k] for k in ("reported_at", "registered_at", "dispatched_at", "handled_at", "closed_at")]
        address = "".join(names.get(c, "") for c in (row["district_code"], row["street_code"],
                                                       row["community_code"]) if c)
        lon, lat = detail.get("lon"), detail.get("lat")
        out.append({
            "service_request_id": row["case_number"],
            "status": "closed" if row["status"] == "closed" else "open",
            "status_notes": _status_notes(row, lang),
            "service_name": category_names.get((row["kind"], row["category_code"]), ""),
            "service_code": f"{row['kind']}-{row['category_code']}",
            "description": scrub_text(detail.get("description")) or "",
            "agency_responsible": "",
            "service_notice": "",
            "requested_datetime": _iso(row["reported_at"]),
            "updated_datetime": _iso(max(s for s in stages if s is not None)),
            "expected_datetime": _iso(row["handle_deadline"]),
            "address": address,
            "address_id": "",
            "zipcode": "",
            "lat": round(float(lat), 6) if lat is not None else None,
            "long": round(float(lon), 6) if lon is not None else None,
            "media_url": "",
        })
    return out
