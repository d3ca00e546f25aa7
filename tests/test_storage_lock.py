"""One writer per directory: {root}/LOCK refuses a second writer (this process or another) with the holder's pid;
read-only command-line use works beside an open store; a removed directory is created again by the next flush."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from aiomemdb import AsyncInMemoryDb, DirectoryPersistence, Event, InMemoryDb, LockedError, PersistenceError
from aiomemdb.cli import main

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the POSIX flock path; msvcrt is not exercised here")

ROOT = Path(__file__).resolve().parent.parent

HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from aiomemdb import AsyncInMemoryDb, DirectoryPersistence

    async def main() -> None:
        async with AsyncInMemoryDb(persistence=DirectoryPersistence(sys.argv[1]), durability="manual") as db:
            await db.upsert_session({"session_id": "from-child"})
            await db.flush()
            print("open", flush=True)
            await asyncio.to_thread(sys.stdin.read)  # hold the store until the parent closes our stdin

    asyncio.run(main())
    """
)


def start_holder(path: Path) -> subprocess.Popen[str]:
    """A child process that opens a store on ``path`` and holds it until its stdin is closed."""
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )


async def test_a_second_writer_in_this_process_is_refused_with_our_pid(tmp_path: Path) -> None:
    """While one store has the directory open, a second store on it fails to start with LockedError naming this
    process's pid; once the first closes, the directory can be opened again."""
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path), durability="manual") as first:
        await first.upsert_session({"session_id": "s1"})
        second = AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path))
        with pytest.raises(LockedError, match=f"in use by process {os.getpid()}") as info:
            await second.start()
        assert info.value.pid == os.getpid()
        assert isinstance(info.value, PersistenceError)
        assert orjson.loads((tmp_path / "LOCK").read_bytes())["pid"] == os.getpid()
        await second.aclose()
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path)) as again:
        assert await again.get_session("s1") is not None


def open_and_read(path: Path) -> None:
    second = InMemoryDb(persistence=DirectoryPersistence(path))
    try:
        second.get_session("s1")
    finally:
        second.close()


def test_the_sync_facade_is_refused_too(tmp_path: Path) -> None:
    """The blocking InMemoryDb takes the same lock: a second one on the directory raises LockedError."""
    with InMemoryDb(persistence=DirectoryPersistence(tmp_path), durability="manual") as first:
        first.upsert_session({"session_id": "s1"})
        with pytest.raises(LockedError):  # the facade starts at construction, or else at its first call
            open_and_read(tmp_path)


async def test_a_writer_in_another_process_is_refused_with_its_pid(tmp_path: Path) -> None:
    """A store held open by a child process makes this process's store fail with LockedError naming the child's
    pid; after the child exits, this process opens the directory and sees the child's write."""
    child = start_holder(tmp_path)
    try:
        assert child.stdout is not None
        assert child.stdin is not None
        assert await asyncio.to_thread(child.stdout.readline) == "open\n"  # the child holds the lock now
        db = AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path))
        with pytest.raises(LockedError) as info:
            await db.start()
        assert info.value.pid == child.pid
        assert f"process {child.pid}" in str(info.value)
        await db.aclose()
        child.stdin.close()
        assert await asyncio.to_thread(child.wait, 60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path)) as db:
        assert await db.get_session("from-child") is not None


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    """The OS drops the lock of a process killed with SIGKILL: the next store opens the directory."""
    child = start_holder(tmp_path)
    assert child.stdout is not None
    assert child.stdin is not None
    assert child.stdout.readline() == "open\n"
    child.kill()
    child.wait()
    child.stdout.close()
    child.stdin.close()
    with InMemoryDb(persistence=DirectoryPersistence(tmp_path)) as db:
        assert db.get_session("from-child") is not None


@pytest.mark.parametrize("command", ["ls", "show", "stats", "verify", "export"])
async def test_read_only_commands_work_beside_an_open_store(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """ls, show, stats, verify and export read a directory another store has open (they take no lock), and the
    store keeps its lock."""
    store_dir = tmp_path / "store"
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(store_dir), durability="manual") as db:
        await db.upsert_session({"session_id": "Ada", "user_id": "u"})
        await db.flush()
        args = {
            "ls": ["ls", str(store_dir)],
            "show": ["show", str(store_dir), "Ada"],
            "stats": ["stats", str(store_dir)],
            "verify": ["verify", str(store_dir)],
            "export": ["export", str(store_dir), "-o", str(tmp_path / "out.jsonl")],
        }[command]
        code = await asyncio.to_thread(main, args)  # the CLI runs its own event loop, as in a terminal
        out = capsys.readouterr()
        assert code == 0, out.err
        assert "Ada" in out.out or command in ("stats", "verify", "export"), out.out
        with pytest.raises(LockedError):
            await AsyncInMemoryDb(persistence=DirectoryPersistence(store_dir)).start()
        await db.upsert_session({"session_id": "after"})  # the store is unaffected
    if command == "export":
        assert b'"Ada"' in (tmp_path / "out.jsonl").read_bytes()


async def test_import_beside_an_open_store_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """import writes, so it takes the lock: beside an open store it exits 1 naming the holder's pid."""
    source = tmp_path / "in.json"
    source.write_bytes(orjson.dumps({"x": {"session_id": "x"}}))  # a seed-style blob
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path / "store"), durability="manual") as db:
        await db.upsert_session({"session_id": "s"})
        code = await asyncio.to_thread(main, ["import", str(tmp_path / "store"), str(source)])
    assert code == 1
    assert f"in use by process {os.getpid()}" in capsys.readouterr().err


# -- directories removed while the store runs ---------------------------------------------------------------


@pytest.mark.parametrize("removed", ["root", "collection"])
async def test_a_removed_directory_is_recreated_by_the_next_flush(tmp_path: Path, removed: str) -> None:
    """rm -rf of the store's root (or one collection folder) while it runs: the next flush and aclose succeed,
    a recreate event names the folder, every dirty session is on disk, and the lock is held again."""
    root = tmp_path / "store"
    events: list[Event] = []
    db = AsyncInMemoryDb(persistence=DirectoryPersistence(root), durability="manual", on_event=events.append)
    await db.upsert_session({"session_id": "before"})
    await db.flush()
    shutil.rmtree(root if removed == "root" else root / "v1" / "sessions")
    await db.upsert_session({"session_id": "after"})
    await db.upsert_session({"session_id": "before", "session_data": {"again": True}})
    await db.flush()
    recreated = [e.data["path"] for e in events if e.kind == "recreate"]
    assert recreated == [str(root if removed == "root" else root / "v1" / "sessions")]
    if removed == "root":
        assert orjson.loads((root / "LOCK").read_bytes())["pid"] == os.getpid()
        with pytest.raises(LockedError):  # the new LOCK file is locked, not only written
            await AsyncInMemoryDb(persistence=DirectoryPersistence(root)).start()
    await db.upsert_session({"session_id": "last"})
    await db.aclose()
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(root)) as again:
        assert {s["session_id"] for s in await again.get_all_sessions()} == {"before", "after", "last"}
        before = await again.get_session("before")
        assert before is not None
        assert before["session_data"] == {"again": True}


async def test_a_removed_root_is_recreated_at_close(tmp_path: Path) -> None:
    """With the default interval durability, removing the root and closing writes everything dirty."""
    root = tmp_path / "store"
    db = AsyncInMemoryDb(persistence=DirectoryPersistence(root), flush_interval=3600)
    await db.start()
    shutil.rmtree(root)
    await db.upsert_session({"session_id": "s1"})
    await db.aclose()
    assert (root / "v1" / "sessions" / "s1.json").is_file()


@pytest.mark.parametrize("removed", ["root", "collection"])
async def test_a_removed_folder_gets_back_everything_memory_holds(tmp_path: Path, removed: str) -> None:
    """Sessions flushed before the folder was removed and not written since are written back after the recreate
    (memory still holds them), and the event counts them."""
    root = tmp_path / "store"
    events: list[Event] = []
    db = AsyncInMemoryDb(persistence=DirectoryPersistence(root), durability="manual", on_event=events.append)
    for i in range(3):
        await db.upsert_session({"session_id": f"flushed-{i}", "runs": [{"run_id": "r1"}]})
    await db.put_record("notes", "n1", {"text": "kept"})
    await db.flush()
    shutil.rmtree(root if removed == "root" else root / "v1" / "sessions")
    await db.upsert_session({"session_id": "trigger"})
    await db.flush()
    [event] = [e for e in events if e.kind == "recreate"]
    assert event.data["lost"] == 0
    assert event.data["rewritten"] == (5 if removed == "root" else 4)  # the record's folder went with the root only
    assert db.stats().dirty == event.data["rewritten"]
    await db.aclose()
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(root)) as again:
        expected = {"flushed-0", "flushed-1", "flushed-2", "trigger"}
        assert {s["session_id"] for s in await again.get_all_sessions()} == expected
        flushed = await again.get_session("flushed-1")
        assert flushed is not None
        assert [r["run_id"] for r in flushed["runs"]] == ["r1"]
        assert await again.get_record("notes", "n1") == {"text": "kept"}


async def test_a_removed_root_counts_the_evicted_sessions_it_took(tmp_path: Path) -> None:
    """Sessions evicted from memory lived only in the removed files: the recreate event says how many are lost."""
    root = tmp_path / "store"
    events: list[Event] = []
    db = AsyncInMemoryDb(
        persistence=DirectoryPersistence(root), durability="manual", max_sessions=1, on_event=events.append
    )
    for sid in ("a", "b"):
        await db.upsert_session({"session_id": sid})
        await db.flush()
    shutil.rmtree(root)
    await db.upsert_session({"session_id": "c"})  # b, clean, is evicted for it
    await db.flush()
    [event] = [e for e in events if e.kind == "recreate"]
    assert (event.data["rewritten"], event.data["lost"]) == (1, 2)
    await db.aclose()
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(root)) as again:
        assert {s["session_id"] for s in await again.get_all_sessions()} == {"c"}
