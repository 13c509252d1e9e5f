"""The command line, run as a user runs it: a real process, real exit codes."""

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from datafiniti_loader.sandbox import Sandbox


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, answer: str = ""
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "datafiniti_loader.cli", *args],
        input=answer,
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=120,
    )


@pytest.fixture
def env(sandbox: Sandbox, tmp_path: Path) -> dict[str, str]:
    return {
        "DATAFINITI_API_URL": sandbox.api_url,
        "DATAFINITI_API_TOKEN": sandbox.token,
        "DATAFINITI_CACHE_DIR": str(tmp_path / "cache"),
    }


def test_status_and_files(sandbox: Sandbox, env: dict[str, str], fixture_files) -> None:
    rid = sandbox.add_request(fixture_files["products"])
    status = run("status", str(rid), env=env)
    assert status.returncode == 0 and f"request {rid} is COMPLETED" in status.stdout
    files = run("files", str(rid), env=env)
    assert files.returncode == 0
    lines = files.stdout.strip().splitlines()
    assert lines[0].split() == ["ID", "NAME", "FORMAT", "CREATED", "(UTC)", "EXPIRES", "IN"]
    assert f"{rid}_1.csv" in lines[1] and "6d 23h" in lines[1] and "csv" in lines[1]
    assert "X-Amz" not in files.stdout


def test_load_writes_parquet(
    sandbox: Sandbox, env: dict[str, str], fixture_files, tmp_path: Path
) -> None:
    rid = sandbox.add_request(fixture_files["businesses"])
    out = tmp_path / "out"
    result = run("load", str(rid), "--output", str(out), "--quiet", env=env)
    assert result.returncode == 0, result.stderr
    assert "wrote 30 rows x 15 columns from 1 result file(s)" in result.stdout
    assert list(out.glob("*.parquet"))
    again = run("load", str(rid), "--output", str(out), "--quiet", env=env)
    assert again.returncode == 1 and "--overwrite" in again.stderr


def test_errors_are_one_line_exit_1_no_traceback(sandbox: Sandbox, env: dict[str, str]) -> None:
    result = run("files", "999", env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "no download request 999" in result.stderr
    bad = run("status", "1", "--token", "nope", env=env)
    assert bad.returncode == 1 and "refused the token" in bad.stderr and "nope" not in bad.stderr


def test_missing_token_is_explained(sandbox: Sandbox, isolated_env: Path) -> None:
    result = run("files", "1", "--api-url", sandbox.api_url, env={"HOME": str(isolated_env)})
    assert result.returncode == 1 and "DATAFINITI_API_TOKEN" in result.stderr


def test_usage_errors_exit_2() -> None:
    assert run("frobnicate").returncode == 2
    assert run("load", "1").returncode == 2  # --output is required


def test_cache_info_and_clear(sandbox: Sandbox, env: dict[str, str], fixture_files) -> None:
    rid = sandbox.add_request(fixture_files["businesses"])
    assert (
        run("load", str(rid), "-o", env["DATAFINITI_CACHE_DIR"] + "-out", "-q", env=env).returncode
        == 0
    )
    info = run("cache", "info", "--api-url", sandbox.api_url, env=env)
    assert info.returncode == 0 and "1 file(s)" in info.stdout
    cleared = run("cache", "clear", env=env)
    assert cleared.returncode == 0 and "cleared 1 file(s)" in cleared.stdout
    assert "0 file(s)" in run("cache", "info", env=env).stdout


def test_demo_runs_end_to_end_and_leaves_only_its_output(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"  # the process's temporary directory, watched
    scratch.mkdir()
    work = tmp_path / "work"  # outside the repository: fixtures are generated
    work.mkdir()
    result = run("demo", "--output", "demo", "--quiet", cwd=work, env={"TMPDIR": str(scratch)})
    assert result.returncode == 0, result.stderr
    assert "Loaded 72 rows" in result.stdout and "Wrote 72 rows to Parquet" in result.stdout
    assert "36 records match; created download" in result.stdout
    assert list((work / "demo").glob("*.parquet"))
    assert sorted(p.name for p in work.iterdir()) == ["demo"]
    assert list(scratch.iterdir()) == []


def test_sandbox_stops_on_ctrl_c_and_leaves_nothing(tmp_path: Path) -> None:
    import signal

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    server = subprocess.Popen(
        [sys.executable, "-m", "datafiniti_loader.cli", "sandbox"],
        cwd=tmp_path, env={**os.environ, "TMPDIR": str(scratch)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stdout is not None
    lines = [server.stdout.readline() for _ in range(3)]
    assert any("DATAFINITI_API_URL" in line for line in lines)
    assert list(scratch.iterdir())  # the generated fixtures being served
    server.send_signal(signal.SIGINT)
    out, err = server.communicate(timeout=30)
    assert server.returncode == 0 and "sandbox stopped" in out  # a normal stop
    assert "interrupted" not in err and "Traceback" not in err
    assert list(scratch.iterdir()) == []


def test_version_answers_without_loading_the_data_stack() -> None:
    probe = (
        "import sys\nfrom datafiniti_loader.cli import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('pandas', 'pyarrow', 'fsspec', 'requests') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "datafiniti-loader" in done.stdout and done.stdout.strip().endswith("[]"), done.stdout


def test_global_options_work_before_or_after_the_verb(
    sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    rid = str(sandbox.add_request(fixture_files["products"]))
    connection = ["--token", sandbox.token, "--api-url", sandbox.api_url]
    before = run("-q", *connection, "status", rid)
    after = run("status", rid, "-q", *connection)
    mixed = run("--token", sandbox.token, "status", rid, "--api-url", sandbox.api_url)
    for done in (before, after, mixed):
        assert done.returncode == 0 and "COMPLETED" in done.stdout, done.stderr
    cache = tmp_path / "cache-before-verb"
    loaded = run(
        "--cache-dir", str(cache), "-q", *connection, "load", rid, "-o", str(tmp_path / "o")
    )
    assert loaded.returncode == 0, loaded.stderr
    assert list(cache.rglob("*.json"))  # the option given before the verb was used


def test_sandbox_serves_your_files_on_a_fixed_port_and_token(fixture_files, tmp_path: Path) -> None:
    import shutil
    import signal
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mine = [tmp_path / "a.csv", tmp_path / "b.csv"]
    for source, target in zip(fixture_files["products"], mine, strict=True):
        shutil.copy(source, target)

    def serve() -> tuple[dict[str, str], list[str], subprocess.Popen[str]]:
        server = subprocess.Popen(
            [sys.executable, "-m", "datafiniti_loader.cli", "sandbox", "--serve", *map(str, mine),
             "--port", str(port), "--token", "my-token"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert server.stdout is not None
        lines = [server.stdout.readline().strip() for _ in range(5)]
        exports = dict(
            line.removeprefix("export ").split("=", 1)
            for line in lines
            if line.startswith("export ")
        )
        return exports, lines, server

    def stop(server: subprocess.Popen[str]) -> None:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=30)

    exports, lines, server = serve()
    try:
        assert exports["DATAFINITI_API_URL"] == f"http://127.0.0.1:{port}/v3"
        assert exports["DATAFINITI_API_TOKEN"] == "my-token"
        (request,) = [line for line in lines if line.startswith("request ")]
        rid = request.split()[1].rstrip(":")
        assert "2 file(s)" in request
        listed = run("files", rid, env=exports)
        assert listed.returncode == 0 and "a.csv" not in listed.stdout, listed.stderr
        first_ids = [row.split()[0] for row in listed.stdout.splitlines()[1:]]
        assert len(first_ids) == 2
    finally:
        stop(server)
    mine[0].write_text(mine[0].read_text().replace("Nike", "Acme"))  # a changed file
    exports_again, _, server = serve()
    try:
        assert exports_again == exports  # the pipeline's settings survive the restart
        ids_again = [r.split()[0] for r in run("files", rid, env=exports).stdout.splitlines()[1:]]
        assert ids_again[1] == first_ids[1] and ids_again[0] != first_ids[0]
    finally:
        stop(server)


def test_each_verb_offers_only_options_that_mean_something_and_explains_them() -> None:
    from datafiniti_loader.cli import build_parser

    parser = build_parser()
    verbs = next(
        a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction)
    )
    offered = {
        name: {o for a in sub._actions for o in a.option_strings}
        for name, sub in verbs.choices.items()
    }
    assert "--cache-dir" not in offered["status"] and "--api-url" not in offered["sandbox"]
    assert "--token" not in offered["cache"] and "--cache-dir" in offered["load"]
    for name, sub in verbs.choices.items():
        unexplained = [a.dest for a in sub._actions if not a.help]
        assert unexplained == [], f"{name}: {unexplained}"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, str]]:
    """``datafiniti-loader sandbox`` in its own process; the settings it prints."""
    import signal

    server = subprocess.Popen(
        [sys.executable, "-m", "datafiniti_loader.cli", "sandbox"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    settings = {"DATAFINITI_CACHE_DIR": str(tmp_path / "cache")}
    while "v4" not in settings:
        line = server.stdout.readline()
        assert line, server.stderr.read() if server.stderr else ""
        if line.startswith("export "):
            key, value = line.removeprefix("export ").strip().split("=", 1)
            settings[key] = value
        if line.startswith("API v4"):
            settings["v4"] = line.strip().split("=", 1)[1]
    yield settings
    server.send_signal(signal.SIGINT)
    server.communicate(timeout=30)


def run_in(settings: dict[str, str], *args: str, v4: bool = False, answer: str = "") -> Any:
    env = {k: v for k, v in settings.items() if k != "v4"}
    if v4:
        env["DATAFINITI_API_URL"] = settings["v4"]
    return run(*args, env=env, answer=answer)


def test_count_download_cancel_and_merge_against_the_sandbox(
    served: dict[str, str], tmp_path: Path
) -> None:
    counted = run_in(served, "count", "brand:Sony", "--type", "products", v4=True)
    assert counted.returncode == 0, counted.stderr
    assert counted.stdout.strip() == "36 products record(s) match 'brand:Sony'"
    on_v3 = run_in(served, "count", "brand:Sony")
    assert on_v3.returncode == 1 and "needs API v4" in on_v3.stderr

    # Without --yes it asks; anything but yes creates nothing.
    refused = run_in(served, "download", "brand:Sony", "--records", "10", v4=True, answer="n\n")
    assert refused.returncode == 1 and "no download created" in refused.stderr
    assert "36 products record(s) match; the download would hold 10" in refused.stdout
    assert "created" not in refused.stdout

    out = tmp_path / "sony"
    made = run_in(
        served, "-q", "download", "brand:Sony", "--records", "all", "--output", str(out),
        v4=True, answer="yes\n",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    first = made.stdout.split("created download request ")[1].split()[0]
    assert "wrote 72 rows" in made.stdout and list(out.glob("*.parquet"))

    again = run_in(served, "download", "brand:Sony", "--records", "5", "--yes", "--wait", "-q")
    assert again.returncode == 0, again.stderr  # v3: no count, no question with --yes
    assert "API v3 cannot count" in again.stdout and "is COMPLETED" in again.stdout
    second = again.stdout.split("created download request ")[1].split()[0]

    merged = tmp_path / "merged"
    loaded = run_in(served, "load", first, second, "--dedupe", "-o", str(merged), "-q")
    assert loaded.returncode == 0, loaded.stderr
    import pandas as pd

    frame = pd.read_parquet(merged)
    # The second download holds 5 records (as asked); ties go to it, the later.
    records = frame.groupby("_request_id")["id"].nunique().to_dict()
    assert len(frame) == 72 and records == {int(first): 31, int(second): 5}

    running = run_in(served, "download", "brand:Sony", "--records", "3", "--yes", v4=True)
    rid = running.stdout.split("created download request ")[1].split()[0]
    assert f"next: datafiniti-loader load {rid} --wait" in running.stdout
    cancelled = run_in(served, "cancel", rid, v4=True)
    assert cancelled.returncode == 0 and f"request {rid} is cancelled" in cancelled.stdout
    late = run_in(served, "load", rid, "--wait", "-o", str(tmp_path / "late"), "-q", v4=True)
    assert late.returncode == 1 and "cancelled" in late.stderr


def test_merge_and_history_against_the_sandbox(served: dict[str, str], tmp_path: Path) -> None:
    pytest.importorskip("deltalake")
    made = [
        run_in(served, "download", "brand:Sony", "--records", "all", "--yes", "--wait", "-q")
        for _ in range(2)
    ]
    first, second = (m.stdout.split("created download request ")[1].split()[0] for m in made)
    table = str(tmp_path / "table")
    created = run_in(served, "merge", first, "--into", table, "-q")
    assert created.returncode == 0, created.stderr
    assert "version 0" in created.stdout and "72 rows inserted" in created.stdout
    newer = run_in(served, "merge", second, "--into", table, "-q")
    assert "version 1" in newer.stdout and "36 replaced" in newer.stdout  # ties: the newer id
    again = run_in(served, "merge", second, "--into", table, "-q")
    assert again.returncode == 0 and "already merged" in again.stdout
    listed = run_in(served, "history", table)
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.strip().splitlines()
    assert rows[0].split() == ["VERSION", "WHEN", "(UTC)", "OPERATION", "ROWS", "REQUESTS"]
    version, day, minute, *rest = rows[1].split()
    assert [version, *rest] == ["1", "MERGE", "72", second]
    assert datetime.strptime(f"{day} {minute}", "%Y-%m-%d %H:%M")  # the commit's time
    assert rows[2].split()[0] == "0" and rows[2].split()[-1] == first
    missing = run_in(served, "history", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "no Delta table" in missing.stderr
    assert missing.stdout == ""  # no header before the error


def test_load_with_types_on_request(
    sandbox: Sandbox, env: dict[str, str], fixture_files, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    rid = str(sandbox.add_request(fixture_files["products"]))
    out = tmp_path / "typed"
    done = run(
        "load", rid, "-o", str(out), "-q",
        "--dtype", "prices.amountMax=float64,prices.isSale=boolean,reviews.date=datetime64[ns, UTC]",
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    schema = pq.read_schema(next(out.glob("*.parquet")))
    assert str(schema.field("prices.amountMax").type) == "double"
    assert str(schema.field("prices.isSale").type) == "bool"
    assert str(schema.field("reviews.date").type) == "timestamp[ns, tz=UTC]"
    bad = run("load", rid, "-o", str(tmp_path / "bad"), "-q", "--dtype", "upc=float64", env=env)
    assert bad.returncode == 1 and "'upc'" in bad.stderr and "Traceback" not in bad.stderr
    assert (
        run("load", rid, "-o", str(tmp_path / "x"), "--dtype", "nonsense", env=env).returncode == 2
    )


def test_merge_and_history_without_the_delta_extra_say_which_extra_in_one_line(
    tmp_path: Path,
) -> None:
    hidden = (
        "import sys\nsys.modules['deltalake'] = None  # as if the [delta] extra were not installed\n"
        "from datafiniti_loader.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    for args in (
        ["history", str(tmp_path / "t")],
        ["merge", "6073", "--into", str(tmp_path / "t")],
    ):
        done = subprocess.run(
            [sys.executable, "-c", hidden, *args], capture_output=True, text=True, timeout=60,
            env={**os.environ, "DATAFINITI_API_TOKEN": "tok-123456", "DATAFINITI_API_URL": "http://127.0.0.1:9/v3"},
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        assert (
            "Traceback" not in done.stderr
            and "pip install 'datafiniti-loader[delta]'" in done.stderr
        )
        assert len(done.stderr.strip().splitlines()) == 1


def test_python_dash_m_runs_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "datafiniti_loader", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip().startswith("datafiniti-loader")


def test_output_piped_into_a_reader_that_stops_early_ends_quietly(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    many = []
    for n in range(2000):  # more lines than one pipe buffer (64 KiB) holds
        path = tmp_path / f"f{n}.csv"
        path.write_text("id\nA\n")
        many.append(path)
    rid = sandbox.add_request(many)
    shell = f"{sys.executable} -m datafiniti_loader.cli files {rid} | head -2"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, timeout=120,
        env={**os.environ, **env},
    )  # fmt: skip
    assert len(done.stdout.splitlines()) == 2
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def _sandbox_process(*args: str) -> tuple[dict[str, str], list[str], subprocess.Popen[str]]:
    """``datafiniti-loader sandbox ARGS`` in its own process: its exports and banner lines."""
    server = subprocess.Popen(
        [sys.executable, "-m", "datafiniti_loader.cli", "sandbox", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stdout is not None
    lines: list[str] = []
    while not lines or not lines[-1].startswith("API v4"):
        line = server.stdout.readline()
        assert line, server.stderr.read() if server.stderr else "the sandbox ended"
        lines.append(line.strip())
    exports = dict(
        line.removeprefix("export ").split("=", 1) for line in lines if line.startswith("export ")
    )
    return exports, lines, server


def _stop(server: subprocess.Popen[str]) -> None:
    import signal

    server.send_signal(signal.SIGINT)
    server.communicate(timeout=30)


def test_the_same_request_id_from_two_sandboxes_is_two_downloads(tmp_path: Path) -> None:
    pytest.importorskip("deltalake")
    header = "id,dateUpdated,name\n"
    week1, week2 = tmp_path / "week1.csv", tmp_path / "week2.csv"
    week1.write_text(header + "A,2026-11-01T00:00:00Z,first\n")
    week2.write_text(header + "A,2026-11-08T00:00:00Z,second\nB,2026-11-08T00:00:00Z,new\n")
    table = str(tmp_path / "table")
    said = []
    for week in (week1, week2):  # each sandbox calls its request 6073
        exports, lines, server = _sandbox_process("--serve", str(week))
        try:
            assert any(line.startswith("request 6073:") for line in lines)
            merged = run("-q", "merge", "6073", "--into", table, env=exports)
            assert merged.returncode == 0, merged.stderr
            said.append(merged.stdout)
        finally:
            _stop(server)
    assert "already merged" not in said[1] and "1 replaced" in said[1], said
    from deltalake import DeltaTable

    names = sorted(DeltaTable(table).to_pandas()["name"])
    assert names == ["new", "second"]


def test_the_sandbox_serves_several_requests_in_the_order_given(fixture_files, tmp_path) -> None:
    first, second = fixture_files["products"]
    exports, lines, server = _sandbox_process(
        "--serve", str(second), str(first), "--serve", str(first),
        "--request-id", "7001", "7002",
    )  # fmt: skip
    try:
        assert [line.split(":")[0] for line in lines if line.startswith("request ")] == [
            "request 7001", "request 7002"
        ]  # fmt: skip
        listed = run("files", "7001", env=exports)
        assert listed.returncode == 0, listed.stderr
        names = [row.split()[1] for row in listed.stdout.splitlines()[1:]]
        assert names == ["7001_1.csv", "7001_2.csv"]
        loaded = run("-q", "load", "7001", "-o", str(tmp_path / "o"), env=exports)
        assert loaded.returncode == 0, loaded.stderr
        import pandas as pd

        frame = pd.read_parquet(tmp_path / "o")
        expected = pd.read_csv(second, dtype=str)["id"].tolist()
        assert frame["id"].tolist()[: len(expected)] == expected  # the first file given first
    finally:
        _stop(server)
    bad = run("sandbox", "--serve", str(first), "--request-id", "1", "2")
    assert bad.returncode == 1 and "one id per group" in bad.stderr


def test_cache_info_and_clear_keep_to_the_api_and_request_named(
    sandbox: Sandbox, fixture_files, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    with Sandbox() as other:
        mine = [
            sandbox.add_request(fixture_files["products"]),
            sandbox.add_request(fixture_files["businesses"]),
        ]
        theirs = other.add_request(fixture_files["products"])
        for box, rid in ((sandbox, mine[0]), (sandbox, mine[1]), (other, theirs)):
            env = {"DATAFINITI_API_URL": box.api_url, "DATAFINITI_API_TOKEN": box.token}
            done = run("--cache-dir", str(cache), "-q", "load", str(rid),
                       "-o", str(tmp_path / f"o{rid}-{box.api_url[-9:-3]}"), env=env)  # fmt: skip
            assert done.returncode == 0, done.stderr
        host = sandbox.api_url.split("//")[1].split("/")[0].replace(":", "_")
        other_host = other.api_url.split("//")[1].split("/")[0].replace(":", "_")

        def cache_verb(*args: str, api: str | None) -> str:
            named = ["--api-url", api] if api else []
            done = run("cache", *args, "--cache-dir", str(cache), *named)
            assert done.returncode == 0, done.stderr
            return done.stdout

        shown = cache_verb("info", api=sandbox.api_url)
        assert host in shown and other_host not in shown
        everything = cache_verb("info", api=None)
        assert host in everything and other_host in everything
        cleared = cache_verb("clear", "--request", str(mine[0]), api=sandbox.api_url)
        assert f"for request {mine[0]}" in cleared and "cleared 2 file(s)" in cleared
        left = cache_verb("info", api=sandbox.api_url)
        assert "1 file(s)" in left.splitlines()[0]  # the businesses download stays
        cleared = cache_verb("clear", api=sandbox.api_url)
        assert "cleared 1 file(s)" in cleared
        assert f"{other_host}: 2 file(s)" in cache_verb("info", api=None)  # the other API's stays


def test_sandbox_loads_keep_out_of_the_users_cache(fixture_files, isolated_env: Path) -> None:
    from datafiniti_loader import load_results

    with Sandbox() as box:
        rid = box.add_request(fixture_files["products"])
        frame = load_results(rid, token=box.token, api_url=box.api_url, progress=False)
        assert len(frame) == 72
        kept = list((Path(box._scratch_dir()) / "cache").rglob("*.csv"))
        assert len(kept) == 2  # in the sandbox's own directory...
    assert not kept[0].exists()  # ...removed with it
    assert not (isolated_env / ".cache" / "datafiniti-loader").exists()  # the user's: untouched


def test_sigterm_stops_the_sandbox_as_ctrl_c_does(fixture_files, tmp_path: Path) -> None:
    import signal

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    server = subprocess.Popen(
        [sys.executable, "-m", "datafiniti_loader.cli", "sandbox"],
        cwd=tmp_path, env={**os.environ, "TMPDIR": str(scratch)},  # no fixtures dir: generated
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stdout is not None
    while not server.stdout.readline().startswith("API v4"):
        pass
    assert list(scratch.iterdir())  # the fixtures it serves
    server.send_signal(signal.SIGTERM)
    out, err = server.communicate(timeout=30)
    assert server.returncode == 0 and "sandbox stopped" in out and "Traceback" not in err
    assert list(scratch.iterdir()) == []


def test_cache_verbs_refuse_no_cache_as_a_usage_error(tmp_path: Path) -> None:
    for action in ("info", "clear"):
        done = run("cache", action, "--no-cache")
        assert done.returncode == 2 and "--no-cache names none" in done.stderr


def test_the_sandboxs_counts_agree_with_its_downloads_in_every_format(
    fixture_files, tmp_path: Path
) -> None:
    import pandas as pd

    exports, _, server = _sandbox_process()
    v4 = {**exports, "DATAFINITI_API_URL": exports["DATAFINITI_API_URL"][:-3] + "/v4",
          "DATAFINITI_CACHE_DIR": str(tmp_path / "cache")}  # fmt: skip
    try:
        for kind, fmt in (("businesses", "json"), ("properties", "json"), ("products", "csv")):
            counted = run("count", "anything", "--type", kind, env=v4)
            assert counted.returncode == 0, counted.stderr
            found = int(counted.stdout.split()[0].replace(",", ""))
            assert found > 0, counted.stdout
            out = tmp_path / f"{kind}-{fmt}"
            made = run("-q", "download", "anything", "--type", kind, "--format", fmt,
                       "--records", "all", "--yes", "--output", str(out), env=v4)  # fmt: skip
            assert made.returncode == 0, made.stderr + made.stdout
            frame = pd.read_parquet(out)
            held = frame["id"].nunique() if "id" in frame.columns else len(frame)
            assert held == found, (kind, fmt, held, found)
    finally:
        _stop(server)

    mine = tmp_path / "mine.csv"
    mine.write_text(Path(fixture_files["products"][0]).read_text())
    exports, lines, server = _sandbox_process("--serve", str(mine))
    v4 = {**exports, "DATAFINITI_API_URL": exports["DATAFINITI_API_URL"][:-3] + "/v4"}
    try:
        assert any("any query of any type" in line for line in lines)
        counted = run("count", "brand:Whatever", "--type", "businesses", env=v4)
        assert counted.returncode == 0 and counted.stdout.startswith("24 "), counted.stdout
    finally:
        _stop(server)


def test_misdirected_calls_say_what_is_wrong(sandbox: Sandbox, fixture_files) -> None:
    rid = str(sandbox.add_request(fixture_files["products"]))
    token = {"DATAFINITI_API_TOKEN": sandbox.token}
    at_bucket = run("status", rid, env={**token, "DATAFINITI_API_URL": sandbox.bucket_url + "/v3"})
    assert at_bucket.returncode == 1 and "not Datafiniti's API" in at_bucket.stderr
    assert "Check the arguments" not in at_bucket.stderr
    https = sandbox.api_url.replace("http://", "https://")
    plain = run("status", rid, env={**token, "DATAFINITI_API_URL": https})
    assert plain.returncode == 1 and "does not speak TLS" in plain.stderr
    assert "certificate" not in plain.stderr
    done = run("cancel", rid, env={**token, "DATAFINITI_API_URL": sandbox.api_url_v4})
    assert done.returncode == 1 and "cannot be cancelled" in done.stderr
    assert "Check the arguments" not in done.stderr


def test_a_load_says_what_it_wrote_once(sandbox: Sandbox, fixture_files, tmp_path: Path) -> None:
    rid = str(sandbox.add_request(fixture_files["products"]))
    env = {"DATAFINITI_API_URL": sandbox.api_url, "DATAFINITI_API_TOKEN": sandbox.token,
           "DATAFINITI_CACHE_DIR": str(tmp_path / "cache")}  # fmt: skip
    done = run("load", rid, "-o", str(tmp_path / "out"), env=env)
    assert done.returncode == 0, done.stderr
    said = [line for line in (done.stdout + done.stderr).splitlines() if "72 rows" in line]
    assert len(said) == 1 and said[0].startswith("wrote 72 rows x 22 columns from 2 result")
    # the verb's own line, not the library's log line as well


def test_sandbox_scratch_is_made_only_when_needed_and_a_killed_runs_is_swept(
    fixture_files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    from datafiniti_loader import load_results

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with Sandbox():
        pass
    assert list(scratch.iterdir()) == []  # a sandbox nothing loaded from makes nothing
    killed = subprocess.run(
        [sys.executable, "-c",
         "import os, tempfile; tempfile.tempdir = os.environ['SCRATCH']\n"
         "from datafiniti_loader.sandbox import Sandbox\n"
         "box = Sandbox().start(); print(box._scratch_dir(), flush=True); os._exit(9)"],
        env={**os.environ, "SCRATCH": str(scratch)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    left = Path(killed.stdout.strip())
    assert killed.returncode == 9 and left.is_dir()  # killed: it could not clean up
    with Sandbox() as box:
        rid = box.add_request(fixture_files["products"])
        load_results(rid, token=box.token, api_url=box.api_url, progress=False)
        assert not left.exists()  # the next sandbox swept it
    assert list(scratch.iterdir()) == []
