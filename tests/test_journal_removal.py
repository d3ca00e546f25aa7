"""Adversarial tests of the journal restore (f82bd3d): a journal folder removed, replaced or full while writes run.

A "crash" is a copy of the store folder (``crash_image``); with ``journal_fsync=0`` every write that returned must
be in it once a later write has returned after the last removal (the documented window: a write acknowledged
before a removal is restored by the next sync).
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aiomemdb import AsyncInMemoryDb, DirectoryPersistence, InMemoryDb, PersistenceError
from aiomemdb._io import _journal

from .test_cli import cli, ok
from .test_journal import crash_image, live_store, recovered_ids, segments
from .test_sync import run_threads


def _sync_store(root: Path, **options: Any) -> InMemoryDb:
    return InMemoryDb(
        persistence=DirectoryPersistence(root, fsync=False),
        durability="journal",
        journal_fsync=0,
        flush_interval=3600,
        **options,
    )


async def test_writes_replayed_from_a_previous_run_survive_the_journal_folder_being_removed(tmp_path: Path) -> None:
    """A journaling store replays the segments a killed predecessor left and keeps them until its first flush.
    Removing the journal folder then: the restore only copies segments this process holds open, so the replayed
    writes (acknowledged as durable by the previous process) vanish from disk, and a crash after a later write
    returned loses them although memory still has them and nothing was flushed."""
    first = tmp_path / "first"
    async with live_store(first) as db:
        await db.upsert_session({"session_id": "old"})
        image = crash_image(first, tmp_path / "killed")  # the predecessor is killed here
    async with live_store(image) as db:
        assert await db.get_session("old") is not None  # replayed from the predecessor's segment
        shutil.rmtree(image / "journal")
        await db.upsert_session({"session_id": "new"})  # returns: its sync restored what this process holds
        after = crash_image(image, tmp_path / "after")
    assert await recovered_ids(after) == {"old", "new"}


def test_many_threads_writing_while_the_journal_folder_is_removed_again_and_again(tmp_path: Path) -> None:
    """Four writer threads (journal_fsync=0, so each write returns after its fsync) and a remover deleting the
    journal folder 15 times, each time once more writes have returned. A write may fail with 'not yet durable'
    when its sync meets the folder mid-removal; every write that returned is in a crash image taken after one last
    write, and the close stores them all."""
    live = tmp_path / "live"
    db = _sync_store(live)
    returned: list[set[str]] = [set() for _ in range(4)]
    failed: list[str] = []
    messages: list[str] = []
    progress = threading.Semaphore(0)
    stop = threading.Event()

    def writer(w: int) -> Callable[[], None]:
        def run() -> None:
            k = 0
            while not stop.is_set() and k < 2000:
                sid = f"w{w}-{k}"
                k += 1
                try:
                    db.upsert_session({"session_id": sid, "session_data": {"k": k}})
                except PersistenceError as exc:
                    failed.append(sid)
                    messages.append(str(exc))
                    continue
                returned[w].add(sid)
                progress.release()

        return run

    def remover() -> None:
        try:
            for _ in range(15):
                for _ in range(20):
                    if not progress.acquire(timeout=30):
                        raise AssertionError("writers made no progress")
                shutil.rmtree(live / "journal", ignore_errors=True)
        finally:
            stop.set()

    errors = run_threads([writer(0), writer(1), writer(2), writer(3), remover])
    assert errors == []
    assert all("not yet durable" in m for m in messages)
    db.upsert_session({"session_id": "last"})
    image = crash_image(live, tmp_path / "image")
    assert db._d.rt.journal is not None
    assert db._d.rt.journal.restored >= 1
    db.close()
    everything = set().union(*returned) | {"last"}
    recovered = _recovered_sync(image)
    assert everything - recovered == set()
    with InMemoryDb(persistence=DirectoryPersistence(live, fsync=False)) as again:
        stored = {s["session_id"] for s in again.get_all_sessions()}
    assert everything - stored == set()
    assert set(failed) - stored == set()  # applied in memory, so the close stored them too


def _recovered_sync(image: Path) -> set[str]:
    with InMemoryDb(persistence=DirectoryPersistence(image, fsync=False), durability="journal") as db:
        return {s["session_id"] for s in db.get_all_sessions()}


async def test_a_full_disk_during_the_restore_fails_the_write_as_not_durable_and_the_next_sync_restores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal's one write call fails (ENOSPC) only for the restore's copy, not for the appends: the write
    whose sync meets the removed segment is applied but told 'not yet durable', no .restoring file stays behind,
    and once the disk has room the next sync restores the segment with every line."""
    live = tmp_path / "live"
    real = _journal._write
    full = [True]

    def write(fd: int, data: Any) -> int:
        journal = db._rt.journal
        assert journal is not None
        if full[0] and fd not in journal._fds.values():
            raise OSError(errno.ENOSPC, "injected: no space left on device")
        return real(fd, data)

    async with live_store(live) as db:
        await db.upsert_session({"session_id": "a"})
        monkeypatch.setattr(_journal, "_write", write)
        shutil.rmtree(live / "journal")
        with pytest.raises(PersistenceError, match="not yet durable"):
            await db.upsert_session({"session_id": "b"})
        assert [p.name for p in (live / "journal").iterdir()] == []
        full[0] = False
        await db.upsert_session({"session_id": "c"})
        image = crash_image(live, tmp_path / "image")
    assert await recovered_ids(image) == {"a", "b", "c"}


async def test_disk_full_for_every_write_during_a_restore_changes_nothing_and_recovers(tmp_path: Path) -> None:
    """disk_full() (appends and the copy fail): the write after the removal raises and is not applied; once the
    fault clears the next write restores the removed segment and a crash keeps the earlier writes."""
    from ._faults import disk_full

    live = tmp_path / "live"
    async with live_store(live) as db:
        await db.upsert_session({"session_id": "a"})
        shutil.rmtree(live / "journal")
        with disk_full(), pytest.raises(PersistenceError):
            await db.upsert_session({"session_id": "b"})
        assert await db.get_session("b") is None
        await db.upsert_session({"session_id": "c"})
        image = crash_image(live, tmp_path / "image")
    assert await recovered_ids(image) == {"a", "c"}


async def test_the_journal_folder_replaced_by_a_symlink_restores_into_its_target(tmp_path: Path) -> None:
    """The journal folder removed and a symlink to an empty folder put in its place: the restore writes the
    segment through the link, a crash image (which follows the link) recovers every write, and the close removes
    the segment again."""
    live = tmp_path / "live"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    async with live_store(live) as db:
        await db.upsert_session({"session_id": "a"})
        shutil.rmtree(live / "journal")
        (live / "journal").symlink_to(elsewhere, target_is_directory=True)
        await db.upsert_session({"session_id": "b"})
        assert [p.name for p in elsewhere.iterdir()] == ["journal-000000000001.jsonl"]
        image = crash_image(live, tmp_path / "image")
    assert await recovered_ids(image) == {"a", "b"}
    assert list(elsewhere.iterdir()) == []


async def test_the_journal_folder_removed_during_a_flushs_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder is removed just as a flush releases its segment (the flush took 'a'; 'b' went to the next
    segment before the release): the release finds nothing to delete, the next write restores the open current
    segment, and a crash image holds 'b' and 'c' in the journal and 'a' in storage."""
    live = tmp_path / "live"
    real_release = _journal.Journal.release
    entered = []

    def release(self: _journal.Journal, upto: int) -> None:
        entered.append(upto)
        shutil.rmtree(self.directory)
        real_release(self, upto)

    async with live_store(live) as db:
        await db.upsert_session({"session_id": "a"})
        monkeypatch.setattr(_journal.Journal, "release", release)
        await db.flush()
        monkeypatch.setattr(_journal.Journal, "release", real_release)
        assert entered == [1]
        await db.upsert_session({"session_id": "b"})
        shutil.rmtree(live / "journal")
        await db.upsert_session({"session_id": "c"})
        assert segments(live) == ["journal-000000000002.jsonl"]
        image = crash_image(live, tmp_path / "image")
    assert await recovered_ids(image) == {"a", "b", "c"}


def test_journal_folder_removed_then_close_stores_everything_and_leaves_no_segment(tmp_path: Path) -> None:
    """The folder is removed and the store closed with no write in between: the close's final flush stores
    every write, the journal is retired (nothing left to replay, no folder full of restored segments)."""
    live = tmp_path / "live"
    db = _sync_store(live)
    db.upsert_session({"session_id": "a"})
    db.upsert_run("a", {"run_id": "r1"})
    shutil.rmtree(live / "journal")
    db.close()
    assert segments(live) == []
    with InMemoryDb(persistence=DirectoryPersistence(live, fsync=False)) as again:
        got = again.get_session("a")
    assert got is not None
    assert got["runs"] == [{"run_id": "r1"}]


async def test_a_bounded_journaled_store_keeps_every_write_through_removals_and_evictions(tmp_path: Path) -> None:
    """max_sessions=3 with the journal: evictions wake flushes (which release segments) while the journal folder is
    removed every 7 writes; a crash image after the last write recovers all 40 sessions from storage plus the
    journal, each with its run."""
    live = tmp_path / "live"
    async with live_store(live, max_sessions=3) as db:
        for i in range(40):
            await db.upsert_session({"session_id": f"s{i}", "runs": [{"run_id": "r", "i": i}]})
            if i % 7 == 6:
                shutil.rmtree(live / "journal", ignore_errors=True)
        await db.upsert_run("s0", {"run_id": "r2"})
        # a background flush (woken by eviction) may be writing: its temp files come and go, a crash leaves them
        image = tmp_path / "image"
        shutil.copytree(live, image, ignore=shutil.ignore_patterns(".tmp-*"))
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(image), durability="journal") as recovered:
        sessions = {s["session_id"]: s for s in await recovered.get_all_sessions()}
    assert set(sessions) == {f"s{i}" for i in range(40)}
    assert sessions["s0"]["runs"] == [{"run_id": "r", "i": 0}, {"run_id": "r2"}]
    assert all(sessions[f"s{i}"]["runs"][0] == {"run_id": "r", "i": i} for i in range(40))


def test_the_cli_reads_a_journal_beside_a_leftover_restoring_temp_file(tmp_path: Path) -> None:
    """A crash during a restore leaves ``journal-N.jsonl.restoring`` (a half copy) beside the segment it restored
    again later: ls, stats and verify count the real segment's entries only, report no problem and exit 0; a store
    opening the folder replays the segment and removes the stale copy."""
    live = tmp_path / "live"
    db = _sync_store(live)
    db.upsert_session({"session_id": "a"})
    db.upsert_session({"session_id": "b"})
    image = crash_image(live, tmp_path / "image")
    db.close()
    segment = image / "journal" / "journal-000000000001.jsonl"
    leftover = segment.with_name(segment.name + ".restoring")
    leftover.write_bytes(segment.read_bytes()[:15])  # torn: a copy cut off mid-line
    out = ok(cli("ls", image))
    assert "a" in out
    assert "b" in out
    verify = cli("verify", image)
    assert verify.returncode == 0, verify.stderr
    assert "2 journaled write" in verify.stdout + verify.stderr
    stats = cli("stats", image)
    assert stats.returncode == 0, stats.stderr
    assert _recovered_sync(image) == {"a", "b"}
    assert not os.path.exists(leftover)  # never mistaken for its segment; the writable open removed it
