"""data/fixtures is exactly what the fixture generator writes, so the two cannot drift."""

from pathlib import Path

from conftest import FIXTURES
from datafiniti_loader.sandbox.fixtures import FIXTURE_REQUESTS, write_fixtures


def test_committed_fixtures_match_the_generator(tmp_path: Path) -> None:
    target = tmp_path / "generated"
    write_fixtures(target)
    names = sorted({f for files in FIXTURE_REQUESTS.values() for f in files})
    assert sorted(p.name for p in target.iterdir()) == names
    for name in names:
        assert (FIXTURES / name).read_bytes() == (target / name).read_bytes(), name


def test_fixtures_carry_the_real_quirks() -> None:
    products = (FIXTURES / "products_1.csv").read_bytes()
    assert products.startswith(b"\xef\xbb\xbf") and not products.endswith(b"\n")
    assert b'\r\nSecond line of the name"' in products  # CRLF inside a quoted cell
    assert b",02134," in products and b"8.49E+11" in products and b"N/A" in products
    assert (
        "\ufffd".encode() in products
        and b"T15:53:00.000Z" in products
        and b"T15:53:00Z" in products
    )
    assert max(len(cell) for cell in products.split(b",")) > 25_000
    lines = (FIXTURES / "products_json_1.txt").read_bytes().split(b"\n")
    assert max(map(len, lines)) > 40_000 and lines[-1].endswith(b"}")
