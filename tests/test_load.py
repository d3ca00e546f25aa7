"""Load: 2,000 concurrent tasks against one store with a small memory bound and a fast background flusher.

The run lasts 4 s by default so that CI stays fast; set ``AIOMEMDB_LONG=1`` for a 20 s soak. Each task owns
three sessions (its own ``user_id``), so it can keep an exact model of them and check every read against it;
ten shared sessions are changed only through ``update_session`` counters, whose final values must equal the
number of increments the tasks saw succeed (no lost update). With ``max_sessions=50`` almost every session is
evicted and reloaded many times, while explicit ``flush()`` calls race the background flusher.
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path
from typing import Any

from aiomemdb import AsyncInMemoryDb, DirectoryPersistence

TASKS = 2000
SHARED = 10
DURATION = 20.0 if os.environ.get("AIOMEMDB_LONG") == "1" else 4.0
STORE_FIELDS = ("created_at", "updated_at", "version")


def content(session: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if session is None else {k: v for k, v in session.items() if k not in STORE_FIELDS}


def bump(current: dict[str, Any] | None, sid: str) -> dict[str, Any]:
    count = ((current or {}).get("session_data") or {}).get("count", 0)
    return {"session_id": sid, "session_data": {"count": count + 1}}


async def worker(db: AsyncInMemoryDb, t: int, deadline: float, model: dict[str, Any], counts: list[int]) -> int:
    """Random operations on this task's own sessions and on the shared counters until the deadline."""
    loop = asyncio.get_running_loop()
    rng = random.Random(t)
    user = f"u{t}"
    mine = [f"t{t}-{j}" for j in range(3)]
    ops = 0
    while loop.time() < deadline:
        ops += 1
        sid = rng.choice(mine)
        roll = rng.random()
        if roll < 0.22:
            got = await db.get_session(sid, user_id=user)
            assert content(got) == model.get(sid), (sid, got)
        elif roll < 0.34 or (roll < 0.56 and sid not in model):
            session: dict[str, Any] = {"session_id": sid, "user_id": user, "session_data": {"op": ops}}
            expected = dict(session)
            if rng.random() < 0.5:
                session["runs"] = [{"run_id": f"r{ops}", "text": "z" * rng.randrange(200)}]
                expected["runs"] = session["runs"]
            elif sid in model and "runs" in model[sid]:
                expected["runs"] = model[sid]["runs"]  # a write without "runs" keeps the stored ones
            stored = await db.upsert_session(session)
            assert content(stored) == expected, (sid, stored)
            model[sid] = expected
        elif roll < 0.56:
            run = {"run_id": f"r{ops}", "text": "y" * rng.randrange(200)}
            await db.upsert_run(sid, run, user_id=user)
            model[sid] = {**model[sid], "runs": [*(model[sid].get("runs") or []), run]}
        elif roll < 0.62:
            assert await db.delete_session(sid, user_id=user) is (sid in model)
            model.pop(sid, None)
        elif roll < 0.70:
            rows, total = await db.get_sessions(user_id=user)
            assert total == len(rows) == sum(s in model for s in mine)
            assert {r["session_id"]: content(r) for r in rows} == {s: model[s] for s in mine if s in model}
        elif roll < 0.72:
            assert await db.get_session(sid, user_id="intruder") is None
        elif roll < 0.95:
            k = rng.randrange(SHARED)
            shared = f"shared-{k}"
            if rng.random() < 0.5:
                await db.update_session(shared, lambda cur, s=shared: bump(cur, s))
            else:

                async def bump_later(cur: dict[str, Any] | None, s: str = shared) -> dict[str, Any]:
                    await asyncio.sleep(0)  # the session's lock is held across this await
                    return bump(cur, s)

                await db.update_session(shared, bump_later)
            counts[k] += 1
        elif roll < 0.99:
            await db.get_recent_sessions(limit=5)
        else:
            await db.flush()
        await asyncio.sleep(rng.uniform(0, 0.02))
    return ops


async def test_2000_concurrent_tasks_lose_nothing_and_reload_exactly(tmp_path: Path) -> None:
    """2,000 tasks mixing reads, writes, deletes, listings, counters, flushes and evictions for a bounded time
    leave exactly their model on disk, with evictions happening and no flush failing."""
    root = tmp_path / "store"
    db = AsyncInMemoryDb(persistence=DirectoryPersistence(root, fsync=False), flush_interval=0.05, max_sessions=50)
    model: dict[str, Any] = {}
    counts = [0] * SHARED
    await db.start()
    deadline = asyncio.get_running_loop().time() + DURATION
    done = await asyncio.gather(*(worker(db, t, deadline, model, counts) for t in range(TASKS)))
    # However much the machine's load let the timed phase do, every session is now flushed (so all but 50 are
    # evicted) and read back through the bounded store: each must reload exactly as the model has it.
    await db.flush()
    for sid, want in model.items():
        assert content(await db.get_session(sid)) == want, sid
    stats = db.stats()
    await db.aclose()

    assert sum(done) >= TASKS * 2, f"too little work was done: {sum(done)} operations"
    assert stats.evictions > 0
    assert stats.lazy_loads > 0
    assert stats.flush_failures == 0, stats.last_error
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(root), durability="manual") as reopened:
        stored = {s["session_id"]: content(s) for s in await reopened.get_all_sessions()}
    shared = {
        f"shared-{k}": {"session_id": f"shared-{k}", "session_data": {"count": n}} for k, n in enumerate(counts) if n
    }
    expected = {**model, **shared}
    assert stored.keys() == expected.keys()
    assert stored == expected
    assert stats.bytes >= 0, f"the memory accounting went negative: {stats}"


async def test_max_bytes_holds_when_sessions_grow_through_upsert_run(tmp_path: Path) -> None:
    """Sessions that grow run by run are counted at their real size, so max_bytes evicts them once clean and
    the reported resident bytes never go negative."""
    async with AsyncInMemoryDb(
        persistence=DirectoryPersistence(tmp_path, fsync=False), durability="manual", max_bytes=20_000
    ) as db:
        for sid in ("a", "b"):
            await db.upsert_session({"session_id": sid, "runs": []})
            for n in range(50):
                await db.upsert_run(sid, {"run_id": f"r{n}", "text": "x" * 1000})  # 2 x 50 KB in total
        await db.flush()  # everything is clean now, so whatever exceeds the bound must go
        stats = db.stats()
        assert stats.resident == 0, f"{stats.resident} sessions of ~50 KB each stay resident under max_bytes=20000"
        assert 0 <= stats.bytes <= 20_000, stats
        got = await db.get_session("a")
        assert got is not None
        assert len(got["runs"]) == 50
        assert db.stats().bytes >= 0, db.stats()
