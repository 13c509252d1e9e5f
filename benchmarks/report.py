"""Render benchmarks/results/latest.json as the figures section of BENCHMARKS.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
START = "<!-- figures:start -->"
END = "<!-- figures:end -->"


#: The targets of the speed issue, and why a figure misses its target when it does
#: (from the profiles recorded under "Where the time goes" in BENCHMARKS.md).
TARGETS = {"vs_naive": 0.5, "vs_floor": 1.3, "parquet": 2.0, "peak_mb": 300, "warm": 10.0}
REASONS = {
    "vs_naive": "a cold load of the real files spends 1.7-2.0 CPU-seconds on 2 cores; in a "
    "perf profile of one, 28 % of the samples are the kernel zeroing fresh memory (slow on "
    "this virtual machine), 11 % pyarrow's CSV parse, 7 % copying bytes to and from the "
    "kernel and 2 % the interpreter (see below)",
    "vs_floor": "the floor reads local files; a load also downloads them (0.45-0.5 s of the "
    "real set over loopback, writing them to disk included) and the first file must be "
    "whole before it is parsed",
    "parquet": "two passes (types from all the data, then the write) against pyarrow's "
    "one pass with every column as text, and the downloads pyarrow's local conversion does "
    "not make: per GB here 5.8-6.0 CPU-seconds against pyarrow's 2.3-2.7, of which the "
    "downloads alone are 1.25-1.6",
    "warm": "a warm reload decompresses the LZ4 parsed copies into fresh memory: 68 % of "
    "its perf samples are the kernel zeroing those pages, 11 % the decompression; "
    "memory-mapped uncompressed copies were measured no faster in this run's setting "
    "(hashing 270 MB replaces the decompression) and double the cache on disk",
}


def verdict(ok: bool, reason: str = "") -> str:
    if ok:
        return "met"
    return f"**missed**[^{reason}]" if reason else "**missed**"


def footnotes(text: str) -> list[str]:
    """The reasons cited in ``text``, as Markdown footnotes."""
    return [f"[^{key}]: {why}." for key, why in REASONS.items() if f"[^{key}]" in text]


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
                f"| {r['vs_naive']:.2f} ({verdict(r['vs_naive'] <= TARGETS['vs_naive'], 'vs_naive')}) "
                f"| {r['vs_floor']:.2f} ({verdict(r['vs_floor'] <= TARGETS['vs_floor'], 'vs_floor')}) "
                f"| {r['ours_mb']:.0f} | {r['naive_mb']:.0f} ({verdict(r['ours_mb'] <= r['naive_mb'])}) |"
            )
        lines.append("")
    if "parquet" in report:
        lines += [
            "### `to_parquet` vs pyarrow's streaming CSV-to-Parquet on the same local files",
            "",
            "| data | GB | ours s | pyarrow s | ratio (target <= 2.0) | ours peak MB (target <= 300) | pyarrow peak MB |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in report["parquet"]:
            lines.append(
                f"| {r['data']} | {r['gb']:.2f} | {r['ours_s']:.2f} | {r['pyarrow_s']:.2f} "
                f"| {r['ratio']:.2f} ({verdict(r['ratio'] <= TARGETS['parquet'], 'parquet')}) "
                f"| {r['ours_mb']:.0f} ({verdict(r['ours_mb'] <= TARGETS['peak_mb'])}) "
                f"| {r['pyarrow_mb']:.0f} |"
            )
        lines.append("")
    if "cache" in report:
        c = report["cache"]
        lines += [
            "### Warm reload vs cold (two generated files, 0.27 GB; medians of 5)",
            "",
            "| cold s | warm s | speed-up (target >= 10) | bucket requests during warm loads (target 0) |",
            "|---|---|---|---|",
            f"| {c['cold_s']:.2f} | {c['warm_s']:.2f} | {c['speedup']:.1f} ({verdict(c['speedup'] >= TARGETS['warm'], 'warm')}) "
            f"| {c['warm_bucket_requests']} ({verdict(c['warm_bucket_requests'] == 0)}) |",
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
    if "delta" in report:
        d = report["delta"]
        lines += [
            f"### `to_delta`: a {d['table_gb']:.2f} GB table, then a {d['update_gb']:.2f} GB download merged in",
            "",
            "| create s (one run) | create peak MB | merge s | merge peak MB (target <= 450) | same download to Parquet s | merge / Parquet |",
            "|---|---|---|---|---|---|",
            f"| {d['create_s']:.2f} | {d['create_mb']:.0f} | {d['merge_s']:.2f} "
            f"| {d['merge_mb']:.0f} ({verdict(d['merge_mb'] <= 450)}) | {d['parquet_s']:.2f} | {d['ratio']:.2f} |",
            "",
        ]
    lines += footnotes("\n".join(lines))
    return "\n".join(lines)


def main() -> int:
    args = [a for a in sys.argv[1:] if a != "--print"]
    source = Path(args[0]) if args else HERE / "results" / "latest.json"
    target = HERE.parent / "BENCHMARKS.md"
    figures = render(json.loads(source.read_text()))
    if "--print" in sys.argv:  # a quick run: shown, not recorded
        print(figures)
        return 0
    text = target.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    target.write_text(f"{head}{START}\n{figures}\n{END}{tail}")
    print(f"updated {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
