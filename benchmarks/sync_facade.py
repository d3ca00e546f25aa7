"""The blocking facade against the async call of the same operation, and shared by threads.

Usage: ``python benchmarks/sync_facade.py [--quick]``.

Three ways to make the same call on a store of 1,000 realistic sessions:

- **async**: ``await AsyncInMemoryDb.op(...)`` in a coroutine (the reference: SPEC 6 wants the facade within 3x);
- **sync, worker thread**: ``InMemoryDb.op(...)`` from a thread other than the main one (sync web handlers,
  agno's ``agno-bg`` pool): the kernel is called in that thread, no thread switch;
- **sync, main thread**: from the main thread (scripts, notebooks): the kernel is called in the main thread too,
  with SIGINT deferred around the transaction so that Ctrl-C can never split a write (issue 11: >= 0.8x async);
- **run_coroutine_threadsafe**: a hop to the loop thread per call (``asyncio.run_coroutine_threadsafe(...)
  .result()`` on the facade's loop), what every call would cost if the facade sent all of them to its loop.

Then several threads share one facade (reads, listings, run writes, creates and deletes), against the same threads
on agno's ``InMemoryDb``: total throughput, and errors or lost writes (there must be none for ours).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from _harness import Report, compare, machine, parse_args
from sessions import SessionFactory, session_id

from aiomemdb import AsyncInMemoryDb, InMemoryDb

N = 1_000


def in_thread(fn: Callable[[int], Any]) -> Callable[[int], None]:
    """``fn(n)`` run in a fresh worker thread (its start-up, ~0.1 ms, is charged to the repeat)."""

    def run(n: int) -> None:
        thread = threading.Thread(target=fn, args=(n,))
        thread.start()
        thread.join()

    return run


def facade_vs_async(report: Report, args: Any, factory: SessionFactory) -> None:
    loop = asyncio.new_event_loop()
    core = AsyncInMemoryDb()
    sessions = [factory.session(i) for i in range(N)]
    loop.run_until_complete(core.upsert_sessions(sessions, preserve_updated_at=True))
    facade = InMemoryDb()
    facade.upsert_sessions(sessions, preserve_updated_at=True)
    portal_loop = facade._d.loop.loop  # a hop per call, on the facade's own loop thread
    ids = [session_id(i) for i in random.Random(7).sample(range(N), N)]
    runs = [(session_id(i), factory.session(i)["runs"][-1]) for i in range(256)]
    rows = [{k: v for k, v in factory.session(i).items() if k != "runs"} for i in range(256)]

    ops: list[tuple[str, Callable[[Any, int], Any]]] = [
        ("get_session", lambda db, k: db.get_session(ids[k % N])),
        ("get_session(runs_limit=2)", lambda db, k: db.get_session(ids[k % N], runs_limit=2)),
        ("get_recent_sessions(limit=5)", lambda db, k: db.get_recent_sessions(limit=5)),
        ("upsert_run", lambda db, k: db.upsert_run(*runs[k % 256])),
        ("upsert_session (row only)", lambda db, k: db.upsert_session(rows[k % 256], include_runs=False)),
        ("delete_session (missing id)", lambda db, k: db.delete_session("no-such-session")),
    ]
    for name, op in ops:

        async def f_async(n: int, op: Any = op) -> None:
            for k in range(n):
                await op(core, k)

        def f_sync(n: int, op: Any = op) -> None:
            for k in range(n):
                op(facade, k)

        def f_rcts(n: int, op: Any = op) -> None:
            for k in range(n):
                asyncio.run_coroutine_threadsafe(op(facade._db, k), portal_loop).result()

        r = compare(
            {"async": f_async, "thread": in_thread(f_sync), "main": f_sync, "rcts": f_rcts},
            budget=args.budget,
            repeats=args.repeats,
            loop=loop,
        )
        target = "≥0.33x (≤3x time)"
        report.add(f"sync {name}, worker thread", "1k", r["thread"], "async call", r["async"], target=target,
                   check=lambda x: x >= 1 / 3)  # fmt: skip
        report.add(f"sync {name}, main thread", "1k", r["main"], "async call", r["async"], target="≥0.8x",
                   check=lambda x: x >= 0.8)  # fmt: skip
        report.add(f"sync {name}, worker thread", "1k", r["thread"], "run_coroutine_threadsafe", r["rcts"])
    facade.close()
    loop.run_until_complete(core.aclose())
    loop.close()


def threads_sharing_one_store(report: Report, args: Any, factory: SessionFactory) -> None:
    """Threads on one store: 70% get_session, 10% get_sessions(user_id, limit=5), 10% upsert_run, 10% create a
    session and delete it again. Every run appended must be there at the end; no call may raise."""
    from agno.db.in_memory import InMemoryDb as AgnoDb
    from agno.session import AgentSession

    duration = 1.0 if args.quick else 2.0
    sessions = [factory.session(i) for i in range(N)]
    run = factory.session(0)["runs"][-1]
    extra = {k: v for k, v in factory.session(N + 1).items() if k != "runs"}

    def hammer(db: Any, kind: str, threads: int) -> tuple[float, list[BaseException], int]:
        errors: list[BaseException] = []
        done = [0] * threads
        appended: list[tuple[str, str]] = []
        stop = time.perf_counter() + duration
        barrier = threading.Barrier(threads)

        def work(t: int) -> None:
            rng = random.Random(t)
            barrier.wait()
            count = 0
            while time.perf_counter() < stop:
                for _ in range(10):
                    i = rng.randrange(N)
                    sid, dice = session_id(i), rng.random()
                    try:
                        if dice < 0.7:
                            if kind == "ours":
                                db.get_session(sid)
                            else:
                                db.get_session(sid, deserialize=False)
                        elif dice < 0.8:
                            if kind == "ours":
                                db.get_sessions(user_id=f"user-{i % 100:03d}", limit=5)
                            else:
                                db.get_sessions(user_id=f"user-{i % 100:03d}", limit=5, deserialize=False)
                        elif dice < 0.9:
                            run_id = f"t{t}-{count}"
                            if kind == "ours":
                                db.upsert_run(sid, {**run, "run_id": run_id})
                            else:
                                db.upsert_run({**run, "run_id": run_id}, sid)
                            appended.append((sid, run_id))
                        else:
                            new = {**extra, "session_id": f"tmp-{t}-{count}"}
                            if kind == "ours":
                                db.upsert_session(new, include_runs=False)
                            else:
                                db.upsert_session(AgentSession.from_dict(new), deserialize=False)
                            db.delete_session(new["session_id"])
                    except Exception as exc:
                        errors.append(exc)
                    count += 1
            done[t] = count

        began = time.perf_counter()
        pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        rate = sum(done) / (time.perf_counter() - began)
        if kind == "ours":
            stored = {(s["session_id"], r["run_id"]) for s in db.get_all_sessions() for r in s["runs"]}
        else:
            stored = {(s["session_id"], r["run_id"]) for s in db._sessions.values() for r in s["runs"] or ()}
        return rate, errors, len(set(appended) - stored)

    for threads in (1, 4):
        ours = InMemoryDb()
        ours.upsert_sessions(sessions, preserve_updated_at=True)
        agno = AgnoDb()
        for doc in sessions:
            agno._sessions[doc["session_id"]] = dict(doc, runs=list(doc["runs"]))
        rate_ours, errors_ours, lost_ours = hammer(ours, "ours", threads)
        rate_agno, errors_agno, lost_agno = hammer(agno, "agno", threads)
        ours.close()
        kinds = sorted({type(e).__name__ + ": " + str(e)[:50] for e in errors_agno})
        report.add(f"{threads} thread(s): mixed reads, listings, run writes, creates+deletes", "1k", rate_ours,
                   "agno InMemoryDb, same threads", rate_agno, target="no error, nothing lost",
                   check=lambda _x, e=errors_ours, lost=lost_ours: not e and lost == 0, on="ours",
                   note=f"ours: {len(errors_ours)} errors, {lost_ours} runs lost; agno: {len(errors_agno)} errors "
                   f"{kinds[:2]}, {lost_agno} runs lost")  # fmt: skip


def main() -> None:
    args = parse_args(__doc__)
    report = Report("Sync facade vs async call (ops/s), and threads sharing one store")
    print(machine())
    factory = SessionFactory()
    facade_vs_async(report, args, factory)
    threads_sharing_one_store(report, args, factory)
    report.notes.append(
        "Both sync rows call the kernel in the caller's thread (the main thread defers SIGINT around the "
        "transaction); 'run_coroutine_threadsafe' is one hop to the loop thread per call, for comparison."
    )
    report.print()
    report.dump(args.json)


if __name__ == "__main__":
    main()
