"""Closed vocabularies of the store (source channels, stages, levels, states, roles), with their Chinese terms.

Category codes (GB/T 30428.2 / CJ/T 214 components and events) are *data* and live in
``geodata/data/categories_*.csv``; what is here are the small fixed sets that the schema's CHECK constraints
enforce.  ``tests/test_schema.py`` compares these tuples with the constraints in the database, so the
two cannot drift apart.
"""

from __future__ import annotations

from typing import Final

#: The five intake channels of the reports (see shared/domain.md, "Sources").
SOURCE_CHANNELS: Final[dict[str, tuple[str, str]]] = {
    "patrol": ("网格员/监督员巡查", "Grid patrollers"),
    "citizen": ("群众随拍/扫码上报", "Citizens' photos and QR codes"),
    "partner": ("多元力量上报", "Partner forces"),
    "hotline": ("12345热线转派", "12345 hotline tickets"),
    "ai_camera": ("视频AI识别", "AI camera detection"),
}

#: A case is about a physical asset (部件) or something that happened (事件).
CASE_KINDS: Final[dict[str, tuple[str, str]]] = {
    "component": ("部件", "Component"),
    "event": ("事件", "Event"),
}

#: Urgency (紧急程度), which selects the deadline rule.
URGENCIES: Final[dict[str, tuple[str, str]]] = {
    "normal": ("一般", "Normal"),
    "urgent": ("紧急", "Urgent"),
}

#: Where a case was finally solved (解决层级): the "小事不出网格" ladder, plus city departments.
RESOLUTION_LEVELS: Final[dict[str, tuple[str, str]]] = {
    "grid": ("网格", "Grid"),
    "community": ("社区", "Community"),
    "street": ("街道", "Street"),
    "district": ("区", "District"),
    "city": ("市级部门", "City department"),
}

#: Stage events of the closed loop, in workflow order, as kept in ``core.case_event``.
CASE_STAGES: Final[dict[str, tuple[str, str]]] = {
    "reported": ("信息收集/上报", "Reported"),
    "registered": ("立案", "Registered"),
    "voided": ("作废", "Voided"),
    "dispatched": ("派遣", "Dispatched"),
    "returned": ("回退", "Returned"),
    "extended": ("延期", "Extended"),
    "handled": ("处置", "Handled"),
    "feedback": ("处理反馈", "Feedback"),
    "reworked": ("返工", "Reworked"),
    "closed": ("结案", "Closed"),
    "evaluated": ("评价", "Evaluated"),
}

#: The status a case is in, derived in the database from its timestamps (a generated column).
CASE_STATUSES: Final[dict[str, tuple[str, str]]] = {
    "reported": ("待立案", "Awaiting registration"),
    "registered": ("已立案", "Registered"),
    "dispatched": ("处置中", "Being handled"),
    "handled": ("待结案", "Awaiting close"),
    "closed": ("已结案", "Closed"),
    "voided": ("已作废", "Voided"),
}

#: The admin hierarchy, coarse to fine, with the length of each level's code (grid: community + serial).
ADMIN_LEVELS: Final[dict[str, tuple[str, str]]] = {
    "district": ("区", "District"),
    "street": ("街道", "Street"),
    "community": ("社区", "Community"),
    "grid": ("单元网格", "Unit grid"),
}
ADMIN_CODE_LENGTHS: Final[dict[str, int]] = {"district": 6, "street": 9, "community": 12}

#: A component's state (部件状态).
COMPONENT_STATES: Final[dict[str, tuple[str, str]]] = {
    "intact": ("完好", "Intact"),
    "damaged": ("破损", "Damaged"),
    "missing": ("丢失", "Missing"),
    "occupied": ("占用", "Occupied"),
    "removed": ("废弃/拆除", "Removed"),
    "unknown": ("未知", "Unknown"),
}

#: Camera kinds seen in the reports (公安, 社区, 交通, 明厨亮灶 kitchen video, 城管).
CAMERA_TYPES: Final[dict[str, tuple[str, str]]] = {
    "public_security": ("公安监控", "Public security"),
    "community": ("社区监控", "Community"),
    "traffic": ("交通监控", "Traffic"),
    "urban_management": ("城管监控", "Urban management"),
    "kitchen": ("明厨亮灶", "Kitchen video"),
    "other": ("其他", "Other"),
}

#: Roles of internal users; the kiosk token is not a role but a read-only pass to the big screen.
USER_ROLES: Final[dict[str, tuple[str, str]]] = {
    "leader": ("领导", "Leader"),
    "planner": ("规划/业务人员", "Planner"),
    "administrator": ("管理员", "Administrator"),
}

#: Kinds of source an ETL run loads; one run log row per source.
SOURCE_KINDS: Final[tuple[str, ...]] = (
    "admin_unit",
    "management_grid",
    "component",
    "camera",
    "case",
    "road",
    "track",
)

#: H3 resolutions kept for every located point (res 7 ≈ 5 km², res 10 ≈ 15,000 m² ≈ one unit grid).
H3_RESOLUTIONS: Final[tuple[int, ...]] = (7, 8, 9, 10)

#: Database roles the migrations grant to; login roles are made by the embedded cluster or the DBA.
READER_ROLE: Final = "citygrid_reader"
PUBLIC_ROLE: Final = "citygrid_public"

#: Who carries a GPS device in the tracks (巡查/保洁/车辆), with the fastest each can plausibly move (km/h):
#: a fix that would need more is a jump (GPS error) and is rejected.
TRACK_ROLES: Final[dict[str, tuple[str, str]]] = {
    "patroller": ("网格员/巡查员", "Grid patroller"),
    "cleaner": ("保洁员", "Street cleaner"),
    "truck": ("环卫车辆", "Sanitation truck"),
}
TRACK_ROLE_MAX_KMH: Final[dict[str, float]] = {"patroller": 30.0, "cleaner": 30.0, "truck": 100.0}

#: Road classes of the road line layer (道路等级, CJJ 37).
ROAD_CLASSES: Final[dict[str, tuple[str, str]]] = {
    "trunk": ("快速路", "Expressway"),
    "primary": ("主干路", "Arterial road"),
    "secondary": ("次干路", "Secondary road"),
    "branch": ("支路", "Branch road"),
    "alley": ("街巷", "Alley"),
    "other": ("其他", "Other"),
}


def code_range(area_code: str | None) -> tuple[str, str]:
    """Bounds holding every code that starts with ``area_code``, for an index range scan beside a LIKE.

    Why: ``code LIKE '370303001%'`` cannot use a btree index under the database's collation (only a "C"
    or pattern-ops index serves LIKE), so at 25,000 grids or a million components each such filter was a
    scan.  Codes are digits, and digit strings compare digit by digit in every collation: the codes of
    street 370303001 lie in ["370303001", "370303002").  Keep the LIKE as the exact test.
    """
    top = "9" * 32  # above every code (at most 16 digits)
    if not area_code:
        return "", top
    if set(area_code) == {"9"}:
        return area_code, top
    return area_code, str(int(area_code) + 1).zfill(len(area_code))


def prefix_params(area_code: str | None) -> dict[str, str]:
    """``prefix`` (for LIKE), ``low`` and ``high`` (for the index range) of the codes under ``area_code``."""
    low, high = code_range(area_code)
    return {"prefix": f"{area_code or ''}%", "low": low, "high": high}
