"""API v4 (Bearer auth, one download object per request), chosen by an api_url ending in /v4."""

from pathlib import Path

import pandas as pd
import pytest

from conftest import FAST_RETRY, Loader
from datafiniti_loader import (
    AuthenticationError,
    Client,
    RequestFailed,
    RequestNotFound,
    RequestNotReady,
)
from datafiniti_loader.sandbox import Sandbox


def v4(sandbox: Sandbox, token: str | None = None) -> Client:
    return Client(token or sandbox.token, sandbox.api_url_v4, retry=FAST_RETRY, poll_interval=0.01)


def test_results_and_request_through_v4(sandbox: Sandbox, fixture_files) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    client = v4(sandbox)
    assert client.api_version == "v4"
    files = client.results(rid)
    assert [f.name for f in files] == [f"{rid}_1.csv", f"{rid}_2.csv"]
    assert [f.id for f in files] == [1, 2] and all(f.expires_at for f in files)
    request = client.request(rid)
    assert request.is_done and request.status == "completed"
    assert all(e.path.startswith("/v4/downloads/") for e in sandbox.log if e.server == "api")


def test_v4_uses_bearer_auth(sandbox: Sandbox, fixture_files) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    with pytest.raises(AuthenticationError, match="401"):
        v4(sandbox, token="wrong").results(rid)


def test_v4_states(sandbox: Sandbox, fixture_files) -> None:
    with pytest.raises(RequestNotFound):
        v4(sandbox).results(999)
    running = sandbox.add_request(fixture_files["products"], pending_polls=3, records=100)
    with pytest.raises(RequestNotReady, match="running"):
        v4(sandbox).results(running)
    assert v4(sandbox).wait(running).is_done
    failed = sandbox.add_request([], error="stopped")  # ended before writing anything
    with pytest.raises(RequestFailed, match="cancelled"):
        v4(sandbox).results(failed)


def test_load_results_over_v4_equals_v3(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    rid = sandbox.add_request(fixture_files["products"] + fixture_files["businesses"])
    over_v3 = loader.load(rid, cache=False)
    over_v4 = loader.load(rid, cache=False, api_url=sandbox.api_url_v4)
    pd.testing.assert_frame_equal(
        over_v4.drop(columns=["_result_id", "_result_created_at"]),
        over_v3.drop(columns=["_result_id", "_result_created_at"]),
    )
    assert over_v4["_result_id"].unique().tolist() == [1, 2, 3]  # v4 numbers files by position
    sandbox.faults.expire_signings = 1
    assert len(loader.load(rid, cache=False, api_url=sandbox.api_url_v4)) == len(over_v3)
