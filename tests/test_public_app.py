"""The public app through Flask's test client against real PostGIS: pages, callbacks, Open311, safety.

The city of tests/public_city.py carries reporters' names, phones, ID numbers, exact addresses and exact
coordinates; every response collected here (pages, Dash callbacks, the API in JSON and XML, errors) is
scanned for them.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import dash
import h3
import pytest
from flask.testing import FlaskClient
from sqlalchemy import text

from dashboard.public.app import create_public_app
from geodata.settings import Settings
from tests import public_city
from tests.conftest import SuiteStore

RESPONSES: list[tuple[str, Any]] = []


@pytest.fixture(scope="module")
def city(store: SuiteStore, tmp_path_factory: pytest.TempPathFactory) -> public_city.Secrets:
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"))
    return public_city.build(store.writer, tmp_path_factory.mktemp("city"), settings)


@pytest.fixture(scope="module")
def app(store: SuiteStore, city: public_city.Secrets, tmp_path_factory: pytest.TempPathFactory) -> dash.Dash:
    settings = Settings(data_dir=tmp_path_factory.mktemp("app"), public_rate_limit_per_minute=100000)
    return create_public_app(settings, engine=lambda: store.public)


@pytest.fixture()
def client(app: dash.Dash) -> Iterator[FlaskClient]:
    with app.server.test_client() as c:
        yield c


def _keep(label: str, response: Any) -> Any:
    RESPONSES.append((label, response))
    body = response.get_data(as_text=True)
    assert "Traceback" not in body and "psycopg" not in body and "sqlalchemy" not in body.lower(), body[:500]
    return response


def _callback(client: FlaskClient, app: dash.Dash, output: str, values: dict[str, Any],
              changed: str | None = None) -> Any:
    """POST a callback as Dash's renderer does; ``values`` maps "id.prop" to the value sent."""
    spec = app.callback_map[output]
    outputs = [{"id": part.split(".")[0], "property": part.split(".")[1]}
               for part in (output[2:-2].split("...") if output.startswith("..") else [output])]
    body = {
        "output": output,
        "outputs": outputs if output.startswith("..") else outputs[0],
        "inputs": [{**i, "value": values.get(f"{i['id']}.{i['property']}")} for i in spec["inputs"]],
        "state": [{**s, "value": values.get(f"{s['id']}.{s['property']}")} for s in spec["state"]],
        "changedPropIds": [changed] if changed else [],
    }
    return _keep(f"callback {output} {values}", client.post("/_dash-update-component", json=body))


MAP = "..public-map.figure...public-legend.children.."
DETAIL = "public-detail.children"
STREETS = "public-streets.children"


def _words_output(app: dash.Dash) -> str:
    return next(k for k in app.callback_map if "public-title.children" in k)


# --- pages and callbacks -------------------------------------------------------------------------------


def test_page_and_dash_resources_load_without_login(client: FlaskClient) -> None:
    for path in ("/", "/?lang=en", "/_dash-layout", "/_dash-dependencies", "/healthz"):
        response = _keep(path, client.get(path))
        assert response.status_code == 200, path
        assert "Set-Cookie" not in response.headers
    assert "public-map" in client.get("/_dash-layout").get_data(as_text=True)
    for internal in ("/login", "/logout", "/kiosk/abc", "/bigscreen", "/admin"):
        response = _keep(internal, client.get(internal))
        # Dash serves its index on unknown paths (a single-page app); nothing of the internal app is there.
        body = response.get_data(as_text=True)
        assert "password" not in body.lower() and "登录" not in body, internal


def test_map_aggregates_to_h3_and_hides_places_below_k(client: FlaskClient, app: dash.Dash,
                                                       store: SuiteStore, city: public_city.Secrets) -> None:
    response = _callback(client, app, MAP, {"public-url.search": "", "public-days.value": 90,
                                            "public-unit.value": "h3_r8", "public-street.value": None})
    assert response.status_code == 200
    figure = response.get_json()["response"]["public-map"]["figure"]
    with store.writer.connect() as conn:
        expected = dict(conn.execute(text(
            "SELECT h3_r8, count(*) FROM core.case_record c JOIN core.category k"
            " ON k.kind = c.kind AND k.code = c.category_code AND NOT k.sensitive"
            " WHERE case_number LIKE 'PUB%' AND reported_at < now() - interval '24 hours' GROUP BY h3_r8")).all())
    drawn = {loc for trace in figure["data"][1:] for loc in trace["locations"]}
    assert drawn == {h3.int_to_str(int(cell)) for cell in expected}
    shown = figure["data"][1]
    for location, custom in zip(shown["locations"], shown["customdata"], strict=True):
        assert custom[2] == expected[h3.str_to_int(location)] >= 5
    if len(figure["data"]) > 2:  # the grey trace: below k, no counts in it
        grey = figure["data"][2]
        assert all(expected[h3.str_to_int(loc)] < 5 for loc in grey["locations"])
        assert all(len(c) == 2 for c in grey["customdata"])


def test_grid_mode_needs_a_street_and_then_draws_its_grids(client: FlaskClient, app: dash.Dash) -> None:
    base = {"public-url.search": "?lang=en", "public-days.value": 90, "public-unit.value": "grid"}
    response = _callback(client, app, MAP, {**base, "public-street.value": None})
    assert response.get_json()["response"]["public-legend"]["children"] == "Choose a street to see its unit grids."
    response = _callback(client, app, MAP, {**base, "public-street.value": "370303001"})
    figure = response.get_json()["response"]["public-map"]["figure"]
    assert set(figure["data"][1]["locations"]) == {"370303001001001", "370303001002003"}


def test_click_on_a_grid_gives_category_counts_and_on_a_quiet_grid_no_breakdown(
        client: FlaskClient, app: dash.Dash) -> None:
    def click(grid: str, search: str = "") -> Any:
        return _callback(client, app, DETAIL, {
            "public-map.clickData": {"points": [{"curveNumber": 1, "location": grid}]},
            "public-days.value": 90, "public-unit.value": "grid", "public-url.search": search,
        }, changed="public-map.clickData")

    busy = json.dumps(click(public_city.BUSY_GRID).get_json(), ensure_ascii=False)
    assert "暴露垃圾" in busy and "平均处置时长" in busy
    assert "关爱对象求助" not in busy  # the sensitive category is not even a row of it
    busy_en = json.dumps(click(public_city.BUSY_GRID, "?lang=en").get_json(), ensure_ascii=False)
    assert "Exposed refuse" in busy_en
    quiet = json.dumps(click(public_city.QUIET_GRID).get_json(), ensure_ascii=False)
    assert "少于 5 件" in quiet and "暴露垃圾" not in quiet and "public-categories" not in quiet


def test_streets_table_shows_rates_only_above_k(client: FlaskClient, app: dash.Dash) -> None:
    body = json.dumps(_callback(client, app, STREETS, {"public-days.value": 90, "public-url.search": ""}).get_json(),
                      ensure_ascii=False)
    assert "测试街道1" in body and "测试街道2" in body
    assert body.count("%") >= 2  # street 1 has rates; street 2 (3 cases) shows dashes
    rows = _rows(_callback(client, app, STREETS, {"public-days.value": 90, "public-url.search": ""}).get_json())
    assert rows["测试街道2"][2:] == ["—", "—"]
    assert rows["测试街道1"][1] == 70


def _rows(payload: dict[str, Any]) -> dict[str, list[Any]]:
    table = payload["response"]["public-streets"]["children"]
    body = table["props"]["children"][1]["props"]["children"]
    out = {}
    for tr in body:
        cells = [td["props"]["children"] for td in tr["props"]["children"]]
        out[cells[0]] = cells
    return out


def test_words_follow_the_language(client: FlaskClient, app: dash.Dash, store: SuiteStore) -> None:
    output = _words_output(app)
    zh = _callback(client, app, output, {"public-url.search": "", "public-days.value": 30}).get_json()
    en = _callback(client, app, output, {"public-url.search": "?lang=en", "public-days.value": 30}).get_json()
    assert zh["response"]["public-title"]["children"] == "城市问题处置公开"
    assert en["response"]["public-title"]["children"] == "How the city fixes reported problems"
    with store.public.connect() as conn:
        last = conn.execute(text("SELECT last_day FROM open_data.public_days")).scalar_one()
    note = f"{(last - timedelta(days=29)).isoformat()} 至 {last.isoformat()}"
    assert "30 个完整日" in zh["response"]["public-intro"]["children"] and note in zh["response"]["public-intro"]["children"]
    assert "last 30 whole days" in en["response"]["public-intro"]["children"]


def test_a_places_categories_add_up_to_its_headline(store: SuiteStore, city: public_city.Secrets) -> None:
    """The map's numbers come from the rollups, a click's categories from the place's cases (an H3 cell's
    through the grids it touches): the two agree, and equal reading the cell by its H3 column."""
    from layers.public_cases import _CATEGORIES_SQL, breakdown, read_policy

    with store.public.connect() as conn:
        policy = read_policy(conn)
        places = {unit: conn.execute(text(
            f"SELECT {column} FROM open_data.case_public_h3 GROUP BY 1 ORDER BY sum(cases) DESC LIMIT 1"  # noqa: S608
        )).scalar_one() for unit, column in (("h3_r8", "h3_r8"), ("h3_r7", "h3_r7"))}
        places["grid"] = public_city.BUSY_GRID
        for unit, cell in places.items():
            found = breakdown(conn, unit, cell, 90, policy)
            assert found.stats is not None and found.stats.cases >= policy.min_cases
            assert sum(c["cases"] for c in found.categories) == found.stats.cases, unit
            if unit != "grid":
                by_cell = conn.execute(_CATEGORIES_SQL[f"{unit}_by_cell"], {"days": 90, "cell": cell}).mappings()
                assert [dict(r) for r in by_cell] == found.categories


# --- Open311 ---------------------------------------------------------------------------------------------


def test_services_in_json_and_xml_hide_sensitive_categories(client: FlaskClient) -> None:
    services = _keep("services.json", client.get("/open311/v2/services.json")).get_json()
    codes = {s["service_code"] for s in services}
    assert "event-0102" in codes and "event-0601" not in codes
    assert set(services[0]) >= {"service_code", "service_name", "description", "metadata", "type", "keywords",
                                "group"}
    xml = _keep("services.xml", client.get("/open311/v2/services.xml"))
    assert xml.mimetype == "text/xml"
    root = ET.fromstring(xml.get_data())
    assert root.tag == "services" and len(root.findall("service")) == len(services)
    definition = _keep("service", client.get("/open311/v2/services/event-0102.json")).get_json()
    assert definition == {"service_code": "event-0102", "attributes": []}
    assert _keep("sensitive service", client.get("/open311/v2/services/event-0601.json")).status_code == 404


def test_requests_follow_georeport_v2(client: FlaskClient, store: SuiteStore, city: public_city.Secrets) -> None:
    response = _keep("requests.json", client.get("/open311/v2/requests.json"))
    assert response.status_code == 200
    requests = response.get_json()
    numbers = {r["service_request_id"] for r in requests}
    assert numbers and numbers <= set(city.public_numbers)
    assert not numbers & set(city.sensitive_numbers)
    with store.writer.connect() as conn:
        labels = {(round(x, 6), round(y, 6)) for x, y in conn.execute(text(
            "SELECT ST_X(label_point), ST_Y(label_point) FROM core.admin_unit WHERE level = 'grid'")).all()}
        visible = conn.execute(text(
            "SELECT count(*) FROM core.case_record c JOIN core.category k ON k.kind = c.kind"
            " AND k.code = c.category_code AND NOT k.sensitive WHERE case_number LIKE 'PUB%'"
            " AND reported_at < now() - interval '24 hours'")).scalar_one()
    assert len(requests) == visible
    for r in requests:
        assert r["status"] in ("open", "closed") and r["status_notes"]
        assert (r["long"], r["lat"]) in labels, "a request must sit on its grid's label point"
        assert r["expected_datetime"] and r["requested_datetime"].endswith("+08:00")
        assert "[电话已隐去]" in r["description"] and "[证件号已隐去]" in r["description"]
        assert "某先生" in r["description"] and "号" not in r["description"].split("门口")[0][-2:]
    closed = _keep("closed", client.get("/open311/v2/requests.json?status=closed")).get_json()
    assert closed and all(r["status"] == "closed" for r in closed)
    assert all("已结案" in r["status_notes"] for r in closed)
    xml = _keep("requests.xml", client.get("/open311/v2/requests.xml?status=open"))
    root = ET.fromstring(xml.get_data())
    assert root.tag == "service_requests"
    assert {e.findtext("status") for e in root.findall("request")} == {"open"}
    one = requests[0]["service_request_id"]
    single = _keep("one", client.get(f"/open311/v2/requests/{one}.json")).get_json()
    assert [r["service_request_id"] for r in single] == [one]
    single_xml = ET.fromstring(_keep("one.xml", client.get(f"/open311/v2/requests/{one}.xml")).get_data())
    assert single_xml.find("request/service_request_id").text == one
    hidden = city.sensitive_numbers[0]
    assert _keep("sensitive one", client.get(f"/open311/v2/requests/{hidden}.json")).status_code == 404


def test_requests_page_past_the_limit(client: FlaskClient) -> None:
    everything = client.get("/open311/v2/requests.json").get_json()
    first = _keep("page1", client.get("/open311/v2/requests.json?page_size=20"))
    assert 'rel="next"' in first.headers["Link"]
    pages, url = [], "/open311/v2/requests.json?page_size=20"
    while url:
        response = _keep(url, client.get(url))
        pages += response.get_json()
        link = response.headers.get("Link")
        url = link.split(">")[0].lstrip("<") if link else ""
    assert [r["service_request_id"] for r in pages] == [r["service_request_id"] for r in everything]


def test_probed_pages_are_those_of_the_whole_window(store: SuiteStore, city: public_city.Secrets,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages sought among the newest cases first (geodata/open311.py) equal pages over the whole window."""
    from geodata import open311

    queries = [open311.request_query(args) for args in (
        {}, {"page_size": "7"}, {"page_size": "7", "page": "3"}, {"page_size": "20", "page": "4"},
        {"status": "closed", "page_size": "5", "page": "2"}, {"service_code": "event-0102", "page_size": "9"})]
    with store.public.connect() as conn:
        probed = [open311.service_requests(conn, q) for q in queries]
        monkeypatch.setattr(open311, "PROBE_SPANS", ())
        whole = [open311.service_requests(conn, q) for q in queries]
    assert probed == whole and all(probed[1:])
    assert [len(p) for p in probed[1:4]] == [7, 7, 13]  # 73 public cases: the fourth page of 20 holds 13


def test_requests_filter_by_service_and_dates(client: FlaskClient) -> None:
    now = datetime.now().astimezone()
    start = (now - timedelta(days=30)).isoformat(timespec="seconds")
    recent = _keep("dates", client.get("/open311/v2/requests.json", query_string={"start_date": start})).get_json()
    assert all(r["requested_datetime"] >= start[:19] for r in recent)
    none = _keep("other service", client.get("/open311/v2/requests.json?service_code=event-0604")).get_json()
    assert none == []


def test_post_is_refused_with_an_open311_error(client: FlaskClient) -> None:
    for path in ("/open311/v2/requests.json", "/open311/v2/requests.xml"):
        response = _keep("POST " + path, client.post(path, data={"service_code": "event-0102", "lat": "36.8"}))
        assert response.status_code == 405
        body = response.get_data(as_text=True)
        assert "not accepted" in body
    assert ET.fromstring(response.get_data()).tag == "errors"
    for path in ("/", "/healthz", "/open311/v2/services.json"):
        assert _keep("write " + path, client.put(path, data="x")).status_code == 405
        assert _keep("delete " + path, client.delete(path)).status_code == 405


# --- hostile input ---------------------------------------------------------------------------------------

HOSTILE_QUERIES = [
    "start_date=2025-01-01'; DROP TABLE core.case_record;--",
    "start_date=1900-01-01&end_date=2100-01-01",
    "start_date=2025-01-01&end_date=2024-01-01",
    "status=open' OR '1'='1",
    "status=pending",
    "service_code=0102",
    "service_code=event-0102' UNION SELECT reporter_phone FROM private.case_reporter--",
    "service_request_id=1' OR 1=1--",
    "page=0", "page=-1", "page=abc", "page_size=100000", "page_size=1.5", "page=99999999999999999999",
    "start_date=" + "9" * 5000,
    "start_date=now", "end_date=2025-13-45",
    "unknown=1",
    "status=open&status=closed",
]


@pytest.mark.parametrize("query", HOSTILE_QUERIES)
def test_hostile_api_parameters_get_400_without_traceback(client: FlaskClient, query: str) -> None:
    response = _keep(query, client.get("/open311/v2/requests.json?" + query))
    assert response.status_code == 400, (query, response.status_code)
    errors = response.get_json()
    assert isinstance(errors, list) and errors[0]["code"] == 400 and errors[0]["description"]


@pytest.mark.parametrize("path", [
    "/open311/v2/requests/1'%20OR%201=1.json", "/open311/v2/requests/..%2F..%2Fetc.json",
    "/open311/v2/services/event-0102'.json", "/open311/v2/requests.csv", "/open311/v2/nothing.json",
    "/open311/v2/requests/NOPE0000.json",
])
def test_hostile_api_paths_get_4xx(client: FlaskClient, path: str) -> None:
    response = _keep(path, client.get(path))
    assert 400 <= response.status_code < 500, (path, response.status_code)


HOSTILE_CALLBACKS: list[dict[str, Any]] = [
    {"public-url.search": "", "public-days.value": "30; DROP TABLE x", "public-unit.value": "h3_r8"},
    {"public-url.search": "", "public-days.value": 100000, "public-unit.value": "h3_r8"},
    {"public-url.search": "", "public-days.value": -1, "public-unit.value": "h3_r8"},
    {"public-url.search": "", "public-days.value": [30], "public-unit.value": "h3_r8"},
    {"public-url.search": "", "public-days.value": 30, "public-unit.value": "h3_r8 OR 1=1"},
    {"public-url.search": "", "public-days.value": 30, "public-unit.value": "h3_r8",
     "public-street.value": "370303001' OR '1'='1"},
    {"public-url.search": {"lang": "en"}, "public-days.value": 30, "public-unit.value": "h3_r8"},
]


@pytest.mark.parametrize("values", HOSTILE_CALLBACKS)
def test_hostile_callback_values_get_400(client: FlaskClient, app: dash.Dash, values: dict[str, Any]) -> None:
    response = _callback(client, app, MAP, values)
    assert response.status_code == 400, response.get_data(as_text=True)[:300]


@pytest.mark.parametrize("click", [
    "x", {"points": "x"}, {"points": [{"curveNumber": 1, "location": "1' OR 1=1"}]},
    {"points": [{"curveNumber": 1, "location": "8831aa5569fffff"}]},  # an H3 cell in grid mode
    {"points": [{"curveNumber": 1, "location": 42}]},
])
def test_hostile_clicks_get_400(client: FlaskClient, app: dash.Dash, click: Any) -> None:
    response = _callback(client, app, DETAIL, {"public-map.clickData": click, "public-days.value": 30,
                                               "public-unit.value": "grid", "public-url.search": ""},
                         changed="public-map.clickData")
    assert response.status_code == 400


def test_malformed_and_oversized_callback_bodies_get_4xx(client: FlaskClient) -> None:
    cases = [
        ("not json", client.post("/_dash-update-component", data="{{{", content_type="application/json")),
        ("a list", client.post("/_dash-update-component", json=[1, 2])),
        ("unknown output", client.post("/_dash-update-component", json={"output": "secret.children",
                                                                        "outputs": {}, "inputs": []})),
        ("bad inputs", client.post("/_dash-update-component", json={"output": "public-detail.children",
                                                                    "outputs": {}, "inputs": "x"})),
        ("huge", client.post("/_dash-update-component", data="x" * 200_000, content_type="application/json")),
    ]
    for label, response in cases:
        _keep(label, response)
        assert 400 <= response.status_code < 500, (label, response.status_code)
    assert cases[-1][1].status_code == 413


# --- headers and rate limit ------------------------------------------------------------------------------


def test_security_headers_on_every_kind_of_answer(client: FlaskClient) -> None:
    for path in ("/", "/_dash-layout", "/open311/v2/services.json", "/open311/v2/requests.xml", "/nothing/here",
                 "/open311/v2/requests.json?page=0"):
        response = _keep(path, client.get(path))
        headers = response.headers
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "no-referrer"
        csp = headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "'unsafe-eval'" not in csp
        script_src = csp.split("script-src ")[1].split(";")[0]
        assert "'unsafe-inline'" not in script_src
    index = client.get("/")
    assert "'sha256-" in index.headers["Content-Security-Policy"], "Dash's start-up script allowed by its hash"


def test_rate_limit_answers_429_past_the_setting(store: SuiteStore, city: public_city.Secrets,
                                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    settings = Settings(data_dir=tmp_path_factory.mktemp("limited"), public_rate_limit_per_minute=5)
    limited = create_public_app(settings, engine=lambda: store.public)
    with limited.server.test_client() as c:
        statuses = [c.get("/open311/v2/services.json").status_code for _ in range(5)]
        assert statuses == [200] * 5
        refused = _keep("429", c.get("/open311/v2/services.json"))
        assert refused.status_code == 429 and refused.headers["Retry-After"]
        assert c.get("/_dash-component-suites/dash/dcc/dash_core_components.js").status_code != 429
        other = c.get("/open311/v2/services.json", environ_base={"REMOTE_ADDR": "127.0.0.9"})
        assert other.status_code == 200, "another client has its own budget"


# --- the scan: last, over everything collected above -------------------------------------------------------


def test_no_response_carries_personal_data_or_exact_places(client: FlaskClient, app: dash.Dash,
                                                           city: public_city.Secrets) -> None:
    # A few more answers of every kind, so the scan does not depend on which tests ran before.
    for path in ("/", "/?lang=en", "/_dash-layout", "/open311/v2/requests.json", "/open311/v2/requests.xml",
                 "/open311/v2/requests.json?lang=en", "/open311/v2/services.xml", "/missing",
                 "/open311/v2/requests.json?page=abc"):
        _keep(path, client.get(path))
    for unit in ("h3_r7", "h3_r8"):
        _callback(client, app, MAP, {"public-url.search": "", "public-days.value": 90, "public-unit.value": unit})
    _callback(client, app, MAP, {"public-url.search": "", "public-days.value": 90, "public-unit.value": "grid",
                                 "public-street.value": "370303001"})
    _callback(client, app, STREETS, {"public-days.value": 90, "public-url.search": "?lang=en"})
    _callback(client, app, _words_output(app), {"public-url.search": "", "public-days.value": 90})
    assert len(RESPONSES) > 60
    assert public_city.scan_all(RESPONSES, city) == {}
    # The scan itself finds what it looks for (so an empty result means something).
    sample = json.dumps({"x": city.names[0] + " " + city.phones[1][:3] + "-" + city.phones[1][3:7] + "-"
                         + city.phones[1][7:]}).encode()
    assert set(public_city.leaks(sample, city)) == {city.names[0], city.phones[1]}


def test_answers_are_keyed_by_the_data_version(store: SuiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from dashboard.public import cache as cache_module

    monkeypatch.setattr(cache_module, "VERSION_SECONDS", 0.0)
    cache = cache_module.AnswerCache(lambda: store.public)
    calls: list[int] = []
    assert cache.get_or_compute("q", 1, lambda: calls.append(1) or "a") == "a"
    assert cache.get_or_compute("q", 1, lambda: calls.append(1) or "b") == "a", "a repeat is served cached"
    with store.writer.begin() as conn:
        conn.execute(text("UPDATE core.data_version SET version = version + 1"))  # what an ETL run does
    assert cache.get_or_compute("q", 1, lambda: calls.append(1) or "c") == "c", "a new load is never stale"
    assert len(calls) == 2
