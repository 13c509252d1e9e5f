"""dtype=: column types on request, as in pandas.read_csv, in every output."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import Loader
from datafiniti_loader import ColumnNotFound, ConfigurationError, ParseError
from datafiniti_loader.sandbox import Sandbox

ASKED = {
    "prices.amountMax": "float64",
    "prices.isSale": "boolean",
    "reviews.rating": "Int64",
    "reviews.date": "datetime64[ns, UTC]",
    "brand": "category",
}


@pytest.fixture
def products(sandbox: Sandbox, fixture_files: dict[str, list[Path]]) -> int:
    return sandbox.add_request(fixture_files["products"])


def test_types_on_request_in_pandas(loader: Loader, products: int) -> None:
    lossless = loader.load(products)
    typed = loader.load(products, dtype=ASKED)
    assert str(typed["prices.amountMax"].dtype) == "float64"
    assert str(typed["prices.isSale"].dtype) == "boolean"
    assert str(typed["reviews.rating"].dtype) == "Int64"
    assert str(typed["reviews.date"].dtype) == "datetime64[ns, UTC]"
    assert str(typed["brand"].dtype) == "category"
    assert typed["prices.amountMax"].tolist() == [float(v) for v in lossless["prices.amountMax"]]
    expected = [{"TRUE": True, "FALSE": False}[v] for v in lossless["prices.isSale"]]
    assert typed["prices.isSale"].tolist() == expected
    assert typed["reviews.date"].iloc[0] == pd.Timestamp("2017-01-11T15:53:00Z")
    # Columns not named keep the lossless rules: identifiers as written.
    pd.testing.assert_series_equal(typed["postalCode"], lossless["postalCode"])
    pd.testing.assert_series_equal(typed["upc"], lossless["upc"])


def test_string_keeps_a_column_as_text_that_would_be_typed(loader: Loader, products: int) -> None:
    assert str(loader.load(products)["reviews.rating"].dtype) == "Int64"
    as_text = loader.load(products, dtype={"reviews.rating": "string"})
    assert set(as_text["reviews.rating"].dropna()) <= {"1", "2", "3", "4", "5"}


def test_types_on_request_in_parquet_arrow_and_dask(
    loader: Loader, products: int, tmp_path: Path
) -> None:
    loader.parquet(products, tmp_path / "out", dtype=ASKED)
    schema = pq.read_schema(next((tmp_path / "out").glob("*.parquet")))
    assert schema.field("prices.amountMax").type == pa.float64()
    assert schema.field("prices.isSale").type == pa.bool_()
    assert schema.field("reviews.date").type == pa.timestamp("ns", "UTC")
    assert pa.types.is_dictionary(schema.field("brand").type)
    table = loader.load(products, dtype=ASKED, output="arrow")
    assert table.schema.field("reviews.rating").type == pa.int64()
    pytest.importorskip("dask")
    ddf = loader.load(products, dtype=ASKED, output="dask")
    assert str(ddf.compute()["prices.amountMax"].dtype) == "float64"


def test_latitude_as_float_in_csv_and_json(
    sandbox: Sandbox, loader: Loader, fixture_files: dict[str, list[Path]], tmp_path: Path
) -> None:
    businesses = sandbox.add_request(fixture_files["businesses"])
    frame = loader.load(businesses, dtype={"lat": "float64", "long": "float64"})
    assert str(frame["lat"].dtype) == "float64" and frame["lat"].between(-90, 90).all()
    records = tmp_path / "places.txt"
    records.write_text(
        json.dumps({"id": "a", "latitude": "42.36", "open": "true"}) + "\n"
        + json.dumps({"id": "b", "latitude": 40.71, "open": False}) + "\n"
    )  # fmt: skip
    rid = sandbox.add_request([records])
    typed = loader.load(rid, dtype={"latitude": "float64", "open": "boolean"})
    assert typed["latitude"].tolist() == [42.36, 40.71]
    assert typed["open"].tolist() == [True, False]


def test_a_value_that_cannot_be_read_names_column_file_row_and_value(
    loader: Loader, products: int
) -> None:
    with pytest.raises(ParseError) as caught:
        loader.load(products, dtype={"upc": "float64"})
    message = str(caught.value)
    assert "'upc'" in message and f"{products}_1.csv" in message and "row " in message
    assert "'N/A'" in message or "'0,0884392589'" in message


def test_bad_names_and_types_are_refused(sandbox: Sandbox, loader: Loader, products: int) -> None:
    with pytest.raises(ColumnNotFound, match="dtype"):
        loader.load(products, dtype={"prices.amountMx": "float64"})
    before = len(sandbox.log)
    with pytest.raises(ConfigurationError, match="decimal"):
        loader.load(products, dtype={"prices.amountMax": "decimal"})
    assert len(sandbox.log) == before  # refused before asking anything
