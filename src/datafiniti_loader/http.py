"""The HTTP layer for the Datafiniti API: auth, timeouts, retries, error mapping.

Every API call goes through :class:`ApiSession`. The token travels only to the
API host: requests drops the ``Authorization`` header when a redirect leaves
the host, and the file transport never sees the session at all.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any
from urllib.parse import urlsplit

import requests

from ._version import __version__
from .config import ca_bundle
from .errors import ApiError, AuthenticationError, DatafinitiError
from .retry import RETRYABLE_STATUSES, RetryPolicy

__all__ = ["ApiResponse", "ApiSession", "scrub"]

logger = logging.getLogger(__name__)

_HEAD_CHARS = 120
_URL_QUERY = re.compile(r"(https?://[^\s\"'<>?]*)\?[^\s\"'<>]*")


def scrub(text: str, *secrets: str) -> str:
    """``text`` without URL query strings (signatures) and without ``secrets`` (the token)."""
    text = _URL_QUERY.sub(r"\1?...", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class ApiResponse:
    """One API answer: status, decoded JSON body (``None`` when not JSON) and how it looked.

    ``content_type`` and ``head`` (its first characters, with URL queries and
    the token removed) let an error say what came back instead of JSON.
    """

    def __init__(self, status: int, body: Any, content_type: str = "", head: str = "") -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.head = head

    def message(self) -> str:
        """The server's own words, if it gave any."""
        if isinstance(self.body, dict):
            return str(self.body.get("message") or self.body.get("error") or "")[:200]
        return ""

    def unexpected(self, path: str, what: str) -> ApiError:
        """An :class:`ApiError` saying that ``/path`` answered something other than ``what``."""
        kind = self.content_type or "no content type"
        shown = " ".join(self.head.split())
        return ApiError(
            f"The API's answer to /{path} is not what Datafiniti sends ({what} expected; got "
            f"HTTP {self.status}, {kind}, starting {shown!r}). Check the API URL "
            "(DATAFINITI_API_URL or api_url=) and any proxy between you and Datafiniti; if "
            "they are right, Datafiniti's API may be having trouble: try again later.",
            status=self.status,
        )


class ApiSession:
    """A ``requests`` session bound to one API base URL and one token.

    Retries 429, 5xx and connection failures per ``policy``; maps 401/403 to
    :class:`AuthenticationError`; returns every other status to the caller,
    which knows what a 404 means for its endpoint.
    """

    def __init__(
        self, api_url: str, token: str, policy: RetryPolicy | None = None, *, bearer: bool = False
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.policy = policy or RetryPolicy()
        self._session = requests.Session()
        if bearer:  # API v4
            self._session.headers["Authorization"] = f"Bearer {token}"
        else:  # API v3: HTTP Basic, the token as user name, no password
            self._session.auth = (token, "")
        self._session.headers["User-Agent"] = f"datafiniti-loader/{__version__}"
        self._session.headers["Accept"] = "application/json"
        self._session.verify = ca_bundle() or True
        self._host = urlsplit(self.api_url).netloc
        self._token = token

    def __repr__(self) -> str:
        return f"ApiSession(api_url={self.api_url!r}, token='***')"

    def __getstate__(self) -> None:
        raise TypeError("ApiSession holds a token and is not pickled; pass settings instead")

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    def get(self, path: str) -> ApiResponse:
        """GET ``{api_url}/{path}`` and return its status and JSON body.

        Raises
        ------
        AuthenticationError
            On 401 or 403.
        DatafinitiError
            When the API cannot be reached, or keeps failing, after all retries.
        """
        url = f"{self.api_url}/{path.lstrip('/')}"
        for attempt in range(self.policy.attempts):
            last_try = attempt == self.policy.attempts - 1
            response, failure = self._send(url)
            if failure is not None:
                if isinstance(failure, DatafinitiError):
                    raise failure
                if last_try:
                    raise DatafinitiError(
                        f"Could not reach the Datafiniti API at {self._host} after "
                        f"{self.policy.attempts} tries ({failure}). Check your "
                        "network, proxy settings (HTTPS_PROXY) and the API URL."
                    )
                wait = self.policy.delay(attempt)
                logger.debug("GET /%s failed (%s); retrying in %.2fs", path, failure, wait)
                time.sleep(wait)
                continue
            assert response is not None
            status = response.status_code
            logger.debug("GET /%s -> %d", path, status)
            if status in RETRYABLE_STATUSES and not last_try:
                wait = self.policy.delay(attempt, response.headers.get("Retry-After"))
                logger.debug("retrying GET /%s in %.2fs after HTTP %d", path, wait, status)
                response.close()
                time.sleep(wait)
                continue
            return self._finish(path, response)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, url: str) -> tuple[requests.Response | None, DatafinitiError | str | None]:
        """One GET: the response, or what went wrong (a typed error, or a retryable reason).

        Failures are returned, not raised from inside ``except``, so that no
        exception of requests (which holds the request and its auth header)
        rides along as ``__context__``.
        """
        timeout = (self.policy.connect_timeout, self.policy.read_timeout)
        failure: DatafinitiError | str
        try:
            return self._session.get(url, timeout=timeout, allow_redirects=True), None
        except requests.exceptions.SSLError:
            failure = DatafinitiError(
                f"TLS certificate verification failed for {self._host}. If a proxy or "
                "firewall inspects TLS, point REQUESTS_CA_BUNDLE (or SSL_CERT_FILE) at "
                "its CA certificate."
            )
        except requests.TooManyRedirects:
            failure = ApiError(
                f"The API at {self._host} kept redirecting (more than 30 times). Check the "
                "API URL (DATAFINITI_API_URL or api_url=) and any proxy in between."
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            failure = type(exc).__name__
        except requests.RequestException as exc:
            failure = ApiError(
                f"Could not ask the API at {self._host} ({type(exc).__name__}). Check the "
                "API URL (DATAFINITI_API_URL or api_url=) and proxy settings."
            )
        return None, failure

    def _finish(self, path: str, response: requests.Response) -> ApiResponse:
        try:
            body = response.json()
        except (ValueError, RecursionError):
            body = None
        head = scrub(response.text[:_HEAD_CHARS], self._token)
        result = ApiResponse(
            response.status_code, body, response.headers.get("Content-Type", ""), head
        )
        if response.status_code in (401, 403):
            detail = result.message()
            raise AuthenticationError(
                f"The Datafiniti API refused the token (HTTP {response.status_code}"
                f"{': ' + detail if detail else ''}). Check DATAFINITI_API_TOKEN or the "
                "token= argument; tokens are listed in Datafiniti's web portal.",
                status=response.status_code,
            )
        if response.status_code in RETRYABLE_STATUSES:
            raise DatafinitiError(
                f"The Datafiniti API kept failing for /{path} (HTTP {response.status_code}) "
                f"after {self.policy.attempts} tries. Try again later.",
                status=response.status_code,
            )
        return result
