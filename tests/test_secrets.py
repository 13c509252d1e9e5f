"""Every contract error through the real sandbox, and no secret anywhere a user could see it."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import FAST_RETRY, Loader
from datafiniti_loader import (
    AuthenticationError,
    Client,
    DatafinitiError,
    DownloadError,
    ParseError,
    RequestFailed,
    RequestNotFound,
    RequestNotReady,
    ResultExpired,
)
from datafiniti_loader.sandbox import Sandbox


def secrets_of(sandbox: Sandbox) -> list[str]:
    return [
        sandbox.token,
        sandbox.signer.security_token,
        "X-Amz-Signature",
        "X-Amz-Credential",
        sandbox.signer.access_key,
    ]


def assert_clean(text: str, sandbox: Sandbox) -> None:
    for secret in secrets_of(sandbox):
        assert secret not in text, f"{secret[:12]}... leaked"


def test_every_error_is_typed_explained_and_leaks_nothing(
    loader: Loader,
    sandbox: Sandbox,
    fixture_files,
    tmp_path: Path,
    debug_log: list[str],
    cache_dir: Path,
) -> None:
    broken = tmp_path / "broken.csv"
    broken.write_bytes(b"id,name\n1,a\n2,b,c\n")
    ok = sandbox.add_request(fixture_files["products"])
    cases: list[tuple[type[DatafinitiError], dict, int]] = [
        (AuthenticationError, {"token": "not-the-token"}, ok),
        (RequestNotFound, {}, 424242),
        (RequestNotReady, {}, sandbox.add_request(fixture_files["businesses"], pending_polls=50)),
        (
            RequestFailed,
            {},
            sandbox.add_request(fixture_files["businesses"], error="Invalid query"),
        ),
        (
            ResultExpired,
            {},
            sandbox.add_request(
                fixture_files["businesses"], created=datetime.now(UTC) - timedelta(days=9)
            ),
        ),
        (ParseError, {}, sandbox.add_request([broken])),
    ]
    seen: list[str] = []
    for error, kwargs, rid in cases:
        with pytest.raises(error) as caught:
            loader.load(rid, **kwargs)
        message = str(caught.value)
        assert (len(message) > 40 and message[0].isupper()) or message.startswith(f"{rid}_")
        seen += [message, repr(caught.value)]
    sandbox.faults.expire_signings = 10
    with pytest.raises(ResultExpired) as caught:
        loader.load(sandbox.add_request(fixture_files["businesses"]))
    seen += [str(caught.value), repr(caught.value)]
    sandbox.faults.expire_signings = 0
    sandbox.faults.bucket_errors.extend([(500, None)] * 10)
    with pytest.raises(DownloadError) as caught:
        loader.load(sandbox.add_request(fixture_files["businesses"]))
    seen += [str(caught.value), repr(caught.value)]
    sandbox.faults.bucket_errors.clear()  # the faults it did not use must not hit later loads
    frame = loader.load(ok)
    client = Client(sandbox.token, sandbox.api_url, retry=FAST_RETRY)
    seen += [repr(client), str(client), repr(client.results(ok)), str(client.results(ok)[0])]
    summary = loader.parquet(ok, tmp_path / "out")
    seen.append(repr(summary))
    seen += debug_log
    assert any("downloading" in line for line in debug_log)  # the log was really collected
    for text in seen:
        assert_clean(text, sandbox)
    for path in list(cache_dir.rglob("*")) + list((tmp_path / "out").rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            for secret in secrets_of(sandbox):
                assert secret.encode() not in data, f"{path.name} holds a secret"
    assert not frame.astype(str).apply(lambda c: c.str.contains("X-Amz", regex=False)).any().any()
