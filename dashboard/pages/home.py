"""The overview page: what the store holds and the latest data loads (until the planners' pages land)."""

from __future__ import annotations

import dash
from dash import dash_table, dcc, html

from dashboard.maps import bounds_of, map_figure
from geodata.engines import reader_engine
from geodata.settings import get_settings
from geodata.summary import store_summary
from layers import get_layer
from layers.base import MapView
from layers.i18n import normalise_language, t


def _tile(label: str, value: int, tile_id: str) -> html.Div:
    return html.Div(
        [
            html.Div(f"{value:,}", className="cg-tile-value", id=tile_id),
            html.Div(label, className="cg-tile-label"),
        ],
        className="cg-tile",
    )


def layout(lang: str | None = None, **_query: str) -> html.Div:
    """The page for ``?lang=``; other query parameters are ignored."""
    lang = normalise_language(lang)
    summary = store_summary(reader_engine())
    tiles = [
        _tile(t(f"level.{level}", lang), count, f"home-count-{level}")
        for level, count in summary.units_by_level.items()
    ] + [
        _tile(t("count.components", lang), summary.components, "home-count-components"),
        _tile(t("count.cameras", lang), summary.cameras, "home-count-cameras"),
        _tile(t("count.cases", lang), summary.cases, "home-count-cases"),
    ]
    runs = dash_table.DataTable(
        id="home-runs",
        columns=[
            {"id": key, "name": t(f"run.{key}", lang)}
            for key in ("source", "kind", "status", "read", "stored", "rejected", "finished")
        ],
        data=[
            {
                "source": run.source_name,
                "kind": run.source_kind,
                "status": run.status,
                "read": run.rows_read,
                "stored": run.rows_stored,
                "rejected": run.rows_rejected,
                "finished": run.finished_at.strftime("%Y-%m-%d %H:%M") if run.finished_at else "",
            }
            for run in summary.recent_runs
        ],
        style_table={"overflowX": "auto"},
    )
    boundaries = get_layer("admin_boundaries")
    units = boundaries.query(reader_engine(), MapView(None))
    city_map = dcc.Graph(
        id="home-map",
        figure=map_figure(boundaries.draw(units, lang), get_settings(), bounds_of(units.geojson), height=420),
        config={"displaylogo": False, "scrollZoom": True},
        className="cg-map",
    )
    return html.Div(
        [
            html.H1(t("home.heading", lang)),
            city_map if units.codes else None,
            html.P(t("home.empty", lang), id="home-empty") if summary.is_empty else None,
            html.Div(tiles, className="cg-tiles"),
            html.P(f"{t('home.data_version', lang)}: {summary.data_version}", id="home-data-version"),
            html.H2(t("home.runs", lang)),
            runs,
        ],
        className="cg-page",
    )


dash.register_page(__name__, path="/", name="Overview", name_key="nav.home", order=0, layout=layout)
