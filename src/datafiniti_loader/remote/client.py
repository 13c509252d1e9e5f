"""The Datafiniti API client: request ids to request status and result files."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import replace

from ..config import resolve_api_url, resolve_token, unsafe_hop
from ..errors import (
    ApiError,
    NoResults,
    RequestFailed,
    RequestNotFound,
    RequestNotReady,
)
from ..retry import RetryPolicy
from .http import ApiSession
from .models import DownloadRequest, ResultFiles
from .versions import Query, for_url

__all__ = ["Client"]

logger = logging.getLogger(__name__)

#: Datafiniti's own guides poll every five seconds.
DEFAULT_POLL_INTERVAL = 5.0


def normalize_request_id(request_id: int | str | DownloadRequest) -> int:
    """Accept ``6073``, ``"6073"`` or a :class:`DownloadRequest`; refuse anything else."""
    if isinstance(request_id, DownloadRequest):
        return request_id.id
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


def poll_pause(polls: int, longest: float) -> float:
    """Seconds to wait after poll number ``polls`` (0-based): 1, 2, 4, then ``longest``.

    Small downloads finish in seconds: a fixed five-second pause (Datafiniti's
    guidance) would hold them up; large ones settle at the guidance.
    """
    return min(longest, 2.0 ** min(polls, 10))


class Client:
    """Talks to the Datafiniti API (v3 or v4, from ``api_url``) for one token.

    Parameters
    ----------
    token : str, optional
        The API token. Default: ``DATAFINITI_API_TOKEN``, then ``~/.netrc``.
    api_url : str, optional
        Default: ``DATAFINITI_API_URL``, then ``https://api.datafiniti.co/v3``.
    retry : RetryPolicy, optional
        Timeouts and retries of every call.
    poll_interval : float, optional
        The longest pause between polls in :meth:`wait` (default 5 s, as
        Datafiniti's guides; the first polls come sooner: after 1, 2 and 4 s).

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
        self._version = for_url(self.api_url)
        #: ``"v3"`` or ``"v4"``, from the API URL's last path segment.
        self.api_version = self._version.name
        token = resolve_token(token, self.api_url)
        self._http = ApiSession(self.api_url, token, self.retry, bearer=self._version.bearer)

    def __repr__(self) -> str:
        return f"Client(api_url={self.api_url!r}, token='***')"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release pooled connections."""
        self._http.close()

    def request(self, request_id: int | str | DownloadRequest) -> DownloadRequest:
        """The download request's status and progress.

        Raises
        ------
        RequestNotFound
            When the API knows no such request.
        """
        return self._version.request(self._http, normalize_request_id(request_id))

    def results(self, request_id: int | str | DownloadRequest) -> ResultFiles:
        """The result files of a completed request, in load order.

        Raises
        ------
        RequestNotReady
            The request is still running.
        RequestFailed
            The request ended with an error, or was cancelled before writing
            any file (a cancelled download's files are returned, with a WARNING:
            they stay, and are charged).
        RequestNotFound
            No such request; :class:`NoResults` when it completed without files.
        """
        rid = normalize_request_id(request_id)
        listing = self._version.results(self._http, rid)
        if listing.request is not None:  # v4 fills files in while running: status decides
            if listing.request.is_cancelled and listing.files:
                logger.warning(
                    "download request %d was cancelled: loading the %d file(s) it wrote before "
                    "(%d of %d records; they are charged)", rid, len(listing.files),
                    listing.request.num_downloaded, listing.request.num_requested,
                )  # fmt: skip
            else:
                self._raise_for_state(listing.request)
        for file in listing.files:
            reason = unsafe_hop(self.api_url, file.url)
            if reason:
                raise ApiError(
                    f"Result {file.name} of request {rid} {reason}; nothing was downloaded "
                    "from it. Check the API URL (DATAFINITI_API_URL, api_url= or --api-url)."
                )
        if listing.files:
            return ResultFiles(replace(f, position=n) for n, f in enumerate(listing.files))
        # No files: the request says whether it runs, failed, or has none.
        self._raise_for_state(listing.request or self.request(rid))
        raise NoResults(
            f"Request {rid} completed but has no result files. A search that matched "
            "no records makes none; check the query, or request the download again."
        )

    def count(self, query: str, *, data_type: str = "products") -> int:
        """How many records match ``query``: no download is made and no credits are spent.

        Needs API v4 (a search for zero records); on v3 raises
        :class:`ConfigurationError`.
        """
        return self._version.count(self._http, Query.checked(query, data_type, 1))

    def create_download(
        self,
        query: str,
        *,
        data_type: str = "products",
        num_records: int | str,
        format: str = "csv",
        view: str | None = None,
    ) -> DownloadRequest:
        """Ask Datafiniti for a download of the records matching ``query``; return the request.

        Parameters
        ----------
        query : str
            A Datafiniti query, e.g. ``'categories:hotels AND country:US'``.
        data_type : {"products", "businesses", "properties", "people"}
        num_records : int or "all"
            How many records to download. Required: every record costs
            credits; ``"all"`` asks for every match, explicitly.
        format : {"csv", "json"}
        view : str, optional
            A view name (``product_flat_prices`` on v4, ``products_all`` on v3).

        Notes
        -----
        The call is sent once: if the connection fails after it left, the
        error says so instead of asking again (a second download would be
        charged again). Poll with :meth:`wait`, then load with
        :func:`~datafiniti_loader.load_results`.
        """
        wanted = Query.checked(query, data_type, num_records, format, view)
        created = self._version.create(self._http, wanted)
        logger.info("created download request %d (%s)", created.id, wanted.text[:80])
        return created

    def cancel(self, request_id: int | str | DownloadRequest) -> DownloadRequest:
        """Cancel a running download (API v4); return its state afterwards.

        Records already written stay retrievable, and are charged.
        """
        rid = normalize_request_id(request_id)
        said = self._version.cancel(self._http, rid)
        return said if said is not None else self.request(rid)

    def downloads(self, limit: int | None = None) -> list[DownloadRequest]:
        """The account's download requests, newest first (at most ``limit``).

        v3 ``GET /requests``, v4 ``GET /downloads``. Newest is by start date
        as the API gives it, then by id.
        """
        found = self._version.downloads(self._http)
        newest = sorted(
            found,
            key=lambda r: (r.date_started.timestamp() if r.date_started else float("-inf"), r.id),
            reverse=True,
        )
        return newest if limit is None else newest[: max(0, limit)]

    def wait(
        self,
        request_id: int | str | DownloadRequest,
        timeout: float | None = None,
        *,
        on_poll: Callable[[DownloadRequest], None] | None = None,
    ) -> DownloadRequest:
        """Poll until the request completes; return it.

        ``on_poll`` is called with what each poll said (a progress display);
        a line is logged each time the status or progress changes (INFO, or
        DEBUG when ``on_poll`` shows it already).

        Raises
        ------
        RequestNotReady
            When ``timeout`` seconds pass first.
        RequestFailed
            When the request ends with an error or is cancelled.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        said = ""
        for polls in itertools.count():
            current = self.request(request_id)
            if on_poll is not None:
                on_poll(current)
            if current.is_done or current.is_failed:
                self._raise_for_state(current)
                return current
            if current.describe() != said:
                said = current.describe()
                # A display (on_poll) shows each poll: a log line would break into its bar.
                logger.log(logging.DEBUG if on_poll else logging.INFO, "%s", said)
            pause = poll_pause(polls, self.poll_interval)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:  # the last poll came at the deadline: the whole timeout was waited
                    raise _not_ready(current, waited=timeout)
                pause = min(pause, left)  # poll once more at the deadline, not before it
            time.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover

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
