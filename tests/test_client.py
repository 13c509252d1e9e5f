import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import FAST_RETRY
from datafiniti_loader import (
    AuthenticationError,
    Client,
    DatafinitiError,
    NoResults,
    RequestFailed,
    RequestNotFound,
    RequestNotReady,
)
from datafiniti_loader.sandbox import Sandbox


def client_for(sandbox: Sandbox, token: str | None = None) -> Client:
    return Client(token or sandbox.token, sandbox.api_url, retry=FAST_RETRY, poll_interval=0.01)


def test_results_lists_files_in_id_order_with_utc_dates(sandbox: Sandbox, fixture_files) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    files = client_for(sandbox).results(rid)
    assert [f.name for f in files] == [f"{rid}_1.csv", f"{rid}_2.csv"]
    assert [f.id for f in files] == sorted(f.id for f in files)
    assert all(f.request_id == rid and f.format == "csv" for f in files)
    assert all(f.date_created and f.date_created.tzinfo is UTC for f in files)
    assert files[0].date_created <= datetime.now(UTC)


def test_basic_auth_token_as_user_name(sandbox: Sandbox, fixture_files) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    with pytest.raises(AuthenticationError, match="401") as caught:
        client_for(sandbox, token="wrong-token").results(rid)
    assert caught.value.status == 401
    assert "wrong-token" not in str(caught.value)


def test_unknown_request(sandbox: Sandbox) -> None:
    with pytest.raises(RequestNotFound, match="no download request 999"):
        client_for(sandbox).results(999)


@pytest.mark.parametrize("bad", ["abc", "-3", 0, "6073; drop"])
def test_invalid_ids_are_refused_without_asking(sandbox: Sandbox, bad) -> None:
    with pytest.raises(RequestNotFound, match="positive whole number"):
        client_for(sandbox).results(bad)
    assert sandbox.log == []


def test_running_request_says_status_and_progress(sandbox: Sandbox, fixture_files) -> None:
    rid = sandbox.add_request(fixture_files["products"], pending_polls=5, records=200)
    with pytest.raises(RequestNotReady) as caught:
        client_for(sandbox).results(rid)
    assert (
        "STARTED" in str(caught.value)
        and "%" in str(caught.value)
        and "wait=True" in str(caught.value)
    )
    assert caught.value.status_text == "STARTED"
    assert caught.value.progress is not None and 0 <= caught.value.progress < 1


def test_wait_polls_until_completed(sandbox: Sandbox, fixture_files) -> None:
    rid = sandbox.add_request(fixture_files["products"], pending_polls=3)
    done = client_for(sandbox).wait(rid)
    assert done.is_done
    polls = [e for e in sandbox.log if e.path == f"/v3/requests/{rid}"]
    assert len(polls) == 4
    assert len(client_for(sandbox).results(rid)) == 2


def test_wait_with_timeout_gives_up(sandbox: Sandbox, fixture_files) -> None:
    rid = sandbox.add_request(fixture_files["products"], pending_polls=1000)
    client = Client(sandbox.token, sandbox.api_url, retry=FAST_RETRY, poll_interval=0.05)
    started = time.monotonic()
    with pytest.raises(RequestNotReady, match="after waiting"):
        client.wait(rid, timeout=0.3)
    assert time.monotonic() - started < 2


def test_failed_request(sandbox: Sandbox, fixture_files) -> None:
    rid = sandbox.add_request(fixture_files["products"], error="Query syntax error")
    with pytest.raises(RequestFailed, match="Query syntax error"):
        client_for(sandbox).results(rid)
    rid = sandbox.add_request(fixture_files["products"], status="CANCELLED")
    with pytest.raises(RequestFailed, match="CANCELLED"):
        client_for(sandbox).wait(rid)


def test_completed_without_files(sandbox: Sandbox) -> None:
    rid = sandbox.add_request([])
    with pytest.raises(NoResults, match="no result files"):
        client_for(sandbox).results(rid)


def test_429_and_5xx_are_retried_honouring_retry_after(sandbox: Sandbox, fixture_files) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    sandbox.faults.api_errors.extend([(429, 0.2), (503, None), (502, None)])
    started = time.monotonic()
    assert len(client_for(sandbox).results(rid)) == 2
    assert time.monotonic() - started >= FAST_RETRY.max_delay  # Retry-After, capped at max_delay
    assert [e.status for e in sandbox.log if e.server == "api"] == [429, 503, 502, 200]


def test_persistent_server_errors_become_a_clear_error(sandbox: Sandbox, fixture_files) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    sandbox.faults.api_errors.extend([(503, None)] * 10)
    with pytest.raises(DatafinitiError, match=r"kept failing.*503"):
        client_for(sandbox).results(rid)


def test_unreachable_api(tmp_path: Path) -> None:
    client = Client("t", "http://127.0.0.1:9/v3", retry=FAST_RETRY)
    with pytest.raises(DatafinitiError, match="Could not reach"):
        client.results(1)


def test_client_repr_hides_token(sandbox: Sandbox) -> None:
    client = client_for(sandbox)
    assert sandbox.token not in repr(client) and "***" in repr(client)
    assert sandbox.token not in repr(client._http)


def test_wait_waits_its_whole_timeout_and_advises_waiting_longer(
    sandbox: Sandbox, fixture_files
) -> None:
    rid = sandbox.add_request(fixture_files["businesses"], pending_polls=100)
    client = Client(sandbox.token, sandbox.api_url, retry=FAST_RETRY, poll_interval=0.5)
    started = time.monotonic()
    with pytest.raises(RequestNotReady, match=r"after waiting 0\.6s\. Wait longer") as caught:
        client.wait(rid, timeout=0.6)
    assert time.monotonic() - started >= 0.6  # not given up at the last poll before it
    assert "wait=True" not in str(caught.value)
    polls = [e for e in sandbox.log if e.path == f"/v3/requests/{rid}"]
    assert len(polls) >= 2  # at 0, about 0.5 and, unless that one ran late, at 0.6 s
