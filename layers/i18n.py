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
    "nav.patrol": {"zh-CN": "巡查覆盖", "en": "Patrol coverage"},
    "nav.sanitation": {"zh-CN": "环卫作业", "en": "Sanitation"},
    "patrol.heading": {"zh-CN": "网格巡查覆盖", "en": "Grid patrol coverage"},
    "patrol.empty": {"zh-CN": "尚无巡查轨迹。用 `citygrid load track` 加载轨迹，或运行 `citygrid demo`。",
                     "en": "No patrol tracks yet. Load them with `citygrid load track` or run `citygrid demo`."},
    "patrol.street": {"zh-CN": "街道", "en": "Street"},
    "patrol.day": {"zh-CN": "日期", "en": "Day"},
    "patrol.layer": {"zh-CN": "巡查状态", "en": "Patrol status"},
    "patrol.status.patrolled": {"zh-CN": "已巡查", "en": "Patrolled"},
    "patrol.status.idle": {"zh-CN": "当日未巡查", "en": "Not patrolled today"},
    "patrol.status.flagged": {"zh-CN": "连续未巡查", "en": "Unpatrolled for days"},
    "patrol.minutes": {"zh-CN": "巡查分钟", "en": "Minutes"},
    "patrol.visits": {"zh-CN": "次数", "en": "visits"},
    "patrol.idle_days": {"zh-CN": "距上次巡查天数", "en": "Days since last patrol"},
    "patrol.legend": {"zh-CN": "绿色：当日已巡查；灰色：当日未巡查；红色：连续 {days} 天及以上未巡查。",
                      "en": "Green: patrolled that day; grey: not that day; red: no patrol for {days} days or more."},
    "patrol.shares": {"zh-CN": "社区与管理网格巡查率", "en": "Share of grids patrolled by community and management grid"},
    "patrol.grids": {"zh-CN": "单元网格巡查明细", "en": "Unit grids"},
    "patrol.export_csv": {"zh-CN": "导出 CSV", "en": "Export CSV"},
    "patrol.export_xlsx": {"zh-CN": "导出 Excel", "en": "Export XLSX"},
    "patrol.unit.community": {"zh-CN": "社区", "en": "community"},
    "patrol.unit.management_grid": {"zh-CN": "管理网格", "en": "management grid"},
    "patrol.tile.grids": {"zh-CN": "单元网格", "en": "Unit grids"},
    "patrol.tile.patrolled": {"zh-CN": "当日已巡查", "en": "Patrolled that day"},
    "patrol.tile.share": {"zh-CN": "巡查覆盖率", "en": "Share patrolled"},
    "patrol.tile.flagged": {"zh-CN": "连续未巡查", "en": "Unpatrolled for days"},
    "patrol.col.grid_code": {"zh-CN": "网格编码", "en": "Grid code"},
    "patrol.col.name": {"zh-CN": "名称", "en": "Name"},
    "patrol.col.status": {"zh-CN": "状态", "en": "Status"},
    "patrol.col.minutes": {"zh-CN": "巡查分钟", "en": "Minutes"},
    "patrol.col.visits": {"zh-CN": "巡查次数", "en": "Visits"},
    "patrol.col.devices": {"zh-CN": "巡查人数", "en": "Patrollers"},
    "patrol.col.last_patrolled": {"zh-CN": "最近巡查日", "en": "Last patrolled"},
    "patrol.col.idle_days": {"zh-CN": "未巡查天数", "en": "Days unpatrolled"},
    "patrol.col.unit": {"zh-CN": "编码", "en": "Code"},
    "patrol.col.grids": {"zh-CN": "网格数", "en": "Grids"},
    "patrol.col.patrolled": {"zh-CN": "已巡查", "en": "Patrolled"},
    "patrol.col.share": {"zh-CN": "巡查率", "en": "Share"},
    "patrol.col.flagged": {"zh-CN": "连续未巡查", "en": "Flagged"},
    "sanitation.heading": {"zh-CN": "环卫作业监管", "en": "Sanitation operations"},
    "sanitation.empty": {"zh-CN": "尚无道路或环卫轨迹。", "en": "No roads or sanitation tracks yet."},
    "sanitation.area": {"zh-CN": "区域", "en": "Area"},
    "sanitation.roads": {"zh-CN": "道路清扫", "en": "Road sweeping"},
    "sanitation.facilities": {"zh-CN": "转运站与公厕作业", "en": "Transfer stations and public toilets"},
    "sanitation.crews": {"zh-CN": "作业人员与车辆最后位置", "en": "Crews last seen"},
    "sanitation.response": {"zh-CN": "案件响应", "en": "Response to cases"},
    "sanitation.response_text": {
        "zh-CN": "网格员上报案件 {patrol_cases} 件，轨迹印证在场 {patrol_confirmed} 件；派遣案件 {dispatched} 件，"
                 "有作业人员到场 {reached} 件，派遣到到场中位数 {median} 分钟。",
        "en": "{patrol_cases} patrol reports, {patrol_confirmed} with the patroller's track at the place; {dispatched} "
              "dispatched cases, {reached} reached by a crew, median {median} minutes from dispatch."},
    "sanitation.col.road_id": {"zh-CN": "道路编码", "en": "Road"},
    "sanitation.col.name": {"zh-CN": "名称", "en": "Name"},
    "sanitation.col.road_class": {"zh-CN": "等级", "en": "Class"},
    "sanitation.col.length_m": {"zh-CN": "长度(米)", "en": "Length (m)"},
    "sanitation.col.swept_share": {"zh-CN": "清扫率", "en": "Swept"},
    "sanitation.col.crews": {"zh-CN": "作业人数", "en": "Crews"},
    "sanitation.col.facility_kind": {"zh-CN": "设施类型", "en": "Facility"},
    "sanitation.col.component_code": {"zh-CN": "部件编码", "en": "Component"},
    "sanitation.col.stops": {"zh-CN": "到达次数", "en": "Stops"},
    "sanitation.col.trucks": {"zh-CN": "车辆数", "en": "Trucks"},
    "sanitation.col.minutes": {"zh-CN": "停留分钟", "en": "Minutes"},
    "sanitation.col.device_id": {"zh-CN": "设备编号", "en": "Device"},
    "sanitation.col.role": {"zh-CN": "类型", "en": "Role"},
    "sanitation.col.last_seen_at": {"zh-CN": "最后定位时间", "en": "Last seen"},
    "sanitation.col.last_grid_code": {"zh-CN": "所在网格", "en": "Grid"},
    "facility.transfer_station": {"zh-CN": "垃圾转运站", "en": "Transfer station"},
    "facility.public_toilet": {"zh-CN": "公共厕所", "en": "Public toilet"},
    "sweep.class.swept": {"zh-CN": "已清扫(≥80%)", "en": "Swept (≥80%)"},
    "sweep.class.partly": {"zh-CN": "部分清扫", "en": "Partly swept"},
    "sweep.class.unswept": {"zh-CN": "未清扫(<20%)", "en": "Not swept (<20%)"},
    "track.role.patroller": {"zh-CN": "网格员", "en": "Patroller"},
    "track.role.cleaner": {"zh-CN": "保洁员", "en": "Cleaner"},
    "track.role.truck": {"zh-CN": "环卫车辆", "en": "Truck"},
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
    # the big screen (dashboard/pages/bigscreen.py) and its map layers
    "nav.bigscreen": {"zh-CN": "指挥大屏", "en": "Big screen"},
    "bs.title": {"zh-CN": "数字城管指挥中心", "en": "Urban management command centre"},
    "bs.city": {"zh-CN": "全市", "en": "Whole city"},
    "bs.period": {"zh-CN": "统计周期", "en": "Period"},
    "bs.anchored": {"zh-CN": "数据截至 {day}，今日/本月/本年按该日计", "en": "Data ends {day}: today, month and year count from it"},
    "bs.kpi.reported": {"zh-CN": "上报案件", "en": "Reported"},
    "bs.kpi.self_handled": {"zh-CN": "自行处置", "en": "Self-handled"},
    "bs.kpi.dispatched": {"zh-CN": "派遣", "en": "Dispatched"},
    "bs.kpi.handled": {"zh-CN": "处置", "en": "Handled"},
    "bs.kpi.due_close": {"zh-CN": "应结案", "en": "To be closed"},
    "bs.kpi.closed_on_time": {"zh-CN": "按期结案", "en": "Closed on time"},
    "bs.ladder": {"zh-CN": "小事不出网格 · 解决层级占比", "en": "Small matters stay in the grid: where cases were solved"},
    "bs.today": {"zh-CN": "今日", "en": "Today"},
    "bs.month": {"zh-CN": "本月", "en": "Month"},
    "bs.year": {"zh-CN": "本年", "en": "Year"},
    "bs.streets_on_time": {"zh-CN": "街道按期结案率", "en": "Streets: on-time closing"},
    "bs.streets_in_grid": {"zh-CN": "街道网格解决率", "en": "Streets: solved in the grid"},
    "bs.recurring": {"zh-CN": "高发复发问题（近90天）", "en": "Recurring problems (90 days)"},
    "bs.recurring_cases": {"zh-CN": "{cases} 次", "en": "{cases}x"},
    "bs.channels": {"zh-CN": "案件来源", "en": "Cases by source"},
    "bs.trend": {"zh-CN": "近30日上报趋势", "en": "Reported, last 30 days"},
    "bs.this_year": {"zh-CN": "本期", "en": "This year"},
    "bs.last_year": {"zh-CN": "去年同期", "en": "A year before"},
    "bs.cameras": {"zh-CN": "视频监控", "en": "Cameras"},
    "bs.cameras_online": {"zh-CN": "在线", "en": "Online"},
    "bs.coverage": {"zh-CN": "覆盖率", "en": "Coverage"},
    "bs.blind": {"zh-CN": "盲区网格", "en": "Blind-spot grids"},
    "bs.ticker": {"zh-CN": "最新案件", "en": "Newest cases"},
    "bs.last_refresh": {"zh-CN": "数据更新于", "en": "Data refreshed"},
    "bs.no_refresh": {"zh-CN": "尚无数据更新", "en": "No data refresh yet"},
    "bs.map": {"zh-CN": "案件热力 · 待关注网格", "en": "Case heat and grids needing attention"},
    "bs.unreachable": {"zh-CN": "数据库暂时无法连接，显示的是 {time} 的数据", "en": "The database cannot be reached: showing the data of {time}"},
    "bs.stale": {"zh-CN": "数据已超过 {minutes} 分钟未更新", "en": "No data refresh for more than {minutes} minutes"},
    "bs.bad_url": {"zh-CN": "网址参数无效（{error}），显示默认内容", "en": "Invalid URL parameter ({error}): showing the default"},
    "bs.back": {"zh-CN": "返回", "en": "Back"},
    "bs.none": {"zh-CN": "暂无", "en": "None"},
    "channel.patrol": {"zh-CN": "网格巡查", "en": "Patrol"},
    "channel.citizen": {"zh-CN": "群众随手拍", "en": "Citizens"},
    "channel.partner": {"zh-CN": "多元力量", "en": "Partners"},
    "channel.hotline": {"zh-CN": "12345热线", "en": "12345 hotline"},
    "channel.ai_camera": {"zh-CN": "AI视频识别", "en": "AI cameras"},
    "heat.name": {"zh-CN": "案件热力", "en": "Case heat"},
    "heat.cases": {"zh-CN": "上报案件", "en": "Cases reported"},
    "attention.name": {"zh-CN": "待关注网格", "en": "Grids needing attention"},
    "attention.overdue": {"zh-CN": "超期案件", "en": "Overdue cases"},
    # --- the public app (dashboard/public) ---
    "public.title": {"zh-CN": "城市问题处置公开", "en": "How the city fixes reported problems"},
    "public.intro": {
        "zh-CN": "最近 {days} 天上报的城市管理问题，按区域汇总（数据延迟 {delay} 小时，不含个人信息与敏感类别）。",
        "en": "City problems reported in the last {days} days, by area (delayed {delay} h; no personal data, "
              "no sensitive categories).",
    },
    "public.days": {"zh-CN": "时间范围", "en": "Period"},
    "public.days_n": {"zh-CN": "最近 {n} 天", "en": "Last {n} days"},
    "public.unit": {"zh-CN": "汇总方式", "en": "Areas"},
    "public.unit.h3_r8": {"zh-CN": "六边形（小）", "en": "Hexagons (small)"},
    "public.unit.h3_r7": {"zh-CN": "六边形（大）", "en": "Hexagons (large)"},
    "public.unit.grid": {"zh-CN": "单元网格", "en": "Unit grids"},
    "public.street": {"zh-CN": "街道", "en": "Street"},
    "public.all_streets": {"zh-CN": "全部街道", "en": "All streets"},
    "public.choose_street": {"zh-CN": "请选择一个街道以显示单元网格。", "en": "Choose a street to see its unit grids."},
    "public.cases": {"zh-CN": "案件数", "en": "Cases"},
    "public.solved": {"zh-CN": "已解决", "en": "Solved"},
    "public.on_time_share": {"zh-CN": "按期解决占比", "en": "Solved on time"},
    "public.avg_hours": {"zh-CN": "平均处置时长（小时）", "en": "Average handling time (hours)"},
    "public.below_k": {"zh-CN": "案件少于 {k} 件，不显示细分", "en": "Fewer than {k} cases: no breakdown"},
    "public.click_hint": {"zh-CN": "点击地图上的区域查看分类统计。", "en": "Click an area on the map for its breakdown."},
    "public.detail": {"zh-CN": "区域详情", "en": "Area detail"},
    "public.category": {"zh-CN": "问题类别", "en": "Category"},
    "public.no_cases": {"zh-CN": "该区域在此期间没有公开案件。", "en": "No public cases here in this period."},
    "public.streets": {"zh-CN": "各街道处置情况", "en": "Streets"},
    "public.in_grid_share": {"zh-CN": "网格内解决率", "en": "Solved in the grid"},
    "public.legend": {
        "zh-CN": "颜色：按期解决占比（红低绿高）；灰色：案件过少。",
        "en": "Colour: share solved on time (red low, green high); grey: too few cases.",
    },
    "public.api": {"zh-CN": "开放数据接口（Open311）", "en": "Open data API (Open311)"},
    "public.empty": {"zh-CN": "此期间没有公开案件。", "en": "No public cases in this period."},
    # --- planner pages: filters, grid statistics (issue 6) ---
    "filters.period": {"zh-CN": "时间范围", "en": "Period"},
    "filters.kind": {"zh-CN": "案件类型", "en": "Kind"},
    "filters.major": {"zh-CN": "大类", "en": "Major category"},
    "filters.category": {"zh-CN": "小类", "en": "Minor category"},
    "filters.channel": {"zh-CN": "来源渠道", "en": "Channel"},
    "filters.status": {"zh-CN": "案件状态", "en": "Status"},
    "filters.level": {"zh-CN": "解决层级", "en": "Resolved at"},
    "filters.all": {"zh-CN": "全部", "en": "All"},
    "filters.city": {"zh-CN": "全市", "en": "Whole city"},
    "filters.invalid": {"zh-CN": "筛选条件无效：", "en": "Invalid filter:"},
    # --- end planner pages (issue 6) ---
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
