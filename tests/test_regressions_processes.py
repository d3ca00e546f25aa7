"""Issue 10's scenarios that need a second process: a real file-size limit (6) and the command line (2, bug f).

Each child is a real ``python`` process; nothing is mocked. See ``tests/test_regressions.py`` for the rest.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import orjson

from aiomemdb import AsyncInMemoryDb, DirectoryPersistence

from .test_regressions import crash_image, run_ids

# -- 6. a real file-size limit ----------------------------------------------------------------------------------

_FSIZE_CHILD = r"""
import asyncio, json, os, resource, signal, sys

from aiomemdb import AsyncInMemoryDb, DirectoryPersistence, PersistenceError


async def main(root: str) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an over-limit write then fails with EFBIG
    db = AsyncInMemoryDb(
        persistence=DirectoryPersistence(root, fsync=False), durability="journal", journal_fsync=3600,
        flush_interval=3600,
    )
    await db.upsert_session({"session_id": "a", "runs": []})
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # the disk is "full" at 4 KB per file
    acked, refused = [], []
    for i in range(30):
        try:
            await db.upsert_run("a", {"run_id": f"r{i}", "pad": "x" * 300})
            acked.append(f"r{i}")
        except PersistenceError:
            refused.append(f"r{i}")
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space returns
    await db.upsert_run("a", {"run_id": "after"})
    runs = [r["run_id"] for r in (await db.get_session("a"))["runs"]]
    print(json.dumps({"acked": acked, "refused": refused, "runs": runs}), flush=True)
    os._exit(0)  # killed: no close, no flush; only the journal holds the runs


asyncio.run(main(sys.argv[1]))
"""


def test_scenario_06_a_real_file_size_limit_refuses_writes_whole_and_they_recover(tmp_path: Path) -> None:
    """Under a real RLIMIT_FSIZE (a child process), journal appends past the limit fail with nothing applied
    (the torn part of the line is cut off again); when the limit is lifted writes succeed, and after the child
    dies without closing, a restart replays exactly the acknowledged writes."""
    root = tmp_path / "store"
    child = subprocess.run(
        [sys.executable, "-c", _FSIZE_CHILD, str(root)], capture_output=True, text=True, timeout=60, check=False
    )
    assert child.returncode == 0, child.stderr
    report = orjson.loads(child.stdout)
    assert report["acked"]
    assert report["refused"]
    assert report["runs"] == [*report["acked"], "after"]

    async def reopened_runs() -> list[str]:
        async with AsyncInMemoryDb(persistence=DirectoryPersistence(root, fsync=False)) as reopened:
            return run_ids(await reopened.get_session("a"))

    assert asyncio.run(reopened_runs()) == [*report["acked"], "after"]


# -- 2 (f). the command line and unreplayed journal segments ------------------------------------------------------


async def test_scenario_02_bug_f_the_command_line_shows_journaled_writes_or_says_they_exist(tmp_path: Path) -> None:
    """Over a root a journaled writer left unflushed segments in, ``ls``, ``show`` and ``stats`` include the
    journaled writes (and say so on stderr), ``verify`` counts them, ``export`` warns plainly that it lacks them;
    none of them writes anything (the segments and the objects stay as they were)."""
    live = tmp_path / "live"
    async with AsyncInMemoryDb(
        persistence=DirectoryPersistence(live, fsync=False), durability="journal", flush_interval=3600
    ) as writer:
        await writer.upsert_session({"session_id": "flushed", "runs": [{"run_id": "r0"}]})
        await writer.flush()
        await writer.upsert_run("flushed", {"run_id": "r1"})
        await writer.upsert_session({"session_id": "journaled"})
        image = crash_image(live, tmp_path / "image")
    before = {p: p.read_bytes() for p in image.rglob("*") if p.is_file()}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "aiomemdb", *args], capture_output=True, text=True, timeout=60, check=False
        )

    listed = cli("ls", str(image), "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(row["session_id"] for row in orjson.loads(listed.stdout)) == ["flushed", "journaled"]
    assert "2 journaled write(s)" in listed.stderr
    shown = cli("show", str(image), "flushed")
    assert shown.returncode == 0, shown.stderr
    assert run_ids(orjson.loads(shown.stdout)) == ["r0", "r1"]
    stats = cli("stats", str(image), "--json")
    assert stats.returncode == 0, stats.stderr
    assert orjson.loads(stats.stdout)["sessions"] == 2
    verified = cli("verify", str(image))
    assert verified.returncode == 0, verified.stderr
    assert "2 journaled write(s)" in verified.stdout
    exported = cli("export", str(image), "-o", str(tmp_path / "out.jsonl"))
    assert exported.returncode == 0, exported.stderr
    assert "does NOT include them" in exported.stderr
    assert {p: p.read_bytes() for p in image.rglob("*") if p.is_file()} == before
