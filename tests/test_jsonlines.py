"""JSON Lines streamed in chunks: the same result, cell for cell, as reading the whole file."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import Loader
from datafiniti_loader import ParseError
from datafiniti_loader.read import jsonlines
from datafiniti_loader.read.files import read_file
from datafiniti_loader.read.jsonfile import read_json_table
from datafiniti_loader.read.schema import SchemaBuilder, conform
from datafiniti_loader.sandbox import Sandbox


def streamed(path: Path) -> pa.Table:
    """A file read as a load reads it: chunks, types across them, again with the text fields."""
    seen = SchemaBuilder()
    batches = list(read_file(path, path.name, "json").batches)
    for batch in batches:
        seen.observe(batch, text=False)
    conflicts = seen.text_conflicts()
    if conflicts:
        batches = list(read_file(path, path.name, "json", text_columns=conflicts).batches)
    schema = seen.schema()
    return pa.Table.from_batches([conform(b, schema) for b in batches], schema=schema)


def drifting_record(rng: random.Random, n: int, rows: int) -> dict[str, Any]:
    """A record whose fields drift in type and appear late, as real downloads' do."""
    late = n > rows * 0.8
    record: dict[str, Any] = {
        "id": f"AV{n:05d}",
        "dateUpdated": f"2026-11-{1 + n % 28:02d}T00:00:00Z",
    }
    record["price"] = (
        rng.choice([n, n + 0.5, None]) if n < rows // 2 else rng.choice([n, "n/a", None])
    )
    record["reviews"] = [
        {
            "rating": rng.choice([1, 2, 5]),
            "numHelpful": (rng.randint(0, 9) if n < rows * 0.6 else rng.choice(["12", 3])),
            "date": f"2025-0{1 + k % 9}-01T10:00:00.000Z",
            **({"title": "great"} if rng.random() < 0.5 else {}),
        }
        for k in range(rng.choice([0, 0, 1, 3]))
    ]
    record["features"] = rng.choice([[], [{"key": "Color", "value": ["red"]}], None])
    record["flag"] = rng.choice([True, False]) if n % 7 else None
    if late:
        record["lateField"] = {"deep": {"x": n}}
    if n == rows - 3:
        record["gtin"] = 12345678901234567890  # no double holds it
    if n % 11 == 0:
        record["mixedList"] = [1, "a", {"b": 2}]
    return record


@pytest.mark.parametrize("chunk_bytes", [300, 2_000, 20_000])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_chunks_give_the_whole_file_readers_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_bytes: int, seed: int
) -> None:
    rng = random.Random(seed)
    rows = 400
    path = tmp_path / "9_1.txt"
    lines = [json.dumps(drifting_record(rng, n, rows), ensure_ascii=False) for n in range(rows)]
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode())  # BOM, no final newline
    monkeypatch.setattr(jsonlines, "CHUNK_BYTES", chunk_bytes)
    whole = read_json_table(path, path.name)
    got = streamed(path)
    assert got.schema.equals(whole.schema), (got.schema, whole.schema)
    assert got.to_pylist() == whole.to_pylist()


def test_a_field_seen_only_in_the_last_records_and_a_late_type_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "9_1.txt"
    records = [{"id": str(n), "n": n, "r": [{"h": n}]} for n in range(300)]
    records += [{"id": "x", "n": "text now", "r": [{"h": "9+"}], "only_here": {"a": [1.5]}}]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    monkeypatch.setattr(jsonlines, "CHUNK_BYTES", 500)
    got = streamed(path)
    assert got.to_pylist() == read_json_table(path, path.name).to_pylist()
    assert (
        got.column("n").to_pylist()[:2] == ["0", "1"] and got.column("n")[-1].as_py() == "text now"
    )
    assert got.column("r")[0].as_py() == '[{"h":0}]'  # the JSON text as written, not Arrow's
    assert got.column("only_here").to_pylist()[-2:] == [None, {"a": [1.5]}]


def test_deep_nesting_in_a_late_chunk_is_a_parse_error_naming_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "9_1.txt"
    deep = '{"id":"d","x":' + "[" * 100_000 + "]" * 100_000 + "}"
    path.write_text("\n".join([json.dumps({"id": str(n)}) for n in range(200)] + [deep]) + "\n")
    monkeypatch.setattr(jsonlines, "CHUNK_BYTES", 1000)
    with pytest.raises(ParseError, match=r"line 201"):
        streamed(path)


@pytest.mark.parametrize(
    "document",
    [
        '[{"id": "a", "n": 1}, {"id": "b", "n": "x"}]',
        '{"num_found": 2, "total_cost": 0, "records": [{"id": "a", "n": 1}, {"id": "b"}]}',
        '{\n  "id": "a",\n  "n": 1\n}\n',
    ],
)
def test_arrays_envelopes_and_pretty_documents_read_as_before(
    tmp_path: Path, document: str
) -> None:
    path = tmp_path / "9_1.txt"
    path.write_text(document)
    assert streamed(path).to_pylist() == read_json_table(path, path.name).to_pylist()


def test_a_document_past_the_limit_says_what_it_is_and_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datafiniti_loader.read import jsonfile

    path = tmp_path / "9_1.txt"
    path.write_text("[" + ",".join(json.dumps({"id": str(n)}) for n in range(2000)) + "]")
    monkeypatch.setattr(jsonfile, "MAX_DOCUMENT_BYTES", 10_000)
    with pytest.raises(ParseError, match=r"read whole, up to 0 MB.*JSON Lines"):
        streamed(path)


def test_a_load_in_small_chunks_equals_a_load_in_one(
    loader: Loader, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(7)
    rows = 600
    first, second = tmp_path / "9_1.txt", tmp_path / "9_2.txt"
    first.write_text(
        "\n".join(json.dumps(drifting_record(rng, n, rows)) for n in range(rows)) + "\n"
    )
    second.write_text(json.dumps({"id": "AV99999", "price": {"not": "a number"}}) + "\n")
    rid = sandbox.add_request([first, second])
    outputs = {}
    for chunk_bytes in (1 << 30, 1_500):
        monkeypatch.setattr(jsonlines, "CHUNK_BYTES", chunk_bytes)
        target = tmp_path / f"out-{chunk_bytes}"
        frame = loader.load(rid, cache=False)
        loader.parquet(rid, target, cache=False)
        delta = None
        outputs[chunk_bytes] = (frame, pq.read_table(target).to_pandas(), delta)
    whole, chunked = outputs[1 << 30], outputs[1_500]
    pd.testing.assert_frame_equal(chunked[0].drop(columns="_result_created_at"),
                                  whole[0].drop(columns="_result_created_at"))  # fmt: skip
    pd.testing.assert_frame_equal(chunked[1].drop(columns="_result_created_at"),
                                  whole[1].drop(columns="_result_created_at"))  # fmt: skip
    assert whole[0]["reviews"][:rows].map(type).eq(str).all()  # numHelpful drifted: JSON text
