"""What a sync did, in one line for people and a small table in notebooks."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SyncSummary"]


@dataclass(frozen=True)
class SyncSummary:
    """What :func:`~datafiniti_loader.sync` did; its ``repr`` says it in one line.

    Attributes
    ----------
    path : str
        The table (for tidy tables, the directory holding them).
    query : str
        The query the table is synced with.
    asked : str
        The query this sync counted and downloaded: ``query`` narrowed to
        records updated after ``previous_mark`` (``query`` itself the first time).
    counted : int or None
        Records the count found (API v4); ``None`` on v3, which cannot count.
    downloaded : int
        Records in the download merged (0 when none was made).
    records_added, records_replaced, records_unchanged : int
        Of those: new to the table, newer than the table's copy, not newer.
    previous_mark, mark : str or None
        The newest ``dateUpdated`` merged, before and after this sync.
    version : int or None
        The table's version afterwards (``None``: there is no table yet).
    committed : bool
        Whether this sync made a new version.
    request_id : int or None
        The download merged (``None``: none was made or used).
    status : str
        ``"merged"``; ``"unchanged"`` (nothing changed since the mark: no
        download, no credits); ``"refused"`` (``confirm`` said no); or
        ``"incomplete"`` (the download held fewer records than matched, so
        the mark did not move).
    """

    path: str
    query: str
    asked: str
    status: str
    counted: int | None = None
    downloaded: int = 0
    records_added: int = 0
    records_replaced: int = 0
    records_unchanged: int = 0
    previous_mark: str | None = None
    mark: str | None = None
    version: int | None = None
    committed: bool = False
    request_id: int | None = None

    def describe(self) -> str:
        """One line for people: what changed, or why nothing did."""
        since = f"since {self.previous_mark}" if self.previous_mark else "in all"
        at = "no table yet" if self.version is None else f"still version {self.version}"
        if self.status == "unchanged":
            return (
                f"no record changed {since}: nothing downloaded, no credits spent; "
                f"{self.path} is {at}"
            )
        if self.status == "refused":
            return f"not confirmed: nothing downloaded, no credits spent; {self.path} is {at}"
        made = f"version {self.version}" if self.committed else at
        line = (
            f"{made} of {self.path} from request {self.request_id}: {self.downloaded:,} "
            f"record(s) downloaded, {self.records_added:,} added, {self.records_replaced:,} "
            f"replaced, {self.records_unchanged:,} unchanged; mark {self.mark}"
        )
        if self.status == "incomplete":
            line += " (unchanged: the download held fewer records than matched)"
        return line

    def __repr__(self) -> str:
        return f"SyncSummary({self.describe()})"

    def _repr_html_(self) -> str:
        from ..display import summary_html

        def shown(value: int | None) -> str:
            return "-" if value is None else f"{value:,}"

        return summary_html(
            [
                ("table", self.path),
                ("query", self.asked),
                ("status", self.status),
                ("records counted", shown(self.counted)),
                ("records downloaded", f"{self.downloaded:,}"),
                ("records added", f"{self.records_added:,}"),
                ("records replaced", f"{self.records_replaced:,}"),
                ("records unchanged", f"{self.records_unchanged:,}"),
                ("mark", f"{self.previous_mark or '-'} -> {self.mark or '-'}"),
                ("version", "-" if self.version is None else str(self.version)),
                ("request", "-" if self.request_id is None else str(self.request_id)),
            ]
        )
