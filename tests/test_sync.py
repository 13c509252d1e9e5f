"""sync(): a Delta table kept current from a query, through the sandbox on v4 and v3."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("deltalake")

from deltalake import DeltaTable

from datafiniti_loader import (
    ColumnNotFound,
    ConfigurationError,
    DownloadMayExist,
    RequestFailed,
    RequestNotReady,
    SyncMismatch,
    SyncPending,
    TooManyRecords,
    delta_history,
    sync,
)
from datafiniti_loader.sandbox import Sandbox
from datafiniti_loader.syncing.state import Journal, Pending, SyncIdentity

QUERY = "categories:shoes AND brand:Acme"


def product(ident: str, updated: str, name: str, prices: list[float] | None = None) -> dict:
    return {
        "id": ident,
        "name": name,
        "brand": "Acme",
        "dateAdded": "2026-10-01T00:00:00Z",
        "dateUpdated": updated,
        "prices": [{"amountMax": p, "currency": "USD"} for p in (prices or [9.5])],
    }


def serve(sandbox: Sandbox, directory: Path, records: list[dict], *, version: int) -> None:
    """Register QUERY as matching ``records`` (again: the records changed)."""
    path = directory / f"catalog_{version}.txt"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    sandbox.add_query(QUERY, [path], format="json")


FIRST = [
    product("A", "2026-11-01T08:00:00Z", "Runner"),
    product("B", "2026-11-02T09:30:00Z", "Walker", [20.0, 18.0]),
    product("C", "2026-11-02T09:30:00Z", "Hiker"),
]


def rows(path: Path, tables: bool = False) -> dict[str, dict[str, Any]]:
    table = DeltaTable(str(path / "records" if tables else path)).to_pyarrow_table()
    return {r["id"]: r for r in table.to_pylist()}


@pytest.fixture
def api(sandbox: Sandbox) -> dict[str, Any]:
    sandbox.creation_polls = (0, 0)  # downloads are ready at the first poll
    return {"token": sandbox.token, "api_url": sandbox.api_url_v4, "progress": False}


@pytest.mark.parametrize("tables", [False, True])
def test_first_sync_then_only_what_changed_and_nothing_when_nothing_did(
    sandbox: Sandbox, api: dict[str, Any], tmp_path: Path, tables: bool
) -> None:
    serve(sandbox, tmp_path, FIRST, version=1)
    target = tmp_path / "shoes"
    asked: list[int] = []

    first = sync(
        QUERY, str(target), tables=tables, confirm=lambda n: asked.append(n) or True, **api
    )
    assert (first.status, first.counted, first.downloaded, first.records_added) == (
        "merged", 3, 3, 3
    )  # fmt: skip
    assert first.asked == QUERY and first.previous_mark is None
    assert first.mark == "2026-11-02T09:30:00Z" and asked == [3]
    assert sandbox.credits_spent == 3

    # Nothing changed: a free count, no download, no version, and it says so.
    again = sync(QUERY, str(target), tables=tables, **api)
    assert again.status == "unchanged" and again.counted == 0 and again.request_id is None
    assert again.version == first.version and not again.committed
    assert "no record changed since 2026-11-02T09:30:00Z" in again.describe()
    assert len(sandbox.downloads_created) == 1 and sandbox.credits_spent == 3

    # A updated, D added, B and C as they were: exactly A and D are bought.
    changed = [
        product("A", "2026-11-05T10:00:00Z", "Runner 2"),
        FIRST[1],
        FIRST[2],
        product("D", "2026-11-04T00:00:00Z", "Sandal"),
    ]
    serve(sandbox, tmp_path, changed, version=2)
    third = sync(QUERY, str(target), tables=tables, **api)
    assert third.asked == f"({QUERY}) AND dateUpdated:{{2026-11-02T09:30:00Z TO *]"
    assert (third.counted, third.downloaded, third.records_added, third.records_replaced) == (
        2, 2, 1, 1
    )  # fmt: skip
    assert third.mark == "2026-11-05T10:00:00Z" and third.previous_mark == first.mark
    assert sandbox.credits_spent == 5
    held = rows(target, tables)
    assert sorted(held) == ["A", "B", "C", "D"] and held["A"]["name"] == "Runner 2"
    if tables:
        prices = DeltaTable(str(target / "prices")).to_pyarrow_table().to_pylist()
        assert sorted((p["_record_id"], p["amountMax"]) for p in prices) == [
            ("A", 9.5), ("B", 18.0), ("B", 20.0), ("C", 9.5), ("D", 9.5)
        ]  # fmt: skip

    history = delta_history(str(target / "records" if tables else target))
    assert history[0]["query"] == QUERY and history[0]["mark"] == "2026-11-05T10:00:00Z"
    assert not (target / "_datafiniti_sync.json").exists()


def test_a_sync_stopped_after_its_download_was_created_uses_that_download_next_time(
    sandbox: Sandbox, api: dict[str, Any], tmp_path: Path
) -> None:
    serve(sandbox, tmp_path, FIRST, version=1)
    target = tmp_path / "shoes"
    sandbox.creation_polls = (50, 50)  # the download stays in preparation
    with pytest.raises(RequestNotReady) as raised:
        sync(QUERY, str(target), wait=0.5, **api)  # gives up waiting, like Ctrl-C or a crash
    assert "still preparing" in str(raised.value)
    journal = json.loads((target / "_datafiniti_sync.json").read_text())
    assert journal["request_id"] == sandbox.downloads_created[0].id
    assert sandbox.token not in json.dumps(journal)

    sandbox.downloads_created[0].pending_polls = 0  # Datafiniti finishes it meanwhile
    done = sync(QUERY, str(target), **api)
    assert done.status == "merged" and done.request_id == sandbox.downloads_created[0].id
    assert len(sandbox.downloads_created) == 1 and sandbox.credits_spent == 3  # bought once
    assert sorted(rows(target)) == ["A", "B", "C"]
    assert not (target / "_datafiniti_sync.json").exists()


def test_a_create_call_without_an_answer_is_not_repeated_but_can_be_adopted(
    sandbox: Sandbox, api: dict[str, Any], tmp_path: Path
) -> None:
    serve(sandbox, tmp_path, FIRST, version=1)
    target = tmp_path / "shoes"
    sandbox.faults.creation_hangups = 1  # made, and charged, but the answer never comes
    with pytest.raises(DownloadMayExist) as raised:
        sync(QUERY, str(target), **api)
    assert "may or may not have created the download" in str(raised.value)

    with pytest.raises(SyncPending) as pending:
        sync(QUERY, str(target), **api)
    assert "request_id=ID" in str(pending.value)
    assert len(sandbox.downloads_created) == 1  # asked once only

    made = sandbox.downloads_created[0].id
    done = sync(QUERY, str(target), request_id=made, **api)
    assert done.status == "merged" and done.request_id == made
    assert len(sandbox.downloads_created) == 1 and sorted(rows(target)) == ["A", "B", "C"]


def test_max_records_and_a_refusal_spend_nothing(
    sandbox: Sandbox, api: dict[str, Any], tmp_path: Path
) -> None:
    serve(sandbox, tmp_path, FIRST, version=1)
    target = tmp_path / "shoes"
    with pytest.raises(TooManyRecords) as too_many:
        sync(QUERY, str(target), max_records=2, **api)
    assert too_many.value.count == 3 and "3 products record(s) match" in str(too_many.value)
    refused = sync(QUERY, str(target), confirm=lambda n: False, **api)
    assert refused.status == "refused" and "no credits spent" in refused.describe()
    assert sandbox.downloads_created == [] and not (target / "_delta_log").exists()
    assert not (target / "_datafiniti_sync.json").exists()


def test_a_path_is_one_querys(sandbox: Sandbox, api: dict[str, Any], tmp_path: Path) -> None:
    serve(sandbox, tmp_path, FIRST, version=1)
    sandbox.add_query("brand:Other", [tmp_path / "catalog_1.txt"], format="json")
    target = tmp_path / "shoes"
    sync(QUERY, str(target), **api)
    for other in (
        {"query": "brand:Other"},
        {"query": QUERY, "view": "product_flat_prices"},
        {"query": QUERY, "data_type": "businesses"},
        {"query": QUERY, "tables": True},
    ):
        kwargs = {**api, **other}
        with pytest.raises(SyncMismatch):
            sync(kwargs.pop("query"), str(target), **kwargs)
    assert len(sandbox.downloads_created) == 1


def test_v3_needs_max_records_and_a_short_download_keeps_the_mark(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    serve(sandbox, tmp_path, FIRST, version=1)
    v3 = {"token": sandbox.token, "api_url": sandbox.api_url, "progress": False}
    target = tmp_path / "shoes"
    with pytest.raises(ConfigurationError, match="max_records"):
        sync(QUERY, str(target), **v3)
    short = sync(QUERY, str(target), max_records=2, **v3)
    assert short.status == "incomplete" and short.downloaded == 2 and short.mark is None
    assert sandbox.credits_spent == 2
    whole = sync(QUERY, str(target), max_records=10, **v3)
    assert whole.status == "merged" and whole.mark == "2026-11-02T09:30:00Z"
    assert sorted(rows(target)) == ["A", "B", "C"]
    nothing = sync(QUERY, str(target), max_records=10, **v3)  # v3's 400: nothing matched
    assert nothing.status == "unchanged" and sandbox.credits_spent == 5


def test_the_cli_says_what_changed_asks_and_shows_the_marks_in_history(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    from test_cli import run

    serve(sandbox, tmp_path, FIRST, version=1)
    env = {
        "DATAFINITI_API_URL": sandbox.api_url_v4,
        "DATAFINITI_API_TOKEN": sandbox.token,
        "DATAFINITI_CACHE_DIR": str(tmp_path / "cache"),
    }
    target = str(tmp_path / "shoes")
    refused = run("sync", QUERY, "--into", target, env=env, answer="n\n")
    assert refused.returncode == 1 and "not confirmed: nothing downloaded" in refused.stderr
    assert f"3 products record(s) match {QUERY!r} (a first sync)" in refused.stdout
    assert "Download them? [y/N]" in refused.stderr and sandbox.downloads_created == []

    made = run("-q", "sync", QUERY, "--into", target, env=env, answer="y\n")
    assert made.returncode == 0, made.stderr
    assert "3 record(s) downloaded, 3 added" in made.stdout
    assert "mark 2026-11-02T09:30:00Z" in made.stdout

    serve(sandbox, tmp_path, [product("A", "2026-11-07T00:00:00Z", "Runner 3")], version=2)
    again = run("-q", "sync", QUERY, "--into", target, "--yes", env=env)
    assert again.returncode == 0, again.stderr
    assert "1 products record(s) changed since 2026-11-02T09:30:00Z" in again.stdout
    assert "Download them?" not in again.stderr and "1 replaced" in again.stdout

    nothing = run("-q", "sync", QUERY, "--into", target, "--yes", env=env)
    assert "no record changed since 2026-11-07T00:00:00Z" in nothing.stdout

    shown = run("history", target, env=env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].endswith("MARK  QUERY")
    assert lines[1].split()[0] == "1" and f"2026-11-07T00:00:00Z  {QUERY}" in lines[1]
    assert f"2026-11-02T09:30:00Z  {QUERY}" in lines[2]

    other = run("sync", "brand:Other", "--into", target, "--yes", env=env)
    assert other.returncode == 1 and "another query" in other.stderr
    assert "Traceback" not in other.stderr
    assert len(sandbox.downloads_created) == 2


def test_a_sync_stopped_after_its_commit_finishes_without_buying_or_committing_again(
    sandbox: Sandbox, api: dict[str, Any], tmp_path: Path
) -> None:
    serve(sandbox, tmp_path, FIRST, version=1)
    target = tmp_path / "shoes"
    first = sync(QUERY, str(target), **api)
    # As if the run had stopped between its commit and clearing the journal.
    identity = SyncIdentity(QUERY, "products", "json", None, False)
    journal = Journal(str(target), None)
    journal.write(
        Pending(identity, QUERY, 3, None, "2026-12-02T00:00:00Z", first.request_id), then=""
    )
    again = sync(QUERY, str(target), **api)
    assert again.request_id == first.request_id and not again.committed
    assert again.version == first.version and again.mark == first.mark
    assert len(sandbox.downloads_created) == 1 and journal.read() is None


@pytest.mark.parametrize("tables", [False, True])
def test_a_table_on_an_object_store_keeps_its_mark_and_its_journal_there(
    sandbox: Sandbox, api: dict[str, Any], tmp_path: Path, s3_bucket: Any, tables: bool
) -> None:
    bucket, options = s3_bucket
    target = f"{bucket}/shoes"
    serve(sandbox, tmp_path, FIRST, version=1)
    sandbox.creation_polls = (50, 50)
    with pytest.raises(RequestNotReady):
        sync(QUERY, target, tables=tables, storage_options=options, wait=0.2, **api)
    in_flight = Journal(target, options).read()  # in the bucket, beside the table
    assert in_flight is not None and in_flight.request_id == sandbox.downloads_created[0].id
    sandbox.downloads_created[0].pending_polls = 0
    sandbox.creation_polls = (0, 0)
    first = sync(QUERY, target, tables=tables, storage_options=options, **api)
    assert first.status == "merged" and first.request_id == sandbox.downloads_created[0].id
    serve(sandbox, tmp_path, [product("B", "2026-11-09T00:00:00Z", "Walker 2")], version=2)
    second = sync(QUERY, target, tables=tables, storage_options=options, **api)
    assert (second.downloaded, second.records_replaced, second.mark) == (
        1, 1, "2026-11-09T00:00:00Z"
    )  # fmt: skip
    assert len(sandbox.downloads_created) == 2
    table = DeltaTable(f"{target}/records" if tables else target, storage_options=options)
    names = {r["id"]: r["name"] for r in table.to_pyarrow_table().to_pylist()}
    assert names == {"A": "Runner", "B": "Walker 2", "C": "Hiker"}
    assert Journal(target, options).read() is None


def test_csv_downloads_sync_record_by_record_across_their_rows(
    sandbox: Sandbox, api: dict[str, Any], tmp_path: Path
) -> None:
    header = "id,name,dateUpdated,reviews.rating,reviews.text\n"
    first = tmp_path / "v1.csv"
    first.write_text(
        header
        + "H1,Inn,2026-11-01T00:00:00Z,5,great\nH2,Lodge,2026-11-02T00:00:00Z,3,ok\n"
        + "H1,Inn,2026-11-01T00:00:00Z,4,fine\n"
    )
    sandbox.add_query(QUERY, [first], data_type="businesses", format="csv")
    target = tmp_path / "hotels"
    kwargs = {"data_type": "businesses", "format": "csv", "tables": True, **api}
    made = sync(QUERY, str(target), **kwargs)
    assert (made.counted, made.records_added, made.mark) == (2, 2, "2026-11-02T00:00:00Z")

    second = tmp_path / "v2.csv"  # H1 has a new review; H2 is as it was
    second.write_text(
        header
        + "H1,Inn,2026-11-06T00:00:00Z,5,great\nH2,Lodge,2026-11-02T00:00:00Z,3,ok\n"
        + "H1,Inn,2026-11-06T00:00:00Z,4,fine\nH1,Inn,2026-11-06T00:00:00Z,1,noisy\n"
    )
    sandbox.add_query(QUERY, [second], data_type="businesses", format="csv")
    again = sync(QUERY, str(target), **kwargs)
    assert (again.counted, again.downloaded, again.records_replaced) == (1, 1, 1)
    assert sandbox.credits_spent == 3
    reviews = DeltaTable(str(target / "reviews")).to_pyarrow_table().to_pylist()
    assert sorted((r["_record_id"], r["_index"], r["text"]) for r in reviews) == [
        ("H1", 0, "great"), ("H1", 1, "fine"), ("H1", 2, "noisy"), ("H2", 0, "ok")
    ]  # fmt: skip


def test_a_failed_or_unknown_download_is_given_up_only_when_asked(
    sandbox: Sandbox, api: dict[str, Any], tmp_path: Path
) -> None:
    serve(sandbox, tmp_path, FIRST, version=1)
    target = str(tmp_path / "shoes")
    sandbox.faults.creation_hangups = 1
    with pytest.raises(DownloadMayExist):
        sync(QUERY, target, **api)
    with pytest.raises(SyncPending):
        sync(QUERY, target, **api)
    # The user looked and decided to ask again: a second download is made and merged.
    sandbox.creation_polls = (50, 50)
    with pytest.raises(RequestNotReady):
        sync(QUERY, target, forget_pending=True, wait=0.2, **api)
    assert len(sandbox.downloads_created) == 2
    sandbox.downloads_created[1].cancel()  # cancelled in the portal meanwhile
    with pytest.raises(RequestFailed, match="forget_pending=True"):
        sync(QUERY, target, **api)
    assert len(sandbox.downloads_created) == 2  # failing is not a reason to buy again
    sandbox.creation_polls = (0, 0)
    done = sync(QUERY, target, forget_pending=True, **api)
    assert done.status == "merged" and len(sandbox.downloads_created) == 3


def test_records_without_dates_are_refused_with_what_to_do(
    sandbox: Sandbox, api: dict[str, Any], tmp_path: Path
) -> None:
    undated = [{k: v for k, v in r.items() if k != "dateUpdated"} for r in FIRST]
    serve(sandbox, tmp_path, undated, version=1)
    target = str(tmp_path / "shoes")
    with pytest.raises(ColumnNotFound) as raised:
        sync(QUERY, target, **api)
    message = str(raised.value)
    assert "cannot be synced" in message and "'dateUpdated'" in message
    assert "--dedupe" not in message and "forget_pending=True" in message


def test_the_journal_is_left_alone_by_delta_readers_and_vacuum(
    sandbox: Sandbox, api: dict[str, Any], tmp_path: Path
) -> None:
    serve(sandbox, tmp_path, FIRST, version=1)
    target = tmp_path / "shoes"
    sync(QUERY, str(target), **api)
    serve(sandbox, tmp_path, [product("A", "2026-11-08T00:00:00Z", "Runner 4")], version=2)
    sync(QUERY, str(target), **api)  # A's old file is replaced: vacuum has one to delete
    serve(sandbox, tmp_path, [product("C", "2026-11-09T00:00:00Z", "Hiker 2")], version=3)
    sandbox.creation_polls = (50, 50)
    with pytest.raises(RequestNotReady):
        sync(QUERY, str(target), wait=0.2, **api)
    table = DeltaTable(str(target))
    deleted = table.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    assert deleted and (target / "_datafiniti_sync.json").exists()
    assert sorted(r["id"] for r in table.to_pyarrow_table().to_pylist()) == ["A", "B", "C"]


def test_records_bought_that_the_table_already_had_still_move_the_mark(
    sandbox: Sandbox, api: dict[str, Any], tmp_path: Path
) -> None:
    from datafiniti_loader import to_delta

    serve(sandbox, tmp_path, FIRST, version=1)
    target = tmp_path / "shoes"
    first = sync(QUERY, str(target), **api)
    # Someone merges a newer copy of A into the table by hand, outside the sync.
    newer = tmp_path / "by_hand.txt"
    newer.write_text(json.dumps(product("A", "2026-11-06T00:00:00Z", "Runner by hand")) + "\n")
    to_delta(sandbox.add_request([newer]), str(target), **api)
    # Datafiniti's copy changed after the mark, but is older than the table's.
    serve(sandbox, tmp_path, [product("A", "2026-11-05T00:00:00Z", "Runner 2")], version=2)
    bought = sync(QUERY, str(target), **api)
    assert bought.downloaded == 1 and bought.records_unchanged == 1 and bought.committed
    assert bought.mark == "2026-11-05T00:00:00Z" and bought.version == first.version + 2
    assert rows(target)["A"]["name"] == "Runner by hand"  # the newer copy stays
    again = sync(QUERY, str(target), **api)
    assert again.status == "unchanged" and len(sandbox.downloads_created) == 2  # not bought again
