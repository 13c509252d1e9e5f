"""Fault injection against the sandbox: every fault ends in the fault-free data or a typed error."""

from __future__ import annotations

import hashlib
import http.server
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest

from conftest import FAST_RETRY, Loader
from datafiniti_loader import Client, DatafinitiError, DownloadError, RetryPolicy, StorageError
from datafiniti_loader.sandbox import Sandbox
from test_transport import recorded_sha256


def committed_entries(cache: Path) -> list[Path]:
    return [
        p for p in cache.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.name != "CACHEDIR.TAG"
    ]  # fmt: skip


def partial_size(cache: Path) -> int:
    (partial,) = cache.rglob(".*.partial")
    return partial.stat().st_size


def test_read_timeout_is_retried(loader: Loader, sandbox: Sandbox, fixture_files) -> None:
    rid = sandbox.add_request(fixture_files["products"][:1])
    baseline = loader.load(rid, cache=False)
    sandbox.faults.stalls.append(2.0)
    impatient = RetryPolicy(attempts=3, backoff=0.01, read_timeout=0.3)
    pd.testing.assert_frame_equal(loader.load(rid, cache=False, retry=impatient), baseline)


def test_a_load_that_gave_up_is_resumed_by_the_next_load(
    loader: Loader, sandbox: Sandbox, fixture_files, cache_dir: Path
) -> None:
    source = fixture_files["products"][0]
    rid = sandbox.add_request([source])
    baseline = loader.load(rid, cache=False)
    sandbox.faults.drops.extend([10_000] * 4)  # four tries, 10 kB each, then give up
    with pytest.raises(DownloadError, match=r"after 4 tries.*40,000 bytes received are kept"):
        loader.load(rid)
    assert committed_entries(cache_dir) == []  # nothing half-done poses as an entry
    kept = partial_size(cache_dir)
    assert kept == 40_000
    sandbox.log.clear()
    pd.testing.assert_frame_equal(loader.load(rid), baseline)
    (get,) = [e for e in sandbox.log if e.server == "bucket"]
    assert (get.status, get.range) == (206, f"bytes={kept}-")  # the rest, not the whole
    assert not list(cache_dir.rglob(".*.partial*"))
    (entry,) = [p for p in committed_entries(cache_dir) if p.name.endswith(".csv")]
    assert entry.read_bytes() == source.read_bytes()
    assert recorded_sha256(entry) == hashlib.sha256(source.read_bytes()).hexdigest()


def test_without_a_cache_nothing_is_kept_and_the_message_promises_nothing(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    rid = sandbox.add_request(fixture_files["products"][:1])
    sandbox.faults.drops.extend([10_000] * 4)
    with pytest.raises(DownloadError) as caught:
        loader.load(rid, cache=False)
    assert "kept" not in str(caught.value) and "resume" not in str(caught.value)


def test_zero_byte_file_gives_no_rows_but_the_rest_loads(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    rid = sandbox.add_request([empty, fixture_files["businesses"][0]])
    frame = loader.load(rid)
    assert len(frame) == 30 and frame["_source_file"].unique().tolist() == [f"{rid}_2.csv"]


LOAD = r"""
import sys
from datafiniti_loader import load_results
frame = load_results(int(sys.argv[1]), progress=False)
print(len(frame), frame["_source_row"].sum())
"""


def run_load(sandbox: Sandbox, cache: Path, rid: int) -> subprocess.Popen[str]:
    env = {**os.environ, "DATAFINITI_API_URL": sandbox.api_url, "DATAFINITI_API_TOKEN": sandbox.token,
           "DATAFINITI_CACHE_DIR": str(cache)}  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-c", LOAD, str(rid)], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_two_processes_loading_at_once_share_the_cache_safely(
    loader: Loader, sandbox: Sandbox, fixture_files, cache_dir: Path
) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    sandbox.faults.throttle = 400_000  # both downloads overlap
    first, second = run_load(sandbox, cache_dir, rid), run_load(sandbox, cache_dir, rid)
    outputs = [p.communicate(timeout=120) for p in (first, second)]
    assert first.returncode == second.returncode == 0, outputs
    assert outputs[0][0] == outputs[1][0]
    gets = [e for e in sandbox.log if e.server == "bucket"]
    assert len(gets) == 2  # one GET per file: one process downloaded, the other waited
    sandbox.faults.throttle = None
    sandbox.log.clear()
    assert len(loader.load(rid)) == int(outputs[0][0].split()[0])
    assert [e for e in sandbox.log if e.server == "bucket"] == []
    downloads = [p for p in committed_entries(cache_dir) if p.suffix not in (".json", ".arrow")]
    assert len(downloads) == 2


def wait_for_partial(cache: Path, at_least: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(cache.rglob(".*.partial"))
        if found and found[0].stat().st_size >= at_least:
            return
        time.sleep(0.02)
    raise AssertionError("the download never got going")


def assert_next_load_resumes(loader: Loader, sandbox: Sandbox, rid: int, cache: Path,
                             baseline: pd.DataFrame) -> None:  # fmt: skip
    """The next load asks only for the bytes after the kept partial, and loads exactly."""
    kept = partial_size(cache)
    sandbox.faults.throttle = None
    sandbox.log.clear()
    pd.testing.assert_frame_equal(loader.load(rid), baseline)
    (get,) = [e for e in sandbox.log if e.server == "bucket"]
    assert (get.status, get.range) == (206, f"bytes={kept}-")


def cli(sandbox: Sandbox, *args: str, **env: str) -> subprocess.Popen[str]:
    full = {**os.environ, "DATAFINITI_API_URL": sandbox.api_url,
            "DATAFINITI_API_TOKEN": sandbox.token, **env}  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "datafiniti_loader.cli", *args],
        env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_a_killed_load_leaves_no_entry_and_the_next_load_resumes(
    loader: Loader, sandbox: Sandbox, fixture_files, cache_dir: Path
) -> None:
    rid = sandbox.add_request(fixture_files["products"][:1])
    baseline = loader.load(rid, cache=False)
    sandbox.faults.throttle = 50_000  # 261 kB: about five seconds
    victim = run_load(sandbox, cache_dir, rid)
    wait_for_partial(cache_dir, 60_000)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert committed_entries(cache_dir) == []  # only a hidden partial, never a half entry
    assert_next_load_resumes(loader, sandbox, rid, cache_dir, baseline)


def test_ctrl_c_stops_the_cli_at_once_and_the_next_load_resumes(
    loader: Loader, sandbox: Sandbox, fixture_files, cache_dir: Path, tmp_path: Path
) -> None:
    source = fixture_files["products"][0]
    rid = sandbox.add_request([source])
    baseline = loader.load(rid, cache=False)
    sandbox.faults.throttle = 50_000  # about five seconds for the file
    out = tmp_path / "out"
    victim = cli(sandbox, "load", str(rid), "--output", str(out),
                 DATAFINITI_CACHE_DIR=str(cache_dir))  # fmt: skip
    wait_for_partial(cache_dir, 60_000)
    interrupted = time.monotonic()
    victim.send_signal(signal.SIGINT)
    _, stderr = victim.communicate(timeout=30)
    stopped_after = time.monotonic() - interrupted
    assert victim.returncode == 130
    assert stderr.strip().splitlines() == ["datafiniti-loader: interrupted"], stderr
    assert stopped_after < 1.5, f"took {stopped_after:.2f}s to stop"
    assert not out.exists() and not list(tmp_path.glob("out.tmp-*"))
    assert 60_000 <= partial_size(cache_dir) < source.stat().st_size
    assert_next_load_resumes(loader, sandbox, rid, cache_dir, baseline)


def test_ctrl_c_without_a_cache_leaves_no_scratch_directory(
    sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    rid = sandbox.add_request(fixture_files["products"][:1])
    sandbox.faults.throttle = 50_000
    scratch_parent = tmp_path / "tmp"
    scratch_parent.mkdir()
    victim = cli(sandbox, "load", str(rid), "--no-cache", "--output", str(tmp_path / "out"),
                 TMPDIR=str(scratch_parent))  # fmt: skip
    wait_for_partial(scratch_parent, 30_000)
    victim.send_signal(signal.SIGINT)
    victim.communicate(timeout=30)
    assert victim.returncode == 130
    assert list(scratch_parent.iterdir()) == []


def test_a_killed_conversion_leaves_nothing_at_the_target(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    sandbox.faults.throttle = 100_000
    script = (
        "import sys\nfrom datafiniti_loader import to_parquet\n"
        "to_parquet(int(sys.argv[1]), sys.argv[2], progress=False, cache=False)\n"
    )
    env = {
        **os.environ,
        "DATAFINITI_API_URL": sandbox.api_url,
        "DATAFINITI_API_TOKEN": sandbox.token,
        "TMPDIR": str(tmp_path),  # its scratch directory, orphaned by the kill, stays here
    }
    target = tmp_path / "out"
    victim = subprocess.Popen([sys.executable, "-c", script, str(rid), str(target)], env=env)
    time.sleep(2.0)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not target.exists()
    sandbox.faults.throttle = None
    assert loader.parquet(rid, target).rows == 72
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []  # swept


def test_the_token_never_follows_a_redirect_to_another_host(sandbox: Sandbox) -> None:
    sandbox.faults.api_redirect = f"{sandbox.bucket_url}/somewhere-else"
    with pytest.raises(DatafinitiError):
        Client(sandbox.token, sandbox.api_url, retry=FAST_RETRY).results(1)
    redirected = [e for e in sandbox.log if e.server == "bucket"]
    assert redirected and not any(e.had_authorization for e in redirected)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not Path("/usr/bin/openssl").exists():
        pytest.skip("needs the openssl command")
    d = tmp_path_factory.mktemp("tls")
    run = lambda *args: subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Test CA",
        "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
        "-out", "server.csr")  # fmt: skip
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "ext.cnf", "-out", "server.pem")  # fmt: skip
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}


def test_tls_is_verified_and_honours_requests_ca_bundle(
    tls_files: dict[str, Path], fixture_files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files["cert"], tls_files["key"])
    with Sandbox(tls=context) as sandbox:
        rid = sandbox.add_request(fixture_files["businesses"])
        options = {"token": sandbox.token, "api_url": sandbox.api_url, "cache": False,
                   "progress": False, "retry": FAST_RETRY}  # fmt: skip
        assert sandbox.api_url.startswith("https://")
        with pytest.raises(DatafinitiError, match="TLS certificate verification failed"):
            from datafiniti_loader import load_results

            load_results(rid, **options)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_files["ca"]))
        assert len(load_results(rid, **options)) == 30


_HOP_BY_HOP = {"connection", "proxy-connection", "keep-alive", "proxy-authorization"}


class _Proxy(http.server.BaseHTTPRequestHandler):
    """A forward proxy for plain HTTP that relays the request line exactly as received."""

    seen: ClassVar[list[str]] = []
    #: Names the proxy knows (``api.remote.test``: a remote host, served from loopback).
    hosts: ClassVar[dict[str, str]] = {}

    def do_GET(self) -> None:
        _Proxy.seen.append(self.path.split("?", 1)[0])
        url = urllib.parse.urlsplit(self.path)
        host = _Proxy.hosts.get(url.hostname or "", url.hostname)
        with socket.create_connection((host, url.port)) as upstream:
            target = url.path + ("?" + url.query if url.query else "")
            headers = "".join(
                f"{k}: {v}\r\n" for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP
            )
            upstream.sendall(
                f"GET {target} HTTP/1.0\r\n{headers}Connection: close\r\n\r\n".encode()
            )
            reply = b""
            while chunk := upstream.recv(1 << 16):
                reply += chunk
        self.wfile.write(reply)
        self.close_connection = True

    def do_CONNECT(self) -> None:
        """Tunnel TLS for HTTPS_PROXY: bytes both ways until either side closes."""
        _Proxy.seen.append(f"CONNECT {self.path}")
        host, port = self.path.rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)))
        self.send_response(200, "Connection established")
        self.end_headers()
        sockets = [self.connection, upstream]
        try:
            while True:
                readable, _, _ = select.select(sockets, [], [], 10)
                if not readable:
                    return
                for sock in readable:
                    data = sock.recv(1 << 16)
                    if not data:
                        return
                    (upstream if sock is self.connection else self.connection).sendall(data)
        finally:
            upstream.close()
            self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


def test_http_proxy_from_the_environment_is_used(
    loader: Loader, sandbox: Sandbox, fixture_files, monkeypatch: pytest.MonkeyPatch
) -> None:
    import urllib.parse  # noqa: F401  (used by the proxy handler)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.server_address[1]}")
        rid = sandbox.add_request(fixture_files["businesses"])
        _Proxy.seen.clear()
        assert len(loader.load(rid, cache=False)) == 30
        assert any("/v3/results/" in p for p in _Proxy.seen)
        assert any("/datafiniti-downloads/" in p for p in _Proxy.seen)
    finally:
        server.shutdown()


@pytest.mark.parametrize("held", ["body", "answer"])
def test_a_failed_load_stops_its_other_downloads(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path, cache_dir: Path,
    capfd: pytest.CaptureFixture[str], held: str,
) -> None:  # fmt: skip
    from datafiniti_loader import ParseError

    broken = tmp_path / "broken.csv"
    broken.write_bytes(b"id,name\n1,a,extra\n")
    rid = sandbox.add_request([broken, fixture_files["products"][0]])
    workers = None
    if held == "body":
        sandbox.faults.throttle = 50_000  # the second file would take over five seconds
    else:  # one download at a time: the second file's GET goes unanswered for 15 s
        sandbox.faults.silences.extend([0, 15])
        workers = 1
    started = time.monotonic()
    with pytest.raises(ParseError):
        loader.load(rid, max_workers=workers)
    assert time.monotonic() - started < 2.5
    assert not list(cache_dir.rglob("*.part"))
    time.sleep(0.5)  # the bucket notices the hang-up on its next write
    assert "Traceback" not in capfd.readouterr().err  # a client hanging up is no error


def test_https_proxy_from_the_environment_tunnels_tls(
    tls_files: dict[str, Path], fixture_files, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl

    from datafiniti_loader import load_results

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files["cert"], tls_files["key"])
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        with Sandbox(tls=context) as sandbox:
            for name in ("NO_PROXY", "no_proxy"):
                monkeypatch.delenv(name, raising=False)
            monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
            monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_files["ca"]))
            rid = sandbox.add_request(fixture_files["businesses"])
            _Proxy.seen.clear()
            frame = load_results(rid, token=sandbox.token, api_url=sandbox.api_url, cache=False,
                                 progress=False, retry=FAST_RETRY)  # fmt: skip
            assert len(frame) == 30
            api_port = sandbox.api_url.split(":")[2].split("/")[0]
            bucket_port = sandbox.bucket_url.rsplit(":", 1)[1]
            assert f"CONNECT 127.0.0.1:{api_port}" in _Proxy.seen
            assert f"CONNECT 127.0.0.1:{bucket_port}" in _Proxy.seen
    finally:
        proxy.shutdown()


def test_an_unwritable_cache_is_a_storage_error(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    not_a_dir = tmp_path / "cache-file"
    not_a_dir.write_text("a file where the cache directory should be")
    rid = sandbox.add_request(fixture_files["businesses"])
    with pytest.raises(StorageError, match="DATAFINITI_CACHE_DIR"):
        loader.load(rid, cache=not_a_dir)
    assert len(loader.load(rid, cache=False)) == 30  # the way out the message names


def test_an_unwritable_parquet_target_is_a_storage_error(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    rid = sandbox.add_request(fixture_files["businesses"])
    with pytest.raises(StorageError, match="Could not write Parquet"):
        loader.parquet(rid, blocker / "out")
    assert blocker.read_text() == ""


def test_a_parsed_copy_that_cannot_be_kept_costs_nothing_but_time(
    loader: Loader, sandbox: Sandbox, fixture_files, cache_dir: Path
) -> None:
    rid = sandbox.add_request(fixture_files["businesses"])
    first = loader.load(rid)
    (copy,) = cache_dir.rglob("*.parsed-v*.arrow")
    copy.unlink()
    copy.mkdir()  # the copy's place is taken: it can be neither read nor replaced
    pd.testing.assert_frame_equal(loader.load(rid), first)
    pd.testing.assert_frame_equal(loader.load(rid), first)


SLOW_TARGET = r"""
import sys, time
import fsspec
from fsspec.implementations.local import LocalFileSystem, LocalFileOpener
from datafiniti_loader import to_parquet

class SlowOpener(LocalFileOpener):
    def write(self, data):
        time.sleep(0.3)  # a slow network share: the write stage takes seconds
        return super().write(data)

class SlowFileSystem(LocalFileSystem):
    protocol = "slowfile"
    def _open(self, path, mode="rb", **kwargs):
        if "w" in mode:
            self.makedirs(self._parent(path), exist_ok=True)
            return SlowOpener(path, mode, fs=self, **kwargs)
        return super()._open(path, mode, **kwargs)

fsspec.register_implementation("slowfile", SlowFileSystem, clobber=True)
print("writing", flush=True)
to_parquet(int(sys.argv[1]), "slowfile://" + sys.argv[2], progress=False)
"""


def test_ctrl_c_while_parsing_stops_at_once(
    sandbox: Sandbox, cache_dir: Path, tmp_path: Path
) -> None:
    from datafiniti_loader.sandbox.fixtures import write_large_csv

    big = write_large_csv(tmp_path / "big.csv", 150_000_000)
    rid = sandbox.add_request([big])
    out = tmp_path / "out"
    victim = cli(sandbox, "load", str(rid), "--output", str(out),
                 DATAFINITI_CACHE_DIR=str(cache_dir))  # fmt: skip
    deadline = time.monotonic() + 60
    while not list(cache_dir.rglob(f"*-{rid}_1.csv.json")) and time.monotonic() < deadline:
        time.sleep(0.005)  # the download is committed: parsing begins
    time.sleep(0.1)
    assert victim.poll() is None, "finished before it could be interrupted"
    interrupted = time.monotonic()
    victim.send_signal(signal.SIGINT)
    _, stderr = victim.communicate(timeout=30)
    assert victim.returncode == 130, stderr
    assert time.monotonic() - interrupted < 1.5
    assert stderr.strip().splitlines() == ["datafiniti-loader: interrupted"]
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []
    assert not list(cache_dir.rglob("*.part"))  # the unfinished parsed copy went too


def test_ctrl_c_while_writing_parquet_stops_at_once(
    sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    env = {**os.environ, "DATAFINITI_API_URL": sandbox.api_url,
           "DATAFINITI_API_TOKEN": sandbox.token, "TMPDIR": str(tmp_path)}  # fmt: skip
    out = tmp_path / "out"
    victim = subprocess.Popen(
        [sys.executable, "-c", SLOW_TARGET, str(rid), str(out)], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob("out.tmp-*/part-0.parquet")) and time.monotonic() < deadline:
        time.sleep(0.01)  # the writer is at work
    assert victim.poll() is None
    interrupted = time.monotonic()
    victim.send_signal(signal.SIGINT)
    _, stderr = victim.communicate(timeout=30)
    assert victim.returncode != 0 and "KeyboardInterrupt" in stderr
    assert time.monotonic() - interrupted < 1.5
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def dead_pid() -> int:
    """The id of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def plant(directory: Path, owner: dict | None) -> Path:
    """A directory holding a user's file, with the library's marker saying ``owner`` if given."""
    import json

    directory.mkdir()
    (directory / "important.xlsx").write_bytes(b"quarterly figures")
    if owner is not None:
        (directory / ".datafiniti-loader-owner").write_text(json.dumps(owner))
    return directory


def test_the_orphan_sweep_removes_only_directories_the_library_marked_on_this_host(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path, monkeypatch
) -> None:
    import tempfile

    pid, host = dead_pid(), socket.gethostname()
    ours = {"library": "datafiniti-loader", "pid": pid, "host": host}
    kept = [
        plant(tmp_path / "exports.tmp-2024-q3-backup", None),  # a user's, named like staging
        plant(tmp_path / f"exports.tmp-{pid}-abcdef", None),  # a dead pid, but no marker
        plant(tmp_path / f"exports.tmp-{pid}-other", {**ours, "host": "another-machine"}),
    ]
    swept = plant(tmp_path / f"exports.tmp-{pid}-0123456789ab", ours)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    kept.append(plant(scratch / f"datafiniti-loader-{pid}-userdir", None))
    swept_scratch = plant(scratch / f"datafiniti-loader-{pid}-xyz", ours)
    rid = sandbox.add_request(fixture_files["products"])
    assert loader.parquet(rid, tmp_path / "exports", cache=False).rows == 72
    for directory in kept:
        assert (directory / "important.xlsx").read_bytes() == b"quarterly figures"
    assert not swept.exists() and not swept_scratch.exists()
    # the published dataset carries no marker; the load's own scratch is gone or going
    assert not (tmp_path / "exports" / ".datafiniti-loader-owner").exists()


@pytest.fixture
def remote(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The sandbox's API as a remote host, ``api.remote.test``, reached through a proxy."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("DATAFINITI_ALLOW_INSECURE_HTTP", "1")  # a test rig: plain http
    monkeypatch.setattr(_Proxy, "hosts", {"api.remote.test": "127.0.0.1"})
    yield sandbox.api_url.replace("127.0.0.1", "api.remote.test")
    server.shutdown()


def test_a_remote_api_cannot_send_downloads_to_this_machine(
    loader: Loader, sandbox: Sandbox, fixture_files, remote: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rid = sandbox.add_request(fixture_files["businesses"])
    with pytest.raises(DatafinitiError, match=r"points from api.remote.test to 127.0.0.1"):
        loader.load(rid, api_url=remote, cache=False)
    assert not [e for e in sandbox.log if e.server == "bucket"]  # nothing was asked of it
    monkeypatch.setenv("DATAFINITI_ALLOW_LOCAL_URLS", "1")  # the opt-out, for such a rig
    assert len(loader.load(rid, api_url=remote, cache=False)) == 30


def test_a_remote_api_cannot_redirect_to_this_machine(sandbox: Sandbox, remote: str) -> None:
    sandbox.faults.api_redirect = f"{sandbox.bucket_url}/somewhere"
    with pytest.raises(
        DatafinitiError, match=r"redirect points from api\.remote\.test to 127\.0\.0\.1"
    ):
        Client(sandbox.token, remote, retry=FAST_RETRY).results(1)
    assert not [e for e in sandbox.log if e.server == "bucket"]


class _Redirector(http.server.BaseHTTPRequestHandler):
    """A bucket that redirects every GET to ``target``."""

    target: ClassVar[str] = ""

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", _Redirector.target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_remote_bucket_cannot_redirect_to_this_machine(
    sandbox: Sandbox, remote: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datafiniti_loader.fetch.bucketfs import BucketFileSystem, RedirectRefused

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(_Proxy, "hosts", {"bucket.remote.test": "127.0.0.1"})
        monkeypatch.setattr(_Redirector, "target", f"{sandbox.bucket_url}/datafiniti-downloads/x")
        url = f"http://bucket.remote.test:{server.server_address[1]}/file.csv?X-Amz-Signature=s"
        with pytest.raises(
            RedirectRefused, match=r"points from bucket\.remote\.test to 127\.0\.0\.1"
        ):
            BucketFileSystem().open(url)
        assert not [e for e in sandbox.log if e.server == "bucket"]
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    ("source", "target", "refused"),
    [
        ("https://api.datafiniti.co/v3", "http://169.254.169.254/latest", "local network"),
        ("https://s3.amazonaws.com/b/k", "http://[fe80::1]/k", "local network"),
        ("https://s3.amazonaws.com/b/k", "http://localhost:8080/k", "local network"),
        ("https://s3.amazonaws.com/b/k", "http://evil.example/k", "plain http://evil.example"),
        ("https://s3.amazonaws.com/b/k", "http://s3.amazonaws.com/k", ""),  # same host
        ("https://s3.amazonaws.com/b/k", "https://other.example/k", ""),
        ("http://127.0.0.1:9/v3", "http://127.0.0.1:10/k", ""),  # the sandbox's own
    ],
)
def test_which_hops_are_refused(source: str, target: str, refused: str) -> None:
    from datafiniti_loader.config import unsafe_hop

    reason = unsafe_hop(source, target)
    assert (refused in reason) if refused else reason == ""
