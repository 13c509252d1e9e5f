"""Putting a finished dataset at its target: never over someone else's files, never half.

A dataset is written into a staging directory beside the target
(``<target>.tmp-<pid>-<random>``) and moved into place only when complete,
with a manifest (``_datafiniti_loader.json``) listing its files, which is how
this library recognises a dataset it wrote. What is at the target decides:

- nothing: the staging directory is renamed there, refusing (on Linux,
  atomically) if something appeared meanwhile;
- an empty directory, or a dataset this library wrote (manifest, or Parquet
  files that all carry its metadata) with nothing else in it: with
  ``overwrite`` the two are exchanged in one step on Linux (``renameat2``
  ``RENAME_EXCHANGE``), so the target always holds the old dataset or the
  new one, and the old one is then removed;
- anything else: :class:`~datafiniti_loader.errors.TargetExists`, naming what
  was found. The library never deletes files it did not write.

On object stores (``s3://``...) there are no atomic directory moves: the
same checks run, then the old dataset is removed and the new one moved in.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from ..errors import TargetExists
from ..fetch.orphans import OWNER_MARKER, mark_owned, remove_orphans

__all__ = [
    "MANIFEST",
    "METADATA_KEY",
    "check_target",
    "make_staging",
    "publish",
    "remove_staging",
    "staging_path",
    "sweep_orphans",
    "write_manifest",
]

MANIFEST = "_datafiniti_loader.json"
METADATA_KEY = b"datafiniti_loader"
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def make_staging(fs: Any, staging: str) -> None:
    """Make the staging directory, marked as this process's (so only ours is ever swept)."""
    fs.makedirs(staging, exist_ok=True)
    if isinstance(fs, LocalFileSystem):  # swept only there: see sweep_orphans
        mark_owned(Path(staging))


def staging_path(target: str) -> str:
    """A fresh staging directory name beside ``target``, naming this process."""
    return f"{target}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def check_target(fs: Any, target: str, shown: str, overwrite: bool) -> bool:
    """Whether ``target`` holds something to replace; raise if it may not be touched.

    Raises
    ------
    TargetExists
        ``target`` exists and ``overwrite`` is off, or it holds anything but
        a dataset this library wrote (or an empty directory).
    """
    if not fs.exists(target):
        return False
    if not fs.isdir(target):
        raise TargetExists(
            f"{shown} is a file, not a dataset directory; it was left as it is. "
            "Choose another output path."
        )
    foreign = _foreign_files(fs, target)
    if foreign:
        listed = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        raise TargetExists(
            f"{shown} holds files this library did not write ({listed}); it replaces only "
            "a dataset it wrote, and nothing was deleted. Choose another output path, or "
            "move those files away yourself."
        )
    if not overwrite:
        raise TargetExists(
            f"{shown} already holds a dataset. Pass overwrite=True (--overwrite) to replace "
            "it, or choose another output path."
        )
    return True


def write_manifest(fs: Any, staging: str, manifest: dict[str, Any]) -> None:
    """The manifest that marks ``staging`` as this library's dataset (written last)."""
    with fs.open(f"{staging}/{MANIFEST}", "w") as handle:
        json.dump(manifest, handle, indent=1)


def publish(fs: Any, staging: str, target: str, shown: str, overwrite: bool) -> None:
    """Move the complete dataset at ``staging`` to ``target`` (see the module docs)."""
    replace = check_target(fs, target, shown, overwrite)
    if isinstance(fs, LocalFileSystem):
        (Path(staging) / OWNER_MARKER).unlink(missing_ok=True)  # a dataset now, not a scratch
        _publish_local(staging, target, shown, replace)
    else:
        if replace:
            fs.rm(target, recursive=True)
        elif fs.exists(target):  # pragma: no cover - a race on an object store
            raise _appeared(shown)
        _move_objects(fs, staging, target)


def _move_objects(fs: Any, staging: str, target: str) -> None:
    """Move a dataset on an object store key by key, its manifest last.

    Object stores have no directories to move (``mv`` of a prefix would ask
    for a key of that name); a reader that finds the manifest finds every file.
    """
    fs.invalidate_cache(staging)  # other processes (dask workers) may have written there
    keys = sorted(fs.find(staging), key=lambda key: key.endswith(MANIFEST))
    for key in keys:
        fs.mv(key, f"{target}/{key[len(staging) :].lstrip('/')}")
    with contextlib.suppress(OSError):
        fs.rm(staging, recursive=True)


def _publish_local(staging: str, target: str, shown: str, replace: bool) -> None:
    if not replace:
        try:
            _rename(staging, target, _RENAME_NOREPLACE)
        except FileExistsError:
            raise _appeared(shown) from None
        return
    _rename(staging, target, _RENAME_EXCHANGE)  # staging now holds the old dataset
    remove_staging(LocalFileSystem(), staging)


def _rename(source: str, target: str, flags: int) -> None:
    """``renameat2`` where the kernel has it; otherwise the closest plain renames."""
    call = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if call is not None:
        done = call(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags)
        if done == 0:
            return
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise FileExistsError(code, os.strerror(code), target)
        if code not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(code, os.strerror(code), target)
    _rename_plainly(source, target, flags)


def _rename_plainly(source: str, target: str, flags: int) -> None:
    """Without ``renameat2``: check, then rename; an exchange goes through a side name."""
    if flags == _RENAME_NOREPLACE:
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "exists", target)
        os.rename(source, target)
        return
    aside = f"{source}.old"
    os.rename(target, aside)
    try:
        os.rename(source, target)
    except OSError:
        os.rename(aside, target)  # put the old dataset back
        raise
    os.rename(aside, source)


def remove_staging(fs: Any, staging: str) -> None:
    """Remove a staging directory (it holds only what this library wrote)."""
    with contextlib.suppress(OSError):
        if fs.exists(staging):
            fs.rm(staging, recursive=True)


def sweep_orphans(fs: Any, target: str) -> None:
    """Remove staging directories beside ``target`` left by processes that were killed."""
    if isinstance(fs, LocalFileSystem):
        parent, name = os.path.split(target)
        remove_orphans(Path(parent or "."), f"{name}.tmp-")


def _appeared(shown: str) -> TargetExists:
    return TargetExists(
        f"{shown} appeared while this dataset was being written (another run?); it was "
        "left as it is and nothing was written there. Choose another output path, or pass "
        "overwrite=True (--overwrite) to replace a dataset this library wrote."
    )


def _foreign_files(fs: Any, target: str) -> list[str]:
    """Files under ``target`` that are not part of a dataset this library wrote."""
    root = target.rstrip("/")
    files = sorted(str(PurePosixPath(p).relative_to(root)) for p in fs.find(root))
    if not files:
        return []
    listed = _manifest_files(fs, root)
    if listed is not None:
        return [f for f in files if f not in listed and f != MANIFEST]
    return [f for f in files if not _carries_our_metadata(fs, f"{root}/{f}")]


def _manifest_files(fs: Any, root: str) -> set[str] | None:
    try:
        with fs.open(f"{root}/{MANIFEST}", "r") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError):
        return None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    library = str(manifest.get("library", "")) if isinstance(manifest, dict) else ""
    if not isinstance(files, list) or not library.startswith("datafiniti-loader"):
        return None
    return {str(f) for f in files}


def _carries_our_metadata(fs: Any, path: str) -> bool:
    """A Parquet file written by an earlier version (before manifests): our footer key."""
    if not path.endswith(".parquet"):
        return False
    try:
        with fs.open(path, "rb") as handle:
            metadata = pq.read_schema(handle).metadata or {}
    except Exception:
        return False
    return METADATA_KEY in metadata
