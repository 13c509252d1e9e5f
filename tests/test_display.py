from datetime import UTC, datetime, timedelta

from datafiniti_loader.display import expires_in, files_table
from datafiniti_loader.remote.models import DownloadRequest, ResultFile, ResultFiles

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SIGNED = "https://bucket/6073/6073_1.csv?X-Amz-Signature=abc&X-Amz-Security-Token=x%2By"


def result(created: datetime, rid: int = 1) -> ResultFile:
    return ResultFile(rid, 6073, SIGNED, f"6073_{rid}.csv", "csv", created)


def test_expires_in_reads_like_a_person_wrote_it() -> None:
    assert expires_in(result(NOW), NOW) == "7d 0h"
    assert expires_in(result(NOW - timedelta(days=6, hours=21)), NOW) == "3h 0m"
    assert expires_in(result(NOW - timedelta(days=6, hours=23, minutes=15)), NOW) == "45m"
    assert expires_in(result(NOW - timedelta(days=8)), NOW) == "expired"


def test_text_and_html_tables_show_files_without_secrets() -> None:
    files = ResultFiles([result(NOW, 1), result(NOW - timedelta(days=8), 2)])
    text = files_table(files, NOW)
    assert text.splitlines()[0].split()[:3] == ["ID", "NAME", "FORMAT"]
    assert "6073_2.csv" in text and "expired" in text
    page = files._repr_html_()
    assert (
        page.startswith("<table>") and "<td>6073_1.csv</td>" in page and "<td>expired</td>" in page
    )
    for shown in (text, page, str(files), files[0]._repr_html_(), repr(files)):
        assert "X-Amz" not in shown and "abc" not in shown
    assert isinstance(files, list) and files == [files[0], files[1]]


def test_request_html_and_repr() -> None:
    request = DownloadRequest(
        6073, "STARTED", num_requested=200, num_downloaded=50, data_type="products"
    )
    page = request._repr_html_()
    assert "STARTED" in page and "25%" in page and "50 of 200" in page
    assert "DownloadRequest(id=6073, status='STARTED'" in repr(request)


def test_html_escapes_names() -> None:
    odd = ResultFile(1, 1, "https://b/x", "<b>x</b>.csv", "csv", NOW)
    assert "<b>x</b>" not in odd._repr_html_() and "&lt;b&gt;" in odd._repr_html_()
