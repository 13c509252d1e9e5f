"""Hostile sizes: how time and memory grow with one long CSV record and with many columns.

``python benchmarks/hostile.py`` runs each case in a fresh process and prints
a Markdown table (seconds and the process's peak RSS, VmHWM). Linear growth
is the point: doubling the size should about double the time.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

LONG_RECORD_MB = [32, 128, 512]
WIDE_COLUMNS = [1000, 5000, 20000]


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def long_record(megabytes: int) -> str:
    from datafiniti_loader.read.csvfile import iter_csv_batches

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "long.csv"
        with open(path, "wb") as out:  # one quoted cell of `megabytes` MB, full of newlines
            out.write(b'id,text\r\n1,"')
            line = b"x" * 1023 + b"\n"
            for _ in range(megabytes * 1024):
                out.write(line)
            out.write(b'"\r\n2,short\r\n')
        started = time.perf_counter()
        rows = sum(batch.num_rows for batch in iter_csv_batches(path, path.name))
        seconds = time.perf_counter() - started
    assert rows == 2
    return f"| one CSV record of {megabytes} MB | {seconds:.2f} | {peak_rss_mb():.0f} |"


def wide_table(columns: int) -> str:
    import numpy as np
    import pyarrow as pa

    from datafiniti_loader.sinks.outputs import to_pandas

    table = pa.table({f"c{i}": pa.array(np.arange(100)) for i in range(columns)})
    started = time.perf_counter()
    frame = to_pandas(table)
    seconds = time.perf_counter() - started
    assert frame.shape == (100, columns)
    return f"| {columns:,} integer columns to pandas | {seconds:.2f} | {peak_rss_mb():.0f} |"


def main() -> None:
    if len(sys.argv) == 3:  # one case, in this fresh process
        case, size = sys.argv[1], int(sys.argv[2])
        print(long_record(size) if case == "long" else wide_table(size))
        return
    print("| case | seconds | peak RSS MB |\n|---|---|---|")
    cases = [("long", n) for n in LONG_RECORD_MB] + [("wide", n) for n in WIDE_COLUMNS]
    for case, size in cases:
        done = subprocess.run(
            [sys.executable, __file__, case, str(size)], capture_output=True, text=True, check=True
        )
        print(done.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
