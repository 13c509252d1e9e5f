"""Downloads through fsspec against the strict sandbox bucket."""

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from conftest import Loader
from datafiniti_loader import DownloadError, ResultExpired
from datafiniti_loader.sandbox import Sandbox


def bucket_gets(sandbox: Sandbox) -> list:
    return [e for e in sandbox.log if e.server == "bucket"]


def recorded_sha256(cached: Path) -> str:
    """The SHA-256 the cache recorded for a download."""
    return str(json.loads(cached.with_name(cached.name + ".json").read_text())["sha256"])


def test_one_get_per_file_no_head_no_auth_signature_intact(
    loader: Loader, sandbox: Sandbox, fixture_files
) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    frame = loader.load(rid)
    assert len(frame) > 0
    gets = bucket_gets(sandbox)
    assert [e.method for e in gets] == ["GET", "GET"]
    assert all(e.status == 200 and not e.had_authorization for e in gets)
    assert "+" in sandbox.signer.security_token and "/" in sandbox.signer.security_token


def test_bucket_is_strict_like_s3(sandbox: Sandbox, fixture_files) -> None:
    """The sandbox itself refuses what S3 refuses, so the tests above mean something."""
    import requests

    rid = sandbox.add_request(fixture_files["products"])
    api = requests.get(
        f"{sandbox.api_url}/results/{rid}", auth=(sandbox.token, ""), timeout=5
    ).json()
    url = api[0]["url"]
    assert requests.get(url, timeout=5).status_code == 200
    assert requests.head(url, timeout=5).status_code == 403
    assert requests.get(url, auth=("x", ""), timeout=5).status_code == 400
    requoted = url.replace("%2B", "+").replace("%2F", "/")
    assert requoted != url
    response = requests.get(requoted, timeout=5)
    assert response.status_code == 403 and "SignatureDoesNotMatch" in response.text
    partial = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=5)
    assert partial.status_code == 206 and len(partial.content) == 10 and partial.headers["ETag"]
    sandbox.clock_offset = timedelta(days=8)
    expired = requests.get(url, timeout=5)
    assert expired.status_code == 403 and "Request has expired" in expired.text


def test_dropped_connection_resumes_with_range(
    loader: Loader, sandbox: Sandbox, fixture_files, cache_dir: Path
) -> None:
    source = fixture_files["products"][0]
    rid = sandbox.add_request([source])
    baseline = loader.load(rid, cache=False)
    sandbox.log.clear()
    # cut after 50 kB, then after 120 kB more, then a clean finish
    sandbox.faults.drops.extend([50_000, 120_000])
    resumed = loader.load(rid)
    pd.testing.assert_frame_equal(resumed, baseline)
    gets = bucket_gets(sandbox)
    assert [e.status for e in gets] == [200, 206, 206]
    assert gets[1].range == "bytes=50000-" and gets[2].range == "bytes=170000-"
    (cached,) = cache_dir.rglob(f"*-{rid}_1.csv")
    assert cached.read_bytes() == source.read_bytes()  # the spliced download, byte for byte
    assert recorded_sha256(cached) == hashlib.sha256(source.read_bytes()).hexdigest()


def test_changed_object_restarts_instead_of_splicing(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    copy = tmp_path / "p.csv"
    copy.write_bytes(fixture_files["products"][0].read_bytes())
    rid = sandbox.add_request([copy])
    baseline = loader.load(rid, cache=False)
    sandbox.log.clear()
    served = next(iter(sandbox.objects.values()))
    sandbox.faults.drops.append(40_000)
    # Changed before the first GET, so the resume's If-Range carries the new ETag and
    # is honoured; a change between two tries is the next test's.
    served.etag = '"changed"'
    original_etag_response = loader.load(rid, cache=False)
    pd.testing.assert_frame_equal(original_etag_response, baseline)


def given_up_with_40k_kept(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path
) -> tuple[Path, int]:
    """A copy of a fixture served as a request whose load gave up, keeping 40,000 bytes."""
    copy = tmp_path / "p.csv"
    copy.write_bytes(fixture_files["products"][0].read_bytes())
    rid = sandbox.add_request([copy])
    sandbox.faults.drops.extend([10_000] * 4)
    with pytest.raises(DownloadError, match="40,000 bytes received are kept"):
        loader.load(rid)
    return copy, rid


def test_an_object_changed_between_loads_is_fetched_whole_and_hashed_anew(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path, cache_dir: Path
) -> None:
    copy, rid = given_up_with_40k_kept(loader, sandbox, fixture_files, tmp_path)
    changed = fixture_files["businesses"][0].read_bytes()
    copy.write_bytes(changed)
    served = next(iter(sandbox.objects.values()))
    served.size, served.etag = len(changed), '"changed"'
    sandbox.log.clear()
    loaded = loader.load(rid)
    # the rest was asked for If-Range the kept bytes' ETag; the new object came whole
    assert [(e.status, e.range) for e in bucket_gets(sandbox)] == [(200, "bytes=40000-")]
    (cached,) = cache_dir.rglob(f"*-{rid}_1.csv")
    assert cached.read_bytes() == changed
    assert recorded_sha256(cached) == hashlib.sha256(changed).hexdigest()
    pd.testing.assert_frame_equal(loaded, loader.load(rid, cache=False))


def test_5xx_and_429_on_the_bucket_are_retried(
    loader: Loader, sandbox: Sandbox, fixture_files
) -> None:
    rid = sandbox.add_request(fixture_files["products"][:1])
    sandbox.faults.bucket_errors.extend([(503, 0.01), (429, 0.01), (500, None)])
    assert len(loader.load(rid)) > 0
    assert [e.status for e in bucket_gets(sandbox)] == [503, 429, 500, 200]


def test_persistent_bucket_failure_is_a_download_error(
    loader: Loader, sandbox: Sandbox, fixture_files
) -> None:
    rid = sandbox.add_request(fixture_files["products"][:1])
    sandbox.faults.bucket_errors.extend([(503, None)] * 10)
    with pytest.raises(DownloadError, match=rf"{rid}_1.csv.*after 4 tries"):
        loader.load(rid)


def test_expired_url_is_refreshed_once(loader: Loader, sandbox: Sandbox, fixture_files) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    sandbox.faults.expire_signings = 1  # the first /results hands out expired URLs
    frame = loader.load(rid)
    assert frame["_source_file"].nunique() == 2
    results_calls = [e for e in sandbox.log if e.path == f"/v3/results/{rid}"]
    assert len(results_calls) == 2  # the load's own, plus one refresh for both files
    # A file whose GET starts after the refresh never sees the expired URL, so
    # one or both 403s; never two for one file.
    expired = [e.path for e in bucket_gets(sandbox) if e.status == 403]
    assert 1 <= len(expired) == len(set(expired)) <= 2
    assert sorted(e.path for e in bucket_gets(sandbox) if e.status == 200) == sorted(
        {e.path for e in bucket_gets(sandbox)}
    )


def test_url_that_stays_expired_is_result_expired(
    loader: Loader, sandbox: Sandbox, fixture_files
) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    sandbox.faults.expire_signings = 5
    with pytest.raises(ResultExpired, match="Request the download again"):
        loader.load(rid)


def test_the_bucket_decides_expiry_not_the_clients_clock(
    loader: Loader, sandbox: Sandbox, fixture_files
) -> None:
    # The API reports a date_created 8 days old (no time zone, or a client clock
    # that runs fast), but the bucket still serves the file: it loads.
    rid = sandbox.add_request(
        fixture_files["products"], reported_created=datetime.now(UTC) - timedelta(days=8)
    )
    assert len(loader.load(rid)) == 72
    assert [e.status for e in bucket_gets(sandbox)] == [200, 200]


def test_files_the_bucket_calls_expired_after_a_refresh_are_result_expired(
    loader: Loader, sandbox: Sandbox, fixture_files
) -> None:
    rid = sandbox.add_request(
        fixture_files["products"], created=datetime.now(UTC) - timedelta(days=8)
    )
    with pytest.raises(ResultExpired, match="7 days") as caught:
        loader.load(rid)
    statuses = [e.status for e in bucket_gets(sandbox)]
    assert statuses and set(statuses) == {403}  # the bucket was asked, and said expired
    assert "X-Amz" not in str(caught.value)


@pytest.mark.parametrize(
    ("labelled", "gets"),
    [
        # "Content-Range: bytes 0-19999/N": the first 20,000 bytes, and the bucket
        # says so; the rest is asked for, and nothing is taken as whole.
        (True, [(206, None), (206, "bytes=20000-")]),
        # no Content-Range: which bytes? unknown, so not used: the whole file again
        (False, [(206, None), (200, None)]),
    ],
)
def test_a_206_nobody_asked_for_is_not_taken_as_the_whole_file(
    loader: Loader, sandbox: Sandbox, fixture_files, labelled: bool, gets: list
) -> None:
    rid = sandbox.add_request(fixture_files["products"][:1])
    baseline = loader.load(rid, cache=False)
    sandbox.log.clear()
    sandbox.faults.partial_answers.append((20_000, labelled))
    pd.testing.assert_frame_equal(loader.load(rid, cache=False), baseline)
    assert [(e.status, e.range) for e in bucket_gets(sandbox)] == gets


def test_a_206_without_content_range_every_time_is_a_download_error(
    loader: Loader, sandbox: Sandbox, fixture_files
) -> None:
    rid = sandbox.add_request(fixture_files["products"][:1])
    sandbox.faults.partial_answers.extend([(20_000, False)] * 4)
    with pytest.raises(DownloadError, match="without a usable Content-Range"):
        loader.load(rid, cache=False)


def test_missing_object_is_a_download_error_naming_the_file(
    loader: Loader, sandbox: Sandbox, fixture_files
) -> None:
    rid = sandbox.add_request(fixture_files["products"][:1])
    sandbox.objects.clear()
    with pytest.raises(DownloadError, match=rf"{rid}_1.csv.*HTTP 404 NoSuchKey") as caught:
        loader.load(rid)
    assert "X-Amz" not in str(caught.value) and "?" not in str(caught.value)


@pytest.mark.parametrize(
    ("status", "headers", "body"),
    [
        (204, {}, b""),
        (202, {"Content-Type": "text/csv"}, b""),
        (203, {"Content-Type": "text/csv"}, b"id,name\n1,a\n"),
        (304, {}, b""),
        (300, {"Content-Type": "text/plain"}, b"choose one"),
    ],
)
def test_a_success_status_that_is_not_the_file_is_retried_never_cached(
    loader: Loader, sandbox: Sandbox, fixture_files, cache_dir: Path, status, headers, body
) -> None:
    rid = sandbox.add_request(fixture_files["products"][:1])
    baseline = loader.load(rid, cache=False)
    sandbox.log.clear()
    sandbox.faults.bucket_answers.append((status, headers, body))
    pd.testing.assert_frame_equal(loader.load(rid), baseline)
    assert [e.status for e in bucket_gets(sandbox)] == [status, 200]
    (cached,) = cache_dir.rglob(f"*-{rid}_1.csv")
    assert cached.read_bytes() == fixture_files["products"][0].read_bytes()


def test_a_bucket_that_never_sends_the_file_is_a_download_error_and_caches_nothing(
    loader: Loader, sandbox: Sandbox, fixture_files, cache_dir: Path
) -> None:
    rid = sandbox.add_request(fixture_files["products"][:1])
    sandbox.faults.bucket_answers.extend([(204, {}, b"")] * 4)
    with pytest.raises(DownloadError, match=r"after 4 tries: the bucket answered HTTP 204"):
        loader.load(rid)
    assert not list(cache_dir.rglob(f"*-{rid}_1.csv"))


@pytest.mark.parametrize(
    ("headers", "body", "said"),
    [
        (
            {"Content-Type": "text/html"},
            b"<html><body>Sign in</body></html>",
            r"page \(text/html\)",
        ),
        # labelled as the file, but a page all the same
        ({"Content-Type": "text/csv"}, b"\n<!DOCTYPE html><html>Proxy</html>", "an HTML page"),
        ({"Content-Type": "text/plain"}, b"<?xml version='1.0'?><Error/>", "an XML document"),
    ],
)
def test_a_page_served_with_200_is_not_loaded_as_data(
    loader: Loader, sandbox: Sandbox, fixture_files, cache_dir: Path, headers, body, said
) -> None:
    rid = sandbox.add_request(fixture_files["products"][:1])
    sandbox.faults.bucket_answers.extend([(200, headers, body)] * 4)
    with pytest.raises(DownloadError, match=said):
        loader.load(rid)
    assert not list(cache_dir.rglob(f"*-{rid}_1.csv"))
    sandbox.faults.bucket_answers.append((200, headers, body))  # once only: then the file
    assert len(loader.load(rid)) > 0


def test_a_resume_the_bucket_answers_from_another_version_restarts_from_zero(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path, cache_dir: Path
) -> None:
    copy, rid = given_up_with_40k_kept(loader, sandbox, fixture_files, tmp_path)
    changed = copy.read_bytes().replace(b"e", b"E")  # another version, as long
    copy.write_bytes(changed)
    served = next(iter(sandbox.objects.values()))
    served.etag = '"changed"'
    sandbox.faults.ignore_if_range = True  # answers 206 from byte 40,000 of the new object
    sandbox.log.clear()
    loaded = loader.load(rid)
    assert [(e.status, e.range) for e in bucket_gets(sandbox)] == [
        (206, "bytes=40000-"),
        (200, None),
    ]
    (cached,) = cache_dir.rglob(f"*-{rid}_1.csv")
    assert cached.read_bytes() == changed
    pd.testing.assert_frame_equal(loaded, loader.load(rid, cache=False))


def test_a_body_slower_than_the_minimum_rate_is_cut_off_and_resumed(
    loader: Loader, sandbox: Sandbox, fixture_files
) -> None:
    from datafiniti_loader import RetryPolicy

    rid = sandbox.add_request(fixture_files["products"][:1])
    slow = RetryPolicy(attempts=2, backoff=0.01, read_timeout=10, min_rate=200_000, rate_window=0.3)
    sandbox.faults.throttle = 20_000  # bytes/s: no read timeout would ever fire
    with pytest.raises(
        DownloadError, match=r"after 2 tries: the body arrived at .* under the minimum rate"
    ):
        loader.load(rid, retry=slow)
    gets = bucket_gets(sandbox)
    assert [e.status for e in gets] == [200, 206] and gets[1].range  # the second try resumed
    sandbox.faults.throttle = None
    assert len(loader.load(rid, retry=slow)) == 48
    assert RetryPolicy().min_rate is None  # off unless asked for
