"""Map a source's columns to CityGrid's fields with a YAML mapping (presets ship in etl/presets/).

A mapping names, for each CityGrid field, the headers a source may use for it (first match wins), the
words to translate to CityGrid's codes (``values``), constants for fields a source lacks (``defaults``),
and the source's time zone.  Mapping only renames and translates; judging values is validation's job, so
an untranslatable word passes through unchanged and is rejected there with the row and the word named.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from geodata.errors import CityGridError

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
#: The text columns of ``apply(as_text=True)``: arrow strings with NaN for missing (pandas' default ``str``).
TEXT_DTYPE = pd.StringDtype("pyarrow", na_value=np.nan)


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

    def apply(self, frame: pd.DataFrame, required: tuple[str, ...] = (), *, as_text: bool = False,
              fields: Collection[str] | None = None, exclude: Collection[str] = ()) -> pd.DataFrame:
        """A frame of CityGrid fields (strings, translated) plus ``_row``; raises if a required field is absent.

        Values are stripped; empty strings become missing; ``values`` translations apply to whole cell
        values and leave unknown words as they are.  By default the fields are object columns (None when
        missing) and translations keep the YAML type (``true``, ``4``); with ``as_text`` they are arrow-backed
        string columns (NaN when missing) and translations are text too (``"true"``, ``"4"``), which keeps a
        million rows in C++ (about 0.05 s a column instead of 0.3 s).

        ``fields`` limits the result to those fields (and ``exclude`` leaves some out), for a caller that
        maps a few fields of every row first and the rest batch by batch; ``required`` is checked on all.
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
        def wanted(target: str) -> bool:
            return (fields is None or target in fields) and target not in exclude

        columns: dict[str, Any] = {"_row": frame["_row"].to_numpy()}
        for target, header in chosen.items():
            if not wanted(target):
                continue
            cleaned = _clean_text(frame[header])
            translations = self.values.get(target)
            if as_text:
                if translations:
                    cleaned = _translate(cleaned, {str(k): _as_text(v) for k, v in translations.items()})
                columns[target] = _text_series(cleaned, frame.index)
            else:
                lookup = {str(k): v for k, v in translations.items()} if translations else {}
                columns[target] = pd.Series(_translate_objects(cleaned, lookup), index=frame.index, dtype="object")
        out = pd.DataFrame(columns, index=frame.index)
        for target, value in self.defaults.items():
            if not wanted(target):
                continue
            fill = _as_text(value) if as_text else value
            if target not in out.columns:
                out[target] = _text_series(pa.array([fill] * len(out), pa.string()), out.index) if as_text else fill
            else:
                out[target] = out[target].where(out[target].notna(), fill)
        return out


def _as_text(value: Any) -> str:
    """A translation or default as the text validation reads (YAML booleans as true/false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _clean_text(column: pd.Series) -> pa.Array:
    """The column as an arrow string array, stripped, with empty strings as nulls."""
    if isinstance(column.array, pd.arrays.ArrowStringArray):
        array = pa.chunked_array(column.array._pa_array).combine_chunks()
    else:
        values = column.astype("object")
        array = pa.array(values.where(column.notna(), None).map(str, na_action="ignore").to_numpy(dtype=object),
                         type=pa.string(), from_pandas=True)
    if array.type != pa.string():
        array = array.cast(pa.string())
    stripped = pc.utf8_trim_whitespace(array)
    empty = pc.equal(stripped, "")
    if not pc.any(empty).as_py():  # the usual case (readers already read empty cells as missing): no copy
        return stripped
    return pc.if_else(empty, pa.scalar(None, pa.string()), stripped)


def _translate(array: pa.Array, lookup: dict[str, str]) -> pa.Array:
    """Replace whole values found in ``lookup``; others stay.  Works on the distinct values only."""
    encoded = pc.dictionary_encode(array)
    words = encoded.dictionary.to_pylist()
    translated = pa.array([lookup.get(word, word) for word in words], type=pa.string())
    return pc.take(translated, encoded.indices)


def _translate_objects(array: pa.Array, lookup: dict[str, Any]) -> np.ndarray:
    """Object values (None when missing) with translations of the YAML's own type."""
    encoded = pc.dictionary_encode(array)
    words = encoded.dictionary.to_pylist()
    translated = np.empty(len(words) + 1, dtype=object)
    translated[: len(words)] = [lookup.get(word, word) for word in words]
    translated[len(words)] = None
    indices = encoded.indices.fill_null(len(words)).to_numpy(zero_copy_only=False)
    return translated[indices]


def _text_series(array: pa.Array, index: pd.Index) -> pd.Series:
    return pd.Series(pd.arrays.ArrowStringArray(array, dtype=TEXT_DTYPE), index=index)


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
