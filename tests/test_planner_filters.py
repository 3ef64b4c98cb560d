"""The planner pages' shared filters (dashboard/filters.py): URL <-> view, validation, breadcrumb, defaults."""

from __future__ import annotations

from datetime import date
from urllib.parse import parse_qs

import pytest

from dashboard import filters
from dashboard.filters import FilterError, PlannerFilters
from geodata.facts import FactQuery
from tests.conftest import DemoCity

PERIOD = (date(2026, 9, 1), date(2026, 9, 30))


def test_a_view_round_trips_through_its_query_string() -> None:
    view = PlannerFilters(date(2026, 8, 1), date(2026, 8, 30), "370303001", kinds=("event",),
                          majors=("event/01",), categories=("event/0102", "component/0101"),
                          channels=("patrol", "hotline"), statuses=("closed",), levels=("grid",), lang="en")
    search = view.search()
    assert "cat=event/0102,component/0101" in search and "area=370303001" in search
    assert filters.from_search(search, PERIOD) == view
    assert view.query() == FactQuery(date(2026, 8, 1), date(2026, 8, 30), "370303001", kinds=("event",),
                                     majors=("event/01",), categories=("event/0102", "component/0101"),
                                     channels=("patrol", "hotline"), statuses=("closed",), levels=("grid",))
    assert parse_qs(view.search(area_code=None).lstrip("?")).get("area") is None


def test_missing_dates_default_to_the_given_span_and_one_date_gives_thirty_days() -> None:
    everything = filters.from_search("", PERIOD)
    assert (everything.date_from, everything.date_to) == PERIOD
    only_from = filters.from_search("?from=2026-03-01", PERIOD)
    assert (only_from.date_from, only_from.date_to) == (date(2026, 3, 1), date(2026, 3, 30))
    only_to = filters.from_search("?to=2026-03-30", PERIOD)
    assert (only_to.date_from, only_to.date_to) == (date(2026, 3, 1), date(2026, 3, 30))


@pytest.mark.parametrize(("search", "named"), [
    ("?from=2026-13-01", "from"),
    ("?from=2026-09-01&to=2026-08-01", "before it starts"),
    ("?area=370303' OR '1'='1", "area"),
    ("?area=3703", "area"),
    ("?kind=planet", "kinds"),
    ("?channel=patrol'%3B--", "channels"),
    ("?cat=0101", "categories"),
    ("?major=event/1", "majors"),
    ("?status=gone", "statuses"),
    ("?level=moon", "levels"),
    ("?from=2026-01-01,2026-02-01", "from"),
    ("?cat=" + "x" * 100, "longer than"),
    ("?from=1990-01-01&to=2026-01-01", "ten years"),
])
def test_bad_values_are_refused_with_a_message_naming_them(search: str, named: str) -> None:
    with pytest.raises(FilterError, match=named):
        filters.from_search(search, PERIOD)


def test_non_text_input_is_refused() -> None:
    for hostile in ({"from": "x"}, ["?from=2026-01-01"], 12, b"?from=2026-01-01"):
        with pytest.raises(FilterError):
            filters.from_search(hostile, PERIOD)
    with pytest.raises(FilterError):
        filters.from_query({"kind": {"$ne": 1}}, PERIOD)
    with pytest.raises(FilterError):
        filters.checked_area("1" * 40)
    assert filters.drill_to("370303")["area"] == "370303"


@pytest.mark.usefixtures("app_env_demo")
def test_apply_controls_keeps_other_keys_and_moves_the_area() -> None:
    search = "?from=2026-09-01&to=2026-09-30&area=370303&lang=en&zoom=12"
    out = filters.apply_controls(search, "2026-09-02", "2026-09-20", {"channel": ["patrol"], "kind": []})
    params = parse_qs(out.lstrip("?"))
    assert params["from"] == ["2026-09-02"] and params["channel"] == ["patrol"] and params["area"] == ["370303"]
    assert params["lang"] == ["en"] and params["zoom"] == ["12"] and "kind" not in params
    up = filters.apply_controls(search, "2026-09-02", "2026-09-20", {}, area=None)
    assert "area" not in parse_qs(up.lstrip("?"))
    with pytest.raises(FilterError):
        filters.apply_controls(search, "2026-09-02", "2026-09-20", {"status": ["nope"]})


@pytest.mark.usefixtures("app_env_demo")
def test_breadcrumb_names_every_ancestor_and_defaults_come_from_the_data(demo_city: DemoCity) -> None:
    from sqlalchemy import text

    with demo_city.store.reader.connect() as conn:
        grid, community, street, district = conn.execute(text(
            "SELECT g.code, c.name, s.name, d.name FROM core.admin_unit g"
            " JOIN core.admin_unit c ON c.code = g.parent_code JOIN core.admin_unit s ON s.code = c.parent_code"
            " JOIN core.admin_unit d ON d.code = s.parent_code WHERE g.level = 'grid' ORDER BY g.code LIMIT 1")).one()
        last = conn.execute(text("SELECT max((reported_at AT TIME ZONE 'Asia/Shanghai')::date)"
                                 " FROM core.case_record")).scalar_one()
    view = filters.from_search(f"?area={grid}")
    assert view.date_to == last and (view.date_to - view.date_from).days == filters.DEFAULT_DAYS - 1
    crumbs = filters.breadcrumb(view)
    words = [getattr(item, "children", None) for item in crumbs]
    assert words[0] == "全市" and [district, street, community] == [w for w in words if w in
                                                                    (district, street, community)]
    buttons = [item.id["code"] for item in crumbs if isinstance(getattr(item, "id", None), dict)]
    assert buttons == ["city", grid[:6], grid[:9], grid[:12]]
