"""to_parquet's peak memory: measured by the OS on a separate process, flat as input grows."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from datafiniti_loader.sandbox.fixtures import write_large_csv, write_large_json

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's VmHWM"),
]

CONVERT = r"""
import sys
from datafiniti_loader import to_parquet
from datafiniti_loader.sandbox import Sandbox
dedupe = sys.argv[2] == "dedupe"  # each file its own download, merged by record id
tables = sys.argv[2] == "tables"  # one dataset per tidy table
with Sandbox() as sandbox:
    files = sys.argv[3:]
    rid = [sandbox.add_request([f]) for f in files] if dedupe else sandbox.add_request(files)
    summary = to_parquet(rid, sys.argv[1], token=sandbox.token, api_url=sandbox.api_url,
                         cache=False, progress=False, dedupe=dedupe, tables=tables)
print(summary.rows)
# VmHWM: this process's own peak RSS. (wait4's ru_maxrss would also count the
# parent's pages shared before exec, so it reads the test runner's size.)
with open("/proc/self/status") as status:
    print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
"""


def peak_rss_mb(
    out: Path, files: list[Path], *, dedupe: bool = False, tables: bool = False
) -> float:
    """Run a conversion in a fresh process; return its peak RSS in MB, as the kernel saw it."""
    mode = "dedupe" if dedupe else "tables" if tables else "one"
    done = subprocess.run(
        [sys.executable, "-c", CONVERT, str(out), mode, *map(str, files)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1]) / 1024


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[Path]]]:
    root = tmp_path_factory.mktemp("large")
    small = [write_large_csv(root / "small.csv", 40_000_000, seed=1)]
    large = [write_large_csv(root / f"large_{n}.csv", 100_000_000, seed=n) for n in range(3)]
    yield {"small": small, "large": large}
    shutil.rmtree(root)  # 340 MB: not left for pytest's kept temporary directories


def test_parquet_memory_is_bounded_and_flat(
    generated: dict[str, list[Path]], tmp_path: Path
) -> None:
    small = peak_rss_mb(tmp_path / "small", generated["small"])
    large = peak_rss_mb(tmp_path / "large", generated["large"])
    input_mb = sum(p.stat().st_size for p in generated["large"]) / 1e6
    assert input_mb > 300
    assert large < 300, f"peak {large:.0f} MB converting {input_mb:.0f} MB"
    assert large - small < 60, f"peak grew from {small:.0f} to {large:.0f} MB"


def test_memory_stays_bounded_when_the_last_file_changes_the_types(
    generated: dict[str, list[Path]], tmp_path: Path
) -> None:
    # All of the large files are converted in one pass, then a column that only the
    # last file has sends the conversion to two: what was written is dropped, the
    # rest read on, and everything written again.
    late = tmp_path / "late.csv"
    late.write_bytes(b"id,onlyHere\r\nAVlate,1\r\n")
    peak = peak_rss_mb(tmp_path / "out", [*generated["large"], late])
    assert peak < 300, f"peak {peak:.0f} MB converting again after a late change of types"


def test_dedupe_parquet_memory_stays_bounded(
    generated: dict[str, list[Path]], tmp_path: Path
) -> None:
    # The three large files repeat the same record ids: every record is in three downloads.
    peak = peak_rss_mb(tmp_path / "merged", generated["large"], dedupe=True)
    assert peak < 300, f"peak {peak:.0f} MB merging three downloads"


DELTA = r"""
import sys
from datafiniti_loader import to_delta
from datafiniti_loader.sandbox import Sandbox
with Sandbox() as sandbox:
    base = sandbox.add_request(sys.argv[2:-1])
    update = sandbox.add_request(sys.argv[-1:])
    for rid in (base, update):
        to_delta(rid, sys.argv[1], token=sandbox.token, api_url=sandbox.api_url,
                 cache=False, progress=False)
with open("/proc/self/status") as status:
    print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
"""


def test_delta_merge_memory_stays_bounded(generated: dict[str, list[Path]], tmp_path: Path) -> None:
    pytest.importorskip("deltalake")
    files = [*generated["large"][:2], generated["large"][2]]  # a 200 MB table, 100 MB merged in
    done = subprocess.run(
        [sys.executable, "-c", DELTA, str(tmp_path / "table"), *map(str, files)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    peak = int(done.stdout.split()[-1]) / 1024
    assert peak < 450, f"peak {peak:.0f} MB creating and merging into a Delta table"


@pytest.fixture(scope="module")
def generated_json(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    root = tmp_path_factory.mktemp("large_json")
    yield {
        "small": write_large_json(root / "small.txt", 40_000_000, seed=1),
        "large": write_large_json(root / "large.txt", 300_000_000, seed=2),
        "drift": write_large_json(root / "drift.txt", 100_000_000, seed=3, drift=True),
    }
    shutil.rmtree(root)  # 440 MB: not left for pytest's kept temporary directories


def test_json_lines_convert_in_memory_flat_in_the_files_size(
    generated_json: dict[str, Path], tmp_path: Path
) -> None:
    small = peak_rss_mb(tmp_path / "small", [generated_json["small"]])
    large = peak_rss_mb(tmp_path / "large", [generated_json["large"]])
    assert generated_json["large"].stat().st_size > 290_000_000
    assert large < 400, f"peak {large:.0f} MB converting one 300 MB JSON Lines file"
    assert large - small < 60, f"peak grew from {small:.0f} to {large:.0f} MB"


def test_json_lines_whose_fields_drift_still_convert_in_bounded_memory(
    generated_json: dict[str, Path], tmp_path: Path
) -> None:
    # reviews.numHelpful turns to text in the last tenth: every chunk is read again
    # with reviews as its JSON text, as the whole-file reader gives it.
    peak = peak_rss_mb(tmp_path / "drift", [generated_json["drift"]])
    assert peak < 400, f"peak {peak:.0f} MB converting 100 MB of drifting JSON Lines"


def test_tidy_tables_convert_in_bounded_memory(
    generated: dict[str, list[Path]], generated_json: dict[str, Path], tmp_path: Path
) -> None:
    # A record's rows are spread over the three CSVs (their ids repeat): all of them
    # must meet in one bucket, without the download in memory.
    csv = peak_rss_mb(tmp_path / "csv", generated["large"], tables=True)
    assert csv < 400, f"peak {csv:.0f} MB writing the tables of 300 MB of CSV"
    jsonl = peak_rss_mb(tmp_path / "json", [generated_json["large"]], tables=True)
    assert jsonl < 400, f"peak {jsonl:.0f} MB writing the tables of 300 MB of JSON Lines"
