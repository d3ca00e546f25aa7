"""durability="journal": every acknowledged write survives a crash, the journal is truncated after flushes.

A "crash" here is a copy of the store's directory taken while the store is still running (what the disk
holds at that instant); ``tests/test_crash.py`` kills real processes with SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aiomemdb import (
    AsyncInMemoryDb,
    CorruptDataError,
    DirectoryPersistence,
    HookPersistence,
    PersistenceError,
    ValidationError,
)
from aiomemdb._io import _journal

from ._faults import Faulty, Gate


def crash_image(src: Path, dst: Path) -> Path:
    """What a crash at this instant would leave on disk.

    The store may be flushing meanwhile (a failed journal fsync wakes the flusher): a temporary file it renames
    away between the listing and the copy was not there at that instant, so it is skipped, not an error.
    """

    def copy(source: str, target: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            shutil.copy2(source, target)

    shutil.copytree(src, dst, copy_function=copy)
    return dst


@pytest.fixture
async def journaled(tmp_path: Path) -> AsyncIterator[AsyncInMemoryDb]:
    db = AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path / "live"), durability="journal", flush_interval=3600)
    async with db:
        yield db


def segments(root: Path) -> list[str]:
    journal = root / "journal"
    return sorted(p.name for p in journal.iterdir()) if journal.exists() else []


async def test_acknowledged_writes_survive_a_crash(journaled: AsyncInMemoryDb, tmp_path: Path) -> None:
    """Every write that returned is recovered from the journal after a crash, with versions and order."""
    db = journaled
    await db.upsert_session({"session_id": "a", "user_id": "u", "runs": [{"run_id": "r0"}]})
    await db.upsert_run("a", {"run_id": "r1", "text": "hello"})
    await db.upsert_run("a", {"run_id": "r0", "text": "edited"})
    await db.delete_run("a", "r1")
    await db.upsert_session({"session_id": "b"})
    await db.upsert_session({"session_id": "c"})
    await db.delete_session("b")
    await db.rename_session("c", "named")
    await db.put_record("memories", "m1", {"user_id": "u", "memory": "tea"})
    await db.put_record("memories", "m2", {"memory": "gone"})
    await db.delete_record("memories", "m2")
    expected = await db.get_all_sessions()
    image = crash_image(tmp_path / "live", tmp_path / "image")
    assert not (image / "v1").exists() or not any((image / "v1").rglob("*.json"))  # nothing was flushed
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(image), durability="journal") as recovered:
        assert await recovered.get_all_sessions() == expected
        assert await recovered.list_records("memories") == [{"user_id": "u", "memory": "tea"}]
        assert recovered.stats().dirty == 5  # replayed writes are pending until the next flush


async def test_flush_truncates_the_journal(journaled: AsyncInMemoryDb, tmp_path: Path) -> None:
    """A successful flush deletes the journal segments it covered; later writes go to a new segment."""
    db = journaled
    await db.upsert_session({"session_id": "a"})
    assert segments(tmp_path / "live") == ["journal-000000000001.jsonl"]
    await db.flush()
    assert segments(tmp_path / "live") == []
    await db.upsert_session({"session_id": "b"})
    assert segments(tmp_path / "live") == ["journal-000000000002.jsonl"]
    image = crash_image(tmp_path / "live", tmp_path / "image")
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(image), durability="journal") as recovered:
        assert {s["session_id"] for s in await recovered.get_all_sessions()} == {"a", "b"}


async def test_drop_and_clear_replay(journaled: AsyncInMemoryDb, tmp_path: Path) -> None:
    """drop() and clear_collection() are journaled and replayed."""
    db = journaled
    await db.upsert_session({"session_id": "a"})
    await db.put_record("notes", "n1", {"x": 1})
    await db.flush()
    await db.upsert_session({"session_id": "b"})
    await db.drop()
    await db.upsert_session({"session_id": "c"})
    await db.put_record("notes", "n2", {"x": 2})
    await db.put_record("notes", "n3", {"x": 3})
    await db.clear_collection("notes")
    image = crash_image(tmp_path / "live", tmp_path / "image")
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(image), durability="journal") as recovered:
        assert [s["session_id"] for s in await recovered.get_all_sessions()] == ["c"]
        assert await recovered.list_records("notes") == []
        await recovered.flush()
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(image)) as reopened:
        assert [s["session_id"] for s in await reopened.get_all_sessions()] == ["c"]


async def test_torn_last_line_is_dropped(journaled: AsyncInMemoryDb, tmp_path: Path) -> None:
    """A half-written final entry (the process died mid-append) is dropped and cut off, not fatal."""
    await journaled.upsert_session({"session_id": "a"})
    image = crash_image(tmp_path / "live", tmp_path / "image")
    segment = image / "journal" / "journal-000000000001.jsonl"
    intact = segment.read_bytes()
    segment.write_bytes(intact + b'{"op":"put","c":"sessions","id":"b","seq":1,"doc":{"session_')
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(image), durability="journal") as recovered:
        assert [s["session_id"] for s in await recovered.get_all_sessions()] == ["a"]
    assert not segment.exists() or segment.read_bytes() == intact


async def test_corrupt_middle_line_raises_with_offset(journaled: AsyncInMemoryDb, tmp_path: Path) -> None:
    """An unreadable entry followed by valid ones is corruption: CorruptDataError names the byte offset."""
    await journaled.upsert_session({"session_id": "a"})
    await journaled.upsert_session({"session_id": "b"})
    image = crash_image(tmp_path / "live", tmp_path / "image")
    segment = image / "journal" / "journal-000000000001.jsonl"
    lines = segment.read_bytes().split(b"\n")
    segment.write_bytes(b"\n".join([lines[0], b"{garbage", *lines[1:]]))
    db = AsyncInMemoryDb(persistence=DirectoryPersistence(image), durability="journal")
    with pytest.raises(CorruptDataError) as info:
        await db.start()
    assert info.value.key == f"{segment}:{len(lines[0]) + 1}"


async def test_fsync_per_write_and_explicit_path(tmp_path: Path) -> None:
    """journal_fsync=0 works, and any persistence can journal when given a journal_path."""
    blob: dict[str, Any] = {}

    async def load() -> dict[str, Any] | None:
        return blob.get("snapshot")

    async def save(snapshot: dict[str, Any]) -> None:
        blob["snapshot"] = snapshot

    with pytest.raises(ValidationError, match="journal_path"):
        AsyncInMemoryDb(persistence=HookPersistence(load=load, save=save), durability="journal")
    async with AsyncInMemoryDb(
        persistence=HookPersistence(load=load, save=save),
        durability="journal",
        journal_path=tmp_path / "j",
        journal_fsync=0,
        flush_interval=3600,
    ) as db:
        await db.upsert_session({"session_id": "a"})
        image = crash_image(tmp_path / "j", tmp_path / "j2")
    assert "snapshot" in blob  # the close flushed
    async with AsyncInMemoryDb(
        persistence=HookPersistence(load=load, save=save), durability="journal", journal_path=image
    ) as recovered:
        assert await recovered.get_session("a") is not None


def test_journal_path_needs_a_persistence(tmp_path: Path) -> None:
    """journal_path without a persistence to flush the journal's writes to is a mistake and is refused."""
    with pytest.raises(ValidationError, match="persistence"):
        AsyncInMemoryDb(journal_path=tmp_path / "j")


# -- the journal folder removed under a running store ----------------------------------------------------------


def live_store(root: Path, **options: Any) -> AsyncInMemoryDb:
    """Every write returns once its journal line is fsynced; nothing is flushed unless the test asks."""
    return AsyncInMemoryDb(
        persistence=DirectoryPersistence(root), durability="journal", journal_fsync=0, flush_interval=3600, **options
    )


async def recovered_ids(image: Path) -> set[str]:
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(image), durability="journal") as db:
        return {s["session_id"] for s in await db.get_all_sessions()}


@pytest.mark.parametrize("removed", ["journal", "store"])
async def test_acknowledged_writes_survive_a_crash_after_their_folder_was_removed(tmp_path: Path, removed: str) -> None:
    """The journal folder (or the whole store folder) deleted by hand while the store runs: fsync still succeeds
    on the removed file, so without a restore every write since the last flush is lost in a crash. The next
    sync restores the open segment from its file; each write that returned after the removal is in it."""
    live = tmp_path / "live"
    async with live_store(live) as db:
        await db.upsert_session({"session_id": "a"})
        shutil.rmtree(live / "journal" if removed == "journal" else live)
        await db.upsert_session({"session_id": "b"})
        assert segments(live) == ["journal-000000000001.jsonl"]
        image = crash_image(live, tmp_path / "image")
        assert db._rt.journal is not None
        assert db._rt.journal.restored == 1
    assert await recovered_ids(image) == {"a", "b"}
    # the close flushed everything, so the storage holds both too, and no segment is left
    assert segments(live) == []
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(live)) as again:
        assert {s["session_id"] for s in await again.get_all_sessions()} == {"a", "b"}


async def test_a_removed_segment_that_a_failed_flush_still_needs_is_restored_too(tmp_path: Path) -> None:
    """A flush rotates the journal: the segment it covers stays open until the flush succeeds. Removed while that
    flush is held, and the flush then failing, the older segment is restored with the current one; a crash then
    keeps the writes of both."""
    live = tmp_path / "live"
    faulty = Faulty(DirectoryPersistence(live))
    db = AsyncInMemoryDb(
        persistence=faulty, durability="journal", journal_path=live / "journal", journal_fsync=0, flush_interval=3600
    )
    async with db:
        await db.upsert_session({"session_id": "a"})
        gate = faulty.save_gate = Gate()
        faulty.fail_saves = 1
        flush = asyncio.create_task(db.flush())
        await gate.entered.wait()  # the flush took segment 1 (with "a"); new writes go to segment 2
        await db.upsert_session({"session_id": "b"})
        shutil.rmtree(live / "journal")
        await db.upsert_session({"session_id": "c"})
        assert segments(live) == ["journal-000000000001.jsonl", "journal-000000000002.jsonl"]
        gate.release.set()
        with pytest.raises(PersistenceError):
            await flush
        image = crash_image(live, tmp_path / "image")
    assert await recovered_ids(image) == {"a", "b", "c"}


async def test_a_segment_that_cannot_be_restored_fails_the_write_and_the_next_sync_restores_it(
    tmp_path: Path,
) -> None:
    """The journal folder replaced by a file: the restore cannot create it, so the write that waits for the sync
    raises PersistenceError (applied in memory, not yet durable: the syncer's documented error). Once the folder
    can be created again, the next write's sync restores the segment with every line."""
    live = tmp_path / "live"
    async with live_store(live) as db:
        await db.upsert_session({"session_id": "a"})
        shutil.rmtree(live / "journal")
        (live / "journal").write_bytes(b"not a folder")
        with pytest.raises(PersistenceError, match="not yet durable"):
            await db.upsert_session({"session_id": "b"})
        assert await db.get_session("b") is not None
        (live / "journal").unlink()
        await db.upsert_session({"session_id": "c"})
        image = crash_image(live, tmp_path / "image")
    assert await recovered_ids(image) == {"a", "b", "c"}


async def test_a_new_segment_fsyncs_its_directory_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A segment's lines are only as durable as its directory entry: the sync after a segment is created fsyncs
    the journal folder, and later syncs of the same segment do not."""
    synced_dirs: list[Path] = []
    real = _journal._fsync_directory

    def counting(directory: Path) -> None:
        synced_dirs.append(directory)
        real(directory)

    monkeypatch.setattr(_journal, "_fsync_directory", counting)
    live = tmp_path / "live"
    async with live_store(live) as db:
        await db.upsert_session({"session_id": "a"})
        await db.upsert_session({"session_id": "b"})
        assert synced_dirs == [live / "journal"]
        await db.flush()  # rotates: the next write creates segment 2
        await db.upsert_session({"session_id": "c"})
        assert synced_dirs == [live / "journal", live / "journal"]


async def test_a_restore_copy_left_by_a_crash_before_its_rename_is_the_segment(tmp_path: Path) -> None:
    """A crash between a restore's copy and its rename leaves ``journal-N.jsonl.restoring`` as the only copy of the
    segment (the original was removed by hand): the next start replays it and renames it into place. A leftover
    copy beside its segment (a restore that failed before the rename, then succeeded) is removed."""
    live = tmp_path / "live"
    async with live_store(live) as db:
        await db.upsert_session({"session_id": "a"})
        image = crash_image(live, tmp_path / "image")
    segment = image / "journal" / "journal-000000000001.jsonl"
    orphan = segment.with_name(segment.name + ".restoring")
    segment.rename(orphan)
    stale = image / "journal" / "journal-000000000009.jsonl.restoring"
    (image / "journal" / "journal-000000000009.jsonl").write_bytes(b"")
    stale.write_bytes(b"{torn")
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(image), durability="journal") as recovered:
        assert await recovered.get_session("a") is not None
        assert not orphan.exists()
        assert not stale.exists()
