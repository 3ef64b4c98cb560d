"""Tests for etl.readers: CSV/XLSX/Open311 JSON tables and GeoJSON/Shapefile/GeoPackage layers.

Every file is written here into tmp_path from known content, in the encodings and shapes cities really
hand over (GBK from Excel, UTF-8 with BOM, GB18030, cut-off exports...), then read back.  Row numbers are
checked against an independent count (Python's csv module's line numbers) and every test checks that
no data row went missing: frame + rejects = data rows.  No mocks.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import openpyxl
import pandas as pd
import pytest
from shapely.geometry import Point, Polygon

from etl.readers import (
    REJECT_COLUMNS,
    STRING_DTYPE,
    RawFeatures,
    RawTable,
    SourceError,
    detect_encoding,
    read_features,
    read_table,
)

HEADER = ["案件编号", "问题来源", "大类", "小类", "上报时间", "经度", "纬度"]
ROWS = [
    [
        "370303001001001",
        "监督员上报",
        "市容环境",
        "暴露垃圾",
        "2024-05-01 08:30:00",
        "118.054312",
        "36.813201",
    ],
    ["370303001001002", "公众举报", "宣传广告", "违章张贴", "2024-05-01 09:05:12", "118.061234", "36.801188"],
    [
        "370305002000017",
        "12345热线",
        "街面秩序",
        "占道经营",
        "2024-05-02 17:45:00",
        "118.301200",
        "36.826600",
    ],
]
GB18030_ONLY = "𠀀"  # CJK Extension B: a four-byte GB18030 sequence, not in GBK


def csv_text(rows: list[list[str]], delimiter: str = ",", header: list[str] = HEADER, end: str = "\n") -> str:
    """Plain CSV text (values without delimiters, quotes or line breaks)."""
    return "".join(delimiter.join(r) + end for r in [header, *rows])


def write(tmp_path: Path, name: str, data: bytes | str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode(encoding) if isinstance(data, str) else data)
    return path


def values(table: RawTable) -> list[list[str | None]]:
    """The frame's source columns as lists of Python values (NaN -> None)."""
    frame = table.frame.drop(columns=["_row"] + (["geometry"] if "geometry" in table.frame else []))
    return [[None if pd.isna(v) else v for v in row] for row in frame.itertuples(index=False)]


def assert_shape(table: RawTable) -> None:
    """The contract every RawTable keeps: string columns, int64 _row, the rejects' columns."""
    assert table.frame["_row"].dtype == np.int64
    for name in table.frame.columns:
        if name not in ("_row", "geometry"):
            assert table.frame[name].dtype == STRING_DTYPE, name
    assert tuple(table.rejects.columns) == REJECT_COLUMNS
    assert table.rejects["_row"].dtype == np.int64
    for reason in table.rejects["reason"]:
        assert isinstance(reason, str) and len(reason) > 30


# ------------------------------------------------------------------------------------------ encodings


@pytest.mark.parametrize(
    ("encoding", "expected", "extra_char"),
    [
        ("utf-8", "utf-8", ""),
        ("utf-8-sig", "utf-8-sig", ""),
        ("gbk", "gbk", ""),
        ("gb18030", "gb18030", GB18030_ONLY),
    ],
)
def test_chinese_csv_round_trips_in_each_encoding(
    tmp_path: Path, encoding: str, expected: str, extra_char: str
) -> None:
    rows = [r.copy() for r in ROWS]
    rows[1][1] = "公众举报" + extra_char
    path = write(tmp_path, "cases.csv", csv_text(rows), encoding)
    table = read_table(path)
    assert_shape(table)
    assert table.encoding == expected
    assert list(table.frame.columns) == ["_row", *HEADER]  # no BOM left on 案件编号
    assert values(table) == rows
    assert table.frame["_row"].tolist() == [2, 3, 4]
    assert table.rejects.empty
    assert table.source_name == "cases.csv"
    assert any(expected in note for note in table.notes)


def test_gb18030_only_character_is_detected_as_gb18030() -> None:
    text = "案件编号,地址\n1,张店区" + GB18030_ONLY + "路\n"
    with pytest.raises(UnicodeEncodeError):
        text.encode("gbk")
    assert detect_encoding(text.encode("gb18030")) == "gb18030"
    assert detect_encoding(text.replace(GB18030_ONLY, "").encode("gb18030")) == "gbk"
    assert detect_encoding(text.encode("utf-8")) == "utf-8"
    assert detect_encoding(text.encode("utf-8-sig")) == "utf-8-sig"
    assert detect_encoding("案件编号\tx\n".encode("utf-16")) == "utf-16"
    assert detect_encoding(b"plain ascii,1\n") == "utf-8"


def test_utf8_cut_inside_its_last_character_is_still_utf8() -> None:
    # The tail b"\xe4\xb8" also decodes as GBK; a cut-off UTF-8 export must not turn into mojibake.
    data = "a,b\n1,张店\n2,临淄".encode()[:-1]
    assert detect_encoding(data) == "utf-8"


def test_wrong_explicit_encoding_raises_naming_the_detected_one(tmp_path: Path) -> None:
    path = write(tmp_path, "gbk_cases.csv", csv_text(ROWS), "gbk")
    with pytest.raises(SourceError) as caught:
        read_table(path, encoding="utf-8")
    message = str(caught.value)
    assert "gbk_cases.csv" in message and "not valid utf-8" in message and "--encoding gbk" in message

    path = write(tmp_path, "gb18030_cases.csv", csv_text(ROWS) + f"9,{GB18030_ONLY},a,b,c,d,e\n", "gb18030")
    with pytest.raises(SourceError, match="--encoding gb18030"):
        read_table(path, encoding="gbk")
    with pytest.raises(SourceError, match="not a known text encoding"):
        read_table(path, encoding="no-such-codec")


def test_explicit_encoding_that_fits_is_used(tmp_path: Path) -> None:
    path = write(tmp_path, "cases.csv", csv_text(ROWS), "gbk")
    table = read_table(path, encoding="GBK")
    assert table.encoding == "gbk"
    assert values(table) == ROWS
    # utf-8 given for a file with a BOM: the BOM is not part of the first header.
    path = write(tmp_path, "bom.csv", csv_text(ROWS), "utf-8-sig")
    table = read_table(path, encoding="utf-8")
    assert table.encoding == "utf-8-sig" and table.frame.columns[1] == "案件编号"


def test_undecodable_bytes_reject_only_their_line(tmp_path: Path) -> None:
    damaged = "370303001009999,公众举报,".encode("gbk") + b"\xff\xfe\xff" + b",x,2024,1,2\n"
    data = csv_text(ROWS[:1]).encode("gbk") + damaged + csv_text(ROWS[1:]).split("\n", 1)[1].encode("gbk")
    path = write(tmp_path, "damaged.csv", data)
    table = read_table(path)
    assert_shape(table)
    assert table.encoding == "gbk"
    assert values(table) == ROWS
    assert table.frame["_row"].tolist() == [2, 4, 5]
    assert table.rejects["_row"].tolist() == [3]
    reject = table.rejects.iloc[0]
    assert "not valid gbk" in reject["reason"] and "乱码" in reject["reason"]
    assert "\\xff\\xfe\\xff" in reject["raw"] and "公众举报" in reject["raw"]


def test_file_in_no_known_encoding_names_what_was_tried(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    path = write(tmp_path, "noise.csv", rng.integers(128, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(SourceError) as caught:
        read_table(path)
    message = str(caught.value)
    assert "noise.csv" in message
    assert "UTF-8" in message and "GBK" in message and "GB18030" in message and "--encoding" in message


# ------------------------------------------------------------------------------------ CSV structure


@pytest.mark.parametrize(
    ("delimiter", "name"), [(";", "semicolon"), ("\t", "tab"), ("|", "bar"), (",", "comma")]
)
def test_delimiters_are_sniffed(tmp_path: Path, delimiter: str, name: str) -> None:
    rows = [r.copy() for r in ROWS]
    if delimiter != ",":
        rows[0][2] = "市容环境, 垃圾"  # a comma inside a value of a non-comma file (unquoted there)
    path = write(tmp_path, "cases.txt", csv_text(rows, delimiter), "utf-8")
    table = read_table(path)
    assert values(table) == rows
    assert any(name in note for note in table.notes)


def test_explicit_delimiter_and_single_column(tmp_path: Path) -> None:
    path = write(tmp_path, "codes.csv", "编码\n370303\n370305\n")
    table = read_table(path)
    assert values(table) == [["370303"], ["370305"]]
    path = write(tmp_path, "semi.csv", "a;b\n1;2\n")
    assert values(read_table(path, delimiter=";")) == [["1", "2"]]
    with pytest.raises(SourceError, match="delimiter"):
        read_table(path, delimiter=";;")


def test_embedded_newlines_keep_row_numbers(tmp_path: Path) -> None:
    text = (
        "案件编号,问题描述,地址\r\n"
        '1,"垃圾堆放\r\n已两天",张店区\r\n'  # lines 2-3
        '2,"广告""牛皮癣""\n贴满\n电线杆",临淄区\r\n'  # lines 4-6, with escaped quotes
        "3,占道经营,周村区\r\n"  # line 7
        "\r\n"  # line 8: blank
        '4,"",淄川区\r\n'  # line 9: empty quoted value
    )
    path = write(tmp_path, "multi.csv", text)
    table = read_table(path)
    assert_shape(table)
    assert table.frame["_row"].tolist() == [2, 4, 7, 9]
    assert values(table) == [
        ["1", "垃圾堆放\r\n已两天", "张店区"],
        ["2", '广告"牛皮癣"\n贴满\n电线杆', "临淄区"],
        ["3", "占道经营", "周村区"],
        ["4", None, "淄川区"],
    ]
    assert any("blank" in note and "line 8" in note for note in table.notes)


def test_rows_match_pythons_csv_module(tmp_path: Path) -> None:
    """An independent oracle: Python's csv module's records and line numbers, on awkward input."""
    text = (
        "id,text,note\n"
        '1,ab"c,plain\n'  # a quote inside an unquoted value is an ordinary character
        '2,"q"r,after\n'  # text after a closing quote joins the value
        '3,"x,""y""\rz",lone-cr\r'  # a lone CR inside quotes, then as a line break
        "4,last,row\n"
    )
    path = write(tmp_path, "odd.csv", text)
    table = read_table(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    expected_rows, expected_lines, previous = [], [], 0
    for record in reader:
        expected_rows.append(record)
        expected_lines.append(previous + 1)
        previous = reader.line_num
    assert values(table) == expected_rows[1:]
    assert table.frame["_row"].tolist() == expected_lines[1:]
    assert table.rejects.empty


def test_random_awkward_csvs_agree_with_pythons_csv_module(tmp_path: Path) -> None:
    """250 seeded random files of quotes, doubled quotes, stray quotes, CR/LF/CRLF inside and outside
    quotes, wrong field counts and missing final line breaks: every record Python's csv module finds is
    in the frame (same values, same first line) or a reject at that line, and nothing else is."""
    rng = np.random.default_rng(20240501)
    pieces = ["a", "张", "", " ", ",", '"', '""', "\n", "\r\n", "\r", "x y", GB18030_ONLY]

    def value() -> str:
        if rng.random() < 0.7:
            return str(rng.choice(["a", "张店", "", "1.5", "x y"]))
        inner = "".join(str(rng.choice(pieces)) for _ in range(rng.integers(0, 5)))
        return '"' + inner.replace('"', '""') + '"' if rng.random() < 0.8 else inner

    path = tmp_path / "random.csv"
    for _ in range(250):  # about 2 s
        width = int(rng.integers(1, 5))
        lines = [",".join(f"h{i}" for i in range(width))]
        for _ in range(rng.integers(0, 9)):
            count = width if rng.random() < 0.8 else int(rng.integers(1, width + 3))
            lines.append(",".join(value() for _ in range(count)))
        end = str(rng.choice(["\n", "\r\n"]))
        text = end.join(lines) + (end if rng.random() < 0.7 else "")
        path.write_bytes(text.encode())
        table = read_table(path, delimiter=",")

        physical = text.splitlines()
        reader = csv.reader(io.StringIO(text, newline=""))
        records, previous = [], 0
        for record in reader:
            records.append((previous + 1, record))
            previous = reader.line_num
        rows, lines_of_rows, rejected = [], [], []
        for line, record in records[1:]:
            if not record or (width > 1 and len(record) == 1 and not physical[line - 1].strip()):
                continue  # blank or spaces-only: not a data row
            if len(record) != width:
                rejected.append(line)
            elif any(record):
                rows.append([v or None for v in record])
                lines_of_rows.append(line)
        got_rows, got_lines = values(table), table.frame["_row"].tolist()
        got_rejected = table.rejects["_row"].tolist()
        if table.rejects["reason"].str.contains("never closed").any():
            # Python's csv accepts a record left open at the end of the file; the reader rejects it.
            last = records[-1][0]
            assert got_rejected[-1] == last, text
            if lines_of_rows and lines_of_rows[-1] == last:
                rows, lines_of_rows = rows[:-1], lines_of_rows[:-1]
            if not rejected or rejected[-1] != last:
                rejected.append(last)
        assert got_lines == lines_of_rows, text
        assert got_rows == rows, text
        assert got_rejected == rejected, text


QUICK_AND_EXACT_FILES = {
    "unquoted": ("id,name,x\n1,张店,1.5\n2,,2\n3,淄川,\n", True),
    "all quoted": ('"id","name","x"\n"1","张,店","1.5"\r\n"2","","2"\n\n"3","a ""q"" b",3\n', True),
    "stray quotes": ('id,name,x\n1,ab"c,1\n2,"q"r,2\n3,"x,""y""",3', True),
    "text after a closing quote": ('id,name,x\n1,"q"r,1\n2,"x,""y""",2\r\n', True),
    "embedded newline": ('id,name,x\n1,"two\nlines",1\n2,"cr\r\nlf",2\n3,c,3\n', False),
    "embedded quote and break": ('id,name,x\n1,"say ""hi""\nthen",1\n2,b,2\n', False),
    "wrong counts, blanks, spaces, cut": (
        'id,name,x\n1,a,1\n2,b\n\n   \n3,"c",3,extra\n,,\n4,"d",4\n5,e',
        False,  # wrong field counts: pyarrow sends it to the exact scan
    ),
    "unclosed quote at the end": ('id,name,x\n1,a,1\n2,"b,2\n3,c,3\n', False),
    "unclosed quote on the last line, blank lines after": ('id,name,x\n1,a,1\n2,"b,2\n\n\n', False),
    "quoted break in a value, blank line inside": ('id,name,x\n1,"a\n\nb",1\n2,c,2\n', False),
    "quoted break in the header": ('id,"na\nme",x\n1,a,1\n2,b,2\n', False),
}


@pytest.mark.parametrize("name", sorted(QUICK_AND_EXACT_FILES))
def test_quick_and_exact_csv_scans_read_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """The quick scan (a record per line, no quotes looked at, no field counting; pyarrow checks both,
    falling back to the exact scan when either is wrong) and the exact scan give the same frame, rejects,
    row numbers and notes.  A plain file never needs the exact scan; the exact path is forced by making
    the quick scan decline, as it does for a file with undecodable bytes."""
    from etl import readers

    text, plain = QUICK_AND_EXACT_FILES[name]
    path = write(tmp_path, "cases.csv", text)
    exact_scan = readers._scan
    whole_file_scans: list[int] = []

    def counting_scan(buffer: bytes, delimiter: int, marked: bool) -> Any:
        if len(buffer) == len(text.encode()):
            whole_file_scans.append(1)
        return exact_scan(buffer, delimiter, marked)

    monkeypatch.setattr(readers, "_scan", counting_scan)
    quick = read_table(path)
    assert (not whole_file_scans) is plain
    monkeypatch.setattr(readers, "_scan_quick", lambda buffer, delimiter, marked: None)
    exact = read_table(path)
    assert_shape(quick)
    pd.testing.assert_frame_equal(quick.frame, exact.frame)
    pd.testing.assert_frame_equal(quick.rejects, exact.rejects)
    assert quick.notes == exact.notes
    assert quick.rows_read == exact.rows_read


def test_wrong_field_counts_and_a_cut_off_last_line_become_rejects(tmp_path: Path) -> None:
    text = (
        csv_text(ROWS)
        + (
            "370303001001004,公众举报,市容环境,暴露垃圾,2024-05-03 10:00:00,118.05,36.81,多余\n"  # line 5: 8 fields
            "370303001001005,公众举报,市容环境\n"  # line 6: 3 fields
            "370303001001006,公众举报,市容环境,暴露垃圾,2024-05-03 11:00:00,118.06,36.82\n"  # line 7: fine
            '370303001001007,"公众举报,市容环境,暴露'  # line 8: cut off inside a quoted value
        )
    )
    path = write(tmp_path, "cut.csv", text, "gbk")
    table = read_table(path)
    assert_shape(table)
    assert table.frame["_row"].tolist() == [2, 3, 4, 7]
    assert table.frame["案件编号"].tolist()[-1] == "370303001001006"
    rejects = table.rejects.set_index("_row")
    assert rejects.index.tolist() == [5, 6, 8]
    assert (
        "8 fields but the header has 7" in rejects.loc[5, "reason"]
        and "字段数不符" in rejects.loc[5, "reason"]
    )
    assert "3 fields but the header has 7" in rejects.loc[6, "reason"]
    assert "never closed" in rejects.loc[8, "reason"] and "文件被截断" in rejects.loc[8, "reason"]
    assert rejects.loc[8, "raw"].startswith("370303001001007,")
    assert rejects["field"].isna().all()
    data_lines = text.count("\n")  # 8 lines, the last without a line break; minus the header
    assert len(table.frame) + len(table.rejects) == data_lines


def test_last_line_with_too_few_fields_is_called_truncated(tmp_path: Path) -> None:
    text = csv_text(ROWS) + "370303001001009,公众举报,市容环境,暴露垃圾,2024-05-0"
    table = read_table(write(tmp_path, "cut.csv", text))
    assert table.frame["_row"].tolist() == [2, 3, 4]
    (reason,) = table.rejects["reason"].tolist()
    assert "5 of the header's 7 fields" in reason and "cut off" in reason
    assert table.rejects["_row"].tolist() == [5]


def test_unmatched_quote_swallowing_lines_is_one_reject_that_says_so(tmp_path: Path) -> None:
    text = 'a,b\n1,"oops\n2,x\n3,y\n'
    table = read_table(write(tmp_path, "quote.csv", text))
    assert table.frame.empty
    assert table.rejects["_row"].tolist() == [2]
    assert "lines 2-4" in table.rejects["reason"][0] and "unmatched quote" in table.rejects["reason"][0]


def test_blank_empty_and_whitespace_rows_are_skipped_with_notes(tmp_path: Path) -> None:
    text = "a,b,c\n1,2,3\n\n,,\n   \n4,5,6\n,,\n\n"
    table = read_table(write(tmp_path, "gaps.csv", text))
    assert values(table) == [["1", "2", "3"], ["4", "5", "6"]]
    assert table.frame["_row"].tolist() == [2, 6]
    assert table.rejects.empty
    notes = " ".join(table.notes)
    assert "blank" in notes and "every field empty" in notes and "only spaces" in notes


def test_headers_are_cleaned_and_made_unique(tmp_path: Path) -> None:
    text = " 大类 ,大类,,_row,c,\n1,2,3,4,5,\n"
    table = read_table(write(tmp_path, "heads.csv", text, "utf-8-sig"))
    assert list(table.frame.columns) == ["_row", "大类", "大类_2", "column_3", "_row_source", "c"]
    assert values(table) == [["1", "2", "3", "4", "5"]]
    assert len(table.notes) >= 4


def test_values_are_kept_verbatim_as_text(tmp_path: Path) -> None:
    text = "code,zip,when,flag,null\n0370,00123,2024/5/1 8:30,TRUE,NULL\n3.70303001001001e14, 1 ,x,NA,\n"
    table = read_table(write(tmp_path, "text.csv", text))
    assert values(table) == [
        ["0370", "00123", "2024/5/1 8:30", "TRUE", "NULL"],
        ["3.70303001001001e14", " 1 ", "x", "NA", None],
    ]


def test_header_only_empty_and_missing_files(tmp_path: Path) -> None:
    table = read_table(write(tmp_path, "header.csv", ",".join(HEADER)))
    assert table.frame.empty and list(table.frame.columns) == ["_row", *HEADER]
    assert any("no data rows" in note for note in table.notes)
    with pytest.raises(SourceError, match=r"empty\.csv' is empty"):
        read_table(write(tmp_path, "empty.csv", b""))
    with pytest.raises(SourceError, match="does not exist"):
        read_table(tmp_path / "missing.csv")
    with pytest.raises(SourceError, match=r"\.xls\)"):
        read_table(write(tmp_path, "old.xls", b"\xd0\xcf\x11\xe0"))
    with pytest.raises(SourceError, match="read_features"):
        read_table(write(tmp_path, "layer.geojson", "{}"))


def test_million_row_csv_reads_fast(tmp_path: Path) -> None:
    n = 1_000_000
    sources = np.array(["监督员上报", "公众举报", "12345热线"])
    i = np.arange(n)
    lines = (
        pd.Series(np.char.add("3703030010", np.char.zfill(i.astype(str), 5)), dtype=object)
        + ","
        + pd.Series(sources[i % 3])
        + ",市容环境,暴露垃圾,2024-05-01 08:30:00,118.054312,36.813201"
    )
    path = tmp_path / "million.csv"
    path.write_bytes((",".join(HEADER) + "\n" + "\n".join(lines.tolist()) + "\n").encode())
    started = time.perf_counter()
    table = read_table(path)
    elapsed = time.perf_counter() - started
    print(f"\nread_table: {n:,} rows, {path.stat().st_size / 1e6:.0f} MB in {elapsed:.2f} s")
    assert len(table.frame) == n and table.rejects.empty
    assert table.frame["_row"].iloc[-1] == n + 1
    assert table.frame["案件编号"].iloc[12345] == "370303001012345"
    assert table.frame["问题来源"].iloc[2] == "12345热线"


# ------------------------------------------------------------------------------------------------ XLSX


def make_workbook(path: Path) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "案件"
    sheet.append(HEADER)
    sheet.append(
        [
            370303001001001,
            "监督员上报",
            "市容环境",
            "暴露垃圾",
            dt.datetime(2024, 5, 1, 8, 30),
            118.054312,
            36.8,
        ]
    )
    sheet.append(
        [370303001001002.0, "公众举报", None, None, dt.datetime(2024, 5, 1, 9, 5, 12), 118.0, "36.80"]
    )
    sheet.append([])  # an empty row inside the data
    sheet.append(
        ["370305002000017", "12345热线", "街面秩序", "占道经营", dt.date(2024, 5, 2), 0.1 + 0.2, True]
    )
    for _ in range(3):
        sheet.append([None] * 7)  # formatted but empty rows after the data
    other = workbook.create_sheet("部件")
    other.append(["部件编码", "名称"])
    other.append([3703030101, "井盖"])
    workbook.save(path)


def test_xlsx_numbers_dates_and_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "cases.xlsx"
    make_workbook(path)
    table = read_table(path)
    assert_shape(table)
    assert table.encoding is None
    assert list(table.frame.columns) == ["_row", *HEADER]
    assert table.frame["_row"].tolist() == [2, 3, 5]
    assert values(table) == [
        [
            "370303001001001",
            "监督员上报",
            "市容环境",
            "暴露垃圾",
            "2024-05-01 08:30:00",
            "118.054312",
            "36.8",
        ],
        ["370303001001002", "公众举报", None, None, "2024-05-01 09:05:12", "118", "36.80"],
        # A date cell (date format, no time) reads as the date it shows.
        ["370305002000017", "12345热线", "街面秩序", "占道经营", "2024-05-02", "0.3", "true"],
    ]
    notes = " ".join(table.notes)
    assert "部件" in notes and "row 4" in notes


def test_xlsx_sheet_selection(tmp_path: Path) -> None:
    path = tmp_path / "cases.xlsx"
    make_workbook(path)
    for sheet in ("部件", 1):
        table = read_table(path, sheet=sheet)
        assert values(table) == [["3703030101", "井盖"]]
    with pytest.raises(SourceError, match="its sheets are: 案件, 部件"):
        read_table(path, sheet="网格")
    with pytest.raises(SourceError, match="counting from 0"):
        read_table(path, sheet=2)


def test_xlsx_header_below_blank_rows_and_unnamed_columns(tmp_path: Path) -> None:
    path = tmp_path / "offset.xlsx"
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet["B3"], sheet["C3"] = "案件编号", "身份证号"
    sheet["B4"], sheet["C4"], sheet["E4"] = "1", 110101199001011234, "备注在无表头列"
    workbook.save(path)
    table = read_table(path)
    assert list(table.frame.columns) == ["_row", "案件编号", "身份证号", "column_E"]
    assert table.frame["_row"].tolist() == [4]
    notes = " ".join(table.notes)
    assert "row 3" in notes and "15 significant digits" in notes and "column_E" in notes


def test_damaged_xlsx_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"not a readable \.xlsx"):
        read_table(write(tmp_path, "broken.xlsx", b"PK\x03\x04 not really a zip"))


# ------------------------------------------------------------------------------------------------ JSON

OPEN311 = [
    {
        "service_request_id": "638344",
        "status": "open",
        "service_name": "暴露垃圾",
        "service_code": "0101",
        "description": "小区门口垃圾堆放",
        "requested_datetime": "2024-05-01T08:30:00+08:00",
        "address": "张店区华光路",
        "lat": 36.813201,
        "long": 118.054312,
        "media_url": None,
    },
    {
        "service_request_id": 638345,
        "status": "closed",
        "lat": 36.8,
        "long": 118,
        "attributes": {"楼层": [1, 2]},
    },
    "not a request",
    {},
]


def test_open311_array(tmp_path: Path) -> None:
    path = write(tmp_path, "requests.json", json.dumps(OPEN311, ensure_ascii=False, indent=2))
    table = read_table(path)
    assert_shape(table)
    assert table.encoding == "utf-8"
    assert table.frame["_row"].tolist() == [1, 2]
    first, second = table.frame.iloc[0], table.frame.iloc[1]
    assert first["service_request_id"] == "638344" and first["lat"] == "36.813201"
    assert first["requested_datetime"] == "2024-05-01T08:30:00+08:00"
    assert pd.isna(first["media_url"]) and pd.isna(first["attributes"])
    assert second["service_request_id"] == "638345" and second["long"] == "118"
    assert json.loads(second["attributes"]) == {"楼层": [1, 2]}
    assert table.rejects["_row"].tolist() == [3, 4]
    assert "not a request object" in table.rejects["reason"][0]
    assert len(table.frame) + len(table.rejects) == len(OPEN311)


def test_open311_wrapped_object_and_gbk(tmp_path: Path) -> None:
    document = {"service_requests": OPEN311[:2]}
    table = read_table(write(tmp_path, "wrapped.json", json.dumps(document, ensure_ascii=False), "gbk"))
    assert table.encoding == "gbk"
    assert table.frame["service_name"].tolist()[0] == "暴露垃圾"
    with pytest.raises(SourceError, match="'requests' or 'service_requests'"):
        read_table(write(tmp_path, "other.json", '{"data": []}'))


def test_truncated_json_says_where_it_broke(tmp_path: Path) -> None:
    text = json.dumps(OPEN311[:2], ensure_ascii=False, indent=2)
    cut = text[: text.index('"closed"') + 4]
    path = write(tmp_path, "cut.json", cut)
    with pytest.raises(SourceError) as caught:
        read_table(path)
    message = str(caught.value)
    line = cut.count("\n") + 1
    assert "cut.json" in message and f"line {line}, column" in message and "cut off" in message


# -------------------------------------------------------------------------------------------- features


def test_geojson_null_invalid_and_unreadable_geometries(tmp_path: Path) -> None:
    collection = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"名称": "甲", "编号": 370303001001001, "时间": "2024-05-01 08:30:00"},
                "geometry": None,
            },
            {
                "type": "Feature",
                "properties": {"名称": "乙", "编号": 2},
                "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]},
            },  # cannot be a ring
            {
                "type": "Feature",
                "properties": {"名称": "丙", "编号": 3.5},
                "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]},
            },  # bow-tie
            {
                "type": "Feature",
                "properties": {"名称": "丁", "编号": 4},
                "geometry": {"type": "Point", "coordinates": [118.05, 36.81]},
            },
        ],
    }
    path = write(tmp_path, "grid.geojson", json.dumps(collection, ensure_ascii=False))
    layer = read_features(path)
    assert isinstance(layer, RawFeatures) and isinstance(layer.frame, gpd.GeoDataFrame)
    assert_shape(layer)
    assert layer.frame.crs.to_epsg() == 4326
    assert layer.frame["_row"].tolist() == [1, 3, 4]
    assert values(layer) == [
        ["甲", "370303001001001", "2024-05-01 08:30:00"],
        ["丙", "3.5", None],
        ["丁", "4", None],
    ]
    assert layer.frame.geometry.iloc[0] is None
    assert not layer.frame.geometry.iloc[1].is_valid  # kept: validation decides later
    assert layer.frame.geometry.iloc[2].equals(Point(118.05, 36.81))
    assert layer.rejects["_row"].tolist() == [2]
    reject = layer.rejects.iloc[0]
    assert reject["field"] == "geometry" and "cannot be decoded" in reject["reason"]
    assert reject["raw"]["名称"] == "乙"


def test_truncated_geojson_is_a_source_error(tmp_path: Path) -> None:
    path = write(tmp_path, "cut.geojson", '{"type":"FeatureCollection","features":[{"type":"Feature",')
    with pytest.raises(SourceError, match="cut.geojson"):
        read_features(path)


def sample_layer(crs: int = 4527) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"名称": ["张店区城管局", "临淄区"], "编码": ["370303", "370305"], "面积": [1.5, None]},
        geometry=[Polygon([(0, 0), (1, 0), (1, 1), (0, 0)]), None],
        crs=crs,
    )


def test_shapefile_in_gbk_without_cpg(tmp_path: Path) -> None:
    path = tmp_path / "districts.shp"
    sample_layer().to_file(path, encoding="gbk", engine="pyogrio")
    cpg = path.with_suffix(".cpg")
    assert cpg.read_text().strip().upper() == "GBK"
    cpg.unlink()  # as so often, the .cpg did not survive the trip

    layer = read_features(path, encoding="gbk")
    assert layer.encoding == "gbk"
    assert values(layer) == [["张店区城管局", "370303", "1.5"], ["临淄区", "370305", None]]
    assert layer.frame.crs.to_epsg() == 4527
    assert layer.frame["_row"].tolist() == [1, 2]
    assert layer.frame.geometry.iloc[1] is None

    detected = read_features(path)
    assert detected.encoding == "gbk"
    assert values(detected) == values(layer)
    assert any(".cpg" in note for note in detected.notes)

    with pytest.raises(SourceError, match="--encoding gbk"):
        read_features(path, encoding="utf-8")


def test_shapefile_with_cpg_and_missing_parts(tmp_path: Path) -> None:
    path = tmp_path / "districts.shp"
    sample_layer().to_file(path, encoding="gbk", engine="pyogrio")
    layer = read_features(path)
    assert layer.encoding == "gbk" and values(layer)[0][0] == "张店区城管局"
    path.with_suffix(".cpg").write_text("UTF-8")  # a .cpg that lies
    with pytest.raises(SourceError, match=r"not valid utf-8 \(as its \.cpg says\); it looks like gbk"):
        read_features(path)
    assert values(read_features(path, encoding="gbk"))[0][0] == "张店区城管局"
    path.with_suffix(".dbf").unlink()
    with pytest.raises(SourceError, match=r"missing its \.dbf"):
        read_features(path)


def test_geopackage_layers(tmp_path: Path) -> None:
    path = tmp_path / "city.gpkg"
    sample_layer().to_file(path, layer="网格", engine="pyogrio")
    points = gpd.GeoDataFrame({"部件编码": ["3703030101"]}, geometry=[Point(118.05, 36.81)], crs=4326)
    points.to_file(path, layer="部件", engine="pyogrio")

    first = read_features(path)
    assert first.layer == "网格" and len(first.frame) == 2
    assert any("部件" in note for note in first.notes)

    chosen = read_features(path, layer="部件")
    assert chosen.layer == "部件"
    assert chosen.frame.crs.to_epsg() == 4326
    assert values(chosen) == [["3703030101"]]
    assert chosen.frame["_row"].tolist() == [1]

    with pytest.raises(SourceError) as caught:
        read_features(path, layer="案件")
    assert "city.gpkg" in str(caught.value) and "网格, 部件" in str(caught.value)


def test_unsupported_layer_format(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"\.geojson, \.shp and \.gpkg"):
        read_features(write(tmp_path, "layer.kml", "<kml/>"))
