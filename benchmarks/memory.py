"""Resident memory per stored session, against the session's orjson size (SPEC 6: at most 1.5x).

Usage: ``python benchmarks/memory.py [--quick]`` (1,000 sessions; 10,000 without ``--quick``).

Memory is what ``tracemalloc`` counts as still allocated after inserting the sessions (and collecting garbage),
divided by the number of sessions: records, indexes, ids, everything the store keeps. The JSON size is
``len(orjson.dumps(session))`` of each session as ``get_session`` returns it. Measured for the default store
(sessions held as bytes), for ``storage_dict=`` (which also keeps the caller's dict of decoded sessions), for
agno's ``InMemoryDb`` holding the same rows, and for a plain ``dict[str, bytes]`` (the floor).

Note: ``orjson.dumps`` (3.13) returns its result in the buffer it grew while writing, which stays allocated: at
least 4 KiB, ~16 KiB for a 2.6 KB run, ~65 KiB for a 27 KB session. The store keeps exact-size copies.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

import orjson
from _harness import Report, machine, parse_args
from agno.db.in_memory import InMemoryDb as AgnoDb
from sessions import SessionFactory

from aiomemdb import AsyncInMemoryDb


def measure(fill: Callable[[], Any]) -> tuple[int, Any]:
    """Bytes still allocated after ``fill()`` (which returns what must stay alive), and that object."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = fill()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before, kept


def main() -> None:
    args = parse_args(__doc__)
    n = 1_000 if args.quick else 10_000
    size = f"{n // 1000}k"
    report = Report("Resident memory per session (bytes, tracemalloc) against its JSON size")
    print(machine())
    factory = SessionFactory()
    loop = asyncio.new_event_loop()

    def fill_ours(**options: Any) -> Callable[[], AsyncInMemoryDb]:
        def fill() -> AsyncInMemoryDb:
            db = AsyncInMemoryDb(**options)
            for i in range(n):
                loop.run_until_complete(db.upsert_session(factory.session(i), preserve_updated_at=True))
            return db

        return fill

    def fill_agno() -> AgnoDb:
        db = AgnoDb()
        for i in range(n):
            doc = factory.session(i)
            db._sessions[doc["session_id"]] = doc
        return db

    def fill_raw() -> dict[str, bytes]:
        # exact-size copies: orjson's own result keeps the larger buffer it wrote into (see _record._stored)
        return {doc["session_id"]: memoryview(orjson.dumps(doc)).tobytes() for doc in factory.sessions(n)}

    used, db = measure(fill_ours())
    json_bytes = sum(len(orjson.dumps(loop.run_until_complete(db.get_session(doc_id))))
                     for doc_id in (factory.session(i)["session_id"] for i in range(n)))  # fmt: skip
    per_json = json_bytes / n
    del db
    used_dict, db_dict = measure(fill_ours(storage_dict={}))
    del db_dict
    used_agno, agno = measure(fill_agno)
    del agno
    used_raw, raw = measure(fill_raw)
    del raw
    add = report.add
    add("ours (default: bytes)", size, used / n, "JSON size", per_json, unit="B", target="≤1.5x",
        check=lambda x: x <= 1.5)  # fmt: skip
    add("ours with storage_dict= (bytes + the caller's dicts)", size, used_dict / n, "JSON size", per_json, unit="B")
    add("agno InMemoryDb (dicts)", size, used_agno / n, "JSON size", per_json, unit="B")
    add("dict[str, bytes] of exact size (floor)", size, used_raw / n, "JSON size", per_json, unit="B")
    report.notes.append(f"mean JSON size of a session as stored: {per_json:,.0f} bytes; {n:,} sessions")
    report.print()
    report.dump(args.json)
    loop.close()


if __name__ == "__main__":
    main()
