"""to_parquet: same data as load_results, metadata, atomic, partitioning, fsspec targets."""

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.parquet as pq
import pytest

from conftest import Loader
from datafiniti_loader import ParseError
from datafiniti_loader.sandbox import Sandbox


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
    assert meta["row_counts"] == [48, 24] and len(meta["result_ids"]) == 2
    assert meta["library"].startswith("datafiniti-loader ") and meta["loaded_at"]
    assert b"X-Amz" not in raw and sandbox.token.encode() not in raw


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
    with pytest.raises(FileExistsError, match="overwrite=True"):
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


def test_partition_by(loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path) -> None:
    rid = sandbox.add_request(fixture_files["businesses"])
    loader.parquet(rid, tmp_path / "out", partition_by="province")
    dirs = sorted(p.name for p in (tmp_path / "out").iterdir())
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
