from datetime import UTC, datetime, timedelta

import pytest

from datafiniti_loader.remote.models import (
    DownloadRequest,
    ResultFile,
    file_name_from_url,
    parse_api_date,
    redact_url,
)

SIGNED = (
    "https://datafiniti-downloads.s3.amazonaws.com/15/7_1.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Security-Token=abc%2Bdef%2F%3D&X-Amz-Signature=deadbeef"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2017-1-11 15:53:00", datetime(2017, 1, 11, 15, 53, tzinfo=UTC)),
        ("2017-1-11", datetime(2017, 1, 11, tzinfo=UTC)),
        ("2017-01-11T15:53:00Z", datetime(2017, 1, 11, 15, 53, tzinfo=UTC)),
        ("2025-03-17T20:00:46.733Z", datetime(2025, 3, 17, 20, 0, 46, 733000, tzinfo=UTC)),
    ],
)
def test_api_dates_in_every_seen_form_are_utc(text: str, expected: datetime) -> None:
    assert parse_api_date(text) == expected


def test_unparseable_date_is_an_error() -> None:
    with pytest.raises(ValueError, match="unrecognised date"):
        parse_api_date("yesterday")


def test_result_file_from_api_names_format_and_expiry() -> None:
    f = ResultFile.from_api(
        {"id": 1, "url": SIGNED, "request_id": 6073, "date_created": "2017-1-11 15:53:00"}, 6073
    )
    assert (f.id, f.request_id, f.name, f.format) == (1, 6073, "7_1.csv", "csv")
    assert f.expires_at == datetime(2017, 1, 18, 15, 53, tzinfo=UTC)
    assert f.is_expired


def test_json_downloads_end_in_txt() -> None:
    f = ResultFile.from_api({"id": 2, "url": "https://b/x/9_1.txt?sig=1"}, 9)
    assert f.format == "json"


def test_repr_and_str_never_show_the_query() -> None:
    f = ResultFile.from_api({"id": 1, "url": SIGNED, "date_created": "2017-1-11"}, 6073)
    for text in (repr(f), str(f), repr([f])):
        assert "Signature" not in text and "Security-Token" not in text and "deadbeef" not in text
        assert "7_1.csv" in text


def test_names_from_urls_cannot_escape_a_directory() -> None:
    assert file_name_from_url("https://b/a/..%2F..%2Fetc%2Fpasswd?x=1", "fallback") == "etc_passwd"
    assert file_name_from_url("https://b/a/..?x=1", "fallback") == "fallback"
    assert "/" not in file_name_from_url("https://b/%2E%2E%2Fx.csv", "f")


def test_redact_url_drops_query_and_fragment() -> None:
    assert (
        redact_url(SIGNED + "#frag") == "https://datafiniti-downloads.s3.amazonaws.com/15/7_1.csv"
    )


def test_download_request_progress_and_states() -> None:
    running = DownloadRequest.from_api(
        {"id": 5, "status": "STARTED", "numDownloaded": 25, "numRequested": 100, "error": ""}
    )
    assert running.progress == 0.25 and not running.is_done and not running.is_failed
    assert "25%" in running.describe() and "STARTED" in running.describe()
    done = DownloadRequest.from_api({"id": 5, "status": "completed"})
    assert done.is_done
    failed = DownloadRequest.from_api({"id": 5, "status": "COMPLETED", "error": "bad query"})
    assert failed.is_failed and not failed.is_done


def test_not_yet_expired_file() -> None:
    now = datetime.now(UTC) - timedelta(days=1)
    f = ResultFile(1, 2, "https://b/2_1.csv", "2_1.csv", "csv", now)
    assert not f.is_expired
