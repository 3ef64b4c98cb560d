"""Rejected rows: each kept with its row number, its raw content and a reason a person understands."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd


class RejectLog:
    """Collects rejected rows of one source while validation narrows the working frame.

    Validation steps call :meth:`reject` with a boolean mask over the working frame; the raw content is
    looked up from the source frame by ``_row`` only once, at the end, so rejecting costs nothing per row.
    """

    def __init__(self, raw_frame: pd.DataFrame, reader_rejects: pd.DataFrame | None = None) -> None:
        self._raw = raw_frame
        self._parts: list[pd.DataFrame] = []
        self._reader_rejects = reader_rejects if reader_rejects is not None else pd.DataFrame()

    def reject(self, work: pd.DataFrame, mask: pd.Series, reason: str | pd.Series, field: str | None = None) -> pd.DataFrame:
        """Reject ``work[mask]`` with ``reason`` (one text, or one per row); return the rows that remain."""
        mask = mask.fillna(False).astype(bool)
        if mask.any():
            reasons = reason[mask] if isinstance(reason, pd.Series) else reason
            self._parts.append(
                pd.DataFrame({"_row": work.loc[mask, "_row"].to_numpy(), "reason": reasons, "field": field})
            )
        return work.loc[~mask]

    def reject_rows(self, rows: Iterable[int], reasons: Iterable[str], field: str | None = None) -> None:
        """Reject rows by number (for checks that run outside the working frame, e.g. against the store)."""
        part = pd.DataFrame({"_row": list(rows), "reason": list(reasons), "field": field})
        if not part.empty:
            self._parts.append(part)

    @property
    def count(self) -> int:
        return sum(len(p) for p in self._parts) + len(self._reader_rejects)

    def frame(self) -> pd.DataFrame:
        """All rejects with columns _row, raw (dict of the source row), reason, field, in row order."""
        columns = ["_row", "raw", "reason", "field"]
        parts = []
        if self._parts:
            found = pd.concat(self._parts, ignore_index=True)
            source = self._raw.drop(columns=[c for c in self._raw.columns if c == "geometry"], errors="ignore")
            by_row = source.drop_duplicates("_row").set_index("_row")
            picked = by_row.reindex(found["_row"].to_numpy()).astype("object")
            records = picked.where(picked.notna(), None).to_dict("records")
            raws = [{k: v for k, v in record.items() if v is not None} for record in records]
            if "geometry" in self._raw.columns:
                geometry = self._raw.drop_duplicates("_row").set_index("_row")["geometry"]
                for raw, geom in zip(raws, geometry.reindex(found["_row"].to_numpy()), strict=True):
                    raw["geometry"] = None if geom is None or geom is pd.NA else getattr(geom, "wkt", str(geom))[:2000]
            found["raw"] = raws
            parts.append(found[columns])
        if not self._reader_rejects.empty:
            parts.append(self._reader_rejects[columns])
        if not parts:
            return pd.DataFrame(columns=columns)
        return pd.concat(parts, ignore_index=True).sort_values("_row", kind="stable").reset_index(drop=True)
