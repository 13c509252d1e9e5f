"""Datafiniti's two API versions as small adapters behind one :class:`~.client.Client`.

v3 and v4 ask for the same things in different words: v3 creates a download
with a ``GET`` answered by a ``303``, keeps status (``/requests``) apart from
files (``/results``) and signs in with HTTP Basic; v4 creates one with a
``POST`` answered by a download object (``200`` or ``202``) that holds status
and files together, counts with ``num_records: 0``, cancels with ``DELETE``
and signs in with a Bearer token. Each adapter turns one version's answers
into the same models; the client above them never asks which version it has.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

from ..errors import ApiError, ConfigurationError, NoResults, RequestNotFound
from .http import ApiResponse, ApiSession
from .models import DATA_TYPES, DownloadRequest, ResultFile, whole_number

__all__ = ["V3", "V4", "ApiVersion", "Listing", "Query", "for_url"]

_T = TypeVar("_T")


@dataclass(frozen=True)
class Query:
    """What to download: checked once, sent in each version's words.

    ``num_records`` is a positive number or ``"all"``: every record costs
    credits, so asking for all of them is never a default.
    """

    text: str
    data_type: str
    num_records: int | Literal["all"]
    format: str = "csv"
    view: str | None = None

    @classmethod
    def checked(
        cls,
        text: str,
        data_type: str,
        num_records: int | str | None,
        format: str = "csv",
        view: str | None = None,
    ) -> Query:
        """A :class:`Query`, or a :class:`ConfigurationError` saying which argument is wrong."""
        if not isinstance(text, str) or not text.strip():
            raise ConfigurationError(
                "The query is empty: pass a Datafiniti query such as "
                "'categories:hotels AND country:US'."
            )
        kind = str(data_type).lower()
        if kind not in DATA_TYPES:
            raise ConfigurationError(
                f"data_type must be one of {', '.join(DATA_TYPES)} (the plural in the API's "
                f"paths); got {data_type!r}."
            )
        fmt = str(format).lower()
        if fmt not in ("csv", "json"):
            raise ConfigurationError(f"format must be 'csv' or 'json'; got {format!r}.")
        return cls(text.strip(), kind, _records(num_records), fmt, view or None)


def _records(value: int | str | None) -> int | Literal["all"]:
    if value == "all":
        return "all"
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(
            f"num_records must be a positive whole number, or 'all' for every match; got "
            f"{value!r}. Every record downloaded costs credits, so there is no default."
        )
    return value


@dataclass(frozen=True)
class Listing:
    """What a version says about a request's files.

    ``request`` is the request's state when the same answer gave it (v4);
    ``None`` when it must be asked for separately (v3's ``/results`` says
    404 both for "still running" and "no such request").
    """

    files: list[ResultFile]
    request: DownloadRequest | None


class ApiVersion(Protocol):
    """One API version's endpoints, each returning the library's models."""

    name: str
    bearer: bool

    def request(self, http: ApiSession, rid: int) -> DownloadRequest:
        """The request's status and progress."""

    def results(self, http: ApiSession, rid: int) -> Listing:
        """The request's result files (and, where the answer says it, its state)."""

    def create(self, http: ApiSession, query: Query) -> DownloadRequest:
        """Create a download; the request as the API first describes it."""

    def count(self, http: ApiSession, query: Query) -> int:
        """How many records match, without creating a download."""

    def cancel(self, http: ApiSession, rid: int) -> DownloadRequest | None:
        """Cancel a running download; its state if the answer gave one."""

    def downloads(self, http: ApiSession) -> list[DownloadRequest]:
        """The account's download requests, as the API lists them."""


def for_url(api_url: str) -> ApiVersion:
    """The adapter for an API base URL, from its last path segment (``/v3`` or ``/v4``)."""
    return V4() if urlsplit(api_url).path.rstrip("/").endswith("/v4") else V3()


#: What to do about a 400 to a call that carries the user's arguments (a search).
CHECK_ARGUMENTS = "Check the arguments (query, data type, format, view, number of records)."


def _no_request(rid: int) -> str:
    return (
        f"Datafiniti has no download request {rid} for this token. Check the id (the number "
        "in /requests/ID or /downloads/ID) and that the token belongs to the account that "
        "made the request."
    )


def _needs_v4(what: str, lacking: str) -> ConfigurationError:
    return ConfigurationError(
        f"{what} needs API v4 (v3 has no {lacking}): use an api_url ending in /v4, "
        "e.g. https://api.datafiniti.co/v4 (DATAFINITI_API_URL or --api-url)."
    )


def _nothing_matches(query: Query) -> NoResults:
    return NoResults(
        f"No {query.data_type} record matches the query {query.text[:120]!r}: Datafiniti "
        "made no download and spent no credits. Check the query (count() on API v4 tells "
        "how many records match)."
    )


class V3:
    """API v3: HTTP Basic; ``/data`` creates, ``/requests`` tells state, ``/results`` files."""

    name = "v3"
    bearer = False

    def request(self, http: ApiSession, rid: int) -> DownloadRequest:
        """``GET /requests/{id}``: a one-element list (an empty one means no such request)."""
        path = f"requests/{rid}"
        response = http.get(path)
        body = response.expect(
            path, "a JSON request record", kind=(list, dict), not_found=_no_request(rid)
        )
        if body in ([], {}):
            raise RequestNotFound(_no_request(rid), status=response.status)
        record = body[0] if isinstance(body, list) else body
        if not isinstance(record, dict):
            raise response.unexpected(path, "a JSON request record")
        return _parsed(response, path, lambda: DownloadRequest.from_api(record))

    def results(self, http: ApiSession, rid: int) -> Listing:
        """``GET /results/{id}``: files of a completed request; 404 while it runs."""
        path = f"results/{rid}"
        response = http.get(path)
        if response.status == 404:
            return Listing([], None)
        body = response.expect(path, "a JSON list of result files", kind=list)
        return Listing(_parsed(response, path, lambda: _v3_files(body, rid)), None)

    def create(self, http: ApiSession, query: Query) -> DownloadRequest:
        """``GET /data/{type}?...&download=true``: the new id from the 303, not followed."""
        if query.data_type == "people":
            raise ConfigurationError(
                "API v3 has no people data; use API v4 (an api_url ending in /v4)."
            )
        params = {"q": query.text, "format": query.format.upper(), "download": "true"}
        if query.num_records != "all":  # v3 downloads every match when records is left out
            params["records"] = str(query.num_records)
        if query.view:
            params["view"] = query.view
        path = f"data/{query.data_type}"
        response = http.call("GET", path, params=params, follow_redirects=False, spends=True)
        if response.status == 400 and "cannot be <= 0" in response.said:
            raise _nothing_matches(query)
        if response.status in (301, 302, 303, 307) and response.location:
            last = urlsplit(response.location).path.rstrip("/").rsplit("/", 1)[-1]
            rid = _parsed(response, path, lambda: whole_number(last, "the new request's id"))
            return DownloadRequest(
                id=rid,
                status="STARTED",
                query=query.text,
                data_type=query.data_type,
                data_format=query.format,
                view=query.view or "",
            )
        body = response.expect(
            path, "a 303 to the new request", kind=(dict, list), ok=(200, 201, 202),
            refused=CHECK_ARGUMENTS,
        )  # fmt: skip
        record = body[0] if isinstance(body, list) and body else body
        if not isinstance(record, dict):
            raise response.unexpected(path, "a 303 to the new request")
        return _parsed(response, path, lambda: DownloadRequest.from_api(record))

    def count(self, http: ApiSession, query: Query) -> int:
        """v3 cannot count without spending credits: say so."""
        raise _needs_v4("Counting records", "free count")

    def cancel(self, http: ApiSession, rid: int) -> DownloadRequest | None:
        """v3 has no way to cancel a download: say so."""
        raise _needs_v4("Cancelling a download", "cancel")

    def downloads(self, http: ApiSession) -> list[DownloadRequest]:
        """``GET /requests``: a list of request records."""
        return _listing(http, "requests", DownloadRequest.from_api)


class V4:
    """API v4: Bearer; ``POST /{type}/search`` creates or counts, ``/downloads/{id}`` tells all."""

    name = "v4"
    bearer = True

    def request(self, http: ApiSession, rid: int) -> DownloadRequest:
        """``GET /downloads/{id}``: the download object."""
        response, body = self._download(http, rid)
        return _parsed(response, f"downloads/{rid}", lambda: DownloadRequest.from_v4(body))

    def results(self, http: ApiSession, rid: int) -> Listing:
        """The download object's ``results`` (filled while it runs: its status says when done)."""
        response, body = self._download(http, rid)
        path = f"downloads/{rid}"
        request = _parsed(response, path, lambda: DownloadRequest.from_v4(body))
        return Listing(_parsed(response, path, lambda: _v4_files(body, rid)), request)

    def create(self, http: ApiSession, query: Query) -> DownloadRequest:
        """``POST /{type}/search`` with ``download: true``; 200 or 202 with the download object."""
        records = query.num_records
        if records == "all":  # v4 wants a number: the count is free
            records = self.count(http, query)
            if records == 0:
                raise _nothing_matches(query)
        payload: dict[str, Any] = {
            "query": query.text,
            "format": query.format.upper(),
            "num_records": records,
            "download": True,
        }
        if query.view:
            payload["view"] = query.view
        path = f"{query.data_type}/search"
        response = http.call("POST", path, json=payload, spends=True)
        if response.status == 400 and "<= 0" in response.said:
            raise _nothing_matches(query)
        body = response.expect(
            path, "a JSON download object", ok=(200, 201, 202), refused=CHECK_ARGUMENTS
        )
        return _parsed(response, path, lambda: DownloadRequest.from_v4(body))

    def count(self, http: ApiSession, query: Query) -> int:
        """A search for no records: ``num_found`` and nothing else (no download, no credits)."""
        path = f"{query.data_type}/search"
        response = http.call("POST", path, json={"query": query.text, "num_records": 0})
        body = response.expect(path, "a JSON search answer with num_found", refused=CHECK_ARGUMENTS)
        return _parsed(response, path, lambda: whole_number(body.get("num_found"), "num_found"))

    def cancel(self, http: ApiSession, rid: int) -> DownloadRequest | None:
        """``DELETE /downloads/{id}``; records already written stay (and are charged)."""
        path = f"downloads/{rid}"
        response = http.call("DELETE", path)
        if response.status == 204 or (response.status in (200, 202) and not response.body):
            return None
        body = response.expect(
            path, "a JSON download object", ok=(200, 202), not_found=_no_request(rid),
            refused=f"A download that has ended (completed or cancelled) cannot be cancelled; "
            f"see its state with `datafiniti-loader status {rid}`.",
        )  # fmt: skip
        return _parsed(response, path, lambda: DownloadRequest.from_v4(body))

    def downloads(self, http: ApiSession) -> list[DownloadRequest]:
        """``GET /downloads``: a list of download objects."""
        return _listing(http, "downloads", DownloadRequest.from_v4)

    @staticmethod
    def _download(http: ApiSession, rid: int) -> tuple[ApiResponse, dict[str, Any]]:
        path = f"downloads/{rid}"
        response = http.get(path)
        body = response.expect(path, "a JSON download object", not_found=_no_request(rid))
        return response, body


def _listing(
    http: ApiSession, path: str, build: Callable[[dict[str, Any]], DownloadRequest]
) -> list[DownloadRequest]:
    """``GET /path``: the account's requests, each built by ``build``."""
    response = http.get(path)
    body = response.expect(path, f"a JSON list of {path}", kind=(list, dict))
    return _parsed(response, path, lambda: [build(item) for item in _listed(body)])


def _listed(body: Any) -> list[dict[str, Any]]:
    """The objects of a listing: a JSON list, or one under ``downloads``, ``requests``..."""
    if isinstance(body, dict):
        body = next(
            (body[k] for k in ("downloads", "requests", "data", "records") if k in body), None
        )
    if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
        raise ValueError("the listing is not a list of objects")
    return body


def _v3_files(body: list[Any], rid: int) -> list[ResultFile]:
    """Result files in load order: by id (files without one first), then as the API listed them."""
    files = []
    for raw in body:
        if not isinstance(raw, dict):
            raise ValueError(f"an element is a JSON {type(raw).__name__}, not an object")
        files.append(ResultFile.from_api(raw, rid))
    return sorted(files, key=lambda f: f.id)


def _v4_files(body: dict[str, Any], rid: int) -> list[ResultFile]:
    """v4 lists URLs (or objects with a ``url``) in order; the download's last update dates them."""
    urls = body.get("results") or []
    if not isinstance(urls, list):
        raise ValueError("'results' is not a list")
    created = body.get("date_updated")
    files = []
    for n, item in enumerate(urls, start=1):
        raw = dict(item) if isinstance(item, dict) else {"url": item}
        raw.setdefault("id", n)
        raw.setdefault("date_created", created)
        files.append(ResultFile.from_api(raw, rid))
    return files


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
        "Check the API URL (DATAFINITI_API_URL, api_url= or --api-url); if it is right, "
        "try again later."
    )
