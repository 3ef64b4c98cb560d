"""Map a source's columns to CityGrid's fields with a YAML mapping (presets ship in etl/presets/).

A mapping names, for each CityGrid field, the headers a source may use for it (first match wins), the
words to translate to CityGrid's codes (``values``), constants for fields a source lacks (``defaults``),
and the source's time zone.  Mapping only renames and translates; judging values is validation's job, so
an untranslatable word passes through unchanged and is rejected there with the row and the word named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from geodata.errors import CityGridError

PRESETS_DIR = Path(__file__).resolve().parent / "presets"


class MappingError(CityGridError):
    """A mapping file that cannot be used (missing, malformed, or naming no column the source has)."""


@dataclass(frozen=True)
class ColumnMapping:
    """How one source's columns become CityGrid's fields."""

    name: str
    kind: str | None
    columns: dict[str, list[str]]
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    timezone: str = "Asia/Shanghai"

    def resolve(self, headers: list[str]) -> dict[str, str]:
        """CityGrid field -> the source header that feeds it, for the headers this source has."""
        normalised = {_normalise_header(h): h for h in headers}
        chosen: dict[str, str] = {}
        for target, candidates in self.columns.items():
            for candidate in candidates:
                header = normalised.get(_normalise_header(candidate))
                if header is not None:
                    chosen[target] = header
                    break
        return chosen

    def apply(self, frame: pd.DataFrame, required: tuple[str, ...] = ()) -> pd.DataFrame:
        """A frame of CityGrid fields (strings, translated) plus ``_row``; raises if a required field is absent.

        Values are stripped; empty strings become missing; ``values`` translations apply to whole cell
        values and leave unknown words as they are.
        """
        chosen = self.resolve([c for c in frame.columns if c != "_row"])
        missing = [f for f in required if f not in chosen and f not in self.defaults]
        if missing:
            wanted = "; ".join(f"{f}: one of {self.columns.get(f, [f])}" for f in missing)
            raise MappingError(
                f"mapping '{self.name}' finds no column for {', '.join(missing)} among the source's headers "
                f"{[c for c in frame.columns if c != '_row']}. Expected {wanted}. "
                "Pass --mapping with a YAML file naming this source's headers."
            )
        out = pd.DataFrame({"_row": frame["_row"].to_numpy()}, index=frame.index)
        for target, header in chosen.items():
            stripped = frame[header].astype("string").str.strip()
            column = stripped.mask(stripped == "").astype("object").where(stripped.notna() & (stripped != ""), None)
            translations = self.values.get(target)
            if translations:
                lookup = {str(k): v for k, v in translations.items()}
                mapped = column.map(lookup, na_action="ignore").astype("object")
                column = mapped.where(mapped.notna(), column)
            out[target] = column
        for target, value in self.defaults.items():
            if target not in out.columns:
                out[target] = value
            else:
                out[target] = out[target].where(out[target].notna(), value)
        return out


def _normalise_header(header: str) -> str:
    return "".join(str(header).split()).lower().lstrip("\ufeff")


def load_mapping(name_or_path: str | Path) -> ColumnMapping:
    """A preset by name (``cn_case_export``, ``open311``, ...) or a YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESETS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        presets = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
        raise MappingError(f"no mapping {name_or_path!s}: give a YAML file or one of the presets {presets}")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise MappingError(f"mapping {path} is not valid YAML: {exc}") from None
    columns = document.get("columns")
    if not isinstance(columns, dict) or not columns:
        raise MappingError(f"mapping {path} needs a 'columns' section: field: [header, ...]")
    return ColumnMapping(
        name=path.stem,
        kind=document.get("kind"),
        columns={str(k): [str(h) for h in (v if isinstance(v, list) else [v])] for k, v in columns.items()},
        values={str(k): dict(v) for k, v in (document.get("values") or {}).items()},
        defaults=dict(document.get("defaults") or {}),
        timezone=str(document.get("timezone") or "Asia/Shanghai"),
    )
