"""output='dask': one partition per file, typed meta, distributed scheduler, late computes."""

import http.server
import json
import pickle
import threading
import time
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pytest

from conftest import Loader
from datafiniti_loader import DatafinitiError
from datafiniti_loader.sandbox import Sandbox
from test_reliability import _Proxy

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster_client(tmp_path_factory: pytest.TempPathFactory):
    import dask

    # dask keeps its lock files in a scratch space that outlives the run unless told where.
    scratch = str(tmp_path_factory.mktemp("dask-scratch"))
    with dask.config.set({"temporary-directory": scratch}):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
        with cluster, distributed.Client(cluster) as client:
            yield client


def forget_kept(dask_worker: Any) -> None:
    """On a worker: drop the files it kept, as if it had died and come back empty."""
    import shutil

    shutil.rmtree(f"{dask_worker.local_directory}/datafiniti-kept", ignore_errors=True)


@pytest.fixture(autouse=True)
def workers_keep_nothing_yet(request: pytest.FixtureRequest) -> None:
    """The cluster outlives tests, and sandboxes reuse ports: a file an earlier test's
    workers kept under the same API address would spare this test's scan a GET (seen
    once: 3 bucket GETs counted where 4 were made and expected)."""
    if "cluster_client" in request.fixturenames:
        request.getfixturevalue("cluster_client").run(forget_kept)


def test_partitions_meta_and_values_on_a_cluster(
    loader: Loader, sandbox: Sandbox, fixture_files, cluster_client
) -> None:
    rid = sandbox.add_request(fixture_files["products"] + fixture_files["businesses"])
    lazy = loader.load(rid, output="dask")
    assert isinstance(lazy, dd.DataFrame) and lazy.npartitions == 3
    eager = loader.load(rid)
    assert list(lazy.columns) == list(eager.columns)
    # dask stores text as its own pyarrow string dtype; every other type is the same
    text = {c for c, t in eager.dtypes.items() if pd.api.types.is_string_dtype(t)}
    assert {c for c, t in lazy.dtypes.items() if pd.api.types.is_string_dtype(t)} == text
    others = [c for c in eager.columns if c not in text]
    assert dict(lazy.dtypes[others].astype(str)) == dict(eager.dtypes[others].astype(str))
    computed = lazy.compute().reset_index(drop=True)
    pd.testing.assert_frame_equal(
        computed.astype({c: eager[c].dtype for c in text}), eager, check_categorical=False
    )


def test_the_client_downloads_nothing_and_each_file_is_fetched_once(
    loader: Loader, sandbox: Sandbox, fixture_files, cluster_client, monkeypatch
) -> None:
    # The workers started before this: only the client process goes through the proxy,
    # which relays its calls and notes each one.
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    _Proxy.seen.clear()
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
    try:
        rid = sandbox.add_request(fixture_files["products"] + fixture_files["businesses"])
        lazy = loader.load(rid, output="dask", cache=False)
        computed = lazy.compute().reset_index(drop=True)
        computed_again = lazy.compute()
        client_calls = list(_Proxy.seen)
    finally:
        proxy.shutdown()
        monkeypatch.delenv("HTTP_PROXY")
    gets = [e for e in sandbox.log if e.server == "bucket" and e.method == "GET"]
    assert len(gets) == 3  # one per file, the type scan and two computes together
    assert client_calls and all("/v3/" in call for call in client_calls)  # API calls only
    assert len(computed_again) == len(computed)
    eager = loader.load(rid, cache=False)
    text = {c for c, t in eager.dtypes.items() if pd.api.types.is_string_dtype(t)}
    pd.testing.assert_frame_equal(
        computed.astype({c: eager[c].dtype for c in text}), eager, check_categorical=False
    )


def test_graph_holds_no_url_and_shows_no_token(
    loader: Loader, sandbox: Sandbox, fixture_files
) -> None:
    rid = sandbox.add_request(fixture_files["businesses"])
    lazy = loader.load(rid, output="dask")
    graph = dict(lazy.__dask_graph__())
    text = repr(graph)
    assert sandbox.token not in text and "X-Amz" not in text
    assert b"X-Amz-Signature" not in pickle.dumps(graph)


def test_expired_urls_are_refreshed_on_the_workers(
    loader: Loader, sandbox: Sandbox, fixture_files, cluster_client
) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    # The client's listing (URLs it drops) and then the URLs the worker is first handed: expired.
    sandbox.faults.expire_signings = 2
    lazy = loader.load(rid, output="dask", cache=False)
    computed = lazy.compute()
    assert len(computed) == 72 and computed["_source_file"].nunique() == 2
    expired = [e for e in sandbox.log if e.server == "bucket" and e.status == 403]
    assert expired  # met, and got past by asking the API again


def test_json_partitions_keep_nesting(loader: Loader, sandbox: Sandbox, fixture_files) -> None:
    rid = sandbox.add_request(fixture_files["products_json"])
    lazy = loader.load(rid, output="dask")
    computed = lazy.compute(scheduler="sync")
    eager = loader.load(rid)
    assert len(computed) == len(eager) == 12
    assert computed["reviews"].tolist() == eager["reviews"].tolist()


def _read_back(path: str, **storage_options: object) -> pd.DataFrame:
    import pyarrow.dataset as ds

    fs, root = fsspec.core.url_to_fs(path, **storage_options)
    files = sorted(p for p in fs.find(root) if p.endswith(".parquet"))
    return ds.dataset(files, filesystem=fs, format="parquet").to_table().to_pandas()


def test_workers_write_the_parquet_dataset_and_the_client_publishes_it(
    loader: Loader, sandbox: Sandbox, fixture_files, cluster_client, tmp_path
) -> None:
    rid = sandbox.add_request(fixture_files["products"] + fixture_files["businesses"])
    summary = loader.parquet(rid, tmp_path / "on-dask", engine="dask", cache=False)
    gets = [e for e in sandbox.log if e.server == "bucket" and e.method == "GET"]
    assert len(gets) == 3 and summary.rows == 102 and summary.result_files == 3
    local = loader.parquet(rid, tmp_path / "local", cache=False)
    assert summary.columns == local.columns
    pd.testing.assert_frame_equal(
        _read_back(str(tmp_path / "on-dask")), _read_back(str(tmp_path / "local"))
    )
    manifest = json.loads((tmp_path / "on-dask" / "_datafiniti_loader.json").read_text())
    assert manifest["rows"] == 102 and manifest["files"] == list(summary.parquet_files)
    assert not list(tmp_path.glob("on-dask.tmp-*"))


def test_a_failed_worker_task_publishes_nothing_and_a_rerun_succeeds(
    loader: Loader, sandbox: Sandbox, fixture_files, cluster_client, tmp_path
) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    sandbox.faults.bucket_errors.extend([(500, None)] * 40)  # the workers cannot fetch
    with pytest.raises(DatafinitiError):
        loader.parquet(rid, tmp_path / "out", engine="dask", cache=False)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.tmp-*"))
    sandbox.faults.bucket_errors.clear()
    assert loader.parquet(rid, tmp_path / "out", engine="dask", cache=False).rows == 72


def test_workers_write_to_an_object_store(
    loader: Loader, sandbox: Sandbox, fixture_files, cluster_client, s3_server, tmp_path
) -> None:
    import requests

    pytest.importorskip("s3fs")
    requests.put(f"{s3_server}/exports", timeout=10).raise_for_status()
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": s3_server, "region_name": "us-east-1"},
    }
    rid = sandbox.add_request(fixture_files["products"] + fixture_files["businesses"])
    summary = loader.parquet(
        rid, "s3://exports/products", engine="dask", storage_options=options, cache=False
    )
    assert summary.rows == 102
    local = loader.parquet(rid, tmp_path / "local", cache=False)
    pd.testing.assert_frame_equal(
        _read_back("s3://exports/products", **options), _read_back(str(local.path))
    )
    # The single-machine engine publishes to the object store the same way.
    loader.parquet(rid, "s3://exports/on-one-machine", storage_options=options)
    pd.testing.assert_frame_equal(
        _read_back("s3://exports/on-one-machine", **options), _read_back(str(local.path))
    )
    fs, _ = fsspec.core.url_to_fs("s3://exports", **options)
    assert not [k for k in fs.find("exports") if ".tmp-" in k]  # no staging left behind


def test_a_partition_whose_kept_file_is_gone_fetches_it_again(
    loader: Loader, sandbox: Sandbox, fixture_files, cluster_client
) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    lazy = loader.load(rid, output="dask", cache=False)
    cluster_client.run(forget_kept)
    computed = lazy.compute()
    assert len(computed) == 72
    gets = [e for e in sandbox.log if e.server == "bucket" and e.method == "GET"]
    assert len(gets) == 4  # two for the scans, two again for the partitions


def test_dedupe_and_merges_keep_the_newest_copy_rule_on_the_workers(
    loader: Loader, sandbox: Sandbox, cluster_client, tmp_path
) -> None:
    from test_merge_downloads import FIRST, SECOND, serve

    pytest.importorskip("deltalake")
    from deltalake import DeltaTable

    from datafiniti_loader import to_delta

    first = serve(sandbox, tmp_path, FIRST)
    second = serve(sandbox, tmp_path, SECOND)
    both = [first, second]
    on_dask = loader.parquet(both, tmp_path / "d", engine="dask", dedupe=True, cache=False)
    local = loader.parquet(both, tmp_path / "l", dedupe=True, cache=False)
    assert on_dask.rows == local.rows == 9
    pd.testing.assert_frame_equal(_read_back(str(tmp_path / "d")), _read_back(str(tmp_path / "l")))

    settings = loader.options({"cache": False})
    # Merged one download at a time, in the other order, on dask and locally: the same table.
    for engine, target in (("dask", tmp_path / "dask-table"), ("local", tmp_path / "table")):
        for rid in (second, first):
            to_delta(rid, str(target), engine=engine, **settings)
        again = to_delta(second, str(target), engine=engine, **settings)
        assert not again.committed  # merged before: nothing downloaded, no version

    def rows(target: Path) -> pd.DataFrame:
        frame = DeltaTable(str(target)).to_pandas()
        return frame.sort_values(["id", "_source_row"], na_position="last").reset_index(drop=True)

    assert len(rows(tmp_path / "dask-table")) == 9
    pd.testing.assert_frame_equal(rows(tmp_path / "dask-table"), rows(tmp_path / "table"))


def test_a_failed_merge_on_the_workers_leaves_the_table_as_it_was(
    loader: Loader, sandbox: Sandbox, cluster_client, tmp_path
) -> None:
    pytest.importorskip("deltalake")
    from deltalake import DeltaTable

    from datafiniti_loader import to_delta

    settings = loader.options({"cache": False})
    header = "id,dateUpdated,count\n"
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text(header + "A,2026-11-01T00:00:00Z,1\nB,2026-11-01T00:00:00Z,2\n")
    bad.write_text(header + "C,2026-11-01T00:00:00Z,many\n")
    target = tmp_path / "table"
    to_delta(sandbox.add_request([good]), str(target), engine="dask", **settings)
    before = sorted(str(p.relative_to(target)) for p in target.rglob("*"))
    newer = tmp_path / "newer.csv"
    newer.write_text(header + "A,2026-11-05T00:00:00Z,3\nD,2026-11-05T00:00:00Z,4\n")
    both = sandbox.add_request([newer, bad])
    # One worker writes its file; the other cannot read 'many' as the integer asked for.
    with pytest.raises(DatafinitiError, match="count"):
        to_delta(both, str(target), engine="dask", dtype={"count": "Int64"}, **settings)
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == before
    assert DeltaTable(str(target)).version() == 0
    bad.write_text(header + "C,2026-11-01T00:00:00Z,7\n")
    fixed = sandbox.add_request([newer, bad])
    done = to_delta(fixed, str(target), engine="dask", dtype={"count": "Int64"}, **settings)
    assert done.committed and (done.records_added, done.records_replaced) == (2, 1)


def test_workers_merge_into_a_table_on_an_object_store(
    loader: Loader, sandbox: Sandbox, fixture_files, cluster_client, s3_bucket, tmp_path
) -> None:
    pytest.importorskip("deltalake")
    from deltalake import DeltaTable

    from datafiniti_loader import to_delta

    bucket, options = s3_bucket
    rid = sandbox.add_request(fixture_files["products"])
    summary = to_delta(
        rid, f"{bucket}/products", engine="dask", storage_options=options,
        **loader.options({"cache": False}),
    )  # fmt: skip
    assert summary.committed and summary.rows_inserted == 72
    table = DeltaTable(f"{bucket}/products", storage_options=options)
    assert table.version() == 0
    local = to_delta(
        rid, f"{bucket}/local", storage_options=options, **loader.options({"cache": False})
    )
    assert local.rows_inserted == 72

    def rows(path: str) -> pd.DataFrame:
        frame = DeltaTable(path, storage_options=options).to_pandas()
        return frame.sort_values(["_source_file", "_source_row"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(rows(f"{bucket}/products"), rows(f"{bucket}/local"))


def test_workers_killed_mid_conversion_publish_nothing_partial(
    loader: Loader, sandbox: Sandbox, fixture_files, cluster_client, tmp_path
) -> None:
    import os
    import signal

    rid = sandbox.add_request(fixture_files["products"] + fixture_files["businesses"])
    pids = cluster_client.run(os.getpid)  # the worker processes, by address
    sandbox.faults.stalls.extend([3.0, 3.0])  # the first two file fetches hang a while

    def kill_workers() -> None:
        time.sleep(1.0)  # while the workers wait on the stalled fetches
        for pid in pids.values():
            os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_workers)
    killer.start()
    try:
        summary = loader.parquet(rid, tmp_path / "out", engine="dask", cache=False)
    finally:
        killer.join()
    # The nannies restarted the workers and dask ran the lost tasks again: one complete
    # dataset, equal to the local engine's, and no staging left behind.
    local = loader.parquet(rid, tmp_path / "local", cache=False)
    assert summary.rows == local.rows == 102
    pd.testing.assert_frame_equal(
        _read_back(str(tmp_path / "out")), _read_back(str(tmp_path / "local"))
    )
    assert not list(tmp_path.glob("out.tmp-*"))
    assert set(cluster_client.run(os.getpid).values()).isdisjoint(pids.values())
