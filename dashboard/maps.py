"""Map figures that work with no internet: the default basemap is CityGrid's own layers on a plain ground.

Plotly's built-in styles fetch tiles (and even its "white-bg" style names an online glyph server), so the
offline style is a MapLibre style object with no source and no glyphs: nothing is requested from anywhere.
An intranet raster tile service (``CITYGRID_MAP_STYLE``) is added as a raster source when configured.
"""

from __future__ import annotations

import math
from typing import Any

from geodata.settings import Settings

OFFLINE_BACKGROUND = {"light": "#eef2f6", "dark": "#0b1a2b"}


def map_style(settings: Settings, theme: str = "light") -> dict[str, Any]:
    """The MapLibre style: a plain background, plus the intranet tiles when a tile URL is set."""
    layers: list[dict[str, Any]] = [
        {"id": "background", "type": "background", "paint": {"background-color": OFFLINE_BACKGROUND[theme]}}
    ]
    # Never an empty ``sources``: plotly prunes empty containers from a layout it redraws (a resize, a new
    # figure), and MapLibre then refuses the style ("missing required property sources", plotly's "Map error.").
    sources: dict[str, Any] = {"none": {"type": "geojson", "data": {"type": "FeatureCollection", "features": []}}}
    if settings.map_style != "offline":
        sources["intranet"] = {"type": "raster", "tiles": [settings.map_style], "tileSize": 256}
        layers.append({"id": "intranet", "type": "raster", "source": "intranet"})
    return {"version": 8, "sources": sources, "layers": layers}


def bounds_of(geojson: dict[str, Any]) -> tuple[float, float, float, float] | None:
    """West, south, east, north of a FeatureCollection (None when it is empty)."""
    xs: list[float] = []
    ys: list[float] = []

    def walk(coords: Any) -> None:
        if coords and isinstance(coords[0], (int, float)):
            xs.append(float(coords[0]))
            ys.append(float(coords[1]))
        else:
            for part in coords:
                walk(part)

    for feature in geojson.get("features", []):
        walk(feature["geometry"]["coordinates"])
    return (min(xs), min(ys), max(xs), max(ys)) if xs else None


def map_figure(traces: list[dict[str, Any]], settings: Settings, bounds: tuple[float, float, float, float] | None,
               theme: str = "light", height: int = 520) -> dict[str, Any]:
    """A figure dict over the offline style, framed on ``bounds``."""
    layout: dict[str, Any] = {
        "map": {"style": map_style(settings, theme)},
        "margin": {"l": 0, "r": 0, "t": 0, "b": 0},
        "height": height,
        "showlegend": False,
        "paper_bgcolor": OFFLINE_BACKGROUND[theme],
        "uirevision": "keep",
    }
    if bounds is not None:
        layout["map"].update(frame_on(bounds, width_px=900, height_px=height))
    return {"data": traces, "layout": layout}


def frame_on(bounds: tuple[float, float, float, float], width_px: int, height_px: int) -> dict[str, Any]:
    """Center and zoom that fit ``bounds`` in a map of the given pixel size (Web Mercator; MapLibre's world is 512 px at zoom 0)."""
    west, south, east, north = bounds
    center_lat = (south + north) / 2
    dx = max(east - west, 1e-6)
    # Mercator stretches latitude: compare spans in projected units.
    y = lambda lat: math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))  # noqa: E731
    dy = max(abs(y(north) - y(south)) * 180 / math.pi, 1e-6)
    zoom = min(math.log2(width_px * 360 / (512 * dx)), math.log2(height_px * 360 / (512 * dy)))
    return {"center": {"lon": (west + east) / 2, "lat": center_lat}, "zoom": max(0.0, zoom - 0.2)}
