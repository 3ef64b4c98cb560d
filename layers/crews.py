"""Where each crew was last seen: patrollers, cleaners and trucks as coloured points (device keys, no names)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import pandas as pd
from sqlalchemy import Engine

from geodata.patrol import crews_last_seen
from layers.base import Layer, MapView, register
from layers.i18n import t

ROLE_COLOURS: Final[dict[str, str]] = {"patroller": "#1f6feb", "cleaner": "#0ca678", "truck": "#7048e8"}


@dataclass(frozen=True)
class Crews:
    """Devices last seen in the area: device_id, role, last_seen_at, lon, lat, last_grid_code."""

    devices: pd.DataFrame


@register
class CrewLayer(Layer[Crews]):
    """Crews' last positions in the area in view."""

    name = "crews"

    def query(self, engine: Engine, view: MapView) -> Crews:
        return Crews(crews_last_seen(engine, view.area_code))

    def draw(self, data: Crews, lang: str) -> list[dict[str, Any]]:
        traces = []
        for role, colour in ROLE_COLOURS.items():
            rows = data.devices[data.devices["role"] == role]
            if rows.empty:
                continue
            traces.append({
                "type": "scattermap", "mode": "markers", "lon": rows["lon"].tolist(), "lat": rows["lat"].tolist(),
                "marker": {"color": colour, "size": 7},
                "text": [f"{d} {s:%m-%d %H:%M}" for d, s in zip(rows["device_id"], rows["last_seen_at"], strict=True)],
                "hoverinfo": "text", "name": t(f"track.role.{role}", lang),
            })
        return traces
