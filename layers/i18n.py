"""Interface text in zh-CN (the default) and English, one table for the layers and every page of both apps.

Pages ask ``t(key, lang)``; a missing key falls back to Chinese, then to the key itself, so a gap shows
as an untranslated word rather than an error on a wall display.
"""

from __future__ import annotations

from typing import Final

LANGUAGES: Final[tuple[str, ...]] = ("zh-CN", "en")
DEFAULT_LANGUAGE: Final = "zh-CN"

TEXT: Final[dict[str, dict[str, str]]] = {
    "app.title": {"zh-CN": "CityGrid 数字城管指挥中心", "en": "CityGrid urban management command centre"},
    "nav.home": {"zh-CN": "总览", "en": "Overview"},
    "nav.logout": {"zh-CN": "退出登录", "en": "Log out"},
    "nav.language": {"zh-CN": "English", "en": "中文"},
    "home.heading": {"zh-CN": "数据总览", "en": "Data overview"},
    "home.store": {"zh-CN": "数据库", "en": "Store"},
    "home.units": {"zh-CN": "行政区划与网格", "en": "Admin units and grids"},
    "home.assets": {"zh-CN": "部件与监控", "en": "Components and cameras"},
    "home.cases": {"zh-CN": "案件", "en": "Cases"},
    "home.runs": {"zh-CN": "最近数据加载", "en": "Recent data loads"},
    "home.empty": {
        "zh-CN": "尚未加载数据。运行 `citygrid demo` 加载演示城市，或用 `citygrid load` 加载本市数据。",
        "en": "No data loaded yet. Run `citygrid demo` for the demo city or `citygrid load` for your own.",
    },
    "home.data_version": {"zh-CN": "数据版本", "en": "Data version"},
    "level.district": {"zh-CN": "区", "en": "Districts"},
    "level.street": {"zh-CN": "街道", "en": "Streets"},
    "level.community": {"zh-CN": "社区", "en": "Communities"},
    "level.grid": {"zh-CN": "单元网格", "en": "Unit grids"},
    "count.components": {"zh-CN": "城市部件", "en": "City components"},
    "count.cameras": {"zh-CN": "监控点位", "en": "Cameras"},
    "count.cases": {"zh-CN": "案件总数", "en": "Cases"},
    "run.source": {"zh-CN": "数据源", "en": "Source"},
    "run.kind": {"zh-CN": "类型", "en": "Kind"},
    "run.status": {"zh-CN": "状态", "en": "Status"},
    "run.read": {"zh-CN": "读取", "en": "Read"},
    "run.stored": {"zh-CN": "入库", "en": "Stored"},
    "run.rejected": {"zh-CN": "拒绝", "en": "Rejected"},
    "run.finished": {"zh-CN": "完成时间", "en": "Finished"},
}


def normalise_language(value: object) -> str:
    """Map whatever a URL or cookie says to a supported language (unknown values: the default)."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered.startswith("en"):
            return "en"
        if lowered.startswith("zh"):
            return "zh-CN"
    return DEFAULT_LANGUAGE


def t(key: str, lang: str = DEFAULT_LANGUAGE) -> str:
    """The text of ``key`` in ``lang``."""
    entry = TEXT.get(key)
    if entry is None:
        return key
    return entry.get(lang) or entry[DEFAULT_LANGUAGE]
