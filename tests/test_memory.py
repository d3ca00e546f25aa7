"""Bounded memory: max_sessions, max_bytes and ttl evict clean sessions, which reload on demand."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from aiomemdb import AsyncInMemoryDb, DirectoryPersistence, Event, ValidationError


def sess(sid: str, n_runs: int = 3, **fields: Any) -> dict[str, Any]:
    return {"session_id": sid, "runs": [{"run_id": f"r{i}", "text": "y" * 200} for i in range(n_runs)], **fields}


async def test_max_sessions_evicts_clean_sessions_and_reloads_them(tmp_path: Path) -> None:
    """Past max_sessions the least recently used clean sessions leave memory and come back intact on read."""
    events: list[Event] = []
    async with AsyncInMemoryDb(
        persistence=DirectoryPersistence(tmp_path), max_sessions=5, durability="manual", on_event=events.append
    ) as db:
        for i in range(20):
            await db.upsert_session(sess(f"s{i}", user_id=f"u{i % 2}"))
        assert db.stats().resident == 20  # all dirty: nothing may be evicted before it is flushed
        await db.flush()
        assert db.stats().resident == 5
        assert db.stats().evictions == 15
        assert sum(e.kind == "evict" for e in events) == 15
        expected = sess("s0", user_id="u0")
        got = await db.get_session("s0")
        assert got is not None
        assert got["runs"] == expected["runs"]
        assert db.stats().lazy_loads == 1
        rows, total = await db.get_sessions(user_id="u1")
        assert total == 10
        assert [r["session_id"] for r in rows] == [f"s{i}" for i in range(19, 0, -2)]
        assert all(len(r["runs"]) == 3 for r in rows)
        assert db.stats().resident <= 5


async def test_writes_to_evicted_sessions_keep_their_history(tmp_path: Path) -> None:
    """upsert_run, rename, update_session and a runs-less upsert on an evicted session keep its runs."""
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path), max_sessions=1, durability="manual") as db:
        for sid in ("a", "b", "c", "d", "e"):
            await db.upsert_session(sess(sid))
        await db.flush()
        await db.upsert_run("a", {"run_id": "new"})
        await db.flush()
        await db.rename_session("b", "bee")
        await db.flush()
        await db.update_session("c", lambda cur: {**(cur or {}), "summary": "updated"})
        await db.flush()
        await db.upsert_session({"session_id": "d", "summary": "row only"})
        await db.flush()
        assert await db.delete_run("e", "r1") is True
        await db.flush()
        a, b, c, d, e = [await db.get_session(s) for s in "abcde"]
        assert a is not None
        assert [r["run_id"] for r in a["runs"]] == ["r0", "r1", "r2", "new"]
        assert b is not None
        assert b["session_data"] == {"session_name": "bee"}
        assert len(b["runs"]) == 3
        assert c is not None
        assert c["summary"] == "updated"
        assert len(c["runs"]) == 3
        assert d is not None
        assert d["summary"] == "row only"
        assert len(d["runs"]) == 3
        assert e is not None
        assert [r["run_id"] for r in e["runs"]] == ["r0", "r2"]
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path)) as again:
        got = await again.get_session("a")
        assert got is not None
        assert len(got["runs"]) == 4


async def test_dirty_sessions_are_flushed_before_eviction(tmp_path: Path) -> None:
    """When only dirty sessions exceed the bound, the background flusher is woken and eviction follows."""
    async with AsyncInMemoryDb(
        persistence=DirectoryPersistence(tmp_path), max_sessions=2, flush_interval=3600
    ) as db:
        for i in range(6):
            await db.upsert_session(sess(f"s{i}"))
        for _ in range(200):  # the flusher sleeps an hour unless eviction wakes it
            if db.stats().resident <= 2:
                break
            await asyncio.sleep(0.01)
        assert db.stats().resident == 2
        assert db.stats().flushes >= 1
        assert db.stats().dirty == 0


async def test_max_bytes_bound(tmp_path: Path) -> None:
    """max_bytes keeps the resident encoded size under the bound once sessions are clean."""
    async with AsyncInMemoryDb(
        persistence=DirectoryPersistence(tmp_path), max_bytes=5_000, durability="manual"
    ) as db:
        for i in range(20):
            await db.upsert_session(sess(f"s{i}"))
        await db.flush()
        assert db.stats().bytes <= 5_000
        assert 0 < db.stats().resident < 20
        assert len(await db.get_all_sessions()) == 20


async def test_ttl_expires_idle_sessions(tmp_path: Path) -> None:
    """Sessions idle for longer than ttl leave memory (expire events), and reading one brings it back."""
    events: list[Event] = []
    async with AsyncInMemoryDb(
        persistence=DirectoryPersistence(tmp_path), ttl=0.05, flush_interval=0.01, on_event=events.append
    ) as db:
        await db.upsert_session(sess("idle"))
        for _ in range(300):
            if db.stats().expirations:
                break
            await asyncio.sleep(0.01)
        assert db.stats().expirations == 1
        assert db.stats().resident == 0
        assert [e.data["id"] for e in events if e.kind == "expire"] == ["idle"]
        got = await db.get_session("idle")
        assert got is not None
        assert len(got["runs"]) == 3


async def test_expiry_sweep_yields_between_slices(tmp_path: Path) -> None:
    """Expiring thousands of sessions is done in slices, letting other tasks run in between."""
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path, fsync=False), ttl=3600) as db:
        await db.upsert_sessions([sess(f"s{i}", n_runs=0) for i in range(5000)])
        await db.flush()
        db._kernel.res.ttl = 1e-9  # everything is now idle for longer than ttl
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        assert db._rt.sweeper is not None
        expired = await db._rt.sweeper.sweep()
        task.cancel()
        assert expired == 5000
        assert ticks >= 4  # the sweep gave the loop back at least once per 1,024 sessions
        assert db.stats().resident == 0


async def test_evicted_session_deleted_elsewhere_is_forgotten(tmp_path: Path) -> None:
    """An evicted session whose file was deleted by another writer reads as missing, not as an error."""
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path), max_sessions=1, durability="manual") as db:
        await db.upsert_session(sess("gone"))
        await db.upsert_session(sess("kept"))
        await db.flush()
        (tmp_path / "v1" / "sessions" / "gone.json").unlink()
        assert await db.get_session("gone") is None
        assert db.stats().sessions == 1


def test_bounds_need_a_persistence() -> None:
    """Bounded memory without a persistence (nowhere to reload from) or with storage_dict is refused."""
    with pytest.raises(ValidationError):
        AsyncInMemoryDb(max_sessions=10)
    with pytest.raises(ValidationError):
        AsyncInMemoryDb(load=_none, max_sessions=10, storage_dict={})
    with pytest.raises(ValidationError):
        AsyncInMemoryDb(load=_none, ttl=0)


async def _none() -> None:
    return None
