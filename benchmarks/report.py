"""Render benchmarks/results/latest.json as the figures section of BENCHMARKS.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
START = "<!-- figures:start -->"
END = "<!-- figures:end -->"


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Measured {m['date']} on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; "
        f"Python {m['python']}, pandas {m['pandas']}, pyarrow {m['pyarrow']}, "
        f"datafiniti-loader {m['datafiniti_loader']}. Medians of {report['rounds']} rounds, "
        "each run a fresh process, methods interleaved; peak RSS is the process's VmHWM.",
        "",
    ]
    if "load" in report:
        lines += [
            "### `load_results` into pandas vs the naive loop and the local floor",
            "",
            "| data | GB | ours s | naive s | floor s | ours/naive (target <= 0.5) | ours/floor (target <= 1.3) | ours MB | naive MB |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in report["load"]:
            lines.append(
                f"| {r['data']} | {r['gb']:.2f} | {r['ours_s']:.2f} | {r['naive_s']:.2f} | {r['floor_s']:.2f} "
                f"| {r['vs_naive']:.2f} ({verdict(r['vs_naive'] <= 0.5)}) | {r['vs_floor']:.2f} ({verdict(r['vs_floor'] <= 1.3)}) "
                f"| {r['ours_mb']:.0f} | {r['naive_mb']:.0f} ({verdict(r['ours_mb'] <= r['naive_mb'])}) |"
            )
        lines.append("")
    if "parquet" in report:
        lines += [
            "### `to_parquet` vs pyarrow's streaming CSV-to-Parquet on the same local files",
            "",
            "| data | GB | ours s | pyarrow s | ratio (target <= 1.5) | ours peak MB (target < 300) | pyarrow peak MB |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in report["parquet"]:
            lines.append(
                f"| {r['data']} | {r['gb']:.2f} | {r['ours_s']:.2f} | {r['pyarrow_s']:.2f} "
                f"| {r['ratio']:.2f} ({verdict(r['ratio'] <= 1.5)}) | {r['ours_mb']:.0f} ({verdict(r['ours_mb'] < 300)}) "
                f"| {r['pyarrow_mb']:.0f} |"
            )
        lines.append("")
    if "cache" in report:
        c = report["cache"]
        lines += [
            "### Warm reload vs cold (two generated files, 0.27 GB; medians of 5)",
            "",
            "| cold s | warm s | speed-up (target >= 5) | bucket requests during warm loads |",
            "|---|---|---|---|",
            f"| {c['cold_s']:.2f} | {c['warm_s']:.2f} | {c['speedup']:.1f} ({verdict(c['speedup'] >= 5)}) | {c['warm_bucket_requests']} |",
            "",
        ]
    if "workers" in report:
        lines += [
            "### Downloads with 1-8 workers, bucket throttled to 20 MB/s per connection (8 files, 0.1 GB)",
            "",
            "| workers | seconds | speed-up | target (0.8 x N) |",
            "|---|---|---|---|",
        ]
        for workers, r in report["workers"].items():
            target = 0.8 * int(workers)
            lines.append(
                f"| {workers} | {r['seconds']:.2f} | {r['speedup']:.2f} | {target:.1f} ({verdict(r['speedup'] >= target)}) |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results" / "latest.json"
    target = HERE.parent / "BENCHMARKS.md"
    figures = render(json.loads(source.read_text()))
    text = target.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    target.write_text(f"{head}{START}\n{figures}\n{END}{tail}")
    print(f"updated {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
