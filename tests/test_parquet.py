"""to_parquet: same data as load_results, metadata, atomic, partitioning, fsspec targets."""

import errno
import json
import threading
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileOpener, LocalFileSystem

from conftest import Loader
from datafiniti_loader import ParseError, StorageError, TargetExists
from datafiniti_loader.sandbox import Sandbox
from datafiniti_loader.sandbox.fixtures import write_large_csv


def read_back(path: Path) -> pd.DataFrame:
    return pds.dataset(path, format="parquet").to_table().to_pandas()


def convert_and_load(loader: Loader, rid: int, out: Path) -> tuple[Any, pa.Table, pa.Table]:
    """``to_parquet`` into ``out``; return its summary, the in-memory table and what was written."""
    summary = loader.parquet(rid, out)
    in_memory = loader.load(rid, output="arrow")
    return summary, in_memory, pds.dataset(out, format="parquet").to_table()


def test_parquet_holds_what_load_results_returns(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    rid = sandbox.add_request(fixture_files["products"] + fixture_files["businesses"])
    summary, in_memory, on_disk = convert_and_load(loader, rid, tmp_path / "out")
    assert summary.rows == in_memory.num_rows == on_disk.num_rows
    assert summary.files == 3 and summary.bytes > 0 and summary.parquet_files
    # Parquet has no seconds unit: timestamp[s] columns come back as timestamp[ms]
    expected = pa.schema(
        [
            pa.field(f.name, pa.timestamp("ms", "UTC")) if f.type == pa.timestamp("s", "UTC") else f
            for f in in_memory.schema
        ]
    )
    assert on_disk.schema.remove_metadata() == expected
    assert on_disk.to_pylist() == in_memory.to_pylist()


def test_metadata_records_the_load_without_secrets(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    summary = loader.parquet(rid, tmp_path / "out")
    file = tmp_path / "out" / summary.parquet_files[0]
    raw = pq.read_metadata(file).metadata[b"datafiniti_loader"]
    meta = json.loads(raw)
    assert meta["request_id"] == rid and meta["files"] == [f"{rid}_1.csv", f"{rid}_2.csv"]
    assert len(meta["result_ids"]) == 2 and "row_counts" not in meta  # written before counting
    assert meta["library"].startswith("datafiniti-loader ") and meta["loaded_at"]
    assert b"X-Amz" not in raw and sandbox.token.encode() not in raw
    manifest = (tmp_path / "out" / "_datafiniti_loader.json").read_text()
    recorded = json.loads(manifest)
    assert recorded["row_counts"] == [48, 24] and recorded["rows"] == 72
    assert recorded["files"] == list(summary.parquet_files)  # the manifest's own "files"
    assert all(recorded[key] == value for key, value in meta.items() if key != "files")
    assert "X-Amz" not in manifest and sandbox.token not in manifest


ONE_PASS, TWO_PASSES = "converted in one pass", "converting in two passes"


def write_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    """A small Datafiniti-like CSV: an id, a postal code and a price per row."""
    lines = ["id,postalCode,price", *(",".join(row) for row in rows)]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return path


def same_as_load_results(loader: Loader, rid: int, out: Path, **options: Any) -> pa.Table:
    """``to_parquet`` into ``out``, checked cell for cell and type for type against a load."""
    summary = loader.parquet(rid, out, **options)
    in_memory = loader.load(rid, output="arrow", cache=False)
    on_disk = pds.dataset(out, format="parquet").to_table()
    assert on_disk.schema.remove_metadata() == in_memory.schema
    assert on_disk.to_pylist() == in_memory.to_pylist()
    assert summary.parquet_files == ("part-0.parquet",)
    assert sorted(p.name for p in out.iterdir()) == ["_datafiniti_loader.json", "part-0.parquet"]
    return on_disk


@pytest.mark.parametrize("cache", [False, True], ids=["no cache", "cache"])
def test_types_the_first_batch_settles_are_converted_in_one_pass(
    loader: Loader, sandbox: Sandbox, tmp_path: Path, debug_log: list[str], cache: bool
) -> None:
    first = write_csv(tmp_path / "a.csv", [(str(i), f"{10000 + i}", "1.5") for i in range(50)])
    second = write_csv(tmp_path / "b.csv", [(str(i), f"{20000 + i}", "2.5") for i in range(50)])
    rid = sandbox.add_request([first, second])
    options = {} if cache else {"cache": False}
    on_disk = same_as_load_results(loader, rid, tmp_path / "out", **options)
    assert on_disk.schema.field("postalCode").type == pa.int64()
    assert [line for line in debug_log if ONE_PASS in line]
    assert not [line for line in debug_log if TWO_PASSES in line]
    manifest = json.loads((tmp_path / "out" / "_datafiniti_loader.json").read_text())
    assert manifest["row_counts"] == [50, 50] and manifest["rows"] == 100


@pytest.mark.parametrize("cache", [False, True], ids=["no cache", "cache"])
def test_a_type_the_last_row_changes_is_converted_in_two_passes(
    loader: Loader, sandbox: Sandbox, tmp_path: Path, debug_log: list[str], cache: bool
) -> None:
    first = write_csv(
        tmp_path / "a.csv", [(str(i), f"0{i}" if i else "1", "1.5") for i in range(3)]
    )
    rows = [(str(i), f"{10000 + i}", "2.5") for i in range(50)] + [("99", "33040-4535", "N/A")]
    rid = sandbox.add_request([first, write_csv(tmp_path / "b.csv", rows)])
    options = {} if cache else {"cache": False}
    sandbox.log.clear()
    loader.parquet(rid, tmp_path / "first", **options)
    gets = sorted(e.path.rsplit("/", 1)[-1] for e in sandbox.log if e.server == "bucket")
    assert gets == [f"{rid}_1.csv", f"{rid}_2.csv"]  # the second pass downloads nothing again
    copies = sorted(line for line in debug_log if "read from its parsed copy" in line)
    assert copies == [
        f"{rid}_1.csv: read from its parsed copy",
        f"{rid}_2.csv: read from its parsed copy",
    ]
    on_disk = same_as_load_results(loader, rid, tmp_path / "out", **options)
    assert on_disk.schema.field("postalCode").type == pa.string()
    assert on_disk.column("postalCode").to_pylist()[-1] == "33040-4535"
    assert on_disk.column("price").to_pylist()[:4] == ["1.5", "1.5", "1.5", "2.5"]
    assert [line for line in debug_log if TWO_PASSES in line]
    assert not [line for line in debug_log if ONE_PASS in line]
    manifest = json.loads((tmp_path / "out" / "_datafiniti_loader.json").read_text())
    assert manifest["row_counts"] == [3, 51] and manifest["rows"] == 54


def test_a_type_changed_deep_inside_a_file_is_seen_between_its_batches(
    loader: Loader, sandbox: Sandbox, tmp_path: Path, debug_log: list[str]
) -> None:
    # About 9 MB: the reader hands it on in several batches, and only the last holds the
    # postal code that is not a number (as in a real file of hotel reviews).
    rows = [(str(i), f"{10000 + i % 80000}", f"{i % 7}.25") for i in range(400_000)]
    rows[-1] = (rows[-1][0], "33040-4535", rows[-1][2])
    rid = sandbox.add_request([write_csv(tmp_path / "big.csv", rows)])
    on_disk = same_as_load_results(loader, rid, tmp_path / "out", cache=False)
    assert on_disk.schema.field("postalCode").type == pa.string()
    assert on_disk.schema.field("price").type == pa.float64()
    assert [line for line in debug_log if TWO_PASSES in line]
    assert not [line for line in debug_log if ONE_PASS in line]


def test_a_column_asked_for_that_only_a_later_file_has_is_found(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path, debug_log: list[str]
) -> None:
    rid = sandbox.add_request(fixture_files["products"] + fixture_files["businesses"])
    in_memory = loader.load(rid, output="arrow", columns=["province", "_source_file"])
    summary = loader.parquet(rid, tmp_path / "out", columns=["province", "_source_file"])
    on_disk = pds.dataset(tmp_path / "out", format="parquet").to_table()
    assert summary.rows == in_memory.num_rows and on_disk.to_pylist() == in_memory.to_pylist()
    assert [line for line in debug_log if TWO_PASSES in line]  # not there in the first batch


@pytest.mark.parametrize("option", ["dedupe", "partition_by"])
def test_dedupe_and_partitions_take_two_passes(
    loader: Loader,
    sandbox: Sandbox,
    fixture_files,
    tmp_path: Path,
    debug_log: list[str],
    option: str,
) -> None:
    # Both need every file read before any row is written: no single pass is tried.
    rid = sandbox.add_request(fixture_files["products"][:1])
    options = {"dedupe": True} if option == "dedupe" else {"partition_by": "brand"}
    summary = loader.parquet(rid, tmp_path / "out", **options)
    assert summary.rows > 0 and not [line for line in debug_log if ONE_PASS in line]
    loader.parquet(rid, tmp_path / "again")  # without either: one pass
    assert [line for line in debug_log if ONE_PASS in line]


def test_row_groups_are_not_one_per_batch(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    rid = sandbox.add_request(fixture_files["products"] + fixture_files["businesses"])
    summary = loader.parquet(rid, tmp_path / "out")
    assert pq.ParquetFile(tmp_path / "out" / summary.parquet_files[0]).num_row_groups == 1


def test_existing_target_needs_overwrite(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    rid = sandbox.add_request(fixture_files["businesses"])
    loader.parquet(rid, tmp_path / "out")
    with pytest.raises(TargetExists, match="overwrite=True"):
        loader.parquet(rid, tmp_path / "out")
    summary = loader.parquet(rid, tmp_path / "out", overwrite=True)
    assert len(read_back(tmp_path / "out")) == summary.rows == 30


def test_failure_leaves_nothing_at_the_target(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.csv"
    broken.write_bytes(b"id,name\r\n1,a\r\n2,b,extra\r\n")
    rid = sandbox.add_request([fixture_files["businesses"][0], broken])
    with pytest.raises(ParseError, match="line 3"):
        loader.parquet(rid, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.csv", "cache", "home"]


class _FillingOpener(LocalFileOpener):
    """A file on a disk that fills up after its first 10 kB."""

    def write(self, data: bytes) -> int:
        if self.tell() + len(data) > 10_000:
            raise OSError(errno.ENOSPC, "No space left on device")
        return int(super().write(data))


class _FillingFileSystem(LocalFileSystem):
    protocol = "fillingfile"

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if "w" in mode:
            self.makedirs(self._parent(path), exist_ok=True)
            return _FillingOpener(path, mode, fs=self, **kwargs)
        return super()._open(path, mode, **kwargs)


def test_a_failed_write_stops_the_reading_thread_and_leaves_nothing(
    loader: Loader, sandbox: Sandbox, tmp_path: Path
) -> None:
    """The second pass reads ahead on a thread of its own: a write failing midway stops it."""
    rid = sandbox.add_request([write_large_csv(tmp_path / "big.csv", 90_000_000)])
    fsspec.register_implementation("fillingfile", _FillingFileSystem, clobber=True)
    with pytest.raises(StorageError, match="No space left") as failed:
        loader.parquet(rid, f"fillingfile://{tmp_path / 'out'}")
    assert "nothing was left at the target" in str(failed.value)
    # `failed` keeps the exception, whose traceback keeps the failed call's frames
    # alive: the reading thread must be gone all the same.
    assert not [t for t in threading.enumerate() if t.name == "dfl-prefetch"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("out")]


def test_partition_by(loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path) -> None:
    rid = sandbox.add_request(fixture_files["businesses"])
    loader.parquet(rid, tmp_path / "out", partition_by="province")
    dirs = sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir())
    assert dirs and all(d.startswith("province=") for d in dirs)
    back = pds.dataset(tmp_path / "out", format="parquet", partitioning="hive").to_table()
    assert back.num_rows == 30


def test_any_fsspec_url(loader: Loader, sandbox: Sandbox, fixture_files) -> None:
    import fsspec

    rid = sandbox.add_request(fixture_files["businesses"])
    summary = loader.parquet(rid, "memory://exports/businesses")
    fs = fsspec.filesystem("memory")
    assert fs.exists(f"/exports/businesses/{summary.parquet_files[0]}")
    assert not [p for p in fs.ls("/exports") if ".tmp-" in p]
    with fs.open(f"/exports/businesses/{summary.parquet_files[0]}", "rb") as handle:
        assert pq.read_table(handle).num_rows == 30


def test_nested_json_round_trips_through_parquet(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    rid = sandbox.add_request(fixture_files["products_json"] + fixture_files["properties"])
    summary, in_memory, on_disk = convert_and_load(loader, rid, tmp_path / "out")
    assert summary.rows == in_memory.num_rows == 18
    assert pa.types.is_list(on_disk.schema.field("reviews").type)
    assert on_disk.to_pylist() == in_memory.to_pylist()


def test_overwrite_refuses_a_directory_of_the_users_own_files(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    mine = tmp_path / "reports"
    (mine / "2026").mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    (mine / "2026" / "q3.parquet").write_bytes(b"PAR1 not ours")
    before = {p: p.read_bytes() for p in mine.rglob("*") if p.is_file()}
    rid = sandbox.add_request(fixture_files["businesses"])
    with pytest.raises(TargetExists, match=r"did not write \(2026/q3.parquet, notes.txt\)"):
        loader.parquet(rid, mine, overwrite=True)
    assert {p: p.read_bytes() for p in mine.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if ".tmp-" in p.name) == []


def test_overwrite_refuses_its_own_dataset_once_a_user_file_is_added(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    rid = sandbox.add_request(fixture_files["businesses"])
    loader.parquet(rid, tmp_path / "out")
    (tmp_path / "out" / "README.md").write_text("my notes about this export")
    with pytest.raises(TargetExists, match=r"README\.md"):
        loader.parquet(rid, tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "README.md").read_text() == "my notes about this export"
    assert pq.read_table(tmp_path / "out" / "part-0.parquet").num_rows == 30


def test_overwrite_replaces_an_empty_directory(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    (tmp_path / "out").mkdir()
    rid = sandbox.add_request(fixture_files["businesses"])
    with pytest.raises(TargetExists):
        loader.parquet(rid, tmp_path / "out")
    assert loader.parquet(rid, tmp_path / "out", overwrite=True).rows == 30


def test_a_failed_overwrite_keeps_the_old_dataset(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    good = sandbox.add_request(fixture_files["businesses"])
    loader.parquet(good, tmp_path / "out")
    before = read_back(tmp_path / "out")
    broken = tmp_path / "broken.csv"
    broken.write_bytes(b"id,name\r\n1,a\r\n2,b,extra\r\n")
    with pytest.raises(ParseError):
        loader.parquet(sandbox.add_request([broken]), tmp_path / "out", overwrite=True)
    pd.testing.assert_frame_equal(read_back(tmp_path / "out"), before)
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_the_target_always_holds_the_old_dataset_or_the_new(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    import threading

    rid = sandbox.add_request(fixture_files["businesses"])
    target = tmp_path / "out"
    loader.parquet(rid, target)
    gaps: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if not (target / "_datafiniti_loader.json").exists():
                gaps.append(1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(5):
            loader.parquet(rid, target, overwrite=True)
    finally:
        stop.set()
        watcher.join()
    assert gaps == []
    assert len(read_back(target)) == 30


def test_two_runs_racing_for_one_target_never_both_succeed(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    rid = sandbox.add_request(fixture_files["products"])
    sandbox.faults.throttle = 200_000  # both runs are downloading when the first finishes
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(loader.parquet, rid, tmp_path / "out", cache=False) for _ in range(2)]
        outcomes = [run.exception() for run in runs]
    assert sorted(type(o).__name__ for o in outcomes) == ["NoneType", "TargetExists"]
    assert len(read_back(tmp_path / "out")) == 72
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_the_summary_says_what_was_written_and_where(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    monkeypatch.chdir(tmp_path)
    summary = loader.parquet(rid, "relative/out")  # a relative path comes back absolute
    written = pq.read_table(tmp_path / "relative" / "out" / "part-0.parquet")
    assert summary.path == str(tmp_path / "relative" / "out")
    assert summary.columns == tuple(written.column_names)  # names: summary.columns[:5] works
    assert summary.result_files == summary.files == 2
    text = repr(summary)
    assert f"72 rows x {written.num_columns} columns from 2 result file(s)" in text
    assert "1 Parquet file(s)" in text and str(tmp_path) in text
    page = summary._repr_html_()
    assert "<table>" in page and "result files read" in page and "Parquet files written" in page


def test_a_large_file_with_lone_cr_line_ends_converts_every_row(
    loader: Loader, sandbox: Sandbox, tmp_path: Path
) -> None:
    rows = [f'{n},name {n},"a\r\nquoted" cell,02134\r' for n in range(90_000)]
    source = tmp_path / "9_1.csv"
    source.write_bytes(("id,name,text,postalCode\r" + "".join(rows)).encode())
    data = source.read_bytes()
    assert len(data) > 3_000_000 and b"\n" not in data.replace(b"\r\n", b"")
    rid = sandbox.add_request([source])
    summary = loader.parquet(rid, tmp_path / "out")
    assert summary.rows == 90_000
    table = pq.read_table(tmp_path / "out")
    assert table.column_names[:4] == ["id", "name", "text", "postalCode"]
    assert table["postalCode"].to_pylist() == ["02134"] * 90_000
    assert table["text"][89_999].as_py() == "a\r\nquoted cell"


def test_more_partition_values_than_pyarrows_default_limit_all_write(
    loader: Loader, sandbox: Sandbox, tmp_path: Path
) -> None:
    source = tmp_path / "9_1.csv"
    source.write_text("id,brand\n" + "".join(f"{n},brand {n:04d}\n" for n in range(3000)))
    rid = sandbox.add_request([source])
    summary = loader.parquet(rid, tmp_path / "out", partition_by="brand")
    assert summary.rows == 3000
    assert len([p for p in (tmp_path / "out").iterdir() if p.name.startswith("brand=")]) == 3000
    table = pds.dataset(tmp_path / "out", partitioning="hive").to_table()
    assert sorted(table["id"].to_pylist()) == list(range(3000))
