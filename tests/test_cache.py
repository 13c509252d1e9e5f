"""The file cache: verified before use, cleared without touching what it did not write."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import Loader
from datafiniti_loader import DownloadError, StorageError
from datafiniti_loader.fetch.cache import FileCache
from datafiniti_loader.sandbox import Sandbox

LOAD_TO_PICKLE = r"""
import sys
from datafiniti_loader import load_results
load_results(int(sys.argv[1]), progress=False).to_pickle(sys.argv[2])
"""


def load_in_fresh_process(sandbox: Sandbox, cache: Path, rid: int, out: Path) -> pd.DataFrame:
    env = {**os.environ, "DATAFINITI_API_URL": sandbox.api_url,
           "DATAFINITI_API_TOKEN": sandbox.token, "DATAFINITI_CACHE_DIR": str(cache)}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", LOAD_TO_PICKLE, str(rid), str(out)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr  # no crash, no traceback
    return pd.read_pickle(out)


def flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x5A
    path.write_bytes(bytes(data))


def cache_files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file() and p.stat().st_size > 0)


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_every_cached_file_damaged_still_loads_exactly_the_cold_frame(
    loader: Loader, sandbox: Sandbox, fixture_files, cache_dir: Path, tmp_path: Path, kind: str
) -> None:
    files = fixture_files["products"] if kind == "csv" else fixture_files["products_json"]
    rid = sandbox.add_request(files)
    cold = loader.load(rid)
    damaged = cache_files(cache_dir)
    assert any(p.suffix == ".arrow" for p in damaged)  # parsed copies were there to damage
    for path in damaged:
        flip_middle_byte(path)
    warm = load_in_fresh_process(sandbox, cache_dir, rid, tmp_path / "frame.pkl")
    pd.testing.assert_frame_equal(warm, cold)


@pytest.mark.parametrize("target", ["parsed", "download"])
def test_a_damaged_entry_is_discarded_rebuilt_and_logged(
    loader: Loader, sandbox: Sandbox, fixture_files, cache_dir: Path, target: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    rid = sandbox.add_request(fixture_files["businesses"])
    cold = loader.load(rid)
    (parsed,) = cache_dir.rglob("*.parsed-v*.arrow")
    (download,) = [p for p in cache_dir.rglob(f"*{rid}_1.csv") if not p.name.startswith(".")]
    if target == "parsed":
        flip_middle_byte(parsed)
    else:
        parsed.unlink()  # the download is read only when no sound parsed copy vouches for it
        flip_middle_byte(download)
    sandbox.log.clear()
    with caplog.at_level(logging.WARNING, logger="datafiniti_loader"):
        pd.testing.assert_frame_equal(loader.load(rid), cold)
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "damaged" in warning.getMessage() and f"{rid}_1.csv" in warning.getMessage()
    downloads = [e for e in sandbox.log if e.server == "bucket"]
    assert len(downloads) == (1 if target == "download" else 0)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="datafiniti_loader"):
        pd.testing.assert_frame_equal(loader.load(rid), cold)  # rebuilt: quiet again
    assert not caplog.records


def test_an_older_formats_parsed_copy_is_ignored_then_replaced(
    loader: Loader, sandbox: Sandbox, fixture_files, cache_dir: Path
) -> None:
    """After an upgrade, copies in the old format are made again, and the old ones go."""
    rid = sandbox.add_request(fixture_files["businesses"])
    cold = loader.load(rid)
    (parsed,) = cache_dir.rglob("*.parsed-v*.arrow")
    (record,) = cache_dir.rglob("*.parsed-v*.json")
    current = parsed.name.split(".parsed-v", 1)[1].split(".", 1)[0]
    old_copy = parsed.with_name(parsed.name.replace(f"-v{current}.", "-v0."))
    old_record = record.with_name(record.name.replace(f"-v{current}.", "-v0."))
    parsed.rename(old_copy)  # as an older version left them
    record.rename(old_record)
    theirs = parsed.with_name(parsed.name + ".notes")  # not the library's: must stay
    theirs.write_text("mine")
    newer = parsed.with_name(parsed.name.replace(f"-v{current}.", f"-v{int(current) + 1}."))
    newer.write_bytes(b"a newer version's copy, sharing the cache")
    pd.testing.assert_frame_equal(loader.load(rid), cold)
    assert parsed.exists() and record.exists()
    assert not old_copy.exists() and not old_record.exists()
    assert theirs.read_text() == "mine" and newer.exists()


def test_a_parsed_copy_of_other_bytes_is_not_used(
    loader: Loader, sandbox: Sandbox, fixture_files, cache_dir: Path
) -> None:
    """A parsed copy vouches only for the download it was made from."""
    first = sandbox.add_request(fixture_files["businesses"])
    second = sandbox.add_request(fixture_files["products"][:1])
    loader.load(first)
    expected = loader.load(second)
    for suffix in (".arrow", ".json"):  # the first file's copy and its record, under the second's
        (source,) = cache_dir.rglob(f"*{first}_1.csv.parsed-v*{suffix}")
        (target,) = cache_dir.rglob(f"*{second}_1.csv.parsed-v*{suffix}")
        target.write_bytes(source.read_bytes())
    pd.testing.assert_frame_equal(loader.load(second), expected)


def test_cache_clear_deletes_only_what_the_cache_wrote(
    loader: Loader, sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    mine = tmp_path / "work"
    (mine / "notes").mkdir(parents=True)
    (mine / "report.csv").write_text("a,b\n1,2\n")
    (mine / "notes" / "todo.json").write_text('{"size": 3}')
    (mine / "12").mkdir()
    (mine / "12" / "1-2-keep.txt").write_text("not a cache entry: no record of ours")
    rid = sandbox.add_request(fixture_files["products"])
    loader.load(rid, cache=mine)
    sandbox.faults.drops.extend([10_000] * 4)  # and a partial download
    with pytest.raises(DownloadError, match="tries"):
        loader.load(sandbox.add_request(fixture_files["products"][:1]), cache=mine)
    assert list(mine.rglob(".*.partial"))
    cache = FileCache(mine, sandbox.api_url)
    info = cache.info()
    assert info.files == 2 and info.bytes > 0
    cleared = cache.clear()
    assert cleared.files == 2
    left = sorted(str(p.relative_to(mine)) for p in mine.rglob("*"))
    assert left == ["12", "12/1-2-keep.txt", "notes", "notes/todo.json", "report.csv"]
    assert cache.info().files == 0


def test_cli_cache_clear_in_the_current_directory_keeps_the_users_files(
    sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    work = tmp_path / "project"
    work.mkdir()
    (work / "analysis.py").write_text("print('mine')\n")
    env = {**os.environ, "DATAFINITI_API_URL": sandbox.api_url,
           "DATAFINITI_API_TOKEN": sandbox.token}  # fmt: skip
    rid = sandbox.add_request(fixture_files["businesses"])
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "datafiniti_loader.cli", *a, "--cache-dir", "."],
        cwd=work, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run("load", str(rid), "--output", "out").returncode == 0
    cleared = run("cache", "clear")
    assert cleared.returncode == 0 and "Traceback" not in cleared.stderr, cleared.stderr
    assert "cleared 1 file(s)" in cleared.stdout
    assert sorted(p.name for p in work.iterdir()) == ["analysis.py", "out"]


def test_a_warm_reload_uses_the_kept_type_verdicts_and_gets_the_same_frame(
    loader: Loader,
    sandbox: Sandbox,
    fixture_files,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datafiniti_loader.read.schema import SchemaBuilder

    rid = sandbox.add_request(fixture_files["products"])
    cold = loader.load(rid)
    records = [json.loads(p.read_text()) for p in cache_dir.rglob("*.parsed-v*.json")]
    assert len(records) == 2 and all(r["verdicts"] for r in records)
    observed: list[int] = []
    real_observe = SchemaBuilder.observe
    monkeypatch.setattr(
        SchemaBuilder,
        "observe",
        lambda self, *a, **k: (observed.append(1), real_observe(self, *a, **k))[1],
    )
    warm = loader.load(rid)
    assert observed == []  # nothing re-checked: the kept verdicts served
    pd.testing.assert_frame_equal(warm, cold)
    data = warm.drop(columns=[c for c in warm.columns if c.startswith("_")])
    typed = [c for c, t in data.dtypes.items() if str(t) not in ("str", "object", "string")]
    assert typed  # the verdicts typed columns, not just left everything as text


def test_a_tampered_verdict_is_not_trusted(
    loader: Loader, sandbox: Sandbox, fixture_files, cache_dir: Path
) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    cold = loader.load(rid)
    assert cold["postalCode"].dtype != "Int64"  # 02134 and friends stay text
    for record_path in cache_dir.rglob("*.parsed-v*.json"):
        record = json.loads(record_path.read_text())
        for verdict in record["verdicts"]:
            if verdict[0] == "postalCode":
                verdict[2] = ["int"]  # a lie that would turn 02134 into 2134
        record_path.write_text(json.dumps(record))
    pd.testing.assert_frame_equal(loader.load(rid), cold)


def test_cache_info_by_host_and_clear_older_than(
    loader: Loader, sandbox: Sandbox, fixture_files, cache_dir: Path
) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    loader.load(rid)
    with Sandbox() as other:  # a later sandbox run: another port, another host directory
        fresh = other.add_request(fixture_files["businesses"])
        loader.load(fresh, token=other.token, api_url=other.api_url)
    env = {**os.environ, "DATAFINITI_CACHE_DIR": str(cache_dir)}
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "datafiniti_loader.cli", "cache", *a],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    info = run("info")
    assert info.returncode == 0 and "holds 3 file(s)" in info.stdout
    old_host = sandbox.api_url.split("//")[1].split("/")[0].replace(":", "_")
    assert f"{old_host}: 2 file(s)" in info.stdout
    for path in (cache_dir / old_host).rglob("*"):  # the first run's files: ten days old
        if path.is_file():
            os.utime(path, (path.stat().st_atime, path.stat().st_mtime - 10 * 86400))
    cleared = run("clear", "--older-than", "7d")
    assert cleared.returncode == 0 and "cleared 2 file(s)" in cleared.stdout, cleared.stderr
    assert not (cache_dir / old_host).exists()
    assert "holds 1 file(s)" in run("info").stdout
    assert run("clear", "--older-than", "soon").returncode == 2  # a usage error


def test_a_partial_download_planted_as_a_symlink_is_refused_and_its_target_untouched(
    loader: Loader, sandbox: Sandbox, fixture_files, cache_dir: Path, tmp_path: Path, caplog
) -> None:
    rid = sandbox.add_request(fixture_files["products"][:1])
    sandbox.faults.drops.extend([10_000] * 4)  # gives up, keeping a partial to resume
    with pytest.raises(DownloadError):
        loader.load(rid)
    (partial,) = cache_dir.rglob(".*.partial")
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    partial.unlink()
    partial.symlink_to(victim)
    with pytest.raises(StorageError, match="symbolic link") as caught:
        loader.load(rid)
    assert victim.read_bytes() == b"precious"
    assert "symbolic link" in caplog.text and "X-Amz" not in str(caught.value)
    partial.unlink()  # the user removes the link: the next load starts over
    assert len(loader.load(rid)) == 48


def test_a_lock_file_planted_as_a_symlink_creates_nothing_elsewhere(
    loader: Loader, sandbox: Sandbox, fixture_files, cache_dir: Path, tmp_path: Path
) -> None:
    rid = sandbox.add_request(fixture_files["products"][:1])
    sandbox.faults.drops.extend([10_000] * 4)
    with pytest.raises(DownloadError):
        loader.load(rid)
    assert not list(cache_dir.rglob(".*.lock"))  # its holder removed it on the way out
    (partial,) = cache_dir.rglob(".*.partial")
    lock = partial.with_name(partial.name.removesuffix(".partial") + ".lock")
    elsewhere = tmp_path / "elsewhere" / "created-by-the-loader"
    elsewhere.parent.mkdir()
    lock.symlink_to(elsewhere)
    with pytest.raises(StorageError, match="symbolic link"):
        loader.load(rid)
    assert not elsewhere.exists()


@pytest.mark.parametrize(
    ("name", "broken", "fixed"),
    [
        ("9_1.csv", b"id,name\n1,a\n2,b,c\n", b"id,name\n1,a\n2,b\n"),
        ("9_1.txt", b'{"id":"1"}\n{"id":\n', b'{"id":"1"}\n{"id":"2"}\n'),
    ],
)
def test_a_complete_file_that_cannot_be_read_is_dropped_from_the_cache(
    loader: Loader, sandbox: Sandbox, cache_dir: Path, tmp_path: Path, name, broken, fixed
) -> None:
    from datafiniti_loader import ParseError

    source = tmp_path / name
    source.write_bytes(broken)
    rid = sandbox.add_request([source])
    with pytest.raises(ParseError, match="cached copy was removed"):
        loader.load(rid)
    assert [p.name for p in cache_dir.rglob(f"*-{rid}_1.*")] == []  # no lock file left either
    source.write_bytes(fixed)  # served anew (Datafiniti re-wrote it, or a proxy stopped mangling)
    served = next(iter(sandbox.objects.values()))
    served.size, served.etag = len(fixed), '"fixed"'
    sandbox.log.clear()
    assert len(loader.load(rid)) == 2
    assert [e.status for e in sandbox.log if e.server == "bucket"] == [200]


def test_no_lock_file_is_left_behind_and_waiters_still_wait(
    loader: Loader, sandbox: Sandbox, fixture_files, cache_dir: Path
) -> None:
    import threading

    rid = sandbox.add_request(fixture_files["products"])
    sandbox.faults.throttle = 200_000  # slow enough for the loads to meet at the lock
    frames: list[int] = []
    loads = [
        threading.Thread(target=lambda: frames.append(len(loader.load(rid)))) for _ in range(3)
    ]
    for load in loads:
        load.start()
    for load in loads:
        load.join()
    sandbox.faults.throttle = None
    assert frames == [72, 72, 72]
    gets = [e for e in sandbox.log if e.server == "bucket" and e.method == "GET"]
    assert len(gets) == 2  # one download per file: the others waited for it
    assert not list(cache_dir.rglob("*.lock"))
