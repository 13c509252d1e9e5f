"""Writes explore_results.ipynb from the cells below, run against the sandbox with its outputs.

The cells live here, as code, so that changes to them stay reviewable; the
notebook is stored executed, so that it reads on GitHub with its tables and
plots. ``python notebooks/build_notebook.py`` rebuilds it (about ten seconds).
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    (
        "md",
        """# Exploring a Datafiniti download

This notebook walks through what an analyst does with a Datafiniti download
request: list its result files, load them into pandas, check where each row
came from, look at the data, and convert it to Parquet for later.

By default it runs against the **sandbox**, a local stand-in for Datafiniti's
API and S3 that serves this project's fixture files, so it needs no account.
To use your own data, set `DATAFINITI_API_TOKEN` and `DATAFINITI_REQUEST_ID`
in the environment before starting Jupyter.""",
    ),
    (
        "code",
        """import os
import tempfile

import matplotlib.pyplot as plt

from datafiniti_loader import Client, load_results, to_parquet
from datafiniti_loader.sandbox import Sandbox

if os.environ.get("DATAFINITI_API_TOKEN") and os.environ.get("DATAFINITI_REQUEST_ID"):
    sandbox = None
    REQUEST_ID = int(os.environ["DATAFINITI_REQUEST_ID"])
    connection = {}  # token and API URL come from the environment
else:
    sandbox = Sandbox().start()
    REQUEST_ID = sandbox.add_fixture_requests()["products"]
    connection = {"token": sandbox.token, "api_url": sandbox.api_url}
# Parquet goes to a scratch directory removed at the end; give your own path to keep it.
scratch = tempfile.TemporaryDirectory(prefix="explore-output-")


def have(frame, *columns):
    # Whether this download has these columns (the product cells need product data).
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        print(f"(this download has no {', '.join(missing)}: cell skipped)")
    return not missing


REQUEST_ID""",
    ),
    (
        "md",
        """## The request and its files

`Client.request` says how far the request has got; `Client.results` lists its
files. Each file expires seven days after it was created; the table says when.""",
    ),
    (
        "code",
        """client = Client(**connection)
client.request(REQUEST_ID)""",
    ),
    (
        "code",
        """files = client.results(REQUEST_ID)
files""",
    ),
    (
        "md",
        """## Load everything into one DataFrame

Every result file, in order, with identifiers kept exactly as written
(postal codes keep their leading zeros, `8.49E+11` stays text) and columns
typed only where that loses nothing.""",
    ),
    (
        "code",
        """df = load_results(REQUEST_ID, **connection)
print(f"{len(df):,} rows x {df.shape[1]} columns")
df.head()""",
    ),
    ("code", """df.dtypes.to_frame("dtype").T"""),
    (
        "md",
        """## Provenance: where each row came from

The last five columns name the request, the result, the file and the row in
that file, so any row can be traced back to its source.""",
    ),
    (
        "code",
        """provenance = [c for c in df.columns if c.startswith("_")]
df.groupby("_source_file", observed=True).size().rename("rows").to_frame()""",
    ),
    (
        "code",
        """shown = [c for c in ("id", "postalCode", "upc") if c in df.columns]
df[[*shown, *provenance]].sample(min(5, len(df)), random_state=0)""",
    ),
    (
        "md",
        """## A first look

Ratings come typed (every value was a whole number). Prices stay text by
default, because values such as `123.10` would not read back as written once
turned into floats; the `dtype=` load above made them floats for the plot.""",
    ),
    (
        "md",
        """When you know what a column holds, say so with `dtype=` (as in
`pandas.read_csv`): prices as floats, `TRUE`/`FALSE` as booleans. A value
that cannot be read as asked is an error naming the column, file, row and
value, never a silent gap.""",
    ),
    (
        "code",
        """asked = {"prices.amountMax": "float64", "prices.isSale": "boolean", "brand": "category"}
typed = None
if have(df, *asked):
    typed = load_results(REQUEST_ID, dtype=asked, **connection)
    display(typed[list(asked)].dtypes)""",
    ),
    (
        "code",
        """fig, axes = plt.subplots(1, 3, figsize=(15, 4))

if have(df, "reviews.rating"):
    df["reviews.rating"].value_counts().sort_index().plot.bar(ax=axes[0], title="Review ratings")

if typed is not None:
    typed.boxplot(column="prices.amountMax", by="brand", ax=axes[1], rot=45)
    axes[1].set_title("Max price by brand")
fig.suptitle("")

if have(df, "id", "dateAdded"):
    records = df.drop_duplicates("id").set_index("dateAdded").sort_index()
    by_month = records["id"].resample("MS").count()
    by_month.plot(ax=axes[2], marker="o", title="Records by month added")
plt.tight_layout()
plt.show()""",
    ),
    (
        "md",
        """## Convert to Parquet and query it back

`to_parquet` streams the files into a Parquet dataset with bounded memory and
leaves nothing behind if it fails. pyarrow (or duckdb, polars, Spark) can
query the result without loading it all.""",
    ),
    (
        "code",
        """summary = to_parquet(REQUEST_ID, f"{scratch.name}/products", **connection)
summary""",
    ),
    (
        "code",
        """import pyarrow.dataset as ds

dataset = ds.dataset(f"{scratch.name}/products", format="parquet")
if have(df, "brand", "reviews.rating"):
    top_brand = df["brand"].value_counts().index[0]
    display(
        dataset.to_table(
            columns=["id", "brand", "reviews.rating", "_source_file"],
            filter=ds.field("brand") == top_brand,
        )
        .to_pandas()
        .head()
    )""",
    ),
    (
        "md",
        """## From a query to data

The whole flow without the portal: `count` says how many records match (API
v4, free: it creates nothing), `create_download` asks for them (every record
costs credits, so `num_records` is always explicit), `wait` polls until the
download is complete, and `load_results` takes the request it returns. Here
the download is created only against the sandbox; with a real token, set
`CREATE = True` when you mean to spend credits.""",
    ),
    (
        "code",
        """from datafiniti_loader import count, create_download

# API v4 counts for free: the same host as the API in use (DATAFINITI_API_URL), on /v4.
api_url = sandbox.api_url if sandbox else os.environ.get("DATAFINITI_API_URL", "")
api_url = api_url or "https://api.datafiniti.co/v3"
v4 = {**connection, "api_url": api_url.rstrip("/").removesuffix("/v3") + "/v4"}
QUERY = "brand:Sony"
count(QUERY, data_type="products", **v4)""",
    ),
    (
        "code",
        """CREATE = sandbox is not None
if CREATE:
    request = create_download(QUERY, data_type="products", num_records=20, **v4)
    with Client(**v4) as api:
        request = api.wait(request)  # queued -> running -> completed
    fresh = load_results(request, **v4)
    print(request.describe())
    print(f"{len(fresh):,} rows, {fresh['id'].nunique()} records")""",
    ),
    (
        "md",
        """Repeated downloads of the same records (a weekly
`dateUpdated:[2026-11-01 TO *]` pull) merge with `dedupe=True`: for each
record `id`, only the rows of the copy with the newest `dateUpdated` stay
(ties: the later download in the list).""",
    ),
    (
        "code",
        """if CREATE:
    merged = load_results([REQUEST_ID, request.id], dedupe=True, **connection)
    print(f"{len(df) + len(fresh):,} rows in the two downloads, {len(merged):,} after dedupe")
    print("rows per request:", merged.groupby("_request_id").size().to_dict())""",
    ),
    (
        "md",
        """## Tidy tables: one row per record, one table per list

A CSV view has one row per review, the product's own fields repeated on each:
`len(df)` counts reviews, not products, and a mean over rows weighs each
product by its number of reviews. `load_tables` gives one row per record and
one table per list of objects (`reviews`, `prices`...), keyed by `_record_id`;
where a record's rows disagree, `conflicts` says so.""",
    ),
    (
        "code",
        """from datafiniti_loader import load_tables

tables = {}
if have(df, "id"):  # tidy tables tell records apart by id
    tables = load_tables(REQUEST_ID, **connection)
    nested = [n for n in tables if n not in ("records", "conflicts")]
    lists = ", ".join(f"{len(tables[n]):,} {n}" for n in nested)
    print(f"{len(df):,} rows in the flat frame; {len(tables['records']):,} records; {lists}")
    display(tables)""",
    ),
    (
        "code",
        """# The mean rating per record, done right: from the reviews, joined to the records.
if "reviews" in tables and have(tables["reviews"], "rating"):
    mean = tables["reviews"].groupby("_record_id")["rating"].mean().rename("mean_rating")
    rated = tables["records"].set_index("id").join(mean)
    display(rated[[c for c in ("name", "brand", "mean_rating") if c in rated.columns]].head())""",
    ),
    (
        "md",
        """## Keeping a dataset current

Result files expire after seven days; a table that absorbs each download
lives on. `to_delta` merges downloads into a Delta Lake table (the `[delta]`
extra): for every record, the copy with the newest `dateUpdated` replaces all
its rows, in one commit; merging a request again changes nothing.""",
    ),
    (
        "code",
        """import importlib.util

import pandas as pd

if importlib.util.find_spec("deltalake") is None:
    print("pip install 'datafiniti-loader[delta]' to run this section")
elif have(df, "id", "dateUpdated"):  # a merge keeps each record's newest copy
    from datafiniti_loader import delta_history, to_delta

    lake = f"{scratch.name}/lake"
    print(to_delta(REQUEST_ID, lake, **connection).describe())
    if CREATE:  # the download created above: the newer copy of every record
        print(to_delta(request.id, lake, **connection).describe())
    print(to_delta(REQUEST_ID, lake, **connection).describe())  # again: nothing changes
    versions = pd.DataFrame(delta_history(lake))
    display(versions[["version", "operation", "request_ids", "rows_inserted"]])""",
    ),
    (
        "md",
        """## Keeping a dataset current from a query

`sync` does the weekly pull: the first run counts the query, buys it and
merges it into a Delta table, remembering the newest `dateUpdated` merged
(the mark). Every later run buys only `(<query>) AND dateUpdated:{<mark> TO *]`:
when nothing changed, it downloads nothing and spends nothing. `confirm` and
`max_records` stop it before any credit is spent.""",
    ),
    (
        "code",
        """if importlib.util.find_spec("deltalake") is not None and CREATE:
    from datafiniti_loader import sync

    synced = f"{scratch.name}/synced"
    first = sync(QUERY, synced, format="csv", max_records=1_000, **v4)
    print(first.describe())
    again = sync(QUERY, synced, format="csv", max_records=1_000, **v4)
    print(again.describe())  # nothing changed since the mark: nothing bought
    display(again)""",
    ),
    (
        "code",
        """client.close()
scratch.cleanup()
if sandbox is not None:
    sandbox.close()""",
    ),
]


def build() -> nbformat.NotebookNode:
    notebook = new_notebook()
    notebook.cells = [
        new_markdown_cell(text) if kind == "md" else new_code_cell(text) for kind, text in CELLS
    ]
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return notebook


def execute(notebook: nbformat.NotebookNode) -> None:
    """Run every cell against the sandbox in a scratch directory and cache (nothing is left)."""
    import os
    import tempfile

    import nbclient

    with tempfile.TemporaryDirectory(prefix="notebook-run-") as scratch:
        os.environ["DATAFINITI_CACHE_DIR"] = os.path.join(scratch, "cache")
        for name in ("DATAFINITI_API_TOKEN", "DATAFINITI_REQUEST_ID"):
            os.environ.pop(name, None)  # the stored run is the sandbox's, whatever the shell has
        client = nbclient.NotebookClient(
            notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": scratch}}
        )
        client.execute()
    notebook.metadata.pop("widgets", None)


if __name__ == "__main__":
    target = Path(__file__).with_name("explore_results.ipynb")
    built = build()
    execute(built)
    nbformat.write(built, target)
    print(f"wrote {target}")
