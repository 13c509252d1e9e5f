"""Several downloads in one load, and ``dedupe=True`` keeping each record's newest copy."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import Loader
from datafiniti_loader import ColumnNotFound, ConfigurationError, ParseError
from datafiniti_loader.sandbox import Sandbox

HEADER = "id,dateUpdated,name,prices.amountMax\n"

# Download 1 (two files; record C spans both): A newer here, B and C older, D only here,
# E tied with download 2, and a row without an id.
FIRST = [
    "A,2026-11-10T00:00:00Z,a-new,1\n"
    "A,2026-11-10T00:00:00Z,a-new,2\n"
    "B,2026-11-01T00:00:00Z,b-old,3\n"
    "C,2026-11-01T00:00:00Z,c-old,4\n",
    "C,2026-11-01T00:00:00Z,c-old,5\n"
    "C,2026-11-01T00:00:00Z,c-old,6\n"
    "D,2026-11-02T00:00:00Z,d-only,7\n"
    "E,2026-11-03T00:00:00Z,e-first,8\n"
    ",,no-id,9\n",
]
# Download 2: B newer (more rows), C newer with fewer rows, E tied, F only here.
SECOND = [
    "A,2026-11-01T00:00:00Z,a-old,10\n"
    "B,2026-11-09T00:00:00Z,b-new,11\n"
    "B,2026-11-09T00:00:00Z,b-new,12\n"
    "C,2026-11-05T00:00:00Z,c-new,13\n"
    "E,2026-11-03T00:00:00Z,e-second,14\n"
    "F,2026-11-04T00:00:00Z,f-only,15\n"
]


def serve(sandbox: Sandbox, tmp_path: Path, parts: list[str], header: str = HEADER) -> int:
    paths = []
    for body in parts:
        path = tmp_path / f"part{len(list(tmp_path.glob('part*')))}.csv"
        path.write_text(header + body)
        paths.append(path)
    return sandbox.add_request(paths)


@pytest.fixture
def two(sandbox: Sandbox, tmp_path: Path) -> tuple[int, int]:
    return serve(sandbox, tmp_path, FIRST), serve(sandbox, tmp_path, SECOND)


def test_a_list_of_requests_loads_in_its_order(loader: Loader, two: tuple[int, int]) -> None:
    first, second = two
    frame = loader.load([second, first])
    assert frame["_request_id"].tolist() == [second] * 6 + [first] * 9
    assert frame["name"].tolist()[:2] == ["a-old", "b-new"]
    assert loader.load(str(first))["name"].tolist() == frame["name"].tolist()[6:]


def test_a_request_listed_twice_or_no_request_is_refused(
    loader: Loader, two: tuple[int, int]
) -> None:
    with pytest.raises(ConfigurationError, match="more than once"):
        loader.load([two[0], two[1], two[0]])
    with pytest.raises(ConfigurationError, match="No request id"):
        loader.load([])


def test_dedupe_keeps_every_row_of_the_newest_copy_only(
    loader: Loader, two: tuple[int, int]
) -> None:
    first, second = two
    frame = loader.load([first, second], dedupe=True)
    assert frame["name"].tolist() == [
        "a-new",
        "a-new",
        "d-only",
        "no-id",
        "b-new",
        "b-new",
        "c-new",  # the newer copy has one row where the older had three
        "e-second",  # a tie goes to the later download in the list
        "f-only",
    ]
    # _source_row still points at the row in its file, across the rows dropped.
    assert frame["_source_row"].tolist() == [0, 1, 2, 4, 1, 2, 3, 4, 5]
    assert frame["_request_id"].tolist() == [first] * 4 + [second] * 5


def test_dedupe_in_the_other_order_changes_only_ties(loader: Loader, two: tuple[int, int]) -> None:
    first, second = two
    frame = loader.load([second, first], dedupe=True)
    assert frame["name"].tolist() == [
        "b-new",
        "b-new",
        "c-new",
        "f-only",
        "a-new",
        "a-new",
        "d-only",
        "e-first",
        "no-id",
    ]


def test_dedupe_to_parquet_equals_dedupe_in_memory(
    loader: Loader, two: tuple[int, int], tmp_path: Path
) -> None:
    in_memory = loader.load(list(two), dedupe=True, cache=False)
    summary = loader.parquet(list(two), tmp_path / "out", dedupe=True)
    assert summary.rows == len(in_memory) == 9
    written = pd.read_parquet(tmp_path / "out")
    pd.testing.assert_frame_equal(written.astype(in_memory.dtypes.to_dict()), in_memory)
    manifest = json.loads((tmp_path / "out" / "_datafiniti_loader.json").read_text())
    assert manifest["request_ids"] == list(two) and manifest["deduplicated"] is True
    assert manifest["rows"] == 9 and sum(manifest["row_counts"]) == 15


def test_dedupe_works_on_json_downloads(sandbox: Sandbox, loader: Loader, tmp_path: Path) -> None:
    def jsonl(name: str, records: list[dict[str, object]]) -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        return path

    old = jsonl(
        "old.txt",
        [
            {"id": "A", "dateUpdated": "2026-11-01T00:00:00Z", "reviews": [{"rating": 1}]},
            {"id": "B", "dateUpdated": "2026-11-08T00:00:00Z", "reviews": [{"rating": 2}]},
        ],
    )
    new = jsonl(
        "new.txt",
        [
            {"id": "A", "dateUpdated": "2026-11-05T00:00:00Z", "reviews": [{"rating": 3}]},
            {"id": "B", "dateUpdated": "2026-11-02T00:00:00Z", "reviews": []},
        ],
    )
    first, second = sandbox.add_request([old]), sandbox.add_request([new])
    frame = loader.load([first, second], dedupe=True)
    assert frame["id"].tolist() == ["B", "A"]
    assert [r[0]["rating"] for r in frame["reviews"]] == [2, 3]


def test_dedupe_needs_id_and_date_updated(sandbox: Sandbox, loader: Loader, tmp_path: Path) -> None:
    undated = serve(sandbox, tmp_path, ["A,x\n"], header="id,name\n")
    with pytest.raises(ColumnNotFound, match="'dateUpdated'") as caught:
        loader.load([undated], dedupe=True)
    assert f"request {undated}" in str(caught.value)
    assert len(loader.load([undated])) == 1  # without dedupe it loads as ever


def test_a_date_updated_that_is_not_a_date_is_named(
    sandbox: Sandbox, loader: Loader, tmp_path: Path
) -> None:
    bad = serve(sandbox, tmp_path, ["A,2026-11-01T00:00:00Z,x,1\nB,last tuesday,y,2\n"])
    with pytest.raises(ParseError, match="'last tuesday'"):
        loader.load([bad], dedupe=True)


def test_dedupe_is_not_offered_for_dask(loader: Loader, two: tuple[int, int]) -> None:
    with pytest.raises(ConfigurationError, match="to_parquet"):
        loader.load(list(two), dedupe=True, output="dask")
