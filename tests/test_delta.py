"""to_delta: a Delta Lake table that absorbs each new download, newest copy of a record winning."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import FAST_RETRY
from datafiniti_loader import TableConflict, delta_history, to_delta
from datafiniti_loader.sandbox import Sandbox
from test_merge_downloads import FIRST, SECOND, serve

deltalake = pytest.importorskip("deltalake")


def merge(sandbox: Sandbox, sources: object, table: Path, **kwargs: object) -> object:
    options = {"token": sandbox.token, "api_url": sandbox.api_url, "progress": False,
               "retry": FAST_RETRY, "cache": table.parent / "cache"}  # fmt: skip
    return to_delta(sources, str(table), **{**options, **kwargs})  # type: ignore[arg-type]


def contents(table: Path, version: int | None = None) -> list[tuple[str, str]]:
    frame = deltalake.DeltaTable(str(table), version=version).to_pandas()
    return sorted(zip(frame["id"].fillna(""), frame["name"], strict=True))


EXPECTED = sorted(
    [
        ("A", "a-new"), ("A", "a-new"), ("B", "b-new"), ("B", "b-new"), ("C", "c-new"),
        ("D", "d-only"), ("E", "e-second"), ("F", "f-only"), ("", "no-id"),
    ]
)  # fmt: skip


@pytest.fixture
def two(sandbox: Sandbox, tmp_path: Path) -> tuple[int, int]:
    return serve(sandbox, tmp_path, FIRST), serve(sandbox, tmp_path, SECOND)


def merged_in_order(
    sandbox: Sandbox, two: tuple[int, int], target: Path, order: str, **kwargs: object
) -> list[object]:
    """The two downloads merged in ``order`` (or both at once); each merge's summary."""
    first, second = two
    if order == "both-at-once":
        return [merge(sandbox, [second, first], target, **kwargs)]
    ordered = two if order == "first-then-second" else (second, first)
    return [merge(sandbox, rid, target, **kwargs) for rid in ordered]


@pytest.mark.parametrize("order", ["first-then-second", "second-then-first", "both-at-once"])
def test_merges_keep_each_records_newest_copy_whatever_the_order(
    sandbox: Sandbox, two: tuple[int, int], tmp_path: Path, order: str
) -> None:
    table = tmp_path / "table"
    for summary in merged_in_order(sandbox, two, table, order):
        assert summary.committed  # type: ignore[attr-defined]
    # E is tied: the newer download (the higher request id) wins in every order.
    assert contents(table) == EXPECTED


def test_a_merge_is_one_commit_replacing_all_rows_of_newer_records(
    sandbox: Sandbox, two: tuple[int, int], tmp_path: Path
) -> None:
    table = tmp_path / "table"
    first, second = two
    created = merge(sandbox, first, table)
    assert created.version == 0 and created.rows_inserted == 9  # type: ignore[attr-defined]
    merged = merge(sandbox, second, table)
    assert merged.version == 1  # type: ignore[attr-defined]
    assert (merged.records_added, merged.records_replaced, merged.records_unchanged) == (  # type: ignore[attr-defined]
        1, 3, 1,  # F new; B, C, E newer (E by the tie); A older in the second download
    )  # fmt: skip
    assert merged.rows_inserted == 5  # type: ignore[attr-defined]
    rows = deltalake.DeltaTable(str(table)).to_pandas()
    assert (rows["id"] == "C").sum() == 1  # three rows of the older copy gave way to one
    history = delta_history(str(table))
    assert [h["request_ids"] for h in history] == [[second], [first]]
    assert history[0]["operation"] == "MERGE" and history[0]["library"]
    assert history[0]["timestamp"].tzinfo is not None  # a datetime, not epoch milliseconds


def test_merging_a_request_again_changes_nothing(
    sandbox: Sandbox, two: tuple[int, int], tmp_path: Path
) -> None:
    table = tmp_path / "table"
    merge(sandbox, list(two), table)
    before = len(sandbox.log)
    again = merge(sandbox, two[1], table)
    assert not again.committed and "already merged" in repr(again)  # type: ignore[attr-defined]
    assert again.version == 0  # type: ignore[attr-defined]
    assert not [e for e in sandbox.log[before:] if e.server == "bucket"]  # nothing downloaded
    assert deltalake.DeltaTable(str(table)).version() == 0


def test_an_older_download_merged_later_changes_nothing_but_adds_its_new_records(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    table = tmp_path / "table"
    newer = serve(sandbox, tmp_path, ["A,2026-11-10T00:00:00Z,a-new,1\n"])
    older = serve(
        sandbox, tmp_path, ["A,2026-11-01T00:00:00Z,a-old,1\nZ,2026-11-01T00:00:00Z,z,2\n"]
    )
    merge(sandbox, newer, table)
    summary = merge(sandbox, older, table)
    assert (summary.records_added, summary.records_replaced, summary.records_unchanged) == (1, 0, 1)  # type: ignore[attr-defined]
    assert contents(table) == [("A", "a-new"), ("Z", "z")]
    stale = serve(sandbox, tmp_path, ["A,2026-10-01T00:00:00Z,a-older,1\n"])
    nothing = merge(sandbox, stale, table)
    assert not nothing.committed and "no copy is newer" in repr(nothing)  # type: ignore[attr-defined]
    assert deltalake.DeltaTable(str(table)).version() == 1


def test_schema_drift_adds_columns_and_turns_conflicts_into_text(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    table = tmp_path / "table"
    first = serve(
        sandbox, tmp_path, ["A,2026-11-01T00:00:00Z,a,1\n"], header="id,dateUpdated,name,rank\n"
    )
    second = serve(
        sandbox, tmp_path, ["B,2026-11-02T00:00:00Z,b,N/A,blue\n"],
        header="id,dateUpdated,name,rank,color\n",
    )  # fmt: skip
    merge(sandbox, first, table)
    assert (
        str(deltalake.DeltaTable(str(table)).to_pyarrow_table().schema.field("rank").type)
        == "int64"
    )
    merge(sandbox, second, table)
    frame = deltalake.DeltaTable(str(table)).to_pandas().sort_values("id")
    assert frame["rank"].tolist() == ["1", "N/A"]  # text keeps both values as written
    assert frame["color"].fillna("").tolist() == ["", "blue"]
    assert deltalake.DeltaTable(str(table)).version() == 1  # one commit for the merge


def test_append_and_overwrite_write_every_row(
    sandbox: Sandbox, two: tuple[int, int], tmp_path: Path
) -> None:
    table = tmp_path / "table"
    merge(sandbox, two[0], table, mode="append")
    merge(sandbox, two[1], table, mode="append")
    assert len(deltalake.DeltaTable(str(table)).to_pandas()) == 15
    merge(sandbox, two[1], table, mode="overwrite")
    assert len(deltalake.DeltaTable(str(table)).to_pandas()) == 6
    assert len(deltalake.DeltaTable(str(table), version=1).to_pandas()) == 15  # time travel


def test_concurrent_merges_both_land_or_one_is_told_to_retry(
    sandbox: Sandbox, two: tuple[int, int], tmp_path: Path
) -> None:
    table = tmp_path / "table"
    base = serve(sandbox, tmp_path, ["Q,2026-10-01T00:00:00Z,q,1\n"])
    merge(sandbox, base, table)
    outcomes: list[object] = []

    def run(rid: int) -> None:
        try:
            outcomes.append(merge(sandbox, rid, table, cache=tmp_path / f"cache-{rid}"))
        except TableConflict as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=run, args=(rid,)) for rid in two]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    conflicts = [o for o in outcomes if isinstance(o, TableConflict)]
    assert len(conflicts) <= 1
    if conflicts:
        assert "Run it again" in str(conflicts[0])
        lost = two[0] if two[0] not in delta_history(str(table))[0]["request_ids"] else two[1]
        merge(sandbox, lost, table)  # the retry lands
    assert contents(table) == sorted([*EXPECTED, ("Q", "q")])


def test_a_merge_killed_midway_leaves_the_previous_version(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    from datafiniti_loader.sandbox.fixtures import write_large_csv

    table = tmp_path / "table"
    small = serve(sandbox, tmp_path, ["A,2026-11-01T00:00:00Z,a,1\n"])
    merge(sandbox, small, table)
    big = sandbox.add_request([write_large_csv(tmp_path / "big.csv", 60_000_000, seed=3)])
    code = (
        "import logging\nfrom datafiniti_loader import to_delta\n"
        "logging.basicConfig(level=logging.INFO)\n"
        f"to_delta({big}, {str(table)!r}, token={sandbox.token!r}, api_url={sandbox.api_url!r},"
        f" cache={str(tmp_path / 'cache')!r}, progress=False)\n"  # no scratch dir left in /tmp
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, bufsize=1
    )
    assert worker.stderr is not None
    for line in worker.stderr:  # the downloads are read; the merge is starting
        if "merge into" in line:
            break
    before = set(table.glob("*.parquet"))
    deadline = time.monotonic() + 60
    while not set(table.glob("*.parquet")) - before and time.monotonic() < deadline:
        time.sleep(0.001)  # until its data file is being written
    os.kill(worker.pid, signal.SIGKILL)
    assert worker.wait() == -signal.SIGKILL  # it was still running
    reopened = deltalake.DeltaTable(str(table))
    assert reopened.version() == 0 and contents(table) == [("A", "a")]
    merge(sandbox, big, table)  # and the next merge works on it
    assert deltalake.DeltaTable(str(table)).version() == 1


def test_merge_needs_the_record_columns(sandbox: Sandbox, tmp_path: Path) -> None:
    from datafiniti_loader import ColumnNotFound

    rid = serve(sandbox, tmp_path, ["A,x\n"], header="id,name\n")
    with pytest.raises(ColumnNotFound, match="dateUpdated") as caught:
        merge(sandbox, rid, tmp_path / "table")
    assert not (tmp_path / "table").exists()
    # What a merge needs, and the way on: no mention of a dedupe nobody asked for.
    assert str(caught.value).startswith("Merging into a Delta table needs")
    assert "--dedupe" not in str(caught.value) and "merge --mode append" in str(caught.value)
    from test_cli import run

    env = {"DATAFINITI_API_URL": sandbox.api_url, "DATAFINITI_API_TOKEN": sandbox.token}
    appended = run("-q", "merge", str(rid), "--into", str(tmp_path / "t"), "--mode", "append",
                   env=env)  # fmt: skip
    assert appended.returncode == 0 and "1 rows inserted" in appended.stdout, appended.stderr


def test_summary_reads_well(sandbox: Sandbox, two: tuple[int, int], tmp_path: Path) -> None:
    summary = merge(sandbox, list(two), tmp_path / "table")
    assert "version 0" in repr(summary) and "9 rows inserted" in repr(summary)
    assert "<table" in summary._repr_html_()  # type: ignore[attr-defined]
    frame = pd.DataFrame(delta_history(str(tmp_path / "table")))
    assert frame["request_ids"].tolist() == [sorted(two)]


@pytest.mark.filterwarnings("ignore:The inplace keyword")
def test_the_table_reads_back_with_pandas_polars_dask_and_time_travel(
    sandbox: Sandbox, two: tuple[int, int], tmp_path: Path
) -> None:
    table = tmp_path / "table"
    merge(sandbox, two[0], table)
    merge(sandbox, two[1], table)
    polars = pytest.importorskip("polars")
    dd = pytest.importorskip("dask.dataframe")
    current = deltalake.DeltaTable(str(table))
    assert len(current.to_pandas()) == len(EXPECTED)
    assert polars.read_delta(str(table)).height == len(EXPECTED)
    assert len(dd.read_parquet(current.file_uris()).compute()) == len(EXPECTED)
    assert len(deltalake.DeltaTable(str(table), version=0).to_pandas()) == 9


def test_a_merge_rewrites_only_the_files_holding_a_replaced_record(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from datafiniti_loader.sinks import deltafiles

    monkeypatch.setattr(deltafiles, "_FILE_BYTES", 1)  # a data file per batch: one per result file
    parts = [
        "".join(f"R{n},2026-11-01T00:00:00Z,r{n},{n}\n" for n in range(first, first + 8))
        for first in range(0, 40, 8)
    ]
    table = tmp_path / "table"
    merge(sandbox, serve(sandbox, tmp_path, parts), table)
    assert len(deltalake.DeltaTable(str(table)).file_uris()) == 5
    merge(sandbox, serve(sandbox, tmp_path, ["R7,2026-11-09T00:00:00Z,r7-new,7\n"]), table)
    log = (table / "_delta_log" / "00000000000000000001.json").read_text().splitlines()
    actions = [next(iter(json.loads(line))) for line in log]
    assert actions.count("remove") == 1 and actions.count("add") == 2  # the file of R7, rewritten
    frame = deltalake.DeltaTable(str(table)).to_pandas()
    assert len(frame) == 40 and frame.loc[frame["id"] == "R7", "name"].tolist() == ["r7-new"]


def test_a_failed_write_leaves_none_of_its_files(
    sandbox: Sandbox, two: tuple[int, int], tmp_path: Path
) -> None:
    from datafiniti_loader import ParseError

    fresh = tmp_path / "fresh"
    with pytest.raises(ParseError, match="'name'"):
        merge(sandbox, two[0], fresh, dtype={"name": "float64"})
    assert not fresh.exists()  # the directory it made, gone with its files
    table = tmp_path / "table"
    merge(sandbox, two[0], table)
    before = sorted(p.name for p in table.rglob("*"))
    # A newer copy of A (its table file is rewritten first), then a value dtype= cannot read.
    bad = serve(
        sandbox, tmp_path, ["A,2026-12-01T00:00:00Z,a,1,7\nZ,2026-12-01T00:00:00Z,z,2,x\n"],
        header="id,dateUpdated,name,prices.amountMax,rank\n",
    )  # fmt: skip
    with pytest.raises(ParseError, match="'rank'"):
        merge(sandbox, bad, table, dtype={"rank": "Int64"})
    assert sorted(p.name for p in table.rglob("*")) == before


def bucket_gets(sandbox: Sandbox) -> int:
    return sum(1 for e in sandbox.log if e.server == "bucket")


def another_tools_table(
    path: Path, rows: list[tuple[str, str, str, str | None]], **kwargs: object
) -> None:
    frame = pd.DataFrame(rows, columns=["id", "dateUpdated", "name", "brand"])
    frame["dateUpdated"] = pd.to_datetime(frame["dateUpdated"], utc=True)
    deltalake.write_deltalake(str(path), frame, **kwargs)


def table_rows(path: Path) -> list[tuple[str, str, object]]:
    frame = deltalake.DeltaTable(str(path)).to_pandas()
    return sorted(
        (i, n, None if pd.isna(b) else b)
        for i, n, b in zip(frame["id"], frame["name"], frame["brand"], strict=True)
    )


def test_a_partitioned_table_of_another_tool_keeps_its_partitions(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    table = tmp_path / "table"
    another_tools_table(
        table,
        [("A", "2026-11-01T00:00:00Z", "a-old", "acme"),
         ("Y", "2026-11-01T00:00:00Z", "y-kept", "acme"),  # shares A's file: rewritten
         ("X", "2026-11-01T00:00:00Z", "x-kept", "zeta")],
        partition_by=["brand"],
    )  # fmt: skip
    header = "id,dateUpdated,name,brand\n"
    first = serve(
        sandbox,
        tmp_path,
        ["A,2026-11-10T00:00:00Z,a-new,b/1 é%\nG,2026-11-10T00:00:00Z,g-new,\n"],
        header,
    )
    summary = merge(sandbox, first, table)
    assert summary.records_replaced == 1 and summary.records_added == 1  # type: ignore[attr-defined]
    assert table_rows(table) == [
        ("A", "a-new", "b/1 é%"), ("G", "g-new", None), ("X", "x-kept", "zeta"), ("Y", "y-kept", "acme"),
    ]  # fmt: skip
    written = deltalake.DeltaTable(str(table))
    assert written.metadata().partition_columns == ["brand"]
    only = written.to_pandas(filters=[("brand", "=", "zeta")])
    assert only["id"].tolist() == ["X"]
    # and a second merge into the table as it now is
    second = serve(sandbox, tmp_path, ["Y,2026-11-12T00:00:00Z,y-new,acme\n"], header)
    assert merge(sandbox, second, table).records_replaced == 1  # type: ignore[attr-defined]
    assert ("Y", "y-new", "acme") in table_rows(table) and len(table_rows(table)) == 4


def test_a_check_constraint_is_refused_before_anything_is_downloaded(
    sandbox: Sandbox, two: tuple[int, int], tmp_path: Path
) -> None:
    from datafiniti_loader import UnsupportedTable

    table = tmp_path / "table"
    frame = pd.DataFrame(
        {"id": ["Z"], "dateUpdated": pd.to_datetime(["2026-01-01"], utc=True), "value": [5]}
    )
    deltalake.write_deltalake(str(table), frame)
    deltalake.DeltaTable(str(table)).alter.add_constraint({"value_gt_0": "value > 0"})
    version = deltalake.DeltaTable(str(table)).version()
    with pytest.raises(UnsupportedTable, match=r"CHECK constraint\(s\) \['value_gt_0'\]"):
        merge(sandbox, two[0], table)
    assert deltalake.DeltaTable(str(table)).version() == version and bucket_gets(sandbox) == 0


@pytest.mark.parametrize(
    ("kind", "said"),
    [
        ("generated", r"generated column \('double' = value \* 2\)"),
        ("column mapping", r"column mapping \(delta.columnMapping.mode = name\)"),
        ("deletion vectors", r"writer feature\(s\) \['deletionVectors'\]"),
        ("change data feed", "change data feed"),
    ],
)
def test_tables_with_rules_this_library_cannot_keep_are_refused_by_name(
    sandbox: Sandbox, two: tuple[int, int], tmp_path: Path, kind: str, said: str
) -> None:
    from deltalake import Field, Schema
    from deltalake.schema import PrimitiveType

    from datafiniti_loader import UnsupportedTable

    table = tmp_path / "table"
    fields = [Field("id", PrimitiveType("string")), Field("dateUpdated", PrimitiveType("timestamp")),
              Field("value", PrimitiveType("long"))]  # fmt: skip
    configuration = {
        "column mapping": {"delta.columnMapping.mode": "name"},
        "deletion vectors": {"delta.enableDeletionVectors": "true"},
        "change data feed": {"delta.enableChangeDataFeed": "true"},
    }.get(kind)
    if kind == "generated":
        fields.append(
            Field(
                "double",
                PrimitiveType("long"),
                metadata={"delta.generationExpression": "value * 2"},
            )
        )
    deltalake.DeltaTable.create(str(table), schema=Schema(fields), configuration=configuration)
    with pytest.raises(UnsupportedTable, match=said):
        merge(sandbox, two[0], table)
    assert deltalake.DeltaTable(str(table)).version() == 0 and bucket_gets(sandbox) == 0


def test_an_append_only_table_takes_new_records_and_refuses_replacing_them(
    sandbox: Sandbox, two: tuple[int, int], tmp_path: Path
) -> None:
    from datafiniti_loader import UnsupportedTable

    first, second = two
    table = tmp_path / "table"
    merge(sandbox, first, table)
    deltalake.DeltaTable(str(table)).alter.set_table_properties({"delta.appendOnly": "true"})
    version = deltalake.DeltaTable(str(table)).version()
    with pytest.raises(UnsupportedTable, match=r"append-only.*replace the rows of 3 record"):
        merge(sandbox, second, table)
    assert deltalake.DeltaTable(str(table)).version() == version
    assert merge(sandbox, second, table, mode="append").committed  # type: ignore[attr-defined]
    only_new = serve(sandbox, tmp_path, ["Q,2026-11-20T00:00:00Z,q-new,20\n"])
    assert merge(sandbox, only_new, table).records_added == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("values", "column"),
    [
        # one partition: B's file is written again, its partition value read back from the log
        ([7, 7], "value"),
        ([False, False], "flag"),
        ([pd.Timestamp("2026-03-04").date()] * 2, "day"),
    ],
)
def test_partition_columns_of_other_types_keep_their_values(
    sandbox: Sandbox, tmp_path: Path, values: list, column: str
) -> None:
    table = tmp_path / "table"
    frame = pd.DataFrame(
        {"id": ["A", "B"], "dateUpdated": pd.to_datetime(["2026-11-01"] * 2, utc=True),
         "name": ["a-old", "b-kept"], column: values}
    )  # fmt: skip
    deltalake.write_deltalake(str(table), frame, partition_by=[column])
    newer = serve(sandbox, tmp_path, ["A,2026-11-10T00:00:00Z,a-new\n"], "id,dateUpdated,name\n")
    merge(sandbox, newer, table)
    got = deltalake.DeltaTable(str(table)).to_pandas().sort_values("id")
    assert got["name"].tolist() == ["a-new", "b-kept"]
    assert pd.isna(got[column].iloc[0]) and got[column].iloc[1] == values[1]


def test_a_table_partitioned_by_a_timestamp_is_refused(
    sandbox: Sandbox, two: tuple[int, int], tmp_path: Path
) -> None:
    from datafiniti_loader import UnsupportedTable

    table = tmp_path / "table"
    another_tools_table(
        table, [("A", "2026-11-01T00:00:00Z", "a", "x")], partition_by=["dateUpdated"]
    )
    with pytest.raises(UnsupportedTable, match="partitioned by 'dateUpdated' of type timestamp"):
        merge(sandbox, two[0], table)


def tidy_contents(root: Path) -> dict[str, list[tuple]]:
    """Each Delta table under ``root``: its rows as (record, index or name, value), sorted."""
    out = {}
    records = deltalake.DeltaTable(str(root / "records")).to_pandas()
    out["records"] = sorted(zip(records["id"].fillna(""), records["name"], strict=True))
    prices = deltalake.DeltaTable(str(root / "prices")).to_pandas()
    out["prices"] = sorted(
        zip(prices["_record_id"].fillna(""), prices["_index"], prices["amountMax"], strict=True)
    )
    return out


TIDY_EXPECTED = {
    # A, B, C: the newest copies; D, F: only in one download; E: tied, the newer request.
    "records": sorted(
        [
            ("A", "a-new"),
            ("B", "b-new"),
            ("C", "c-new"),
            ("D", "d-only"),
            ("E", "e-second"),
            ("F", "f-only"),
            ("", "no-id"),
        ]
    ),
    # B's copy has more rows, C's fewer: every old price row of theirs is gone.
    "prices": sorted(
        [
            ("A", 0, 1),
            ("A", 1, 2),
            ("B", 0, 11),
            ("B", 1, 12),
            ("C", 0, 13),
            ("D", 0, 7),
            ("E", 0, 14),
            ("F", 0, 15),
            ("", 0, 9),
        ]
    ),
}


@pytest.mark.parametrize("order", ["first-then-second", "second-then-first", "both-at-once"])
def test_tables_merge_record_by_record_in_every_table(
    sandbox: Sandbox, two: tuple[int, int], tmp_path: Path, order: str
) -> None:
    root = tmp_path / "lake"
    first, _ = two
    for summary in merged_in_order(sandbox, two, root, order, tables=True):
        assert summary.committed  # type: ignore[attr-defined]
    assert tidy_contents(root) == TIDY_EXPECTED
    again = merge(sandbox, first, root, tables=True)
    assert not again.committed  # type: ignore[attr-defined]
    assert tidy_contents(root) == TIDY_EXPECTED


def test_a_tables_merge_stopped_between_commits_is_completed_by_merging_again(
    sandbox: Sandbox, two: tuple[int, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datafiniti_loader.sinks import deltatables

    root = tmp_path / "lake"
    first, second = two
    merge(sandbox, first, root, tables=True)
    real = deltatables._merge_table

    def stop_at_records(path: str, name: str, *args: object, **kwargs: object) -> int:
        if name == "records":
            raise KeyboardInterrupt  # the user stops it after the other tables committed
        return real(path, name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(deltatables, "_merge_table", stop_at_records)
    with pytest.raises(KeyboardInterrupt):
        merge(sandbox, second, root, tables=True)
    monkeypatch.setattr(deltatables, "_merge_table", real)
    prices_version = deltalake.DeltaTable(str(root / "prices")).version()
    merge(sandbox, second, root, tables=True)
    assert deltalake.DeltaTable(str(root / "prices")).version() == prices_version  # not twice
    assert tidy_contents(root) == TIDY_EXPECTED


def test_the_cli_merges_tables(sandbox: Sandbox, two: tuple[int, int], tmp_path: Path) -> None:
    env = {**os.environ, "DATAFINITI_API_URL": sandbox.api_url, "DATAFINITI_API_TOKEN": sandbox.token,
           "DATAFINITI_CACHE_DIR": str(tmp_path / "cache")}  # fmt: skip
    root = tmp_path / "lake"
    for rid in two:
        done = subprocess.run(
            [sys.executable, "-m", "datafiniti_loader", "merge", str(rid), "--into", str(root),
             "--tables", "--quiet"],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "tables: prices, conflicts, records" in done.stdout
    assert tidy_contents(root) == TIDY_EXPECTED
