"""Issue 10's lifecycle and error scenarios (8, 9, 10), and the close bugs found after the kernel landed.

Each test names the scenario (``scenario_08``) or the bug of the regression brief (``bug_a`` ... ``bug_e``) it
reproduces. Nothing waits on a clock: slow storage is a :class:`~tests._faults.Gate`; a task that would spin is
caught by a counter that stops it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from aiomemdb import AiomemdbError, AsyncInMemoryDb, ClosedError, DirectoryPersistence, PersistenceError
from aiomemdb._io._journal import Journal

from ._faults import Faulty, two_closes_held_at_the_final_flush, yield_many


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def stored_ids(root: Path) -> set[str]:
    folder = root / "v1" / "sessions"
    return {p.stem for p in folder.glob("*.json")} if folder.exists() else set()



# -- 8. aclose ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", range(5))
async def test_scenario_08_close_right_after_a_write_that_woke_the_flusher_returns(
    tmp_path: Path, attempt: int
) -> None:
    """Closing right after a write that asked the flusher to flush now (dirty sessions block eviction) ends,
    with everything flushed (Python 3.11's wait_for must not swallow the flusher's stop)."""
    root = tmp_path / "store"
    db = AsyncInMemoryDb(persistence=DirectoryPersistence(root, fsync=False), flush_interval=3600, max_sessions=1)
    await db.start()
    await db.upsert_session({"session_id": "a"})
    await db.upsert_session({"session_id": "b"})  # a is dirty: eviction is blocked and the flusher is woken
    assert db._rt.flusher is not None
    assert db._rt.flusher._wake.is_set()
    await db.aclose()
    assert db.stats().state == "closed"
    assert stored_ids(root) == {"a", "b"}


async def test_scenario_08_a_second_concurrent_close_waits_for_the_first_to_flush(tmp_path: Path) -> None:
    """A second aclose() while the first is flushing returns only once the data is in storage."""
    root = tmp_path / "store"
    db, _storage, gate, first, second = await two_closes_held_at_the_final_flush(root)
    assert not second.done()
    gate.release.set()
    await asyncio.gather(first, second)
    assert stored_ids(root) == {"a"}
    assert db.stats().state == "closed"


async def test_scenario_08_bug_a_a_failed_close_leaves_the_ttl_sweeper_working_not_spinning(tmp_path: Path) -> None:
    """After a close whose final flush fails, the TTL sweeper runs again: it expires idle sessions, and it waits
    between sweeps instead of spinning on a wake-up event nobody cleared."""
    expired = asyncio.Event()
    storage = Faulty(DirectoryPersistence(tmp_path / "store", fsync=False))
    db = AsyncInMemoryDb(
        persistence=storage, durability="manual", ttl=60, on_event=lambda e: e.kind == "expire" and expired.set()
    )
    await db.start()
    await db.upsert_session({"session_id": "a"})
    sweeps = 0
    expire_some = db._kernel.expire_some

    def counting(limit: int) -> tuple[int, bool]:
        nonlocal sweeps
        sweeps += 1
        if sweeps > 20:
            raise AssertionError("the sweeper spins")  # ends a spinning task, so the test can see it
        return expire_some(limit)

    db._kernel.expire_some = counting  # type: ignore[method-assign]
    storage.fail_saves = 1
    with pytest.raises(PersistenceError):
        await db.aclose()
    assert db.stats().state == "open"
    await yield_many(200)
    sweeper = db._rt.sweeper
    assert sweeper is not None
    assert sweeper._task is not None
    assert not sweeper._task.done(), "the sweeper died"
    assert sweeps < 20
    await db.flush()  # a is clean now, so it may expire
    db._kernel.res.ttl = 0  # everything is idle from now on
    sweeper._wake.set()
    await expired.wait()
    assert not db._kernel.sessions["a"].resident
    await db.aclose()


async def test_scenario_08_a_raising_journal_close_still_closes_the_store_and_the_persistence(tmp_path: Path) -> None:
    """A journal whose close raises: aclose() raises that error, and the store is closed with its persistence
    released (not left "closing" with a leaked client)."""
    storage = Faulty(DirectoryPersistence(tmp_path / "store", fsync=False))
    db = AsyncInMemoryDb(persistence=storage, durability="journal", journal_path=tmp_path / "journal")
    await db.upsert_session({"session_id": "a"})
    journal = db._rt.journal
    assert journal is not None

    def failing_close() -> None:
        Journal.close(journal)
        raise PersistenceError("injected: journal close failed")

    journal.close = failing_close  # type: ignore[method-assign]
    with pytest.raises(PersistenceError, match="journal close failed"):
        await db.aclose()
    assert db.stats().state == "closed"
    assert storage.closes == 1
    await db.aclose()  # idempotent once closed
    with pytest.raises(ClosedError):
        await db.get_session("a")


# -- 9. errors that vanish ------------------------------------------------------------------------------------------


async def test_scenario_09_a_failing_journal_fsync_is_reported_and_the_fsync_task_survives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """os.fsync raising OSError fails the waiting write with PersistenceError (applied, not yet durable), is
    reported in stats().last_error, and the fsync task keeps running: the next write is fsynced and returns."""
    db = AsyncInMemoryDb(
        persistence=DirectoryPersistence(tmp_path / "store", fsync=False), durability="journal", journal_fsync=0
    )
    await db.upsert_session({"session_id": "a"})
    calls = {"n": 0}
    original = os.fsync

    def failing_once(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(5, "injected: EIO")
        original(fd)

    monkeypatch.setattr(os, "fsync", failing_once)
    with pytest.raises(PersistenceError, match="not yet durable"):
        await db.upsert_session({"session_id": "b"})
    assert "fsync" in (db.stats().last_error or "")
    syncer = db._rt.syncer
    assert syncer is not None
    assert syncer._task is not None
    assert not syncer._task.done()
    await db.upsert_session({"session_id": "c"})  # fsynced: the task is alive
    assert calls["n"] >= 2
    await db.aclose()


async def test_scenario_09_bug_e_a_crashed_sweeper_is_reported_and_close_flushes_then_raises_the_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A TTL sweeper that crashes is logged and shows in stats().last_error at once; aclose() still makes the
    final flush, ends fully closed, and raises with the crash as the reason."""
    root = tmp_path / "store"
    db = AsyncInMemoryDb(persistence=DirectoryPersistence(root, fsync=False), durability="manual", ttl=0.001)
    await db.start()
    crashed = asyncio.Event()

    def broken(limit: int) -> tuple[int, bool]:
        crashed.set()
        raise RuntimeError("injected: sweeper bug")

    db._kernel.expire_some = broken  # type: ignore[method-assign]
    await crashed.wait()
    sweeper = db._rt.sweeper
    assert sweeper is not None
    assert sweeper._task is not None
    with caplog.at_level(logging.ERROR, logger="aiomemdb"):
        await asyncio.wait([sweeper._task])
        await yield_many()
    assert "sweeper bug" in (db.stats().last_error or "")
    assert any("sweeper bug" in r.getMessage() or (r.exc_text or "").find("sweeper bug") >= 0 for r in caplog.records)
    await db.upsert_session({"session_id": "a"})
    with pytest.raises(AiomemdbError, match="sweeper bug") as info:
        await db.aclose()
    assert isinstance(info.value.__cause__, RuntimeError)
    assert db.stats().state == "closed"
    assert stored_ids(root) == {"a"}


async def test_bug_e_a_crashed_flusher_task_is_reported_and_close_still_flushes(tmp_path: Path) -> None:
    """A background flusher that dies of an unexpected error is reported, and aclose() still flushes and closes."""
    root = tmp_path / "store"
    db = AsyncInMemoryDb(persistence=DirectoryPersistence(root, fsync=False), flush_interval=3600)
    await db.start()
    flusher = db._rt.flusher
    assert flusher is not None
    assert flusher._task is not None
    flusher._task.cancel()  # stands for any crash: the task ends without having been asked to stop
    await asyncio.wait([flusher._task])
    await yield_many()
    assert "flusher" in (db.stats().last_error or "")
    await db.upsert_session({"session_id": "a"})
    with pytest.raises(AiomemdbError, match="flusher"):
        await db.aclose()
    assert db.stats().state == "closed"
    assert stored_ids(root) == {"a"}


async def test_scenario_09_s3_pool_reports_every_failure_of_a_group() -> None:
    """When several S3 requests of one parallel step fail, the error raised carries all of them, not the first."""
    from aiomemdb.persistence._s3 import S3Persistence

    storage = S3Persistence("bucket-x", max_concurrency=4)
    started = asyncio.Event()
    arrived = 0

    async def fail(item: int) -> None:
        nonlocal arrived
        arrived += 1
        if arrived == 4:
            started.set()
        await started.wait()
        raise OSError(f"injected failure {item}")

    with pytest.raises(OSError, match="injected failure") as info:
        await storage._wire.pool(fail, range(4), fail_fast=True)
    text = "\n".join([str(info.value), *getattr(info.value, "__notes__", [])])
    assert all(f"injected failure {i}" in text for i in range(4)), text


# -- 10. the Agno run cache ------------------------------------------------------------------------------------------


async def test_scenario_10_the_agno_run_cache_gives_every_reader_its_own_run_objects() -> None:
    """One caller mutating ``session.runs[0].content`` does not change what the next caller gets."""
    pytest.importorskip("agno", reason="agno is not installed (pip install 'aiomemdb[agno]')")
    from agno.agent import Agent

    from aiomemdb.agno import AsyncInMemoryDb as AgnoDb
    from aiomemdb.agno.testing import OfflineModel

    async with AgnoDb() as db:
        agent = Agent(model=OfflineModel(), db=db, user_id="ada")
        await agent.arun("What is the capital of France?")
        sid = agent.session_id
        assert sid is not None
        first: Any = await db.get_session(sid)
        original = first.runs[0].content
        first.runs[0].content = "mutated"
        second: Any = await db.get_session(sid)
        assert second.runs[0].content == original
        assert second.runs[0] is not first.runs[0]


async def test_bug_e_a_crashed_journal_fsync_task_fails_its_waiters_and_later_writes_still_fsync(
    tmp_path: Path,
) -> None:
    """The journal's fsync task dying of an unexpected error fails the write waiting for it (PersistenceError,
    not a hang), is reported, later writes are fsynced by the writer itself, and aclose() flushes, closes and
    raises the reason."""
    root = tmp_path / "store"
    db = AsyncInMemoryDb(persistence=DirectoryPersistence(root, fsync=False), durability="journal", journal_fsync=0)
    await db.upsert_session({"session_id": "a"})
    syncer = db._rt.syncer
    assert syncer is not None

    async def broken() -> None:
        raise RuntimeError("injected: fsync task bug")

    syncer._sync_once = broken  # type: ignore[method-assign]
    with pytest.raises(PersistenceError, match="fsync task bug"):
        await db.upsert_session({"session_id": "b"})
    await yield_many()
    assert "journal fsync" in (db.stats().last_error or "")
    del syncer._sync_once  # the instance attribute goes; the method is back for the writer's own fsync
    await db.upsert_session({"session_id": "c"})
    with pytest.raises(AiomemdbError, match="fsync task bug"):
        await db.aclose()
    assert db.stats().state == "closed"
    assert stored_ids(root) == {"a", "b", "c"}
