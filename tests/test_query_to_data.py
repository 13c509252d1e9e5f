"""From a query to data: count, create a download, wait, cancel, on API v3 and v4."""

from __future__ import annotations

import json
import logging
from collections import deque
from pathlib import Path

import pytest
import requests

from conftest import FAST_RETRY, Loader
from datafiniti_loader import (
    ApiError,
    Client,
    ConfigurationError,
    DatafinitiError,
    DownloadRequest,
    NoResults,
    RequestFailed,
    RequestNotReady,
    count,
    create_download,
    load_results,
)
from datafiniti_loader.remote.client import poll_pause
from datafiniti_loader.sandbox import Sandbox


@pytest.fixture
def queries(sandbox: Sandbox, fixture_files: dict[str, list[Path]]) -> Sandbox:
    sandbox.add_query("brand:Sony", fixture_files["products"], data_type="products")
    sandbox.add_query("*", fixture_files["businesses"], data_type="businesses")
    sandbox.add_query("brand:Sony", fixture_files["products_json"], format="json")
    return sandbox


def client(sandbox: Sandbox, version: str = "v3") -> Client:
    url = sandbox.api_url if version == "v3" else sandbox.api_url_v4
    return Client(sandbox.token, url, retry=FAST_RETRY, poll_interval=0.01)


def test_v3_creation_reads_the_id_from_the_303_without_following_it(queries: Sandbox) -> None:
    before = set(queries.requests)
    created = client(queries).create_download(
        "brand:Sony", data_type="products", num_records=7, view="products_all"
    )
    assert isinstance(created, DownloadRequest) and created.id not in before
    assert created.id in queries.requests
    (call,) = queries.creations
    assert (call.version, call.method, call.path, call.auth) == (
        "v3",
        "GET",
        "/v3/data/products",
        "Basic",
    )
    assert call.params == {
        "q": "brand:Sony",
        "format": "CSV",
        "download": "true",
        "records": "7",
        "view": "products_all",
    }
    api_calls = [(e.method, e.path, e.status) for e in queries.log if e.server == "api"]
    assert api_calls == [("GET", "/v3/data/products", 303)]  # the 303 is not followed
    assert queries.requests[created.id].records == 7


def test_v4_creation_posts_json_with_bearer_auth(queries: Sandbox) -> None:
    created = client(queries, "v4").create_download(
        "brand:Sony", num_records=5, format="json", view="product_flat_prices"
    )
    assert created.id in queries.requests and isinstance(created.id, int)
    (call,) = queries.creations
    assert (call.version, call.method, call.path, call.auth) == (
        "v4",
        "POST",
        "/v4/products/search",
        "Bearer",
    )
    assert call.params == {
        "query": "brand:Sony",
        "format": "JSON",
        "num_records": 5,
        "download": True,
        "view": "product_flat_prices",
    }
    assert created.status == "queued" and created.data_format == "json"


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        ({"id": "847070", "status": "queued", "num_records": 5}, 202),
        ({"id": 847070, "status": "queued", "num_records": 5}, 200),
        ({"_id": "847070", "status": "queued", "num_records": 5}, 202),
    ],
)
def test_v4_creation_accepts_ids_as_strings_integers_or_only_underscore_id(
    sandbox: Sandbox, answer: dict[str, object], status: int
) -> None:
    sandbox.faults.api_bodies.append((status, "application/json", json.dumps(answer).encode()))
    created = client(sandbox, "v4").create_download("x", num_records=5)
    assert created.id == 847070 and created.num_requested == 5


def test_v4_creation_without_any_id_is_an_api_error(sandbox: Sandbox) -> None:
    sandbox.faults.api_bodies.append((202, "application/json", b'{"status": "queued"}'))
    with pytest.raises(ApiError, match="without 'id' or '_id'"):
        client(sandbox, "v4").create_download("x", num_records=5)


@pytest.mark.parametrize("bad", [0, -3, True, None, "lots", 2.5])
def test_num_records_must_be_positive_or_all(queries: Sandbox, bad: object) -> None:
    with pytest.raises(ConfigurationError, match="num_records"):
        client(queries).create_download("brand:Sony", num_records=bad)  # type: ignore[arg-type]
    assert queries.creations == []


def test_other_arguments_are_checked_before_anything_is_sent(queries: Sandbox) -> None:
    with pytest.raises(ConfigurationError, match="data_type"):
        client(queries).create_download("x", data_type="product", num_records=1)
    with pytest.raises(ConfigurationError, match="format"):
        client(queries).create_download("x", num_records=1, format="xml")
    with pytest.raises(ConfigurationError, match="query is empty"):
        client(queries).create_download("  ", num_records=1)
    with pytest.raises(ConfigurationError, match="v3 has no people"):
        client(queries).create_download("x", data_type="people", num_records=1)
    assert [e for e in queries.log if e.server == "api"] == []


def test_all_records_is_explicit_and_v4_asks_for_the_count(queries: Sandbox) -> None:
    client(queries).create_download("brand:Sony", num_records="all")
    assert "records" not in queries.creations[0].params  # v3: leaving it out means every match
    created = client(queries, "v4").create_download("brand:Sony", num_records="all")
    found = client(queries, "v4").count("brand:Sony")
    assert queries.creations[1].params["num_records"] == found == created.num_requested > 0


def test_count_creates_no_download(queries: Sandbox) -> None:
    before = dict(queries.requests)
    assert (
        client(queries, "v4").count("brand:Sony")
        == queries.match("products", "csv", "brand:Sony").records
    )  # type: ignore[union-attr]
    everything = count(
        "anything", data_type="businesses", token=queries.token, api_url=queries.api_url_v4
    )
    assert everything == 30
    assert client(queries, "v4").count("nothing matches this") == 0
    assert queries.requests == before and queries.creations == []
    with pytest.raises(ConfigurationError, match="needs API v4"):
        client(queries).count("brand:Sony")


@pytest.mark.parametrize("version", ["v3", "v4"])
def test_a_query_matching_nothing_creates_nothing(queries: Sandbox, version: str) -> None:
    before = dict(queries.requests)
    with pytest.raises(NoResults, match="no credits"):
        client(queries, version).create_download("brand:Nobody", num_records=10)
    assert queries.requests == before


def test_v4_all_of_nothing_is_refused_before_creating(queries: Sandbox) -> None:
    with pytest.raises(NoResults):
        client(queries, "v4").create_download("brand:Nobody", num_records="all")
    assert queries.creations == []


@pytest.mark.parametrize("version", ["v3", "v4"])
def test_wait_goes_through_queued_and_running_to_completed(queries: Sandbox, version: str) -> None:
    api = client(queries, version)
    created = api.create_download("brand:Sony", num_records=100)
    seen: list[tuple[str, int, int]] = []

    def note(current: DownloadRequest) -> None:
        seen.append((current.status.lower(), current.num_downloaded, current.num_requested))

    done = api.wait(created, on_poll=note)
    assert done.is_done
    records = queries.requests[created.id].records
    if version == "v4":
        assert [s for s, _, _ in seen] == ["queued", "running", "completed"]
    else:
        assert [s for s, _, _ in seen] == ["started", "started", "completed"]
    assert seen[0][1] == 0 and 0 < seen[1][1] < records and seen[-1][1] == records
    assert [f.name for f in api.results(created)] == [
        f"{created.id}_1.csv",
        f"{created.id}_2.csv",
    ]


def test_sandbox_v4_results_fill_while_the_download_runs(queries: Sandbox) -> None:
    created = client(queries, "v4").create_download("brand:Sony", num_records=100)
    url = f"{queries.api_url_v4}/downloads/{created.id}"
    seen = []
    for _ in range(3):
        answer = requests.get(url, headers={"Authorization": f"Bearer {queries.token}"}).json()
        seen.append((answer["status"], len(answer["results"])))
    assert seen == [("queued", 0), ("running", 1), ("completed", 2)]


def test_v4_results_while_running_are_not_taken_for_the_whole_download(
    queries: Sandbox,
) -> None:
    api = client(queries, "v4")
    created = api.create_download("brand:Sony", num_records=100)
    api.request(created)  # queued -> running, half the files written
    with pytest.raises(RequestNotReady, match="running"):
        api.results(created)


def test_cancel_ends_the_wait_and_what_was_written_still_loads(
    queries: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    queries.creation_polls = (1, 5)
    api = client(queries, "v4")
    created = api.create_download("brand:Sony", num_records=100)
    for _ in range(5):  # queued, then running until half the records (one file) are written
        api.request(created)
    after = api.cancel(created)
    assert after.status == "cancelled" and after.is_failed
    assert [e.method for e in queries.log if e.server == "api"].count("DELETE") == 1
    with pytest.raises(RequestFailed, match="cancelled"):
        api.wait(created, timeout=5)
    # What it wrote before the cancel stays (and is charged): it loads, with a WARNING.
    with caplog.at_level(logging.WARNING, logger="datafiniti_loader"):
        written = api.results(created)
        frame = load_results(created, token=queries.token, api_url=api.api_url, progress=False)
    assert written and len(written) < 2 and "was cancelled" in caplog.text
    assert frame["_source_file"].unique().tolist() == [written[0].name] and len(frame) == 48
    with pytest.raises(ApiError, match="already cancelled"):
        api.cancel(created)
    with pytest.raises(ConfigurationError, match="needs API v4"):
        client(queries).cancel(created)


def test_wait_honours_its_timeout_while_a_download_runs(queries: Sandbox) -> None:
    queries.creation_polls = (1, 10_000)
    api = Client(queries.token, queries.api_url_v4, retry=FAST_RETRY, poll_interval=0.05)
    created = api.create_download("brand:Sony", num_records=100)
    with pytest.raises(RequestNotReady, match=r"after waiting 0\.3s"):
        api.wait(created, timeout=0.3)


def test_creation_is_never_repeated_after_a_server_error(queries: Sandbox) -> None:
    queries.faults.api_errors = deque([(500, None)])
    with pytest.raises(DatafinitiError, match="may or may not have created") as caught:
        client(queries, "v4").create_download("brand:Sony", num_records=5)
    assert caught.value.status == 500
    posts = [e for e in queries.log if e.method == "POST"]
    assert len(posts) == 1 and queries.creations == []


def test_creation_is_repeated_after_429_which_means_not_done(queries: Sandbox) -> None:
    queries.faults.api_errors = deque([(429, 0.01)])
    created = client(queries, "v4").create_download("brand:Sony", num_records=5)
    assert created.id in queries.requests and len(queries.creations) == 1


def test_create_then_load_with_wait(queries: Sandbox, loader: Loader) -> None:
    created = create_download(
        "brand:Sony", num_records=100, token=queries.token, api_url=queries.api_url_v4
    )
    frame = loader.load(created, api_url=queries.api_url_v4, wait=True)
    assert frame["id"].nunique() == queries.requests[created.id].records
    assert set(frame["_request_id"]) == {created.id}


def test_a_lost_reply_to_a_creation_is_not_sent_again(queries: Sandbox) -> None:
    queries.faults.api_hangups = 1
    with pytest.raises(DatafinitiError, match="may or may not have created"):
        client(queries, "v4").create_download("brand:Sony", num_records=5)
    assert len(queries.creations) == 0 and [e.status for e in queries.log] == [0]
    queries.faults.api_hangups = 1  # a status poll is safe to repeat
    assert client(queries, "v4").count("brand:Sony") == 36


def test_creation_is_repeated_when_no_connection_was_made(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api = Client("t", f"http://127.0.0.1:{port}/v4", retry=FAST_RETRY)
    with pytest.raises(DatafinitiError, match="after 4 tries") as caught:
        api.create_download("brand:Sony", num_records=5)
    assert "may or may not" not in str(caught.value)


def test_polls_come_after_1_2_and_4_seconds_then_every_5() -> None:
    assert [poll_pause(n, 5.0) for n in range(6)] == [1, 2, 4, 5, 5, 5]
    assert poll_pause(50, 30.0) == 30 and poll_pause(0, 0.01) == 0.01


def test_wait_logs_a_line_per_change_not_per_poll(
    sandbox: Sandbox, fixture_files: dict[str, list[Path]], caplog: pytest.LogCaptureFixture
) -> None:
    rid = sandbox.add_request(fixture_files["products"], pending_polls=6, records=0)
    with caplog.at_level("INFO", logger="datafiniti_loader"):
        client(sandbox).wait(rid)
    said = [r.getMessage() for r in caplog.records if "is STARTED" in r.getMessage()]
    assert said == [f"request {rid} is STARTED"]
