"""Opt-in: the twelve real Datafiniti files in ../shared/datafiniti-real, served by the sandbox.

Skipped where ``../shared`` is absent (a user's clone). Each file's every row
and cell must come back exactly as pandas reads it as plain text.
"""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from conftest import FAST_RETRY, REAL_DATA
from datafiniti_loader import load_results
from datafiniti_loader.sandbox import Sandbox
from helpers import assert_lossless_csv, assert_same_json

pytestmark = [pytest.mark.real, pytest.mark.slow]

REQUESTS = {
    "large_csv": [
        "Naren-Sridharan__Cross-Domain-Sentiment-Analysis/1429_1.csv.gz",
        "BhavyaGoradia__AI/Datafiniti_Amazon_Consumer_Reviews_of_Amazon_Products.csv.gz",
        "michaelcho29__text_analytics_workshop/Datafiniti_Hotel_Reviews.csv.gz",
        "neylsoncrepalde__RFSVM/Datafiniti_Womens_Shoes.csv.gz",
    ],
    "small_csv": [
        "zero780__DAW-Autonomo_3/8358_1.csv.gz",
        "zero780__DAW-Autonomo_3/Datafiniti_Pizza_Restaurants_and_the_Pizza_They_Sell_May19.csv.gz",
        "cathyxu99__Fast-Food-Location-vs-Mortality-Analysis/FastFoodRestaurants.csv.gz",
        "123bmoney0__Beers_With_Brute_Force/7160_1.csv.gz",
        "nadeem521328__product_reviews/7817_1.csv.gz",
    ],
    "json": [
        "mehakrafiq__datafiniti/299678_1.txt.gz",
        "datafiniti__infra-coding-challenge/records.json.gz",
        "arhoy__datafiniti-shopify-view-creator/rawdata.json.gz",
    ],
}


@pytest.fixture(scope="module")
def real_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[Path]]]:
    if not REAL_DATA.is_dir():
        pytest.skip("../shared/datafiniti-real is not here (it is only in the project's workspace)")
    target = tmp_path_factory.mktemp("real")
    unpacked: dict[str, list[Path]] = {}
    for request, files in REQUESTS.items():
        unpacked[request] = []
        for relative in files:
            out = target / Path(relative).name.removesuffix(".gz")
            with gzip.open(REAL_DATA / relative, "rb") as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            unpacked[request].append(out)
    yield unpacked


def load_through_sandbox(files: list[Path]) -> tuple[int, pd.DataFrame]:
    """Serve ``files`` as one request and load it; return the request id and the frame."""
    with Sandbox() as sandbox:
        rid = sandbox.add_request(files)
        frame = load_results(
            rid, token=sandbox.token, api_url=sandbox.api_url, cache=False, progress=False,
            retry=FAST_RETRY,
        )  # fmt: skip
    return rid, frame


@pytest.mark.parametrize("request_name", ["small_csv", "large_csv"])
def test_real_csv_files_load_losslessly(
    real_files: dict[str, list[Path]], request_name: str
) -> None:
    files = real_files[request_name]
    rid, frame = load_through_sandbox(files)
    total = 0
    for n, path in enumerate(files, start=1):
        total += assert_lossless_csv(frame, path, f"{rid}_{n}.csv")
    assert len(frame) == total


def test_real_json_files_load_losslessly(real_files: dict[str, list[Path]]) -> None:
    files = real_files["json"]
    rid, frame = load_through_sandbox(files)
    counts = [
        assert_same_json(frame, path, f"{rid}_{n}.txt") for n, path in enumerate(files, start=1)
    ]
    assert counts == [10, 10, 50]


def _has_ids(path: Path) -> bool:
    """Whether a real file's records carry an ``id`` (older exports do not)."""
    with open(path, encoding="utf-8-sig") as handle:
        head = handle.readline()
    if path.suffix == ".csv":
        return "id" in head.rstrip("\r\n").split(",")
    return '"id"' in head


@pytest.mark.parametrize("request_name", ["small_csv", "large_csv", "json"])
def test_real_files_round_trip_through_tidy_tables(
    real_files: dict[str, list[Path]], request_name: str
) -> None:
    from datafiniti_loader import load_tables
    from helpers import json_records
    from tidy_roundtrip import assert_flat_rows_rebuilt, assert_json_records_rebuilt

    files = [f for f in real_files[request_name] if _has_ids(f)]
    assert files
    with Sandbox() as sandbox:
        rid = sandbox.add_request(files)
        options = {"token": sandbox.token, "api_url": sandbox.api_url, "cache": False,
                   "progress": False, "retry": FAST_RETRY, "output": "arrow"}  # fmt: skip
        tables = dict(load_tables(rid, **options))
        flat = load_results(rid, **options)
    assert tables["records"].num_rows < flat.num_rows or request_name == "json"
    if request_name == "json":
        for path in files:
            assert_json_records_rebuilt(tables, json_records(path), rid)
    else:
        assert assert_flat_rows_rebuilt(flat, tables) == flat.num_rows
