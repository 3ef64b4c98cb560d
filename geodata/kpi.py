"""The standard rates of digital urban management (处置率, 按期处置率, 结案率, 按期结案率 …), defined once.

Every page, export, the big screen and ``citygrid kpi`` take their figures from here, so they never
disagree.  Formulas follow shared/domain.md ("Standard rates"); where cities differ (which cases count as
due, weights of the composite index) the choice is a parameter with the default documented below.

The period rule (one, applied everywhere): a period's figures are those of the **cases reported in the
period** (a cohort, by report time in Asia/Shanghai, both dates inclusive), with their state **as of** a
moment (default: now).  So a January case closed in March counts as closed in January's figures once March
has come.  A case is **due to close** (应结案) when it is not voided and is either closed or past its close
deadline as of that moment; **on time** means at or before the deadline (exactly at the deadline is on
time); a reworked case is counted once and its rework once; an extended case's deadline is the extended
one, and with ``exclude_extended_from_due`` (some cities' rule) extended cases leave the denominator of
按期结案率.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, text

from geodata.codes import CASE_KINDS, RESOLUTION_LEVELS, SOURCE_CHANNELS
from geodata.errors import CityGridError

TIMEZONE: Final = ZoneInfo("Asia/Shanghai")


class KpiError(CityGridError):
    """A period, area or filter that cannot be measured (named in the message)."""


@dataclass(frozen=True)
class CaseCounts:
    """The counts every rate is made of, for one cohort of cases (see the module docstring)."""

    reported: int = 0  # 上报数
    voided: int = 0  # 作废数
    valid_reported: int = 0  # 有效上报数 = reported - voided
    registered: int = 0  # 立案数
    registered_voided: int = 0  # registered, then voided (for 准确立案率)
    self_handled: int = 0  # 自行处置数
    dispatched: int = 0  # 派遣数 = 应处置数
    handled: int = 0  # 处置数 (of the dispatched)
    handled_on_time: int = 0  # 按期处置数
    overdue_open: int = 0  # 超期待处置数: dispatched, not handled, past the handling deadline
    extended: int = 0  # 延期数
    due_close: int = 0  # 应结案数
    closed: int = 0  # 结案数
    closed_on_time: int = 0  # 按期结案数
    due_close_not_extended: int = 0  # 应结案数 without extended cases
    closed_on_time_not_extended: int = 0
    reworked: int = 0  # 返工数 (cases reworked at least once)
    resolved_grid: int = 0  # closed cases by the level that solved them (解决层级)
    resolved_community: int = 0
    resolved_street: int = 0
    resolved_district: int = 0
    resolved_city: int = 0
    satisfaction_sum: int = 0
    satisfaction_count: int = 0
    handle_hours_sum: float = 0.0  # report to handled, for cases handled
    handle_hours_count: int = 0

    @property
    def resolved(self) -> int:
        """Closed cases with a known resolution level."""
        return (self.resolved_grid + self.resolved_community + self.resolved_street + self.resolved_district
                + self.resolved_city)


@dataclass(frozen=True)
class RateDefinition:
    """One rate: its key, names, and numerator and denominator as CaseCounts fields."""

    key: str
    name_zh: str
    name_en: str
    numerator: str
    denominator: str
    formula: str


RATES: Final[tuple[RateDefinition, ...]] = (
    RateDefinition("valid_report_rate", "有效上报率", "Valid report rate", "valid_reported", "reported",
                   "有效上报数 / 上报数"),
    RateDefinition("registration_rate", "立案率", "Registration rate", "registered", "valid_reported",
                   "立案数 / 有效上报数"),
    RateDefinition("accurate_registration_rate", "准确立案率", "Accurate registration rate",
                   "registered_accurate", "registered", "(立案数 − 作废数) / 立案数"),
    RateDefinition("self_handled_share", "自行处置率", "Self-handled share", "self_handled", "reported",
                   "自行处置数 / 上报数"),
    RateDefinition("handling_rate", "处置率", "Handling rate", "handled", "dispatched", "处置数 / 应处置数"),
    RateDefinition("on_time_handling_rate", "按期处置率", "On-time handling rate", "handled_on_time", "dispatched",
                   "按期处置数 / 应处置数"),
    RateDefinition("overdue_open_rate", "超期待处置率", "Overdue open rate", "overdue_open", "dispatched",
                   "超期待处置数 / 应处置数"),
    RateDefinition("extension_rate", "延期率", "Extension rate", "extended", "dispatched", "延期数 / 应处置数"),
    RateDefinition("closing_rate", "结案率", "Closing rate", "closed", "due_close", "结案数 / 应结案数"),
    RateDefinition("on_time_closing_rate", "按期结案率", "On-time closing rate", "closed_on_time", "due_close",
                   "按期结案数 / 应结案数"),
    RateDefinition("rework_rate", "返工率", "Rework rate", "reworked", "due_close", "返工数 / 应结案数"),
    RateDefinition("grid_resolution_share", "网格解决率", "Solved in the grid", "resolved_grid", "resolved",
                   "网格解决数 / 解决数"),
    RateDefinition("community_resolution_share", "社区解决率", "Solved in the community", "resolved_community",
                   "resolved", "社区解决数 / 解决数"),
    RateDefinition("street_resolution_share", "街道解决率", "Solved in the street", "resolved_street", "resolved",
                   "街道解决数 / 解决数"),
    RateDefinition("district_resolution_share", "区级解决率", "Solved in the district", "resolved_district",
                   "resolved", "区级解决数 / 解决数"),
    RateDefinition("city_resolution_share", "市级解决率", "Solved by the city", "resolved_city", "resolved",
                   "市级部门解决数 / 解决数"),
)
RATES_BY_KEY: Final = {rate.key: rate for rate in RATES}

#: 综合指标值 weights (domain.md's example; a city sets its own): each term is a rate or (1 - rate).
DEFAULT_COMPOSITE_WEIGHTS: Final[dict[str, tuple[float, bool]]] = {
    "handling_rate": (30.0, False),
    "on_time_handling_rate": (20.0, False),
    "rework_rate": (20.0, True),
    "overdue_open_rate": (20.0, True),
    "extension_rate": (10.0, True),
}


def _value(counts: CaseCounts, name: str, exclude_extended_from_due: bool) -> float:
    if name == "registered_accurate":
        return counts.registered - counts.registered_voided
    if exclude_extended_from_due and name == "due_close":
        return counts.due_close_not_extended
    if exclude_extended_from_due and name == "closed_on_time":
        return counts.closed_on_time_not_extended
    return float(getattr(counts, name))


def compute_rates(counts: CaseCounts, exclude_extended_from_due: bool = False) -> dict[str, float | None]:
    """Every rate as a fraction in [0, 1]; None where the denominator is zero (nothing to measure)."""
    out: dict[str, float | None] = {}
    for rate in RATES:
        denominator = _value(counts, rate.denominator, exclude_extended_from_due)
        out[rate.key] = None if denominator == 0 else _value(counts, rate.numerator, exclude_extended_from_due) / denominator
    return out


def composite_index(rates: dict[str, float | None],
                    weights: dict[str, tuple[float, bool]] = DEFAULT_COMPOSITE_WEIGHTS) -> float | None:
    """综合指标值: the weighted sum of rates (or of 1 − rate for the "less is better" ones); None if any is missing."""
    total = 0.0
    for key, (weight, inverted) in weights.items():
        value = rates.get(key)
        if value is None:
            return None
        total += weight * ((1 - value) if inverted else value)
    return total


def format_percent(value: float | None) -> str:
    """A rate as the reports print it: two decimals and a percent sign (65,008 / 65,101 → '99.86%')."""
    if value is None:
        return "—"
    return f"{value * 100:.2f}%"


@dataclass(frozen=True)
class CaseFilter:
    """Optional narrowing of a cohort; every value is checked against its closed vocabulary."""

    kind: str | None = None
    major_code: str | None = None
    category_code: str | None = None
    source_channel: str | None = None
    resolution_level: str | None = None

    def __post_init__(self) -> None:
        checks = {"kind": CASE_KINDS, "source_channel": SOURCE_CHANNELS, "resolution_level": RESOLUTION_LEVELS}
        for name, allowed in checks.items():
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise KpiError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
        if self.major_code is not None and not (len(self.major_code) == 2 and self.major_code.isdigit()):
            raise KpiError(f"major_code must be 2 digits, not {self.major_code!r}")
        if self.category_code is not None and not (len(self.category_code) == 4 and self.category_code.isdigit()):
            raise KpiError(f"category_code must be 4 digits, not {self.category_code!r}")


AREA_COLUMN_BY_LENGTH: Final = {6: "district_code", 9: "street_code", 12: "community_code"}


def area_column(area_code: str) -> str:
    """The case column an admin code filters on, by its length (6 district, 9 street, 12 community, else grid)."""
    if not area_code.isdigit() or not 6 <= len(area_code) <= 16:
        raise KpiError(f"area code must be 6-16 digits (GB/T 30428), not {area_code!r}")
    return AREA_COLUMN_BY_LENGTH.get(len(area_code), "grid_code")


def period_bounds(date_from: date, date_to: date) -> tuple[datetime, datetime]:
    """[start, end) instants of a period of whole days in Asia/Shanghai, both dates inclusive."""
    if date_to < date_from:
        raise KpiError(f"the period ends ({date_to}) before it starts ({date_from})")
    if (date_to - date_from).days > 3660:
        raise KpiError("a period longer than ten years is not measured")
    start = datetime.combine(date_from, datetime.min.time(), TIMEZONE)
    end = datetime.combine(date_to + timedelta(days=1), datetime.min.time(), TIMEZONE)
    return start, end


#: The aggregate over raw cases: the reference every rollup must agree with.
_COUNTS_SQL = """
SELECT
    count(*)                                                                   AS reported,
    count(*) FILTER (WHERE voided_at IS NOT NULL)                              AS voided,
    count(*) FILTER (WHERE voided_at IS NULL)                                  AS valid_reported,
    count(*) FILTER (WHERE registered_at IS NOT NULL)                          AS registered,
    count(*) FILTER (WHERE registered_at IS NOT NULL AND voided_at IS NOT NULL) AS registered_voided,
    count(*) FILTER (WHERE self_handled)                                       AS self_handled,
    count(*) FILTER (WHERE dispatched_at IS NOT NULL)                          AS dispatched,
    count(*) FILTER (WHERE dispatched_at IS NOT NULL AND handled_at IS NOT NULL) AS handled,
    count(*) FILTER (WHERE dispatched_at IS NOT NULL AND handled_on_time)      AS handled_on_time,
    count(*) FILTER (WHERE dispatched_at IS NOT NULL AND handled_at IS NULL AND voided_at IS NULL
                       AND handle_deadline < :as_of)                           AS overdue_open,
    count(*) FILTER (WHERE extended)                                           AS extended,
    count(*) FILTER (WHERE voided_at IS NULL
                       AND (closed_at IS NOT NULL OR close_deadline <= :as_of)) AS due_close,
    count(*) FILTER (WHERE closed_at IS NOT NULL)                              AS closed,
    count(*) FILTER (WHERE closed_on_time)                                     AS closed_on_time,
    count(*) FILTER (WHERE voided_at IS NULL AND NOT extended
                       AND (closed_at IS NOT NULL OR close_deadline <= :as_of)) AS due_close_not_extended,
    count(*) FILTER (WHERE closed_on_time AND NOT extended)                    AS closed_on_time_not_extended,
    count(*) FILTER (WHERE rework_count > 0)                                   AS reworked,
    count(*) FILTER (WHERE closed_at IS NOT NULL AND resolution_level = 'grid')      AS resolved_grid,
    count(*) FILTER (WHERE closed_at IS NOT NULL AND resolution_level = 'community') AS resolved_community,
    count(*) FILTER (WHERE closed_at IS NOT NULL AND resolution_level = 'street')    AS resolved_street,
    count(*) FILTER (WHERE closed_at IS NOT NULL AND resolution_level = 'district')  AS resolved_district,
    count(*) FILTER (WHERE closed_at IS NOT NULL AND resolution_level = 'city')      AS resolved_city,
    coalesce(sum(satisfaction), 0)                                             AS satisfaction_sum,
    count(satisfaction)                                                        AS satisfaction_count,
    coalesce(sum(extract(epoch FROM handled_at - reported_at) / 3600.0), 0)    AS handle_hours_sum,
    count(handled_at)                                                          AS handle_hours_count
FROM core.case_record
WHERE reported_at >= :start AND reported_at < :end
"""


def count_cases(
    bind: Engine | Connection,
    date_from: date,
    date_to: date,
    area_code: str | None = None,
    case_filter: CaseFilter | None = None,
    as_of: datetime | None = None,
) -> CaseCounts:
    """The counts of the cohort reported in [date_from, date_to] (inclusive) in ``area_code``, as of ``as_of``.

    Reads raw cases: the reference for correctness (and for the command line).  Area and filters are bound
    parameters on columns chosen from closed sets, never text from the caller.
    """
    start, end = period_bounds(date_from, date_to)
    params: dict[str, object] = {"start": start, "end": end, "as_of": as_of or datetime.now(TIMEZONE)}
    clauses = []
    if area_code:
        clauses.append(f"{area_column(area_code)} = :area")
        params["area"] = area_code
    for name, value in asdict(case_filter or CaseFilter()).items():
        if value is not None:
            clauses.append(f"{name} = :{name}")  # name: a field of CaseFilter, never input
            params[name] = value
    sql = _COUNTS_SQL + "".join(f" AND {clause}" for clause in clauses)
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            row = conn.execute(text(sql), params).mappings().one()
    else:
        row = bind.execute(text(sql), params).mappings().one()
    values = {f.name: (float if f.name == "handle_hours_sum" else int)(row[f.name]) for f in fields(CaseCounts)}
    return CaseCounts(**values)


def kpi_report(counts: CaseCounts, exclude_extended_from_due: bool = False) -> dict[str, object]:
    """One JSON-ready object: the counts, every rate as a fraction and as the reports print it, the composite."""
    rates = compute_rates(counts, exclude_extended_from_due)
    return {
        "counts": {**asdict(counts), "resolved": counts.resolved},
        "rates": rates,
        "rates_percent": {RATES_BY_KEY[key].name_zh: format_percent(value) for key, value in rates.items()},
        "composite_index": composite_index(rates),
        "average_satisfaction": (counts.satisfaction_sum / counts.satisfaction_count
                                 if counts.satisfaction_count else None),
        "average_handle_hours": (counts.handle_hours_sum / counts.handle_hours_count
                                 if counts.handle_hours_count else None),
        "definitions": {rate.key: {"name_zh": rate.name_zh, "name_en": rate.name_en, "formula": rate.formula}
                        for rate in RATES},
    }
