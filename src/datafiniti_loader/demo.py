"""The ``sandbox`` and ``demo`` verbs: the library end to end with no account and no network."""

from __future__ import annotations

import hashlib
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .config import CacheSetting
from .errors import ConfigurationError
from .fetch.orphans import owned_tempdir
from .sandbox import Sandbox

if TYPE_CHECKING:
    from .remote.models import DownloadRequest

__all__ = ["run_demo", "serve_sandbox"]


def _start(fixtures: Path | None = None) -> tuple[Sandbox, dict[str, int]]:
    """A running sandbox serving the built-in fixtures."""
    sandbox = Sandbox().start()
    return sandbox, _serve_fixtures(sandbox, fixtures)


def _serve_fixtures(sandbox: Sandbox, fixtures: Path | None) -> dict[str, int]:
    """The fixtures from ``fixtures``, ``./data/fixtures``, or generated ones."""
    if fixtures is None and Path("data/fixtures/products_1.csv").is_file():
        fixtures = Path("data/fixtures")
    return sandbox.add_fixture_requests(fixtures)


def serve_sandbox(
    fixtures: Path | None = None,
    *,
    serve: Sequence[Sequence[Path]] = (),
    request_ids: Sequence[int] = (),
    port: int = 0,
    token: str | None = None,
) -> int:
    """Serve files until Ctrl-C, printing how to point a client at them.

    ``serve``: the user's own files, one request per group (numbered from
    6073, or by ``request_ids`` in the same order); else the built-in
    fixtures. Served files get result ids derived from their place and
    content, so that with a fixed ``port`` and ``token`` a restart keeps
    every setting, and a file whose content changed can never be taken for
    its cached predecessor.
    """
    if request_ids and len(request_ids) != len(serve):
        raise ConfigurationError(
            f"{len(request_ids)} --request-id for {len(serve)} --serve group(s): give one id "
            "per group, in the same order."
        )
    if len(set(request_ids)) != len(request_ids) or any(r <= 0 for r in request_ids):
        raise ConfigurationError("--request-id takes distinct positive whole numbers.")
    missing = [str(p) for group in serve for p in group if not Path(p).is_file()]
    if missing:
        raise ConfigurationError(f"Cannot serve {missing}: no such file.")
    try:
        sandbox = Sandbox(token=token, port=port).start()
    except OSError as exc:
        raise ConfigurationError(
            f"Cannot listen on port {port}: {exc.strerror or exc}. Choose another --port."
        ) from None
    # SIGTERM (a service manager, `kill`) stops it as Ctrl-C does: files removed, exit 0.
    signal.signal(signal.SIGTERM, _interrupt)
    try:  # from here, Ctrl-C at any moment (even while these lines print) is a normal stop
        _announce(sandbox, serve, request_ids, fixtures)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:  # Ctrl-C is how a sandbox is meant to stop
        print("sandbox stopped", flush=True)
    finally:
        sandbox.close()
    return 0


def _answer_queries_with(sandbox: Sandbox, rid: int) -> None:
    """Let every query count and download request ``rid``'s files (in their format)."""
    from .remote.models import DATA_TYPES

    request = sandbox.requests[rid]
    files = [served.path for _, served in request.files]
    format = (
        "csv" if all(f.name.lower().removesuffix(".gz").endswith(".csv") for f in files) else "json"
    )
    for kind in DATA_TYPES:
        sandbox.add_query("*", files, data_type=kind, format=format, records=request.records)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _announce(
    sandbox: Sandbox,
    serve: Sequence[Sequence[Path]],
    request_ids: Sequence[int],
    fixtures: Path | None,
) -> None:
    """Serve the files and print how to point a client at them."""
    if serve:
        ids = {}
        for n, group in enumerate(serve):
            files = [Path(p) for p in group]
            rid = request_ids[n] if request_ids else None
            rid = sandbox.add_request(files, request_id=rid, result_ids=_content_ids(files))
            ids[f"your files: {', '.join(p.name for p in files)}"] = rid
        _answer_queries_with(sandbox, next(iter(ids.values())))
    else:
        ids = _serve_fixtures(sandbox, fixtures)
    print("Datafiniti sandbox running (Ctrl-C to stop)")
    print(f"export DATAFINITI_API_URL={sandbox.api_url}")
    print(f"export DATAFINITI_API_TOKEN={sandbox.token}")
    for name, rid in ids.items():
        count = len(sandbox.requests[rid].files)
        print(f"request {rid}: {count} file(s) ({name})")
    first = next(iter(ids.values()))
    print(f"try: datafiniti-loader files {first}")
    if serve:
        print(f"any query of any type downloads (and counts) the files of request {first}")
    else:
        print("any query downloads (and counts) the fixtures of its type, e.g.")
        print("try: datafiniti-loader download 'brand:Sony' --type products --records 50 --wait")
    print(f"API v4 (count, cancel): DATAFINITI_API_URL={sandbox.api_url_v4}", flush=True)


def _content_ids(files: Sequence[Path]) -> list[int | None]:
    """Result ids from each file's place and bytes, ascending in the order the files were given.

    The same file at the same place keeps its id, a changed one gets another
    (a cache never takes it for its predecessor); the order given is the
    order served and loaded.
    """
    ids: list[int | None] = []
    for position, path in enumerate(files, start=1):
        with open(path, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").digest()
        ids.append(position * 10**12 + int.from_bytes(digest[:5], "big") % 10**12)
    return ids


def run_demo(output: str, *, cache: CacheSetting = None, quiet: bool = False) -> int:
    """Load a multi-file request into pandas, convert it to Parquet, and say what happened."""
    from .api import load_results, to_parquet
    from .display import files_table
    from .remote.client import Client

    sandbox, ids = _start(None)
    scratch = owned_tempdir("datafiniti-demo-cache-")
    where = cache if cache is not None else scratch.name
    progress = False if quiet else None
    token, api_url = sandbox.token, sandbox.api_url
    try:
        rid = ids["products"]
        print(f"Sandbox API at {sandbox.api_url}; request {rid} has these result files:")
        with Client(sandbox.token, sandbox.api_url) as client:
            print(files_table(client.results(rid)))
        frame = load_results(rid, token=token, api_url=api_url, cache=where, progress=progress)
        print(
            f"\nLoaded {len(frame):,} rows x {frame.shape[1]} columns from "
            f"{frame['_source_file'].nunique()} files into a pandas DataFrame."
        )
        print("Rows per file:", frame.groupby("_source_file", observed=True).size().to_dict())
        print(
            "Identifiers kept exactly as written:",
            sorted(frame["postalCode"].dropna().unique())[:4],
            sorted(frame["upc"].dropna().unique())[:4],
        )
        typed = {
            c: str(t) for c, t in frame.dtypes.items() if str(t) not in ("str", "object", "string")
        }
        print("Typed columns:", typed)
        summary = to_parquet(
            rid,
            output,
            overwrite=True,
            token=token,
            api_url=api_url,
            cache=where,
            progress=progress,
        )
        print(
            f"\nWrote {summary.rows:,} rows to Parquet at {Path(summary.path).resolve()} "
            f"({len(summary.parquet_files)} file(s), {summary.bytes:,} bytes)."
        )
        nested = load_results(
            ids["products_json"], token=token, api_url=api_url, cache=where, progress=progress
        )
        reviews = nested["reviews"].iloc[0]
        print(
            f"JSON request {ids['products_json']}: {len(nested)} records, nested 'reviews' kept as "
            f"{type(reviews).__name__} of {type(reviews[0]).__name__}."
        )
        _query_to_data(sandbox, rid, where, progress)
    finally:
        sandbox.close()
        scratch.cleanup()
    return 0


def _query_to_data(sandbox: Sandbox, rid: int, cache: CacheSetting, progress: bool | None) -> None:
    """Count, create, wait and load on API v4, merging with the request loaded before."""
    from .api import count, create_download, load_results

    token, v4 = sandbox.token, sandbox.api_url_v4
    found = count("brand:Sony", data_type="products", token=token, api_url=v4)
    request = create_download(
        "brand:Sony", data_type="products", num_records=found, token=token, api_url=v4
    )
    both: list[int | DownloadRequest] = [rid, request]
    merged = load_results(
        both, dedupe=True, wait=True, cache=cache, progress=progress, token=token, api_url=v4
    )
    print(
        f"\nQuery 'brand:Sony' on API v4: {found} records match; created download "
        f"{request.id}, waited for it, and merged it with request {rid} (dedupe=True): "
        f"{len(merged):,} rows, each record's newest copy only."
    )
