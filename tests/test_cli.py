"""The ``aiomemdb`` command line, run as users run it: ``python -m aiomemdb`` in a subprocess.

Directory stores and the moto S3 server (credentials through the environment, as botocore reads them), plus
the documentation build, whose pages name the tests that prove each guarantee.
"""

from __future__ import annotations

import asyncio
import datetime
import importlib.metadata
import importlib.util
import json
import os
import pty
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest

from aiomemdb import DirectoryPersistence, InMemoryDb

ROOT = Path(__file__).resolve().parent.parent
# Warnings are errors in the CLI process too (deprecations come from botocore on some Pythons).
CMD = [sys.executable, "-W", "error", "-W", "ignore::DeprecationWarning", "-m", "aiomemdb"]
SECRET = "s3cr3t-Never-Print-Me"


def env(**extra: str) -> dict[str, str]:
    """A hermetic environment: test credentials only, no AWS config files, no instance metadata lookups."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    base.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONUTF8="1",
    )
    base.update(extra)
    return base


def cli(
    *args: Any, stdin: str | None = None, environ: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the command line to completion."""
    return subprocess.run(
        [*CMD, *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        env=environ or env(),
        timeout=90,
    )


async def acli(*args: Any, environ: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command line from an async test without blocking the event loop."""
    return await asyncio.to_thread(cli, *args, environ=environ)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """Assert a zero exit and return stdout."""
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Assert exit 1 with exactly one line on stderr and no traceback; return that line."""
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("aiomemdb: error: ")
    return lines[0]


def seed_blob() -> str:
    """A seed-style blob, made the way the seed made it: ``json.dumps(my_sessions, default=str)``."""
    import datetime

    my_sessions = {
        "paris": {
            "session_id": "paris",
            "user_id": "ada",
            "agent_id": "geo-agent",
            "session_type": "agent",
            "session_data": {"session_name": "Trip to Paris"},
            "runs": [
                {"run_id": "r1", "input": "What is the capital of France?", "at": datetime.datetime(2024, 5, 1)},
                {"run_id": "r2", "input": "What is its population?"},
            ],
            "created_at": 1714521600,
            "updated_at": 1714521700,
        },
        "standup": {
            "session_id": "standup",
            "user_id": "bob",
            "team_id": "eng-team",
            "session_type": "team",
            "runs": [],
            "created_at": 1714521600,
            "updated_at": 1714521800,
        },
    }
    return json.dumps(my_sessions, default=str)


def make_store(path: Path) -> None:
    """A directory store with sessions of three users and kinds, ties in updated_at, and a memories collection."""
    with InMemoryDb(persistence=DirectoryPersistence(path, fsync=False), durability="manual") as db:
        for i in range(12):
            db.upsert_session(
                {
                    "session_id": f"s{i:02d}",
                    "user_id": ["ada", "bob", "cy"][i % 3],
                    "agent_id": f"agent-{i % 2}" if i % 4 else None,
                    "team_id": "team-x" if i % 4 == 0 else None,
                    "session_type": "team" if i % 4 == 0 else "agent",
                    "session_data": {"session_name": f"chat {i}"},
                    "runs": [{"run_id": f"r{j}", "content": "x" * j} for j in range(i % 4)],
                }
            )
        db.upsert_session({"session_id": "s03", "user_id": "ada", "summary": "updated again"})  # version 2
        db.put_record("memories", "m1", {"user_id": "ada", "memory": "likes trains"})
        db.put_record("memories", "m2", {"user_id": "bob", "memory": "likes boats"})


def exported(store: Path | str, *options: str, environ: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The records of ``aiomemdb export`` to stdout, parsed."""
    out = ok(cli("export", store, *options, environ=environ))
    return [json.loads(line) for line in out.splitlines()]


def tree(path: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``path`` with its size and modification time."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*") if p.is_file()}


# -- the entry point and usage -------------------------------------------------------------------------------


def test_python_m_and_the_console_script_run_the_same_main() -> None:
    """``python -m aiomemdb`` runs, and the installed ``aiomemdb`` script points at aiomemdb.cli:main."""
    assert ok(cli("--version")).strip().startswith("aiomemdb ")
    (script,) = importlib.metadata.entry_points(group="console_scripts", name="aiomemdb")
    assert script.value == "aiomemdb.cli:main"
    help_text = ok(cli("--help"))
    for command in ("ls", "show", "export", "import", "verify", "stats"):
        assert command in help_text


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["ls"],
        ["frobnicate", "./x"],
        ["ls", "ftp://host/path"],
        ["ls", "s3://Not_A_Bucket"],
        ["ls", "./x", "--limit", "0"],
        ["ls", "./x", "--sort", "colour"],
        ["ls", "./x", "--region", "eu-west-1"],
    ],
    ids=["no-command", "no-store", "unknown-command", "bad-scheme", "bad-bucket", "bad-limit", "bad-sort", "region"],
)
def test_usage_errors_exit_2_with_usage(args: list[str], tmp_path: Path) -> None:
    """Malformed command lines exit 2 with a usage message and touch nothing."""
    result = subprocess.run([*CMD, *args], capture_output=True, text=True, env=env(), cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result
    assert "usage:" in result.stderr
    assert list(tmp_path.iterdir()) == []


# -- directory stores ----------------------------------------------------------------------------------------


def test_seed_blob_import_then_ls_and_show_see_it(tmp_path: Path) -> None:
    """A ``json.dumps(my_sessions, default=str)`` blob imports (timestamps kept) and ls/show present it."""
    blob = tmp_path / "my_sessions.json"
    blob.write_text(seed_blob())
    store = tmp_path / "store"
    out = ok(cli("import", store, blob))
    assert "imported 2 records (sessions: 2)" in out
    assert "seed blob" in out

    table = ok(cli("ls", store)).splitlines()
    assert table[0].split() == ["ID", "USER", "TYPE", "COMPONENT", "RUNS", "UPDATED", "NAME"]
    assert table[1].split() == ["standup", "bob", "team", "eng-team", "0", "2024-05-01T00:03:20Z", "-"]
    assert table[2].split()[:6] == ["paris", "ada", "agent", "geo-agent", "2", "2024-05-01T00:01:40Z"]
    assert table[2].endswith("Trip to Paris")
    assert len({line.index("RUNS") if i == 0 else None for i, line in enumerate(table)} - {None}) == 1

    session = json.loads(ok(cli("show", store, "paris")))
    assert session["created_at"] == 1714521600
    assert session["updated_at"] == 1714521700
    assert [r["run_id"] for r in session["runs"]] == ["r1", "r2"]
    assert session["runs"][0]["at"] == "2024-05-01 00:00:00"  # what default=str made of the datetime
    last = json.loads(ok(cli("show", store, "paris", "--runs", "1")))
    assert [r["run_id"] for r in last["runs"]] == ["r2"]


def test_ls_filters_sorting_limit_and_json(tmp_path: Path) -> None:
    """ls applies each filter, sort and limit as get_sessions does, and --json gives one object per session."""
    make_store(tmp_path / "s")
    rows = json.loads(ok(cli("ls", tmp_path / "s", "--json")))
    assert len(rows) == 12
    assert rows[0]["session_id"] == "s03"  # written last: the later write first among equal seconds
    assert set(rows[0]) >= {"session_id", "user_id", "session_type", "runs", "created_at", "updated_at"}

    def ids(*options: str) -> list[str]:
        return [r["session_id"] for r in json.loads(ok(cli("ls", tmp_path / "s", "--json", *options)))]

    assert ids("--user", "bob") == ["s10", "s07", "s04", "s01"]
    assert ids("--type", "team") == ["s08", "s04", "s00"]
    assert ids("--team", "team-x", "--user", "ada") == ["s00"]
    assert ids("--agent", "agent-1", "--sort", "session_id", "--order", "asc") == ["s01", "s05", "s07", "s09", "s11"]
    assert ids("--workflow", "nothing") == []
    assert ids("--sort", "session_id", "--limit", "2") == ["s11", "s10"]

    limited = cli("ls", tmp_path / "s", "--limit", "3")
    assert len(ok(limited).splitlines()) == 4  # header + 3
    assert "3 of 12 sessions" in limited.stderr


def test_missing_session_or_store_is_a_one_line_error_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    """Operational errors exit 1 with one line on stderr; --debug adds the traceback."""
    make_store(tmp_path / "s")
    assert "no session 'nope'" in one_line_error(cli("show", tmp_path / "s", "nope"))
    assert "no store at" in one_line_error(cli("ls", tmp_path / "missing"))
    assert not (tmp_path / "missing").exists()
    assert "No such file" in one_line_error(cli("import", tmp_path / "s", tmp_path / "absent.jsonl"))
    debug = cli("--debug", "show", tmp_path / "s", "nope")
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr
    assert "no session 'nope'" in debug.stderr
    assert cli("show", tmp_path / "s", "nope", "--debug").stderr == debug.stderr  # either position


def test_read_commands_never_write(tmp_path: Path) -> None:
    """ls, show, stats, verify and export leave every file of the store as it was."""
    make_store(tmp_path / "s")
    before = tree(tmp_path / "s")
    for command, *rest in (["ls"], ["show", "s01"], ["stats"], ["verify"], ["export", "-o", tmp_path / "out.jsonl"]):
        ok(cli(command, tmp_path / "s", *rest))
    assert tree(tmp_path / "s") == before


def test_export_import_round_trip_is_equal(tmp_path: Path) -> None:
    """export, import into an empty store and export again gives the same records, in the same order."""
    make_store(tmp_path / "a")
    first = exported(tmp_path / "a")
    assert len(first) == 14
    assert {r["collection"] for r in first} == {"sessions", "memories"}
    assert all(set(r) == {"collection", "id", "data"} for r in first)

    ok(cli("export", tmp_path / "a", "-o", tmp_path / "dump.jsonl"))
    assert [json.loads(line) for line in (tmp_path / "dump.jsonl").read_text().splitlines()] == first
    out = ok(cli("import", tmp_path / "b", tmp_path / "dump.jsonl"))
    assert "imported 14 records (memories: 2, sessions: 12)" in out
    second = exported(tmp_path / "b")

    def without_version(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**r, "data": {k: v for k, v in r["data"].items() if k != "version"}} for r in records]

    assert without_version(second) == without_version(first)
    # version is the store's own concurrency counter: an import into an empty store starts it afresh
    assert {r["data"]["version"] for r in second if r["collection"] == "sessions"} == {1}
    assert ok(cli("ls", tmp_path / "b", "--json")) == ok(cli("ls", tmp_path / "a", "--json")).replace(
        '"version": 2', '"version": 1'
    )


def test_import_from_stdin_and_without_preserving_timestamps(tmp_path: Path) -> None:
    """JSON lines read from stdin; --no-preserve-timestamps stamps the import time instead."""
    lines = "\n".join(
        json.dumps({"collection": "sessions", "id": f"old{i}", "data": {"updated_at": 1000 + i, "created_at": 1000}})
        for i in range(3)
    )
    ok(cli("import", tmp_path / "kept", stdin=lines + "\n\n"))
    assert [r["updated_at"] for r in json.loads(ok(cli("ls", tmp_path / "kept", "--json")))] == [1002, 1001, 1000]
    out = ok(cli("import", tmp_path / "now", "-", "--no-preserve-timestamps", stdin=lines))
    assert "from stdin (JSON lines)" in out
    assert all(r["updated_at"] > 1_700_000_000 for r in json.loads(ok(cli("ls", tmp_path / "now", "--json"))))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"collection": "sessions", "id": "a", "data": {}}\nnot json\n', "line 2: not JSON"),
        ('{"collection": "sessions", "id": "a", "data": {}}\n[1, 2]\n', "line 2: expected an object"),
        ('{"collection": "Bad Name", "id": "a", "data": {}}\n', "line 1: collection name must match"),
        ('{"collection": "sessions", "id": "a", "data": {"runs": [{"no": "id"}]}}\n', "line 1: runs[0].run_id"),
        ('{"a": {"session_id": "b"}}', "['a']: session_id 'b' differs"),
        ('{"a": {"session_id": "a", "user_id": 7}}', "['a']: session.user_id must be a str"),
        ("[1, 2, 3]", "line 1: expected an object"),
    ],
    ids=["not-json", "not-object", "bad-collection", "run-without-id", "id-mismatch", "bad-field", "array"],
)
def test_bad_import_names_the_place_and_writes_nothing(content: str, expected: str, tmp_path: Path) -> None:
    """A malformed record stops the import before anything is written, naming its line or session."""
    (tmp_path / "in.json").write_text(content)
    line = one_line_error(cli("import", tmp_path / "store", tmp_path / "in.json"))
    assert expected in line
    assert not (tmp_path / "store").exists()


def test_verify_names_every_corrupt_file_and_exits_1(tmp_path: Path) -> None:
    """verify reads every file, reports each corrupt one with its path and cause, and exits 1 (0 when clean)."""
    store = tmp_path / "s"
    make_store(store)
    assert ok(cli("verify", store)).strip() == f"ok: all 14 objects of {store} are readable"

    sessions = store / "v1" / "sessions"
    (sessions / "s01.json").write_bytes(b'{"format_version":1,"collection":"sess')  # torn write
    envelope = orjson.loads((sessions / "s02.json").read_bytes())
    (sessions / "s02.json").write_bytes(orjson.dumps({**envelope, "format_version": 99}))
    (sessions / "s04.json").write_bytes(orjson.dumps({**envelope, "id": "s04"}))  # s02's session under s04
    runs = orjson.loads((sessions / "s05.json").read_bytes())
    runs["data"]["runs"] = [{"no": "run_id"}]
    (sessions / "s05.json").write_bytes(orjson.dumps(runs))
    (store / "v1" / "Not-A-Collection").mkdir()

    result = cli("verify", store)
    assert result.returncode == 1
    reported = result.stdout.strip().splitlines()
    assert len(reported) == 5, result.stdout
    by_key = {line.split(": ", 1)[0].removeprefix("CORRUPT "): line for line in reported}
    assert set(by_key) == {
        str(sessions / "s01.json"),
        str(sessions / "s02.json"),
        str(sessions / "s04.json"),
        str(sessions / "s05.json"),
        str(store / "v1" / "Not-A-Collection"),
    }
    assert "not valid JSON" in by_key[str(sessions / "s01.json")]
    assert "format_version 99" in by_key[str(sessions / "s02.json")]
    assert "session_id 's02'" in by_key[str(sessions / "s04.json")]
    assert "run_id" in by_key[str(sessions / "s05.json")]
    assert "5 problem(s) among 14 objects" in result.stderr

    # the other commands refuse a corrupt store loudly, naming a corrupt object
    assert str(sessions) in one_line_error(cli("export", store, "-o", tmp_path / "out.jsonl"))
    assert not (tmp_path / "out.jsonl").exists()
    assert "CorruptDataError" not in one_line_error(cli("ls", store))


def test_stats_prints_the_stores_counters(tmp_path: Path) -> None:
    """stats loads the store and prints its Stats, as aligned lines or JSON."""
    make_store(tmp_path / "s")
    stats = json.loads(ok(cli("stats", tmp_path / "s", "--json")))
    assert stats["sessions"] == 12
    assert stats["records"] == {"memories": 2}
    assert stats["loads"] == 14
    assert stats["dirty"] == 0
    assert stats["bytes"] > 0
    assert stats["load_duration"] >= 0
    text = dict(line.split(None, 1) for line in ok(cli("stats", tmp_path / "s")).splitlines())
    assert text["sessions"] == "12"
    assert text["records"] == "memories=2"
    assert text["store"] == str(tmp_path / "s")


def test_progress_bar_is_drawn_only_on_a_terminal(tmp_path: Path) -> None:
    """A long import draws a progress bar when stderr is a TTY, and writes nothing to a pipe."""
    lines = "".join(
        json.dumps({"collection": "sessions", "id": f"s{i}", "data": {"runs": []}}) + "\n" for i in range(1200)
    )
    (tmp_path / "in.jsonl").write_text(lines)
    piped = cli("import", tmp_path / "piped", tmp_path / "in.jsonl")
    assert ok(piped)
    assert piped.stderr == ""

    out, drawn = on_a_terminal("import", tmp_path / "tty", tmp_path / "in.jsonl")
    assert b"imported 1200 records" in out
    assert b"importing [" in drawn
    assert b"1200/1200 records" in drawn


def on_a_terminal(*args: Any) -> tuple[bytes, bytes]:
    """Run the command line with stderr on a pseudo-terminal; returns stdout and what was drawn on the terminal."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([*CMD, *map(str, args)], stdout=subprocess.PIPE, stderr=follower, env=env())
    os.close(follower)
    drawn = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(leader)
    assert proc.wait(timeout=60) == 0, drawn
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.stdout.close()
    return out, drawn


def test_an_agno_seed_blob_migrates_and_the_agent_remembers(tmp_path: Path) -> None:
    """The seed's own blob, made by an agno agent, imports into a directory that a new agent then answers from."""
    pytest.importorskip("agno", reason="agno is not installed (pip install 'aiomemdb[agno]')")
    from agno.agent import Agent

    from aiomemdb.agno import InMemoryDb as AgnoDb
    from aiomemdb.agno.testing import OfflineModel

    my_sessions: dict[str, Any] = {}
    db = AgnoDb(storage_dict=my_sessions)
    agent = Agent(model=OfflineModel(), db=db, add_history_to_context=True)
    agent.run("What is the capital of France?")
    db.close()
    (tmp_path / "blob.json").write_text(json.dumps(my_sessions, default=str))

    ok(cli("import", tmp_path / "store", tmp_path / "blob.json"))
    assert agent.session_id in ok(cli("ls", tmp_path / "store"))
    with AgnoDb(persistence=DirectoryPersistence(tmp_path / "store", fsync=False)) as new_db:
        again = Agent(model=OfflineModel(), db=new_db, session_id=agent.session_id, add_history_to_context=True)
        answer = again.run("What was my first question?")
    assert answer.content == "Your first question was: What is the capital of France?"


# -- a new user's mistakes -----------------------------------------------------------------------------------


def _not_a_store(tmp_path: Path, kind: str) -> Path:
    """A folder a user may mistake for a store."""
    if kind == "its-v1":
        make_store(tmp_path / "s")
        return tmp_path / "s" / "v1"
    if kind == "collection":
        make_store(tmp_path / "s")
        return tmp_path / "s" / "v1" / "sessions"
    if kind == "tempdir":
        return Path(tempfile.gettempdir())
    if kind == "src":
        return ROOT / "src"
    if kind == "v1-of-junk":
        (tmp_path / "app" / "v1" / "Routes").mkdir(parents=True)
        (tmp_path / "app" / "v1" / "notes.txt").write_text("x")
        return tmp_path / "app"
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


@pytest.mark.parametrize("kind", ["its-v1", "collection", "tempdir", "src", "v1-of-junk", "empty"])
def test_read_commands_on_a_folder_that_is_not_a_store_say_so_and_exit_1(kind: str, tmp_path: Path) -> None:
    """ls, show, stats, verify and export on a non-store folder exit 1 saying it is not an aiomemdb store."""
    folder = _not_a_store(tmp_path, kind)
    before = sorted(p.name for p in folder.iterdir())
    for command, *rest in (["ls"], ["stats"], ["show", "s01"], ["verify"], ["export", "-o", tmp_path / "o.jsonl"]):
        line = one_line_error(cli(command, folder, *rest))
        assert f"{folder} is not an aiomemdb store" in line, line
        if kind in ("its-v1", "collection"):
            assert f"did you mean {tmp_path / 's'}?" in line
    after = sorted(p.name for p in folder.iterdir())
    if kind == "tempdir":  # other processes come and go in the system's temp folder: look for what a store makes
        assert not {"v1", "LAYOUT", "LOCK", "journal"} & (set(after) - set(before))
    else:
        assert after == before
    assert not (tmp_path / "o.jsonl").exists()


def test_a_store_opened_but_never_written_is_an_empty_store(tmp_path: Path) -> None:
    """A directory a store has opened (it holds an empty v1/) lists as an empty store, exit 0."""
    InMemoryDb(persistence=DirectoryPersistence(tmp_path / "s")).close()
    assert (tmp_path / "s" / "v1").is_dir()
    assert ok(cli("ls", tmp_path / "s")).split() == ["ID", "USER", "TYPE", "COMPONENT", "RUNS", "UPDATED", "NAME"]
    assert ok(cli("verify", tmp_path / "s")).startswith("ok: all 0 objects")


@pytest.mark.parametrize("output", ["missing-dir/backup.jsonl", "a/b/c.jsonl", "file.txt/backup.jsonl", "."])
def test_export_to_an_impossible_file_names_that_path_and_exit_1(output: str, tmp_path: Path) -> None:
    """export -o into a directory that does not exist names the path given (not a hidden temp file); writes nothing."""
    make_store(tmp_path / "s")
    (tmp_path / "file.txt").write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = subprocess.run(
        [*CMD, "export", str(tmp_path / "s"), "-o", output], capture_output=True, text=True, env=env(), cwd=tmp_path
    )
    line = one_line_error(result)
    assert f"cannot write {output}:" in line
    assert ".tmp-" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize(
    "url", ["s3:/my-bucket/agents", "s3:my-bucket/agents", "s3:///my-bucket/agents", "S3://my-bucket/agents"]
)
def test_an_s3_url_with_the_wrong_slashes_hints_the_right_one(url: str, tmp_path: Path) -> None:
    """``s3:/bucket`` and friends exit 2 with "did you mean s3://bucket/..."; nothing is created locally."""
    result = subprocess.run([*CMD, "ls", url], capture_output=True, text=True, env=env(), cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result
    assert "did you mean s3://my-bucket/agents?" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_import_of_a_blob_with_string_times_keeps_them(tmp_path: Path) -> None:
    """A seed blob whose times are ISO 8601 strings (as default=str writes datetimes) keeps its created_at."""
    blob = {
        "iso": {"session_id": "iso", "created_at": "2024-05-01T00:00:00Z", "updated_at": "2024-05-01T00:01:40Z"},
        "str": {
            "session_id": "str",
            "created_at": str(datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC)),
            "updated_at": "2024-05-01T02:03:20+02:00",
        },
    }
    (tmp_path / "blob.json").write_text(json.dumps(blob))
    ok(cli("import", tmp_path / "s", tmp_path / "blob.json"))
    iso = json.loads(ok(cli("show", tmp_path / "s", "iso")))
    assert (iso["created_at"], iso["updated_at"]) == (1714521600, 1714521700)
    as_str = json.loads(ok(cli("show", tmp_path / "s", "str")))
    assert (as_str["created_at"], as_str["updated_at"]) == (1714521600, 1714521800)
    ok(cli("import", tmp_path / "now", tmp_path / "blob.json", "--no-preserve-timestamps"))
    stamped = json.loads(ok(cli("show", tmp_path / "now", "iso")))
    assert stamped["created_at"] == 1714521600  # created_at is the session's own; only updated_at is stamped
    assert stamped["updated_at"] > 1714521700


def test_import_of_a_naive_time_names_the_session_and_field_and_writes_nothing(tmp_path: Path) -> None:
    """A time without a timezone stops the import with the session and path named, before anything is written."""
    blob = {"ok": {"session_id": "ok"}, "naive": {"session_id": "naive", "created_at": "2024-05-01 00:00:00"}}
    (tmp_path / "blob.json").write_text(json.dumps(blob))
    line = one_line_error(cli("import", tmp_path / "s", tmp_path / "blob.json"))
    assert "['naive']: session.created_at must name its timezone" in line
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("reading", 120, 1000, 1.25), "reading [###                           ] 120/1000 objects 1.2s"),
        (("reading", 1000, 1000, 3.0), "reading [##############################] 1000/1000 objects 3.0s"),
        (("listing", 0, None, 0.5), "listing... 0.5s"),
        (("listing", 42, None, 0.5), "listing... 42 objects 0.5s"),
        (("reading", 0, 0, 0.0), "reading... 0.0s"),
    ],
    ids=["part", "done", "no-total", "count-only", "empty"],
)
def test_progress_text_counts_objects(args: tuple[str, int, int | None, float], expected: str) -> None:
    """The progress line shows done/total objects (or the count so far) and the elapsed time."""
    from aiomemdb.cli._progress import progress_text

    assert progress_text(*args, unit="objects") == expected


@pytest.mark.parametrize("command", ["ls", "stats"])
def test_ls_and_stats_count_objects_read_on_a_terminal_only(command: str, tmp_path: Path) -> None:
    """ls and stats draw "reading [...] 14/14 objects" on a terminal, and nothing on stderr when piped."""
    make_store(tmp_path / "s")
    out, drawn = on_a_terminal(command, tmp_path / "s")
    assert b"reading [" in drawn
    assert b"14/14 objects" in drawn
    assert b"s03" in out or b"sessions" in out
    piped = cli(command, tmp_path / "s")

    def steady(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.startswith("load_duration")]

    assert steady(ok(piped)) == steady(out.decode())
    assert piped.stderr == ""


# -- S3 ------------------------------------------------------------------------------------------------------


async def test_s3_seed_blob_import_then_ls_show_and_stats(s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> None:
    """On S3 (credentials from the environment) a seed blob imports, and ls, show and stats see it."""
    (tmp_path / "blob.json").write_text(seed_blob())
    url = f"s3://{s3_bucket}/team/prod"
    out = ok(await acli("import", url, tmp_path / "blob.json", "--endpoint-url", s3_endpoint))
    assert "imported 2 records (sessions: 2)" in out
    table = ok(await acli("--endpoint-url", s3_endpoint, "ls", url)).splitlines()
    assert [line.split()[0] for line in table] == ["ID", "standup", "paris"]
    session = json.loads(ok(await acli("show", url, "paris", "--runs", "1", "--endpoint-url", s3_endpoint)))
    assert session["user_id"] == "ada"
    assert [r["run_id"] for r in session["runs"]] == ["r2"]
    stats = json.loads(ok(await acli("stats", url, "--json", "--endpoint-url", s3_endpoint)))
    assert stats["sessions"] == 2


async def test_s3_verify_names_the_corrupt_key(s3_endpoint: str, s3_bucket: str, s3_client_options: Any) -> None:
    """verify lists and GETs every object under the prefix and names each corrupt key; exit 1, 0 once fixed."""
    from aiobotocore.session import get_session

    url = f"s3://{s3_bucket}/app"
    lines = "".join(
        json.dumps({"collection": "sessions", "id": f"s{i}", "data": {"user_id": "u"}}) + "\n" for i in range(20)
    )
    result = await asyncio.to_thread(cli, "import", url, "--endpoint-url", s3_endpoint, stdin=lines)
    ok(result)
    assert ok(await acli("verify", url, "--endpoint-url", s3_endpoint)).startswith("ok: all 20 objects")

    async with get_session().create_client("s3", **s3_client_options) as client:
        good = await client.get_object(Bucket=s3_bucket, Key="app/v1/sessions/s7.json")
        async with good["Body"] as body:
            original = await body.read()
        await client.put_object(Bucket=s3_bucket, Key="app/v1/sessions/s7.json", Body=b"\x00garbage")
        await client.put_object(Bucket=s3_bucket, Key="app/v1/sessions/nested/x.json", Body=b"{}")
        await client.put_object(Bucket=s3_bucket, Key="app/v1/sessions/upload.tmp", Body=b"ignored")

        result = await acli("verify", url, "--endpoint-url", s3_endpoint)
        assert result.returncode == 1
        assert result.stdout.splitlines() == [
            f"CORRUPT s3://{s3_bucket}/app/v1/sessions/nested/x.json: not a {{collection}}/{{name}}.json record key;"
            " the store refuses it",
            f"CORRUPT s3://{s3_bucket}/app/v1/sessions/s7.json: is not valid JSON: unexpected character, expected a"
            " JSON value: line 1 column 1 (char 0)",
        ]
        assert f"s3://{s3_bucket}/app/v1/sessions/" in one_line_error(
            await acli("ls", url, "--endpoint-url", s3_endpoint)
        )

        await client.put_object(Bucket=s3_bucket, Key="app/v1/sessions/s7.json", Body=original)
        await client.delete_object(Bucket=s3_bucket, Key="app/v1/sessions/nested/x.json")
    assert ok(await acli("verify", url, "--endpoint-url", s3_endpoint)).startswith("ok: all 20 objects")


async def test_round_trip_from_a_directory_through_s3_and_back(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    """A directory store exported, imported into S3, exported from S3 and imported into a directory is unchanged."""
    make_store(tmp_path / "a")
    ok(await acli("export", tmp_path / "a", "-o", tmp_path / "a.jsonl"))
    url = f"s3://{s3_bucket}/copy"
    ok(await acli("import", url, tmp_path / "a.jsonl", "--endpoint-url", s3_endpoint))
    ok(await acli("export", url, "-o", tmp_path / "s3.jsonl", "--endpoint-url", s3_endpoint))
    ok(await acli("import", tmp_path / "b", tmp_path / "s3.jsonl"))
    ok(await acli("export", tmp_path / "b", "-o", tmp_path / "b.jsonl"))

    def records(name: str) -> list[Any]:
        rows = [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
        for row in rows:
            row["data"].pop("version", None)
        return rows

    assert records("s3.jsonl") == records("a.jsonl")
    assert records("b.jsonl") == records("a.jsonl")


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
async def test_s3_errors_are_one_line_and_never_show_credentials(s3_endpoint: str, debug: bool) -> None:
    """A missing bucket is reported with its s3:// key; the secret key never appears, not even with --debug."""
    secret_env = env(AWS_SECRET_ACCESS_KEY=SECRET, AWS_SESSION_TOKEN=SECRET + "-token")
    flags = ["--debug"] if debug else []
    # ls loads through the store, show reads one object lazily, verify scans with a client of its own
    results = await asyncio.gather(
        *(
            acli(*flags, name, "s3://no-such-bucket-here/p", *rest, "--endpoint-url", s3_endpoint, environ=secret_env)
            for name, *rest in (["ls"], ["show", "x"], ["verify"])
        )
    )
    for result in results:
        assert result.returncode == 1, result
        assert SECRET not in result.stdout + result.stderr
        if debug:
            assert "Traceback" in result.stderr
        else:
            assert "no-such-bucket-here" in one_line_error(result)


# -- the documentation ---------------------------------------------------------------------------------------


def test_docs_name_only_tests_that_exist() -> None:
    """Every ``tests/...py::test_name`` the docs cite as proof is a test function that exists."""
    cited = {
        (file, name)
        for page in (ROOT / "docs").rglob("*.md")
        for file, name in re.findall(r"(tests/[\w/]+\.py)::(test_\w+)", page.read_text())
    }
    assert len(cited) >= 20
    missing = [f"{file}::{name}" for file, name in sorted(cited) if f"def {name}(" not in _read(ROOT / file)]
    assert not missing, missing


def _read(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def test_docs_build_strict(tmp_path: Path) -> None:
    """``mkdocs build --strict`` (API reference from the docstrings included) succeeds offline, without warnings."""
    for module in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python", "material"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install '.[docs]'); CI must install it to check the docs")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**env(), "NO_MKDOCS_2_WARNING": "1"},
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    assert (tmp_path / "reference" / "index.html").is_file()
