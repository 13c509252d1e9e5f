"""The ``datafiniti-loader`` command: status, files, load, cache, sandbox, demo.

Exit status: 0 on success; 1 with a one-line reason on stderr for a
:class:`DatafinitiError` (no traceback); 2 for a usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import sys
from collections.abc import Sequence, Set
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ._version import __version__
from .config import CacheSetting, resolve_api_url, resolve_cache_dir
from .errors import DatafinitiError

if TYPE_CHECKING:
    from .loader import Sources

# Verbs import what they need when they run: `--version` and `--help` answer
# without loading pandas, pyarrow and the HTTP stacks.

__all__ = ["main", "say"]

# C0 and C1 control characters but tab and newline: an API's text carrying ANSI
# escapes (or a carriage return) could otherwise rewrite the user's terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def say(*parts: object, file: TextIO | None = None, end: str = "\n", flush: bool = False) -> None:
    """``print``, with control characters removed: the CLI's one way to write text."""
    print(*(_CONTROL.sub("", str(part)) for part in parts), file=file, end=end, flush=flush)


#: Which global options mean something for each verb (the rest are not offered there).
_VERB_OPTIONS = {
    "status": {"token", "api_url", "quiet"},
    "files": {"token", "api_url", "quiet"},
    "load": {"token", "api_url", "cache", "quiet"},
    "count": {"token", "api_url", "quiet"},
    "download": {"token", "api_url", "cache", "quiet"},
    "cancel": {"token", "api_url", "quiet"},
    "merge": {"token", "api_url", "cache", "quiet"},
    "sync": {"token", "api_url", "cache", "quiet"},
    "history": {"quiet"},
    "fetch": {"token", "api_url", "cache", "quiet"},
    "requests": {"token", "api_url", "quiet"},
    "cache": {"api_url", "cache"},
    "sandbox": {"token"},
    "demo": {"cache", "quiet"},
}
_ALL_OPTIONS = frozenset({"token", "api_url", "cache", "quiet"})


def _add_global_options(
    parser: argparse.ArgumentParser, *, after_verb: bool, only: Set[str] = _ALL_OPTIONS
) -> None:
    """The options verbs share, given before the verb or after it.

    After the verb their defaults are suppressed, so that a value given
    before the verb is not overwritten by the verb's default.
    """

    def default(value: object) -> object:
        return argparse.SUPPRESS if after_verb else value

    group = parser.add_argument_group("global options")
    if "token" in only:
        group.add_argument(
            "--token",
            default=default(None),
            help="API token (default: $DATAFINITI_API_TOKEN, then ~/.netrc)",
        )
    if "api_url" in only:
        group.add_argument(
            "--api-url",
            default=default(None),
            help="API base URL ending in /v3 or /v4 (default: $DATAFINITI_API_URL, "
            "else Datafiniti's v3)",
        )
    if "cache" in only:
        cache = group.add_mutually_exclusive_group()
        cache.add_argument(
            "--cache-dir",
            default=default(None),
            help="cache directory (default: $DATAFINITI_CACHE_DIR or the user cache)",
        )
        cache.add_argument(
            "--no-cache",
            action="store_true",
            default=default(False),
            help="keep no downloaded files",
        )
    if "quiet" in only:
        group.add_argument(
            "--quiet",
            "-q",
            action="store_true",
            default=default(False),
            help="no progress bars or log lines",
        )


def _verb_options(verb: str) -> argparse.ArgumentParser:
    """A parent parser with the global options that mean something for ``verb``."""
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, after_verb=True, only=_VERB_OPTIONS[verb])
    return common


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (public so the docs can show ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="datafiniti-loader",
        description="Load Datafiniti download results: inspect requests, convert them to Parquet.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_global_options(parser, after_verb=False)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    status = verbs.add_parser(
        "status", parents=[_verb_options("status")], help="a download request's status and progress"
    )
    status.add_argument(
        "request_id", help="the download request's id (the number in /v3/requests/ID)"
    )

    files = verbs.add_parser(
        "files", parents=[_verb_options("files")], help="one line per result file"
    )
    files.add_argument(
        "request_id", help="the download request's id (the number in /v3/requests/ID)"
    )

    load = verbs.add_parser(
        "load",
        parents=[_verb_options("load")],
        help="convert one or more requests' results to a Parquet dataset",
    )
    load.add_argument(
        "request_id",
        nargs="+",
        help="download request id(s) (the number in /v3/requests/ID); several are "
        "written one after the other, in this order",
    )
    load.add_argument(
        "--dedupe",
        action="store_true",
        help="for records in several downloads, keep only the rows of the copy with the "
        "newest dateUpdated (ties: the later id)",
    )
    _add_parquet_options(load, required=True)

    count = verbs.add_parser(
        "count",
        parents=[_verb_options("count")],
        help="how many records match a query (API v4; no download, no credits)",
    )
    _add_query_arguments(count)

    download = verbs.add_parser(
        "download",
        parents=[_verb_options("download")],
        help="create a download of a query's records (asks before spending credits)",
    )
    _add_query_arguments(download)
    download.add_argument(
        "--records",
        required=True,
        metavar="N|all",
        help="how many records to download, or 'all' (every record costs credits)",
    )
    _add_download_shape(download, default_format="csv")
    download.add_argument(
        "--yes", "-y", action="store_true", help="do not ask for confirmation before creating it"
    )
    _add_parquet_options(download, required=False)

    cancel = verbs.add_parser(
        "cancel",
        parents=[_verb_options("cancel")],
        help="cancel a running download (API v4; records written so far stay, and are charged)",
    )
    cancel.add_argument("request_id", help="the download's id")

    merge = verbs.add_parser(
        "merge",
        parents=[_verb_options("merge")],
        help="merge downloads into a Delta Lake table, each record's newest copy winning",
    )
    merge.add_argument("request_id", nargs="+", help="download request id(s) to merge")
    merge.add_argument(
        "--into", required=True, metavar="PATH", help="the Delta table (path or object-store URI)"
    )
    merge.add_argument(
        "--tables",
        action="store_true",
        help="one Delta table per tidy table under --into (records, reviews, ...)",
    )
    merge.add_argument(
        "--mode",
        choices=["merge", "append", "overwrite"],
        default="merge",
        help="merge (default): each record's newest copy wins; append: add every row (files "
        "without id or dateUpdated); overwrite: replace the table's rows",
    )
    _add_wait_option(merge)
    _add_dtype_option(merge)

    sync = verbs.add_parser(
        "sync",
        parents=[_verb_options("sync")],
        help="keep a Delta table current from a query, buying only records changed since "
        "the last sync (asks before spending credits)",
    )
    _add_query_arguments(sync)
    sync.add_argument(
        "--into", required=True, metavar="PATH", help="the Delta table (path or object-store URI)"
    )
    _add_download_shape(sync, default_format="json")
    sync.add_argument(
        "--tables",
        action="store_true",
        help="one Delta table per tidy table under --into (records, reviews, ...)",
    )
    sync.add_argument(
        "--max-records",
        type=int,
        metavar="N",
        help="refuse to download more than N records (required on API v3, which cannot count)",
    )
    sync.add_argument(
        "--yes", "-y", action="store_true", help="do not ask for confirmation before buying"
    )
    sync.add_argument(
        "--request-id",
        metavar="ID",
        help="merge this download as the sync's own (one an earlier sync asked for without "
        "hearing back)",
    )
    sync.add_argument(
        "--forget-pending",
        action="store_true",
        help="forget a download an earlier sync asked for without hearing back (none was made)",
    )
    _add_dtype_option(sync)

    fetch = verbs.add_parser(
        "fetch",
        parents=[_verb_options("fetch")],
        help="download a request's result files as they are (no parsing); prints their paths",
    )
    fetch.add_argument("request_id", help="the download request id")
    fetch.add_argument(
        "--dest", metavar="DIR", help="copy the files into DIR (default: keep them in the cache)"
    )
    fetch.add_argument(
        "--overwrite", action="store_true", help="replace files in DIR that hold other bytes"
    )
    _add_wait_option(fetch)

    requests_verb = verbs.add_parser(
        "requests",
        parents=[_verb_options("requests")],
        help="the account's past downloads, newest first (status, records, type, query)",
    )
    requests_verb.add_argument("--limit", type=int, metavar="N", help="only the newest N")

    history = verbs.add_parser(
        "history",
        parents=[_verb_options("history")],
        help="a Delta table's versions: the requests each merged, rows inserted",
    )
    history.add_argument("path", help="the Delta table (path or object-store URI)")

    cache = verbs.add_parser(
        "cache", parents=[_verb_options("cache")], help="show or clear the download cache"
    )
    cache.add_argument(
        "action", choices=["info", "clear"], help="info: what it holds; clear: delete it"
    )
    cache.add_argument(
        "--older-than",
        type=_age,
        metavar="AGE",
        help="clear only entries not written for AGE (e.g. 7d, 12h, 30m): stale sandbox "
        "runs, files Datafiniti has deleted anyway",
    )
    cache.add_argument(
        "--request",
        type=int,
        metavar="ID",
        help="only this request's files; with --api-url (or DATAFINITI_API_URL) both verbs "
        "look at that API's files only",
    )

    sandbox = verbs.add_parser(
        "sandbox",
        parents=[_verb_options("sandbox")],
        help="run the local stand-in API and bucket; prints the settings to export",
    )
    sandbox.add_argument(
        "--serve",
        nargs="+",
        action="append",
        type=Path,
        metavar="FILE",
        help="serve these files (CSV, JSON Lines, gzip) as one request, in this order; "
        "repeat --serve for more requests (default: the built-in fixtures)",
    )
    sandbox.add_argument(
        "--request-id",
        nargs="+",
        type=int,
        default=[],
        metavar="N",
        help="the id of each --serve request, in the same order (default: 6073, 6074, ...)",
    )
    sandbox.add_argument(
        "--fixtures", type=Path, help="directory holding the built-in fixture files"
    )
    sandbox.add_argument(
        "--port", type=int, default=0, help="the API's port (default: any free one)"
    )

    demo = verbs.add_parser(
        "demo", parents=[_verb_options("demo")], help="end to end against the sandbox"
    )
    demo.add_argument(
        "--output",
        "-o",
        default="demo-output",
        help="where to write Parquet (default: demo-output)",
    )
    return parser


def _add_query_arguments(parser: argparse.ArgumentParser) -> None:
    """QUERY and ``--type``, for ``count`` and ``download``."""
    from .remote.models import DATA_TYPES  # a light module: --help loads no HTTP stack

    parser.add_argument("query", help="a Datafiniti query, e.g. 'brand:Sony AND country:US'")
    parser.add_argument(
        "--type",
        dest="data_type",
        default="products",
        choices=DATA_TYPES,
        help="the data type (default products)",
    )


def _add_download_shape(parser: argparse.ArgumentParser, *, default_format: str) -> None:
    """``--format`` and ``--view``: what a created download's files look like."""
    parser.add_argument(
        "--format",
        choices=["csv", "json"],
        default=default_format,
        help=f"file format (default {default_format})",
    )
    parser.add_argument("--view", help="a Datafiniti view, e.g. product_flat_prices")


def _add_wait_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        nargs="?",
        const=True,
        default=False,
        type=float,
        metavar="SECONDS",
        help="poll until the request(s) are done (at most SECONDS)",
    )


def _add_dtype_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dtype",
        type=_dtypes,
        metavar="COL=TYPE[,COL=TYPE...]",
        help="column types on request, as in pandas: e.g. prices.amountMax=float64,"
        "prices.isSale=boolean (float64, Int64, boolean, string, category, "
        "'datetime64[ns, UTC]')",
    )


def _dtypes(text: str) -> dict[str, str]:
    """``a=float64,b=boolean`` as a mapping (argparse type); a datetime type may hold a comma."""
    mapping: dict[str, str] = {}
    for part in re.split(r",(?![^\[]*\])", text):
        column, sep, kind = part.strip().rpartition("=")
        if not sep or not column or not kind:
            raise argparse.ArgumentTypeError(f"{part!r} is not COLUMN=TYPE, e.g. price=float64")
        mapping[column] = kind.strip()
    return mapping


def _add_parquet_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """``--output`` and what shapes the Parquet dataset, for ``load`` and ``download``."""
    parser.add_argument(
        "--output",
        "-o",
        required=required,
        help="Parquet dataset directory (path or fsspec URL)"
        + ("" if required else "; waits for the download to complete"),
    )
    parser.add_argument("--columns", help="comma-separated data columns to keep")
    _add_dtype_option(parser)
    parser.add_argument("--partition-by", help="comma-separated columns to partition by")
    parser.add_argument(
        "--no-provenance", action="store_true", help="leave out the _request_id ... columns"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    parser.add_argument(
        "--tables",
        action="store_true",
        help="one dataset per tidy table under --output (records/, reviews/, ...)",
    )
    _add_wait_option(parser)
    parser.add_argument("--max-workers", type=int, help="parallel downloads (default 4)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        logging.getLogger("datafiniti_loader").setLevel(logging.INFO)
        for handler in logging.getLogger().handlers:  # each verb prints what it did, once
            handler.addFilter(_not_the_load_summary)
    try:
        return int(_run(args) or 0)
    except DatafinitiError as exc:
        say(f"datafiniti-loader: error: {exc}", file=sys.stderr)
        return 1
    except (FileExistsError, ValueError) as exc:
        say(f"datafiniti-loader: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        say("datafiniti-loader: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `datafiniti-loader files ID | head`: the reader has what it wanted
        # What is left in stdout's buffer would fail again at exit: send it nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except ImportError as exc:  # an optional extra not installed: its message names it
        if "datafiniti-loader[" not in str(exc):
            raise
        say(f"datafiniti-loader: error: {exc}", file=sys.stderr)
        return 1


def _not_the_load_summary(record: logging.LogRecord) -> bool:
    """Drop the library's load summary: the verb's own line says what was written."""
    from .loader import LOAD_SUMMARY

    return not getattr(record, LOAD_SUMMARY, False)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The API, cache, progress and type settings a verb that loads downloads passes on."""
    return {
        "token": args.token,
        "api_url": args.api_url,
        "cache": _cache_setting(args),
        "progress": False if args.quiet else None,
        "dtype": args.dtype,
    }


def _cache_setting(args: argparse.Namespace) -> CacheSetting:
    if args.no_cache:
        return False
    return str(args.cache_dir) if args.cache_dir else None


def _run(args: argparse.Namespace) -> int:
    if args.verb == "sandbox":
        from .demo import serve_sandbox

        return serve_sandbox(
            args.fixtures,
            serve=args.serve or (),
            request_ids=args.request_id,
            port=args.port,
            token=args.token,
        )
    if args.verb == "demo":
        from .demo import run_demo

        return run_demo(args.output, cache=_cache_setting(args), quiet=args.quiet)
    if args.verb == "cache":
        return _cache(args)
    if args.verb == "load":
        return _write_parquet(args, args.request_id, dedupe=args.dedupe)
    if args.verb == "download":
        return _download(args)
    if args.verb == "merge":
        from .api import to_delta

        summary = to_delta(
            args.request_id, args.into, mode=args.mode, wait=args.wait, tables=args.tables,
            **_settings(args),
        )  # fmt: skip
        say(summary.describe())
        return 0
    if args.verb == "sync":
        return _sync(args)
    if args.verb == "fetch":
        from .api import download_files

        for path in download_files(
            args.request_id, dest=args.dest, overwrite=args.overwrite, token=args.token,
            api_url=args.api_url, wait=args.wait, cache=_cache_setting(args),
            progress=False if args.quiet else None,
        ):  # fmt: skip
            say(str(path))
        return 0
    if args.verb == "requests":
        from .api import list_downloads

        say(list_downloads(limit=args.limit, token=args.token, api_url=args.api_url).table())
        return 0
    if args.verb == "history":
        from .api import delta_history

        entries = delta_history(args.path)  # before any output: a missing table prints nothing
        synced = any(entry["query"] for entry in entries)
        say(
            f"{'VERSION':<8} {'WHEN (UTC)':<17} {'OPERATION':<10} {'ROWS':>9}  REQUESTS"
            + ("  MARK  QUERY" * synced)
        )
        for entry in entries:
            rows = "" if entry["rows_inserted"] is None else f"{entry['rows_inserted']:,}"
            requests = ", ".join(map(str, entry["request_ids"])) or "-"
            when = f"{entry['timestamp']:%Y-%m-%d %H:%M}" if entry["timestamp"] else "-"
            line = (
                f"{entry['version']:<8} {when:<17} {entry['operation']:<10} {rows:>9}  {requests}"
            )
            if synced:
                line += f"  {entry['mark'] or '-'}  {entry['query'] or '-'}"
            say(line)
        return 0
    from .display import files_table
    from .remote.client import Client

    with Client(token=args.token, api_url=args.api_url) as client:
        if args.verb == "count":
            found = client.count(args.query, data_type=args.data_type)
            say(f"{found:,} {args.data_type} record(s) match {args.query!r}")
            return 0
        if args.verb == "cancel":
            say(client.cancel(args.request_id).describe())
            return 0
        if args.verb == "status":
            request = client.request(args.request_id)
            say(request.describe())
            if request.error:
                say(f"error: {request.error}")
            return 0
        say(files_table(client.results(args.request_id)))
    return 0


def _download(args: argparse.Namespace) -> int:
    """Count (v4), ask, create, and with ``--wait`` or ``--output`` wait and write Parquet."""
    from .loader import wait_for
    from .remote.client import Client
    from .remote.versions import Query

    wanted = Query.checked(args.query, args.data_type, args.records, args.format, args.view)
    with Client(token=args.token, api_url=args.api_url) as client:
        if client.api_version == "v4":
            found = client.count(wanted.text, data_type=wanted.data_type)
            asked = found if wanted.num_records == "all" else min(found, wanted.num_records)
            say(
                f"{found:,} {wanted.data_type} record(s) match; the download would hold "
                f"{asked:,} (every record costs credits)"
            )
            if found == 0:
                say("nothing to download")
                return 1
            wanted = dataclasses.replace(wanted, num_records=asked)  # what the user is asked
        else:
            say(
                "API v3 cannot count for free; the download would hold up to "
                f"{wanted.num_records} matching record(s) (every record costs credits)"
            )
        if not args.yes and not _confirmed("Create the download? [y/N] "):
            say(
                "datafiniti-loader: not confirmed: no download created (--yes skips the question)",
                file=sys.stderr,
            )
            return 1
        created = client.create_download(
            wanted.text,
            data_type=wanted.data_type,
            num_records=wanted.num_records,
            format=wanted.format,
            view=wanted.view,
        )
        say(f"created download request {created.id}", flush=True)
        if args.output is None and args.wait is False:
            say(f"next: datafiniti-loader load {created.id} --wait --output DIR")
            return 0
        # --output alone waits too: the Parquet needs the finished download.
        wait = True if args.wait is False else args.wait
        done = wait_for(client, created.id, wait, False if args.quiet else None)
        say(done.describe())
    if args.output is None:
        return 0
    return _write_parquet(args, created, wait=False)  # waited above


def _sync(args: argparse.Namespace) -> int:
    """Say what changed since the mark and what it costs, ask, then sync; print the summary."""
    from .config import resolve_api_url
    from .remote.versions import for_url
    from .syncing import sync
    from .syncing.state import synced_mark

    mark = synced_mark(args.into, args.tables, None)
    what = f"changed since {mark}" if mark else f"match {args.query!r} (a first sync)"
    counts = for_url(resolve_api_url(args.api_url)).name == "v4"

    def confirm(records: int) -> bool:
        if counts:
            say(f"{records:,} {args.data_type} record(s) {what}; every record costs credits")
        else:
            say(
                f"API v3 cannot count for free; the download would hold up to {records:,} "
                f"{args.data_type} record(s) {what}; "
                "every record costs credits"
            )
        return bool(args.yes) or _confirmed("Download them? [y/N] ")

    summary = sync(
        args.query,
        args.into,
        data_type=args.data_type,
        format=args.format,
        view=args.view,
        tables=args.tables,
        max_records=args.max_records,
        confirm=confirm,
        request_id=args.request_id,
        forget_pending=args.forget_pending,
        **_settings(args),
    )
    if summary.status == "refused":
        say(
            "datafiniti-loader: not confirmed: nothing downloaded (--yes skips the question)",
            file=sys.stderr,
        )
        return 1
    say(summary.describe())
    return 0


def _confirmed(question: str) -> bool:
    """Ask on stderr, read a line from stdin (a pipe works too); only yes is yes."""
    say(question, end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def _write_parquet(
    args: argparse.Namespace,
    sources: Sources,
    *,
    dedupe: bool = False,
    wait: bool | float | None = None,
) -> int:
    """``--output`` and its options applied to ``sources``; print what was written."""
    from .api import to_parquet

    summary = to_parquet(
        sources,
        args.output,
        token=args.token,
        api_url=args.api_url,
        columns=_split(args.columns),
        provenance=not args.no_provenance,
        wait=args.wait if wait is None else wait,
        cache=_cache_setting(args),
        max_workers=args.max_workers,
        progress=False if args.quiet else None,
        partition_by=_split(args.partition_by),
        overwrite=args.overwrite,
        dedupe=dedupe,
        dtype=args.dtype,
        tables=args.tables,
    )
    if summary.tables:
        listed = ", ".join(f"{name} ({rows:,} rows)" for name, rows in summary.tables)
        say(f"wrote tables {listed} to {summary.path} ({summary.bytes / 1e6:.1f} MB of Parquet)")
        return 0
    say(
        f"wrote {summary.rows:,} rows x {len(summary.columns)} columns from "
        f"{summary.result_files} result file(s) to {summary.path} "
        f"({summary.bytes / 1e6:.1f} MB of Parquet)"
    )
    return 0


def _cache(args: argparse.Namespace) -> int:
    from .fetch.cache import CacheScope, FileCache
    from .sinks.delta import api_host

    if args.no_cache:
        say(
            "datafiniti-loader: usage: cache info|clear look at a cache; --no-cache names "
            "none (use --cache-dir DIR, or neither for the default)",
            file=sys.stderr,
        )
        return 2
    api_url = resolve_api_url(args.api_url)
    root = resolve_cache_dir(_cache_setting(args), api_url)
    assert root is not None
    cache = FileCache(root, api_url)
    # An API named (--api-url or DATAFINITI_API_URL) narrows both verbs to its entries.
    named = bool(args.api_url or os.environ.get("DATAFINITI_API_URL"))
    scope = CacheScope(this_host=named, request=args.request)
    if args.action == "clear":
        info = cache.clear(older_than=args.older_than, scope=scope)
        what = f" of {api_host(api_url)}" if named else ""
        what += f" for request {args.request}" if args.request is not None else ""
        say(f"{info.path} cleared {info.files} file(s){what}, {info.bytes / 1e6:.1f} MB")
        return 0
    info = cache.info(scope)
    say(f"{info.path} holds {info.files} file(s), {info.bytes / 1e6:.1f} MB")
    for host, (files, size) in info.by_host.items():
        say(f"  {host}: {files} file(s), {size / 1e6:.1f} MB")
    return 0


_AGE_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def _age(text: str) -> timedelta:
    """``7d``, ``12h``, ``30m`` or ``45s`` as a duration (argparse type)."""
    number, unit = text[:-1], text[-1:].lower()
    if unit not in _AGE_UNITS or not number.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not an age such as 7d, 12h or 30m")
    return timedelta(seconds=int(number) * _AGE_UNITS[unit])


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


if __name__ == "__main__":
    sys.exit(main())
