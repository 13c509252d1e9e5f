"""One retry policy for every network call: which failures to retry, and how long to wait.

The API client and the file transport (both on requests) ask this module,
so a 429 from the API and a 503 from the bucket are treated alike.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["RETRYABLE_STATUSES", "RetryPolicy"]

#: Statuses worth another try: rate limits and server-side trouble.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, a cap, and respect for ``Retry-After``.

    Parameters
    ----------
    attempts : int
        Tries in all, the first included.
    backoff : float
        Base delay in seconds; the n-th retry waits up to ``backoff * 2**n``.
    max_delay : float
        No wait is longer than this, ``Retry-After`` included.
    connect_timeout, read_timeout : float
        Seconds to connect, and seconds of silence while reading. There is
        deliberately no total timeout: a large file may take long to arrive.
    min_rate : float or None
        Bytes per second a download must keep up, measured over each
        ``rate_window`` seconds; a slower body (a server dripping a byte at a
        time, which no read timeout catches) is cut off and tried again,
        resuming from the bytes it brought. ``None`` (the default): no minimum.
    rate_window : float
        Seconds over which ``min_rate`` is measured.
    """

    attempts: int = 5
    backoff: float = 0.5
    max_delay: float = 30.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    min_rate: float | None = None
    rate_window: float = 60.0

    def delay(self, retry: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based)."""
        hinted = parse_retry_after(retry_after)
        if hinted is not None:
            return min(self.max_delay, hinted)
        return random.uniform(0, min(self.max_delay, self.backoff * 2**retry))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
