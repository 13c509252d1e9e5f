"""One benchmark run, in a fresh process: ``python scenarios.py NAME CONFIG_JSON``.

Prints one JSON line: wall seconds of the measured work (imports excluded),
rows, and this process's peak RSS (VmHWM) as the kernel counted it.
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith("VmHWM:"))) / 1024


def load_results(cfg: dict[str, Any]) -> int:
    from datafiniti_loader import load_results

    frame = load_results(
        cfg["request_id"], token=cfg["token"], api_url=cfg["api_url"], cache=cfg.get("cache", False),
        progress=False, max_workers=cfg.get("workers"),
    )  # fmt: skip
    return len(frame)


def _naive_bodies(cfg: dict[str, Any]) -> Iterator[bytes]:
    """Each result file's bytes, as a hand-written loop gets them: the listing, then a GET each."""
    import requests

    listing = requests.get(
        f"{cfg['api_url']}/results/{cfg['request_id']}", auth=(cfg["token"], ""), timeout=60
    )
    for result in listing.json():
        yield requests.get(result["url"], timeout=600).content


def naive_loop(cfg: dict[str, Any]) -> int:
    """What Datafiniti's guides show: get each URL, read_csv on the bytes, concat."""
    import pandas as pd

    frames = [pd.read_csv(io.BytesIO(body)) for body in _naive_bodies(cfg)]
    return len(pd.concat(frames, ignore_index=True))


def local_floor(cfg: dict[str, Any]) -> int:
    """pandas reading the same files from local disk: the floor for any loader."""
    import pandas as pd

    return len(pd.concat([pd.read_csv(p) for p in cfg["files"]], ignore_index=True))


def to_parquet(cfg: dict[str, Any]) -> int:
    from datafiniti_loader import to_parquet

    summary = to_parquet(
        cfg["request_id"], cfg["out"], token=cfg["token"], api_url=cfg["api_url"],
        cache=cfg.get("cache", False), progress=False, overwrite=True,
    )  # fmt: skip
    return summary.rows


def to_delta(cfg: dict[str, Any]) -> int:
    from datafiniti_loader import to_delta

    summary = to_delta(
        cfg["request_id"], cfg["out"], token=cfg["token"], api_url=cfg["api_url"],
        cache=cfg.get("cache", False), progress=False,
    )  # fmt: skip
    return summary.rows_inserted


def _text_csv_options(path: Any) -> dict[str, Any]:
    """pyarrow's options for a Datafiniti CSV with every column as text (its header read first)."""
    import csv

    import pyarrow as pa
    import pyarrow.csv as pcsv

    with open(path, encoding="utf-8-sig", newline="") as handle:
        names = next(csv.reader(handle))
    return {
        "parse_options": pcsv.ParseOptions(newlines_in_values=True),
        "convert_options": pcsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string())),
    }


def _csv_to_parquet(path: Any, out: str) -> int:
    """pyarrow's streaming reader into a ParquetWriter, every column as text."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    rows = 0
    reader = pcsv.open_csv(path, **_text_csv_options(path))
    with pq.ParquetWriter(out, reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def pyarrow_streaming(cfg: dict[str, Any]) -> int:
    """pyarrow's own streaming CSV to Parquet over the same local files.

    Every column is read as text: with guessed types, pyarrow's streaming
    reader fails on these files (a column empty in the first block, then
    ``TRUE``), the trap the engineering notes describe.
    """
    Path(cfg["out"]).mkdir(parents=True, exist_ok=True)
    return sum(
        _csv_to_parquet(path, f"{cfg['out']}/part-{n}.parquet")
        for n, path in enumerate(cfg["files"])
    )


def _downloaded(cfg: dict[str, Any]) -> Iterator[Path]:
    """The request's files downloaded by our transport (to disk, in parallel), in order."""
    from datafiniti_loader.loader import LoadOptions, open_load

    options = LoadOptions(token=cfg["token"], api_url=cfg["api_url"], cache=False, progress=False,
                          max_workers=cfg.get("workers"))  # fmt: skip
    with open_load(cfg["request_id"], options) as source:
        for _, path in source.download.local_files():
            yield path


def download_pyarrow_load(cfg: dict[str, Any]) -> int:
    """Our downloads, then pyarrow's multi-threaded ``read_csv`` of each file as it lands.

    Every column as text, no types decided, no provenance, no cache: the
    fastest pipeline made of the same parts, which shows how much of a
    ratio the downloads cost on this machine.
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv

    tables = [pcsv.read_csv(path, **_text_csv_options(path)) for path in _downloaded(cfg)]
    frame = pa.concat_tables(tables, promote_options="default").to_pandas(self_destruct=True)
    return len(frame)


def download_pyarrow_parquet(cfg: dict[str, Any]) -> int:
    """Our downloads, then :func:`pyarrow_streaming`'s conversion of each file as it lands."""
    Path(cfg["out"]).mkdir(parents=True, exist_ok=True)
    return sum(
        _csv_to_parquet(path, f"{cfg['out']}/part-{n}.parquet")
        for n, path in enumerate(_downloaded(cfg))
    )


def load_tables(cfg: dict[str, Any]) -> int:
    from datafiniti_loader import load_tables

    tables = load_tables(
        cfg["request_id"], token=cfg["token"], api_url=cfg["api_url"], cache=False,
        progress=False,
    )  # fmt: skip
    return len(tables["records"])


def tables_parquet(cfg: dict[str, Any]) -> int:
    from datafiniti_loader import to_parquet

    summary = to_parquet(
        cfg["request_id"], cfg["out"], token=cfg["token"], api_url=cfg["api_url"], cache=False,
        progress=False, overwrite=True, tables=True,
    )  # fmt: skip
    return summary.rows


def dlt_duckdb(cfg: dict[str, Any]) -> dict[str, Any]:
    """The dlt source into a DuckDB file, step by step; run twice on one ``out``.

    The extract step is this library's work (and dlt's writing of it); normalize
    and load are dlt's and DuckDB's, in this process, so they are timed and their
    peak memory taken apart (the peak is reset between steps).
    """
    import dlt

    from datafiniti_loader.dlt import datafiniti_source

    pipeline = dlt.pipeline(
        "bench", destination=dlt.destinations.duckdb(f"{cfg['out']}/warehouse.duckdb"),
        dataset_name="datafiniti", pipelines_dir=f"{cfg['out']}/dlt",
    )  # fmt: skip
    source = datafiniti_source(
        cfg["request_id"], token=cfg["token"], api_url=cfg["api_url"], cache=False,
        progress=False,
    )  # fmt: skip
    started = time.perf_counter()
    pipeline.extract(source)
    extracted = time.perf_counter()
    extract_mb = peak_rss_mb()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # VmHWM from here on: the load's own peak
    pipeline.normalize()
    pipeline.load()
    done = time.perf_counter()
    with pipeline.sql_client() as client:
        rows = int(client.execute_sql("SELECT count(*) FROM records")[0][0])
    return {"rows": rows, "seconds": done - started, "extract_s": extracted - started,
            "extract_mb": extract_mb, "load_s": done - extracted, "load_mb": peak_rss_mb()}  # fmt: skip


def load_arrow(cfg: dict[str, Any]) -> int:
    from datafiniti_loader import load_results

    table = load_results(
        cfg["request_id"], token=cfg["token"], api_url=cfg["api_url"], cache=False,
        progress=False, output="arrow",
    )  # fmt: skip
    return int(table.num_rows)


def json_naive_loop(cfg: dict[str, Any]) -> int:
    """The loop a user writes for JSON: get each URL, json.loads each line, one DataFrame."""
    import pandas as pd

    records = [
        json.loads(line)
        for body in _naive_bodies(cfg)
        for line in body.splitlines()
        if line.strip()
    ]
    return len(pd.DataFrame(records))


def pyarrow_read_json(cfg: dict[str, Any]) -> int:
    """pyarrow's own multi-threaded JSON reader on the same local files (no exactness rules)."""
    import pyarrow.json as pjson

    return sum(pjson.read_json(p).num_rows for p in cfg["files"])


def pyarrow_json_parquet(cfg: dict[str, Any]) -> int:
    """``read_json`` then ``write_table``, file by file, on the same local files."""
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    Path(cfg["out"]).mkdir(parents=True, exist_ok=True)
    rows = 0
    for n, path in enumerate(cfg["files"]):
        table = pjson.read_json(path)
        pq.write_table(table, f"{cfg['out']}/part-{n}.parquet")
        rows += table.num_rows
    return rows


def fetch_only(cfg: dict[str, Any]) -> int:
    """Only the downloads (for the worker-scaling figure)."""
    return sum(1 for _ in _downloaded(cfg))


class _CountingProxy:
    """A plain-HTTP forward proxy in this process, counting the bucket bytes it relays.

    Set as HTTP_PROXY after the dask workers started, it sees this process's
    calls only: what the client itself downloads.
    """

    def __init__(self) -> None:
        import http.server
        import socket
        import threading
        import urllib.parse

        counter = self

        class Relay(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                with socket.create_connection((url.hostname, url.port)) as upstream:
                    target = url.path + ("?" + url.query if url.query else "")
                    headers = "".join(
                        f"{k}: {v}\r\n" for k, v in self.headers.items()
                        if k.lower() not in ("connection", "proxy-connection", "keep-alive")
                    )  # fmt: skip
                    upstream.sendall(f"GET {target} HTTP/1.0\r\n{headers}\r\n".encode())
                    while chunk := upstream.recv(1 << 16):
                        if url.path.startswith("/datafiniti-downloads/"):
                            counter.bucket_bytes += len(chunk)
                        self.wfile.write(chunk)
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.bucket_bytes = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Relay)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def dask_parquet(cfg: dict[str, Any]) -> dict[str, Any]:
    """to_parquet on a LocalCluster of ``workers`` processes (engine dask) or none (local).

    The cluster is started before the clock (a user's cluster is already
    running); with ``count`` the client's calls go through a counting proxy.
    """
    import os
    import tempfile

    import dask

    from datafiniti_loader import to_parquet

    cluster = client = None
    # dask's scratch space (lock files, spilled data) goes with the run, not into /tmp for good.
    scratch = tempfile.TemporaryDirectory(prefix="bench-dask-")
    dask.config.set({"temporary-directory": scratch.name})
    if cfg["workers"]:
        from dask.distributed import Client, LocalCluster

        cluster = LocalCluster(
            n_workers=cfg["workers"], threads_per_worker=1, processes=True,
            dashboard_address=None, silence_logs=50,
        )  # fmt: skip
        client = Client(cluster)
    proxy = None
    if cfg.get("count"):
        proxy = _CountingProxy()
        os.environ.pop("NO_PROXY", None)
        os.environ.pop("no_proxy", None)
        os.environ["HTTP_PROXY"] = proxy.url
    started = time.perf_counter()
    summary = to_parquet(
        cfg["request_id"], cfg["out"], token=cfg["token"], api_url=cfg["api_url"], cache=False,
        progress=False, overwrite=True, engine="dask" if cfg["workers"] else "local",
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if client is not None and cluster is not None:
        client.close()
        cluster.close()
    scratch.cleanup()
    found = {"rows": summary.rows, "seconds": elapsed}
    if proxy is not None:
        found["client_bucket_mb"] = proxy.bucket_bytes / 1e6
    return found


SCENARIOS = {
    f.__name__: f
    for f in (
        load_results,
        naive_loop,
        local_floor,
        to_parquet,
        to_delta,
        pyarrow_streaming,
        download_pyarrow_load,
        download_pyarrow_parquet,
        fetch_only,
        load_arrow,
        load_tables,
        json_naive_loop,
        pyarrow_read_json,
        pyarrow_json_parquet,
        dask_parquet,
        tables_parquet,
        dlt_duckdb,
    )
}

if __name__ == "__main__":
    name, config = sys.argv[1], json.loads(sys.argv[2])
    # Every scenario pays the same imports before the clock starts.
    import pandas  # noqa: F401
    import pyarrow.csv
    import pyarrow.json
    import pyarrow.parquet  # noqa: F401
    import requests  # noqa: F401

    # The package loads its modules on first use: load them all here, before the clock.
    import datafiniti_loader.api
    import datafiniti_loader.loader

    if name == "to_delta":  # its own import, paid before the clock like the others
        import deltalake  # noqa: F401

        import datafiniti_loader.sinks.delta

    if name == "dlt_duckdb":
        import dlt  # noqa: F401

        import datafiniti_loader.dlt  # noqa: F401

    started = time.perf_counter()
    result: Any = SCENARIOS[name](config)
    elapsed = time.perf_counter() - started
    # A scenario that sets up before its own clock (a dask cluster) says what it measured.
    measured = result if isinstance(result, dict) else {"rows": result, "seconds": elapsed}
    print(json.dumps({"seconds": elapsed, **measured, "peak_mb": peak_rss_mb()}))
