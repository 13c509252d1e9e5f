"""The notebook runs top to bottom against the sandbox, and is stored with its outputs."""

import sys
from pathlib import Path

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "notebooks"))

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = ROOT / "notebooks" / "explore_results.ipynb"


def test_notebook_is_stored_executed_from_its_source_with_no_error_or_secret() -> None:
    from build_notebook import CELLS

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert [c.source for c in notebook.cells] == [text for _, text in CELLS]  # rebuilt, not edited
    assert code and all(c.execution_count for c in code)  # every cell ran, in order
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the plots read on GitHub
    stored = NOTEBOOK.read_text()
    assert "sandbox-" not in stored and "X-Amz-Signature" not in stored  # no token, no signature


@pytest.mark.slow
def test_notebook_runs_against_the_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAFINITI_CACHE_DIR", str(tmp_path / "cache"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, "the plots cell drew nothing"
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "<table>" in html and "_1.csv" in html  # the files table
    assert "Parquet files written" in html  # the Parquet summary was shown
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "home"]  # nothing else left


@pytest.mark.slow
def test_notebook_runs_on_the_request_the_environment_names(
    sandbox, fixture_files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Business data, from the API in DATAFINITI_API_URL: no product column assumed."""
    from build_notebook import build

    rid = sandbox.add_request(fixture_files["businesses"])
    sandbox.add_query("brand:Sony", fixture_files["products"])  # the query cell counts here
    monkeypatch.setenv("DATAFINITI_API_URL", sandbox.api_url)
    monkeypatch.setenv("DATAFINITI_API_TOKEN", sandbox.token)
    monkeypatch.setenv("DATAFINITI_REQUEST_ID", str(rid))
    monkeypatch.setenv("DATAFINITI_CACHE_DIR", str(tmp_path / "cache"))
    notebook = build()
    client = nbclient.NotebookClient(
        notebook, timeout=180, kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )  # fmt: skip
    client.execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "cell skipped" in text  # the product cells said why they did nothing
    counted = [e for e in sandbox.log if e.method == "POST" and e.path == "/v4/products/search"]
    assert counted  # the query cell asked the API in use (its /v4), not api.datafiniti.co
