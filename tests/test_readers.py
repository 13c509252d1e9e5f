"""Readers on files the tests write: every quirk of real Datafiniti files."""

import csv
import gzip
import io
import json
import random
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from datafiniti_loader import ParseError
from datafiniti_loader.read.csvfile import iter_csv_batches
from datafiniti_loader.read.csvrecords import record_chunks
from datafiniti_loader.read.files import read_file
from datafiniti_loader.read.jsonfile import read_json_table


def csv_rows(path: Path, chunk_bytes: int = 1 << 20) -> list[list[str | None]]:
    """Rows as read with both readers' read sizes set to ``chunk_bytes``."""
    batches = iter_csv_batches(path, path.name, block_bytes=chunk_bytes, chunk_bytes=chunk_bytes)
    table = pa.Table.from_batches(list(batches))
    return [list(row.values()) for row in table.to_pylist()]


def reference_rows(data: bytes) -> list[list[str | None]]:
    text = data.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text, newline="")))[1:]
    return [[cell if cell != "" else None for cell in row] for row in rows if row]


def messy_csv(rng: random.Random, rows: int) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["id", "name", "text", "postalCode"])
    for n in range(rows):
        name = "".join(rng.choice('ab "\r\n,\ufffdé') for _ in range(rng.randint(0, 40)))
        writer.writerow(
            [str(n), name, "x" * rng.choice([0, 1, 500, 30_000]), f"{rng.randint(0, 99999):05d}"]
        )
    return out.getvalue().encode()


@pytest.mark.parametrize("chunk_bytes", [64, 1000, 4096, 65536])
def test_record_chunks_cut_only_between_records(chunk_bytes: int) -> None:
    data = messy_csv(random.Random(chunk_bytes), 300)
    chunks = [bytes(chunk) for chunk in record_chunks(io.BytesIO(data), chunk_bytes)]
    assert b"".join(chunks) == data
    for chunk in chunks[:-1]:
        assert chunk.endswith((b"\n", b"\r")) and chunk.count(b'"') % 2 == 0


@pytest.mark.parametrize("chunk_bytes", [512, 4096, 1 << 20])
def test_quoted_crlf_on_block_boundaries_loses_nothing(tmp_path: Path, chunk_bytes: int) -> None:
    """apache/arrow#51368: a quoted CRLF on a block boundary can lose a byte in pyarrow."""
    data = messy_csv(random.Random(7), 2000)
    path = tmp_path / "messy.csv"
    path.write_bytes(data)
    assert csv_rows(path, chunk_bytes) == reference_rows(data)


def test_bom_no_final_newline_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(b'\xef\xbb\xbfid,name\r\n1,"two\r\nlines"\r\n2,last')
    table = pa.Table.from_batches(list(iter_csv_batches(path, "a.csv")))
    assert table.column_names == ["id", "name"]
    assert table.to_pylist() == [{"id": "1", "name": "two\r\nlines"}, {"id": "2", "name": "last"}]


def test_empty_cell_is_null_everything_else_text(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(b'zip,upc,na,empty,quoted\n02134,8.49E+11,N/A,,""\n')
    row = pa.Table.from_batches(list(iter_csv_batches(path, "a.csv"))).to_pylist()[0]
    assert row == {"zip": "02134", "upc": "8.49E+11", "na": "N/A", "empty": None, "quoted": None}


def test_header_only_file_keeps_its_columns(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(b"id,name\r\n")
    batches = list(iter_csv_batches(path, "a.csv"))
    assert batches[0].schema.names == ["id", "name"] and sum(b.num_rows for b in batches) == 0


def test_zero_byte_file_is_no_rows_not_an_error(tmp_path: Path) -> None:
    for name, fmt in (("e.csv", "csv"), ("e.txt", "json")):
        path = tmp_path / name
        path.write_bytes(b"")
        assert sum(b.num_rows for b in read_file(path, name, fmt).batches) == 0


def test_wrong_field_count_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b'id,name,x\r\n1,"a\r\nb",3\r\n2,short\r\n3,c,4\r\n')
    with pytest.raises(
        ParseError, match=r"bad.csv: the record at line 4 has 2 fields, expected 3"
    ) as caught:
        list(iter_csv_batches(path, "bad.csv"))
    assert caught.value.line == 4 and caught.value.file == "bad.csv"


def test_bytes_that_are_not_utf8_are_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("id,name\n1,ok\n2,Andr\xe9\n".encode("latin-1"))
    with pytest.raises(ParseError, match=r"latin1.csv: line 3 is not valid UTF-8"):
        list(iter_csv_batches(path, "latin1.csv"))


def test_replacement_characters_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes("id,name\n1,Andr\ufffde\n".encode())
    assert csv_rows(path) == [["1", "Andr\ufffde"]]


def test_gzip_is_detected_by_magic_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(gzip.compress(b"id,name\n1,x\n"))
    assert csv_rows(path) == [["1", "x"]]


RECORDS = [
    {"id": "a", "reviews": [{"rating": 5, "date": "2017-01-11T15:53:00Z"}], "weight": "1.5 pounds"},
    {"id": "b", "reviews": [], "weight": 1.5, "latitude": "40.7"},
    {"id": "c", "nested": {"deep": {"deeper": [1, 2, {"x": None}]}}, "weight": None},
]


def write_json(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "shape",
    ["lines", "lines_final_newline", "array", "pretty_array", "envelope", "pretty_envelope"],
)
def test_json_shapes_give_the_same_records(tmp_path: Path, shape: str) -> None:
    text = {
        "lines": "\n".join(json.dumps(r) for r in RECORDS),
        "lines_final_newline": "\n".join(json.dumps(r) for r in RECORDS) + "\n",
        "array": json.dumps(RECORDS),
        "pretty_array": json.dumps(RECORDS, indent=2),
        "envelope": json.dumps({"num_found": 3, "total_cost": 3, "records": RECORDS}),
        "pretty_envelope": json.dumps(
            {"num_found": 3, "total_cost": 3, "records": RECORDS}, indent=2
        ),
    }[shape]
    table = read_json_table(write_json(tmp_path, "r.txt", text), "r.txt")
    assert table.num_rows == 3
    assert table.column_names == ["id", "reviews", "weight", "latitude", "nested"]
    rows = table.to_pylist()
    # a field whose type varies keeps every value: strings as they were, others as JSON
    assert [r["weight"] for r in rows] == ["1.5 pounds", "1.5", None]
    assert rows[0]["reviews"][0]["date"] == "2017-01-11T15:53:00Z"  # not a zone-less timestamp
    # a list mixing numbers and objects has no Arrow type: the column keeps the JSON text
    assert json.loads(rows[2]["nested"]) == RECORDS[2]["nested"]


def test_json_dates_stay_strings_on_the_fast_path(tmp_path: Path) -> None:
    lines = [
        json.dumps(
            {"id": n, "dateAdded": "2017-01-11T15:53:00Z", "r": {"d": "2017-01-11T15:53:00.000Z"}}
        )
        for n in range(3)
    ]
    table = read_json_table(write_json(tmp_path, "d.txt", "\n".join(lines)), "d.txt")
    assert table.schema.field("dateAdded").type == pa.string()
    assert table.to_pylist()[0]["r"] == {"d": "2017-01-11T15:53:00.000Z"}


def test_long_json_line(tmp_path: Path) -> None:
    big = {"id": "x", "text": "y" * 600_000, "list": list(range(5000))}
    table = read_json_table(
        write_json(tmp_path, "l.txt", json.dumps(big) + "\n" + json.dumps({"id": "z"})), "l.txt"
    )
    assert table.num_rows == 2 and len(table.column("text")[0].as_py()) == 600_000


def test_truncated_json_line_names_the_record(tmp_path: Path) -> None:
    text = json.dumps({"id": 1}) + "\n" + json.dumps({"id": 2}) + "\n" + '{"id": 3, "name": "cut'
    with pytest.raises(ParseError, match=r"t.txt: record 3 .*not valid JSON") as caught:
        read_json_table(write_json(tmp_path, "t.txt", text), "t.txt")
    assert caught.value.line == 3


def test_csv_named_txt_is_read_as_csv(tmp_path: Path) -> None:
    path = write_json(tmp_path, "odd.txt", "id,name\n1,x\n")
    read = read_file(path, "odd.txt", "json")
    assert read.text and pa.Table.from_batches(list(read.batches)).num_rows == 1


def test_duplicate_header_names_keep_every_column(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_bytes(b"id,name,name,name.1\n1,a,b,c\n")
    table = pa.Table.from_batches(list(iter_csv_batches(path, "dup.csv")))
    assert table.column_names == ["id", "name", "name.1", "name.1.1"]
    assert table.to_pylist() == [{"id": "1", "name": "a", "name.1": "b", "name.1.1": "c"}]


@pytest.mark.parametrize("chunk_bytes", [64, 1024, 1 << 20])
def test_a_quote_inside_an_unquoted_cell_is_kept_literally(
    tmp_path: Path, chunk_bytes: int
) -> None:
    """``5" screen`` breaks quote parity; the reader must still cut no record and lose nothing."""
    rows = ["id,name,x"]
    for i in range(200):
        if i in (50, 120):
            rows.append(f'{i},{i % 9}" screen,x')
        elif i % 7 == 0:
            rows.append(f'{i},"multi\r\nline {i}",y')
        else:
            rows.append(f"{i},plain {i},z")
    data = "\r\n".join(rows).encode()
    path = tmp_path / "stray.csv"
    path.write_bytes(data)
    expected = pd.read_csv(path, dtype=str, keep_default_na=False).values.tolist()
    assert csv_rows(path, chunk_bytes) == [
        [c if c != "" else None for c in row] for row in expected
    ]


def test_a_gzip_bomb_is_refused_at_the_limit_and_the_limit_can_be_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gzip

    import datafiniti_loader.read.files as readers

    monkeypatch.setattr(readers, "GZIP_FLOOR_BYTES", 8 * 1024 * 1024)
    bomb = tmp_path / "bomb.txt"
    with gzip.open(bomb, "wb", compresslevel=9) as out:  # ~200 kB expanding to 200 MB of JSON
        out.write(b'{"a": "')
        for _ in range(200):
            out.write(b" " * (1 << 20))
        out.write(b'"}\n')
    assert bomb.stat().st_size < 400_000
    for fmt in ("json", "csv"):
        with pytest.raises(ParseError, match=r"more than \d\d MB .*over 200x.*MAX_GZIP_RATIO"):
            list(read_file(bomb, "bomb.txt", fmt).batches)
    monkeypatch.setenv("DATAFINITI_MAX_GZIP_RATIO", "5000")  # a genuine file: allow more
    (batch,) = read_file(bomb, "bomb.txt", "json").batches
    assert len(batch.column("a")[0].as_py()) == 200 * (1 << 20)


def test_gzip_within_the_limit_reads_as_the_plain_file(tmp_path: Path, fixture_files) -> None:
    import gzip

    plain = fixture_files["products"][0]
    packed = tmp_path / "p.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    got = pa.Table.from_batches(list(read_file(packed, "p.csv", "csv").batches))
    want = pa.Table.from_batches(list(read_file(plain, "p.csv", "csv").batches))
    assert got.equals(want)


def test_a_record_longer_than_many_chunks_is_read_whole(tmp_path: Path) -> None:
    body = "line\r\n" * 200_000  # 1.2 MB inside one quoted cell, newlines and all
    path = tmp_path / "long.csv"
    path.write_text(f'id,text\r\n1,"{body}"\r\n2,"sh""ort"\r\n3,x\r\n', newline="")
    table = pa.Table.from_batches(list(iter_csv_batches(path, "long.csv", chunk_bytes=4096)))
    assert table.column("text").to_pylist() == [body, 'sh"ort', "x"]
    assert table.column("id").to_pylist() == ["1", "2", "3"]


# The streaming reader and its guards (readers/csvfile.py)

FALLBACK = "read again record by record"


def crlf_at_read_end(block: int, reads_before: int) -> bytes:
    """A CSV whose body puts a quoted CRLF's ``\\r`` last in read ``reads_before`` + 1."""
    filler = b"".join(b"%d,plain,x\r\n" % i for i in range(reads_before * block // 12))
    prefix = filler + b'999,"'
    target = (reads_before + 1) * block - 1  # where the \r must fall within the body
    pad = target - len(prefix) - 1
    assert pad > 0
    return b"id,text,more\r\n" + prefix + b"z" * pad + b'A\r\nB",x\r\n1000,last,y\r\n'


@pytest.mark.parametrize("reads_before", [0, 3])
def test_a_quoted_crlf_split_between_two_reads_keeps_its_newline(
    tmp_path: Path, reads_before: int, caplog: pytest.LogCaptureFixture
) -> None:
    """apache/arrow#51368, on the streaming path itself (no fallback to the careful reader)."""
    data = crlf_at_read_end(1024, reads_before)
    path = tmp_path / "split.csv"
    path.write_bytes(data)
    caplog.set_level("DEBUG", logger="datafiniti_loader")
    batches = list(iter_csv_batches(path, path.name, block_bytes=1024))
    assert FALLBACK not in caplog.text
    values = pa.Table.from_batches(batches).column("text").to_pylist()
    assert values[-2].endswith("A\r\nB") and values[-1] == "last"
    rows = [list(row.values()) for row in pa.Table.from_batches(batches).to_pylist()]
    assert rows == reference_rows(data)


# The rest of a file comes as Python bytes (gzip) or as Arrow buffers (plain files).
_RESTS = [io.BytesIO, pa.BufferReader]


@pytest.mark.parametrize("rest", _RESTS)
def test_reads_handed_to_pyarrow_never_end_with_a_carriage_return(rest: Any) -> None:
    from datafiniti_loader.read.csvfile import _NoFinalCR

    data = bytes(random.Random(3).choice(b'ab"\r\n,') for _ in range(50_000)) + b"\r"
    stream = _NoFinalCR(data[:100], rest(data[100:]))
    reads = []
    while piece := stream.read(257):
        reads.append(bytes(piece))
    assert b"".join(reads) == data
    assert all(not piece.endswith(b"\r") for piece in reads[:-1]) and reads[-1].endswith(b"\r")


@pytest.mark.parametrize("rest", _RESTS)
@pytest.mark.parametrize("first", [100, 1_000])  # what the header's read left: less or more
def test_guarded_reads_are_never_longer_than_asked(first: int, rest: Any) -> None:
    from datafiniti_loader.read.csvfile import _NoFinalCR

    data = bytes(random.Random(5).choice(b'ab"\r\n,') for _ in range(5_000))
    stream = _NoFinalCR(data[:first], rest(data[first:]))
    reads = []
    while piece := stream.read(257):
        reads.append(bytes(piece))
    assert b"".join(reads) == data
    assert all(0 < len(piece) <= 257 for piece in reads)


def test_a_run_of_carriage_returns_longer_than_a_block_is_read_carefully(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = b'id,text\r\n1,"' + b"\r" * 5000 + b'\n"\r\n2,x\r\n'
    path = tmp_path / "crs.csv"
    path.write_bytes(data)
    caplog.set_level("DEBUG", logger="datafiniti_loader")
    assert csv_rows(path, 1024) == reference_rows(data)
    assert FALLBACK in caplog.text


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches handed on every few kilobytes, so a fallback happens after rows went out."""
    from datafiniti_loader.read import csvfile

    monkeypatch.setattr(csvfile, "BATCH_BYTES", 4096)


@pytest.mark.usefixtures("small_batches")
def test_rows_before_a_record_longer_than_a_block_arrive_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [f"{i},short {i}" for i in range(2000)] + ['2000,"' + "long\r\n" * 20_000 + '"']
    rows += [f"{i},after {i}" for i in range(2001, 2100)]
    data = ("id,text\r\n" + "\r\n".join(rows) + "\r\n").encode()
    path = tmp_path / "long.csv"
    path.write_bytes(data)
    caplog.set_level("DEBUG", logger="datafiniti_loader")
    batches = list(iter_csv_batches(path, path.name, block_bytes=8192))
    assert "read again record by record after" in caplog.text
    assert "after 0 rows" not in caplog.text  # rows had been handed on before the long record
    got = pa.Table.from_batches(batches)
    assert got.column("id").to_pylist() == [str(i) for i in range(2100)]
    assert [list(r.values()) for r in got.to_pylist()] == reference_rows(data)


@pytest.mark.usefixtures("small_batches")
def test_a_malformed_record_deep_in_a_file_is_named_by_its_line(tmp_path: Path) -> None:
    lines = ["id,name,x"] + [f'{i},"two\r\nlines",{i}' for i in range(3000)]
    lines.insert(2500, "2500,short")  # physical line: 1 + 2 * 2499 + 1 + 1
    path = tmp_path / "deep.csv"
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    delivered = 0
    with pytest.raises(ParseError, match=r"deep.csv: the record at line 5000 has 2 fields"):
        for batch in iter_csv_batches(path, path.name, block_bytes=8192):
            delivered += batch.num_rows
    assert 0 < delivered < 2499  # rows before it went out, the bad one did not


@pytest.mark.parametrize("chunk_bytes", [16, 1 << 20])
def test_a_cell_starting_with_a_byte_order_mark_keeps_it(tmp_path: Path, chunk_bytes: int) -> None:
    """pyarrow drops a BOM at the start of its input: the file's, but also a cell's."""
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfid,name\r\n\xef\xbb\xbf1,a\r\n\xef\xbb\xbf2,b\r\n3,c\r\n")
    assert csv_rows(path, chunk_bytes) == [["\ufeff1", "a"], ["\ufeff2", "b"], ["3", "c"]]


def test_a_header_longer_than_a_block_keeps_every_column(tmp_path: Path) -> None:
    names = [f"column_{i}" for i in range(400)]
    path = tmp_path / "wide.csv"
    path.write_bytes((",".join(names) + "\r\n" + ",".join("v" * 400) + "\r\n").encode())
    table = pa.Table.from_batches(list(iter_csv_batches(path, path.name, block_bytes=1024)))
    assert table.column_names == names and table.num_rows == 1


@pytest.mark.parametrize("chunk_bytes", [64, 4096, 1 << 20])
@pytest.mark.parametrize(
    "data",
    [
        b"id,name\r1,a\r2,b\r3,c\r",  # classic Mac: lone CR
        b"id,name\r1,a\n2,b\n3,c\n",  # a CR header, LF rows
        b'id,name\r\n1,"x\ry"\r2,b\n3,c',  # all three, a CR in a quoted cell, no final newline
    ],
)
def test_lone_cr_ends_a_record_as_lf_and_crlf_do(
    tmp_path: Path, data: bytes, chunk_bytes: int
) -> None:
    path = tmp_path / "cr.csv"
    path.write_bytes(data)
    expected = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    assert list(expected.columns) == ["id", "name"] and len(expected) == 3
    assert csv_rows(path, chunk_bytes) == expected.to_numpy().tolist()


def test_record_chunks_cut_at_a_lone_cr() -> None:
    data = b"".join(f"{n},text {n}\r".encode() for n in range(500))
    chunks = [bytes(chunk) for chunk in record_chunks(io.BytesIO(data), 256)]
    assert len(chunks) > 10 and b"".join(chunks) == data
    assert all(chunk.endswith(b"\r") for chunk in chunks)
