"""The HTTP layer for the Datafiniti API: auth, timeouts, retries, error mapping.

Every API call goes through :class:`ApiSession`. The token travels only to the
API host: requests drops the ``Authorization`` header when a redirect leaves
the host, and the file transport never sees the session at all.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3

from .._version import __version__
from ..config import ca_bundle, unsafe_hop
from ..errors import (
    ApiError,
    AuthenticationError,
    ConfigurationError,
    DatafinitiError,
    DownloadMayExist,
    RequestNotFound,
    register_secret,
    scrub,
)
from ..retry import RETRYABLE_STATUSES, RetryPolicy

__all__ = ["ApiResponse", "ApiSession"]

logger = logging.getLogger(__name__)

_HEAD_CHARS = 120
#: The largest API answer read: a listing of thousands of result files is a
#: few megabytes; a larger body is a proxy's or a hostile server's, not Datafiniti's.
MAX_BODY_BYTES = 32 * 1024 * 1024


class ApiResponse:
    """One API answer: status, decoded JSON body (``None`` when not JSON) and how it looked.

    ``content_type`` and ``head`` (its first characters, with URL queries and
    the token removed) let an error say what came back instead of JSON;
    ``said`` is the server's own error message, scrubbed the same way.
    """

    def __init__(
        self,
        status: int,
        body: Any,
        content_type: str = "",
        head: str = "",
        said: str = "",
        location: str = "",
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.head = head
        self.said = said
        #: A redirect's target (path and query removed of secrets), for v3's 303.
        self.location = location

    def message(self) -> str:
        """The server's own words, if it gave any."""
        return self.said

    def expect(
        self,
        path: str,
        what: str,
        *,
        kind: type | tuple[type, ...] = dict,
        ok: tuple[int, ...] = (200,),
        not_found: str | None = None,
        refused: str = (
            "A 400 to this call means the server is not Datafiniti's API: check the API URL "
            "(DATAFINITI_API_URL, api_url= or --api-url)."
        ),
    ) -> Any:
        """The body, when the status is in ``ok`` and the body is a ``kind``; else a typed error.

        The one place that turns an endpoint's unexpected answer into an
        error: 404 into :class:`RequestNotFound` (with ``not_found`` as the
        message) where the endpoint means "no such request", 400 into an
        :class:`ApiError` with Datafiniti's reason and ``refused`` (what to do:
        the arguments of a search, the API URL of a status call), anything
        else into an :class:`ApiError` describing what came back.
        """
        if self.status == 404 and not_found is not None:
            raise RequestNotFound(not_found, status=404)
        if self.status == 400:
            reason = self.said or "no reason given"
            raise ApiError(
                f"Datafiniti refused /{path} (HTTP 400: {reason}). {refused}", status=400
            )
        if self.status not in ok or not isinstance(self.body, kind):
            raise self.unexpected(path, what)
        return self.body

    def unexpected(self, path: str, what: str) -> ApiError:
        """An :class:`ApiError` saying that ``/path`` answered something other than ``what``."""
        kind = self.content_type or "no content type"
        shown = " ".join(self.head.split())
        return ApiError(
            f"The API's answer to /{path} is not what Datafiniti sends ({what} expected; got "
            f"HTTP {self.status}, {kind}, starting {shown!r}). Check the API URL "
            "(DATAFINITI_API_URL, api_url= or --api-url) and any proxy between you and "
            "Datafiniti; if they are right, Datafiniti's API may be having trouble: try again "
            "later.",
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
        self._session = _ApiHttpSession()
        if bearer:  # API v4
            self._session.headers["Authorization"] = f"Bearer {token}"
        else:  # API v3: HTTP Basic, the token as user name, no password
            self._session.auth = (token, "")
        self._session.headers["User-Agent"] = f"datafiniti-loader/{__version__}"
        self._session.headers["Accept"] = "application/json"
        self._session.verify = ca_bundle() or True
        self._host = urlsplit(self.api_url).netloc
        self._token = token
        register_secret(token)

    def __repr__(self) -> str:
        return f"ApiSession(api_url={self.api_url!r}, token='***')"

    def __getstate__(self) -> None:
        raise TypeError("ApiSession holds a token and is not pickled; pass settings instead")

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    def get(self, path: str, params: dict[str, str] | None = None) -> ApiResponse:
        """GET ``{api_url}/{path}`` (safe to repeat: retried on 429, 5xx and lost connections)."""
        return self.call("GET", path, params=params)

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        follow_redirects: bool = True,
        spends: bool = False,
    ) -> ApiResponse:
        """Send one API call and return its status and JSON body.

        ``spends=True`` marks a call that may create a download (and spend
        credits): it is repeated only when the API cannot have acted on it
        (HTTP 429, or no connection was made), never after a lost answer.

        Raises
        ------
        AuthenticationError
            On 401 or 403.
        DatafinitiError
            When the API cannot be reached, or keeps failing, after all retries.
        """
        url = f"{self.api_url}/{path.lstrip('/')}"
        retryable = {429} if spends else RETRYABLE_STATUSES
        for attempt in range(self.policy.attempts):
            last_try = attempt == self.policy.attempts - 1
            response, failure = self._send(method, url, params, json, follow_redirects)
            if failure is not None:
                if isinstance(failure, DatafinitiError):
                    raise failure
                reason, sent = failure
                if sent and spends:
                    raise _maybe_created(
                        f"The connection to {self._host} failed after {method} /{path} was "
                        f"sent ({reason})"
                    )
                if last_try:
                    raise DatafinitiError(
                        f"Could not reach the Datafiniti API at {self._host} after "
                        f"{self.policy.attempts} tries ({reason}). Check your "
                        "network, proxy settings (HTTPS_PROXY) and the API URL."
                    )
                wait = self.policy.delay(attempt)
                logger.debug("%s /%s failed (%s); retrying in %.2fs", method, path, reason, wait)
                time.sleep(wait)
                continue
            assert response is not None
            status = response.status_code
            logger.debug("%s /%s -> %d", method, path, status)
            if spends and status in RETRYABLE_STATUSES and status not in retryable:
                response.close()
                raise _maybe_created(
                    f"Datafiniti answered {method} /{path} with HTTP {status}", status
                )
            if status in retryable and not last_try:
                wait = self.policy.delay(attempt, response.headers.get("Retry-After"))
                logger.debug("retrying %s /%s in %.2fs after HTTP %d", method, path, wait, status)
                response.close()
                time.sleep(wait)
                continue
            return self._finish(path, response)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(
        self,
        method: str,
        url: str,
        params: dict[str, str] | None,
        json: dict[str, Any] | None,
        follow_redirects: bool,
    ) -> tuple[requests.Response | None, DatafinitiError | tuple[str, bool] | None]:
        """One call: the response, or what went wrong.

        What went wrong is a typed error, or a retryable reason and whether
        the call may have reached the API. Failures are returned, not raised
        from inside ``except``, so that no exception of requests (which holds
        the request and its auth header) rides along as ``__context__``.
        """
        timeout = (self.policy.connect_timeout, self.policy.read_timeout)
        failure: DatafinitiError | tuple[str, bool]
        try:
            response = self._session.request(
                method,
                url,
                params=params,
                json=json,
                timeout=timeout,
                allow_redirects=follow_redirects,
                stream=True,  # read by _finish, up to MAX_BODY_BYTES
            )
            return response, None
        except requests.exceptions.SSLError as exc:
            if _not_tls(exc):
                failure = ConfigurationError(
                    f"The server at {self._host} does not speak TLS (https://): it answered in "
                    "plain text. Check the API URL's scheme and port (DATAFINITI_API_URL, "
                    "api_url= or --api-url)."
                )
            else:
                failure = DatafinitiError(
                    f"TLS certificate verification failed for {self._host}. If a proxy or "
                    "firewall inspects TLS, point REQUESTS_CA_BUNDLE (or SSL_CERT_FILE) at "
                    "its CA certificate."
                )
        except requests.TooManyRedirects:
            failure = ApiError(
                f"The API at {self._host} kept redirecting (more than 30 times). Check the "
                "API URL (DATAFINITI_API_URL, api_url= or --api-url) and any proxy in between."
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            failure = (type(exc).__name__, not _never_connected(exc))
        except requests.RequestException as exc:
            failure = ApiError(
                f"Could not ask the API at {self._host} ({type(exc).__name__}). Check the "
                "API URL (DATAFINITI_API_URL, api_url= or --api-url) and proxy settings."
            )
        return None, failure

    def _finish(self, path: str, response: requests.Response) -> ApiResponse:
        raw = self._read_body(path, response)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            body = None
        text = raw[: _HEAD_CHARS * 4].decode(response.encoding or "utf-8", "replace")
        head = scrub(text[:_HEAD_CHARS], self._token)
        said = ""
        if isinstance(body, dict):
            said = scrub(str(body.get("message") or body.get("error") or "")[:200], self._token)
        result = ApiResponse(
            response.status_code,
            body,
            response.headers.get("Content-Type", ""),
            head,
            said,
            scrub(response.headers.get("Location", ""), self._token),
        )
        if response.status_code in (401, 403):
            detail = result.message()
            raise AuthenticationError(
                f"The Datafiniti API refused the token (HTTP {response.status_code}"
                f"{': ' + detail if detail else ''}). Check DATAFINITI_API_TOKEN or the "
                "token= argument (--token); tokens are listed in Datafiniti's web portal.",
                status=response.status_code,
            )
        if response.status_code in RETRYABLE_STATUSES:
            raise DatafinitiError(
                f"The Datafiniti API kept failing for /{path} (HTTP {response.status_code}) "
                f"after {self.policy.attempts} tries. Try again later.",
                status=response.status_code,
            )
        return result

    def _read_body(self, path: str, response: requests.Response) -> bytes:
        """The answer's body (decompressed), refused past :data:`MAX_BODY_BYTES`."""
        failure: DatafinitiError
        try:
            body = response.raw.read(MAX_BODY_BYTES + 1, decode_content=True)
            if len(body) <= MAX_BODY_BYTES:
                return bytes(body)  # read to its end: the connection goes back to the pool
            response.close()
            failure = ApiError(
                f"The API's answer to /{path} is larger than {MAX_BODY_BYTES >> 20} MB, far "
                "beyond what Datafiniti sends; it was not read further. Check the API URL "
                "(DATAFINITI_API_URL, api_url= or --api-url) and any proxy in between.",
                status=response.status_code,
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            response.close()
            failure = DatafinitiError(
                f"The connection to {self._host} broke while reading the answer to /{path} "
                f"({type(exc).__name__}). Try again."
            )
        raise failure


class _ApiHttpSession(requests.Session):
    """requests' session, refusing redirects where no API call may go (before following them)."""

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: Any) -> None:
        reason = unsafe_hop(str(response.url), str(prepared_request.url))
        if reason:
            response.close()
            raise ApiError(
                f"The API's redirect {reason}; it was not followed. Check the API URL "
                "(DATAFINITI_API_URL, api_url= or --api-url) and any proxy in between."
            )
        # requests drops the token when the redirect leaves the API's host
        super().rebuild_auth(prepared_request, response)  # type: ignore[no-untyped-call]


def _not_tls(exc: BaseException) -> bool:
    """Whether a TLS failure came from a server that answered in plain text (a wrong port).

    requests' message carries OpenSSL's reason for the failed handshake.
    """
    text = str(exc).lower()
    return any(sign in text for sign in ("wrong version number", "record layer failure"))


def _maybe_created(what: str, status: int | None = None) -> DatafinitiError:
    """A call that may have created a download failed: say why it is not sent again."""
    return DownloadMayExist(
        f"{what}, so Datafiniti may or may not have created the download. Look at your "
        "downloads (Datafiniti's portal) before asking again: a second download spends "
        "credits again.",
        status=status,
    )


def _never_connected(exc: BaseException) -> bool:
    """True when ``exc`` happened before any byte of the call left (safe to send again).

    requests wraps urllib3's ``NewConnectionError`` in a ``MaxRetryError``
    (its ``reason``) inside its own ``ConnectionError`` (its first argument).
    """
    seen: object = exc
    for _ in range(4):  # that deep at most
        if isinstance(seen, requests.ConnectTimeout | urllib3.exceptions.NewConnectionError):
            return True
        if not isinstance(seen, BaseException):
            return False
        seen = getattr(seen, "reason", None) or (seen.args[0] if seen.args else None)
    return False
