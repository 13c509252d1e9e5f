"""The dlt source: real dlt pipelines into a DuckDB file, fed by the sandbox."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

pytest.importorskip("dlt")
pytest.importorskip("duckdb")

import dlt
from dlt.pipeline.exceptions import PipelineStepFailed

from datafiniti_loader import (
    ColumnConflict,
    ColumnNotFound,
    ConfigurationError,
    RequestNotReady,
    SyncMismatch,
    TooManyRecords,
)
from datafiniti_loader.dlt import datafiniti_source
from datafiniti_loader.dlt.fit import check_fits
from datafiniti_loader.sandbox import Sandbox

QUERY = "categories:shoes AND brand:Acme"


def product(
    ident: str, updated: str, name: str, reviews: list[int], prices: list[float] | None = None
) -> dict[str, Any]:
    return {
        "id": ident,
        "name": name,
        "dateUpdated": updated,
        "categories": ["shoes", "outdoor"],
        "reviews": [{"rating": r, "text": f"{name} {r}"} for r in reviews],
        "prices": [{"amountMax": p, "currency": "USD"} for p in (prices or [9.5])],
    }


def written(directory: Path, name: str, records: list[dict[str, Any]], format: str) -> Path:
    """JSON Lines, or a flat CSV view: a record's reviews and prices side by side on its rows."""
    if format == "json":
        path = directory / f"{name}.txt"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        return path
    path = directory / f"{name}.csv"
    lists = {"reviews": ["rating", "text"], "prices": ["amountMax", "currency"]}
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        groups = [f"{k}.{f}" for k, fields in lists.items() for f in fields]
        writer.writerow(["id", "name", "dateUpdated", "categories", *groups])
        for r in records:
            for n in range(max(1, *(len(r[k]) for k in lists))):
                cells = [
                    r[k][n][f] if n < len(r[k]) else ""
                    for k, fields in lists.items()
                    for f in fields
                ]
                writer.writerow(
                    [r["id"], r["name"], r["dateUpdated"], ",".join(r["categories"]), *cells]
                )
    return path


def pipeline(tmp_path: Path, name: str = "shop") -> Any:
    return dlt.pipeline(
        name,
        destination=dlt.destinations.duckdb(str(tmp_path / "warehouse.duckdb")),
        dataset_name="datafiniti",
        pipelines_dir=str(tmp_path / "dlt"),
    )


def table(pipe: Any, name: str) -> list[dict[str, Any]]:
    with pipe.sql_client() as client:
        rows = client.execute_sql(f"SELECT * FROM {client.make_qualified_table_name(name)}")
        columns = client.execute_sql(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = %s ORDER BY ordinal_position",
            client.dataset_name, name,
        )  # fmt: skip
    names = [c[0] for c in columns]
    return [dict(zip(names, row, strict=True)) for row in rows]


def by_id(pipe: Any) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in table(pipe, "records")}


def children(pipe: Any, name: str) -> list[tuple[Any, ...]]:
    rows = table(pipe, name)
    assert all(r["_deleted"] is None for r in rows)  # tombstones are never stored
    value = "rating" if name == "reviews" else "amount_max"
    return sorted((r["_record_id"], r["_index"], float(r[value])) for r in rows)


@pytest.fixture
def api(sandbox: Sandbox) -> dict[str, Any]:
    sandbox.creation_polls = (0, 0)  # downloads are ready at the first poll
    return {"token": sandbox.token, "api_url": sandbox.api_url_v4, "progress": False}


@pytest.mark.parametrize("format", ["json", "csv"])
def test_downloads_merge_across_runs_newest_copy_wins_and_its_child_rows_replace_the_old(
    sandbox: Sandbox, api: dict[str, Any], tmp_path: Path, format: str
) -> None:
    first = sandbox.add_request(
        [
            written(
                tmp_path,
                "first",
                [
                    product("A", "2026-11-01T00:00:00Z", "Runner", [5, 4, 3]),
                    product("B", "2026-11-05T00:00:00Z", "Walker", [2], [20.0, 18.0]),
                    product("C", "2026-11-01T00:00:00Z", "Hiker", [1, 2]),
                    product("E", "2026-11-01T00:00:00Z", "Sandal", [4]),
                ],
                format,
            )
        ]
    )
    pipe = pipeline(tmp_path)
    pipe.run(datafiniti_source(first, **api))
    assert sorted(by_id(pipe)) == ["A", "B", "C", "E"]
    assert children(pipe, "reviews") == [
        ("A", 0, 5), ("A", 1, 4), ("A", 2, 3), ("B", 0, 2), ("C", 0, 1), ("C", 1, 2), ("E", 0, 4)
    ]  # fmt: skip
    assert len(table(pipe, "prices")) == 5
    schema = pipe.default_schema  # each table's keys, as dlt holds them
    for name, keys in (("records", ["id"]), ("reviews", ["_record_id", "_index"])):
        columns = schema.get_table_columns(name)
        assert [c for c, hints in columns.items() if hints.get("primary_key")] == keys
        assert schema.get_table(name)["write_disposition"] == "merge"
    assert [c for c, h in schema.get_table_columns("prices").items() if h.get("merge_key")] == [
        "_record_id"
    ]

    # An overlapping download: A newer with fewer reviews, B an older copy, C newer with no
    # review at all, D new, E as new as the destination's (a later download wins the tie).
    second = sandbox.add_request(
        [
            written(
                tmp_path,
                "second",
                [
                    product("A", "2026-11-06T00:00:00Z", "Runner 2", [1]),
                    product("B", "2026-10-01T00:00:00Z", "Walker (old)", [5, 5, 5]),
                    product("C", "2026-11-06T00:00:00Z", "Hiker 2", []),
                    product("D", "2026-11-06T00:00:00Z", "Boot", [3, 3]),
                    product("E", "2026-11-01T00:00:00Z", "Sandal 2", [2]),
                ],
                format,
            )
        ]
    )
    pipe.run(datafiniti_source(second, **api))
    held = by_id(pipe)
    assert {k: v["name"] for k, v in held.items()} == {
        "A": "Runner 2", "B": "Walker", "C": "Hiker 2", "D": "Boot", "E": "Sandal 2"
    }  # fmt: skip
    assert held["B"]["_request_id"] == first and held["A"]["_request_id"] == second
    assert children(pipe, "reviews") == [
        ("A", 0, 1), ("B", 0, 2), ("D", 0, 3), ("D", 1, 3), ("E", 0, 2)
    ]  # fmt: skip
    assert children(pipe, "prices") == [
        ("A", 0, 9.5), ("B", 0, 20.0), ("B", 1, 18.0), ("C", 0, 9.5), ("D", 0, 9.5),
        ("E", 0, 9.5),
    ]  # fmt: skip

    # The first download again: every copy in it is older or as old, from a lower request.
    before = {name: table(pipe, name) for name in ("records", "reviews", "prices")}
    pipe.run(datafiniti_source(first, **api))
    assert {name: table(pipe, name) for name in before} == before

    # A download whose records have no review at all: the reviews table is not in it, and
    # D's two old reviews still go.
    third = sandbox.add_request(
        [written(tmp_path, "third", [product("D", "2026-11-07T00:00:00Z", "Boot 2", [])], format)]
    )
    pipe.run(datafiniti_source(third, **api))
    assert by_id(pipe)["D"]["name"] == "Boot 2"
    assert children(pipe, "reviews") == [("A", 0, 1), ("B", 0, 2), ("E", 0, 2)]
    assert ("D", 0, 9.5) in children(pipe, "prices")


def test_a_list_of_downloads_keeps_each_records_newest_copy_among_them(
    sandbox: Sandbox, api: dict[str, Any], tmp_path: Path
) -> None:
    newer = sandbox.add_request(
        [written(tmp_path, "newer", [product("A", "2026-11-06T00:00:00Z", "New", [1])], "json")]
    )
    older = sandbox.add_request(
        [written(tmp_path, "older", [product("A", "2026-11-01T00:00:00Z", "Old", [5, 4])], "json")]
    )
    pipe = pipeline(tmp_path)
    pipe.run(datafiniti_source([newer, older], **api))
    assert by_id(pipe)["A"]["name"] == "New"
    assert children(pipe, "reviews") == [("A", 0, 1)]

    # Another pipeline into the same dataset: the destination, not its own schema, decides.
    other = pipeline(tmp_path, "other")
    other.run(datafiniti_source(older, **api))
    assert by_id(pipe)["A"]["name"] == "New"


def serve(sandbox: Sandbox, directory: Path, records: list[dict[str, Any]], version: int) -> None:
    """Register QUERY as matching ``records`` (again: the records changed)."""
    path = directory / f"catalog_{version}.txt"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    sandbox.add_query(QUERY, [path], format="json")


FIRST = [
    product("A", "2026-11-01T08:00:00Z", "Runner", [5, 4]),
    product("B", "2026-11-02T09:30:00Z", "Walker", [3]),
    product("C", "2026-11-02T09:30:00Z", "Hiker", [2, 2]),
]


def sync_state(pipe: Any) -> dict[str, Any]:
    state: dict[str, Any] = pipe.state["sources"]["datafiniti"]["resources"]["records"]["sync"]
    return state


def journal(tmp_path: Path, name: str = "shop") -> Path:
    return tmp_path / "dlt" / name / "datafiniti" / "datafiniti" / "_datafiniti_sync.json"


def test_a_query_run_downloads_only_the_records_changed_since_the_mark_in_dlt_state(
    sandbox: Sandbox, api: dict[str, Any], tmp_path: Path
) -> None:
    serve(sandbox, tmp_path, FIRST, version=1)
    pipe = pipeline(tmp_path)
    asked: list[int] = []
    source = datafiniti_source(
        query=QUERY, max_records=100, confirm=lambda n: asked.append(n) or True, **api
    )
    pipe.run(source)
    assert sorted(by_id(pipe)) == ["A", "B", "C"] and asked == [3]
    assert sandbox.credits_spent == 3
    assert sync_state(pipe)["mark"] == "2026-11-02T09:30:00Z"

    # Nothing changed: a free count, no download, nothing loaded; the journal is gone.
    pipe.run(datafiniti_source(query=QUERY, max_records=100, **api))
    assert len(sandbox.downloads_created) == 1 and sandbox.credits_spent == 3
    assert not journal(tmp_path).exists()

    # A updated with fewer reviews, D added: exactly those two are bought.
    serve(
        sandbox, tmp_path,
        [product("A", "2026-11-05T10:00:00Z", "Runner 2", [1]), FIRST[1], FIRST[2],
         product("D", "2026-11-04T00:00:00Z", "Boot", [])],
        version=2,
    )  # fmt: skip
    pipe.run(datafiniti_source(query=QUERY, max_records=100, **api))
    assert sandbox.downloads_created[-1].query == (
        f"({QUERY}) AND dateUpdated:{{2026-11-02T09:30:00Z TO *]"
    )
    assert sandbox.credits_spent == 5
    held = by_id(pipe)
    assert sorted(held) == ["A", "B", "C", "D"] and held["A"]["name"] == "Runner 2"
    assert children(pipe, "reviews") == [("A", 0, 1), ("B", 0, 3), ("C", 0, 2), ("C", 1, 2)]
    assert sync_state(pipe)["mark"] == "2026-11-05T10:00:00Z"

    # The mark lives in dlt's state, which dlt keeps in the destination too: a fresh
    # working directory (another machine) restores it and buys nothing more.
    again = dlt.pipeline(
        "shop", destination=dlt.destinations.duckdb(str(tmp_path / "warehouse.duckdb")),
        dataset_name="datafiniti", pipelines_dir=str(tmp_path / "elsewhere"),
    )  # fmt: skip
    again.run(datafiniti_source(query=QUERY, max_records=100, **api))
    assert sandbox.credits_spent == 5 and len(sandbox.downloads_created) == 2


def test_a_query_run_spends_nothing_beyond_max_records_and_needs_one(
    sandbox: Sandbox, api: dict[str, Any], tmp_path: Path
) -> None:
    serve(sandbox, tmp_path, FIRST, version=1)
    with pytest.raises(ConfigurationError, match="max_records"):
        datafiniti_source(query=QUERY, **api)
    pipe = pipeline(tmp_path)
    with pytest.raises(PipelineStepFailed) as raised:
        pipe.run(datafiniti_source(query=QUERY, max_records=2, **api))
    assert isinstance(cause(raised.value), TooManyRecords)
    assert "3 products record(s) match" in str(cause(raised.value))
    refused = datafiniti_source(query=QUERY, max_records=10, confirm=lambda n: False, **api)
    pipe.run(refused)
    assert sandbox.credits_spent == 0 and not sandbox.downloads_created


def test_a_run_stopped_after_its_download_was_created_loads_that_download_next_time(
    sandbox: Sandbox, api: dict[str, Any], tmp_path: Path
) -> None:
    serve(sandbox, tmp_path, FIRST, version=1)
    sandbox.creation_polls = (50, 50)  # the download stays in preparation
    pipe = pipeline(tmp_path)
    with pytest.raises(PipelineStepFailed) as raised:  # gives up waiting, like Ctrl-C
        pipe.run(datafiniti_source(query=QUERY, max_records=10, wait=0.5, **api))
    assert isinstance(cause(raised.value), RequestNotReady)
    kept = json.loads(journal(tmp_path).read_text())
    assert kept["request_id"] == sandbox.downloads_created[0].id
    assert sandbox.token not in json.dumps(kept)

    sandbox.downloads_created[0].pending_polls = 0  # Datafiniti finishes it meanwhile
    pipe.run(datafiniti_source(query=QUERY, max_records=10, **api))
    assert len(sandbox.downloads_created) == 1 and sandbox.credits_spent == 3  # bought once
    assert sorted(by_id(pipe)) == ["A", "B", "C"]
    assert sync_state(pipe)["mark"] == "2026-11-02T09:30:00Z"


def test_one_pipeline_keeps_one_query_and_bad_arguments_say_what_to_do(
    sandbox: Sandbox, api: dict[str, Any], tmp_path: Path
) -> None:
    serve(sandbox, tmp_path, FIRST, version=1)
    pipe = pipeline(tmp_path)
    pipe.run(datafiniti_source(query=QUERY, max_records=10, **api))
    with pytest.raises(PipelineStepFailed) as raised:
        pipe.run(datafiniti_source(query="brand:Other", max_records=10, **api))
    assert isinstance(cause(raised.value), SyncMismatch)
    assert "pipeline of its own" in str(cause(raised.value))
    undated = tmp_path / "undated.csv"
    undated.write_text("id,name,reviews.rating\nA,Runner,5\n")
    with pytest.raises(PipelineStepFailed) as raised:
        pipe.run(datafiniti_source(sandbox.add_request([undated]), **api))
    assert isinstance(cause(raised.value), ColumnNotFound)
    assert str(cause(raised.value)).startswith("Merging with the dlt source needs the columns")
    assert "load_tables or to_parquet(tables=True)" in str(cause(raised.value))
    for wrong in ({}, {"request_ids": 1, "query": QUERY}):
        with pytest.raises(ConfigurationError, match="one of the two"):
            datafiniti_source(**wrong, **api)


def test_the_token_can_come_from_dlts_secrets_and_a_destination_is_needed(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rid = sandbox.add_request(
        [written(tmp_path, "one", [product("A", "2026-11-01T00:00:00Z", "Runner", [5])], "json")]
    )
    monkeypatch.setenv("SOURCES__DATAFINITI__TOKEN", sandbox.token)
    pipe = pipeline(tmp_path)
    pipe.run(datafiniti_source(rid, api_url=sandbox.api_url_v4, progress=False))
    assert sorted(by_id(pipe)) == ["A"]
    # dlt keeps what it resolved from config in its trace, a secret's value left out.
    kept = [p for p in (tmp_path / "dlt").rglob("*") if p.is_file()]
    assert any(p.name == "trace.pickle" for p in kept)
    assert not [p for p in kept if sandbox.token.encode() in p.read_bytes()]

    bare = dlt.pipeline("bare", pipelines_dir=str(tmp_path / "dlt"))
    with pytest.raises(PipelineStepFailed) as raised:
        bare.extract(datafiniti_source(rid, api_url=sandbox.api_url_v4, progress=False))
    assert isinstance(cause(raised.value), ConfigurationError)
    assert "destination" in str(cause(raised.value))


def cause(error: BaseException) -> BaseException:
    """The library's error inside dlt's wrappers (dlt wraps what a resource raises)."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
        if type(error).__module__.startswith("datafiniti_loader"):
            return error
    return error


def test_without_dlt_the_import_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['dlt'] = None\n"  # as if dlt were not installed
        "try:\n    import datafiniti_loader.dlt\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'datafiniti-loader[dlt]'" in done.stdout


def test_values_the_destinations_column_type_would_change_stop_the_run_before_loading(
    sandbox: Sandbox, api: dict[str, Any], tmp_path: Path
) -> None:
    header = "id,dateUpdated,postalCode\n"
    (tmp_path / "a.csv").write_text(
        header + "A,2026-11-01T00:00:00Z,10001\nB,2026-11-01T00:00:00Z,94105\n"
    )
    (tmp_path / "b.csv").write_text(header + "A,2026-11-02T00:00:00Z,02134\n")
    pipe = pipeline(tmp_path)
    pipe.run(datafiniti_source(sandbox.add_request([tmp_path / "a.csv"]), **api))
    with pytest.raises(PipelineStepFailed) as raised:
        pipe.run(datafiniti_source(sandbox.add_request([tmp_path / "b.csv"]), **api))
    error = cause(raised.value)
    assert isinstance(error, ColumnConflict)
    assert "records.postal_code is bigint" in str(error) and "'02134'" in str(error)
    assert "dtype={'postalCode': 'string'}" in str(error)
    assert {r["id"]: r["postal_code"] for r in table(pipe, "records")} == {"A": 10001, "B": 94105}

    # Another pipeline on the same dataset: its own schema knows nothing, the destination does.
    other = pipeline(tmp_path, "other")
    with pytest.raises(PipelineStepFailed) as raised:
        rid = sandbox.add_request([tmp_path / "b.csv"])
        other.run(datafiniti_source(rid, dtype={"postalCode": "string"}, **api))
    assert "'02134'" in str(cause(raised.value))
    assert {r["id"]: r["postal_code"] for r in table(pipe, "records")} == {"A": 10001, "B": 94105}

    # Kept as text from the first load (in a dataset of its own), the column takes both.
    typed = pipeline(tmp_path / "new", "typed")
    for name in ("a.csv", "b.csv"):
        rid = sandbox.add_request([tmp_path / name])
        typed.run(datafiniti_source(rid, dtype={"postalCode": "string"}, **api))
    assert {r["id"]: r["postal_code"] for r in table(typed, "records")} == {
        "A": "02134", "B": "94105"
    }  # fmt: skip

    # JSON gives dates as text: they go into the CSV's timestamp column as the same instants.
    later = [{"id": "B", "dateUpdated": "2026-11-03T10:00:00Z", "postalCode": 94107}]
    pipe.run(datafiniti_source(sandbox.add_request([written(tmp_path, "c", later, "json")]), **api))
    held = by_id(pipe)["B"]
    assert (
        held["postal_code"] == 94107
        and held["date_updated"].isoformat() == "2026-11-03T10:00:00+00:00"
    )


@pytest.mark.parametrize(
    ("values", "theirs", "misfit"),
    [
        (pa.array(["10001", "94105"]), "bigint", None),
        (pa.array(["10001", "02134"]), "bigint", "02134"),
        (pa.array(["8.49E+11", None]), "double", None),
        (pa.array(["4.5", "N/A"]), "double", "N/A"),
        (pa.array([4.0, 4.5]), "bigint", 4.5),
        (pa.array(["2026-11-03T10:00:00Z"]), "timestamp", None),
        (pa.array(["yesterday"]), "timestamp", "yesterday"),
        (pa.array([None, None], pa.null()), "bigint", None),
        (pa.array([1, 2]), "text", None),
        (pa.array([[1], [2]]), "bigint", [1]),
    ],
)
def test_a_value_fits_a_destination_column_only_unchanged(
    values: pa.Array, theirs: str, misfit: object
) -> None:
    schema = pa.schema([pa.field("x", values.type)])
    check = lambda: check_fits(  # noqa: E731
        "t", schema, {"x": {"data_type": theirs}}, str, lambda name: [values]
    )
    if misfit is None:
        check()
    else:
        with pytest.raises(ColumnConflict, match=re.escape(repr(misfit))):
            check()
