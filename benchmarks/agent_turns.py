"""Whole agent turns: a real agno ``Agent`` per request on a stored session, with each database, in one process.

Usage: ``python benchmarks/agent_turns.py [--quick] [--full] [--profile]``. Default sizes 1k and 10k stored
sessions; ``--full`` adds 100k (about 8 GB of RAM for agno's dicts and ours, several minutes to build);
``--quick`` shortens the timings. ``--profile`` adds the profile summary (see below) for 10k sessions only.

What a turn is (as a server handles a request): a **new** ``Agent(model=OfflineModel(...), db=db, session_id=...,
user_id=..., add_history_to_context=True, num_history_runs=3)`` on a stored 10-run session (the real agno
sessions of ``benchmarks/sessions.py``, ~25 KB), then ``agent.run(prompt)`` (or ``await agent.arun(prompt)``). agno
reads the session, builds the prompt from the last 3 runs, calls the offline model (no network, deterministic),
stores the new run (``upsert_run``) and the session row (``upsert_session``). The turns of one repeat go to
distinct sessions drawn at random from the store (a server with many users: most requests hit a session no
recent request touched), and every contender gets the same sessions in the same order; each contender's store
starts from the same rows. Repeats are interleaved between contenders; the best repeat counts.

Contenders:

- sync: ``agent.run()`` with ``aiomemdb.agno.InMemoryDb`` against agno's ``InMemoryDb``, both from the main thread
  (as a script calls it) and both from one worker thread (as a sync web handler calls it; our sync facade hops
  to its loop thread only from the main thread, so this shows the conversion cost without the hop);
- async: ``agent.arun()`` from 20 concurrent tasks on one event loop with ``aiomemdb.agno.AsyncInMemoryDb``
  against agno's ``InMemoryDb`` (agno calls a sync database directly on the loop).

The profile summary (``--profile``): the share of a turn's wall time spent inside the database object's methods
(every public method agno calls on it, timed inclusively, nested calls counted once), for each database, and a
cProfile listing of where that time goes. GC stays enabled during turns (agno's turn allocates a lot; pausing it
would hide a real cost of agno's turn and of ours alike), but the stored data is moved to the permanent
generation first (``gc.freeze()``), so no contender pays for collecting another's (or its own) store heap.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import cProfile
import functools
import gc
import inspect
import io
import os
import pstats
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

os.environ.setdefault("AGNO_TELEMETRY", "false")

from _harness import Report, machine, size_label
from agno.agent import Agent
from agno.db.in_memory import InMemoryDb as AgnoInMemoryDb
from sessions import SessionFactory, agent_id, session_id, user_id

from aiomemdb.agno import AsyncInMemoryDb, InMemoryDb
from aiomemdb.agno.testing import OfflineModel

CONCURRENCY = 20
PROMPTS = ("What was my first question?", "And what is the population of Lisbon?", "Summarise our chat.")


def make_agent(db: Any, i: int) -> Agent:
    """A new agent for one request on stored session ``i`` (what a server builds per request)."""
    return Agent(
        model=OfflineModel(reply_chars=400),
        db=db,
        id=agent_id(i),
        user_id=user_id(i),
        session_id=session_id(i),
        add_history_to_context=True,
        num_history_runs=3,
        telemetry=False,
    )


def turn(db: Any, i: int, k: int) -> None:
    run = make_agent(db, i).run(PROMPTS[k % len(PROMPTS)])
    if run.content is None:
        raise RuntimeError(f"turn on session {i} produced no reply")


async def aturn(db: Any, i: int, k: int) -> None:
    run = await make_agent(db, i).arun(PROMPTS[k % len(PROMPTS)])
    if run.content is None:
        raise RuntimeError(f"turn on session {i} produced no reply")


def run_turns(db: Any, ids: list[int]) -> None:
    for k, i in enumerate(ids):
        turn(db, i, k)


async def arun_turns(db: Any, ids: list[int]) -> None:
    queue = iter(enumerate(ids))

    async def worker() -> None:
        for k, i in queue:  # a shared iterator: each task takes the next turn when it finishes one
            await aturn(db, i, k)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


# -- stores -------------------------------------------------------------------------------------------------------


def fill_agno(db: AgnoInMemoryDb, factory: SessionFactory, n: int) -> None:
    """agno's store holds the rows its own upsert_session + upsert_run produce; assign them directly."""
    for i in range(n):
        doc = factory.session(i)
        db._sessions[doc["session_id"]] = doc


def fill_ours_sync(db: InMemoryDb, factory: SessionFactory, n: int) -> None:
    for start in range(0, n, 1000):
        db.store.upsert_sessions(list(factory.sessions(min(1000, n - start), start)), preserve_updated_at=True)


async def fill_ours_async(db: AsyncInMemoryDb, factory: SessionFactory, n: int) -> None:
    for start in range(0, n, 1000):
        await db.store.upsert_sessions(list(factory.sessions(min(1000, n - start), start)), preserve_updated_at=True)


# -- timing --------------------------------------------------------------------------------------------------------


class Batches:
    """The session indices each repeat uses: distinct within a repeat, the same for every contender."""

    def __init__(self, n: int, per_repeat: int, seed: int = 14) -> None:
        self._order = list(range(n))
        random.Random(seed).shuffle(self._order)
        self._per = min(per_repeat, n)
        self._next = 0

    def take(self) -> list[int]:
        n = len(self._order)
        ids = [self._order[(self._next + j) % n] for j in range(self._per)]
        self._next = (self._next + self._per) % n
        return ids


def best_rates(contenders: dict[str, Callable[[list[int]], Any]], batches: Batches, repeats: int) -> dict[str, float]:
    """Best turns/s of each contender; every repeat gives all contenders the same sessions, in turn."""
    best = dict.fromkeys(contenders, 0.0)
    warm = batches.take()
    for fn in contenders.values():
        fn(warm[:20])  # imports, agno's first-call set-up
    for _ in range(repeats):
        ids = batches.take()
        for name, fn in contenders.items():
            gc.collect()
            began = time.perf_counter()
            fn(ids)
            best[name] = max(best[name], len(ids) / (time.perf_counter() - began))
    return best


def in_worker(fn: Callable[[Any, list[int]], None], db: Any) -> Callable[[list[int]], None]:
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bench-worker")
    return lambda ids: pool.submit(fn, db, ids).result()


# -- profile -------------------------------------------------------------------------------------------------------

# Every method agno calls on a database during a turn (and a few it might); each is timed inclusively.
_DB_METHODS = ("get_session", "get_sessions", "upsert_session", "upsert_run", "get_run", "get_runs",
               "get_user_memories", "upsert_user_memory", "get_latest_schema_version", "upsert_schema_version",
               "get_learnings", "upsert_learning", "upsert_trace", "create_spans")  # fmt: skip


class DbTimer:
    """Wraps a database object's methods (instance attributes: its class is unchanged) to time calls into it."""

    def __init__(self, db: Any) -> None:
        self.total = 0.0
        self.calls: dict[str, int] = {}
        self._depth = threading.local()
        for name in _DB_METHODS:
            method = getattr(db, name, None)
            if method is not None:
                setattr(db, name, self._wrap(name, method))

    def _wrap(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(method):

            @functools.wraps(method)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                self.calls[name] = self.calls.get(name, 0) + 1
                began = time.perf_counter()
                try:
                    return await method(*args, **kwargs)
                finally:
                    self.total += time.perf_counter() - began

            return timed_async

        @functools.wraps(method)
        def timed(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(self._depth, "n", 0)
            self._depth.n = depth + 1
            if depth == 0:
                self.calls[name] = self.calls.get(name, 0) + 1
            began = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self._depth.n = depth
                if depth == 0:
                    self.total += time.perf_counter() - began

        return timed


def _in_db(path: str) -> bool:
    return "aiomemdb" in path or os.sep + os.path.join("agno", "db") + os.sep in path


def profile_listing(fn: Callable[[], None], top: int = 14) -> Iterator[str]:
    """cProfile of ``fn``: the functions with the most cumulative time, of the database code and what it calls."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    stats = pstats.Stats(prof, stream=io.StringIO())
    total = max(stats.total_tt, 1e-9)  # type: ignore[attr-defined]
    rows = []
    for (path, line, name), (_, ncalls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        wanted = _in_db(path) or name in ("from_dict", "to_dict", "deepcopy", "asdict", "deserialize_history_run")
        if wanted:
            rows.append((cumtime, tottime, ncalls, f"{os.path.basename(path)}:{line}({name})"))
    rows.sort(reverse=True)
    yield f"      {'cum %':>6} {'own %':>6} {'calls':>8}  function   (cProfile; % of the whole profiled turns)"
    for cumtime, tottime, ncalls, where in rows[:top]:
        yield f"      {100 * cumtime / total:6.1f} {100 * tottime / total:6.1f} {ncalls:8d}  {where}"


def profile(factory: SessionFactory, n: int, turns: int, report: Report) -> None:
    print(f"\nprofile: {turns} agent.run() turns on a {size_label(n)} store, main thread")
    batches = Batches(n, turns, seed=41)
    dbs: dict[str, Any] = {"agno InMemoryDb": AgnoInMemoryDb(), "aiomemdb.agno.InMemoryDb": InMemoryDb()}
    fill_agno(dbs["agno InMemoryDb"], factory, n)
    fill_ours_sync(dbs["aiomemdb.agno.InMemoryDb"], factory, n)
    gc.collect()
    gc.freeze()
    warm = batches.take()
    ids = batches.take()
    for name, db in dbs.items():
        run_turns(db, warm[:20])
        timer = DbTimer(db)
        began = time.perf_counter()
        run_turns(db, ids)
        wall = time.perf_counter() - began
        share = timer.total / wall
        calls = ", ".join(f"{k} {v / len(ids):g}" for k, v in sorted(timer.calls.items()))
        print(f"   {name}: {1e3 * wall / len(ids):.2f} ms per turn, {100 * share:.0f}% inside the database "
              f"({1e3 * timer.total / len(ids):.2f} ms); calls per turn: {calls}")  # fmt: skip
        report.add(f"share of an agent.run() turn inside {name}", size_label(n), 100 * share, "", None, unit="%")
        for line in profile_listing(lambda db=db: run_turns(db, batches.take())):
            print(line)
    dbs["aiomemdb.agno.InMemoryDb"].close()


# -- main ------------------------------------------------------------------------------------------------------------


def measure(n: int, factory: SessionFactory, loop: asyncio.AbstractEventLoop, report: Report, repeats: int,
            per_repeat: int) -> None:  # fmt: skip
    """The turns/s rows for a store of ``n`` sessions."""
    label = size_label(n)
    began = time.perf_counter()
    # one store per contender: a contender must never find a session another one just read (agno's run cache)
    agno_sync, agno_worker, agno_async = AgnoInMemoryDb(), AgnoInMemoryDb(), AgnoInMemoryDb()
    for db in (agno_sync, agno_worker, agno_async):
        fill_agno(db, factory, n)
    ours_sync, ours_worker = InMemoryDb(), InMemoryDb()
    fill_ours_sync(ours_sync, factory, n)
    fill_ours_sync(ours_worker, factory, n)
    ours_async = AsyncInMemoryDb()
    loop.run_until_complete(fill_ours_async(ours_async, factory, n))
    print(f"\n{label} stored sessions (6 stores built in {time.perf_counter() - began:.0f} s)")
    # The stored data (agno's dicts, our bytes) goes to the permanent generation: the collector's work on
    # agno's large dict heap would otherwise be charged to whichever contender triggers a collection.
    gc.collect()
    gc.freeze()
    sync_rates = best_rates({
        "agno, main thread": lambda ids: run_turns(agno_sync, ids),
        "ours, main thread": lambda ids: run_turns(ours_sync, ids),
        "agno, worker thread": in_worker(run_turns, agno_worker),
        "ours, worker thread": in_worker(run_turns, ours_worker),
    }, Batches(n, per_repeat), repeats)  # fmt: skip
    async_rates = best_rates({
        "agno": lambda ids: loop.run_until_complete(arun_turns(agno_async, ids)),
        "ours": lambda ids: loop.run_until_complete(arun_turns(ours_async, ids)),
    }, Batches(n, per_repeat, seed=15), repeats)  # fmt: skip
    target = "≥1.5x" if n == 10_000 else ""

    def check(ratio: float) -> bool:
        return ratio >= 1.5

    for where in ("main thread", "worker thread"):
        report.add(f"agent.run(), aiomemdb.agno.InMemoryDb, {where}", label, sync_rates[f"ours, {where}"],
                   "agno InMemoryDb, same thread", sync_rates[f"agno, {where}"], target=target,
                   check=check if target else None, unit="turns/s")  # fmt: skip
    report.add(f"agent.arun() x{CONCURRENCY} concurrent, aiomemdb.agno.AsyncInMemoryDb", label,
               async_rates["ours"], "agno InMemoryDb, same tasks", async_rates["agno"], target=target,
               check=check if target else None, unit="turns/s")  # fmt: skip
    ours_sync.close()
    ours_worker.close()
    loop.run_until_complete(ours_async.close())
    gc.unfreeze()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    parser.add_argument("--full", action="store_true", help="also 100k stored sessions (~8 GB of RAM)")
    parser.add_argument("--sizes", help="comma-separated store sizes instead of the default ones")
    parser.add_argument("--profile", action="store_true", help="add the profile summary (10k sessions)")
    parser.add_argument("--json", help="also write the rows to this JSON file (used by run.py)")
    args = parser.parse_args()
    default = [1_000, 10_000, 100_000] if args.full else [1_000, 10_000]
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else default
    repeats, per_repeat = (3, 100) if args.quick else (5, 200)
    print(machine())
    factory = SessionFactory()
    report = Report("Agent turns: a new agno Agent per request on a stored 10-run session (turns/s)")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    for n in sizes:
        measure(n, factory, loop, report, repeats, per_repeat)
        gc.collect()
    if args.profile:
        profile(factory, 10_000 if not args.sizes else sizes[-1], 100 if args.quick else 300, report)
    report.notes.append(
        f"a turn: new Agent(OfflineModel, add_history_to_context=True, num_history_runs=3) on a stored 10-run "
        f"session, run() or arun(); {per_repeat} turns per repeat on distinct random sessions, the same for "
        f"every contender; best of {repeats} interleaved repeats; stored data frozen out of the collector"
    )
    report.print()
    report.dump(args.json)
    loop.close()


if __name__ == "__main__":
    main()
