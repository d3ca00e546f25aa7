"""The sync Agno class on agno's own calls: ``aiomemdb.agno.InMemoryDb`` against agno's ``InMemoryDb``, same sessions.

Usage: ``python benchmarks/agno_path.py [--quick] [--sizes 1000,10000]`` (default 1k and 10k stored sessions).

Sessions are the real agno sessions of ``benchmarks/sessions.py`` (made by a real agno ``Agent`` with the offline
model: 10 runs, ~25 KB of JSON), re-id'd over 100 users. Both stores hold the same rows. Each operation is called
as agno's code calls it, with agno's objects, from two places:

- the **main thread** (as a script or notebook calls it; our facade hops to its loop thread from there today);
- **agno's own background threads** (the ``agno-bg`` pool an ``Agent`` creates for memories and learnings): a
  batch of calls is submitted to that pool and timed inside the worker.

Operations: ``get_session(deserialize=False)`` (a dict), ``get_session`` (an ``AgentSession`` with its runs),
``upsert_session`` of an existing session (an ``AgentSession`` object, as agno saves it after a turn),
``get_sessions(limit=5, sort_by="updated_at")`` (the five most recently updated sessions, agno's ``Session``
objects), ``get_sessions(user_id=...)`` (all of one user's sessions). Repeats are interleaved between
contenders; the best counts; GC is paused inside timed repeats for both.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

os.environ.setdefault("AGNO_TELEMETRY", "false")

from _harness import Report, compare, machine, parse_args, size_label, sizes
from agno.agent import Agent
from agno.db.in_memory import InMemoryDb as AgnoInMemoryDb
from agno.session import AgentSession
from sessions import SessionFactory, session_id, user_id

from aiomemdb.agno import InMemoryDb
from aiomemdb.agno.testing import OfflineModel

SAMPLE = 512  # distinct sessions each operation cycles through
TARGETS: dict[str, tuple[str, Callable[[float], bool], int]] = {
    "get_session(deserialize=False)": ("≥5x", lambda r: r >= 5, 0),
    "get_session": ("≥2x", lambda r: r >= 2, 0),
    "upsert_session (existing)": ("≥3x", lambda r: r >= 3, 0),
    'get_sessions(limit=5, sort_by="updated_at")': ("≥1000x @10k", lambda r: r >= 1000, 10_000),
    "get_sessions(user_id=...)": ("≥10x", lambda r: r >= 10, 0),
}


def fill(ours: InMemoryDb, agno: AgnoInMemoryDb, factory: SessionFactory, n: int) -> None:
    for start in range(0, n, 1000):
        docs = list(factory.sessions(min(1000, n - start), start))
        ours.store.upsert_sessions(docs, preserve_updated_at=True)
        for doc in docs:
            agno._sessions[doc["session_id"]] = doc


def operations(db: Any, n: int, sessions: list[AgentSession]) -> dict[str, Callable[[int], None]]:
    """Each operation as ``fn(count)``: ``count`` calls over a cycle of distinct sessions."""
    sids = [session_id(i) for i in range(0, n, max(1, n // SAMPLE))][:SAMPLE]

    def get_raw(count: int) -> None:
        for k in range(count):
            if db.get_session(sids[k % len(sids)], deserialize=False) is None:
                raise RuntimeError("missing session")

    def get(count: int) -> None:
        for k in range(count):
            if db.get_session(sids[k % len(sids)]) is None:
                raise RuntimeError("missing session")

    def upsert(count: int) -> None:
        for k in range(count):
            if db.upsert_session(sessions[k % len(sessions)]) is None:
                raise RuntimeError("upsert refused")

    def recent(count: int) -> None:
        for _ in range(count):
            if len(db.get_sessions(limit=5, sort_by="updated_at")) != 5:
                raise RuntimeError("not five sessions")

    def by_user(count: int) -> None:
        for k in range(count):
            if not db.get_sessions(user_id=user_id(k)):
                raise RuntimeError("no sessions of the user")

    return {
        "get_session(deserialize=False)": get_raw,
        "get_session": get,
        "upsert_session (existing)": upsert,
        'get_sessions(limit=5, sort_by="updated_at")': recent,
        "get_sessions(user_id=...)": by_user,
    }


def in_pool(pool: Executor, fn: Callable[[int], None]) -> Callable[[int], None]:
    return lambda count: pool.submit(fn, count).result()


def main() -> None:
    args = parse_args(__doc__)
    print(machine())
    factory = SessionFactory()
    report = Report("The sync Agno class vs agno's InMemoryDb, main thread and agno's background threads (ops/s)")
    # agno's own background pool, as an Agent creates it for memories and learnings
    pool = Agent(model=OfflineModel(), telemetry=False).background_executor
    for n in sizes(args) if args.sizes else [1_000, 10_000]:
        label = size_label(n)
        ours, agno = InMemoryDb(), AgnoInMemoryDb()
        fill(ours, agno, factory, n)
        sample = [factory.session(i) for i in range(0, n, max(1, n // 64))][:64]
        # each side saves its own AgentSession objects (agno's upsert reads them; ours too)
        ours_sessions = [AgentSession.from_dict(copy.deepcopy(doc)) for doc in sample]
        agno_sessions = [AgentSession.from_dict(copy.deepcopy(doc)) for doc in sample]
        ours_ops = operations(ours, n, ours_sessions)  # type: ignore[arg-type]
        agno_ops = operations(agno, n, agno_sessions)  # type: ignore[arg-type]
        print(f"\n{label} stored sessions")
        for op in ours_ops:
            rates = compare(
                {
                    "ours, main": ours_ops[op],
                    "agno, main": agno_ops[op],
                    "ours, agno-bg": in_pool(pool, ours_ops[op]),
                    "agno, agno-bg": in_pool(pool, agno_ops[op]),
                },
                budget=args.budget,
                repeats=args.repeats,
            )
            target, check, at = TARGETS[op]
            applies = at in (0, n)
            for where in ("main", "agno-bg"):
                report.add(f"{op}, {where} thread", label, rates[f"ours, {where}"], "agno InMemoryDb, same thread",
                           rates[f"agno, {where}"], target=target if applies else "",
                           check=check if applies else None)  # fmt: skip
        ours.close()
    report.notes.append(
        "sessions: real agno sessions (10 runs, ~25 KB), the same rows in both stores; agno's objects in and out "
        "(AgentSession for upsert_session; get_sessions returns Session objects); GC paused in timed repeats"
    )
    report.print()
    report.dump(args.json)


if __name__ == "__main__":
    main()
