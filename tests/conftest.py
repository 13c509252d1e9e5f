"""Shared test fixtures: a real sandbox on loopback, an isolated environment, fast retries."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from datafiniti_loader import RetryPolicy, load_results, to_parquet
from datafiniti_loader.sandbox import Sandbox
from datafiniti_loader.sandbox.fixtures import FIXTURE_REQUESTS

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "data" / "fixtures"
REAL_DATA = ROOT.parent / "shared" / "datafiniti-real"

#: Retries that keep fault tests quick: same logic, tiny waits.
FAST_RETRY = RetryPolicy(
    attempts=4, backoff=0.01, max_delay=0.05, connect_timeout=5, read_timeout=10
)


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No token, API URL or cache from the developer's machine leaks into a test."""
    for name in ("DATAFINITI_API_TOKEN", "DATAFINITI_API_URL", "DATAFINITI_CACHE_DIR", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    return home


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as running:
        yield running


@pytest.fixture
def fixture_files() -> dict[str, list[Path]]:
    return {name: [FIXTURES / f for f in files] for name, files in FIXTURE_REQUESTS.items()}


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


class Loader:
    """``load_results``/``to_parquet`` bound to a sandbox, its token and fast retries."""

    def __init__(self, sandbox: Sandbox, cache: Path) -> None:
        self.sandbox = sandbox
        self.cache = cache

    def options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        base = {
            "token": self.sandbox.token,
            "api_url": self.sandbox.api_url,
            "cache": self.cache,
            "progress": False,
            "retry": FAST_RETRY,
        }
        base.update(kwargs)
        return base

    def load(self, request_id: int, **kwargs: Any) -> Any:
        return load_results(request_id, **self.options(kwargs))

    def parquet(self, request_id: int, path: str | Path, **kwargs: Any) -> Any:
        return to_parquet(request_id, str(path), **self.options(kwargs))


@pytest.fixture
def loader(sandbox: Sandbox, cache_dir: Path) -> Loader:
    return Loader(sandbox, cache_dir)


@pytest.fixture
def debug_log() -> Iterator[list[str]]:
    """Every ``datafiniti_loader`` log line at DEBUG, formatted."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect(level=logging.DEBUG)
    logger = logging.getLogger("datafiniti_loader")
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(previous)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """An S3-compatible server (moto's server mode) on loopback, in a process of its own.

    A process, not a thread: delta-rs waits for S3's answers while holding
    the interpreter, which a server in a thread of this process would need.
    """
    import socket
    import subprocess
    import sys
    import time

    import requests

    pytest.importorskip("moto")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                requests.get(url, timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def s3_bucket(s3_server: str, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """A new bucket's URL and the storage options (deltalake's keys) that reach it."""
    import requests

    bucket = f"lake-{tmp_path.name.lower().replace('_', '-')[-40:]}".rstrip("-")
    requests.put(f"{s3_server}/{bucket}", timeout=10).raise_for_status()
    options = {
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
    }
    return f"s3://{bucket}", options
