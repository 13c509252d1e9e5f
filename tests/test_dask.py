"""output='dask': one partition per file, typed meta, distributed scheduler, late computes."""

import pickle

import pandas as pd
import pytest

from conftest import Loader
from datafiniti_loader.sandbox import Sandbox

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster_client(tmp_path_factory: pytest.TempPathFactory):
    import dask

    # dask keeps its lock files in a scratch space that outlives the run unless told where.
    scratch = str(tmp_path_factory.mktemp("dask-scratch"))
    with dask.config.set({"temporary-directory": scratch}):
        cluster = distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None
        )
        with cluster, distributed.Client(cluster) as client:
            yield client


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


def test_graph_holds_no_url_and_shows_no_token(
    loader: Loader, sandbox: Sandbox, fixture_files
) -> None:
    rid = sandbox.add_request(fixture_files["businesses"])
    lazy = loader.load(rid, output="dask")
    graph = dict(lazy.__dask_graph__())
    text = repr(graph)
    assert sandbox.token not in text and "X-Amz" not in text
    assert b"X-Amz-Signature" not in pickle.dumps(graph)


def test_late_compute_survives_expired_urls(
    loader: Loader, sandbox: Sandbox, fixture_files, cluster_client
) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    lazy = loader.load(rid, output="dask", cache=False)
    sandbox.faults.expire_signings = 1  # the URLs handed out at compute time come back expired
    computed = lazy.compute()
    assert len(computed) == 72 and computed["_source_file"].nunique() == 2


def test_json_partitions_keep_nesting(loader: Loader, sandbox: Sandbox, fixture_files) -> None:
    rid = sandbox.add_request(fixture_files["products_json"])
    lazy = loader.load(rid, output="dask")
    computed = lazy.compute(scheduler="sync")
    eager = loader.load(rid)
    assert len(computed) == len(eager) == 12
    assert computed["reviews"].tolist() == eager["reviews"].tolist()
