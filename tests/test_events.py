"""The ``on_event`` callback: every flush, failed flush, load, on-demand load and merge, in order, with its data.

Eviction and expiry events are tested only where the store has bounded memory (``max_sessions`` / ``ttl``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from aiomemdb import (
    AsyncInMemoryDb,
    Changeset,
    DirectoryPersistence,
    Event,
    InMemoryDb,
    PersistenceError,
)
from aiomemdb.persistence import Key, Persistence, Snapshot

BOUNDED = "max_sessions" in inspect.signature(AsyncInMemoryDb).parameters


class Flaky:
    """A persistence that fails its next ``fail`` saves, then behaves like the one it wraps."""

    def __init__(self, inner: Persistence) -> None:
        self.inner = inner
        self.fail = 0

    async def open(self) -> None:
        await self.inner.open()

    async def load(self) -> Snapshot:
        return await self.inner.load()

    async def load_one(self, collection: str, record_id: str) -> dict[str, Any] | None:
        return await self.inner.load_one(collection, record_id)

    async def save(self, changeset: Changeset) -> Mapping[Key, dict[str, Any]] | None:
        if self.fail:
            self.fail -= 1
            raise OSError("disk full")
        return await self.inner.save(changeset)

    async def list_keys(self, collection: str | None = None) -> list[Key]:
        return await self.inner.list_keys(collection)

    @property
    def quarantined(self) -> Sequence[tuple[str, str]]:
        return self.inner.quarantined

    async def aclose(self) -> None:
        await self.inner.aclose()


def directory(root: Path) -> DirectoryPersistence:
    return DirectoryPersistence(root, fsync=False)


async def seed(root: Path) -> None:
    """Three sessions and one memory, already in storage."""
    async with AsyncInMemoryDb(persistence=directory(root), durability="manual") as db:
        for i in range(3):
            await db.upsert_session({"session_id": f"old{i}", "user_id": "ada", "runs": []})
        await db.put_record("memories", "m1", {"user_id": "ada", "memory": "likes trains"})


def kinds(events: list[Event]) -> list[str]:
    return [e.kind for e in events]


class Recorder:
    """An on_event callback that keeps every event and lets a test wait for the ones it expects."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed: asyncio.Event | None = None

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if self._changed is not None:
            self._changed.set()

    async def wait_for(self, predicate: Callable[[list[Event]], bool]) -> None:
        """Wait (at most 5 s) until ``predicate(events)`` holds."""
        async with asyncio.timeout(5):
            while not predicate(self.events):
                self._changed = asyncio.Event()
                await self._changed.wait()


async def test_scripted_scenario_reports_every_load_flush_failure_and_lazy_load_in_order(tmp_path: Path) -> None:
    """Load at start, writes, a flush, a failing flush, its retry and on-demand loads each reach the callback."""
    await seed(tmp_path)
    events: list[Event] = []
    flaky = Flaky(directory(tmp_path))
    db = AsyncInMemoryDb(persistence=flaky, durability="manual", on_event=events.append)
    began = time.time()

    await db.start()
    assert kinds(events) == ["load"]
    assert events[0].data["records"] == 4
    assert events[0].data["duration"] >= 0

    await db.upsert_session({"session_id": "new", "user_id": "ada", "runs": []})
    await db.upsert_run("new", {"run_id": "r1", "content": "hello"})
    assert kinds(events) == ["load"]  # writes alone report nothing

    report = await db.flush()
    assert kinds(events) == ["load", "flush"]
    assert events[-1].data == {"upserts": 1, "deletes": 0, "bytes": report.bytes, "duration": report.duration}
    assert report.bytes > 0

    flaky.fail = 1
    await db.delete_session("old0")
    await db.upsert_session({"session_id": "new2", "runs": []})
    with pytest.raises(PersistenceError, match="disk full"):
        await db.flush()
    assert kinds(events) == ["load", "flush", "flush_failed"]
    assert "disk full" in events[-1].data["error"]
    assert events[-1].data["keys"] == 2

    retried = await db.flush()  # the retry writes everything the failure kept dirty
    assert kinds(events) == ["load", "flush", "flush_failed", "flush"]
    assert events[-1].data == {"upserts": 1, "deletes": 1, "bytes": retried.bytes, "duration": retried.duration}

    await db.flush()  # nothing dirty: nothing written, nothing reported
    assert len(events) == 4
    stats = db.stats()
    assert (stats.loads, stats.flushes, stats.flush_failures) == (4, 2, 1)
    await db.aclose()

    lazy_events: list[Event] = []
    async with AsyncInMemoryDb(
        persistence=directory(tmp_path), durability="manual", lazy=True, on_event=lazy_events.append
    ) as lazy:
        assert lazy_events == []  # a lazy store loads nothing at start
        assert await lazy.get_session("old1") is not None
        assert await lazy.get_session("old1") is not None  # already in memory: no second fetch
        assert await lazy.get_session("old0") is None  # deleted by the retried flush: nothing to fetch
        assert await lazy.get_record("memories", "m1") is not None
        assert lazy.stats().lazy_loads == 2
    assert [(e.kind, e.data) for e in lazy_events] == [
        ("lazy_load", {"collection": "sessions", "id": "old1"}),
        ("lazy_load", {"collection": "memories", "id": "m1"}),
    ]

    stamps = [e.at for e in events + lazy_events]
    assert stamps == sorted(stamps)
    assert began <= stamps[0]
    assert stamps[-1] <= time.time()


async def test_background_flusher_reports_each_failed_attempt_then_the_flush(tmp_path: Path) -> None:
    """The interval flusher's failed attempts and its eventual success are each reported, in order."""
    recorder = Recorder()
    events = recorder.events
    flaky = Flaky(directory(tmp_path))
    flaky.fail = 2
    async with AsyncInMemoryDb(persistence=flaky, flush_interval=0.01, max_backoff=0.05, on_event=recorder) as db:
        await db.upsert_session({"session_id": "s1", "runs": []})
        await recorder.wait_for(lambda seen: "flush" in kinds(seen))
    assert kinds(events)[:4] == ["load", "flush_failed", "flush_failed", "flush"]
    assert [e.data["keys"] for e in events[1:3]] == [1, 1]
    assert events[3].data["upserts"] == 1


async def test_a_raising_callback_never_breaks_the_store_and_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A callback that raises is logged on the "aiomemdb" logger, and every operation still completes."""
    seen: list[str] = []

    def broken(event: Event) -> None:
        seen.append(event.kind)
        raise RuntimeError("metrics backend down")

    caplog.set_level(logging.ERROR, logger="aiomemdb")
    async with AsyncInMemoryDb(persistence=directory(tmp_path), durability="manual", on_event=broken) as db:
        await db.upsert_session({"session_id": "s1", "runs": [{"run_id": "r1"}]})
        report = await db.flush()
        assert report.upserts == 1
        assert (await db.get_session("s1")) is not None
    assert seen == ["load", "flush"]

    failures = [r for r in caplog.records if r.name == "aiomemdb" and r.levelno == logging.ERROR]
    assert len(failures) == 2
    assert "'flush'" in failures[1].getMessage()
    assert failures[1].exc_info is not None
    assert isinstance(failures[1].exc_info[1], RuntimeError)

    async with AsyncInMemoryDb(persistence=directory(tmp_path), durability="manual") as again:
        assert (await again.get_session("s1")) is not None  # the flush the callback interrupted did land


def test_sync_facade_calls_back_on_its_loop_thread(tmp_path: Path) -> None:
    """With the blocking InMemoryDb the callback runs on the store's own loop thread, not the caller's."""
    threads: list[str] = []
    with InMemoryDb(
        persistence=directory(tmp_path),
        durability="manual",
        on_event=lambda e: threads.append(threading.current_thread().name),
    ) as db:
        db.upsert_session({"session_id": "s1"})
        db.flush()
    assert threads
    assert set(threads) == {"aiomemdb-portal"}


async def test_merge_with_another_replica_is_reported(s3_bucket: str, s3_client_options: dict[str, str]) -> None:
    """On S3, a flush that merges with another replica's concurrent write reports the merged record, then the flush."""
    pytest.importorskip("aiobotocore")
    from aiomemdb import S3Persistence

    def replica(events: list[Event]) -> AsyncInMemoryDb:
        persistence = S3Persistence(s3_bucket, "shared", **s3_client_options)
        return AsyncInMemoryDb(persistence=persistence, durability="manual", on_event=events.append)

    first_events: list[Event] = []
    second_events: list[Event] = []
    async with replica(first_events) as first, replica(second_events) as second:
        await first.upsert_session({"session_id": "s1", "runs": [{"run_id": "from-first"}]})
        await second.upsert_session({"session_id": "s1", "runs": [{"run_id": "from-second"}]})
        await first.flush()
        report = await second.flush()
        assert report.merged == 1
        session = await second.get_session("s1")
        assert session is not None
        assert {r["run_id"] for r in session["runs"]} == {"from-first", "from-second"}
    assert kinds(first_events) == ["load", "flush"]
    assert [(e.kind, e.data) for e in second_events[1:2]] == [("merge", {"collection": "sessions", "id": "s1"})]
    assert kinds(second_events) == ["load", "merge", "flush"]


@pytest.mark.skipif(not BOUNDED, reason="bounded memory (max_sessions/ttl) is not built yet")
async def test_evictions_and_expiries_are_reported(tmp_path: Path) -> None:
    """A store over max_sessions reports each eviction, and ttl reports each expiry, naming the session."""
    events: list[Event] = []
    async with AsyncInMemoryDb(
        persistence=directory(tmp_path), durability="manual", max_sessions=2, on_event=events.append
    ) as db:
        for i in range(3):
            await db.upsert_session({"session_id": f"s{i}", "runs": []})
        await db.flush()  # only clean sessions are evicted: the flush makes them evictable
        evicted = [e for e in events if e.kind == "evict"]
        assert [e.data for e in evicted] == [{"collection": "sessions", "id": "s0"}]
        assert db.stats().evictions == 1

    recorder = Recorder()
    expired = recorder.events
    async with AsyncInMemoryDb(persistence=directory(tmp_path), ttl=0.05, on_event=recorder) as db:
        await recorder.wait_for(lambda seen: sum(e.kind == "expire" for e in seen) == 3)
        assert {e.data["id"] for e in expired if e.kind == "expire"} == {"s0", "s1", "s2"}
        assert await db.get_session("s1") is not None  # reloaded on demand
    assert "lazy_load" in kinds(expired)
