"""Small result files, written by this project, that reproduce the quirks of real ones.

Each quirk of the real Datafiniti files (see the project's README) appears at
least once: BOM, CRLF line ends, CRLF inside quoted cells, no final newline,
leading-zero postal codes, Excel-damaged identifiers (``8.49E+11``), ``N/A``,
comma-joined lists, JSON inside a cell, U+FFFD, mixed ``Z``/``.000Z`` dates,
cells of tens of KB, columns that differ between files, JSON Lines in a
``.txt`` with a long line and a field whose type varies, a pretty-printed
JSON array, and an API envelope with ``records``.

``python -m datafiniti_loader.sandbox.fixtures DIR`` writes them; the copies
in ``data/fixtures/`` are its output, and a test keeps the two identical.
"""

from __future__ import annotations

import csv
import io
import json
import random
import sys
from pathlib import Path
from typing import Any

__all__ = ["FIXTURE_REQUESTS", "write_fixtures", "write_large_csv"]

#: Which fixture files make up which demo request, in result order.
FIXTURE_REQUESTS: dict[str, list[str]] = {
    "products": ["products_1.csv", "products_2.csv"],
    "businesses": ["businesses_1.csv"],
    "products_json": ["products_json_1.txt", "records.json"],
    "properties": ["envelope.json"],
}

_BRANDS = ["Amazon", "Sony", "Nike", "Sanus", "Brother", "Étoile"]
_CATEGORIES = ["Electronics", "Home Audio", "Shoes", "Hotels", "Pizza Place"]
_CITIES = [
    ("Boston", "MA", "02134"),
    ("New York", "NY", "10001"),
    ("Newark", "NJ", "07102"),
    ("Austin", "TX", "78701"),
    ("Hartford", "CT", "06103"),
]


def _csv_bytes(
    header: list[str], rows: list[list[str]], *, bom: bool, crlf: bool, final_newline: bool
) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n" if crlf else "\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(header)
    writer.writerows(rows)
    text = buffer.getvalue()
    if not final_newline:
        text = text.rstrip("\r\n")
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")


def _product_rows(rng: random.Random, first_id: int, records: int) -> list[dict[str, str]]:
    rows = []
    for n in range(records):
        brand = rng.choice(_BRANDS)
        record = {
            "id": f"AV{first_id + n:08d}",
            "name": f"{brand} Model {n}" + ("\r\nSecond line of the name" if n % 4 == 0 else ""),
            "brand": brand,
            "categories": ",".join(rng.sample(_CATEGORIES, 2)),
            "upc": rng.choice(["8.49E+11", "084900000012", "0,0884392589", "N/A"]),
            "ean": f"{rng.randint(1, 9)}.{rng.randint(10000, 99999)}E+11",
            "dateAdded": (
                f"2017-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T0{rng.randint(0, 9)}:15:27Z"
            ),
            # Not drawn from rng: the other values stay as they were before this column.
            "dateUpdated": f"2017-1{n % 3}-0{1 + n % 9}T10:00:00Z",
            "prices": json.dumps([{"amountMax": 19.99, "currency": "USD", "isSale": "false"}]),
            "postalCode": rng.choice(_CITIES)[2],
        }
        for review in range(1 + n % 3):
            long_text = "Great value. " * rng.choice([1, 2, 2400]) if review == 0 else "ok \ufffd"
            row = dict(record)
            row.update(
                {
                    "reviews.date": rng.choice(
                        ["2017-01-11T15:53:00Z", "2017-01-11T15:53:00.000Z"]
                    ),
                    "reviews.rating": str(rng.randint(1, 5)),
                    "reviews.text": long_text.strip(),
                    "reviews.username": rng.choice(["6.02E+26", "Joe", "An\ufffdre", ""]),
                    "prices.amountMax": f"{rng.randint(5, 400)}.{rng.randint(10, 99)}",
                    "prices.isSale": rng.choice(["TRUE", "FALSE"]),
                }
            )
            rows.append(row)
    return rows


def _write_products(directory: Path, rng: random.Random) -> None:
    rows = _product_rows(rng, 1, 24)
    header = list(rows[0])
    (directory / "products_1.csv").write_bytes(
        _csv_bytes(
            header, [[r[h] for h in header] for r in rows], bom=True, crlf=True, final_newline=False
        )
    )
    more = _product_rows(rng, 100, 12)
    header2 = ["primaryCategories", *[h for h in header if h != "ean"][::-1]]
    body = [
        [r.get(h, "Electronics,Media") if h == "primaryCategories" else r[h] for h in header2]
        for r in more
    ]
    (directory / "products_2.csv").write_bytes(
        _csv_bytes(header2, body, bom=False, crlf=False, final_newline=True)
    )


def _write_businesses(directory: Path, rng: random.Random) -> None:
    header = [
        "key",
        "name",
        "address",
        "city",
        "province",
        "postalCode",
        "lat",
        "long",
        "categories",
        "phones",
    ]
    rows = []
    for n in range(30):
        city, state, zip_code = rng.choice(_CITIES)
        rows.append(
            [
                f"us/{state.lower()}/{city.lower()}/{n}main/-{rng.randint(10**8, 10**9)}",
                f"Brewery {n}",
                f"{n} Main St",
                city,
                state,
                f"{zip_code}-{rng.randint(1000, 9999)}" if n % 3 == 0 else zip_code,
                f"{rng.uniform(25, 48):.7f}",
                f"-{rng.uniform(70, 120):.7f}",
                ", ".join(rng.sample(["Brewery", "Bar", "Restaurant", "Pizza Place"], 2)),
                f"[{rng.randint(2000000000, 9999999999)}]",
            ]
        )
    (directory / "businesses_1.csv").write_bytes(
        _csv_bytes(header, rows, bom=False, crlf=True, final_newline=True)
    )


def _product_record(rng: random.Random, n: int, *, long: bool = False) -> dict[str, Any]:
    reviews = [
        {
            "date": "2017-01-11T15:53:00.000Z",
            "rating": rng.randint(1, 5),
            "text": "Nice " * (8000 if long and i == 0 else 3),
            "username": rng.choice(["Joe", "6.02E+26"]),
        }
        for i in range(2 if not long else 40)
    ]
    return {
        "id": f"AVpf{n:06d}",
        "name": f"{rng.choice(_BRANDS)} thing {n}",
        "brand": rng.choice(_BRANDS),
        "categories": rng.sample(_CATEGORIES, 2),
        "dateAdded": f"2017-03-0{rng.randint(1, 9)}T11:12:13Z",
        "prices": [
            {
                "amountMax": 10 + n,
                "amountMin": 9.5 + n,
                "currency": "USD",
                "isSale": False,
                "dateSeen": ["2017-03-01T00:00:00Z"],
            }
        ],
        "reviews": reviews,
        "upc": ["084900000012"] if n % 2 else ["8.49E+11", "N/A"],
        "weight": rng.choice(["1.5 pounds", 1.5, None]) if n % 3 else "N/A",
        "features": [{"key": "Color", "value": ["Black"]}],
    }


def _write_json(directory: Path, rng: random.Random) -> None:
    lines = [
        json.dumps(_product_record(rng, n, long=(n == 3)), ensure_ascii=False) for n in range(8)
    ]
    (directory / "products_json_1.txt").write_text("\n".join(lines), encoding="utf-8")
    records = [_product_record(rng, 100 + n) for n in range(4)]
    for record in records:
        record["weight"] = "2 pounds"
    (directory / "records.json").write_text(
        json.dumps(records, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    properties = [
        {
            "id": f"prop{n}",
            "address": f"{n} Elm St",
            "postalCode": rng.choice(_CITIES)[2],
            "latitude": f"{rng.uniform(25, 48):.6f}",
            "longitude": f"-{rng.uniform(70, 120):.6f}",
            "numBedroom": rng.randint(1, 6),
            "prices": [{"amountMax": 250000 + n, "currency": "USD"}],
            "features": [{"key": "Year Built", "value": [str(1950 + n)]}],
        }
        for n in range(6)
    ]
    envelope = {"num_found": 95378, "total_cost": 6, "records": properties}
    (directory / "envelope.json").write_text(json.dumps(envelope, indent=2), encoding="utf-8")


def write_large_csv(path: str | Path, size: int, *, seed: int = 0) -> Path:
    """Write a Datafiniti-like CSV of about ``size`` bytes (for memory tests and benchmarks).

    A few thousand varied rows (quoted CRLF, leading zeros, ``8.49E+11``,
    long review texts) repeat with fresh ids until the file is big enough.
    """
    rng = random.Random(seed)
    rows = _product_rows(rng, 1, 1500)
    header = list(rows[0])
    marker = "@COPY@"
    template = [[f"{r['id']}-{marker}", *(r[h] for h in header[1:])] for r in rows]
    block = _csv_bytes(header, template, bom=False, crlf=True, final_newline=True)
    block = block.split(b"\r\n", 1)[1]  # rows only: the header is written once
    path = Path(path)
    with open(path, "wb") as out:
        out.write(_csv_bytes(header, [], bom=True, crlf=True, final_newline=True))
        written, copy = 0, 0
        while written < size:
            copy += 1
            data = block.replace(marker.encode(), str(copy).encode())
            out.write(data)
            written += len(data)
    return path


def write_large_json(path: str | Path, size: int, *, seed: int = 0, drift: bool = False) -> Path:
    """Write Datafiniti-like JSON Lines of about ``size`` bytes (memory tests, benchmarks).

    Nested product records (prices, reviews with dates, features), one in
    fifty with 40 reviews and a 40 kB review text, repeat with fresh ids.
    With ``drift``, a review's ``numHelpful`` turns from a number into text in
    the last tenth, as fields of real downloads drift: the whole file then
    holds that field's values as their JSON text.
    """
    rng = random.Random(seed)
    records = [_product_record(rng, n, long=n % 50 == 3) for n in range(200)]
    for record in records:
        record["weight"] = str(record["weight"])  # one type, as in real downloads
    templates = [json.dumps(r, ensure_ascii=False) for r in records]
    path = Path(path)
    written, copy = 0, 0
    with open(path, "w", encoding="utf-8") as out:
        while written < size:
            line = templates[copy % len(templates)]
            drifted = drift and written > size * 0.9 and copy % 7 == 0
            help_field = '"numHelpful": "12+"' if drifted else f'"numHelpful": {copy % 9}'
            line = line.replace('"rating"', help_field + ', "rating"', 1)
            line = line.replace('"id": "AVpf', f'"id": "AV{copy}-', 1) + "\n"
            out.write(line)
            written += len(line.encode())
            copy += 1
    return path


def write_fixtures(directory: str | Path) -> dict[str, list[Path]]:
    """Write every fixture file into ``directory``; return the demo requests' files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(6073)
    _write_products(directory, rng)
    _write_businesses(directory, rng)
    _write_json(directory, rng)
    return {name: [directory / f for f in files] for name, files in FIXTURE_REQUESTS.items()}


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "data/fixtures")
    written = write_fixtures(target)
    print(f"wrote {sum(len(v) for v in written.values())} fixture files to {target}")
