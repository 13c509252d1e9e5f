"""The ``sandbox`` and ``demo`` verbs: the library end to end with no account and no network."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .config import CacheSetting
from .sandbox import Sandbox

__all__ = ["run_demo", "serve_sandbox"]


def _start(fixtures: Path | None) -> tuple[Sandbox, dict[str, int]]:
    """A running sandbox serving the fixtures: ``fixtures``, ``./data/fixtures`` or new ones."""
    if fixtures is None and Path("data/fixtures/products_1.csv").is_file():
        fixtures = Path("data/fixtures")
    sandbox = Sandbox().start()
    return sandbox, sandbox.add_fixture_requests(fixtures)


def serve_sandbox(fixtures: Path | None = None) -> int:
    """Serve the fixtures until interrupted, printing how to point a client at them."""
    sandbox, ids = _start(fixtures)
    print("Datafiniti sandbox running (Ctrl-C to stop)")
    print(f"  export DATAFINITI_API_URL={sandbox.api_url}")
    print(f"  export DATAFINITI_API_TOKEN={sandbox.token}")
    for name, rid in ids.items():
        print(f"  request {rid}: {name}")
    first = next(iter(ids.values()))
    print(f"try: datafiniti-loader files {first}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:  # Ctrl-C is how a sandbox is meant to stop
        print("sandbox stopped", flush=True)
    finally:
        sandbox.close()
    return 0


def run_demo(output: str, *, cache: CacheSetting = None, quiet: bool = False) -> int:
    """Load a multi-file request into pandas, convert it to Parquet, and say what happened."""
    from .api import load_results, to_parquet
    from .client import Client
    from .display import files_table

    sandbox, ids = _start(None)
    scratch = tempfile.TemporaryDirectory(prefix="datafiniti-demo-cache-")
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
    finally:
        sandbox.close()
        scratch.cleanup()
    return 0
