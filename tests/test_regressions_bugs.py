"""Bugs found after the kernel landed (the regression brief's b, c, d, g, h), each reproduced and held.

Every "meanwhile" is a :class:`~tests._faults.Gate` (or a :class:`threading.Event` for worker-thread work)
the test opens when the racing step is in place; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from aiomemdb import AsyncInMemoryDb, ClosedError, DirectoryPersistence
from aiomemdb._io._journal import Journal
from aiomemdb._kernel import _storage

from ._faults import Faulty, Gate, two_closes_held_at_the_final_flush, yield_many


def run_ids(session: dict[str, Any] | None) -> list[str]:
    assert session is not None
    return [r["run_id"] for r in session["runs"]]



async def evicted_store(root: Path, **options: Any) -> tuple[AsyncInMemoryDb, Faulty]:
    """A store bounded to one session in which ``a`` (runs r0) is evicted and clean, and ``b`` is resident."""
    storage = Faulty(DirectoryPersistence(root, fsync=False))
    db = AsyncInMemoryDb(persistence=storage, max_sessions=1, flush_interval=3600, **options)
    await db.upsert_session({"session_id": "a", "runs": [{"run_id": "r0"}]})
    await db.upsert_session({"session_id": "b"})
    await db.flush()
    assert not db._kernel.sessions["a"].resident
    return db, storage


# -- b. a write in progress when aclose() starts ------------------------------------------------------------------


async def test_bug_b_a_write_that_lands_during_the_final_flush_is_flushed_too(tmp_path: Path) -> None:
    """A write waiting for a reload when aclose() starts, and acknowledged while the final flush is writing, is
    in storage after the close (the final flush repeats until nothing is dirty)."""
    root = tmp_path / "store"
    db, storage = await evicted_store(root, durability="manual")  # no background flush takes b first
    await db.upsert_session({"session_id": "b", "summary": "dirty"})  # something for the final flush to write
    load_gate = storage.load_gate = Gate()
    writer = asyncio.create_task(db.upsert_run("a", {"run_id": "r1"}))
    await load_gate.entered.wait()
    save_gate = storage.save_gate = Gate()
    closing = asyncio.create_task(db.aclose())
    await save_gate.entered.wait()  # the final flush has taken the dirty set and is writing it
    load_gate.release.set()
    await writer  # acknowledged
    save_gate.release.set()
    await closing
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(root, fsync=False)) as reopened:
        assert run_ids(await reopened.get_session("a")) == ["r0", "r1"]


async def test_bug_b_writes_waiting_for_a_lock_when_the_store_closes_fail_with_closed_error(tmp_path: Path) -> None:
    """An update_session whose function is still running, and a write queued behind its lock, when the close
    completes: both fail with ClosedError (not acknowledged), and storage holds the state before them."""
    root = tmp_path / "store"
    db = AsyncInMemoryDb(persistence=DirectoryPersistence(root, fsync=False), durability="manual")
    await db.upsert_session({"session_id": "a", "summary": "before"})
    gate = Gate()

    async def slow(s: dict[str, Any] | None) -> dict[str, Any]:
        await gate.pass_through()
        assert s is not None
        return {**s, "summary": "from update"}

    updater = asyncio.create_task(db.update_session("a", slow))
    await gate.entered.wait()
    queued = asyncio.create_task(db.upsert_session({"session_id": "a", "summary": "queued"}))
    await yield_many()
    await db.aclose()
    gate.release.set()
    with pytest.raises(ClosedError):
        await updater
    with pytest.raises(ClosedError):
        await queued
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(root, fsync=False)) as reopened:
        a = await reopened.get_session("a")
        assert a is not None
        assert a["summary"] == "before"


# -- c. a reader whose reload is in flight when aclose() stops the loader ----------------------------------------


async def test_bug_c_a_reader_whose_reload_is_stopped_by_close_gets_closed_error(tmp_path: Path) -> None:
    """aclose() stops a reload in flight; the reader waiting for it gets ClosedError, not a bare CancelledError
    (its own task was not cancelled), and a read after the close does too."""
    db, storage = await evicted_store(tmp_path / "store")
    gate = storage.load_gate = Gate()
    reader = asyncio.create_task(db.get_session("a"))
    await gate.entered.wait()
    await db.aclose()
    with pytest.raises(ClosedError):
        await reader
    assert not reader.cancelled()
    with pytest.raises(ClosedError):
        await db.get_session("a")


async def test_bug_c_a_cancelled_reader_is_still_cancelled(tmp_path: Path) -> None:
    """The ClosedError translation is only for fetches the close stopped: a reader cancelled itself is cancelled."""
    db, storage = await evicted_store(tmp_path / "store")
    gate = storage.load_gate = Gate()
    reader = asyncio.create_task(db.get_session("a"))
    await gate.entered.wait()
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    gate.release.set()
    assert run_ids(await db.get_session("a")) == ["r0"]
    await db.aclose()


# -- d. cancelling one of two concurrent aclose() callers ---------------------------------------------------------


@pytest.mark.parametrize("cancel", ["first", "second"])
async def test_bug_d_cancelling_one_close_caller_does_not_cancel_the_shared_close(tmp_path: Path, cancel: str) -> None:
    """Two concurrent aclose() calls; one caller is cancelled while the final flush writes. The close goes on:
    the other caller returns once it is complete, the store is closed (not reopened) and the data is stored."""
    root = tmp_path / "store"
    db, storage, gate, first, second = await two_closes_held_at_the_final_flush(root)
    victim, survivor = (first, second) if cancel == "first" else (second, first)
    victim.cancel()
    await yield_many()
    assert not survivor.done()
    gate.release.set()
    await survivor
    with pytest.raises(asyncio.CancelledError):
        await victim
    assert db.stats().state == "closed"
    assert storage.closes == 1
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(root, fsync=False)) as reopened:
        assert await reopened.get_session("a") is not None


# -- g. journal fsync against segment release ---------------------------------------------------------------------


def test_bug_g_journal_sync_survives_a_release_closing_its_fds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Journal.sync fsyncs outside its fd lock; a flush's release() closing the segment's fd meanwhile (and the
    number being reused by another file) must not make the fsync fail with EBADF or hit the other file."""
    journal = Journal(tmp_path / "journal")
    journal.append(b'{"op":"noop"}')
    segment = journal.rotate()
    entered, proceed = threading.Event(), threading.Event()
    real_fsync = os.fsync
    synced: list[int] = []

    def slow_fsync(fd: int) -> None:
        entered.set()
        assert proceed.wait(30)
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    result: list[BaseException | int] = []

    def sync() -> None:
        try:
            result.append(journal.sync())
        except BaseException as exc:
            result.append(exc)

    segment_fd = journal._fds[segment]
    worker = threading.Thread(target=sync)
    worker.start()
    assert entered.wait(30)
    journal.release(segment)  # closes the segment's fd while the sync is about to use it
    other = os.open(tmp_path / "other", os.O_WRONLY | os.O_CREAT)
    if other != segment_fd:
        os.dup2(other, segment_fd)  # the freed number now names another file, as the next open() may make it
        os.close(other)
    proceed.set()
    worker.join()
    os.close(segment_fd)
    assert result == [1]
    # the sync also fsyncs the journal folder once (its first segment's directory entry); of files, only the segment
    files = [path for path in synced if path != str(tmp_path / "journal")]
    assert len(files) == 1
    assert f"journal-{segment:012d}.jsonl" in files[0]  # the segment was fsynced, not the other file


async def test_bug_g_fsync_per_write_with_flushes_releasing_segments(tmp_path: Path) -> None:
    """journal_fsync=0 with many flushes releasing segments while writes wait for their fsync: no write fails."""
    db = AsyncInMemoryDb(
        persistence=DirectoryPersistence(tmp_path / "store", fsync=False),
        durability="journal",
        journal_fsync=0,
        flush_interval=3600,
    )

    async def writes(n: int) -> None:
        for i in range(40):
            await db.upsert_session({"session_id": f"s{n}-{i % 4}", "summary": str(i)})

    async def flushes() -> None:
        for _ in range(40):
            await db.flush()

    await asyncio.gather(writes(0), writes(1), writes(2), flushes())
    assert db.stats().last_error is None
    await db.aclose()


# -- h. refresh during a flush of the same session ---------------------------------------------------------------


async def test_bug_h_refresh_during_a_flush_of_the_session_leaves_memory_and_storage_agreeing(tmp_path: Path) -> None:
    """refresh() while a flush is writing the same session waits for that flush, so what it installs is what
    storage holds when both are done."""
    root = tmp_path / "store"
    storage = Faulty(DirectoryPersistence(root, fsync=False))
    db = AsyncInMemoryDb(persistence=storage, durability="manual")
    await db.upsert_session({"session_id": "a", "summary": "stored"})
    await db.flush()
    await db.upsert_session({"session_id": "a", "summary": "local"})
    gate = storage.save_gate = Gate()
    flushing = asyncio.create_task(db.flush())
    await gate.entered.wait()  # the flush has encoded "local" and is writing it
    refreshing = asyncio.create_task(db.refresh("a"))
    await yield_many()
    gate.release.set()
    await flushing
    refreshed = await refreshing
    assert refreshed is not None
    in_memory = await db.get_session("a")
    await db.aclose()
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(root, fsync=False)) as reopened:
        in_storage = await reopened.get_session("a")
    assert in_memory is not None
    assert in_storage is not None
    assert in_memory["summary"] == in_storage["summary"] == refreshed["summary"]


# -- i. writes acknowledged between a flush's take and its save ---------------------------------------------------


async def test_bug_i_writes_acknowledged_after_a_flush_took_its_changeset_stay_dirty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush takes the dirty set, then encodes and saves in a task of its own; writes acknowledged in between
    (to a key it took and to one it did not) are not counted as flushed: they stay dirty, the next flush writes
    them, and storage then equals memory. (The crash test's flake was its own bookkeeping, not this.)"""
    root = tmp_path / "store"
    storage = Faulty(DirectoryPersistence(root, fsync=False))
    db = AsyncInMemoryDb(persistence=storage, durability="manual")
    await db.upsert_session({"session_id": "a", "summary": "v1"})
    await db.upsert_session({"session_id": "b", "summary": "v1"})
    await db.flush()
    await db.upsert_session({"session_id": "a", "summary": "v2"})
    taken = asyncio.Event()
    begin_flush = _storage.begin_flush

    def noting(kernel: Any) -> Any:
        ticket = begin_flush(kernel)
        taken.set()
        return ticket

    monkeypatch.setattr(_storage, "begin_flush", noting)
    gate = storage.save_gate = Gate()
    flushing = asyncio.create_task(db.flush())
    await taken.wait()  # resumed before the encoding task's first step
    await db.upsert_session({"session_id": "a", "summary": "v3"})  # a key the flush took
    await db.upsert_session({"session_id": "c", "summary": "v1"})  # a key it did not
    await gate.entered.wait()
    await db.upsert_session({"session_id": "b", "summary": "v2"})  # while it saves
    gate.release.set()
    await flushing
    assert db.stats().dirty == 3  # a, b and c: none was marked clean by the flush that took before them
    report = await db.flush()
    assert report.upserts == 3
    memory = {s["session_id"]: s["summary"] for s in await db.get_all_sessions()}
    await db.aclose()
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(root, fsync=False)) as reopened:
        assert {s["session_id"]: s["summary"] for s in await reopened.get_all_sessions()} == memory
    assert memory == {"a": "v3", "b": "v2", "c": "v1"}
