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
