"""The Datafiniti API client: request ids to request status and result files."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .config import resolve_api_url, resolve_token
from .errors import (
    ApiError,
    NoResults,
    RequestFailed,
    RequestNotFound,
    RequestNotReady,
)
from .http import ApiResponse, ApiSession
from .models import DownloadRequest, ResultFile, ResultFiles
from .retry import RetryPolicy

__all__ = ["Client"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Datafiniti's own guides poll every five seconds.
DEFAULT_POLL_INTERVAL = 5.0


def normalize_request_id(request_id: int | str) -> int:
    """Accept ``6073`` or ``"6073"``; refuse anything the API would answer with a 500."""
    try:
        value = int(str(request_id).strip())
    except ValueError:
        value = -1
    if value <= 0:
        raise RequestNotFound(
            f"{request_id!r} is not a Datafiniti request id: expected a positive whole "
            "number such as 6073 (the id in /v3/requests/6073)."
        )
    return value


class Client:
    """Talks to the Datafiniti API (v3) for one token.

    Parameters
    ----------
    token : str, optional
        The API token. Default: ``DATAFINITI_API_TOKEN``, then ``~/.netrc``.
    api_url : str, optional
        Default: ``DATAFINITI_API_URL``, then ``https://api.datafiniti.co/v3``.
    retry : RetryPolicy, optional
        Timeouts and retries of every call.
    poll_interval : float, optional
        Seconds between polls in :meth:`wait` (default 5, as Datafiniti's guides).

    Examples
    --------
    >>> client = Client()                                   # doctest: +SKIP
    >>> [f.name for f in client.results(6073)]              # doctest: +SKIP
    ['6073_1.csv', '6073_2.csv']
    """

    def __init__(
        self,
        token: str | None = None,
        api_url: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        poll_interval: float | None = None,
    ) -> None:
        self.api_url = resolve_api_url(api_url)
        self.retry = retry or RetryPolicy()
        self.poll_interval = DEFAULT_POLL_INTERVAL if poll_interval is None else poll_interval
        #: ``"v3"`` or ``"v4"``, from the API URL's last path segment.
        self.api_version = "v4" if urlsplit(self.api_url).path.rstrip("/").endswith("/v4") else "v3"
        self._http = ApiSession(
            self.api_url,
            resolve_token(token, self.api_url),
            self.retry,
            bearer=self.api_version == "v4",
        )

    def __repr__(self) -> str:
        return f"Client(api_url={self.api_url!r}, token='***')"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release pooled connections."""
        self._http.close()

    def request(self, request_id: int | str) -> DownloadRequest:
        """The download request's status and progress.

        Raises
        ------
        RequestNotFound
            When the API knows no such request.
        """
        rid = normalize_request_id(request_id)
        if self.api_version == "v4":
            download = self._download_v4(rid)
            return _parsed(None, f"downloads/{rid}", lambda: DownloadRequest.from_v4(download))
        response = self._http.get(f"requests/{rid}")
        body = response.body
        if response.status == 404 or (response.status == 200 and body in ([], None)):
            raise RequestNotFound(
                f"Datafiniti has no download request {rid} for this token. Check the id "
                "(it is the number in /v3/requests/ID) and that the token belongs to the "
                "account that made the request."
            )
        record = body[0] if isinstance(body, list) and body else body
        if response.status != 200 or not isinstance(record, dict):
            raise response.unexpected(f"requests/{rid}", "a JSON request record")
        return _parsed(response, f"requests/{rid}", lambda: DownloadRequest.from_api(record))

    def results(self, request_id: int | str) -> list[ResultFile]:
        """The result files of a completed request, ordered by result id.

        Raises
        ------
        RequestNotReady
            The request is still running.
        RequestFailed
            The request ended with an error or was cancelled.
        RequestNotFound
            No such request; :class:`NoResults` when it completed without files.
        """
        rid = normalize_request_id(request_id)
        if self.api_version == "v4":
            return self._results_v4(rid)
        response = self._http.get(f"results/{rid}")
        body = response.body
        if response.status == 200 and isinstance(body, list) and body:
            files = _parsed(response, f"results/{rid}", lambda: _result_files(body, rid))
            return ResultFiles(replace(f, position=n) for n, f in enumerate(files))
        if response.status != 404 and (response.status != 200 or not isinstance(body, list)):
            raise response.unexpected(f"results/{rid}", "a JSON list of result files")
        # Datafiniti answers 404 both for "still running" and "no such request":
        # the request itself says which.
        self._raise_for_state(self.request(rid))
        raise NoResults(
            f"Request {rid} completed but has no result files. A search that matched "
            "no records makes none; check the query, or request the download again."
        )

    def wait(
        self,
        request_id: int | str,
        timeout: float | None = None,
        *,
        on_poll: Callable[[DownloadRequest], None] | None = None,
    ) -> DownloadRequest:
        """Poll until the request completes; return it.

        ``on_poll`` is called with what each poll said (a progress display).

        Raises
        ------
        RequestNotReady
            When ``timeout`` seconds pass first.
        RequestFailed
            When the request ends with an error.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            current = self.request(request_id)
            if on_poll is not None:
                on_poll(current)
            if current.is_done or current.is_failed:
                self._raise_for_state(current)
                return current
            pause = self.poll_interval
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:  # the last poll came at the deadline: the whole timeout was waited
                    raise _not_ready(current, waited=timeout)
                pause = min(pause, left)  # poll once more at the deadline, not before it
            logger.info("%s; polling again in %.0fs", current.describe(), pause)
            time.sleep(pause)

    def _download_v4(self, rid: int) -> dict[str, Any]:
        """API v4 keeps status and result URLs in one download object."""
        response = self._http.get(f"downloads/{rid}")
        if response.status == 404:
            raise RequestNotFound(
                f"Datafiniti has no download {rid} for this token. Check the id and that "
                "the token belongs to the account that made the download."
            )
        if response.status != 200 or not isinstance(response.body, dict):
            raise response.unexpected(f"downloads/{rid}", "a JSON download object")
        return response.body

    def _results_v4(self, rid: int) -> ResultFiles:
        download = self._download_v4(rid)
        # v4 fills "results" while the download runs: only "completed" means done.
        self._raise_for_state(
            _parsed(None, f"downloads/{rid}", lambda: DownloadRequest.from_v4(download))
        )
        urls = download.get("results") or []
        if not urls:
            raise NoResults(f"Download {rid} completed but has no result files.")
        if not isinstance(urls, list):
            raise ApiError(f"The API's download {rid} lists its results as something other "
                           "than a list. Try again later.")  # fmt: skip
        # v4 gives no per-file dates: the download's last update stands for them.
        created = download.get("date_updated")

        def files() -> list[ResultFile]:
            return [
                ResultFile.from_api({"id": n, "url": url, "date_created": created}, rid, n - 1)
                for n, url in enumerate(urls, start=1)
            ]

        return ResultFiles(_parsed(None, f"downloads/{rid}", files))

    @staticmethod
    def _raise_for_state(current: DownloadRequest) -> None:
        if current.is_failed:
            reason = f": {current.error}" if current.error else ""
            raise RequestFailed(
                f"Download request {current.id} ended as {current.status}{reason}. "
                "Fix the query if needed and request the download again."
            )
        if not current.is_done:
            raise _not_ready(current)


def _not_ready(current: DownloadRequest, waited: float | None = None) -> RequestNotReady:
    if waited is None:
        advice = "Try again later, or pass wait=True (--wait) to poll until it is done."
        after = ""
    else:
        advice = "Wait longer (a larger timeout), or try again later."
        after = f" after waiting {waited:g}s"
    return RequestNotReady(
        f"Datafiniti is still preparing the download: {current.describe()}{after}. {advice}",
        status_text=current.status,
        progress=current.progress,
    )


def _result_files(body: list[Any], rid: int) -> list[ResultFile]:
    """Result files in load order: by id (files without one first), then as the API listed them."""
    files = []
    for raw in body:
        if not isinstance(raw, dict):
            raise ValueError(f"an element is a JSON {type(raw).__name__}, not an object")
        files.append(ResultFile.from_api(raw, rid))
    return sorted(files, key=lambda f: f.id)


def _parsed(response: ApiResponse | None, path: str, build: Callable[[], _T]) -> _T:
    """``build()``, with a field the API got wrong turned into an :class:`ApiError`."""
    problem = ""
    try:
        return build()
    except (ValueError, TypeError, OverflowError) as exc:
        problem = str(exc)[:200]
    status = f" (HTTP {response.status})" if response is not None else ""
    raise ApiError(
        f"The API's answer to /{path}{status} is not what Datafiniti sends: {problem}. "
        "Check the API URL (DATAFINITI_API_URL or api_url=); if it is right, try again later."
    )
