"""load_results end to end against the sandbox serving the project's fixtures."""

import json
import re
import threading
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import Loader
from datafiniti_loader import ColumnNotFound, RequestNotReady
from datafiniti_loader.sandbox import Sandbox
from datafiniti_loader.sandbox.fixtures import write_large_csv
from helpers import assert_lossless_csv, assert_same_json

PROVENANCE = ["_request_id", "_result_id", "_source_file", "_source_row", "_result_created_at"]


def test_csv_request_loads_every_row_and_cell(
    loader: Loader, sandbox: Sandbox, fixture_files
) -> None:
    files = fixture_files["products"] + fixture_files["businesses"]
    rid = sandbox.add_request(files)
    frame = loader.load(rid)
    names = [f"{rid}_{n}.csv" for n in range(1, len(files) + 1)]
    total = sum(
        assert_lossless_csv(frame, path, name) for path, name in zip(files, names, strict=True)
    )
    assert len(frame) == total
    assert frame["_source_file"].unique().tolist() == names  # result order, then file order


@pytest.mark.parametrize("output", ["pandas", "parquet"])
def test_files_read_side_by_side_give_what_reading_them_in_order_gives(
    loader: Loader, sandbox: Sandbox, tmp_path: Path, output: str
) -> None:
    """Loads scan two files at a time (conversions one); either way file order rules."""
    files = []
    for n in range(6):
        rating = "N/A" if n == 4 else str(n)  # one late file makes the column text
        extra = f"late{n}," if n >= 3 else ""  # a column that only later files have, early
        header = "id," + ("extra," if n >= 3 else "") + "rating"
        rows = "".join(f"{n}-{i},{extra}{rating}\r\n" for i in range(20_000 + 997 * n))
        path = tmp_path / f"part{n}.csv"
        path.write_text(header + "\r\n" + rows, newline="")
        files.append(path)
    rid = sandbox.add_request(files)
    if output == "pandas":
        frame = loader.load(rid)
    else:
        loader.parquet(rid, tmp_path / "out")
        frame = pd.read_parquet(tmp_path / "out")
    sizes = [20_000 + 997 * n for n in range(6)]
    assert frame["id"].tolist() == [f"{n}-{i}" for n in range(6) for i in range(sizes[n])]
    assert frame["rating"].tolist()[:2] == ["0", "0"]  # text: file 4 holds N/A
    assert frame.columns.tolist()[:3] == ["id", "rating", "extra"]
    assert frame["extra"].isna().sum() == sum(sizes[:3])
    assert frame["_source_row"].tolist() == [i for n in range(6) for i in range(sizes[n])]


def test_columns_first_seen_order_and_missing_is_null(
    loader: Loader, sandbox: Sandbox, fixture_files
) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    frame = loader.load(rid)
    first = pd.read_csv(fixture_files["products"][0], nrows=0).columns.tolist()
    assert frame.columns.tolist()[: len(first)] == first
    assert frame.columns.tolist()[len(first)] == "primaryCategories"
    assert frame.columns.tolist()[-5:] == PROVENANCE
    second = frame[frame["_result_id"] == frame["_result_id"].max()]
    assert second["ean"].isna().all()


def test_identifiers_stay_text_and_lossless_types_are_typed(
    loader: Loader, sandbox: Sandbox, fixture_files
) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    frame = loader.load(rid)
    assert {"02134", "07102"} <= set(frame["postalCode"])
    assert "8.49E+11" in set(frame["upc"]) and "N/A" in set(frame["upc"])
    assert "6.02E+26" in set(frame["reviews.username"])
    assert str(frame["reviews.rating"].dtype) == "Int64"  # nullable: dtype never depends on gaps
    assert str(frame["dateAdded"].dtype) == "datetime64[s, UTC]"
    assert frame["reviews.date"].dtype.kind not in "Mmf"  # mixed Z / .000Z stays text


def test_provenance_columns_and_types(loader: Loader, sandbox: Sandbox, fixture_files) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    frame = loader.load(rid)
    assert str(frame["_request_id"].dtype) == "int64" and (frame["_request_id"] == rid).all()
    assert str(frame["_result_id"].dtype) == "int64"
    assert str(frame["_source_row"].dtype) == "int64"
    assert isinstance(frame["_source_file"].dtype, pd.CategoricalDtype)
    assert str(frame["_result_created_at"].dtype).startswith("datetime64") and "UTC" in str(
        frame["_result_created_at"].dtype
    )
    assert not loader.load(rid, provenance=False).columns.str.startswith("_").any()


def test_json_request_keeps_nesting(loader: Loader, sandbox: Sandbox, fixture_files) -> None:
    files = fixture_files["products_json"]
    rid = sandbox.add_request(files)
    frame = loader.load(rid)
    assert assert_same_json(frame, files[0], f"{rid}_1.txt") == 8
    assert assert_same_json(frame, files[1], f"{rid}_2.txt") == 4
    first = frame["reviews"].iloc[0]
    assert isinstance(first, list) and isinstance(first[0], dict) and "rating" in first[0]


def test_envelope_request(loader: Loader, sandbox: Sandbox, fixture_files) -> None:
    files = fixture_files["properties"]
    rid = sandbox.add_request(files)
    frame = loader.load(rid)
    assert assert_same_json(frame, files[0], f"{rid}_1.txt") == 6
    assert frame["latitude"].map(type).eq(str).all()


def test_columns_selects_in_the_given_order(
    loader: Loader, sandbox: Sandbox, fixture_files
) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    frame = loader.load(rid, columns=["upc", "id"], provenance=False)
    assert frame.columns.tolist() == ["upc", "id"]
    with pytest.raises(ColumnNotFound, match="nope"):
        loader.load(rid, columns=["id", "nope"])


def test_arrow_and_polars_outputs_match_pandas(
    loader: Loader, sandbox: Sandbox, fixture_files
) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    frame = loader.load(rid)
    table = loader.load(rid, output="arrow")
    assert isinstance(table, pa.Table) and table.num_rows == len(frame)
    assert table.column_names == frame.columns.tolist()
    polars = pytest.importorskip("polars")
    pl_frame = loader.load(rid, output="polars")
    assert isinstance(pl_frame, polars.DataFrame) and pl_frame.height == len(frame)
    assert pl_frame["postalCode"].to_list() == table.column("postalCode").to_pylist()


def test_unknown_output_is_refused(loader: Loader, sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="output must be one of"):
        loader.load(1, output="excel")


def test_wait_polls_then_loads(
    loader: Loader, sandbox: Sandbox, fixture_files, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datafiniti_loader.remote.client as client_module

    monkeypatch.setattr(client_module, "DEFAULT_POLL_INTERVAL", 0.01)
    rid = sandbox.add_request(fixture_files["businesses"], pending_polls=3)
    with pytest.raises(RequestNotReady, match="STARTED"):
        loader.load(rid)
    frame = loader.load(rid, wait=30)
    assert len(frame) == 30
    polls = [e for e in sandbox.log if e.path == f"/v3/requests/{rid}"]
    assert len(polls) == 4  # STARTED, STARTED (the first load's), STARTED, COMPLETED


def test_warm_reload_downloads_nothing(
    loader: Loader, sandbox: Sandbox, fixture_files, cache_dir: Path
) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    cold = loader.load(rid)
    sandbox.log.clear()
    warm = loader.load(rid)
    pd.testing.assert_frame_equal(warm, cold)
    assert [e for e in sandbox.log if e.server == "bucket"] == []


def test_no_cache_leaves_nothing_behind(
    loader: Loader, sandbox: Sandbox, fixture_files, cache_dir: Path
) -> None:
    import tempfile

    before = set(Path(tempfile.gettempdir()).glob("datafiniti-loader-*"))
    rid = sandbox.add_request(fixture_files["products"])
    loader.load(rid, cache=False)
    assert not cache_dir.exists()
    for thread in threading.enumerate():  # removal runs right after, off the caller's path
        if thread.name == "dfl-scratch-cleanup":
            thread.join(timeout=30)
    # Only this load's directory must be gone; orphans of killed processes (other tests
    # SIGKILL loads) may be swept by it meanwhile, so compare what is new, not equality.
    assert set(Path(tempfile.gettempdir()).glob("datafiniti-loader-*")) - before == set()


def test_progress_bars_only_when_asked(
    loader: Loader, sandbox: Sandbox, fixture_files, capsys: pytest.CaptureFixture[str]
) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    loader.load(rid, progress=False, cache=False)
    assert capsys.readouterr().err == ""
    loader.load(rid, progress=True, cache=False)
    err = capsys.readouterr().err
    assert "files" in err and "2/2" in err and "bytes" in err
    # The files bar says the load goes on once every file is in; the bytes bar has no
    # percentage, which would fall each time a download announced its size.
    assert "2/2 [" in err and "converting" in err
    byte_lines = [part for part in err.replace("\r", "\n").splitlines() if "bytes" in part]
    shown = [re.findall(r"(\d+)%", line) for line in byte_lines]
    assert byte_lines and all(found in ([], ["100"]) for found in shown)  # none below 100


def test_one_info_line_per_load(
    loader: Loader, sandbox: Sandbox, fixture_files, caplog: pytest.LogCaptureFixture, tmp_path
) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    with caplog.at_level("INFO", logger="datafiniti_loader"):
        loader.load(rid)
    lines = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert len(lines) == 1
    assert f"request {rid}: 2 file(s) (2 downloaded, 0 cached, 0." in lines[0]
    assert "72 rows" in lines[0]
    caplog.clear()
    big = sandbox.add_request([write_large_csv(tmp_path / "big.csv", 2_000_000)])
    with caplog.at_level("INFO", logger="datafiniti_loader"):
        loader.load(big)
        loader.load(big)  # from the cache
    first, again = (r.getMessage() for r in caplog.records if r.levelname == "INFO")
    rows = re.search(r"([\d,]+) rows", first)
    assert rows and "," in rows.group(1)  # 12,345 rows, as the command line prints numbers
    assert "(0 downloaded, 1 cached)" in again  # no "0.0 MB" for what came from the cache


def test_the_wait_bar_shows_no_rate_and_no_log_line_breaks_into_it(
    loader: Loader, sandbox: Sandbox, fixture_files, caplog: pytest.LogCaptureFixture, capsys
) -> None:
    rid = sandbox.add_request(fixture_files["products"], pending_polls=2, records=36)
    with caplog.at_level("INFO", logger="datafiniti_loader"):
        loader.load(rid, wait=True, progress=True)
    err = capsys.readouterr().err
    assert "preparing" in err and "records/s" not in err
    waits = [
        r.getMessage() for r in caplog.records if r.levelno >= 20 and "running" in r.getMessage()
    ]
    assert waits == []  # the bar showed each poll; no INFO line was printed into it


def test_library_is_quiet_by_default() -> None:
    import logging

    logger = logging.getLogger("datafiniti_loader")
    assert any(isinstance(h, logging.NullHandler) for h in logger.handlers)
    assert logger.level == logging.NOTSET and logger.propagate


def test_polars_keeps_nesting(loader: Loader, sandbox: Sandbox, fixture_files) -> None:
    polars = pytest.importorskip("polars")
    rid = sandbox.add_request(fixture_files["products_json"])
    frame = loader.load(rid, output="polars")
    assert frame.height == 12
    assert isinstance(frame.schema["reviews"], polars.List)
    assert frame["reviews"][0][0]["rating"] == loader.load(rid)["reviews"].iloc[0][0]["rating"]


@pytest.mark.parametrize("ids", [[7, 7], [None, None]], ids=["repeated id", "no id"])
def test_results_are_told_apart_by_position_not_id_or_name(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path, ids: list[int | None]
) -> None:
    first, second = fixture_files["products"]
    rid = sandbox.add_request([first, second], result_ids=ids)
    for cache in (True, False):
        frame = loader.load(rid, cache=loader.cache if cache else False)
        assert assert_lossless_csv(frame, first, f"{rid}_1.csv") > 0
        assert assert_lossless_csv(frame, second, f"{rid}_2.csv") > 0
    expected_ids = [i or 0 for i in ids]
    assert (
        frame.groupby("_source_file", observed=True)["_result_id"].first().tolist() == expected_ids
    )
    summary = loader.parquet(rid, tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "_datafiniti_loader.json").read_text())
    counts = frame.groupby("_source_file", observed=True).size().tolist()
    assert manifest["row_counts"] == counts and summary.rows == len(frame)


def test_repeated_file_names_are_counted_apart(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    # The API lists the same object twice (same name, same bytes) under two results.
    source = fixture_files["businesses"][0]
    rid = sandbox.add_request([source, source], names=["same.csv", "same.csv"])
    frame = loader.load(rid)
    assert len(frame) == 60 and frame["_result_id"].nunique() == 2
    loader.parquet(rid, tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "_datafiniti_loader.json").read_text())
    assert manifest["row_counts"] == [30, 30]


def test_a_wide_table_loads_every_column_typed(
    loader: Loader, sandbox: Sandbox, tmp_path: Path
) -> None:
    columns = 3000  # one insertion per column made this quadratic (5,000 took 71 s)
    path = tmp_path / "wide.csv"
    header = ",".join(f"c{i}" for i in range(columns))
    rows = [",".join(str(r * columns + i) for i in range(columns)) for r in range(5)]
    path.write_text("\r\n".join([header, *rows]) + "\r\n")
    frame = loader.load(sandbox.add_request([path]), provenance=False)
    assert frame.shape == (5, columns)
    assert set(map(str, frame.dtypes)) == {"Int64"}
    assert frame.iloc[4, columns - 1] == 5 * columns - 1


def test_columns_edge_cases_do_the_obvious_thing(
    loader: Loader, sandbox: Sandbox, fixture_files
) -> None:
    from datafiniti_loader import ConfigurationError

    rid = sandbox.add_request(fixture_files["products"])
    whole = loader.load(rid)
    asked = loader.load(rid, columns=["name", "_source_file", "name"])  # provenance and a repeat
    assert list(asked.columns) == ["name", *[c for c in whole.columns if c.startswith("_")]]
    pd.testing.assert_series_equal(asked["name"], whole["name"])
    only = loader.load(rid, columns=[])  # no data column: every row, provenance alone
    assert len(only) == len(whole) and all(c.startswith("_") for c in only.columns)
    assert only["_source_row"].tolist() == whole["_source_row"].tolist()
    with pytest.raises(ColumnNotFound, match="provenance=False"):
        loader.load(rid, columns=["name", "_source_file"], provenance=False)
    with pytest.raises(ConfigurationError, match="nothing would be loaded"):
        loader.load(rid, columns=[], provenance=False)
    with pytest.raises(ColumnNotFound, match="Did you mean 'brand'"):
        loader.load(rid, columns=["brnad"])


def test_progress_has_a_total_in_the_summarys_units_and_the_summary_comes_after(
    loader: Loader, sandbox: Sandbox, fixture_files, capsys: pytest.CaptureFixture[str]
) -> None:
    import logging

    from tqdm.std import tqdm

    rid = sandbox.add_request(fixture_files["products"])
    size = sum(p.stat().st_size for p in fixture_files["products"])
    handler = logging.StreamHandler()  # stderr, where the bars are
    logger = logging.getLogger("datafiniti_loader")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        loader.load(rid, progress=True, cache=False)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    err = capsys.readouterr().err
    shown = tqdm.format_sizeof(size, divisor=1000)  # decimal, as the summary's MB
    assert "bytes: 100%" in err and f"{shown}/{shown}" in err, err
    last = err.rstrip("\n").rsplit("\n", 1)[-1]
    assert last.startswith(f"request {rid}: 2 file(s)") and "\r" not in last


def test_waiting_shows_the_requests_status(
    loader: Loader, sandbox: Sandbox, fixture_files, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    import datafiniti_loader.remote.client as client_module

    monkeypatch.setattr(client_module, "DEFAULT_POLL_INTERVAL", 0.01)
    rid = sandbox.add_request(fixture_files["businesses"], pending_polls=2)
    loader.load(rid, wait=True, progress=True)
    err = capsys.readouterr().err
    assert f"request {rid} preparing" in err and "STARTED" in err and "COMPLETED" in err


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        # past int64: pyarrow reads the field as doubles
        (
            ['{"id":"a","n":12345678901234567890}', '{"id":"b","n":1}'],
            ["12345678901234567890", "1"],
        ),
        # past 2**53 beside a fraction: doubles again
        (['{"id":"a","n":1.5}', '{"id":"b","n":9007199254740993}'], ["1.5", "9007199254740993"]),
        # nested
        (
            ['{"id":"a","n":{"upc":[12345678901234567890]}}'],
            ['{"upc":[12345678901234567890]}'],
        ),
    ],
)
def test_json_integers_no_double_holds_stay_exact(
    loader: Loader, sandbox: Sandbox, tmp_path: Path, lines: list[str], expected: list[str]
) -> None:
    source = tmp_path / "9_1.txt"
    source.write_text("\n".join(lines) + "\n")
    rid = sandbox.add_request([source])
    for frame in (loader.load(rid), loader.load(rid, output="arrow").to_pandas()):
        assert frame["n"].tolist() == expected
    summary = loader.parquet(rid, tmp_path / "out")
    assert summary.rows == len(lines)
    assert pq.read_table(tmp_path / "out")["n"].to_pylist() == expected


def test_json_integers_a_double_holds_stay_numbers(
    loader: Loader, sandbox: Sandbox, tmp_path: Path
) -> None:
    source = tmp_path / "9_1.txt"
    source.write_text('{"id":"a","n":1.5}\n{"id":"b","n":900719925474099}\n')
    rid = sandbox.add_request([source])
    assert loader.load(rid)["n"].tolist() == [1.5, 900719925474099.0]
