"""download_files / fetch (result files as they are) and list_downloads / requests (past ones)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import FAST_RETRY
from datafiniti_loader import (
    ConfigurationError,
    DownloadList,
    TargetExists,
    download_files,
    list_downloads,
)
from datafiniti_loader.sandbox import Sandbox
from test_cli import run


def test_download_files_gives_verified_files_in_result_order(
    sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    files = fixture_files["products"]
    rid = sandbox.add_request(files)
    settings = {"token": sandbox.token, "api_url": sandbox.api_url, "progress": False,
                "retry": FAST_RETRY, "cache": tmp_path / "cache"}  # fmt: skip
    cached = download_files(rid, **settings)
    assert [p.read_bytes() for p in cached] == [f.read_bytes() for f in files]
    assert all(str(p).startswith(str(tmp_path / "cache")) for p in cached)
    dest = tmp_path / "raw"
    copied = download_files(rid, dest=dest, **settings)
    assert [p.name for p in copied] == [f"{rid}_1.csv", f"{rid}_2.csv"]
    assert [p.read_bytes() for p in copied] == [f.read_bytes() for f in files]
    gets = [e for e in sandbox.log if e.server == "bucket" and e.method == "GET"]
    assert len(gets) == 2  # the second call came from the cache
    assert download_files(rid, dest=dest, **settings) == copied  # same bytes: kept
    copied[0].write_text("my edits")
    with pytest.raises(TargetExists, match="overwrite=True"):
        download_files(rid, dest=dest, **settings)
    assert copied[0].read_text() == "my edits"  # never replaced unasked
    download_files(rid, dest=dest, overwrite=True, **settings)
    assert copied[0].read_bytes() == files[0].read_bytes()
    assert not list(dest.glob(".*.part"))
    with pytest.raises(ConfigurationError, match="dest="):
        download_files(rid, **{**settings, "cache": False})


def test_fetch_prints_the_paths(sandbox: Sandbox, fixture_files, tmp_path: Path) -> None:
    rid = sandbox.add_request(fixture_files["businesses"])
    env = {"DATAFINITI_API_URL": sandbox.api_url, "DATAFINITI_API_TOKEN": sandbox.token}
    done = run("-q", "fetch", str(rid), "--dest", str(tmp_path / "raw"), "--no-cache", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(tmp_path / "raw" / f"{rid}_1.csv")]


@pytest.mark.parametrize("version", ["v3", "v4"])
def test_past_downloads_newest_first(sandbox: Sandbox, fixture_files, version: str) -> None:
    from datetime import UTC, datetime, timedelta

    old = datetime.now(UTC) - timedelta(days=3)
    first = sandbox.add_request(fixture_files["products"], created=old)
    second = sandbox.add_request(fixture_files["businesses"])
    api_url = sandbox.api_url if version == "v3" else sandbox.api_url_v4
    listed = list_downloads(token=sandbox.token, api_url=api_url)
    assert isinstance(listed, DownloadList)
    assert [r.id for r in listed] == [second, first]
    assert listed[0].status.lower() == "completed" and listed[0].date_started is not None
    assert "<table>" in listed._repr_html_() and str(second) in listed.table()
    assert [r.id for r in list_downloads(limit=1, token=sandbox.token, api_url=api_url)] == [second]
    env = {"DATAFINITI_API_URL": api_url, "DATAFINITI_API_TOKEN": sandbox.token}
    shown = run("requests", env=env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "STARTED", "(UTC)"]
    assert [line.split()[0] for line in lines[1:]] == [str(second), str(first)]


def test_nrows_fetches_only_the_files_it_needs(sandbox: Sandbox, fixture_files) -> None:
    from datafiniti_loader import load_results

    rid = sandbox.add_request(fixture_files["products"])  # 48 rows, then 24
    settings = {"token": sandbox.token, "api_url": sandbox.api_url, "progress": False,
                "cache": False}  # fmt: skip
    head = load_results(rid, nrows=10, **settings)
    gets = [e for e in sandbox.log if e.server == "bucket" and e.method == "GET"]
    assert len(head) == 10 and len(gets) == 1  # the second file was never fetched
    whole = load_results(rid, **settings)
    # Only the files read are known: the second file's extra column is not in a 10-row look.
    assert set(head.columns) < set(whole.columns) and "primaryCategories" not in head.columns
    for column in ("id", "name", "_source_file", "_source_row"):  # types may differ: see docs
        assert head[column].astype(str).tolist() == whole[column].head(10).astype(str).tolist()
    spanning = load_results(rid, nrows=60, output="arrow", **settings)
    assert "primaryCategories" in spanning.column_names
    assert spanning.num_rows == 60 and spanning["_source_file"].unique().to_pylist() == [
        f"{rid}_1.csv", f"{rid}_2.csv"
    ]  # fmt: skip
    assert len(load_results(rid, nrows=1000, **settings)) == 72
    with pytest.raises(ConfigurationError, match="dedupe"):
        load_results(rid, nrows=5, dedupe=True, **settings)
    with pytest.raises(ConfigurationError, match="positive"):
        load_results(rid, nrows=0, **settings)


def test_frames_say_where_they_came_from(sandbox: Sandbox, fixture_files, tmp_path: Path) -> None:
    import json

    import pyarrow.parquet as pq

    from datafiniti_loader import create_download, load_results, to_parquet

    sandbox.add_query("brand:Sony", fixture_files["products"])
    v4 = {"token": sandbox.token, "api_url": sandbox.api_url_v4}
    sandbox.creation_polls = (0, 0)
    request = create_download("brand:Sony", num_records=10, **v4)
    v4 = {**v4, "progress": False}
    frame = load_results(request, wait=True, **v4)
    origin = frame.attrs["datafiniti"]
    host = sandbox.api_url.split("//")[1].split("/")[0]
    assert origin["request_ids"] == [request.id] and origin["api"] == host
    assert origin["query"] == "brand:Sony" and origin["data_type"] == "products"
    assert origin["library"] and origin["loaded_at"]
    assert sandbox.token not in json.dumps(origin)
    table = load_results(request.id, output="arrow", **v4)
    kept = json.loads(table.schema.metadata[b"datafiniti"])
    assert kept["request_ids"] == [request.id] and "query" not in kept  # an id says no query
    to_parquet(request.id, str(tmp_path / "out"), **v4)
    written = pq.read_schema(next((tmp_path / "out").glob("*.parquet")))
    assert json.loads(written.metadata[b"datafiniti_loader"])["api"] == host
