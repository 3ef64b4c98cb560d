"""Grids that need attention: unit grids holding open cases past their deadline, as red circles sized by count.

"Past the deadline" is as of now: an open case past its close deadline, or dispatched and not handled past
its handling deadline (超期).  Read from ``rollup.open_case`` (the cases neither closed nor voided: small
beside the ten million closed ones) and grid label points by key.  Circles rather than the grids' own
polygons, because a 100 m grid is two pixels wide on a city-wide wall map; only the worst grids are drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Engine, text

from geodata.kpi import TIMEZONE
from layers.base import Layer, LayerError, MapView, register
from layers.i18n import t

MAX_GRIDS: Final = 80
COLOUR: Final = "#ff4d4f"
#: The red a test looks for in the map's pixels.
ATTENTION_RGB: Final = (255, 77, 79)

_SQL = text(
    "WITH worst AS (SELECT o.grid_code, count(*)::int AS overdue FROM rollup.open_case o"
    " WHERE o.grid_code IS NOT NULL"
    " AND (o.close_deadline < :as_of OR (o.dispatched AND NOT o.handled AND o.handle_deadline < :as_of))"
    " AND (CAST(:district AS text) IS NULL OR o.district_code = :district)"
    " GROUP BY o.grid_code ORDER BY overdue DESC, o.grid_code LIMIT :limit)"
    " SELECT w.grid_code, w.overdue, g.name, ST_X(g.label_point), ST_Y(g.label_point)"
    " FROM worst w JOIN core.admin_unit g ON g.code = w.grid_code ORDER BY w.overdue DESC, w.grid_code"
)


@dataclass(frozen=True)
class OverdueGrids:
    """The grids with the most overdue open cases (worst first): code, name, label point, count."""

    codes: list[str]
    names: list[str]
    lons: list[float]
    lats: list[float]
    overdue: list[int]


@register
class AttentionGrids(Layer[OverdueGrids]):
    """Grids with overdue open cases, in a district or the whole city, as of now."""

    name = "attention_grids"

    def query(self, engine: Engine, view: MapView, as_of: datetime | None = None) -> OverdueGrids:
        if view.level not in ("city", "district"):
            raise LayerError("grids needing attention are drawn for the city or one district")
        params = {"as_of": as_of or datetime.now(TIMEZONE), "district": view.area_code, "limit": MAX_GRIDS}
        with engine.connect() as conn:
            rows = conn.execute(_SQL, params).all()
        return OverdueGrids([r[0] for r in rows], [r[2] for r in rows], [float(r[3]) for r in rows],
                            [float(r[4]) for r in rows], [int(r[1]) for r in rows])

    def draw(self, data: OverdueGrids, lang: str) -> list[dict[str, Any]]:
        if not data.codes:
            return []
        top = max(data.overdue)
        return [{
            "type": "scattermap",
            "lon": data.lons,
            "lat": data.lats,
            "mode": "markers",
            "marker": {"color": COLOUR, "opacity": 0.85,
                       "size": [5 + 9 * (n / top) ** 0.5 for n in data.overdue], "sizemode": "diameter"},
            "customdata": [[code, name, n] for code, name, n in zip(data.codes, data.names, data.overdue,
                                                                     strict=True)],
            "hovertemplate": f"%{{customdata[1]}} %{{customdata[0]}}<br>{t('attention.overdue', lang)}"
                             " %{customdata[2]}<extra></extra>",
            "name": t("attention.name", lang),
        }]
