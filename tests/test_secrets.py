"""Every contract error through the real sandbox, and no secret anywhere a user could see it."""

import base64
import json
import os
import subprocess
import sys
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


def run_cli(*args: str, sandbox: Sandbox, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATAFINITI_API_URL": sandbox.api_url,
        "DATAFINITI_API_TOKEN": sandbox.token,
        "DATAFINITI_CACHE_DIR": str(tmp_path / "cache"),
    }
    return subprocess.run(
        [sys.executable, "-m", "datafiniti_loader.cli", *args],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip


def test_a_bucket_error_echoing_the_signed_url_leaks_no_signature(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    rid = sandbox.add_request(fixture_files["products"][:1])
    echo = (
        b"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>Denied: {url} "
        b"(asked for {path}; X-Amz-Security-Token={path})</Message></Error>"
    )
    sandbox.faults.bucket_answers.append((403, {"Content-Type": "application/xml"}, echo))
    with pytest.raises(DownloadError, match="AccessDenied: Denied") as caught:
        loader.load(rid)
    assert_clean(str(caught.value), sandbox)
    sandbox.faults.bucket_answers.append((403, {"Content-Type": "application/xml"}, echo))
    cli = run_cli(
        "load", str(rid), "--output", str(tmp_path / "out"), sandbox=sandbox, tmp_path=tmp_path
    )
    assert cli.returncode == 1 and "AccessDenied" in cli.stderr
    assert_clean(cli.stderr + cli.stdout, sandbox)


def test_an_api_error_echoing_the_authorization_header_leaks_no_token(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    basic = base64.b64encode(f"{sandbox.token}:".encode()).decode()
    said = f"bad request; you sent Authorization: Basic {basic} and token={sandbox.token}"
    body = json.dumps({"message": said}).encode()
    client = Client(sandbox.token, sandbox.api_url, retry=FAST_RETRY)
    for status in (400, 401):
        sandbox.faults.api_bodies.append((status, "application/json", body))
        with pytest.raises(DatafinitiError) as caught:
            client.request(6073)
        assert "Authorization: Basic ***" in str(caught.value)
        for text in (str(caught.value), repr(caught.value)):
            assert basic not in text and basic.rstrip("=") not in text
            assert_clean(text, sandbox)


def test_server_text_cannot_drive_the_terminal(sandbox: Sandbox, tmp_path: Path) -> None:
    said = "\x1b[2J\x1b[31mYOUR ACCOUNT IS SUSPENDED\r\x07\x9b"
    body = json.dumps({"message": said}).encode()
    sandbox.faults.api_bodies.append((400, "application/json", body))
    cli = run_cli("status", "6073", sandbox=sandbox, tmp_path=tmp_path)
    assert cli.returncode == 1 and "YOUR ACCOUNT IS SUSPENDED" in cli.stderr
    assert not any(ch in cli.stderr for ch in "\x1b\r\x07\x9b")


def test_load_options_never_show_the_token() -> None:
    from datafiniti_loader.loader import LoadOptions

    options = LoadOptions(token="tok-3f9a8b7c6d5e")
    assert "tok-3f9a8b7c6d5e" not in repr(options) and "tok-3f9a8b7c6d5e" not in str(options)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("GET /b/k.csv?X-Amz-Signature=abc&X-Amz-Credential=k", "GET /b/k.csv?..."),
        ("https://bucket/k.csv?Signature=abc", "https://bucket/k.csv?..."),
        ("see X-Amz-Security-Token=FQoGZXIvYXdz", "see X-Amz-Security-Token=***"),
        ("Authorization: Basic dG9rZW4xMjM0NTY3OA==", "Authorization: Basic ***"),
        ("Bearer eyJhbGciOiJIUzI1NiJ9.x.y", "Bearer ***"),
        ("sent token=abcdef1234567890", "sent token=***"),
        # the library's own advice, and plain words, are left as they are
        ("Check the token= argument (--token)", "Check the token= argument (--token)"),
        ("Basic authentication failed", "Basic authentication failed"),
        ("Did you mean 'credential'?", "Did you mean 'credential'?"),
    ],
)
def test_what_the_scrubber_cuts_and_what_it_leaves(text: str, shown: str) -> None:
    from datafiniti_loader.errors import scrub

    assert scrub(text) == shown
    assert str(DatafinitiError(text)) == shown
