"""What the Datafiniti API returns, as small immutable dataclasses.

Their ``repr`` is safe to print or log: a pre-signed URL is shown without its
query string, which holds the signature and the temporary credentials.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = [
    "DATA_TYPES",
    "RESULT_LIFETIME",
    "DownloadRequest",
    "FileKey",
    "ResultFile",
    "ResultFiles",
    "redact_url",
    "whole_number",
]

logger = logging.getLogger(__name__)

#: The data types, as the plural in the API's paths.
DATA_TYPES = ("products", "businesses", "properties", "people")

#: A file's identity in a load: request id, position, result id, name.
FileKey = tuple[int, int, int, str]

#: Datafiniti deletes a result file this long after it was created.
RESULT_LIFETIME = timedelta(days=7)

_DATE_RE = re.compile(
    r"^\s*(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[ T](\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,6})\d*)?)?)?\s*(Z|[+-]00:?00)?\s*$"
)
_SAFE_NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")


def redact_url(url: str) -> str:
    """Return ``url`` without its query string and fragment (they may hold secrets)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def parse_api_date(value: Any) -> datetime | None:
    """Parse the API's dates, seen as ``2017-1-11 15:53:00`` and ``2017-1-11``, as UTC."""
    if value in (None, ""):
        return None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value / 1000 if value > 1e11 else value, tz=UTC)
        match = _DATE_RE.match(str(value)) if isinstance(value, str) else None
        if match is None:
            raise ValueError
        year, month, day, hour, minute, second, fraction, _tz = match.groups()
        micro = int(fraction.ljust(6, "0")) if fraction else 0
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            micro,
            tzinfo=UTC,
        )
    except (ValueError, OverflowError, OSError):
        raise ValueError(f"unrecognised date {str(value)[:40]!r}") from None


def _provenance_date(value: Any, name: str) -> datetime | None:
    """A result's ``date_created``; one that is no date (``0000-00-00``) is null, with a warning.

    The date is only provenance (the bucket, not this date, decides expiry):
    a malformed one must not fail a load whose data is fine.
    """
    try:
        return parse_api_date(value)
    except ValueError as exc:
        logger.warning("%s: the API's date_created is not a date (%s); left null", name, exc)
        return None


def whole_number(value: Any, what: str) -> int:
    """An id as the API sends it (``7`` or ``"7"``); 0 when absent; ``ValueError`` otherwise."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{what} is a {type(value).__name__}, not a whole number")
    text = str(value).strip()
    if not text.isdigit() or len(text) > 18:
        raise ValueError(f"{what} {text[:20]!r} is not a whole number")
    return int(text)


def file_name_from_url(url: str, fallback: str) -> str:
    """The file's name (``7_1.csv``) from the URL's path, made safe for a file system."""
    last = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    safe = _SAFE_NAME_RE.sub("_", last).strip("._")
    return safe or fallback


def format_from_name(name: str) -> str:
    """``"csv"`` for ``.csv`` files, ``"json"`` for the rest (JSON downloads end in ``.txt``)."""
    lowered = name.lower().removesuffix(".gz")
    return "csv" if lowered.endswith(".csv") else "json"


@dataclass(frozen=True)
class ResultFile:
    """One data file of a download request.

    Attributes
    ----------
    id : int
        The result object's id; files load in this order.
    request_id : int
        The download request the file belongs to.
    url : str
        The pre-signed URL. Never shown by ``repr`` or ``str`` with its query.
    name : str
        The file's name, e.g. ``7_1.csv``.
    format : str
        ``"csv"`` or ``"json"``.
    date_created : datetime or None
        When Datafiniti wrote the file (aware, UTC).
    position : int
        The file's place among its request's files (0-based, in load order).
        Together with ``id`` and ``name`` it tells files apart even when the
        API gives two of them the same id, or none.
    """

    id: int
    request_id: int
    url: str = field(repr=False)
    name: str
    format: str
    date_created: datetime | None
    position: int = 0

    @property
    def key(self) -> FileKey:
        """What identifies the file in a load: its request, position, id and name."""
        return (self.request_id, self.position, self.id, self.name)

    @property
    def expires_at(self) -> datetime | None:
        """When Datafiniti deletes the file: seven days after ``date_created``."""
        return None if self.date_created is None else self.date_created + RESULT_LIFETIME

    @property
    def is_expired(self) -> bool:
        """True when ``expires_at`` has passed."""
        expires = self.expires_at
        return expires is not None and expires <= datetime.now(UTC)

    @classmethod
    def from_api(cls, raw: dict[str, Any], request_id: int, position: int = 0) -> ResultFile:
        """Build from one element of ``GET /results/{id}``.

        Raises
        ------
        ValueError
            When a field is not what Datafiniti sends (the caller says which answer).
        """
        url = raw.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError("a result without an http(s) 'url'")
        result_id = whole_number(raw.get("id"), "id")
        name = file_name_from_url(url, fallback=f"{request_id}_{result_id}")
        return cls(
            id=result_id,
            request_id=whole_number(raw.get("request_id"), "request_id") or request_id,
            url=url,
            name=name,
            format=format_from_name(name),
            date_created=_provenance_date(raw.get("date_created"), name),
            position=position,
        )

    def __repr__(self) -> str:
        created = self.date_created.isoformat() if self.date_created else None
        return (
            f"ResultFile(id={self.id}, request_id={self.request_id}, name={self.name!r}, "
            f"position={self.position}, "
            f"format={self.format!r}, date_created={created!r}, url={redact_url(self.url)!r})"
        )

    __str__ = __repr__

    def _repr_html_(self) -> str:
        from ..display import files_html

        return files_html([self])


class ResultFiles(list[ResultFile]):
    """A request's result files: a plain list that shows as a table in notebooks."""

    def __str__(self) -> str:
        from ..display import files_table

        return files_table(self)

    def _repr_html_(self) -> str:
        from ..display import files_html

        return files_html(self)


_DONE_STATUSES = {"COMPLETED"}
_FAILED_STATUSES = {"FAILED", "ERROR", "CANCELLED", "CANCELED"}


@dataclass(frozen=True)
class DownloadRequest:
    """A download request and how far it has got (``GET /requests/{id}``).

    Attributes
    ----------
    id : int
    status : str
        As the API says it, e.g. ``STARTED`` or ``COMPLETED``.
    error : str
        Non-empty when the request failed.
    num_found, num_requested, num_downloaded : int
    data_type, data_format, view, query : str
    date_started, date_completed : datetime or None
    """

    id: int
    status: str
    error: str = ""
    num_found: int = 0
    num_requested: int = 0
    num_downloaded: int = 0
    data_type: str = ""
    data_format: str = ""
    view: str = ""
    query: str = ""
    date_started: datetime | None = None
    date_completed: datetime | None = None

    @property
    def is_done(self) -> bool:
        """True once the request completed without error."""
        return self.status.upper() in _DONE_STATUSES and not self.error

    @property
    def is_cancelled(self) -> bool:
        """True when the download was cancelled (API v4); what it wrote stays, and is charged."""
        return self.status.upper() == "CANCELLED"

    @property
    def is_failed(self) -> bool:
        """True when the request ended with an error or was cancelled."""
        return bool(self.error) or self.status.upper() in _FAILED_STATUSES

    @property
    def progress(self) -> float | None:
        """Fraction of the requested records downloaded so far, or ``None`` if unknown."""
        if self.num_requested <= 0:
            return None
        return min(1.0, self.num_downloaded / self.num_requested)

    def _repr_html_(self) -> str:
        from ..display import request_html

        return request_html(self)

    def describe(self) -> str:
        """One line for people: status and progress."""
        progress = self.progress
        done = f", {self.num_downloaded:,} of {self.num_requested:,} records" if progress else ""
        pct = f" ({progress:.0%}{done})" if progress is not None else ""
        return f"request {self.id} is {self.status}{pct}"

    @classmethod
    def from_v4(cls, raw: dict[str, Any]) -> DownloadRequest:
        """Build from API v4's download object (``GET /v4/downloads/{id}``).

        Its ``id`` comes as a string, an integer, or only as ``_id``; its
        ``format`` as ``csv`` or (2017-era) ``CSV``.
        """
        status = str(raw.get("status") or "")
        done = status.lower() == "completed"
        ident = raw.get("id")
        if ident is None or ident == "":
            ident = raw.get("_id")
        if ident is None or ident == "":
            raise ValueError("a download object without 'id' or '_id'")
        return cls.from_api(
            {
                "id": ident,
                "status": status,
                "error": raw.get("error"),
                "numFound": raw.get("num_found", raw.get("num_records")),
                "numRequested": raw.get("num_records"),
                "numDownloaded": raw.get("num_downloaded"),
                "dataType": raw.get("data_type"),
                "dataFormat": str(raw.get("format") or "").lower(),
                "view": raw.get("view"),
                "query": raw.get("query"),
                "date_started": raw.get("date_started"),
                "date_completed": raw.get("date_updated") if done else None,
            }
        )

    @classmethod
    def from_api(cls, raw: dict[str, Any]) -> DownloadRequest:
        """Build from the element of ``GET /requests/{id}``."""

        def number(key: str) -> int:
            try:
                return int(raw.get(key) or 0)
            except (TypeError, ValueError):
                return 0

        return cls(
            id=whole_number(raw.get("id"), "id"),
            status=str(raw.get("status") or ""),
            error=str(raw.get("error") or ""),
            num_found=number("numFound"),
            num_requested=number("numRequested"),
            num_downloaded=number("numDownloaded"),
            data_type=str(raw.get("dataType") or ""),
            data_format=str(raw.get("dataFormat") or ""),
            view=str(raw.get("view") or ""),
            query=str(raw.get("query") or ""),
            date_started=_lenient_date(raw.get("date_started")),
            date_completed=_lenient_date(raw.get("date_completed")),
        )


def _lenient_date(value: Any) -> datetime | None:
    try:
        return parse_api_date(value)
    except ValueError:
        return None
