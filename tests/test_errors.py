"""Every failure a user can meet arrives as a typed DatafinitiError that says what to do."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from conftest import FAST_RETRY, Loader
from datafiniti_loader import (
    ApiError,
    Client,
    ColumnNotFound,
    ConfigurationError,
    DatafinitiError,
    DownloadError,
    ParseError,
    ResultExpired,
)
from datafiniti_loader.sandbox import Sandbox


def client_for(sandbox: Sandbox) -> Client:
    return Client(sandbox.token, sandbox.api_url, retry=FAST_RETRY)


def chain(error: BaseException) -> list[BaseException]:
    """The error and every exception riding along with it."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def everything_said(error: BaseException) -> str:
    parts = []
    for link in chain(error):
        parts += [repr(link), str(link), repr(link.args), repr(vars(link))]
    return "\n".join(parts)


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("text/html", b"<html><body>Please log in to the proxy</body></html>", "text/html"),
        ("application/json", b'{"records": []}', "a JSON list of result files"),
        ("application/json", b'"just a string"', "application/json"),
    ],
)
def test_results_that_are_not_what_datafiniti_sends_say_so(
    sandbox: Sandbox, fixture_files, content_type: str, body: bytes, expected: str
) -> None:
    rid = sandbox.add_request(fixture_files["businesses"])
    sandbox.faults.api_bodies.append((200, content_type, body))
    with pytest.raises(ApiError, match="not what Datafiniti sends") as caught:
        client_for(sandbox).results(rid)
    message = str(caught.value)
    assert expected in message and "HTTP 200" in message
    assert "no result files" not in message


@pytest.mark.parametrize(
    "element",
    [
        {"id": "seven", "url": "http://127.0.0.1:9/b/1_1.csv", "date_created": "2017-1-11"},
        {"id": [7], "url": "http://127.0.0.1:9/b/1_1.csv", "date_created": "2017-1-11"},
        {"id": 7, "date_created": "2017-1-11"},
        "a string where a result should be",
    ],
)
def test_a_malformed_result_is_an_api_error_not_a_raw_exception(
    sandbox: Sandbox, fixture_files, element: Any
) -> None:
    rid = sandbox.add_request(fixture_files["businesses"])
    sandbox.faults.api_bodies.append((200, "application/json", json.dumps([element]).encode()))
    with pytest.raises(ApiError, match=f"/results/{rid}"):
        client_for(sandbox).results(rid)


def test_a_deeply_nested_api_answer_is_an_api_error(sandbox: Sandbox, fixture_files) -> None:
    rid = sandbox.add_request(fixture_files["businesses"])
    sandbox.faults.api_bodies.append((200, "application/json", b"[" * 100_000 + b"]" * 100_000))
    with pytest.raises(ApiError):
        client_for(sandbox).results(rid)


def test_a_redirect_loop_is_an_api_error(sandbox: Sandbox) -> None:
    sandbox.faults.api_redirect = f"{sandbox.api_url}/results/1"
    with pytest.raises(ApiError, match="kept redirecting") as caught:
        client_for(sandbox).results(1)
    assert sandbox.token not in everything_said(caught.value)


@pytest.mark.parametrize(
    ("api_url", "match"),
    [
        ("https://api.datafiniti.co", "does not end in /v3 or /v4"),
        ("https://api.datafiniti.co/v2", "does not end in /v3 or /v4"),
        ("http://api.datafiniti.co/v3", "plain http://"),
        ("https://api.datafiniti.co/v3?token=abc", "no query"),
        ("ftp://api.datafiniti.co/v3", "http"),
    ],
)
def test_an_api_url_that_cannot_work_is_refused_at_once(api_url: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        Client("a-token", api_url)


def test_plain_http_to_another_host_can_be_allowed_for_a_test_rig(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATAFINITI_ALLOW_INSECURE_HTTP", "1")
    assert Client("a-token", "http://rig.internal/v3").api_url == "http://rig.internal/v3"


def test_a_partition_column_no_file_has_is_column_not_found(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    rid = sandbox.add_request(fixture_files["businesses"])
    with pytest.raises(ColumnNotFound, match="provinc"):
        loader.parquet(rid, tmp_path / "out", partition_by="provinc")
    assert not (tmp_path / "out").exists()


def test_a_result_file_with_a_very_long_name_loads(
    loader: Loader, sandbox: Sandbox, fixture_files
) -> None:
    long_name = "x" * 300 + ".csv"
    rid = sandbox.add_request(fixture_files["businesses"], names=[long_name])
    assert len(loader.load(rid)) == 30
    assert len(loader.load(rid)) == 30  # and again, from the cache


def test_deeply_nested_json_in_a_result_file_is_a_parse_error(
    loader: Loader, sandbox: Sandbox, tmp_path: Path
) -> None:
    deep = tmp_path / "deep.txt"
    deep.write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    rid = sandbox.add_request([deep])
    with pytest.raises(ParseError, match="deep"):
        loader.load(rid)


def test_an_unknown_output_is_a_configuration_error(loader: Loader, sandbox: Sandbox) -> None:
    with pytest.raises(ConfigurationError, match="output must be one of"):
        loader.load(1, output="excel")


def test_no_exception_carries_the_signed_url_or_the_token(
    loader: Loader, sandbox: Sandbox, fixture_files
) -> None:
    rid = sandbox.add_request(fixture_files["products"][:1])
    secrets = [sandbox.token, sandbox.signer.security_token, "X-Amz-Signature"]
    sandbox.faults.drops.extend([10_000] * 4)
    sandbox.faults.bucket_errors.append((500, None))
    failures: list[DatafinitiError] = []
    with pytest.raises(DownloadError) as caught:
        loader.load(rid, cache=False)
    failures.append(caught.value)
    sandbox.faults.api_errors.extend([(500, None)] * 4)
    with pytest.raises(DatafinitiError) as caught_api:
        loader.load(rid, cache=False)
    failures.append(caught_api.value)
    sandbox.faults.api_errors.clear()
    sandbox.faults.expire_signings = 5
    with pytest.raises(ResultExpired) as caught_expired:
        loader.load(rid, cache=False)
    failures.append(caught_expired.value)
    sandbox.faults.expire_signings = 0
    broken = loader.cache.parent / "broken.csv"
    broken.write_bytes(b"id,name\n1,a,extra\n")
    with pytest.raises(ParseError) as caught_parse:
        loader.load(sandbox.add_request([broken]))
    failures.append(caught_parse.value)
    for failure in failures:
        said = everything_said(failure)
        assert not [s for s in secrets if s in said], said[:2000]


def test_a_plain_http_result_url_on_another_host_is_warned_about(
    loader: Loader, sandbox: Sandbox, fixture_files, caplog: pytest.LogCaptureFixture
) -> None:
    rid = sandbox.add_request(fixture_files["businesses"])
    client = client_for(sandbox)
    (file,) = client.results(rid)
    from datafiniti_loader.fetch.transport import Transport

    remote = type(file)(**{**file.__dict__, "url": file.url.replace("127.0.0.1", "bucket.example")})
    transport = Transport(FAST_RETRY)
    with caplog.at_level(logging.WARNING, logger="datafiniti_loader"):
        transport._warn_if_plain_http(remote)
        transport._warn_if_plain_http(file)
    (warning,) = caplog.records
    assert "plain http://" in warning.getMessage() and "bucket.example" in warning.getMessage()
    assert "X-Amz" not in warning.getMessage()


@pytest.mark.parametrize("suffix", [".csv", ".txt"])
def test_a_data_column_named_like_provenance_is_one_rule_in_every_output(
    loader: Loader, sandbox: Sandbox, tmp_path: Path, suffix: str
) -> None:
    from datafiniti_loader import ColumnConflict, to_delta

    source = tmp_path / f"9_1{suffix}"
    if suffix == ".csv":
        source.write_text("id,dateUpdated,_source_row,_request_id\na,2020-01-01T00:00:00Z,x7,r1\n")
    else:
        source.write_text(
            '{"id":"a","dateUpdated":"2020-01-01T00:00:00Z","_source_row":"x7","_request_id":"r1"}\n'
        )
    rid = sandbox.add_request([source])
    for output in ("pandas", "arrow", "polars"):
        with pytest.raises(
            ColumnConflict, match=r"\['_source_row', '_request_id'\].*provenance=False"
        ):
            loader.load(rid, output=output)
    with pytest.raises(ColumnConflict):
        loader.parquet(rid, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ColumnConflict):
        to_delta(rid, str(tmp_path / "table"), **loader.options({}))
    assert not (tmp_path / "table").exists()
    # Without provenance the files' own columns are plain data, in every output.
    frame = loader.load(rid, provenance=False)
    assert frame.to_dict("records")[0]["_source_row"] == "x7"
    assert loader.load(rid, provenance=False, columns=["_request_id"])["_request_id"].tolist() == [
        "r1"
    ]
    loader.parquet(rid, tmp_path / "out", provenance=False)
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "out")["_source_row"].to_pylist() == ["x7"]


@pytest.mark.parametrize("date", ["0000-00-00", 10**30, "99999-1-1 00:00:00"])
def test_a_malformed_date_created_is_null_provenance_not_a_failed_load(
    loader: Loader, sandbox: Sandbox, fixture_files, caplog, date: object
) -> None:
    import requests

    rid = sandbox.add_request(fixture_files["products"])
    answer = requests.get(
        f"{sandbox.api_url}/results/{rid}", auth=(sandbox.token, ""), timeout=5
    ).json()
    answer[0]["date_created"] = date
    sandbox.faults.api_bodies.append((200, "application/json", json.dumps(answer).encode()))
    with caplog.at_level(logging.WARNING, logger="datafiniti_loader"):
        frame = loader.load(rid)
    assert len(frame) == 72
    first = frame[frame["_source_file"] == f"{rid}_1.csv"]
    assert first["_result_created_at"].isna().all()
    assert frame[frame["_source_file"] == f"{rid}_2.csv"]["_result_created_at"].notna().all()
    assert "date_created is not a date" in caplog.text and str(date)[:12] in caplog.text


def test_an_api_answer_past_the_size_limit_is_refused_unread(
    sandbox: Sandbox, fixture_files
) -> None:
    rid = sandbox.add_request(fixture_files["businesses"])
    element = b'{"id": 1, "url": "http://127.0.0.1:9/b/1_1.csv"},'
    huge = b"[" + element * (34_000_000 // len(element)) + b"{}]"  # over 32 MiB
    sandbox.faults.api_bodies.append((200, "application/json", huge))
    with pytest.raises(ApiError, match=r"larger than 32 MB"):
        client_for(sandbox).results(rid)
    assert len(client_for(sandbox).results(rid)) == 1  # the next answer is read as ever


def test_a_header_of_a_million_columns_is_refused_before_any_row_is_read(
    loader: Loader, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datafiniti_loader import ParseError

    wide = tmp_path / "9_1.csv"
    wide.write_text(",".join(f"c{i}" for i in range(1_000_000)) + "\n" + "1," * 999_999 + "1\n")
    rid = sandbox.add_request([wide])
    with pytest.raises(
        ParseError, match=r"1,000,000 columns, more than the 20,000.*DATAFINITI_MAX_COLUMNS"
    ):
        loader.parquet(rid, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    narrow = tmp_path / "9_2.txt"
    narrow.write_text('{"a":1,"b":2,"c":3}\n')
    monkeypatch.setenv("DATAFINITI_MAX_COLUMNS", "2")  # the limit is the user's to move
    with pytest.raises(ParseError, match="3 columns, more than the 2"):
        loader.load(sandbox.add_request([narrow]))
    monkeypatch.setenv("DATAFINITI_MAX_COLUMNS", "3")
    assert loader.load(sandbox.add_request([narrow]))["c"].tolist() == [3]


def test_a_column_named_in_another_case_is_suggested(
    loader: Loader, sandbox: Sandbox, fixture_files
) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    with pytest.raises(ColumnNotFound, match=r"\['ID', 'Name'\]\. Did you mean 'id'\?"):
        loader.load(rid, columns=["ID", "Name"])
