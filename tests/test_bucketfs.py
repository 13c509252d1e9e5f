"""The bucket file system on its own: what goes on the wire, and what comes back."""

from __future__ import annotations

import http.server
import io
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from conftest import Loader
from datafiniti_loader.fetch.bucketfs import BucketError, BucketFileSystem, BucketUnreachable
from datafiniti_loader.sandbox import Sandbox
from test_client import client_for

SIGNED = "/bucket/k%7Ey%27z.csv?X-Amz-Security-Token=a%2Bb%2Fc%3D&X-Amz-Signature=%7Eabc"


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Records each request line and its headers; answers as ``answer`` says."""

    seen: ClassVar[list[tuple[str, str, dict[str, str]]]] = []
    answer: ClassVar[str] = "body"  # "body", "stall", "silence" or a URL to redirect to

    def do_GET(self) -> None:
        self.seen.append((self.command, self.path, dict(self.headers)))
        if self.answer == "silence":  # no answer at all for a while
            time.sleep(5)
        if self.answer.startswith("http"):
            self.send_response(307)
            self.send_header("Location", self.answer)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", "1000" if self.answer == "stall" else "4")
        self.end_headers()
        self.wfile.write(b"head" if self.answer == "body" else b"0123456789")
        self.wfile.flush()
        if self.answer == "stall":
            time.sleep(5)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    _Recorder.seen, _Recorder.answer = [], "body"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def netrc_for_loopback(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials for 127.0.0.1 in ~/.netrc, which requests would otherwise send."""
    netrc = isolated_env / ".netrc"
    netrc.write_text("machine 127.0.0.1 login someone password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))


def test_one_get_with_the_url_exactly_as_signed_and_no_credentials(
    recorder: str, netrc_for_loopback: None
) -> None:
    with BucketFileSystem().open(recorder + SIGNED) as body:
        assert body.read() == b"head"
    ((method, path, headers),) = _Recorder.seen
    assert (method, path) == ("GET", SIGNED)  # requests alone would send "~" for "%7E"
    assert "Authorization" not in headers
    assert headers["Accept-Encoding"] == "identity"


def test_a_redirect_never_brings_credentials(
    recorder: str, netrc_for_loopback: None, sandbox: Sandbox, fixture_files
) -> None:
    source = fixture_files["products"][0]
    (file, _) = client_for(sandbox).results(sandbox.add_request(fixture_files["products"]))
    _Recorder.answer = file.url  # another port: requests would look in ~/.netrc again
    with BucketFileSystem().open(recorder + "/moved") as body:
        buffered = io.BufferedReader(body)  # which reads through readinto
        assert b"".join(iter(lambda: buffered.read(65536), b"")) == source.read_bytes()
    (get,) = [e for e in sandbox.log if e.server == "bucket"]
    assert get.status == 200 and not get.had_authorization


def test_abort_ends_a_read_waiting_for_a_body(recorder: str) -> None:
    _Recorder.answer = "stall"
    fs = BucketFileSystem(read_timeout=30)
    body = fs.open(recorder + "/slow")
    assert body.read1(100) == b"0123456789"
    threading.Timer(0.2, fs.abort).start()
    started = time.monotonic()
    with pytest.raises(BucketUnreachable):
        body.read(1000)
    assert time.monotonic() - started < 2  # not the 30 s read timeout
    body.close()


def test_abort_ends_a_wait_for_the_answer_and_refuses_new_requests(recorder: str) -> None:
    _Recorder.answer = "silence"
    fs = BucketFileSystem(read_timeout=30)
    threading.Timer(0.3, fs.abort).start()
    started = time.monotonic()
    with pytest.raises(BucketUnreachable):
        fs.open(recorder + "/held")
    assert time.monotonic() - started < 2  # not the 5 s silence, nor the read timeout
    _Recorder.answer = "body"
    with pytest.raises(BucketUnreachable):
        fs.open(recorder + "/after")
    assert [path for _, path, _ in _Recorder.seen] == ["/held"]


def test_an_error_status_is_a_bucket_error_with_s3s_code(sandbox: Sandbox, fixture_files) -> None:
    (file,) = client_for(sandbox).results(sandbox.add_request(fixture_files["products"][:1]))
    sandbox.objects.clear()
    with pytest.raises(BucketError) as caught:
        BucketFileSystem().open(file.url)
    assert (caught.value.status, caught.value.code) == (404, "NoSuchKey")


def test_a_refused_connection_names_no_url() -> None:
    with socket.socket() as bound:  # a port that is held but not listening refuses
        bound.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{bound.getsockname()[1]}{SIGNED}"
        with pytest.raises(BucketUnreachable) as caught:
            BucketFileSystem(connect_timeout=1).open(closed)
    assert "X-Amz" not in str(caught.value) and caught.value.__context__ is None


def test_no_signature_in_any_log_line_even_urllib3s_at_debug(
    loader: Loader, sandbox: Sandbox, fixture_files, caplog: pytest.LogCaptureFixture
) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    with caplog.at_level(logging.DEBUG):
        loader.load(rid, cache=False)
        logging.getLogger("urllib3.connectionpool").debug("GET %s", "/page?n=2")
    assert caplog.records[-1].getMessage() == "GET /page?n=2"  # unsigned URLs log as they were
    from_urllib3 = [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")]
    assert any(f"/{rid}_1.csv" in line for line in from_urllib3)  # the GETs were logged
    for record in caplog.records:
        assert "X-Amz" not in record.getMessage()
        assert sandbox.signer.security_token not in record.getMessage()
