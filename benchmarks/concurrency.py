"""Throughput of 1,000 concurrent tasks (80% reads, 20% writes) with the background flusher running.

Usage: ``python benchmarks/concurrency.py [--quick]``.

A store of 10,000 realistic sessions on a ``DirectoryPersistence`` (``fsync=False``: this measures our CPU cost,
not the disk's; with fsync each flush adds one fsync per written file, in worker threads) with
``durability="interval"`` and ``flush_interval=0.2`` s, so the flusher encodes and writes every changed session
several times during the run. 1,000 tasks each make 20 calls: 80% ``get_session``, 20% ``upsert_run``
appending a new run (an agent turn), with ``await asyncio.sleep(0)`` between calls so the tasks interleave as
they would around real I/O. Compared with the same workload on the same store without persistence, and with
agno's ``InMemoryDb`` called from the same tasks (agno's sync methods on the loop, as ``Agent.arun`` does with a
sync database).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _harness import Report, machine, parse_args
from agno.db.in_memory import InMemoryDb as AgnoDb
from sessions import SessionFactory, session_id

from aiomemdb import AsyncInMemoryDb, DirectoryPersistence

N = 10_000
TASKS = 1_000
CALLS = 20


async def workload(read: Callable[[str], Awaitable[Any]], write: Callable[[str, dict[str, Any]], Awaitable[Any]],
                   run: dict[str, Any], seed: int) -> float:  # fmt: skip
    """Run the 1,000 tasks once; returns calls per second."""

    async def task(t: int) -> None:
        rng = random.Random(seed * 100_000 + t)
        for c in range(CALLS):
            sid = session_id(rng.randrange(N))
            if rng.random() < 0.2:
                await write(sid, {**run, "run_id": f"s{seed}-t{t}-c{c}"})
            else:
                await read(sid)
            await asyncio.sleep(0)

    began = time.perf_counter()
    await asyncio.gather(*(task(t) for t in range(TASKS)))
    return TASKS * CALLS / (time.perf_counter() - began)


async def run_all(args: Any, report: Report, factory: SessionFactory) -> None:
    repeats = 3 if args.quick else 5
    root = Path(tempfile.mkdtemp(prefix="aiomemdb-bench-"))
    try:
        sessions = [factory.session(i) for i in range(N)]
        run = factory.session(0)["runs"][-1]
        persisted = AsyncInMemoryDb(persistence=DirectoryPersistence(root, fsync=False), flush_interval=0.2)
        plain = AsyncInMemoryDb()
        for db in (persisted, plain):
            await db.start()
            for k in range(0, N, 500):
                await db.upsert_sessions(sessions[k : k + 500], preserve_updated_at=True)
        await persisted.flush()  # the initial snapshot is not part of the measurement
        agno = AgnoDb()
        for doc in sessions:
            agno._sessions[doc["session_id"]] = doc
        del sessions

        async def agno_read(sid: str) -> Any:
            return agno.get_session(sid, deserialize=False)

        async def agno_write(sid: str, r: dict[str, Any]) -> None:
            agno.upsert_run(r, sid)

        best = {"persisted": 0.0, "plain": 0.0, "agno": 0.0}
        flushes_before = persisted.stats().flushes
        for rep in range(repeats):
            best["persisted"] = max(best["persisted"], await workload(persisted.get_session, persisted.upsert_run,
                                                                      run, rep))  # fmt: skip
            best["plain"] = max(best["plain"], await workload(plain.get_session, plain.upsert_run, run, rep))
            best["agno"] = max(best["agno"], await workload(agno_read, agno_write, run, rep))
        stats = persisted.stats()
        flushes = stats.flushes - flushes_before
        await persisted.aclose()
        await plain.aclose()
        note = f"{flushes} background flushes during the runs, {stats.flush_failures} failed"
        report.add(f"{TASKS:,} tasks, 80% get_session / 20% upsert_run, flusher on", "10k", best["persisted"],
                   "agno InMemoryDb, same tasks", best["agno"], note=note)  # fmt: skip
        report.add(f"{TASKS:,} tasks, 80% get_session / 20% upsert_run, flusher on", "10k", best["persisted"],
                   "ours without persistence", best["plain"], target="≥0.5x",
                   check=lambda x: x >= 0.5)  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    args = parse_args(__doc__)
    report = Report(f"{TASKS:,} concurrent tasks on one event loop (calls/s, best of repeats)")
    print(machine())
    asyncio.run(run_all(args, report, SessionFactory()))
    report.notes.append(
        "DirectoryPersistence(fsync=False), flush_interval=0.2 s: the flusher's encoding and file writes (in worker "
        "threads) compete with the tasks for the same 2 cores."
    )
    report.print()
    report.dump(args.json)


if __name__ == "__main__":
    main()
