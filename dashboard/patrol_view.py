"""The patrol coverage page's data for one street and day, apart from the page so that tests and the benchmark
call it without a running app (``dash.register_page`` needs one).

:func:`grid_status_update` is the day slider's callback body: it validates its inputs (a ValueError for
anything that is not a day or a street code) and reads one day of the rollups for one street.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
from dash import Patch, html
from sqlalchemy import Engine, text

from dashboard.maps import map_figure
from geodata.engines import reader_engine
from geodata.patrol import share_counts
from geodata.settings import get_settings
from layers import get_layer
from layers.base import MapView
from layers.i18n import normalise_language, t
from layers.patrol_grids import status_of

_STREET = re.compile(r"^[0-9]{9}$")
EPOCH = date(1970, 1, 1)
GRID_COLUMNS = ("grid_code", "name", "status", "minutes", "visits", "devices", "last_patrolled", "idle_days")
SHARE_COLUMNS = ("unit", "name", "grids", "patrolled", "share", "flagged")


def streets_with_grids(engine: Engine) -> list[tuple[str, str]]:
    """Streets that have unit grids, for the selector."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT s.code, s.name FROM core.admin_unit s WHERE s.level = 'street' AND EXISTS"
            " (SELECT 1 FROM core.admin_unit g WHERE g.level = 'grid' AND g.code LIKE s.code || '%') ORDER BY s.code"))
        return [(code, name) for code, name in rows]


def busiest_street(engine: Engine, day: date) -> str | None:
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT left(grid_code, 9) FROM core.grid_patrol_day WHERE day = :d GROUP BY 1 ORDER BY count(*) DESC"
            " LIMIT 1"), {"d": day}).scalar_one_or_none()


def parse_day(value: Any) -> date:
    """A day from the slider (days since 1970) or the URL (YYYY-MM-DD); ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= 40_000:
            raise ValueError(f"day out of range: {value}")
        return EPOCH + timedelta(days=value)
    if isinstance(value, str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        return date.fromisoformat(value)
    raise ValueError(f"not a day: {value!r}")


def parse_street(value: Any) -> str:
    """A street code (9 digits); ValueError otherwise."""
    if isinstance(value, str) and _STREET.fullmatch(value):
        return value
    raise ValueError(f"not a street code: {value!r}")


def grid_status_update(day: Any, street: Any, lang: Any, engine: Engine | None = None, *, day_only: bool = False
                       ) -> tuple[dict[str, Any] | Patch, list[dict[str, Any]], list[dict[str, Any]], list[html.Div]]:
    """The map figure, the grid table, the share table and the tiles for one street and day.

    With ``day_only`` (the slider moved, the street stayed) the figure comes as a :class:`dash.Patch` of the
    grids' colours and hover texts only: the browser keeps the outlines it has.  Raises ValueError for a day
    or street that is not one (the Dash callback turns that into no update).
    """
    engine = engine or reader_engine()
    lang = normalise_language(lang)
    the_day, the_street = parse_day(day), parse_street(street)
    settings = get_settings()
    layer = get_layer("patrol_grids")
    data = layer.query(engine, MapView(the_street), day=the_day, idle_days=settings.patrol_idle_days)
    traces = layer.draw(data, lang)
    if day_only:
        figure: dict[str, Any] | Patch = Patch()
        figure["data"][0]["z"] = traces[0]["z"]
        figure["data"][0]["customdata"] = traces[0]["customdata"]
    else:
        figure = map_figure(traces, settings, data.bounds, height=520)
    frame = data.status
    return figure, grid_rows(frame, lang), share_rows(frame, lang), tiles(frame, lang)


def grid_rows(frame: pd.DataFrame, lang: str) -> list[dict[str, Any]]:
    """The per-grid table's rows."""
    words = {s: t(f"patrol.status.{s}", lang) for s in ("patrolled", "idle", "flagged")}
    statuses = [words[s] for s in status_of(frame)]
    # Plain lists first (tolist is C): the slider's callback builds a street's thousand rows per move.
    last = ["" if v is None else str(v) for v in frame["last_patrolled"].tolist()]
    return [{"grid_code": code, "name": name, "status": status, "minutes": minutes, "visits": visits,
             "devices": devices, "last_patrolled": last_day, "idle_days": idle}
            for code, name, status, minutes, visits, devices, last_day, idle in zip(
                frame["grid_code"].tolist(), frame["name"].tolist(), statuses,
                frame["minutes"].to_numpy(dtype=float).tolist(), frame["visits"].to_numpy(dtype=int).tolist(),
                frame["devices"].to_numpy(dtype=int).tolist(), last, idle_cells(frame), strict=True)]


def idle_cells(frame: pd.DataFrame) -> list[int | str]:
    """Days since the last patrol per grid, "" where none is known."""
    return ["" if v != v else int(v) for v in frame["idle_days"].to_numpy(dtype=float, na_value=np.nan).tolist()]


def share_rows(frame: pd.DataFrame, lang: str) -> list[dict[str, Any]]:
    """Per community, then per management grid: grids, patrolled, share."""
    names = {**dict(zip(frame["community_code"].tolist(), frame["community_name"].tolist(), strict=True)),
             **dict(zip(frame["management_grid_code"].tolist(), frame["management_name"].tolist(), strict=True))}
    rows = []
    for kind, by in (("community", "community_code"), ("management_grid", "management_grid_code")):
        label = t(f"patrol.unit.{kind}", lang)
        units, grids, patrolled, flagged = share_counts(frame, by)
        share = np.round(patrolled / np.maximum(grids, 1), 3)
        for unit, unit_grids, unit_patrolled, unit_share, unit_flagged in zip(
                units.tolist(), grids.tolist(), patrolled.tolist(), share.tolist(), flagged.tolist(), strict=True):
            rows.append({"unit": unit, "name": f"{names.get(unit, unit)} ({label})", "grids": unit_grids,
                         "patrolled": unit_patrolled, "share": f"{unit_share:.0%}", "flagged": unit_flagged})
    return rows


def tiles(frame: pd.DataFrame, lang: str) -> list[html.Div]:
    grids = len(frame)
    patrolled = int(frame["patrolled"].sum())
    values = [("patrol.tile.grids", f"{grids:,}", "patrol-tile-grids"),
              ("patrol.tile.patrolled", f"{patrolled:,}", "patrol-tile-patrolled"),
              ("patrol.tile.share", f"{patrolled / grids:.0%}" if grids else "-", "patrol-tile-share"),
              ("patrol.tile.flagged", f"{int(frame['flagged'].sum()):,}", "patrol-tile-flagged")]
    return [html.Div([html.Div(value, className="cg-tile-value", id=tile_id),
                      html.Div(t(key, lang), className="cg-tile-label")], className="cg-tile")
            for key, value, tile_id in values]
