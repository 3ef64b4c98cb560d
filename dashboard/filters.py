"""The planner pages' shared filters: their state lives in the URL, a filter bar edits it, a breadcrumb climbs.

Why the URL: a planner sends a colleague a link and the colleague sees the same view — period, kind, major
and minor category, channel, status, resolution level and the drill-down position (``area``).  Values are
parsed into a :class:`geodata.facts.FactQuery`, which checks each against its closed set, so nothing a
browser sends reaches SQL or an index unchecked; a bad value becomes a message on the page.

Query string (every key optional; lists comma-separated)::

    ?from=2026-08-01&to=2026-08-30&kind=event&major=event/01&cat=event/0102,event/0103
     &channel=patrol,hotline&status=closed&level=grid&area=370303001&lang=en

Missing dates default to the last 30 days of data (:func:`geodata.rollups.data_span`).

How a page uses it
------------------
1. ``layout(**query)``: ``state = filters.from_query(query)`` (a :class:`PlannerFilters`, or a
   :class:`FilterError` to show with :func:`problem`), then put ``filters.filter_bar(state)`` in the page.
   The bar holds ``dcc.Location(id=URL_ID, refresh=False)``, the controls and the breadcrumb; its callbacks
   are registered once here for every page (the ids are shared, one page is on screen at a time).
2. The page's content callback takes ``Input(filters.URL_ID, "search")`` and calls
   ``filters.from_search(search)`` -> :class:`PlannerFilters` (or raises :class:`FilterError`: return
   ``filters.problem(exc, lang)``), then ``state.query()`` for the facts engine.
3. To drill down (a click on the map or a table), return ``filters.drill_to(code)`` into
   ``Output(filters.DRILL_ID, "data")``; the URL's ``area`` changes and the content callback runs again.
   ``filters.checked_area(value)`` validates a clicked code first.
4. Links elsewhere: ``state.href(path, area_code=...)`` writes the same query string.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any, Final
from urllib.parse import parse_qs, urlencode

import dash
from dash import ALL, Input, Output, State, dcc, html
from sqlalchemy import Engine

from geodata import planner, rollups
from geodata.codes import CASE_KINDS, CASE_STATUSES, RESOLUTION_LEVELS, SOURCE_CHANNELS
from geodata.engines import reader_engine
from geodata.errors import CityGridError
from geodata.facts import FactQuery
from layers.i18n import normalise_language, t

URL_ID: Final = "filters-url"
DRILL_ID: Final = "filters-drill"
ERROR_ID: Final = "filters-error"
BREADCRUMB_ID: Final = "filters-breadcrumb"
DATES_ID: Final = "filters-dates"
#: URL key -> (PlannerFilters field, control id) of the list filters.
LIST_KEYS: Final = {"kind": ("kinds", "filters-kind"), "major": ("majors", "filters-major"),
                    "cat": ("categories", "filters-category"), "channel": ("channels", "filters-channel"),
                    "status": ("statuses", "filters-status"), "level": ("levels", "filters-level")}
FILTER_KEYS: Final = ("from", "to", *LIST_KEYS, "area")
DEFAULT_DAYS: Final = 30
#: Bounds on what a URL may hold: no filter needs more, and they keep a hostile URL from costing anything.
MAX_VALUE_LENGTH: Final = 64
MAX_VALUES: Final = 64


class FilterError(CityGridError):
    """A filter value that is not one (the message names the parameter and what it accepts)."""


@dataclass(frozen=True)
class PlannerFilters:
    """One planner view: the period, the list filters, the unit in view and the language."""

    date_from: date
    date_to: date
    area_code: str | None = None
    kinds: tuple[str, ...] = ()
    majors: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    levels: tuple[str, ...] = ()
    lang: str = "zh-CN"

    def query(self, area_code: Any = ...) -> FactQuery:
        """The facts engine's query for this view (``area_code`` overrides the unit in view)."""
        return FactQuery(self.date_from, self.date_to, self.area_code if area_code is ... else area_code,
                         kinds=self.kinds, majors=self.majors, categories=self.categories, channels=self.channels,
                         statuses=self.statuses, levels=self.levels)

    @property
    def level(self) -> str:
        """The level of the unit in view (``city``, ``district``, ``street``, ``community``, ``grid``)."""
        return planner.level_of(self.area_code)

    def params(self) -> dict[str, str]:
        """The query-string parameters of this view (empty filters left out; dates always written)."""
        out = {"from": self.date_from.isoformat(), "to": self.date_to.isoformat()}
        for key, (name, _control) in LIST_KEYS.items():
            values = getattr(self, name)
            if values:
                out[key] = ",".join(values)
        if self.area_code:
            out["area"] = self.area_code
        if self.lang != "zh-CN":
            out["lang"] = self.lang
        return out

    def search(self, **changes: Any) -> str:
        """``?…`` for this view with ``changes`` applied (field names, e.g. ``area_code="370303"``)."""
        return "?" + urlencode(replace(self, **changes).params() if changes else self.params(), safe=",/")

    def href(self, path: str, **changes: Any) -> str:
        """A link to ``path`` showing this view (with ``changes``)."""
        return path + self.search(**changes)


def default_period(engine: Engine | None = None) -> tuple[date, date]:
    """The last DEFAULT_DAYS days of data (up to today when the store has no case yet)."""
    with (engine or reader_engine()).connect() as conn:
        span = rollups.data_span(conn)
    last = span[1] if span else date.today()
    first = max(last - timedelta(days=DEFAULT_DAYS - 1), span[0]) if span else last - timedelta(days=DEFAULT_DAYS - 1)
    return first, last


def _values(raw: Any, key: str) -> list[str]:
    """A parameter's values as strings: one string (comma-separated) or a list of them; bounded."""
    items = raw if isinstance(raw, list | tuple) else [raw]
    out: list[str] = []
    for item in items:
        if item is None:
            continue
        if not isinstance(item, str):
            raise FilterError(f"{key}: expected text, got {type(item).__name__}")
        out.extend(v.strip() for v in item.split(",") if v.strip())
    if len(out) > MAX_VALUES:
        raise FilterError(f"{key}: at most {MAX_VALUES} values")
    for value in out:
        if len(value) > MAX_VALUE_LENGTH:
            raise FilterError(f"{key}: a value longer than {MAX_VALUE_LENGTH} characters is not a filter")
    return list(dict.fromkeys(out))


def _one(raw: Any, key: str) -> str | None:
    values = _values(raw, key)
    if len(values) > 1:
        raise FilterError(f"{key}: one value, not {len(values)}")
    return values[0] if values else None


def _day(value: str | None, key: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value) if len(value) == 10 else date.fromisoformat("x")
    except ValueError:
        raise FilterError(f"{key}: {value[:20]!r} is not a day (YYYY-MM-DD)") from None


def from_query(params: Mapping[str, Any], period: tuple[date, date] | None = None) -> PlannerFilters:
    """A view from query parameters (Dash pages' layout kwargs or ``parse_qs`` output); unknown keys ignored.

    Raises FilterError naming the first bad parameter.  ``period``: the default dates (else looked up).
    """
    if not isinstance(params, Mapping):
        raise FilterError("filters must be query-string parameters")
    first, last = _day(_one(params.get("from"), "from"), "from"), _day(_one(params.get("to"), "to"), "to")
    if first is None and last is None:
        first, last = period or default_period()
    elif first is None:
        first = last - timedelta(days=DEFAULT_DAYS - 1)  # type: ignore[operator]
    elif last is None:
        last = first + timedelta(days=DEFAULT_DAYS - 1)
    lists = {name: tuple(_values(params.get(key), key)) for key, (name, _control) in LIST_KEYS.items()}
    try:
        area = planner.check_area_code(_one(params.get("area"), "area"))
        state = PlannerFilters(first, last, area, lang=normalise_language(_one(params.get("lang"), "lang")),
                               **lists)
        state.query()  # FactQuery checks every value against its closed set
    except FilterError:
        raise
    except CityGridError as exc:
        raise FilterError(str(exc)) from None
    return state


def from_search(search: Any, period: tuple[date, date] | None = None) -> PlannerFilters:
    """A view from a URL's query string (``?from=…&to=…``), as ``dcc.Location.search`` gives it."""
    if search is None:
        search = ""
    if not isinstance(search, str):
        raise FilterError("the query string must be text")
    if len(search) > 4096:
        raise FilterError("the query string is too long")
    return from_query(parse_qs(search.lstrip("?"), keep_blank_values=False), period)


def language_of(search: Any) -> str:
    """The language a query string asks for, whatever else it holds (for messages about bad filters)."""
    if not isinstance(search, str):
        return normalise_language(None)
    values = parse_qs(search.lstrip("?")[:4096]).get("lang", [])
    return normalise_language(values[0] if values else None)


def checked_area(value: Any) -> str | None:
    """A code clicked on a map or in a table, checked (FilterError otherwise)."""
    try:
        return planner.check_area_code(value)
    except CityGridError as exc:
        raise FilterError(str(exc)) from None


def drill_to(code: str | None) -> dict[str, Any]:
    """What a page returns into ``Output(DRILL_ID, "data")`` to move the view to ``code`` (None: the city).

    The nonce makes a second click on the same unit (after climbing back up) a change Dash passes on.
    """
    return {"area": checked_area(code), "nonce": uuid.uuid4().hex}


def problem(error: Exception | str, lang: str, element_id: str = ERROR_ID) -> html.Div:
    """A bad filter shown as a message (never a traceback)."""
    return html.Div([html.Strong(t("filters.invalid", lang)), " ", str(error)], className="cg-error",
                    id=element_id, role="alert")


def state_for_page(query: Mapping[str, Any], element_id: str) -> tuple[PlannerFilters, html.Div | None]:
    """A page layout's filters from its URL, or the default view and the message naming the bad value."""
    lang = normalise_language(query.get("lang"))
    try:
        return from_query(query), None
    except FilterError as exc:
        return from_query({"lang": lang}), problem(exc, lang, element_id=element_id)


def triggered_id() -> Any:
    """The id of the input that fired, or None when a callback is called outside a request (tests, bench)."""
    try:
        return dash.ctx.triggered_id
    except dash.exceptions.MissingCallbackContextException:
        return None


# --- the filter bar ----------------------------------------------------------------------------------------

def _label(names: tuple[str, str], lang: str) -> str:
    return names[1] if lang == "en" else names[0]


def _closed_options(vocabulary: Mapping[str, tuple[str, str]], lang: str) -> list[dict[str, str]]:
    return [{"label": _label(names, lang), "value": key} for key, names in vocabulary.items()]


def category_options(lang: str, engine: Engine | None = None) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Dropdown options of the major and minor categories (labels ``部件 · 公用设施``)."""
    with (engine or reader_engine()).connect() as conn:
        entries = planner.categories(conn)
    majors, minors = [], []
    for entry in entries:
        label = f"{_label(CASE_KINDS[entry.kind], lang)} · {entry.code} {entry.name(lang)}"
        (majors if entry.is_major else minors).append({"label": label, "value": entry.key})
    return majors, minors


def _dropdown(control_id: str, label_key: str, options: list[dict[str, str]], value: tuple[str, ...],
              lang: str) -> html.Div:
    return html.Div([
        html.Label(t(label_key, lang), htmlFor=control_id),
        dcc.Dropdown(id=control_id, options=options, value=list(value), multi=True,
                     placeholder=t("filters.all", lang), className="cg-filter-dropdown"),
    ], className="cg-filter")


def filter_bar(state: PlannerFilters, engine: Engine | None = None, span: tuple[date, date] | None = None) -> html.Div:
    """The URL, the controls showing ``state``, the breadcrumb and the place for filter messages."""
    lang = state.lang
    majors, minors = category_options(lang, engine)
    if span is None:
        with (engine or reader_engine()).connect() as conn:
            span = rollups.data_span(conn)
    controls = [
        html.Div([
            html.Label(t("filters.period", lang), htmlFor=DATES_ID),
            dcc.DatePickerRange(id=DATES_ID, start_date=state.date_from.isoformat(),
                                end_date=state.date_to.isoformat(), display_format="YYYY-MM-DD",
                                min_date_allowed=span[0].isoformat() if span else None,
                                max_date_allowed=span[1].isoformat() if span else None,
                                first_day_of_week=1, minimum_nights=0),
        ], className="cg-filter"),
        _dropdown("filters-kind", "filters.kind", _closed_options(CASE_KINDS, lang), state.kinds, lang),
        _dropdown("filters-major", "filters.major", majors, state.majors, lang),
        _dropdown("filters-category", "filters.category", minors, state.categories, lang),
        _dropdown("filters-channel", "filters.channel", _closed_options(SOURCE_CHANNELS, lang), state.channels,
                  lang),
        _dropdown("filters-status", "filters.status", _closed_options(CASE_STATUSES, lang), state.statuses, lang),
        _dropdown("filters-level", "filters.level", _closed_options(RESOLUTION_LEVELS, lang), state.levels, lang),
    ]
    return html.Div([
        dcc.Location(id=URL_ID, refresh=False),
        dcc.Store(id=DRILL_ID),
        html.Div(controls, className="cg-filter-bar"),
        html.Nav(breadcrumb(state), id=BREADCRUMB_ID, className="cg-breadcrumb", **{"aria-label": "breadcrumb"}),
        html.Div(id=ERROR_ID),
    ], className="cg-filters")


def breadcrumb(state: PlannerFilters, engine: Engine | None = None) -> list[Any]:
    """全市 > district > street > community > grid; every step above the unit in view is a button up to it."""
    codes = planner.ancestry(state.area_code)
    with (engine or reader_engine()).connect() as conn:
        names = planner.unit_names(conn, codes)
    steps: list[tuple[str, str]] = [("", t("filters.city", state.lang))]
    steps += [(code, names.get(code, code)) for code in codes]
    items: list[Any] = []
    for i, (code, name) in enumerate(steps):
        if i:
            items.append(html.Span(" › ", className="cg-breadcrumb-sep"))
        if i == len(steps) - 1:
            items.append(html.Span(name, className="cg-breadcrumb-here", id="filters-crumb-here"))
        else:
            items.append(html.Button(name, id={"type": "filters-crumb", "code": code or "city"},
                                     className="cg-breadcrumb-up", n_clicks=0))
    return items


# --- callbacks (registered once, for every planner page) ----------------------------------------------------

def apply_controls(search: Any, start: Any, end: Any, lists: dict[str, Any], area: Any = ...) -> str:
    """The new query string from the controls' values (and a new ``area`` when given); keeps other keys.

    Raises FilterError for a value that is not one.
    """
    current = parse_qs(search.lstrip("?")[:4096]) if isinstance(search, str) else {}
    params: dict[str, Any] = {k: v for k, v in current.items() if k not in FILTER_KEYS}
    params["from"], params["to"] = start, end
    for key, value in lists.items():
        if key not in LIST_KEYS:
            raise FilterError(f"unknown filter {str(key)[:20]!r}")
        params[key] = value or None
    params["area"] = current.get("area") if area is ... else area
    state = from_query(params)
    extra = {k: v[-1] for k, v in params.items() if k not in FILTER_KEYS and k != "lang" and isinstance(v, list)
             and v and isinstance(v[-1], str)}
    return "?" + urlencode({**state.params(), **extra}, safe=",/")


@dash.callback(
    Output(URL_ID, "search"), Output(ERROR_ID, "children"),
    Input(DATES_ID, "start_date"), Input(DATES_ID, "end_date"),
    *(Input(control, "value") for _name, control in LIST_KEYS.values()),
    Input({"type": "filters-crumb", "code": ALL}, "n_clicks"), Input(DRILL_ID, "data"),
    State(URL_ID, "search"),
    prevent_initial_call=True,
)
def sync_url(start: Any, end: Any, *rest: Any) -> tuple[Any, Any]:
    """Controls, breadcrumb and drill-downs -> the URL's query string (the one source of the view)."""
    *list_values, _crumbs, drill, search = rest
    lists = dict(zip(LIST_KEYS, list_values, strict=True))
    trigger = dash.ctx.triggered_id
    area: Any = ...
    try:
        if isinstance(trigger, Mapping) and trigger.get("type") == "filters-crumb":
            if not any((item.get("value") or 0) for item in dash.ctx.triggered):
                return dash.no_update, dash.no_update  # a breadcrumb drawn anew, not clicked
            code = trigger.get("code")
            area = None if code == "city" else checked_area(code)
        elif trigger == DRILL_ID:
            if not isinstance(drill, Mapping):
                raise FilterError("a drill-down names an area")
            area = checked_area(drill.get("area"))
        return apply_controls(search, start, end, lists, area), None
    except FilterError as exc:
        return dash.no_update, problem(exc, language_of(search), element_id="filters-error-message")


@dash.callback(Output(BREADCRUMB_ID, "children"), Input(URL_ID, "search"), prevent_initial_call=True)
def update_breadcrumb(search: Any) -> Any:
    """The breadcrumb of the view in the URL (unchanged while the URL holds a bad value)."""
    try:
        return breadcrumb(from_search(search))
    except FilterError:
        return dash.no_update
