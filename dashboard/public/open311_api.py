"""Open311 GeoReport v2 read API under ``/open311/v2/`` (JSON and XML), on the public role only.

Routes (GET; POST answers 405 — submissions are not accepted here):

* ``services.{json|xml}``                 the public case categories as services
* ``services/{service_code}.{json|xml}``  one service's definition (no extra attributes)
* ``requests.{json|xml}``                 public cases: ``service_code``, ``start_date``, ``end_date``,
  ``status``, ``service_request_id`` as the specification; last 90 days and at most 1,000 per answer by
  default; ``page`` and ``page_size`` (≤ 1,000) page past that, and a full page carries a ``Link: rel=next``
  header (or step ``end_date`` back to the oldest ``requested_datetime`` received)
* ``requests/{service_request_id}.{json|xml}``  one request (a list of one, as the specification answers)
* ``discovery.json``                      where the endpoint is and what it offers

``?lang=en`` gives English service names and status notes (an extension; zh-CN by default).  Errors use the
specification's shape: a list of ``{"code", "description"}`` (``<errors><error>`` in XML).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode
from xml.etree import ElementTree as ET

import flask
from sqlalchemy import Engine

from dashboard.public.cache import AnswerCache
from geodata import open311
from geodata.open311 import Open311Error
from layers.i18n import normalise_language

PREFIX = "/open311/v2"
_FORMATS = ("json", "xml")
_ARGS = ("service_code", "start_date", "end_date", "status", "service_request_id", "page", "page_size",
         "jurisdiction_id", "lang")


def open311_error(status: int, message: str, fmt: str | None = None) -> flask.Response:
    """The specification's error answer in the request's format (XML when the path ends .xml)."""
    fmt = fmt or ("xml" if flask.request.path.endswith(".xml") else "json")
    errors = [{"code": status, "description": message}]
    response = _render(errors, fmt, "errors", "error")
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def _xml_value(parent: ET.Element, key: str, value: Any) -> None:
    child = ET.SubElement(parent, key)
    if isinstance(value, bool):
        child.text = "true" if value else "false"
    elif isinstance(value, list):
        for item in value:
            _xml_item(child, "attribute" if key == "attributes" else "value", item)
    elif value is not None:
        child.text = str(value)


def _xml_item(parent: ET.Element, tag: str, item: Any) -> None:
    element = ET.SubElement(parent, tag)
    if isinstance(item, dict):
        for key, value in item.items():
            _xml_value(element, key, value)
    else:
        element.text = str(item)


def _render(data: Any, fmt: str, root: str, item: str) -> flask.Response:
    if fmt == "json":
        response = flask.Response(flask.json.dumps(data, ensure_ascii=False),
                                  mimetype="application/json")
        response.charset = "utf-8"
        return response
    top = ET.Element(root)
    if isinstance(data, list):
        for entry in data:
            _xml_item(top, item, entry)
    else:
        for key, value in data.items():
            _xml_value(top, key, value)
    body = ET.tostring(top, encoding="unicode")
    return flask.Response('<?xml version="1.0" encoding="utf-8"?>\n' + body, mimetype="text/xml")


def _format(fmt: str) -> str:
    if fmt not in _FORMATS:
        raise Open311Error("format must be json or xml", status=404)
    return fmt


def _args() -> dict[str, str | None]:
    unknown = [k for k in flask.request.args if k not in _ARGS]
    if unknown:
        raise Open311Error(f"unknown parameter {unknown[0][:40]!r}")
    values: dict[str, str | None] = {}
    for key in _ARGS:
        got = flask.request.args.getlist(key)
        if len(got) > 1:
            raise Open311Error(f"{key} given more than once")
        if got and len(got[0]) > 4000:
            raise Open311Error(f"{key} is too long")
        values[key] = got[0] if got else None
    return values


def create_blueprint(cache: AnswerCache, engine: Callable[[], Engine]) -> flask.Blueprint:
    """The API's routes; every answer goes through the cache keyed by its parameters and the data version."""
    bp = flask.Blueprint("open311", __name__, url_prefix=PREFIX)

    @bp.errorhandler(Open311Error)
    def _refused(error: Open311Error) -> flask.Response:
        return open311_error(error.status, str(error))

    def cached(what: str, params: Any, compute: Callable[[Any], Any]) -> Any:
        def run() -> Any:
            with engine().connect() as conn:
                return compute(conn)
        return cache.get_or_compute("open311:" + what, params, run)

    @bp.get("/services.<fmt>")
    def services(fmt: str) -> flask.Response:
        fmt = _format(fmt)
        lang = normalise_language(_args()["lang"])
        data = cached("services", lang, lambda conn: open311.services(conn, lang))
        return _render(data, fmt, "services", "service")

    @bp.get("/services/<code>.<fmt>")
    def service(code: str, fmt: str) -> flask.Response:
        fmt = _format(fmt)
        _args()
        open311.parse_service_code(code)
        data = cached("service", code, lambda conn: open311.service_definition(conn, code))
        return _render(data, fmt, "service_definition", "attribute")

    @bp.get("/requests.<fmt>")
    def requests(fmt: str) -> flask.Response:
        fmt = _format(fmt)
        args = _args()
        lang = normalise_language(args["lang"])
        query = open311.request_query(args)
        data = cached("requests", [lang, query.cache_key()],
                      lambda conn: open311.service_requests(conn, query, lang))
        response = _render(data, fmt, "service_requests", "request")
        if len(data) == query.page_size and query.page < open311.MAX_PAGE:
            following = {k: v for k, v in args.items() if v is not None}
            following.update(start_date=query.start.isoformat(), end_date=query.end.isoformat(),
                             page=str(query.page + 1), page_size=str(query.page_size))
            response.headers["Link"] = f'<{PREFIX}/requests.{fmt}?{urlencode(following)}>; rel="next"'
        return response

    @bp.get("/requests/<number>.<fmt>")
    def request_one(number: str, fmt: str) -> flask.Response:
        fmt = _format(fmt)
        lang = normalise_language(_args()["lang"])
        open311.check_request_id(number)
        data = cached("request", [lang, number], lambda conn: open311.service_request(conn, number, lang))
        return _render(data, fmt, "service_requests", "request")

    @bp.get("/discovery.json")
    def discovery() -> flask.Response:
        base = flask.request.host_url.rstrip("/") + PREFIX + "/"
        return _render({
            "changeset": "2025-01-01T00:00:00+08:00",
            "contact": "",
            "key_service": "",
            "endpoints": [{"specification": "http://wiki.open311.org/GeoReport_v2", "url": base,
                           "changeset": "2025-01-01T00:00:00+08:00", "type": "production",
                           "formats": ["application/json", "text/xml"]}],
        }, "json", "discovery", "endpoint")

    return bp

