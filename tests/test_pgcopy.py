"""The binary COPY encoder (etl/pgcopy.py): what the server reads back is what was sent, NULLs included."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd
import pytest
from sqlalchemy import text

from etl.bulk import copy_frame_binary
from etl.store import raw_connection
from tests.conftest import SuiteStore


def test_every_type_reads_back_as_sent(store: SuiteStore) -> None:
    frame = pd.DataFrame({
        "code": pd.array(["370303", None, "", "街道 ä"], dtype="string"),
        "day": pd.to_datetime(["2025-01-01", "1999-12-31", None, "2026-02-28"]),
        "count4": [1.0, -2.0, 2_000_000_000.0, 0.0],
        "count2": pd.array([1, None, -3, 32_000], dtype="Int16"),
        "big": [2**62, -1, 0, 613_196_575_764_742_143],
        "share": [0.5, -1e-9, 1e300, float("nan")],
        "flag": [True, False, True, False],
        "maybe": pd.array([True, None, False, None], dtype="boolean"),
        "at": pd.to_datetime(["2025-01-01 08:00:00.123456", None, "1970-01-01 00:00:00.0", "2262-04-11 00:00:00.0"],
                             utc=True),
    })
    with store.writer.begin() as conn:
        conn.execute(text(
            "CREATE TEMP TABLE copied (code text, day date, count4 integer, count2 smallint, big bigint,"
            " share double precision, flag boolean, maybe boolean, at timestamptz) ON COMMIT DROP"))
        written = copy_frame_binary(raw_connection(conn), "copied", frame, list(frame.columns))
        rows = conn.execute(text("SELECT * FROM copied")).all()
    assert written == 4
    assert rows[0] == ("370303", date(2025, 1, 1), 1, 1, 2**62, 0.5, True, True,
                       datetime(2025, 1, 1, 8, 0, 0, 123456, tzinfo=UTC))
    assert rows[1][0] is None and rows[1][1] == date(1999, 12, 31) and rows[1][3] is None and rows[1][8] is None
    assert [row[7] for row in rows] == [True, None, False, None]  # nullable booleans (the on-time flags)
    assert rows[2][0] == "" and rows[2][1] is None and rows[2][2] == 2_000_000_000 and rows[2][5] == 1e300
    assert rows[3][0] == "街道 ä" and rows[3][1] == date(2026, 2, 28) and rows[3][3] == 32_000
    # A pandas column's missing values (NaN included) are NULL, as everywhere in pandas.
    assert rows[3][4] == 613_196_575_764_742_143 and rows[3][5] is None


def test_a_column_of_a_type_it_cannot_encode_is_refused(store: SuiteStore) -> None:
    with store.writer.begin() as conn:
        conn.execute(text("CREATE TEMP TABLE odd (payload jsonb) ON COMMIT DROP"))
        with pytest.raises(ValueError, match="payload"):
            copy_frame_binary(raw_connection(conn), "odd", pd.DataFrame({"payload": ["{}"]}), ["payload"])


def test_text_of_one_width_rides_in_the_row_block(store: SuiteStore) -> None:
    """Codes of equal length (no NULL) are laid out as fixed-width fields; a column of slices of a bigger
    arrow array, another of mixed widths and one with a NULL take the general path: all read back as sent."""
    import pyarrow as pa

    from etl import pgcopy

    codes = pa.array(["x", "370303001001001", "370303001001002", "370303001002003", "网格"]).slice(1, 3)
    assert pgcopy._equal_width_bytes(codes.cast(pa.binary())) is not None
    frame = pd.DataFrame({
        "grid": pd.Series(pd.arrays.ArrowStringArray(codes)),
        "name": pd.array(["街道一", "街道二", "社区三"], dtype="string"),  # same byte length, CJK
        "mixed": pd.array(["a", "bb", "ccc"], dtype="string"),
        "holed": pd.array(["aa", None, "cc"], dtype="string"),
    })
    with store.writer.begin() as conn:
        conn.execute(text("CREATE TEMP TABLE widths (grid text, name text, mixed text, holed text) ON COMMIT DROP"))
        copy_frame_binary(raw_connection(conn), "widths", frame, list(frame.columns))
        rows = conn.execute(text("SELECT * FROM widths")).all()
    assert rows == [("370303001001001", "街道一", "a", "aa"), ("370303001001002", "街道二", "bb", None),
                    ("370303001002003", "社区三", "ccc", "cc")]
