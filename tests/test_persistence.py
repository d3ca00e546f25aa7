"""Persistence through the store: restart round trips, incremental flushes, durability, errors that stay loud.

Every test that takes ``backend`` runs once per persistence (directory, hooks, S3 on moto's server).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from aiomemdb import (
    AsyncInMemoryDb,
    Changeset,
    CorruptDataError,
    DirectoryPersistence,
    InMemoryDb,
    PersistenceError,
    UnclosedStoreWarning,
    ValidationError,
)
from aiomemdb.persistence import Key, Persistence, Snapshot

from .backends import Backend


class Recording:
    """Wraps a persistence and records every changeset and load_one call; can be told to fail saves."""

    def __init__(self, inner: Persistence) -> None:
        self.inner = inner
        self.changesets: list[Changeset] = []
        self.load_ones: list[Key] = []
        self.fail_saves = 0
        self.save_delay = 0.0

    async def open(self) -> None:
        await self.inner.open()

    async def load(self) -> Snapshot:
        return await self.inner.load()

    async def load_one(self, collection: str, record_id: str) -> dict[str, Any] | None:
        self.load_ones.append((collection, record_id))
        await asyncio.sleep(0.01)  # widen the window in which concurrent misses pile up
        return await self.inner.load_one(collection, record_id)

    async def save(self, changeset: Changeset) -> Mapping[Key, dict[str, Any]] | None:
        if self.fail_saves:
            self.fail_saves -= 1
            raise OSError("disk on fire")
        self.changesets.append(changeset)
        await asyncio.sleep(self.save_delay)  # storage latency, so that concurrent writers can pile up
        return await self.inner.save(changeset)

    async def list_keys(self, collection: str | None = None) -> list[Key]:
        return await self.inner.list_keys(collection)

    @property
    def quarantined(self) -> Sequence[tuple[str, str]]:
        return self.inner.quarantined

    async def aclose(self) -> None:
        await self.inner.aclose()


def sess(sid: str, n_runs: int = 2, **fields: Any) -> dict[str, Any]:
    return {
        "session_id": sid,
        "runs": [{"run_id": f"{sid}-r{i}", "content": "x" * 50} for i in range(n_runs)],
        **fields,
    }


async def test_restart_round_trip(backend: Backend) -> None:
    """Sessions, runs, versions, timestamps and collection records come back after a restart."""
    async with AsyncInMemoryDb(persistence=backend.make(), durability="manual") as db:
        for i in range(50):
            await db.upsert_session(sess(f"s{i}", user_id=f"u{i % 3}"))
        await db.upsert_run("s1", {"run_id": "extra"})
        await db.put_record("memories", "m1", {"user_id": "u1", "memory": "tea"})
        await db.delete_session("s2")
        before = await db.get_all_sessions()
    async with AsyncInMemoryDb(persistence=backend.make()) as db2:
        assert await db2.get_all_sessions() == before
        assert await db2.get_record("memories", "m1") == {"user_id": "u1", "memory": "tea"}
        assert await db2.get_session("s2") is None
        assert db2.stats().loads == 50


async def test_flush_writes_only_what_changed(backend: Backend) -> None:
    """A flush after changing 3 of 100 sessions writes exactly those 3, and deletes reach storage."""
    rec = Recording(backend.make())
    async with AsyncInMemoryDb(persistence=rec, durability="manual") as db:
        await db.upsert_sessions([sess(f"s{i}") for i in range(100)])
        first = await db.flush()
        assert (first.upserts, first.deletes) == (100, 0)
        await db.upsert_run("s1", {"run_id": "new"})
        await db.upsert_session(sess("s2", summary="changed"))
        await db.rename_session("s3", "renamed")
        await db.delete_session("s4")
        report = await db.flush()
        assert (report.upserts, report.deletes) == (3, 1)
        assert set(rec.changesets[-1].upserts) == {("sessions", "s1"), ("sessions", "s2"), ("sessions", "s3")}
        assert rec.changesets[-1].deletes == {("sessions", "s4")}
        assert await db.flush() == type(report)()  # nothing dirty: nothing written
        assert len(rec.changesets) == 2
    async with AsyncInMemoryDb(persistence=backend.make()) as db2:
        assert await db2.get_session("s4") is None
        assert (await db2.get_session("s3") or {})["session_data"] == {"session_name": "renamed"}
        assert db2.stats().sessions == 99


async def test_failed_save_keeps_data_dirty_and_next_flush_succeeds(backend: Backend) -> None:
    """When storage fails the flush raises, every change stays dirty, and the next flush writes it all."""
    rec = Recording(backend.make())
    async with AsyncInMemoryDb(persistence=rec, durability="manual") as db:
        await db.upsert_session(sess("a"))
        rec.fail_saves = 1
        with pytest.raises(PersistenceError, match="disk on fire"):
            await db.flush()
        assert db.stats().dirty == 1
        assert db.stats().flush_failures == 1
        await db.upsert_session(sess("b"))
        report = await db.flush()
        assert report.upserts == 2
        assert db.stats().dirty == 0
        assert db.stats().last_error is None
    async with AsyncInMemoryDb(persistence=backend.make()) as db2:
        assert {s["session_id"] for s in await db2.get_all_sessions()} == {"a", "b"}


async def test_background_flusher_retries_until_storage_recovers(backend: Backend) -> None:
    """The interval flusher backs off on failures and persists everything once storage works again."""
    rec = Recording(backend.make())
    async with AsyncInMemoryDb(persistence=rec, flush_interval=0.02, max_backoff=0.05) as db:
        rec.fail_saves = 3
        await db.upsert_session(sess("a"))
        for _ in range(200):
            if db.stats().dirty == 0 and db.stats().flush_failures >= 3:
                break
            await asyncio.sleep(0.02)
        assert db.stats().flush_failures == 3
        assert db.stats().dirty == 0
    async with AsyncInMemoryDb(persistence=backend.make()) as db2:
        assert await db2.get_session("a") is not None


async def test_durability_write_returns_after_persisting(backend: Backend) -> None:
    """With durability='write' a write returns only once storage holds it."""
    async with AsyncInMemoryDb(persistence=backend.make(), durability="write") as db:
        await db.upsert_session(sess("a"))
        await db.upsert_run("a", {"run_id": "late"})
        probe = backend.make_reader()
        await probe.open()
        stored = await probe.load_one("sessions", "a")
        await probe.aclose()
        assert stored is not None
        assert [r["run_id"] for r in stored["runs"]] == ["a-r0", "a-r1", "late"]
        assert db.stats().dirty == 0


async def test_concurrent_writes_with_durability_write_group_commit(backend: Backend) -> None:
    """Many concurrent durable writes share flushes (group commit) and all land."""
    rec = Recording(backend.make())
    rec.save_delay = 0.005
    async with AsyncInMemoryDb(persistence=rec, durability="write") as db:
        await asyncio.gather(*(db.upsert_session(sess(f"s{i}", n_runs=0)) for i in range(40)))
        assert len(rec.changesets) < 40
        assert sum(len(c.upserts) for c in rec.changesets) == 40
    async with AsyncInMemoryDb(persistence=backend.make()) as db2:
        assert db2.stats().sessions == 40


async def test_manual_durability_writes_only_on_flush_or_close(backend: Backend) -> None:
    """With durability='manual' nothing reaches storage until flush() or close."""
    rec = Recording(backend.make())
    db = AsyncInMemoryDb(persistence=rec, durability="manual", flush_interval=0.01)
    await db.start()
    await db.upsert_session(sess("a"))
    await asyncio.sleep(0.05)
    assert rec.changesets == []
    await db.aclose()
    assert len(rec.changesets) == 1


async def test_failed_final_flush_keeps_store_open(backend: Backend) -> None:
    """If the final flush on close fails, close raises, the store stays usable, and a second close works."""
    rec = Recording(backend.make())
    db = AsyncInMemoryDb(persistence=rec, durability="manual")
    await db.upsert_session(sess("a"))
    rec.fail_saves = 1
    with pytest.raises(PersistenceError):
        await db.aclose()
    assert await db.get_session("a") is not None
    await db.aclose()
    async with AsyncInMemoryDb(persistence=backend.make()) as db2:
        assert await db2.get_session("a") is not None


async def test_lazy_single_flight(backend: Backend) -> None:
    """lazy=True fetches a missing session on demand, once for 100 concurrent readers."""
    async with AsyncInMemoryDb(persistence=backend.make()) as writer:
        await writer.upsert_session(sess("cold", user_id="u"))
    rec = Recording(backend.make())
    async with AsyncInMemoryDb(persistence=rec, lazy=True) as db:
        assert db.stats().sessions == 0
        got = await asyncio.gather(*(db.get_session("cold") for _ in range(100)))
        assert all(g is not None and g["session_id"] == "cold" for g in got)
        assert rec.load_ones == [("sessions", "cold")]
        assert await db.get_session("missing") is None
        await db.upsert_run("cold", {"run_id": "more"})  # writes to a lazily loaded session keep its history
        assert [r["run_id"] for r in (await db.get_session("cold") or {})["runs"]][-1] == "more"
        assert db.stats().lazy_loads == 1


async def test_hostile_ids_round_trip(backend: Backend) -> None:
    """Ids shaped like paths, unicode and 512-character ids are stored safely and come back intact."""
    ids = ["../escape", "a/b/c", "..", ".", "ünïcødé 🙂", "x" * 512, "%2E%2E", "CON", " spaced "]
    async with AsyncInMemoryDb(persistence=backend.make(), durability="manual") as db:
        for sid in ids:
            await db.upsert_session(sess(sid, n_runs=0))
    async with AsyncInMemoryDb(persistence=backend.make()) as db2:
        assert {s["session_id"] for s in await db2.get_all_sessions()} == set(ids)
    await backend.assert_contained()


# -- directory specifics ----------------------------------------------------------------------------------------


async def test_directory_layout_and_atomic_files(tmp_path: Path) -> None:
    """Each record is one enveloped JSON file under v1/<collection>/, beside the LAYOUT marker and the LOCK
    file, and no temp file is left behind."""
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path), durability="manual") as db:
        await db.upsert_session(sess("s1"))
        await db.put_record("memories", "m/1", {"memory": "x"})
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["LAYOUT", "LOCK", "v1/memories/m%2F1.json", "v1/sessions/s1.json"]
    assert (tmp_path / "LOCK").read_bytes() == b""  # emptied on close
    envelope = orjson.loads((tmp_path / "v1/sessions/s1.json").read_bytes())
    assert envelope["format_version"] == 1
    assert envelope["id"] == "s1"
    assert envelope["collection"] == "sessions"


async def test_missing_directory_is_an_empty_store(tmp_path: Path) -> None:
    """A directory that does not exist yet loads as an empty store."""
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path / "new")) as db:
        assert db.stats().sessions == 0


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"format_version": 99, "id": "s1", "data": {}}',
        b"[]",
        b'{"format_version":1,"id":"zz","data":{}}',
    ],
)
async def test_corrupt_file_raises_with_its_path(tmp_path: Path, content: bytes) -> None:
    """A corrupt, foreign-format or misplaced file raises CorruptDataError naming the file."""
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path), durability="manual") as db:
        await db.upsert_session(sess("s1"))
        await db.upsert_session(sess("s2"))
    bad = tmp_path / "v1" / "sessions" / "s1.json"
    bad.write_bytes(content)
    db2 = AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path))
    with pytest.raises(CorruptDataError) as info:
        await db2.start()
    assert info.value.key == str(bad)
    assert str(bad) in str(info.value)
    with pytest.raises(CorruptDataError):  # not silently "not found" on the next call either
        await db2.get_session("s2")


async def test_leftover_temp_files_are_ignored(tmp_path: Path) -> None:
    """A temp file from an interrupted write is ignored (and removed) on load; the old file is intact."""
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path), durability="manual") as db:
        await db.upsert_session(sess("s1"))
    tmp = tmp_path / "v1" / "sessions" / ".tmp-deadbeef"
    tmp.write_bytes(b'{"format_version":1,"id":"s1","da')
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path)) as db2:
        assert await db2.get_session("s1") is not None
    assert not tmp.exists()


async def test_directory_path_that_is_a_file_raises(tmp_path: Path) -> None:
    """A persistence path that cannot be a directory raises PersistenceError at start."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    db = AsyncInMemoryDb(persistence=DirectoryPersistence(blocker))
    with pytest.raises(PersistenceError) as info:
        await db.start()
    assert str(blocker) in str(info.value)


# -- hooks specifics --------------------------------------------------------------------------------------------


async def test_hooks_receive_whole_snapshots_and_migrate_seed_blobs() -> None:
    """The save hook gets a consistent whole snapshot; a seed-style {id: session} blob loads as sessions."""
    saved: list[dict[str, Any]] = []

    async def load() -> dict[str, Any]:
        return {"old": {"session_id": "old", "created_at": 1, "updated_at": 2, "runs": []}}

    async def save(snapshot: dict[str, Any]) -> None:
        saved.append(orjson.loads(orjson.dumps(snapshot)))

    async with AsyncInMemoryDb(load=load, save=save, durability="manual") as db:
        assert (await db.get_session("old") or {})["updated_at"] == 2
        await db.upsert_session(sess("new"))
        await db.put_record("memories", "m", {"memory": "x"})
        await db.flush()
        await db.delete_session("old")
    assert len(saved) == 2
    assert set(saved[0]["collections"]["sessions"]) == {"old", "new"}
    assert saved[0]["collections"]["memories"] == {"m": {"memory": "x"}}
    assert set(saved[1]["collections"]["sessions"]) == {"new"}


@pytest.mark.parametrize("returned", [["a list"], {"format_version": 2, "collections": {}}, {"s": "not a dict"}])
async def test_hook_load_of_garbage_is_corrupt(returned: Any) -> None:
    """A load hook returning something that is not a snapshot raises CorruptDataError."""

    async def load() -> Any:
        return returned

    with pytest.raises(CorruptDataError):
        await AsyncInMemoryDb(load=load).start()


async def test_hook_load_failure_is_loud() -> None:
    """An exception in the load hook propagates as PersistenceError, never as an empty store."""

    async def load() -> dict[str, Any]:
        raise TimeoutError("s3 unreachable")

    db = AsyncInMemoryDb(load=load)
    with pytest.raises(PersistenceError, match="s3 unreachable"):
        await db.start()
    assert db.stats().state == "new"


# -- storage_dict + persistence, sync facade --------------------------------------------------------------------


async def test_storage_dict_entries_win_over_loaded_ones(tmp_path: Path) -> None:
    """A caller's storage_dict is treated as unflushed writes: loading never overwrites it, and it is persisted."""
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path), durability="manual") as db:
        await db.upsert_session(sess("shared", summary="on disk"))
        await db.upsert_session(sess("disk-only"))
    mine = {"shared": {"session_id": "shared", "summary": "mine"}}
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path), storage_dict=mine) as db2:
        assert (await db2.get_session("shared") or {})["summary"] == "mine"
        assert set(mine) == {"shared", "disk-only"}
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path)) as db3:
        assert (await db3.get_session("shared") or {})["summary"] == "mine"


def test_sync_facade_persists_across_restart(tmp_path: Path) -> None:
    """The blocking InMemoryDb loads on construction and flushes on close."""
    with InMemoryDb(persistence=DirectoryPersistence(tmp_path)) as db:
        db.upsert_session(sess("s1"))
    with InMemoryDb(persistence=DirectoryPersistence(tmp_path)) as db2:
        assert db2.get_session("s1") is not None


async def test_unclosed_store_warns() -> None:
    """A started store with persistence that is garbage-collected unclosed emits a ResourceWarning."""
    db = AsyncInMemoryDb(load=_empty_load, durability="manual")
    await db.start()
    with pytest.warns(UnclosedStoreWarning, match="never closed"):
        db.__del__()
    await db.aclose()


async def _empty_load() -> None:
    return None


async def test_background_flush_failure_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A failing background flush is logged as a warning on the aiomemdb logger, with the cause."""
    rec = Recording(DirectoryPersistence(tmp_path))
    rec.fail_saves = 1
    with caplog.at_level(logging.WARNING, logger="aiomemdb"):
        async with AsyncInMemoryDb(persistence=rec, flush_interval=0.01, max_backoff=0.02) as db:
            await db.upsert_session(sess("a"))
            for _ in range(100):
                if db.stats().flushes:
                    break
                await asyncio.sleep(0.01)
    assert any("disk on fire" in r.getMessage() for r in caplog.records)


def test_validation_error_types() -> None:
    """ValidationError is a ValueError and PersistenceError an OSError, so generic handlers still work."""
    assert issubclass(ValidationError, ValueError)
    assert issubclass(PersistenceError, OSError)


async def test_refresh_takes_the_stored_version(backend: Backend) -> None:
    """refresh() replaces a session with its stored version (dropping unflushed local changes), or forgets it."""
    async with AsyncInMemoryDb(persistence=backend.make(), durability="manual") as db:
        await db.upsert_session(sess("a", summary="stored"))
        await db.flush()
        await db.upsert_session(sess("a", summary="local only"))
        await db.upsert_session(sess("b"))
        refreshed = await db.refresh("a")
        assert refreshed is not None
        assert refreshed["summary"] == "stored"
        assert (await db.get_session("a") or {})["summary"] == "stored"
        assert await db.refresh("b") is None  # never stored: dropped from memory
        assert await db.get_session("b") is None
        assert db.stats().dirty == 0


async def test_lazy_drop_and_clear_reach_what_was_never_loaded(backend: Backend) -> None:
    """drop() and clear_collection() on a lazy store delete stored records it never loaded, too."""
    async with AsyncInMemoryDb(persistence=backend.make(), durability="manual") as writer:
        await writer.upsert_sessions([sess(f"s{i}", n_runs=0) for i in range(5)])
        await writer.put_records("notes", {f"n{i}": {"i": i} for i in range(3)})
        await writer.put_record("other", "o1", {"kept": True})
    async with AsyncInMemoryDb(persistence=backend.make(), lazy=True, durability="manual") as lazy:
        assert await lazy.get_record("notes", "n0") == {"i": 0}  # one of three loaded
        assert await lazy.clear_collection("notes") == 3
        await lazy.flush()
    async with AsyncInMemoryDb(persistence=backend.make()) as check:
        assert await check.list_records("notes") == []
        assert await check.list_records("other") == [{"kept": True}]
        assert check.stats().sessions == 5
    async with AsyncInMemoryDb(persistence=backend.make(), lazy=True, durability="manual") as lazy:
        assert await lazy.get_session("s1") is not None  # one of five loaded
        await lazy.drop()
        await lazy.flush()
    async with AsyncInMemoryDb(persistence=backend.make()) as check:
        assert check.stats().sessions == 0
        assert await check.list_records("other") == []
