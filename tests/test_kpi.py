"""The standard rates: formulas against the reports' own figures, and every boundary on real cases."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import date

import pytest

from geodata.kpi import (
    RATES,
    CaseCounts,
    CaseFilter,
    KpiError,
    composite_index,
    compute_rates,
    count_cases,
    format_percent,
    kpi_report,
)
from geodata.settings import PROJECT_ROOT, Settings
from tests import factories
from tests.conftest import SuiteStore


def test_the_reports_figures_print_as_the_reports_print_them() -> None:
    """济宁高新区 (seed 001) and domain.md's examples."""
    jining = CaseCounts(reported=83_722, valid_reported=83_722, self_handled=15_925, dispatched=66_201,
                        handled=66_199, handled_on_time=66_199, due_close=65_101, closed=65_101,
                        closed_on_time=65_008)
    rates = compute_rates(jining)
    assert format_percent(rates["handling_rate"]) == "100.00%"
    assert format_percent(rates["closing_rate"]) == "100.00%"
    assert format_percent(rates["on_time_closing_rate"]) == "99.86%"
    assert format_percent(rates["self_handled_share"]) == "19.02%"
    example = compute_rates(CaseCounts(due_close=972, closed=911, closed_on_time=737))
    assert (format_percent(example["closing_rate"]), format_percent(example["on_time_closing_rate"])) == (
        "93.72%", "75.82%")


def test_empty_denominators_are_none_not_zero() -> None:
    rates = compute_rates(CaseCounts())
    assert all(value is None for value in rates.values())
    assert format_percent(None) == "—" and composite_index(rates) is None


def test_every_rate_names_real_count_fields() -> None:
    names = {f for f in CaseCounts.__dataclass_fields__} | {"resolved", "registered_accurate"}
    for rate in RATES:
        assert rate.numerator in names and rate.denominator in names, rate.key


def test_composite_index_uses_the_weights() -> None:
    rates = {"handling_rate": 1.0, "on_time_handling_rate": 0.5, "rework_rate": 0.1, "overdue_open_rate": 0.0,
             "extension_rate": 0.2}
    assert composite_index(rates) == pytest.approx(30 + 10 + 18 + 20 + 8)


def test_filters_and_areas_are_validated() -> None:
    with pytest.raises(KpiError, match="source_channel"):
        CaseFilter(source_channel="'; DROP TABLE core.case_record; --")
    with pytest.raises(KpiError, match="category_code"):
        CaseFilter(category_code="01a2")
    from geodata.kpi import area_column, period_bounds

    with pytest.raises(KpiError, match="area code"):
        area_column("3703 OR 1=1")
    assert area_column("370303") == "district_code" and area_column("370303001001001") == "grid_code"
    with pytest.raises(KpiError, match="before it starts"):
        period_bounds(date(2024, 6, 2), date(2024, 6, 1))


HEADERS = ["案件编号", "问题来源", "大类", "小类", "上报时间", "立案时间", "派遣时间", "处置时间", "结案时间",
           "作废时间", "处置时限", "结案时限", "是否延期", "返工次数", "是否自行处置", "解决层级", "经度", "纬度"]
DAY = "2024-06-03"


def _row(number: str, **v: str) -> list[str]:
    base = {"案件编号": number, "问题来源": "网格员上报", "大类": "市容环境", "小类": "暴露垃圾",
            "上报时间": f"{DAY} 09:00:00", "立案时间": f"{DAY} 09:10:00", "派遣时间": f"{DAY} 09:20:00",
            "处置时间": "", "结案时间": "", "作废时间": "", "处置时限": f"{DAY} 12:00:00",
            "结案时限": f"{DAY} 15:00:00", "是否延期": "否", "返工次数": "0", "是否自行处置": "否", "解决层级": "",
            "经度": "118.01", "纬度": "36.79"}
    base.update(v)
    return [base[h] for h in HEADERS]


BOUNDARY_CASES = [
    _row("KPI1", 处置时间=f"{DAY} 12:00:00", 结案时间=f"{DAY} 13:00:00", 解决层级="网格"),  # exactly at the deadline
    _row("KPI2", 处置时间=f"{DAY} 12:00:01", 结案时间=f"{DAY} 16:00:00", 解决层级="社区"),  # one second late
    _row("KPI3"),  # still open, past its deadlines
    _row("KPI4", 派遣时间="", 作废时间=f"{DAY} 09:15:00"),  # voided at registration
    _row("KPI5", 派遣时间="", 处置时间=f"{DAY} 09:30:00", 结案时间=f"{DAY} 10:00:00", 是否自行处置="是",
         结案时限=f"{DAY} 17:00:00", 解决层级="网格"),  # self-handled on the spot
    _row("KPI6", 处置时间=f"{DAY} 11:00:00", 结案时间=f"{DAY} 14:00:00", 返工次数="1", 解决层级="街道"),  # reworked
    _row("KPI7", 处置时间="2024-06-05 10:00:00", 结案时间="2024-06-05 11:00:00", 是否延期="是",
         处置时限="2024-06-07 17:00:00", 结案时限="2024-06-10 17:00:00", 解决层级="区"),  # extended deadline
    _row("KPI8", 处置时限="2030-01-01 00:00:00", 结案时限="2030-01-02 00:00:00"),  # open, not yet due
]


@pytest.fixture(scope="module")
def boundary_cases(store: SuiteStore, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"))
    tmp = tmp_path_factory.mktemp("kpi")
    factories.build_city(store.writer, tmp, settings)
    path = tmp / "kpi.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADERS)
        writer.writerows(BOUNDARY_CASES)
    result = factories.load(store.writer, path, "case", settings, crs="EPSG:4326")
    assert (result.rows_new + result.rows_unchanged, result.rows_rejected) == (8, 0), result
    return settings


def test_counts_at_every_boundary(store: SuiteStore, boundary_cases: Settings) -> None:
    counts = count_cases(store.reader, date(2024, 6, 3), date(2024, 6, 3), "370303")
    assert (counts.reported, counts.voided, counts.valid_reported, counts.registered, counts.registered_voided) == (
        8, 1, 7, 8, 1)
    assert (counts.self_handled, counts.dispatched, counts.handled, counts.handled_on_time) == (1, 6, 4, 3)
    assert (counts.overdue_open, counts.extended, counts.reworked) == (1, 1, 1)
    assert (counts.due_close, counts.closed, counts.closed_on_time) == (6, 5, 4)
    assert (counts.resolved_grid, counts.resolved_community, counts.resolved_street, counts.resolved_district,
            counts.resolved) == (2, 1, 1, 1, 5)
    rates = compute_rates(counts)
    assert format_percent(rates["handling_rate"]) == "66.67%"
    assert format_percent(rates["on_time_handling_rate"]) == "50.00%"
    assert format_percent(rates["closing_rate"]) == "83.33%"
    assert format_percent(rates["on_time_closing_rate"]) == "66.67%"
    assert format_percent(rates["grid_resolution_share"]) == "40.00%"
    assert format_percent(rates["accurate_registration_rate"]) == "87.50%"
    excluded = compute_rates(counts, exclude_extended_from_due=True)
    assert format_percent(excluded["on_time_closing_rate"]) == "60.00%"


def test_the_period_and_area_bound_the_cohort(store: SuiteStore, boundary_cases: Settings) -> None:
    assert count_cases(store.reader, date(2024, 6, 4), date(2024, 6, 30), "370303").reported == 0
    assert count_cases(store.reader, date(2024, 6, 3), date(2024, 6, 3), "370303001001001").reported == 8
    assert count_cases(store.reader, date(2024, 6, 3), date(2024, 6, 3), "370303002").reported == 0
    only_grid = count_cases(store.reader, date(2024, 6, 3), date(2024, 6, 3), "370303",
                            CaseFilter(resolution_level="grid"))
    assert only_grid.reported == 2


def test_the_command_line_prints_the_same_numbers(store: SuiteStore, boundary_cases: Settings) -> None:
    env = {"PATH": "/usr/bin:/bin", **store.environment(), "CITYGRID_DATA_DIR": str(boundary_cases.data_dir)}
    out = subprocess.run([sys.executable, "-m", "cli", "kpi", "--from", "2024-06-03", "--to", "2024-06-03",
                          "--area", "370303"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    expected = kpi_report(count_cases(store.reader, date(2024, 6, 3), date(2024, 6, 3), "370303"))
    assert report["counts"] == expected["counts"]
    assert report["rates_percent"]["按期结案率"] == "66.67%"
    bad = subprocess.run([sys.executable, "-m", "cli", "kpi", "--from", "2024-06-03", "--to", "2024-06-03",
                          "--area", "37x"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and "area code" in bad.stderr and "Traceback" not in bad.stderr
