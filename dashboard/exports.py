"""Downloads of the planner pages: a table as CSV or XLSX, a map layer as GeoJSON, each written to the audit log.

Why one module: every page exports the same way — CSV in UTF-8 with a BOM (Excel on a Chinese Windows opens
it as GBK otherwise), XLSX through openpyxl, GeoJSON as RFC 7946 — and every download is an audited act
(who took which data, with which filters).  The frame handed in is what the page shows, recomputed on the
server from the validated filters, never the table the browser sent back.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any, Final

import pandas as pd
from dash import dcc

FORMATS: Final = ("csv", "xlsx")
_SAFE_NAME: Final = re.compile(r"[^0-9A-Za-z_.-]+")


class ExportError(ValueError):
    """An export that cannot be made (unknown format)."""


def file_name(*parts: object) -> str:
    """A file name from parts (codes, dates), with nothing a file system or a header could misread."""
    return _SAFE_NAME.sub("_", "_".join(str(p) for p in parts if p not in (None, "")))[:120] or "export"


def table_download(frame: pd.DataFrame, name: str, fmt: str, sheet: str = "data") -> dict[str, Any]:
    """``dcc.Download`` data for ``frame`` as CSV (UTF-8 with BOM) or XLSX."""
    if fmt == "csv":
        return dcc.send_bytes(frame.to_csv(index=False).encode("utf-8-sig"), f"{name}.csv")
    if fmt == "xlsx":
        buffer = io.BytesIO()
        with pd.ExcelWriter(buffer, engine="openpyxl") as writer:
            frame.to_excel(writer, index=False, sheet_name=sheet[:31])
        return dcc.send_bytes(buffer.getvalue(), f"{name}.xlsx")
    raise ExportError(f"format must be one of {', '.join(FORMATS)}, not {str(fmt)[:10]!r}")


def geojson_download(features: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """``dcc.Download`` data for a FeatureCollection (coordinates WGS 84, as RFC 7946 requires)."""
    collection = {"type": "FeatureCollection", "features": features}
    return dcc.send_bytes(json.dumps(collection, ensure_ascii=False).encode("utf-8"), f"{name}.geojson")


def audited(detail: dict[str, Any]) -> None:
    """Record the export in the audit log (dashboard/auth.py) before the file leaves."""
    from dashboard.auth import audit_export

    audit_export(detail)


# --- the planner pages' export callbacks --------------------------------------------------------------------

#: The look of every planner table (DataTable keyword arguments); a page may set its own height.
TABLE_STYLE: Final[dict[str, Any]] = {
    "style_table": {"overflowX": "auto", "maxHeight": "420px", "overflowY": "auto"},
    "style_cell": {"fontFamily": "inherit", "fontSize": "0.9rem", "padding": "0.25rem 0.5rem"},
    "style_header": {"fontWeight": "600", "backgroundColor": "#f0f4f8"},
}


def answer_export(page: str, search: Any, content_for: Any) -> tuple[Any, Any]:
    """What a page's export callback answers: (download, error message) for the button that fired.

    Why one function: every planner page exports the same way — find which ``{"type": "<page>-export",
    "what", "fmt"}`` button was clicked (none: a re-render, nothing to send), recompute the content from
    the URL with ``content_for(what, fmt)`` (a table as a DataFrame, or GeoJSON features as a list), write
    the audit entry before anything leaves, and answer a bad filter or format with the page's message.
    """
    from collections.abc import Mapping

    import dash

    from dashboard import filters
    from geodata.errors import CityGridError

    trigger = dash.ctx.triggered_id
    if not isinstance(trigger, Mapping) or not any((item.get("value") or 0) for item in dash.ctx.triggered):
        return dash.no_update, dash.no_update
    what, fmt = str(trigger.get("what")), str(trigger.get("fmt"))
    try:
        state = filters.from_search(search)
        content, stem = content_for(what, fmt)
        entry = {"page": page, "table": what, "format": fmt, "rows": len(content), "filters": state.params()}
        if fmt == "geojson" and isinstance(content, list):
            audited(entry)
            return geojson_download(content, stem), None
        if fmt not in FORMATS or not isinstance(content, pd.DataFrame):
            raise filters.FilterError(f"cannot export {what[:20]} as {fmt[:10]}")
        audited(entry)
        return table_download(content, stem, fmt, sheet=what), None
    except CityGridError as exc:
        return dash.no_update, filters.problem(exc, filters.language_of(search), element_id=f"{page}-error-message")
