"""Reading what cities hand over: the first step of the ETL, before any column is mapped or value checked.

Why this module exists
----------------------
Digital urban management centres (数字城管指挥中心) hand over case exports as CSV from their case system,
spreadsheets that someone edited in Excel, Open311 GeoReport v2 JSON from a hotline platform, and map
layers as GeoJSON, Shapefile or GeoPackage.  The files are written by a dozen different programs: CSVs in
UTF-8, UTF-8 with a byte-order mark (Excel's "CSV UTF-8"), GBK (Excel's default "CSV" on a Chinese Windows)
or GB18030; shapefiles whose ``.cpg`` went missing on the way; exports that were cut off mid-row when a
disk filled up.  Everything after this step works on one shape -- :class:`RawTable` / :class:`RawFeatures`
-- so those differences end here.

What this step promises
-----------------------
* **Every value is text.**  Columns come back as pandas string dtype with the source's own headers.  No
  type is guessed here: a case number 370303001001001 must never become ``3.70303001001e+14``, a
  district code ``0370`` must keep its zero, and a date must not be reinterpreted in some locale.  The
  mapping and validation steps decide what a column means; they get the text a person would see.
* **No row is lost silently.**  Every data row of the source ends either in ``frame`` or in ``rejects``
  (with a reason a person understands), so ``len(frame) + len(rejects)`` is the number of data rows in the
  file.  The only rows in neither are rows with no content at all (blank lines, rows of empty cells);
  they are counted in ``notes``.  The store enforces the same balance on every load (``core.etl_run``).
* **Every row keeps its source row number** (``_row``) the way a person counts it -- the line in the CSV
  (header = 1; a record with line breaks inside quotes has the number of the line where it starts), the
  row in the sheet, the item in the JSON array or the feature in the layer (from 1) -- so a reject
  report can say "line 1,234" and the person finds it in their editor.
* **It is fast.**  A 1,000,000-row case export reads in about a second: CSVs are parsed by
  ``pyarrow.csv`` into Arrow-backed string columns; row boundaries, field counts and row numbers come
  from a vectorised scan of the bytes with numpy, not from a Python loop.

How bad CSV rows are found
--------------------------
The file is decoded (see :func:`detect_encoding`) to UTF-8 bytes, in which the delimiter, the quote and
the line breaks are single ASCII bytes that never occur inside a multi-byte character.  The scan finds
the quoted spans with the same rules as pyarrow's (and Python's) CSV parser -- a quote opens a quoted
field only at the start of a field, ``""`` inside one is a literal quote -- so line breaks and delimiters
inside quotes are told apart from real ones.  That gives each record's first line and field count.
Records with the wrong number of fields, with undecodable bytes, or cut off inside a quote at the end of
the file become rejects; the rest are handed to pyarrow, which must then return exactly that many rows
(it is checked: a disagreement is an error, never a silent loss).

Counting the delimiters outside quotes is the dear part on exports that quote every value, so a plain
file (quotes only where a well-formed CSV puts them, no line break inside quotes, no undecodable bytes)
skips it: pyarrow parses the whole file and counts the fields itself; at the first row with the wrong
count the exact scan above runs instead, so rejects, reasons and row numbers are the same either way.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import json
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from geodata.errors import CityGridError

if TYPE_CHECKING:
    import geopandas

__all__ = [
    "CSV_SUFFIXES",
    "FEATURE_SUFFIXES",
    "JSON_SUFFIXES",
    "STRING_DTYPE",
    "XLSX_SUFFIXES",
    "RawFeatures",
    "RawTable",
    "SourceError",
    "detect_encoding",
    "read_features",
    "read_table",
]


class SourceError(CityGridError):
    """A handed-over file cannot be read at all; the message names the file and what to do about it."""


try:
    STRING_DTYPE: pd.StringDtype = pd.StringDtype("pyarrow", na_value=np.nan)
    """pandas' ``str`` dtype (Arrow-backed, missing = NaN): zero-copy from pyarrow and NaN-safe masks."""
except TypeError:  # pragma: no cover - pandas < 2.3 has no na_value; the NA-variant is the closest.
    STRING_DTYPE = pd.StringDtype("pyarrow")

CSV_SUFFIXES = frozenset({".csv", ".txt", ".tsv"})
XLSX_SUFFIXES = frozenset({".xlsx", ".xlsm"})
JSON_SUFFIXES = frozenset({".json"})
FEATURE_SUFFIXES = frozenset({".geojson", ".json", ".shp", ".gpkg"})

DELIMITERS = (",", ";", "\t", "|")
"""Delimiters the sniffer considers, in order of preference on a tie."""

ROW_COLUMN = "_row"
REJECT_COLUMNS = ("_row", "raw", "reason", "field")

_TOLERATED_BAD_LINES = 3
_TOLERATED_BAD_SHARE = 0.01
"""A file may have up to max(3, 1 %) lines with undecodable bytes and still be read in its encoding
(those lines become rejects); more than that means the encoding is wrong, not a few lines damaged."""

_SNIFF_BYTES = 64 * 1024
_RAW_TEXT_LIMIT = 10_000
_LISTED = 10

_QUOTE = 0x22
_LF = 0x0A
_CR = 0x0D


# --------------------------------------------------------------------------------------------- results


@dataclass
class RawTable:
    """What one source file held, as text, before any mapping or validation.

    Attributes
    ----------
    frame : pandas.DataFrame
        One row per readable data row; every source column as string dtype (:data:`STRING_DTYPE`, missing
        or empty = NaN) under its original header (stripped of BOM and surrounding whitespace; empty or
        repeated headers get a unique name, see ``notes``), plus int64 ``_row``: the row number in the
        source as a person counts it.
    rejects : pandas.DataFrame
        Rows that could not be read at all: ``_row`` (int64), ``raw`` (dict or str of what could be
        read), ``reason`` (a sentence for a person), ``field`` (str or None).
    encoding : str or None
        The text encoding used (``utf-8``, ``utf-8-sig``, ``gbk``, ``gb18030``...); None where the
        format fixes it (XLSX).
    source_name : str
        The file name, for messages and the store's ``source_name``.
    notes : list of str
        What the reader decided or noticed that a person should know (detected encoding and delimiter,
        skipped blank rows, renamed headers...).
    """

    frame: pd.DataFrame
    rejects: pd.DataFrame
    encoding: str | None
    source_name: str
    notes: list[str] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        """Data rows read from the source: stored-or-rejected, the count the store balances."""
        return len(self.frame) + len(self.rejects)


@dataclass
class RawFeatures(RawTable):
    """What one vector file held: like :class:`RawTable`, with geometry.

    Attributes
    ----------
    frame : geopandas.GeoDataFrame
        Attributes as text (as in :class:`RawTable`), ``_row`` = feature index from 1, and the geometry
        in column ``geometry`` in the source CRS (``frame.crs``, None when the source has none).  Null,
        empty and invalid geometries are kept: validation decides about them.  Only features whose
        geometry cannot be decoded at all are rejects (``field`` = ``"geometry"``).
    layer : str or None
        The layer read.
    """

    frame: geopandas.GeoDataFrame
    layer: str | None = None


# --------------------------------------------------------------------------------------------- helpers


def _rejects_frame(items: list[tuple[int, Any, str, str | None]]) -> pd.DataFrame:
    """The rejects DataFrame with its fixed columns and dtypes, sorted by row."""
    items = sorted(items, key=lambda item: item[0])
    return pd.DataFrame(
        {
            "_row": pd.Series([item[0] for item in items], dtype="int64"),
            "raw": pd.Series([item[1] for item in items], dtype=object),
            "reason": pd.Series([item[2] for item in items], dtype=object),
            "field": pd.Series([item[3] for item in items], dtype=object),
        }
    )


def _listing(numbers: list[int] | np.ndarray, what: str = "line") -> str:
    """'line 3' / 'lines 3, 7, 9' / 'lines 3, 7, ... (12 in all)' for notes."""
    values = [int(n) for n in numbers]
    if len(values) == 1:
        return f"{what} {values[0]}"
    shown = ", ".join(str(n) for n in values[:_LISTED])
    more = f", ... ({len(values)} in all)" if len(values) > _LISTED else ""
    return f"{what}s {shown}{more}"


def _clip(text: str) -> str:
    """A reject's raw text, clipped so one swallowed half-file cannot bloat the reject table."""
    if len(text) <= _RAW_TEXT_LIMIT:
        return text
    return text[:_RAW_TEXT_LIMIT] + f"... [{len(text) - _RAW_TEXT_LIMIT} more characters]"


def _clean_headers(
    raw_names: list[Any],
    notes: list[str],
    position_name: Callable[[int], str] | None = None,
    reserved: tuple[str, ...] = (ROW_COLUMN,),
) -> list[str]:
    """Headers stripped of BOM and whitespace; empty ones named, repeated ones made unique (with notes).

    Parameters
    ----------
    raw_names
        The header cells as read.
    notes
        Receives one note per renamed header.
    position_name
        ``f(index) -> str`` naming an unnamed column by position (CSV: ``column_4``, XLSX: ``column_D``).
    reserved
        Names the reader adds itself (``_row``, and ``geometry`` for layers): a source column of that
        name is read as ``<name>_source``.
    """
    namer = position_name or (lambda i: f"column_{i + 1}")
    names: list[str] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_names):
        name = "" if raw is None else str(raw).replace("\ufeff", "").strip()
        if not name:
            name = namer(index)
            notes.append(f"A column has no header (表头为空); it is read as '{name}'.")
        if name in reserved:
            notes.append(
                f"A source column is called '{name}', a column the reader adds itself; it is read "
                f"as '{name}_source'."
            )
            name = f"{name}_source"
        if name in seen:
            base, counter = name, 2
            while f"{base}_{counter}" in seen:
                counter += 1
            name = f"{base}_{counter}"
            notes.append(
                f"Header '{base}' appears more than once (重复列名); the later one is read as '{name}'."
            )
        seen.add(name)
        names.append(name)
    return names


def _float_text(value: float, significant: int | None = None) -> str | None:
    """A float as the plain text a person would type: no trailing '.0', never scientific notation.

    Parameters
    ----------
    value
        The number.  NaN is "no value" (None).
    significant
        Round to this many significant digits first (Excel keeps and shows 15), else the shortest text
        that reads back as the same float.
    """
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    if significant is not None:
        try:
            text = format(Decimal(f"{value:.{significant}g}"), "f")
        except InvalidOperation:  # pragma: no cover - finite floats always format
            text = repr(value)
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text
    return np.format_float_positional(value, trim="-")


def _datetime_text(value: dt.datetime) -> str:
    """'YYYY-MM-DD HH:MM:SS' (an offset appended when the value has one); rounded to the second."""
    if value.microsecond:
        value = (value + dt.timedelta(microseconds=500_000)).replace(microsecond=0)
    return value.isoformat(sep=" ", timespec="seconds")


def _cell_text(value: Any, significant: int | None = None) -> str | None:
    """Any cell or attribute value as text; None for no value.  Nested values become JSON text."""
    if value is None:
        return None
    if isinstance(value, str):
        return value if value != "" else None
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return _float_text(float(value), significant)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime):
        return _datetime_text(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        if value.microsecond:
            value = (
                dt.datetime.combine(dt.date(2000, 1, 1), value) + dt.timedelta(microseconds=500_000)
            ).time()
        return value.replace(microsecond=0).isoformat()
    if isinstance(value, np.datetime64):
        return None if np.isnat(value) else _datetime_text(pd.Timestamp(value).to_pydatetime())
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, np.ndarray):
        return json.dumps(value.tolist(), ensure_ascii=False, default=str)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)


def _string_frame(columns: dict[str, list[str | None]], rows: np.ndarray) -> pd.DataFrame:
    """A frame of text columns (:data:`STRING_DTYPE`) with ``_row`` first."""
    data: dict[str, Any] = {ROW_COLUMN: pd.Series(rows, dtype="int64")}
    for name, values in columns.items():
        data[name] = pd.Series(values, dtype=STRING_DTYPE)
    return pd.DataFrame(data)


def _check_file(path: Path) -> Path:
    """The path, or a SourceError when it is not a readable, non-empty file."""
    path = Path(path)
    if not path.exists():
        raise SourceError(
            f"'{path}' does not exist: check the path (and that the copy from the city finished)."
        )
    if not path.is_file():
        raise SourceError(f"'{path}' is a folder, not a file: name the file inside it to read.")
    if path.stat().st_size == 0:
        raise SourceError(
            f"'{path.name}' is empty (0 bytes): the export or the copy failed; ask the city to send it again."
        )
    return path


# -------------------------------------------------------------------------------------------- encoding


@dataclass(frozen=True)
class _Detection:
    """How to decode a file: the codec, whether it decodes strictly, and how many lines it cannot decode.

    ``text`` keeps the strictly decoded text when it was built anyway (GBK, GB18030...), so a 100 MB file
    is not decoded twice; for UTF-8 the bytes are validated without building a str.
    """

    codec: str
    strict: bool
    bad_lines: int = 0
    how: str = "detected"
    text: str | None = field(default=None, compare=False, repr=False)


def _codec(name: str, source_name: str) -> str:
    """Python's canonical codec name for an encoding a person typed ('GBK', 'cp936', 'UTF8'...)."""
    try:
        return codecs.lookup(name.strip()).name
    except LookupError:
        raise SourceError(
            f"'{source_name}': '{name}' is not a known text encoding; use one such as utf-8, gbk or gb18030."
        ) from None


def _line_of(data: bytes, offset: int) -> int:
    """1-based line of a byte offset (for ASCII-compatible encodings)."""
    return data.count(b"\n", 0, offset) + 1


def _bad_line_count(data: bytes, codec: str, limit: int) -> int:
    """How many lines of ``data`` hold bytes ``codec`` cannot decode, counting no further than limit+1."""
    text = data.decode(codec, "surrogateescape")
    count, last_line, line, position = 0, -1, 0, 0
    for match in re.finditer("[\udc80-\udcff]", text):
        line += text.count("\n", position, match.start())
        position = match.start()
        if line != last_line:
            count += 1
            last_line = line
            if count > limit:
                break
    return count


def _non_ascii_lines(data: bytes) -> int:
    """How many lines hold at least one byte >= 0x80 (the lines an encoding has to get right)."""
    arr = np.frombuffer(data, dtype=np.uint8)
    high = np.flatnonzero(arr >= 0x80)
    return len(np.unique(np.searchsorted(np.flatnonzero(arr == _LF), high)))


def _tolerance(data: bytes) -> int:
    """Lines with undecodable bytes a file of this size may have before its encoding is judged wrong."""
    return max(_TOLERATED_BAD_LINES, int((data.count(b"\n") + 1) * _TOLERATED_BAD_SHARE))


def _utf8_is_valid(data: bytes) -> bool:
    """Strict UTF-8 validation without building a Python str (Arrow's validator, several GB/s)."""
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int64).tobytes())
    try:
        pa.LargeStringArray.from_buffers(1, offsets, pa.py_buffer(data)).validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _utf8_cut_at_end(data: bytes) -> bool:
    """Whether the bytes are valid UTF-8 except for an incomplete multi-byte character at the very end."""
    for cut in (1, 2, 3):
        if len(data) <= cut:
            return False
        lead = data[-cut]
        if 0x80 <= lead <= 0xBF:
            continue  # a continuation byte: the lead is further back
        needed = (
            2 if 0xC2 <= lead <= 0xDF else 3 if 0xE0 <= lead <= 0xEF else 4 if 0xF0 <= lead <= 0xF4 else 0
        )
        return needed > cut and _utf8_is_valid(data[:-cut])
    return False


def _strict(data: bytes, codec: str, how: str = "detected") -> _Detection | None:
    """A strict decoding of the whole file in ``codec``, or None where some bytes are not valid in it."""
    if codec in ("utf-8", "utf-8-sig"):
        return _Detection(codec, True, how=how) if _utf8_is_valid(data) else None
    try:
        return _Detection(codec, True, how=how, text=data.decode(codec))
    except UnicodeError:
        return None


def _detect(data: bytes, source_name: str = "the data") -> _Detection:
    """The encoding of a Chinese city's text file; see :func:`detect_encoding` for the order."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and not data.startswith(
        codecs.BOM_UTF32_LE
    ):
        utf16 = _strict(data, "utf-16")
        if utf16 is not None:
            return utf16
        raise SourceError(
            f"'{source_name}' starts with a UTF-16 byte-order mark but is not valid UTF-16: it looks damaged; "
            "export it again (as 'CSV UTF-8' if possible)."
        )
    candidates = ("utf-8-sig",) if data.startswith(codecs.BOM_UTF8) else ("utf-8", "gbk", "gb18030")
    for codec in candidates:
        found = _strict(data, codec)
        if found is not None:
            return found
        if codec.startswith("utf-8") and _utf8_cut_at_end(data):
            # A UTF-8 file cut off inside its last character: UTF-8 with one damaged (last) line, not
            # GBK that happens to decode (a short tail of UTF-8 often does).
            return _Detection(codec, False, 1)
    limit = _tolerance(data)
    evidence = _non_ascii_lines(data)
    best: _Detection | None = None
    for codec in candidates:
        bad = _bad_line_count(data, codec, limit)
        # A few damaged lines among many that decode: that encoding.  Nothing non-ASCII that decodes:
        # no evidence for it at all (noise, or another encoding).
        if bad <= limit and evidence - bad >= bad and (best is None or bad < best.bad_lines):
            best = _Detection(codec, False, bad)
    if best is not None:
        return best
    from charset_normalizer import from_bytes

    match = from_bytes(data[:1_000_000]).best()
    if match is not None and match.encoding:
        guessed = _strict(data, codecs.lookup(match.encoding).name, how="guessed by charset-normalizer")
        if guessed is not None:
            return guessed
    raise SourceError(
        f"'{source_name}' is not text in any encoding tried (UTF-8, UTF-8 with BOM, GBK, GB18030, and "
        "charset-normalizer's guess): if it is text, pass its encoding with --encoding NAME; otherwise it "
        "is not the file you meant."
    )


def _detect_or_none(data: bytes) -> str | None:
    """The detected codec, or None where nothing fits (for hints in error messages)."""
    try:
        return _detect(data).codec
    except SourceError:
        return None


def detect_encoding(data: bytes, source_name: str | None = None) -> str:
    """The text encoding of a file from a Chinese city, as a Python codec name.

    Why this order: Excel and older Chinese software write GBK (CP936) by default, newer ones UTF-8,
    Excel's "CSV UTF-8" adds a BOM, and GB18030 is the national standard that extends GBK to all of
    Unicode (rare characters in names and addresses, e.g. 𠀀).  Strict UTF-8 almost never accepts GBK
    text by accident, so it is tried first; GBK and GB18030 then decide between themselves (GB18030 is a
    superset, so "gbk" is reported only when the bytes are strictly valid GBK).  Big5 text usually
    decodes as GBK too: this is for mainland sources.

    1. A UTF-16 byte-order mark: ``utf-16`` (Excel's "Unicode text").
    2. A UTF-8 BOM: ``utf-8-sig``.
    3. Strictly valid ``utf-8``, else ``gbk``, else ``gb18030``.
    4. The same encodings tolerating a few damaged lines (at most max(3, 1 %) of the lines): a file
       with one corrupted line is still that encoding; the readers reject only those lines.
    5. charset-normalizer's guess, if the bytes strictly decode in it (e.g. Shift-JIS).

    Parameters
    ----------
    data
        The file's bytes.
    source_name
        The file's name for the error message.

    Returns
    -------
    str
        ``utf-16``, ``utf-8-sig``, ``utf-8``, ``gbk``, ``gb18030``, or charset-normalizer's codec.

    Raises
    ------
    SourceError
        Nothing fits: the message lists what was tried and says to pass ``--encoding``.
    """
    return _detect(data, source_name or "the data").codec


def _resolve_encoding(data: bytes, encoding: str | None, source_name: str) -> tuple[_Detection, list[str]]:
    """The decoding to use: the explicit encoding if it fits, else the detected one (with notes).

    An explicit encoding that does not decode the file is an error naming the encoding that does, rather
    than mojibake (乱码) in the store; it is accepted with a few damaged lines only when detection finds
    the same encoding with the same damage.
    """
    notes: list[str] = []
    if encoding is None:
        detection = _detect(data, source_name)
        notes.append(f"Text encoding {detection.how} as {detection.codec}.")
        if not detection.strict:
            notes.append(
                f"{detection.bad_lines} line(s) hold bytes that are not valid {detection.codec} "
                f"(乱码); they are rejects, the rest of the file reads as {detection.codec}."
            )
        return detection, notes
    codec = _codec(encoding, source_name)
    if codec == "utf-8" and data.startswith(codecs.BOM_UTF8):
        codec = "utf-8-sig"
    given = _strict(data, codec, how="given")
    if given is not None:
        return given, notes
    try:
        data.decode(codec)
        first_bad = "an unknown place"
    except UnicodeDecodeError as error:
        first_bad = f"line {_line_of(data, error.start)}"
    except UnicodeError as error:  # pragma: no cover - e.g. a UTF-16 stream of odd length
        first_bad = str(error)
    try:
        detected: _Detection | None = _detect(data, source_name)
    except SourceError:
        detected = None
    same = detected is not None and detected.codec == codec
    if detected is None or detected.strict or not same:
        looks = (
            f"it looks like {detected.codec}: pass --encoding {detected.codec}, or leave --encoding out "
            "to have it detected"
            if detected is not None
            else "it does not look like UTF-8, GBK or GB18030 either: check which encoding the city's "
            "software exports"
        )
        raise SourceError(
            f"'{source_name}' is not valid {codec} (first undecodable bytes at {first_bad}); {looks}."
        )
    notes.append(
        f"{detected.bad_lines} line(s) hold bytes that are not valid {codec} (乱码); they are "
        f"rejects, the rest of the file reads as {codec}."
    )
    return _Detection(codec, False, detected.bad_lines, how="given"), notes


def _decode_text(data: bytes, encoding: str | None, source_name: str) -> tuple[str, str, list[str]]:
    """The whole file as text (strictly decoded), its codec and notes: for formats read whole (JSON)."""
    detection, notes = _resolve_encoding(data, encoding, source_name)
    if not detection.strict:
        try:
            data.decode(detection.codec)
            line = 0
        except UnicodeDecodeError as error:
            line = _line_of(data, error.start)
        raise SourceError(
            f"'{source_name}' has bytes that are not valid {detection.codec} at line {line}: "
            "the file is damaged; ask the city to export it again."
        )
    if detection.text is not None:
        return detection.text, detection.codec, notes
    return data.decode(detection.codec), detection.codec, notes


def _to_utf8(data: bytes, detection: _Detection) -> bytes:
    """The file as UTF-8 bytes without BOM.

    Undecodable bytes stay marked (as UTF-8-encoded lone surrogates, ED B2/B3 xx, which valid UTF-8 never
    contains) so the scan can reject the records that hold them.
    """
    codec = detection.codec
    if detection.strict:
        if codec == "utf-8":
            return data
        if codec == "utf-8-sig":
            return data[len(codecs.BOM_UTF8) :]
        text = detection.text if detection.text is not None else data.decode(codec)
        return text.encode("utf-8")
    return data.decode(codec, "surrogateescape").encode("utf-8", "surrogatepass")


# ------------------------------------------------------------------------------------------------- CSV


@dataclass
class _Scan:
    """Records of a CSV buffer: where each starts and ends, its first line and field count."""

    starts: np.ndarray
    ends: np.ndarray  # position of the record's line break, or len(buffer) for an unterminated last record
    content_ends: np.ndarray  # ends minus the \r of a \r\n
    lines: np.ndarray  # 1-based line where the record starts
    last_lines: np.ndarray  # 1-based line where the record ends
    fields: np.ndarray | None  # None: not counted (:func:`_scan_quick`)
    open_at_eof: bool  # the last record ends inside a quoted field
    quoted_breaks: bool  # some line break lies inside quotes
    bad: np.ndarray  # record indexes holding undecodable bytes


@dataclass
class _Quotes:
    """Where a CSV buffer is inside quotes, by the rules of pyarrow's and Python's CSV parsers.

    A quote opens a quoted field only at the start of a field (after a delimiter, a line break or at the
    start of the data); inside one, ``""`` is a literal quote and a single quote closes it; any other
    quote is an ordinary character.

    When every quote is where a well-formed CSV puts it (the usual case: each quote that the parity count
    says opens a field stands at a field start or right after another quote) "inside" is simply "an odd
    number of quotes before", one binary search per position of interest (line breaks and delimiters).
    Otherwise a loop over the quotes -- not over the bytes -- walks the rules and records the quoted
    spans.
    """

    quotes: np.ndarray | None = None  # well-formed: every quote's position (inside = odd count before)
    span_starts: np.ndarray | None = None
    span_ends: np.ndarray | None = None  # an unclosed span ends at len(buffer)
    open_at_eof: bool = False

    @classmethod
    def find(cls, arr: np.ndarray, delimiter: int) -> _Quotes:
        quotes = np.flatnonzero(arr == _QUOTE)
        size = len(arr)
        if len(quotes) == 0:
            return cls()
        openers = quotes[0::2]
        before = arr[np.maximum(openers - 1, 0)]
        well_formed = (
            (openers == 0) | (before == delimiter) | (before == _LF) | (before == _CR) | (before == _QUOTE)
        )
        if bool(well_formed.all()):
            return cls(quotes=quotes, open_at_eof=len(quotes) % 2 == 1)
        starts: list[int] = []
        ends: list[int] = []
        positions = quotes.tolist()
        inside = False
        index = 0
        while index < len(positions):
            position = positions[index]
            if inside:
                if index + 1 < len(positions) and positions[index + 1] == position + 1:
                    index += 2  # "" inside quotes: a literal quote
                    continue
                ends.append(position)
                inside = False
            elif position == 0 or int(arr[position - 1]) in (delimiter, _LF, _CR):
                starts.append(position)
                inside = True
            index += 1
        if inside:
            ends.append(size)
        return cls(
            span_starts=np.array(starts, dtype=np.int64),
            span_ends=np.array(ends, dtype=np.int64),
            open_at_eof=inside,
        )

    def inside(self, positions: np.ndarray) -> np.ndarray:
        """Which of these (non-quote) byte positions lie inside a quoted field."""
        if self.quotes is not None:
            return (np.searchsorted(self.quotes, positions) & 1).astype(bool)
        if self.span_starts is None or len(self.span_starts) == 0:
            return np.zeros(len(positions), dtype=bool)
        assert self.span_ends is not None
        index = np.searchsorted(self.span_starts, positions, side="right") - 1
        return (index >= 0) & (positions < self.span_ends[np.maximum(index, 0)])


def _line_breaks(arr: np.ndarray, buffer: bytes) -> np.ndarray:
    """Positions of the line breaks: ``\\n``, ``\\r\\n`` (its ``\\n``) and a lone ``\\r``."""
    size = len(arr)
    breaks = np.flatnonzero(arr == _LF)
    if b"\r" in buffer:
        returns = np.flatnonzero(arr == _CR)
        following = np.minimum(returns + 1, size - 1)
        lone = returns[(returns + 1 >= size) | (arr[following] != _LF)]
        if len(lone):
            breaks = np.union1d(breaks, lone)
    return breaks


def _record_bounds(arr: np.ndarray, record_breaks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each record's start, end (its line break or the end of the data) and content end (before ``\\r\\n``)."""
    size = len(arr)
    starts = np.concatenate(([0], record_breaks + 1)).astype(np.int64)
    ends = np.concatenate((record_breaks, [size])).astype(np.int64)
    if starts[-1] >= size:  # the file ends with a line break: no record after it
        starts, ends = starts[:-1], ends[:-1]
    crlf = np.zeros(len(ends), dtype=bool)
    has_prev = (ends > starts) & (ends < size)
    crlf[has_prev] = (arr[ends[has_prev]] == _LF) & (arr[ends[has_prev] - 1] == _CR)
    return starts, ends, ends - crlf


def _has_marks(buffer: bytes) -> bool:
    """Whether the buffer holds undecodable bytes marked by :func:`_to_utf8` (ED B2 xx / ED B3 xx)."""
    return b"\xed\xb2" in buffer or b"\xed\xb3" in buffer


def _scan_quick(buffer: bytes, delimiter: int, marked: bool) -> _Scan | None:
    """The records of a CSV buffer taken to be one per line, or None when it holds undecodable bytes.

    Why: finding every quote (tens of millions in an export that quotes each text value) and counting the
    delimiters outside them was most of the read's cost, ~1 s of one core per million rows, while on a
    plain file pyarrow learns the same while parsing.  So this scan looks only at line breaks, and the
    assumption that each record is one line is proved afterwards (:func:`_one_record_per_line`): pyarrow,
    quote-aware, must return exactly one row of the header's width per non-blank line.  A record that
    spans lines (a quoted line break) ends on a line that is not blank (it holds at least the closing
    quote), so it makes fewer rows than lines and sends the caller to the exact scan (:func:`_scan`), as
    does any row with the wrong field count.  ``fields`` is None: not counted.
    """
    if marked and _has_marks(buffer):
        return None
    arr = np.frombuffer(buffer, dtype=np.uint8)
    breaks = _line_breaks(arr, buffer)
    starts, ends, content_ends = _record_bounds(arr, breaks)
    lines = np.arange(1, len(starts) + 1, dtype=np.int64)  # taken as one record per line, checked later
    return _Scan(starts, ends, content_ends, lines, lines, None, False, False, np.empty(0, dtype=np.int64))


def _parse_plain(buffer: bytes, scan: _Scan, delimiter: str, name: str) -> pa.Table | None:
    """The data rows after a quick scan, or None when the file is not one record per line (or any row has
    the wrong field count): then the caller scans exactly.

    Besides pyarrow's row count (:func:`_scan_quick`), it checks what counting cannot see: a quote left
    open in the header line, or in the last non-blank line (only blank lines follow it, so the counts
    could still agree).
    """
    content = scan.content_ends > scan.starts
    nonblank = np.flatnonzero(content)
    if len(nonblank) < 2:
        return None
    header_index, last = int(nonblank[0]), int(nonblank[-1])
    for index, end in ((header_index, int(scan.content_ends[header_index])), (last, len(buffer))):
        start = int(scan.starts[index])
        piece = np.frombuffer(buffer, dtype=np.uint8, count=end - start, offset=start)
        if b'"' in buffer[start:end] and _Quotes.find(piece, ord(delimiter)).open_at_eof:
            return None
    header_text = buffer[scan.starts[header_index] : scan.content_ends[header_index]].decode("utf-8")
    width = len(_split_record(header_text, delimiter))
    return _parse_good_records(
        buffer, scan, header_index, nonblank[1:], [], delimiter, width, name, exact=False
    )


def _scan(buffer: bytes, delimiter: int, marked: bool) -> _Scan:
    """Find the records of a UTF-8 CSV buffer: vectorised with numpy, no Python loop over rows.

    Line breaks are ``\\n``, ``\\r\\n`` and a lone ``\\r`` (as pyarrow and Python's csv count them).
    """
    arr = np.frombuffer(buffer, dtype=np.uint8)
    breaks = _line_breaks(arr, buffer)
    quotes = _Quotes.find(arr, delimiter) if b'"' in buffer else _Quotes()
    quoted = quotes.inside(breaks)
    starts, ends, content_ends = _record_bounds(arr, breaks[~quoted])
    delimiters = np.flatnonzero(arr == delimiter)
    if quotes.quotes is not None or quotes.span_starts is not None:
        delimiters = delimiters[~quotes.inside(delimiters)]
    fields = np.searchsorted(delimiters, content_ends) - np.searchsorted(delimiters, starts) + 1
    lines = np.searchsorted(breaks, starts, side="left") + 1
    last_lines = np.searchsorted(breaks, np.maximum(content_ends - 1, starts), side="left") + 1
    bad = np.empty(0, dtype=np.int64)
    if marked:  # lone surrogates from surrogateescape, encoded with surrogatepass: ED B2 xx / ED B3 xx
        lead = np.flatnonzero(arr[:-1] == 0xED)
        lead = lead[(arr[lead + 1] == 0xB2) | (arr[lead + 1] == 0xB3)]
        bad = np.unique(np.searchsorted(ends, lead, side="left"))
    return _Scan(
        starts, ends, content_ends, lines, last_lines, fields, quotes.open_at_eof, bool(quoted.any()), bad
    )


def _split_record(text: str, delimiter: str) -> list[str]:
    """One record's fields by the CSV rules (for the header and for reject reports)."""
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    return rows[0] if rows else []


def _sniff_delimiter(buffer: bytes) -> tuple[str, bool]:
    """The delimiter among , ; TAB | that splits the first records most consistently into >= 2 fields.

    Returns the delimiter and whether any candidate qualified (a one-column file has none: ',' then).
    """
    sample = buffer[:_SNIFF_BYTES].decode("utf-8", "ignore")
    truncated = len(buffer) > _SNIFF_BYTES
    best: tuple[float, int, int] | None = None
    chosen = ","
    for order, candidate in enumerate(DELIMITERS):
        try:
            records = [r for r in csv.reader(io.StringIO(sample, newline=""), delimiter=candidate) if r]
        except csv.Error:
            continue
        if truncated and len(records) > 1:
            records = records[:-1]
        if not records or len(records[0]) < 2:
            continue
        width = len(records[0])
        consistency = sum(len(r) == width for r in records) / len(records)
        score = (consistency, width, -order)
        if best is None or score > best:
            best, chosen = score, candidate
    return chosen, best is not None


def _delimiter_name(delimiter: str) -> str:
    return {",": "comma ','", ";": "semicolon ';'", "\t": "tab", "|": "bar '|'"}.get(
        delimiter, repr(delimiter)
    )


def _read_csv(path: Path, encoding: str | None, delimiter: str | None) -> RawTable:
    """Read a delimited text file; see the module docstring for how records and rejects are found."""
    name = path.name
    data = path.read_bytes()
    detection, notes = _resolve_encoding(data, encoding, name)
    buffer = _to_utf8(data, detection)
    del data
    if delimiter is None:
        delimiter, found = _sniff_delimiter(buffer)
        notes.append(
            f"Delimiter detected: {_delimiter_name(delimiter)}."
            if found
            else "No delimiter among , ; TAB | splits the header: the file is read as one column."
        )
    elif len(delimiter) != 1 or delimiter in ('"', "\n", "\r"):
        raise SourceError(
            f"'{name}': the delimiter must be one character other than a quote or line break, "
            f"not {delimiter!r}."
        )
    delim = ord(delimiter)
    if delim > 0x7F:
        raise SourceError(f"'{name}': the delimiter must be an ASCII character, not {delimiter!r}.")
    marked = not detection.strict
    scan = _scan_quick(buffer, delim, marked)
    table = _parse_plain(buffer, scan, delimiter, name) if scan is not None else None
    if table is None:  # a record spans lines or has the wrong field count: find it the exact way
        scan = _scan(buffer, delim, marked)
    content = scan.content_ends > scan.starts
    nonblank = np.flatnonzero(content)
    if len(nonblank) == 0:
        raise SourceError(f"'{name}' holds no text, only blank lines: the export failed; ask for it again.")
    header_index = int(nonblank[0])
    bad = set(scan.bad.tolist())
    if header_index in bad:
        raise SourceError(
            f"'{name}': the header line (line {scan.lines[header_index]}) has bytes that are not "
            f"valid {detection.codec}; the file is damaged or not {detection.codec}: pass "
            "--encoding or export it again."
        )
    header_text = buffer[scan.starts[header_index] : scan.content_ends[header_index]].decode("utf-8")
    header = _clean_headers(_split_record(header_text, delimiter), notes)
    width = len(header)
    header_fields = (
        scan.fields[header_index]
        if scan.fields is not None
        else _scan(buffer[scan.starts[header_index] : scan.ends[header_index]], delim, False).fields[0]
    )
    if header_fields != width:  # cannot happen for a well-formed header; guard anyway
        raise SourceError(
            f"'{name}': the header line could not be split into fields; check the delimiter "
            f"(pass --delimiter)."
        )

    record_count = len(scan.starts)
    data_records = np.arange(header_index + 1, record_count)
    blank = data_records[~content[data_records]]
    excluded: list[int] = []
    rejects: list[tuple[int, Any, str, str | None]] = []
    whitespace_only: list[int] = []
    last = record_count - 1
    file_unterminated = scan.ends[last] == len(buffer) and last > header_index
    assert scan.fields is not None or table is not None

    def record_text(index: int) -> str:
        """The record as text; an undecodable byte shown as \\xNN, as a hex editor would."""
        text = buffer[scan.starts[index] : scan.content_ends[index]].decode("utf-8", "surrogatepass")
        return re.sub("[\udc80-\udcff]", lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text)

    def where(index: int) -> str:
        first, final = int(scan.lines[index]), int(scan.last_lines[index])
        return f"Line {first}" if first == final else f"The record on lines {first}-{final}"

    candidates: list[int] = []
    if scan.fields is not None:
        wrong = data_records[(scan.fields[data_records] != width) & content[data_records]]
        candidates = sorted(
            set(wrong.tolist())
            | {b for b in bad if b > header_index}
            | ({last} if scan.open_at_eof and last > header_index else set())
        )
    for index in candidates:
        assert scan.fields is not None
        line = int(scan.lines[index])
        text = record_text(index)
        cut = index == last and file_unterminated
        if scan.fields[index] == 1 and len(text) <= 256 and not text.strip() and index not in bad:
            whitespace_only.append(index)  # spaces only: no data, like a blank line
            excluded.append(index)
            continue
        if index in bad:
            reason = (
                f"{where(index)} holds bytes that are not valid {detection.codec} (乱码, undecodable): "
                "the line was damaged in export or copy; fix it in the source and load it again."
            )
            if cut:
                reason += (
                    " It is the last line and the file does not end with a line break, so the file "
                    "was probably cut off (文件被截断) in the middle of a character."
                )
        elif index == last and scan.open_at_eof:
            reason = (
                f'{where(index)} opens a quoted field (") that is never closed before the end of the '
                "file (引号未闭合): the file was probably cut off (文件被截断) during export or copy; "
                "ask the city to send it again."
            )
            if int(scan.last_lines[index]) - line > 1:
                reason += (
                    " If the file is complete, an unmatched quote swallowed the lines after it: fix that "
                    "quote."
                )
        elif scan.fields[index] < width and cut:
            reason = (
                f"{where(index)} has {scan.fields[index]} of the header's {width} fields and is the last "
                "line of a file that does not end with a line break: the file was probably cut off "
                "(文件被截断); ask the city to send it again."
            )
        else:
            more = scan.fields[index] > width
            reason = (
                f"{where(index)} has {scan.fields[index]} fields but the header has {width} (字段数不符): "
                + (
                    "a delimiter inside a value that is not in quotes is the usual cause; quote that value "
                    "or remove the extra delimiter."
                    if more
                    else "a value with a line break or delimiter that lost its quotes, or a cut-off line, is "
                    "the usual cause; fix the line in the source."
                )
            )
            if int(scan.last_lines[index]) > line:
                reason += " The record spans several lines because of a quoted line break."
        excluded.append(index)
        rejects.append((line, _clip(text), reason, None))

    excluded_set = set(excluded)
    keep = content.copy()
    keep[excluded] = False
    good = data_records[keep[data_records]]
    if table is None:
        table = _parse_good_records(buffer, scan, header_index, good, excluded, delimiter, width, name)

    if len(blank):
        notes.append(f"{len(blank)} blank line(s) skipped ({_listing(scan.lines[blank])}).")
    if whitespace_only:
        notes.append(
            f"{len(whitespace_only)} line(s) holding only spaces skipped "
            f"({_listing(scan.lines[whitespace_only])})."
        )
    if len(rejects) > len(good):
        notes.append(
            f"Most rows ({len(rejects)} of {len(rejects) + len(good)}) could not be read: check that "
            f"line {scan.lines[header_index]} is the header and the delimiter is right (--delimiter)."
        )
    if file_unterminated and last not in excluded_set:
        notes.append(
            f"The file does not end with a line break: check that its last row (line "
            f"{scan.lines[last]}) is complete, the export may have been cut off."
        )

    rows = scan.lines[good]
    frame, empty_rows = _arrow_to_frame(table, header, rows)
    if len(empty_rows):
        notes.append(f"{len(empty_rows)} row(s) with every field empty skipped ({_listing(empty_rows)}).")
    frame = _drop_unnamed_empty_columns(frame, header, notes)
    if len(frame) + len(rejects) == 0:
        notes.append("The file has a header but no data rows.")
    return RawTable(frame, _rejects_frame(rejects), detection.codec, name, notes)


def _parse_good_records(
    buffer: bytes,
    scan: _Scan,
    header_index: int,
    good: np.ndarray,
    excluded: list[int],
    delimiter: str,
    width: int,
    name: str,
    exact: bool = True,
) -> pa.Table | None:
    """Parse the records that passed the scan with pyarrow, all columns as strings.

    The excluded records are cut out of the buffer first, so pyarrow sees only records with the right
    field count and must return exactly ``len(good)`` rows; anything else is an error, not a loss.
    With ``exact=False`` (after :func:`_scan_quick`, which took each line for a record and counted no
    fields) a disagreement is not an error but None: the caller then scans exactly and finds the records
    that span lines or have the wrong field count.
    """
    columns = [f"f{i}" for i in range(width)]
    if len(good) == 0:
        return pa.table({c: pa.array([], type=pa.string()) for c in columns})
    begin = int(scan.ends[header_index]) + 1
    if not excluded:
        payload: Any = memoryview(buffer)[begin:]
    else:
        pieces = []
        cursor = begin
        for index in sorted(excluded):
            pieces.append(buffer[cursor : int(scan.starts[index])])
            cursor = int(scan.ends[index]) + 1
        pieces.append(buffer[cursor:])
        payload = b"".join(pieces)
    expected = len(good)

    unexpected: list[Any] = []

    def disagree(row: Any) -> str:
        unexpected.append(row)
        return "skip" if exact else "error"  # not exact: stop at the first, the caller rescans

    try:
        table = pacsv.read_csv(
            pa.BufferReader(pa.py_buffer(payload)),
            read_options=pacsv.ReadOptions(column_names=columns, use_threads=True),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter,
                quote_char='"',
                double_quote=True,
                escape_char=False,
                # After a quick scan, quote-aware parsing is what makes a record spanning lines show.
                newlines_in_values=scan.quoted_breaks or not exact,
                ignore_empty_lines=True,
                invalid_row_handler=disagree,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(columns, pa.string()),
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
                null_values=[""],
                check_utf8=False,
            ),
        )
    except pa.ArrowInvalid as error:
        if not exact:
            return None
        raise SourceError(
            f"'{name}' could not be parsed as CSV ({error}); check the delimiter and quotes, or "
            "report it as a bug with the file."
        ) from error
    if unexpected or table.num_rows != expected:
        if not exact:
            return None
        raise SourceError(
            f"'{name}': the CSV parser returned {table.num_rows} rows ({len(unexpected)} more it could not split) "
            f"where the scan found {expected}: this is a bug in CityGrid's reader, please report it with the "
            "file; no rows were loaded."
        )
    return table


def _arrow_to_frame(table: pa.Table, header: list[str], rows: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """pyarrow table -> frame of string columns with ``_row`` first; rows with every field empty dropped.

    Returns the frame and the row numbers of the dropped empty rows.
    """
    empty_rows = np.empty(0, dtype=np.int64)
    if table.num_rows and table.num_columns:
        import pyarrow.compute as pc

        empty = pc.is_null(table.column(0))
        for column in table.columns[1:]:
            empty = pc.and_(empty, pc.is_null(column))
        empty_mask = np.asarray(empty.to_numpy(zero_copy_only=False), dtype=bool)
        if empty_mask.any():
            empty_rows = rows[empty_mask]
            table = table.filter(pa.array(~empty_mask))
            rows = rows[~empty_mask]
    frame = table.to_pandas(types_mapper={pa.string(): STRING_DTYPE, pa.large_string(): STRING_DTYPE}.get)
    frame.columns = header
    frame.insert(0, ROW_COLUMN, np.asarray(rows, dtype=np.int64))
    return frame, empty_rows


def _drop_unnamed_empty_columns(frame: pd.DataFrame, header: list[str], notes: list[str]) -> pd.DataFrame:
    """Drop columns that had no header and hold no value (a trailing delimiter on every line)."""
    unnamed = [n for n in header if re.fullmatch(r"column_\w+", n) and n in frame.columns]
    drop = [n for n in unnamed if frame[n].isna().all()]
    if drop:
        frame = frame.drop(columns=drop)
        notes.append(
            f"Column(s) {', '.join(drop)} have neither header nor values (a trailing delimiter); "
            "they are dropped."
        )
    return frame


# ------------------------------------------------------------------------------------------------ XLSX


@dataclass(frozen=True)
class _Sheet:
    """A calamine sheet with its title (the messages name it)."""

    title: str
    data: Any

    def rows(self) -> list[list[Any]]:
        """Every row from the sheet's first row on (empty leading rows kept, so row numbers are Excel's)."""
        return self.data.to_python(skip_empty_area=False)


def _read_xlsx(path: Path, sheet: str | int | None) -> RawTable:
    """Read one sheet of an Excel workbook: cached values, not formulas; first non-empty row = header.

    The cells are read by calamine (Rust): a monthly export of 800,000 cases took openpyxl over twenty
    minutes and calamine well under one.
    """
    from openpyxl.utils import get_column_letter
    from python_calamine import CalamineWorkbook

    name = path.name
    notes: list[str] = []
    try:
        workbook = CalamineWorkbook.from_path(str(path))
    except Exception as error:  # calamine raises its own error types for every kind of broken file
        raise SourceError(
            f"'{name}' is not a readable .xlsx workbook ({error}): open it in Excel or WPS and "
            "save it again as .xlsx (Excel 工作簿)."
        ) from error
    try:
        names = list(workbook.sheet_names)
        if not names:
            raise SourceError(f"'{name}' has no sheet: open it in Excel or WPS and save it again as .xlsx.")
        if sheet is None:
            worksheet = _Sheet(names[0], workbook.get_sheet_by_index(0))
            if len(names) > 1:
                notes.append(
                    f"The workbook has sheets {', '.join(names)}; read '{names[0]}' (the first): pass "
                    "--sheet to read another."
                )
        elif isinstance(sheet, int):
            if not 0 <= sheet < len(names):
                raise SourceError(
                    f"'{name}' has no sheet number {sheet} (counting from 0); its sheets are: "
                    f"{', '.join(names)}."
                )
            worksheet = _Sheet(names[sheet], workbook.get_sheet_by_index(sheet))
        else:
            if sheet not in names:
                raise SourceError(f"'{name}' has no sheet '{sheet}'; its sheets are: {', '.join(names)}.")
            worksheet = _Sheet(sheet, workbook.get_sheet_by_name(sheet))
        header_cells: list[Any] | None = None
        header_row = 0
        records: list[tuple[int, list[str | None]]] = []
        long_numbers: set[int] = set()
        for number, values in enumerate(worksheet.rows(), start=1):
            cells = [_cell_text(v, significant=15) for v in values]
            for index, value in enumerate(values):
                if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) >= 1e15:
                    long_numbers.add(index)
            if header_cells is None:
                if any(c is not None and c.strip() for c in cells):
                    header_cells, header_row = cells, number
                    long_numbers.clear()
                continue
            records.append((number, cells))
    except SourceError:
        raise
    except Exception as error:
        raise SourceError(
            f"'{name}': a sheet could not be read ({error}): save it again as .xlsx."
        ) from error
    if header_cells is None:
        raise SourceError(
            f"'{name}': sheet '{worksheet.title}' is empty: pick the sheet with the data (--sheet)."
        )

    def filled(cells: list[str | None]) -> bool:
        return any(c is not None and c.strip() for c in cells)

    while records and not filled(records[-1][1]):
        records.pop()  # empty rows after the data: formatting, not rows
    empty_rows = [number for number, cells in records if not filled(cells)]
    records = [(number, cells) for number, cells in records if filled(cells)]

    def last_used(cells: list[str | None]) -> int:
        return max((i + 1 for i, c in enumerate(cells) if c is not None), default=0)

    width = max([last_used(header_cells)] + [last_used(cells) for _, cells in records])
    header_cells = header_cells + [None] * (width - len(header_cells))
    used = [
        i
        for i in range(width)
        if header_cells[i] is not None or any(i < len(cells) and cells[i] is not None for _, cells in records)
    ]
    header = _clean_headers(
        [header_cells[i] for i in used],
        notes,
        position_name=lambda k: f"column_{get_column_letter(used[k] + 1)}",
    )
    columns: dict[str, list[str | None]] = {h: [] for h in header}
    for _, cells in records:
        for h, i in zip(header, used, strict=True):
            columns[h].append(cells[i] if i < len(cells) else None)
    frame = _string_frame(columns, np.array([number for number, _ in records], dtype=np.int64))
    if header_row != 1:
        notes.append(
            f"The header is on row {header_row} of sheet '{worksheet.title}' (the rows above are empty)."
        )
    if empty_rows:
        notes.append(
            f"{len(empty_rows)} empty row(s) inside the data skipped ({_listing(empty_rows, 'row')})."
        )
    if long_numbers:
        cols = ", ".join(f"'{header[used.index(i)]}'" for i in sorted(long_numbers) if i in used)
        notes.append(
            f"Column(s) {cols} hold numbers of 16 or more digits: Excel keeps only 15 significant "
            "digits, so long codes (e.g. 18-digit ID numbers, 身份证号) may have lost their last "
            "digits; have the city format such columns as text (文本) before export."
        )
    if not records:
        notes.append("The sheet has a header but no data rows.")
    return RawTable(frame, _rejects_frame([]), None, name, notes)


# ------------------------------------------------------------------------------------------------ JSON


def _read_open311(path: Path, encoding: str | None) -> RawTable:
    """Read Open311 GeoReport v2 service requests: an array, or an object with a requests list."""
    name = path.name
    text, codec, notes = _decode_text(path.read_bytes(), encoding, name)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        at_end = error.pos >= len(text.rstrip()) or error.msg.startswith("Unterminated string")
        ending = "; the file ends there unfinished: it was probably cut off (文件被截断)" if at_end else ""
        joint = " " if error.msg.endswith(" at") else " at "
        raise SourceError(
            f"'{name}' is not valid JSON: {error.msg}{joint}line {error.lineno}, column {error.colno}{ending}; "
            "ask the city to export it again, or fix the file there."
        ) from error
    if isinstance(document, dict):
        items = next(
            (document[k] for k in ("requests", "service_requests") if isinstance(document.get(k), list)), None
        )
        if items is None:
            if document.get("type") in ("FeatureCollection", "Feature"):
                raise SourceError(
                    f"'{name}' is GeoJSON, not Open311 requests: load it as a map layer (read_features)."
                )
            keys = ", ".join(list(document)[:10]) or "none"
            raise SourceError(
                f"'{name}' is a JSON object without a 'requests' or 'service_requests' list (its "
                f"keys: {keys}): Open311 GeoReport v2 requests are a JSON array of request objects."
            )
    elif isinstance(document, list):
        items = document
    else:
        raise SourceError(
            f"'{name}' holds a single JSON {type(document).__name__}, not a list of Open311 requests."
        )
    order: dict[str, None] = {}
    readable: list[tuple[int, dict[str, Any]]] = []
    rejects: list[tuple[int, Any, str, str | None]] = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            kind = {
                list: "a list",
                str: "a string",
                int: "a number",
                float: "a number",
                bool: "true/false",
                type(None): "null",
            }.get(type(item), type(item).__name__)
            rejects.append(
                (
                    number,
                    _clip(json.dumps(item, ensure_ascii=False)),
                    f"Item {number} of the requests is {kind}, not a request object {{...}}: the export "
                    "is malformed there.",
                    None,
                )
            )
            continue
        if not item:
            rejects.append(
                (
                    number,
                    {},
                    f"Item {number} of the requests is an empty object {{}}: it holds no request.",
                    None,
                )
            )
            continue
        for key in item:
            order.setdefault(key, None)
        readable.append((number, item))
    raw_names = list(order)
    header = _clean_headers(raw_names, notes)
    columns = {
        h: [_cell_text(item.get(k)) for _, item in readable] for h, k in zip(header, raw_names, strict=True)
    }
    frame = _string_frame(columns, np.array([n for n, _ in readable], dtype=np.int64))
    if not items:
        notes.append("The file holds an empty list of requests.")
    return RawTable(frame, _rejects_frame(rejects), codec, name, notes)


# ----------------------------------------------------------------------------------------------- tables


def read_table(
    path: Path,
    encoding: str | None = None,
    sheet: str | int | None = None,
    *,
    delimiter: str | None = None,
) -> RawTable:
    """Read a tabular file a city handed over: CSV/TXT, XLSX, or Open311 JSON.

    Parameters
    ----------
    path
        The file; its suffix decides the format (``.csv``, ``.txt``, ``.tsv``, ``.xlsx``, ``.xlsm``,
        ``.json``).
    encoding
        The text encoding of a CSV/JSON file, when detection would guess wrong; None detects it
        (:func:`detect_encoding`).  An encoding that does not decode the file is an error naming the one
        that does, never mojibake.
    sheet
        XLSX only: the sheet's name, or its index from 0; None reads the first sheet.
    delimiter
        CSV only: the field delimiter; None sniffs it among ``,`` ``;`` TAB ``|``.

    Returns
    -------
    RawTable
        Every value as text, with ``_row``; unreadable rows in ``rejects``.

    Raises
    ------
    SourceError
        The file cannot be read at all (missing, empty, wrong format, undecodable, truncated JSON...).
    """
    path = _check_file(Path(path))
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return _read_csv(path, encoding, delimiter)
    if suffix in XLSX_SUFFIXES:
        return _read_xlsx(path, sheet)
    if suffix in JSON_SUFFIXES:
        return _read_open311(path, encoding)
    if suffix == ".xls":
        raise SourceError(
            f"'{path.name}' is an old Excel 97-2003 workbook (.xls), which CityGrid does not read: "
            "open it in Excel or WPS and save it as .xlsx (Excel 工作簿)."
        )
    if suffix in FEATURE_SUFFIXES:
        raise SourceError(f"'{path.name}' is a map layer, not a table: load it with read_features.")
    raise SourceError(
        f"'{path.name}': CityGrid reads tables from .csv, .txt, .tsv, .xlsx and .json (Open311) "
        f"files, not '{suffix or 'no suffix'}': export the data in one of those formats."
    )


# --------------------------------------------------------------------------------------------- features


def _sibling(path: Path, suffix: str) -> Path | None:
    """A shapefile's sidecar file with any case of suffix (.cpg, .CPG...)."""
    exact = path.with_suffix(suffix)
    if exact.is_file():
        return exact
    for candidate in path.parent.iterdir():
        if candidate.stem == path.stem and candidate.suffix.lower() == suffix and candidate.is_file():
            return candidate
    return None


def _dbf_text_bytes(dbf: bytes) -> bytes:
    """The text parts of a .dbf (field names and records), for encoding detection."""
    if len(dbf) < 33:
        return b""
    header_length = int.from_bytes(dbf[8:10], "little")
    names = []
    for offset in range(32, min(header_length, len(dbf)) - 31, 32):
        if dbf[offset] == 0x0D:
            break
        names.append(dbf[offset : offset + 11].split(b"\0", 1)[0])
    return b"\n".join(names) + b"\n" + dbf[header_length:].rstrip(b"\x1a")


def _cpg_codec(text: str) -> str:
    """A .cpg's content as a codec name where Python knows it ('GBK' -> gbk, '936' -> gbk), else as is."""
    value = text.strip()
    for candidate in (value, f"cp{value}" if value.isdigit() else value, value.replace("ANSI ", "cp")):
        try:
            return codecs.lookup(candidate).name
        except LookupError:
            continue
    return value


def _attribute_texts(values: np.ndarray) -> list[str | None]:
    """A column of attribute values as text (ints plain, floats without '.0' or exponent)."""
    if values.dtype.kind in "iu":
        return [str(v) for v in values.tolist()]
    if values.dtype.kind == "f":
        return [_float_text(v) for v in values.tolist()]
    if values.dtype.kind == "b":
        return ["true" if v else "false" for v in values.tolist()]
    return [_cell_text(v) for v in values]


def read_features(
    path: Path,
    layer: str | None = None,
    encoding: str | None = None,
) -> RawFeatures:
    """Read a vector layer a city handed over: GeoJSON, Shapefile or GeoPackage.

    Parameters
    ----------
    path
        ``.geojson``/``.json``, ``.shp`` (with its ``.shx``, ``.dbf`` and, ideally, ``.prj``/``.cpg``
        beside it) or ``.gpkg``.
    layer
        GeoPackage: the layer's name; None reads the first (the others are listed in ``notes``).
    encoding
        The attribute text encoding.  Shapefile: overrides the ``.cpg``; without a ``.cpg`` and without
        this, UTF-8 then GBK/GB18030 are tried on the ``.dbf`` bytes (a note says which).  GeoJSON:
        normally UTF-8; a GBK one is transcoded.  GeoPackage: always UTF-8, so this is ignored.

    Returns
    -------
    RawFeatures
        Attributes as text, ``_row`` = feature index from 1, the geometry in the source CRS.

    Raises
    ------
    SourceError
        The file cannot be opened, a named layer is missing (the layers are listed), a shapefile's
        companion files are missing...
    """
    import pyogrio
    import shapely

    path = _check_file(Path(path))
    name = path.name
    suffix = path.suffix.lower()
    notes: list[str] = []
    source: Any = path
    read_encoding: str | None = None
    reported: str | None = None
    options: dict[str, str] = {}
    read_layer: str | None = layer
    dbf_text = b""
    if suffix in (".geojson", ".json"):
        data = path.read_bytes()
        text, reported, decode_notes = _decode_text(data, encoding, name)
        if reported not in ("utf-8",):
            source = text.encode("utf-8")  # GDAL reads GeoJSON as UTF-8 only (a BOM included)
            if reported != "utf-8-sig":
                notes.extend(decode_notes)
                notes.append(
                    f"The GeoJSON is in {reported}, not UTF-8 as the standard asks; it was converted."
                )
        options = {"DATE_AS_STRING": "YES", "ARRAY_AS_STRING": "YES"}
        read_layer = None
    elif suffix == ".shp":
        missing = [s for s in (".shx", ".dbf") if _sibling(path, s) is None]
        if missing:
            raise SourceError(
                f"'{name}' is missing its {' and '.join(missing)} file(s): a shapefile is several "
                "files with the same name (.shp, .shx, .dbf, .prj, .cpg); copy all of them."
            )
        if _sibling(path, ".prj") is None:
            notes.append("The shapefile has no .prj: its coordinate system is unknown (frame.crs is None).")
        cpg = _sibling(path, ".cpg")
        cpg_codec = _cpg_codec(cpg.read_text("ascii", "replace")) if cpg is not None else None
        dbf = _sibling(path, ".dbf")
        assert dbf is not None
        dbf_text = _dbf_text_bytes(dbf.read_bytes())
        if encoding is not None:
            reported = _codec(encoding, name)
            read_encoding = reported
            if _strict(dbf_text, reported) is None:
                looks = _detect_or_none(dbf_text)
                if looks is not None and looks != reported:
                    raise SourceError(
                        f"'{name}': the text in its .dbf is not valid {reported}; it looks like "
                        f"{looks}: pass --encoding {looks}, or leave --encoding out."
                    )
            if cpg_codec is not None and cpg_codec != reported:
                notes.append(f"The .cpg says {cpg_codec}; the given encoding {reported} is used instead.")
        elif cpg_codec is not None:
            reported = cpg_codec  # GDAL honours the .cpg itself
        else:
            detection = _detect(dbf_text, dbf.name)
            reported = {"utf-8-sig": "utf-8"}.get(detection.codec, detection.codec)
            read_encoding = reported
            notes.append(
                f"The shapefile has no .cpg (code page file); its text was tried as UTF-8, then GBK "
                f"and GB18030, and reads as {reported}. If names look wrong (乱码), pass --encoding."
            )
        read_layer = None
    elif suffix == ".gpkg":
        try:
            layers = [str(row[0]) for row in pyogrio.list_layers(path)]
        except Exception as error:  # pyogrio raises its own DataSourceError hierarchy
            raise SourceError(f"'{name}' is not a readable GeoPackage ({error}): export it again.") from error
        if not layers:
            raise SourceError(f"'{name}' is a GeoPackage without layers: nothing to read.")
        if layer is None:
            read_layer = layers[0]
            if len(layers) > 1:
                notes.append(
                    f"The GeoPackage has layers {', '.join(layers)}; read '{layers[0]}' (the first): "
                    "pass --layer to read another."
                )
        elif layer not in layers:
            raise SourceError(f"'{name}' has no layer '{layer}'; its layers are: {', '.join(layers)}.")
        if encoding is not None:
            notes.append("GeoPackage text is always UTF-8: the given encoding is ignored.")
        reported = "utf-8"
    else:
        raise SourceError(
            f"'{name}': CityGrid reads map layers from .geojson, .shp and .gpkg files, not "
            f"'{suffix or 'no suffix'}': export the layer in one of those formats."
        )

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            meta, _, geometry, field_data = pyogrio.raw.read(
                source, layer=read_layer, encoding=read_encoding, datetime_as_string=True, **options
            )
    except UnicodeDecodeError as error:
        looks = _detect_or_none(dbf_text) if suffix == ".shp" else None
        hint = (
            f"it looks like {looks}: pass --encoding {looks}"
            if looks
            else "pass --encoding with the right one"
        )
        said = " (as its .cpg says)" if suffix == ".shp" and encoding is None else ""
        raise SourceError(f"'{name}': its text is not valid {reported}{said}; {hint}.") from error
    except Exception as error:  # pyogrio's DataSourceError/DataLayerError/FieldError...: all "cannot read"
        raise SourceError(
            f"'{name}' could not be read as a map layer: {error}. If the file was cut off or "
            "damaged in the copy, ask the city to export it again."
        ) from error
    for warning in caught:
        notes.append(f"GDAL: {warning.message}")

    count = len(geometry) if geometry is not None else (len(field_data[0]) if len(field_data) else 0)
    header = _clean_headers(list(meta["fields"]), notes, reserved=(ROW_COLUMN, "geometry"))
    columns = {h: _attribute_texts(np.asarray(values)) for h, values in zip(header, field_data, strict=True)}
    rows = np.arange(1, count + 1, dtype=np.int64)
    frame = _string_frame(columns, rows)
    if geometry is None:
        geometry = np.full(count, None, dtype=object)
    geoms = shapely.from_wkb(geometry, on_invalid="ignore")
    given = np.array([g is not None for g in geometry], dtype=bool)
    unreadable = np.flatnonzero(given & shapely.is_missing(geoms))
    rejects: list[tuple[int, Any, str, str | None]] = []
    for index in unreadable.tolist():
        try:
            shapely.from_wkb(geometry[index])
            detail = "unknown error"
        except Exception as error:  # shapely.errors.GEOSException and friends
            detail = str(error)
        raw = {h: columns[h][index] for h in header}
        rejects.append(
            (
                index + 1,
                raw,
                f"Feature {index + 1}'s geometry cannot be decoded ({detail}): the shape "
                "is broken beyond repair in the file (几何数据损坏); fix or redraw it in the source.",
                "geometry",
            )
        )
    import geopandas

    keep = np.ones(count, dtype=bool)
    keep[unreadable] = False
    crs = meta.get("crs")
    gdf = geopandas.GeoDataFrame(
        frame.loc[keep].reset_index(drop=True),
        geometry=geopandas.GeoSeries(geoms[keep], crs=crs),
        crs=crs,
    )
    return RawFeatures(gdf, _rejects_frame(rejects), reported, name, notes, layer=read_layer)
