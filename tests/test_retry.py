from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from datafiniti_loader.retry import RetryPolicy, parse_retry_after


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (parse_retry_after(later) or 0) <= 31


def test_delay_honours_retry_after_up_to_the_cap() -> None:
    policy = RetryPolicy(backoff=1, max_delay=10)
    assert policy.delay(0, "4") == 4
    assert policy.delay(0, "400") == 10


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(backoff=1, max_delay=5)
    first = [policy.delay(0) for _ in range(200)]
    late = [policy.delay(6) for _ in range(200)]
    assert all(0 <= d <= 1 for d in first)
    assert all(0 <= d <= 5 for d in late) and max(late) > 1
    assert len(set(first)) > 100  # jittered, not a fixed schedule
