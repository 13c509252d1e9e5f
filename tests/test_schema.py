"""Column types decided across files: typed only where every value reads back as written."""

import pyarrow as pa
import pytest

from datafiniti_loader.read.schema import Provenance, SchemaBuilder, add_provenance, conform


def decide(*columns: list[str | None]) -> pa.DataType:
    builder = SchemaBuilder()
    for values in columns:
        builder.observe(pa.record_batch({"c": pa.array(values, pa.string())}), text=True)
    return builder.schema().field("c").type


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["1", "22", "-3", None], pa.int64()),
        (["02134", "10001"], pa.string()),  # leading zero would be lost
        (["8.49E+11"], pa.string()),  # Excel-damaged identifier
        (["N/A", "5"], pa.string()),
        (["4.0", "4.5", "-0.25"], pa.float64()),
        (["4.50"], pa.string()),  # would read back as 4.5
        (["5", "4.5"], pa.string()),  # 5 would read back as 5.0
        (["0.00001"], pa.string()),  # repr switches to 1e-05
        (["1234567890.123456"], pa.string()),  # 16 significant digits
        (["2017-01-11T15:53:00Z", "2018-02-01T00:00:00Z"], pa.timestamp("s", "UTC")),
        (["2017-01-11T15:53:00.120Z"], pa.timestamp("ms", "UTC")),
        (["2017-01-11T15:53:00Z", "2017-01-11T15:53:00.000Z"], pa.string()),  # mixed forms
        (["2017-02-30T00:00:00Z"], pa.string()),  # no such day
        (["TRUE", "FALSE"], pa.string()),
        ([None, None], pa.string()),
        (["99999999999999999999"], pa.string()),  # beyond int64
    ],
)
def test_text_becomes_typed_only_when_lossless(
    values: list[str | None], expected: pa.DataType
) -> None:
    assert decide(values) == expected


def test_the_decision_spans_batches_and_files() -> None:
    assert decide(["1", "2"], [None], ["3"]) == pa.int64()
    assert decide(["1", "2"], ["007"]) == pa.string()
    assert decide(["1"], ["2.5"]) == pa.string()


def test_typed_json_columns_widen_or_fall_back_to_text() -> None:
    builder = SchemaBuilder()
    builder.observe(
        pa.table({"n": pa.array([1]), "s": pa.array([{"a": 1}]), "x": pa.array([1])}), text=False
    )
    builder.observe(
        pa.table({"n": pa.array([2.5]), "s": pa.array([{"b": "y"}]), "x": pa.array(["one"])}),
        text=False,
    )
    schema = builder.schema()
    assert schema.field("n").type == pa.float64()
    assert schema.field("s").type == pa.struct([("a", pa.int64()), ("b", pa.string())])
    assert schema.field("x").type == pa.string()


def test_conform_fills_missing_columns_with_nulls_and_keeps_order() -> None:
    target = pa.schema([("a", pa.int64()), ("b", pa.string()), ("c", pa.string())])
    batch = pa.record_batch({"c": pa.array(["z"]), "a": pa.array(["7"])})
    out = conform(batch, target)
    assert out.schema == target
    assert out.to_pylist() == [{"a": 7, "b": None, "c": "z"}]


def test_conform_to_text_keeps_json_values() -> None:
    target = pa.schema([("x", pa.string())])
    out = conform(pa.record_batch({"x": pa.array([{"k": [1, 2]}, None])}), target)
    assert out.column(0).to_pylist() == ['{"k":[1,2]}', None]


def test_provenance_columns() -> None:
    from datetime import UTC, datetime

    batch = pa.record_batch({"a": pa.array(["x", "y"])})
    out = add_provenance(
        batch, Provenance(6073, 1, "6073_1.csv", datetime(2017, 1, 11, tzinfo=UTC)), 10
    )
    assert out.schema.names == [
        "a",
        "_request_id",
        "_result_id",
        "_source_file",
        "_source_row",
        "_result_created_at",
    ]
    assert out.column("_source_row").to_pylist() == [10, 11]
    assert pa.types.is_dictionary(out.schema.field("_source_file").type)
    assert out.schema.field("_result_created_at").type == pa.timestamp("us", "UTC")
