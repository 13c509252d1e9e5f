"""load_tables: records and one table per nested list, from CSV and JSON, losing nothing."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from conftest import FIXTURES, Loader
from datafiniti_loader import ColumnNotFound, Tables, load_tables
from datafiniti_loader.read.schema import PROVENANCE_SCHEMA
from datafiniti_loader.read.tidy import tidy
from datafiniti_loader.sandbox import Sandbox
from helpers import json_records
from tidy_roundtrip import assert_flat_rows_rebuilt, assert_json_records_rebuilt


def tables_of(loader: Loader, request_id: int | list[int], **kwargs: object) -> Tables:
    return load_tables(request_id, **loader.options(kwargs))


def test_csv_child_groups_become_tables_keyed_by_record(
    loader: Loader, sandbox: Sandbox, fixture_files
) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    tables = tables_of(loader, rid, output="arrow")
    flat = loader.load(rid, output="arrow")
    assert list(tables) == ["records", "reviews", "prices", "conflicts"]
    records = tables["records"]
    assert records.num_rows == len(set(flat["id"].to_pylist()))
    assert records.column_names[:2] == ["id", "name"]
    assert records.column_names[-3:] == ["_request_id", "_source_file", "_source_row"]
    reviews = tables["reviews"]
    assert reviews.column_names[:6] == [
        "_record_id",
        "_index",
        "date",
        "rating",
        "text",
        "username",
    ]
    assert str(reviews.schema.field("rating").type) == "int64"  # the flat column's typing
    assert assert_flat_rows_rebuilt(flat, dict(tables)) == flat.num_rows
    # _index counts a record's rows in load order, from 0
    first = reviews.to_pandas().groupby("_record_id")["_index"].apply(list)
    assert all(indexes == list(range(len(indexes))) for indexes in first)


def test_a_records_rows_apart_and_across_files_make_one_record(
    loader: Loader, sandbox: Sandbox, tmp_path: Path
) -> None:
    header = "id,name,reviews.rating,reviews.text\n"
    (tmp_path / "9_1.csv").write_text(header + "A,Alpha,5,a1\nB,Beta,3,b1\nA,Alpha,4,a2\n")
    (tmp_path / "9_2.csv").write_text(header + "B,Beta,,\nA,Alpha,1,a3\n")
    rid = sandbox.add_request([tmp_path / "9_1.csv", tmp_path / "9_2.csv"])
    tables = tables_of(loader, rid)
    assert tables["records"][["id", "_source_file", "_source_row"]].values.tolist() == [
        ["A", f"{rid}_1.csv", 0], ["B", f"{rid}_1.csv", 1]
    ]  # fmt: skip
    reviews = tables["reviews"]
    assert reviews[["_record_id", "_index", "text"]].values.tolist() == [
        ["A", 0, "a1"], ["B", 0, "b1"], ["A", 1, "a2"], ["A", 2, "a3"]  # B's empty row: none
    ]  # fmt: skip
    assert tables["conflicts"].empty
    assert_flat_rows_rebuilt(
        loader.load(rid, output="arrow"), dict(tables_of(loader, rid, output="arrow"))
    )


def test_a_json_array_in_a_cell_is_a_table_and_differing_fields_are_conflicts(
    loader: Loader, sandbox: Sandbox, tmp_path: Path, caplog
) -> None:
    prices = '"[{""amountMax"": 9.99, ""currency"": ""USD""}, {""amountMax"": 12.5}]"'
    other = '"[{""amountMax"": 1.0}]"'
    rows = [
        f"P1,Lamp,{prices},5",
        f"P1,Lamp desk,{prices},4",
        f"P2,Desk,{other},3",
        f"P1,Lamp,{other},2",
    ]
    source = tmp_path / "9_1.csv"
    source.write_text("id,name,prices,reviews.rating\n" + "\n".join(rows) + "\n")
    rid = sandbox.add_request([source])
    with caplog.at_level(logging.WARNING, logger="datafiniti_loader"):
        tables = tables_of(loader, rid, output="arrow")
    assert "prices" not in tables["records"].column_names
    prices = tables["prices"].select(["_record_id", "_index", "amountMax", "currency"])
    assert [list(r.values()) for r in prices.to_pylist()] == [
        ["P1", 0, 9.99, "USD"],
        ["P1", 1, 12.5, None],
        ["P2", 0, 1.0, None],
    ]  # fmt: skip  (P1's array once, though repeated on each of its rows)
    conflicts = tables["conflicts"].select(["_record_id", "column", "value", "_source_row"])
    assert [list(r.values()) for r in conflicts.to_pylist()] == [
        ["P1", "name", "Lamp desk", 1], ["P1", "prices", '[{"amountMax": 1.0}]', 3]
    ]  # fmt: skip
    assert tables["records"]["name"].to_pylist()[0] == "Lamp"  # the first row's
    assert "2 value(s) of record fields differ" in caplog.text
    assert_flat_rows_rebuilt(
        loader.load(rid, output="arrow"), dict(tables_of(loader, rid, output="arrow"))
    )


def test_json_lists_of_objects_become_tables(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    source = FIXTURES / "products_json_1.txt"
    late = tmp_path / "9_2.txt"
    late.write_text(
        json.dumps(
            {"id": "LATE", "reviews": [], "menus": [{"name": "Soup", "prices": [{"amountMax": 3}]}]}
        )
        + "\n"
    )
    rid = sandbox.add_request([source, late])
    tables = tables_of(loader, rid, output="arrow")
    assert {"records", "prices", "reviews", "features", "menus", "conflicts"} <= set(tables)
    assert "reviews" not in tables["records"].column_names
    assert "categories" in tables["records"].column_names  # a list of scalars stays
    menus = tables["menus"].to_pylist()
    assert menus[0]["_record_id"] == "LATE" and menus[0]["prices"] == [
        {"amountMax": 3}
    ]  # deeper: a value
    assert_json_records_rebuilt(dict(tables), json_records(source), rid)
    assert_json_records_rebuilt(dict(tables), json_records(late), rid)


def test_dedupe_keeps_one_record_per_id_across_requests(
    loader: Loader, sandbox: Sandbox, tmp_path: Path
) -> None:
    header = "id,dateUpdated,name,reviews.rating\n"
    (tmp_path / "1.csv").write_text(
        header + "A,2026-11-01T00:00:00Z,old,1\nB,2026-11-01T00:00:00Z,b,2\n"
    )
    (tmp_path / "2.csv").write_text(
        header + "A,2026-11-05T00:00:00Z,new,5\nA,2026-11-05T00:00:00Z,new,4\n"
    )
    first, second = (
        sandbox.add_request([tmp_path / "1.csv"]),
        sandbox.add_request([tmp_path / "2.csv"]),
    )
    plain = tables_of(loader, [first, second])
    assert plain["records"]["id"].tolist() == ["A", "B", "A"]  # one per id per request
    deduped = tables_of(loader, [first, second], dedupe=True)
    assert deduped["records"][["id", "name"]].values.tolist() == [["B", "b"], ["A", "new"]]
    assert deduped["reviews"][["_record_id", "_index", "rating"]].values.tolist() == [
        ["B", 0, 2], ["A", 0, 5], ["A", 1, 4]
    ]  # fmt: skip


def test_files_without_ids_say_how_to_read_them(
    loader: Loader, sandbox: Sandbox, fixture_files
) -> None:
    rid = sandbox.add_request(fixture_files["businesses"])
    with pytest.raises(ColumnNotFound, match=r"no 'id' column.*load_results"):
        tables_of(loader, rid)


def test_outputs_names_dtype_and_the_tables_repr(
    loader: Loader, sandbox: Sandbox, fixture_files
) -> None:
    pytest.importorskip("polars")
    rid = sandbox.add_request(fixture_files["products"])
    tables = tables_of(loader, rid, output="polars", dtype={"reviews.rating": "float64"},
                       columns=["name", "reviews.rating"], provenance=False)  # fmt: skip
    assert tables["reviews"].columns == ["_record_id", "_index", "rating"]
    assert str(tables["reviews"]["rating"].dtype) == "Float64"
    assert tables["records"].columns == ["id", "name"]
    shown = repr(tables)
    assert "records: 36 rows x 2 columns" in shown and "reviews:" in shown
    assert "<td>reviews</td>" in tables._repr_html_()
    with pytest.raises(KeyError, match="the tables are records, reviews, conflicts"):
        tables["menus"]
    with pytest.raises(TypeError):
        tables["records"] = None  # type: ignore[index]
    frame = tables_of(loader, rid)["records"]
    assert isinstance(frame, pd.DataFrame) and str(frame["_source_file"].dtype) == "category"


def test_a_records_rows_in_different_batches_of_a_large_file(
    loader: Loader, sandbox: Sandbox, tmp_path: Path
) -> None:
    filler = "".join(f"F{n},Filler,3,{'x' * 200}\n" for n in range(30_000))  # ~6 MB: batches
    source = tmp_path / "9_1.csv"
    source.write_text(
        "id,name,reviews.rating,reviews.text\nA,Alpha,5,first\n" + filler + "A,Alpha,1,last\n"
    )
    assert source.stat().st_size > 6_000_000
    rid = sandbox.add_request([source])
    flat = loader.load(rid, output="arrow")
    assert flat.column("id").num_chunks > 1  # the rows arrive in several batches
    tables = tables_of(loader, rid, output="arrow")
    import pyarrow.compute as pc

    reviews = tables["reviews"].filter(pc.equal(tables["reviews"]["_record_id"], "A"))
    assert reviews.select(["_index", "text", "_source_row"]).to_pylist() == [
        {"_index": 0, "text": "first", "_source_row": 0},
        {"_index": 1, "text": "last", "_source_row": 30_001},
    ]
    assert tables["records"].num_rows == 30_001


def _normalised(table: pa.Table) -> list[dict]:
    """Rows in a fixed order, _source_file as text (Parquet keeps it as a dictionary too)."""
    table = table.set_column(
        table.schema.get_field_index("_source_file"), "_source_file",
        table["_source_file"].cast(pa.string()),
    )  # fmt: skip
    keys = [("_source_file", "ascending"), ("_source_row", "ascending")]
    if "_index" in table.column_names:
        keys.append(("_index", "ascending"))
    if "column" in table.column_names:
        keys.append(("column", "ascending"))
    return table.sort_by(keys).to_pylist()


@pytest.mark.parametrize("bucket_bytes", [1 << 30, 3_000])
def test_parquet_tables_hold_what_load_tables_gives_in_any_number_of_buckets(
    loader: Loader, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    bucket_bytes: int,
) -> None:  # fmt: skip
    import tempfile

    import pyarrow.parquet as pq

    from datafiniti_loader.sinks import tablesparquet

    monkeypatch.setattr(tablesparquet, "BUCKET_BYTES", bucket_bytes)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    prices = '"[{""amountMax"": 9.99}, {""amountMax"": 12.5}]"'
    rows = [f"P{n % 17},Name {n % 17},{prices},{n},text {n}" for n in range(200)]
    rows.append(f"P1,Other name,{prices},5,late")  # a conflict
    source = tmp_path / "9_1.csv"
    source.write_text("id,name,prices,reviews.rating,reviews.text\n" + "\n".join(rows) + "\n")
    jsonl = FIXTURES / "products_json_1.txt"
    for files in ([source], [jsonl]):
        rid = sandbox.add_request(files)
        target = tmp_path / f"out-{rid}"
        summary = loader.parquet(rid, target, tables=True)
        expected = tables_of(loader, rid, output="arrow")
        assert [name for name, _ in summary.tables] == list(expected)
        for name, table in expected.items():
            written = pq.read_table(target / name)
            assert _normalised(written) == _normalised(table), name
        assert sorted(p.name for p in target.iterdir()) == sorted(
            [*expected, "_datafiniti_loader.json"]
        )
    assert list(scratch.iterdir()) == []  # the buckets' scratch files are gone


def test_parquet_tables_of_files_without_ids_leave_nothing(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    rid = sandbox.add_request(fixture_files["businesses"])
    with pytest.raises(ColumnNotFound, match="load_results"):
        loader.parquet(rid, tmp_path / "out", tables=True)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_the_cli_writes_tables(sandbox: Sandbox, fixture_files, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    rid = sandbox.add_request(fixture_files["products"])
    env = {**os.environ, "DATAFINITI_API_URL": sandbox.api_url, "DATAFINITI_API_TOKEN": sandbox.token,
           "DATAFINITI_CACHE_DIR": str(tmp_path / "cache")}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "datafiniti_loader", "load", str(rid), "--tables", "--output",
         str(tmp_path / "out"), "--quiet"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "wrote tables records (36 rows), reviews (72 rows), prices (72 rows)" in done.stdout
    assert (tmp_path / "out" / "reviews" / "part-0.parquet").exists()


@pytest.mark.parametrize("seed", range(6))
def test_conflicts_are_exactly_the_values_unlike_the_records_first_row(seed: int) -> None:
    """Interleaved records, chains of repeats, nulls, NaN and lists against a row-by-row check."""
    rng = random.Random(seed)
    size = 300
    ids = [rng.choice("ABCDE") for _ in range(size)]
    columns = {
        "text": pa.array([rng.choice(["x", "y", None]) for _ in range(size)], pa.string()),
        "number": pa.array([rng.choice([1.5, float("nan"), None]) for _ in range(size)]),
        "listed": pa.array([rng.choice([[1], [1, 2], None]) for _ in range(size)]),
    }
    provenance = {
        field.name: pa.array(
            [9] * size if field.name == "_request_id" else
            ["9_1.csv"] * size if field.name == "_source_file" else
            list(range(size)) if field.name == "_source_row" else [None] * size,
            field.type,
        )
        for field in PROVENANCE_SCHEMA
    }  # fmt: skip
    flat = pa.table({"id": pa.array(ids), **columns, **provenance})
    # Several batches, so that a record's rows also sit in different chunks.
    flat = pa.Table.from_batches(flat.to_batches(max_chunksize=37))

    def key(value: object) -> object:
        return "nan" if isinstance(value, float) and value != value else json.dumps(value)

    first: dict[str, int] = {}
    expected = []
    for row, record in enumerate(ids):
        first.setdefault(record, row)
        for name, values in columns.items():
            if key(values[row].as_py()) != key(values[first[record]].as_py()):
                expected.append((row, name))
    found = tidy(flat)["conflicts"]
    assert sorted(
        zip(found["_source_row"].to_pylist(), found["column"].to_pylist(), strict=True)
    ) == sorted(expected)
    assert expected  # the draw has conflicts to find


@pytest.mark.parametrize(
    "lengths",
    [
        [1, 0, 2, 1],  # as many elements as records: every row taken, but not each once
        [2, 0, 1, 0],  # a repeat and a gap within one batch: rows 0, 0, 2 are no run
        [0, 3, 0, 0, 1],
    ],
)
def test_empty_lists_leave_every_element_with_its_own_record(lengths: list[int]) -> None:
    ids = [chr(ord("A") + n) for n in range(len(lengths))]
    reviews = [[{"rating": 10 * n + k} for k in range(length)] for n, length in enumerate(lengths)]
    provenance = {
        field.name: pa.array(
            [9] * len(ids) if field.name == "_request_id" else
            ["9_1.txt"] * len(ids) if field.name == "_source_file" else
            list(range(len(ids))) if field.name == "_source_row" else [None] * len(ids),
            field.type,
        )
        for field in PROVENANCE_SCHEMA
    }  # fmt: skip
    flat = pa.table({"id": ids, "reviews": reviews, **provenance})
    found = tidy(flat)["reviews"]
    expected = [(ids[n], k, 10 * n + k) for n, length in enumerate(lengths) for k in range(length)]
    assert list(
        zip(found["_record_id"].to_pylist(), found["_index"].to_pylist(),
            found["rating"].to_pylist(), strict=True)
    ) == expected  # fmt: skip
    assert found["_source_row"].to_pylist() == [ids.index(r) for r, _, _ in expected]
