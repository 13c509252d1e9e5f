"""``make bench``: every figure in BENCHMARKS.md, measured as ratios against baselines in one run.

Each run is a fresh process (``scenarios.py``); runs of the compared methods
are interleaved round by round; figures are medians of ``--rounds`` (>= 3);
peak RSS is each process's own VmHWM. The sandbox serves the files from this
process over loopback, so clients pay real HTTP costs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas
import pyarrow

import datafiniti_loader
from datafiniti_loader.sandbox import Sandbox
from datafiniti_loader.sandbox.fixtures import write_large_csv, write_large_json

HERE = Path(__file__).resolve().parent
REAL = HERE.parent.parent / "shared" / "datafiniti-real"
REAL_CSVS = [
    "Naren-Sridharan__Cross-Domain-Sentiment-Analysis/1429_1.csv.gz",
    "BhavyaGoradia__AI/Datafiniti_Amazon_Consumer_Reviews_of_Amazon_Products.csv.gz",
    "michaelcho29__text_analytics_workshop/Datafiniti_Hotel_Reviews.csv.gz",
    "neylsoncrepalde__RFSVM/Datafiniti_Womens_Shoes.csv.gz",
]
GENERATED_FILE_BYTES = 128_000_000  # each generated file; 8 of them make the ~1 GB download


class Bench:
    """Runs scenarios in fresh processes and keeps every measurement."""

    def __init__(self, sandbox: Sandbox, rounds: int) -> None:
        self.sandbox = sandbox
        self.rounds = rounds
        self.runs: dict[str, list[dict[str, float]]] = defaultdict(list)

    def run(self, label: str, scenario: str, config: dict[str, Any]) -> dict[str, float]:
        config = {"token": self.sandbox.token, "api_url": self.sandbox.api_url, **config}
        os.sync()  # earlier runs' dirty pages must not be flushed during this one
        done = subprocess.run(
            [sys.executable, str(HERE / "scenarios.py"), scenario, json.dumps(config, default=str)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"{label} failed:\n{done.stderr}")
        result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
        self.runs[label].append(result)
        print(f"  {label}: {result['seconds']:.2f} s, {result['peak_mb']:.0f} MB", flush=True)
        return result

    def median(self, label: str, key: str = "seconds") -> float:
        return statistics.median(r[key] for r in self.runs[label])


def unpack_real(workdir: Path) -> list[Path]:
    target = workdir / "real"
    target.mkdir(exist_ok=True)
    files = []
    for relative in REAL_CSVS:
        out = target / Path(relative).name.removesuffix(".gz")
        if not out.exists():
            with gzip.open(REAL / relative, "rb") as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        files.append(out)
    return files


def header(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig") as handle:
        return handle.readline().rstrip("\n").split(",")


def generate(workdir: Path, count: int) -> list[Path]:
    target = workdir / "generated"
    target.mkdir(exist_ok=True)
    files = []
    for n in range(count):
        path = target / f"gen_{n}.csv"
        if not path.exists():
            write_large_csv(path, GENERATED_FILE_BYTES, seed=n)
        files.append(path)
    return files


def _ensure(path: Path, seed: int) -> Path:
    """A generated file; its records overlap the main set's (same ids, other rows)."""
    if not path.exists():
        write_large_csv(path, GENERATED_FILE_BYTES, seed=seed)
    return path


def size_gb(files: list[Path]) -> float:
    return sum(p.stat().st_size for p in files) / 1e9


def bench_load(
    bench: Bench, name: str, files: list[Path], throttle: float | None = None
) -> dict[str, Any]:
    rid = bench.sandbox.add_request(files)
    bench.sandbox.faults.throttle = throttle
    print(
        f"load_results vs naive loop vs local floor: {name} ({size_gb(files):.2f} GB, {len(files)} files)"
    )
    methods = ("load_results", "naive_loop", "local_floor", "download_pyarrow_load")
    labels = {m: f"load/{name}/{m}" for m in methods}
    for _ in range(bench.rounds):
        for method, label in labels.items():
            bench.run(label, method, {"request_id": rid, "files": files})
    bench.sandbox.faults.throttle = None
    ours, naive, floor, download_pyarrow = (bench.median(labels[m]) for m in methods)
    mem = {m: bench.median(labels[m], "peak_mb") for m in labels}
    return {"data": name, "gb": size_gb(files), "ours_s": ours, "naive_s": naive, "floor_s": floor,
            "vs_naive": ours / naive, "vs_floor": ours / floor, "ours_mb": mem["load_results"],
            "naive_mb": mem["naive_loop"], "floor_mb": mem["local_floor"],
            "download_pyarrow_s": download_pyarrow,
            "download_pyarrow_vs_naive": download_pyarrow / naive}  # fmt: skip


def bench_parquet(bench: Bench, name: str, files: list[Path], workdir: Path) -> dict[str, Any]:
    rid = bench.sandbox.add_request(files)
    print(f"to_parquet vs pyarrow streaming: {name} ({size_gb(files):.2f} GB)")
    methods = ("to_parquet", "pyarrow_streaming", "download_pyarrow_parquet")
    labels = {m: f"parquet/{name}/{m}" for m in methods}
    for _ in range(bench.rounds):
        for method, label in labels.items():
            out = workdir / "out" / label.replace("/", "_")
            bench.run(label, method, {"request_id": rid, "files": files, "out": out})
            shutil.rmtree(out, ignore_errors=True)
    ours, arrow, download_arrow = (bench.median(labels[m]) for m in methods)
    return {"data": name, "gb": size_gb(files), "ours_s": ours, "pyarrow_s": arrow, "ratio": ours / arrow,
            "ours_mb": bench.median(labels["to_parquet"], "peak_mb"),
            "pyarrow_mb": bench.median(labels["pyarrow_streaming"], "peak_mb"),
            "download_pyarrow_s": download_arrow,
            "download_pyarrow_ratio": download_arrow / arrow}  # fmt: skip


def bench_cache(bench: Bench, files: list[Path], workdir: Path) -> dict[str, Any]:
    rid = bench.sandbox.add_request(files)
    print(f"cold vs warm reload ({size_gb(files):.2f} GB)")
    warm_gets = 0
    for n in range(max(5, bench.rounds)):  # short runs: more rounds for a steady median
        cache = workdir / f"cache-{n}"
        shutil.rmtree(cache, ignore_errors=True)
        bench.run("cache/cold", "load_results", {"request_id": rid, "cache": cache})
        before = len(bench.sandbox.log)
        bench.run("cache/warm", "load_results", {"request_id": rid, "cache": cache})
        warm_gets += sum(1 for e in bench.sandbox.log[before:] if e.server == "bucket")
        shutil.rmtree(cache, ignore_errors=True)
    cold, warm = bench.median("cache/cold"), bench.median("cache/warm")
    return {
        "cold_s": cold,
        "warm_s": warm,
        "speedup": cold / warm,
        "warm_bucket_requests": warm_gets,
    }


def bench_delta(
    bench: Bench, table_files: list[Path], update_files: list[Path], workdir: Path
) -> dict[str, Any]:
    """A Delta table of ~1 GB, then a ~250 MB download merged into it (a weekly update)."""
    base = bench.sandbox.add_request(table_files)
    update = bench.sandbox.add_request(update_files)
    print(
        f"to_delta: a {size_gb(table_files):.2f} GB table, then {size_gb(update_files):.2f} GB merged"
    )
    table = workdir / "delta" / "base"
    shutil.rmtree(table.parent, ignore_errors=True)
    table.parent.mkdir(parents=True)
    bench.run("delta/create", "to_delta", {"request_id": base, "out": table})
    for n in range(bench.rounds):
        work = table.parent / f"round-{n}"
        shutil.copytree(table, work)
        bench.run("delta/merge", "to_delta", {"request_id": update, "out": work})
        # The same download written as Parquet: what the merge costs beyond a conversion.
        bench.run(
            "delta/parquet", "to_parquet", {"request_id": update, "out": work.parent / f"pq-{n}"}
        )
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(work.parent / f"pq-{n}", ignore_errors=True)
    shutil.rmtree(table.parent, ignore_errors=True)
    merge, parquet = bench.median("delta/merge"), bench.median("delta/parquet")
    return {
        "table_gb": size_gb(table_files),
        "update_gb": size_gb(update_files),
        "create_s": bench.median("delta/create"),
        "create_mb": bench.median("delta/create", "peak_mb"),
        "merge_s": merge,
        "merge_mb": bench.median("delta/merge", "peak_mb"),
        "parquet_s": parquet,
        "ratio": merge / parquet,
    }


def bench_workers(bench: Bench, files: list[Path], throttle: float) -> dict[str, Any]:
    rid = bench.sandbox.add_request(files)
    print(
        f"downloads throttled to {throttle / 1e6:.0f} MB/s per connection ({size_gb(files):.2f} GB)"
    )
    bench.sandbox.faults.throttle = throttle
    try:
        for _ in range(bench.rounds):
            for workers in (1, 2, 4, 8):
                bench.run(
                    f"workers/{workers}", "fetch_only", {"request_id": rid, "workers": workers}
                )
    finally:
        bench.sandbox.faults.throttle = None
    one = bench.median("workers/1")
    return {w: {"seconds": bench.median(f"workers/{w}"), "speedup": one / bench.median(f"workers/{w}")}
            for w in (1, 2, 4, 8)}  # fmt: skip


def bench_dask(bench: Bench, files: list[Path], throttle: float, workdir: Path) -> dict[str, Any]:
    """to_parquet on dask workers against the local engine, downloads throttled as from S3."""
    rid = bench.sandbox.add_request(files)
    more = [
        write_large_csv(workdir / f"throttled_{n}.csv", 12_000_000, seed=n)
        for n in range(len(files), 2 * len(files))
    ]
    print(f"to_parquet on dask, {len(files)} files at {throttle / 1e6:.0f} MB/s per connection")
    config = {"request_id": rid, "out": str(workdir / "dask-out")}
    bench.sandbox.faults.throttle = throttle
    try:
        for _ in range(bench.rounds):
            for workers in (0, 1, 2, 4):
                bench.run(f"dask/{workers}", "dask_parquet", {**config, "workers": workers})
        for workers in (0, 2):  # once more through a counting proxy: what the client fetched
            bench.run(f"dask-count/{workers}", "dask_parquet",
                      {**config, "workers": workers, "count": True})  # fmt: skip
        # Twice the files: the client's peak should not grow with the download.
        double = bench.sandbox.add_request(files + more)
        for _ in range(bench.rounds):
            bench.run(
                "dask-double/2", "dask_parquet", {**config, "request_id": double, "workers": 2}
            )
    finally:
        bench.sandbox.faults.throttle = None
    local = bench.median("dask/0")
    rows = {}
    for workers in (0, 1, 2, 4):
        seconds = bench.median(f"dask/{workers}")
        rows[workers] = {"seconds": seconds, "speedup": local / seconds,
                         "client_peak_mb": bench.median(f"dask/{workers}", "peak_mb")}  # fmt: skip
    for workers in (0, 2):
        rows[workers]["client_bucket_mb"] = bench.median(
            f"dask-count/{workers}", "client_bucket_mb"
        )
    double_gb = size_gb(files + more)
    return {"gb": size_gb(files), "by_workers": rows,
            "double": {"gb": double_gb, "workers": 2,
                       "seconds": bench.median("dask-double/2"),
                       "client_peak_mb": bench.median("dask-double/2", "peak_mb")}}  # fmt: skip


def bench_json(bench: Bench, workdir: Path, quick: bool) -> dict[str, Any]:
    """JSON Lines: load and conversion against pyarrow's reader, and memory flat in size."""
    sizes = {"main": 100_000_000 if quick else 400_000_000, "big": 1_600_000_000}
    files = {}
    for name, size in sizes.items():
        if quick and name == "big":
            continue
        path = workdir / "generated" / f"json_{size // 1_000_000}mb.txt"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_large_json(path, size, seed=len(name))
        files[name] = path
    main = files["main"]
    rid = bench.sandbox.add_request([main])
    print(f"JSON Lines: one {main.stat().st_size / 1e9:.2f} GB file")
    pairs = {
        "load": ("load_arrow", "pyarrow_read_json"),
        "parquet": ("to_parquet", "pyarrow_json_parquet"),
        "pandas": ("load_results", "json_naive_loop"),
    }
    for _ in range(bench.rounds):
        bench.run("json/download", "fetch_only", {"request_id": rid, "workers": 1})
        for what, methods in pairs.items():
            for method in methods:
                out = workdir / "out" / f"json_{method}"
                bench.run(f"json/{what}/{method}", method,
                          {"request_id": rid, "files": [main], "out": out})  # fmt: skip
                shutil.rmtree(out, ignore_errors=True)
    result: dict[str, Any] = {
        "gb": main.stat().st_size / 1e9,
        "download_s": bench.median("json/download"),
    }
    for what, (ours, theirs) in pairs.items():
        mine, base = f"json/{what}/{ours}", f"json/{what}/{theirs}"
        result[what] = {
            "ours_s": bench.median(mine), "base_s": bench.median(base),
            "ratio": bench.median(mine) / bench.median(base),
            "ours_mb": bench.median(mine, "peak_mb"), "base_mb": bench.median(base, "peak_mb"),
        }  # fmt: skip
    if "big" in files:
        big = bench.sandbox.add_request([files["big"]])
        out = workdir / "out" / "json_big"
        for _ in range(bench.rounds):
            bench.run("json/parquet-big", "to_parquet", {"request_id": big, "out": out})
            shutil.rmtree(out, ignore_errors=True)
        result["big"] = {
            "gb": files["big"].stat().st_size / 1e9,
            "ours_s": bench.median("json/parquet-big"),
            "ours_mb": bench.median("json/parquet-big", "peak_mb"),
        }
    return result


def bench_tables(bench: Bench, name: str, files: list[Path]) -> dict[str, Any]:
    """load_tables against load_results on the same request (the flat load it starts from)."""
    rid = bench.sandbox.add_request(files)
    print(f"load_tables vs load_results: {name} ({size_gb(files):.2f} GB)")
    for _ in range(bench.rounds):
        for method in ("load_results", "load_tables"):
            bench.run(f"tables/{name}/{method}", method, {"request_id": rid})
    flat, tidy = (bench.median(f"tables/{name}/{m}") for m in ("load_results", "load_tables"))
    return {"data": name, "gb": size_gb(files), "flat_s": flat, "tables_s": tidy,
            "ratio": tidy / flat,
            "flat_mb": bench.median(f"tables/{name}/load_results", "peak_mb"),
            "tables_mb": bench.median(f"tables/{name}/load_tables", "peak_mb")}  # fmt: skip


def bench_dlt(bench: Bench, name: str, files: list[Path], workdir: Path) -> dict[str, Any]:
    """The dlt source into DuckDB against to_parquet(tables=True): the same tidy tables, on disk.

    Each round runs the source twice into one warehouse: the first loads every
    record; the second reads the same download again, compares it with the
    destination and loads nothing (the cost of the newest-copy check). The
    extract step (this library) is measured apart from dlt's normalize and
    DuckDB's load, which run in the same process.
    """
    rid = bench.sandbox.add_request(files)
    print(f"dlt source vs to_parquet(tables=True): {name} ({size_gb(files):.2f} GB)")
    for n in range(bench.rounds):
        out = workdir / f"dlt-{n}"
        try:
            bench.run(
                f"dlt/{name}/parquet",
                "tables_parquet",
                {"request_id": rid, "out": str(workdir / f"tp-{n}")},
            )
            bench.run(f"dlt/{name}/first", "dlt_duckdb", {"request_id": rid, "out": str(out)})
            bench.run(f"dlt/{name}/again", "dlt_duckdb", {"request_id": rid, "out": str(out)})
        finally:
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(workdir / f"tp-{n}", ignore_errors=True)
    parquet = bench.median(f"dlt/{name}/parquet")
    first, again = f"dlt/{name}/first", f"dlt/{name}/again"
    return {"data": name, "gb": size_gb(files), "parquet_s": parquet,
            "parquet_mb": bench.median(f"dlt/{name}/parquet", "peak_mb"),
            "extract_s": bench.median(first, "extract_s"),
            "ratio": bench.median(first, "extract_s") / parquet,
            "extract_mb": bench.median(first, "extract_mb"),
            "load_s": bench.median(first, "load_s"), "load_mb": bench.median(first, "load_mb"),
            "first_s": bench.median(first), "again_s": bench.median(again),
            "again_extract_s": bench.median(again, "extract_s"),
            "again_mb": bench.median(again, "extract_mb")}  # fmt: skip


def machine() -> dict[str, Any]:
    cpu = "?"
    if Path("/proc/cpuinfo").exists():
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(
            (ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "?"
        )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory, 1), "python": platform.python_version(),
            "pandas": pandas.__version__, "pyarrow": pyarrow.__version__,
            "datafiniti_loader": datafiniti_loader.__version__, "date": time.strftime("%Y-%m-%d")}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=HERE / ".work",
        help="generated inputs, kept for the next run (about 3 GB; gitignored), and each "
        "run's outputs, removed after it",
    )
    parser.add_argument("--sizes", default="0.25,0.5,1,2", help="to_parquet input sizes in GB")
    parser.add_argument("--only", default="load,parquet,cache,workers,delta,json,tables,dask,dlt")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.json")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a quick look while working (under two minutes): one round, 0.27 GB of "
        "generated data, no worker scaling; written to results/quick.json",
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.sizes, args.only = (
            1,
            "0.25",
            "load,parquet,cache,json,tables",
        )  # no delta: ~1 min alone
        if args.out == HERE / "results" / "latest.json":
            args.out = HERE / "results" / "quick.json"
    args.workdir.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(","))
    sizes = [float(s) for s in args.sizes.split(",")]
    wanted = round(max(sizes) * 1e9 / GENERATED_FILE_BYTES)
    generated = generate(args.workdir, max(2 if args.quick else 8, wanted))
    real = unpack_real(args.workdir) if REAL.is_dir() else []
    report: dict[str, Any] = {"machine": machine(), "rounds": args.rounds}
    with Sandbox() as sandbox:
        bench = Bench(sandbox, args.rounds)
        small = [
            write_large_csv(args.workdir / f"throttled_{n}.csv", 12_000_000, seed=n)
            for n in range(0 if args.quick else 8)
        ]
        if "load" in only:
            big = (
                ("generated 0.27 GB", generated[:2])
                if args.quick
                else ("generated 1 GB", generated[:8])
            )
            datasets = ([("real", real)] if real else []) + [big]
            report["load"] = [bench_load(bench, name, files) for name, files in datasets]
            if not args.quick:  # the same comparison over 20 MB/s per connection, as from S3
                report["load"].append(bench_load(bench, "generated 0.1 GB at 20 MB/s", small, 20e6))
        if "cache" in only:
            report["cache"] = bench_cache(bench, generated[:2], args.workdir)
        if "parquet" in only:
            rows = [bench_parquet(bench, "real", real, args.workdir)] if real else []
            for gb in sizes:
                count = max(1, round(gb * 1e9 / GENERATED_FILE_BYTES))
                rows.append(
                    bench_parquet(bench, f"generated {gb:g} GB", generated[:count], args.workdir)
                )
            report["parquet"] = rows
        if "workers" in only:
            report["workers"] = bench_workers(bench, small, throttle=20e6)
        if "json" in only:
            report["json"] = bench_json(bench, args.workdir, args.quick)
        if "dask" in only and not args.quick:
            report["dask"] = bench_dask(bench, small, 20e6, args.workdir)
        if "tables" in only:
            report["tables"] = [bench_tables(bench, "real", real)] if real else []
            report["tables"].append(bench_tables(bench, "generated 0.27 GB", generated[:2]))
        if "dlt" in only and not args.quick:
            # Merging needs dateUpdated, which the oldest real view (1429_1.csv) lacks.
            dated = [f for f in real if "dateUpdated" in header(f)]
            report["dlt"] = (
                [bench_dlt(bench, "real (3 dated)", dated, args.workdir)] if dated else []
            )
            report["dlt"].append(bench_dlt(bench, "generated 0.27 GB", generated[:2], args.workdir))
        if "delta" in only:
            updates = [
                _ensure(args.workdir / "generated" / f"update_{n}.csv", seed=100 + n)
                for n in range(2)
            ]
            report["delta"] = bench_delta(bench, generated[:8], updates, args.workdir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
