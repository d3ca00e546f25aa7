"""Issue 10's numbered scenarios, each reproduced as written and held to the guarantee it broke.

Slow storage is a :class:`~tests._faults.Gate` the test opens when it is ready (never a sleep); a "crash" is a
copy of the store's directory taken while the store runs (what the disk holds at that instant); a full disk is a
journal whose write call fails with ENOSPC. Scenarios 8-10 are in ``test_regressions_lifecycle.py``; the real
file-size limit (6) and the command line (2, bug f) in ``test_regressions_processes.py``.
"""

from __future__ import annotations

import asyncio
import math
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from aiomemdb import (
    AsyncInMemoryDb,
    CorruptDataError,
    DirectoryPersistence,
    NotFoundError,
    PersistenceError,
    ValidationError,
)

from ._faults import Faulty, Gate, disk_full
from .test_journal import crash_image


def run_ids(session: dict[str, Any] | None) -> list[str]:
    assert session is not None
    return [r["run_id"] for r in session["runs"]]


def stored_ids(root: Path) -> set[str]:
    folder = root / "v1" / "sessions"
    return {p.stem for p in folder.glob("*.json")} if folder.exists() else set()


# -- 1. journal replay into a bounded store -------------------------------------------------------------------


async def test_scenario_01_journal_replay_into_a_bounded_store(tmp_path: Path) -> None:
    """Replaying journaled upsert_runs into a store with max_sessions smaller than what the journal touches
    applies every run to its full session; the flushed files are valid and the store opens again."""
    live = tmp_path / "live"
    async with AsyncInMemoryDb(
        persistence=DirectoryPersistence(live, fsync=False), durability="journal", flush_interval=3600
    ) as db:
        for i in range(6):
            await db.upsert_session({"session_id": f"s{i}", "user_id": "u", "runs": [{"run_id": "r0"}]})
        await db.flush()
        for i in range(6):
            await db.upsert_run(f"s{i}", {"run_id": "r1", "text": f"journaled {i}"})
        image = crash_image(live, tmp_path / "image")
    async with AsyncInMemoryDb(
        persistence=DirectoryPersistence(image, fsync=False), durability="journal", max_sessions=2
    ) as bounded:
        for i in range(6):
            assert run_ids(await bounded.get_session(f"s{i}")) == ["r0", "r1"]
        await bounded.flush()
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(image, fsync=False)) as reopened:
        sessions = await reopened.get_all_sessions()
        assert len(sessions) == 6
        assert all(run_ids(s) == ["r0", "r1"] and s["user_id"] == "u" for s in sessions)


# -- 2. the journal belongs to the directory, not to the mode -------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"lazy": True}, {"max_sessions": 1}], ids=["eager", "lazy", "bounded"])
async def test_scenario_02_any_open_of_a_journaled_root_replays_it_and_never_reverts_newer_data(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    """A journaled writer is killed; a default-durability open sees every journaled write; a newer write is
    flushed; a later journal-mode open does not replay the old journal over it."""
    live = tmp_path / "live"
    async with AsyncInMemoryDb(
        persistence=DirectoryPersistence(live, fsync=False), durability="journal", flush_interval=3600
    ) as writer:
        await writer.upsert_session({"session_id": "a", "session_data": {"v": "flushed"}, "runs": [{"run_id": "r0"}]})
        await writer.flush()
        await writer.upsert_session({"session_id": "a", "session_data": {"v": "journaled"}})
        await writer.upsert_run("a", {"run_id": "r1"})
        await writer.upsert_session({"session_id": "b", "runs": []})
        await writer.put_record("notes", "n1", {"text": "journaled"})
        image = crash_image(live, tmp_path / "image")
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(image, fsync=False), **options) as plain:
        a = await plain.get_session("a")
        assert a is not None
        assert a["session_data"] == {"v": "journaled"}
        assert run_ids(a) == ["r0", "r1"]
        assert await plain.get_session("b") is not None
        assert await plain.get_record("notes", "n1") == {"text": "journaled"}
        await plain.upsert_session({"session_id": "a", "session_data": {"v": "newer"}})
        await plain.flush()
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(image, fsync=False), durability="journal") as again:
        a = await again.get_session("a")
        assert a is not None
        assert a["session_data"] == {"v": "newer"}
        assert run_ids(a) == ["r0", "r1"]


# -- 3. durability="write" with max_sessions --------------------------------------------------------------------


async def test_scenario_03_write_durability_with_max_sessions_returns_what_landed(tmp_path: Path) -> None:
    """Eight concurrent upsert_session calls on a write-durable store bounded to one session each return their
    stored session (no decode error from an evicted record), and each landed exactly once."""
    root = tmp_path / "store"
    async with AsyncInMemoryDb(
        persistence=DirectoryPersistence(root, fsync=False), durability="write", max_sessions=1
    ) as db:
        results = await asyncio.gather(
            *(db.upsert_session({"session_id": f"s{i}", "runs": [{"run_id": f"r{i}"}]}) for i in range(8))
        )
        assert [(r["session_id"], r["version"], run_ids(r)) for r in results] == [
            (f"s{i}", 1, [f"r{i}"]) for i in range(8)
        ]
        assert stored_ids(root) == {f"s{i}" for i in range(8)}  # durable before the calls returned
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(root, fsync=False)) as reopened:
        assert sorted((s["session_id"], s["version"]) for s in await reopened.get_all_sessions()) == [
            (f"s{i}", 1) for i in range(8)
        ]


# -- 4. a deleted session never comes back ----------------------------------------------------------------------


async def test_scenario_04_a_delete_during_a_slow_reload_wins(tmp_path: Path) -> None:
    """While an evicted session reloads from slow storage, delete_session returns True and a flush removes the
    file; the stale reload is then dropped: the session stays gone (not readable, listed or written back)."""
    root = tmp_path / "store"
    storage = Faulty(DirectoryPersistence(root, fsync=False))
    async with AsyncInMemoryDb(persistence=storage, durability="manual", max_sessions=1) as db:
        await db.upsert_session({"session_id": "a", "runs": [{"run_id": "r0"}]})
        await db.upsert_session({"session_id": "b"})
        await db.flush()
        assert not db._kernel.sessions["a"].resident
        gate = storage.load_gate = Gate()
        reader = asyncio.create_task(db.get_session("a"))
        await gate.entered.wait()  # the reload has read the old file and is "on the wire"
        assert await db.delete_session("a") is True
        await db.flush()
        assert stored_ids(root) == {"b"}
        gate.release.set()
        got = await reader  # began before the delete: the old value or None, never an error
        assert got is None or run_ids(got) == ["r0"]
        assert await db.get_session("a") is None
        assert [s["session_id"] for s in await db.get_all_sessions()] == ["b"]
        with pytest.raises(NotFoundError):
            await db.upsert_run("a", {"run_id": "r1"})
        await db.upsert_session({"session_id": "b", "summary": "touch"})
        await db.flush()
        assert stored_ids(root) == {"b"}
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(root, fsync=False)) as reopened:
        assert await reopened.get_session("a") is None


# -- 5. hooks with lazy=True never revert an acknowledged write -------------------------------------------------


async def test_scenario_05_lazy_hooks_never_revert_an_acknowledged_write() -> None:
    """Two first reads of a lazy hook store share one call of ``load``; a write acknowledged (durability="write")
    while that slow load is in flight is neither reverted by it nor by the next save."""
    blob: dict[str, Any] = {"a": {"session_id": "a", "session_data": {"v": "old"}}}
    calls = 0
    gate = Gate()

    async def load() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        seen = orjson.loads(orjson.dumps(blob))  # what storage held when the read was sent
        if calls == 1:
            await gate.pass_through()
        return seen

    async def save(snapshot: dict[str, Any]) -> None:
        blob.clear()
        blob.update(orjson.loads(orjson.dumps(snapshot)))

    async with AsyncInMemoryDb(load=load, save=save, lazy=True, durability="write") as db:
        first = asyncio.create_task(db.get_session("a"))
        await gate.entered.wait()
        second = asyncio.create_task(db.get_session("a"))
        writer = asyncio.create_task(db.upsert_session({"session_id": "a", "session_data": {"v": "acked"}}))
        await asyncio.sleep(0)
        gate.release.set()
        acked = await writer
        assert acked["session_data"] == {"v": "acked"}
        for reader in (first, second):
            got = await reader
            assert got is not None
            assert got["session_data"]["v"] in ("old", "acked")
        assert calls == 1
        await db.upsert_session({"session_id": "b"})
        stored = blob["collections"]["sessions"]
        assert stored["a"]["session_data"] == {"v": "acked"}
        assert "b" in stored
        a = await db.get_session("a")
        assert a is not None
        assert a["session_data"] == {"v": "acked"}


# -- 6. a failing journal changes nothing and recovers ----------------------------------------------------------


async def test_scenario_06_a_write_that_cannot_be_journaled_changes_nothing_and_writes_recover(tmp_path: Path) -> None:
    """With the disk full, a write raises PersistenceError and changes nothing (in memory, in the dirty set, after
    a restart); once space returns the next writes succeed and survive a crash."""
    live = tmp_path / "live"
    async with AsyncInMemoryDb(
        persistence=DirectoryPersistence(live, fsync=False), durability="journal", flush_interval=3600
    ) as db:
        await db.upsert_session({"session_id": "a", "runs": [{"run_id": "r0"}]})
        before, dirty = await db.get_all_sessions(), db.stats().dirty
        with disk_full():
            with pytest.raises(PersistenceError, match="not applied"):
                await db.upsert_run("a", {"run_id": "lost"})
            with pytest.raises(PersistenceError, match="not applied"):
                await db.upsert_session({"session_id": "new"})
            with pytest.raises(PersistenceError, match="not applied"):
                await db.delete_session("a")
            with pytest.raises(PersistenceError, match="not applied"):
                await db.put_record("notes", "n", {"x": 1})
        assert await db.get_all_sessions() == before
        assert db.stats().dirty == dirty
        assert await db.get_record("notes", "n") is None
        await db.upsert_run("a", {"run_id": "r1"})
        await db.upsert_session({"session_id": "later"})
        image = crash_image(live, tmp_path / "image")
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(image, fsync=False)) as reopened:
        assert run_ids(await reopened.get_session("a")) == ["r0", "r1"]
        assert await reopened.get_session("later") is not None
        assert await reopened.get_session("new") is None
        assert await reopened.get_record("notes", "n") is None


# -- 7. upsert_sessions on a bounded store ----------------------------------------------------------------------


async def test_scenario_07_bulk_upsert_after_waiting_for_a_lock_keeps_evicted_runs(tmp_path: Path) -> None:
    """upsert_sessions waiting for a session lock while its sessions are evicted still carries their stored runs
    over (it decides what to reload after it holds the locks), in memory and in storage."""
    root = tmp_path / "store"
    async with AsyncInMemoryDb(
        persistence=DirectoryPersistence(root, fsync=False), durability="manual", max_sessions=1
    ) as db:
        await db.upsert_session({"session_id": "s1", "runs": [{"run_id": "r1"}]})
        await db.upsert_session({"session_id": "s2", "runs": [{"run_id": "r2"}]})
        await db.upsert_session({"session_id": "s3"})
        await db.flush()
        gate = Gate()

        async def hold(s: dict[str, Any] | None) -> None:
            await gate.pass_through()

        holder = asyncio.create_task(db.update_session("s1", hold))
        await gate.entered.wait()
        bulk = asyncio.create_task(
            db.upsert_sessions([{"session_id": "s1", "summary": "x"}, {"session_id": "s2", "summary": "y"}])
        )
        await asyncio.sleep(0)
        assert not bulk.done()
        await db.get_session("s3")  # evicts s1 and s2 while the bulk write waits
        assert not db._kernel.sessions["s2"].resident
        gate.release.set()
        await holder
        written = await bulk
        assert [run_ids(s) for s in written] == [["r1"], ["r2"]]
        assert run_ids(await db.get_session("s1")) == ["r1"]
        assert run_ids(await db.get_session("s2")) == ["r2"]
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(root, fsync=False)) as reopened:
        s1, s2 = await reopened.get_session("s1"), await reopened.get_session("s2")
        assert run_ids(s1) == ["r1"]
        assert run_ids(s2) == ["r2"]
        assert s1 is not None
        assert s1["summary"] == "x"


# -- 11. bad timestamps, and a directory removed under a running store -------------------------------------------


async def test_scenario_11_nan_created_at_is_a_validation_error_naming_the_field() -> None:
    """created_at=nan with preserve_updated_at=True raises ValidationError naming created_at, and stores nothing."""
    async with AsyncInMemoryDb() as db:
        for field in ("created_at", "updated_at"):
            with pytest.raises(ValidationError, match=field):
                await db.upsert_session({"session_id": "a", field: math.nan}, preserve_updated_at=True)
            with pytest.raises(ValidationError, match=field):
                await db.upsert_sessions([{"session_id": "a", field: math.inf}], preserve_updated_at=True)
        assert await db.get_session("a") is None


async def test_scenario_11_a_directory_removed_while_the_store_runs_is_recreated_by_the_next_flush(
    tmp_path: Path,
) -> None:
    """Removing the store's directory (all of it) while the store runs does not make every later flush fail:
    the next flush recreates it and writes what changed, and a restart reads that."""
    root = tmp_path / "store"
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(root, fsync=False), durability="manual") as db:
        await db.upsert_session({"session_id": "a"})
        await db.put_record("notes", "n", {"x": 1})
        await db.flush()
        shutil.rmtree(root)
        await db.upsert_session({"session_id": "b"})
        await db.flush()
        await db.upsert_session({"session_id": "c"})
        await db.flush()
    assert stored_ids(root) >= {"b", "c"}


async def test_scenario_09_a_journal_line_missing_seq_is_corrupt_data_with_segment_and_offset(tmp_path: Path) -> None:
    """A journal entry without its ``seq`` raises CorruptDataError naming the segment and the byte offset."""
    live = tmp_path / "live"
    async with AsyncInMemoryDb(
        persistence=DirectoryPersistence(live, fsync=False), durability="journal", flush_interval=3600
    ) as db:
        await db.upsert_session({"session_id": "a"})
        await db.upsert_session({"session_id": "b"})
        image = crash_image(live, tmp_path / "image")
    segment = next((image / "journal").glob("journal-*.jsonl"))
    first, second = segment.read_bytes().splitlines()
    entry = orjson.loads(second)
    assert "seq" in entry
    del entry["seq"]
    segment.write_bytes(first + b"\n" + orjson.dumps(entry) + b"\n")
    with pytest.raises(CorruptDataError, match=f"{segment.name}:{len(first) + 1}"):
        await AsyncInMemoryDb(persistence=DirectoryPersistence(image, fsync=False)).start()
