"""The child process that ``tests/test_crash.py`` kills with SIGKILL.

Usage: ``python tests/_crash_child.py ROOT MODE FIRST [COUNT]``

It opens an :class:`~aiomemdb.AsyncInMemoryDb` over ``DirectoryPersistence(ROOT)`` in ``MODE`` (``journal0``:
``durability="journal"`` with ``journal_fsync=0``; ``journal``: ``journal_fsync=0.05``; ``interval``; each may
end in ``+bounded``, ``max_sessions=2``, so most reads and writes reload an evicted session, or ``+ttl``, a TTL
of 20 ms, so the sweeper expires sessions between writes), then
performs operation ``FIRST``, ``FIRST + 1``, … of a deterministic sequence (:func:`step` below; the parent
mirrors it in a model) until it is killed, or, when ``COUNT`` is given, performs ``COUNT`` operations, closes
the store and exits 0. Everything it reports goes to stdout, one flushed line each:

- ``ready``: the store has loaded (and replayed its journal);
- ``ack I``: operation ``I`` returned;
- ``saving I``: a flush handed its changeset to storage; every operation up to ``I`` was acknowledged before
  the flush took its changeset (so it covers them: that, not the instant of the save, is what counts, since
  writes acknowledged between the take and the save may be in the next flush only);
- ``flushed I``: that flush succeeded (an ``on_event`` "flush" event), so operations up to ``I`` are on disk;
- ``closed``: the store closed cleanly (only with ``COUNT``).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from aiomemdb import AsyncInMemoryDb, DirectoryPersistence, Event
from aiomemdb._kernel import _storage
from aiomemdb.persistence import Changeset

SESSIONS = 7
NOTES = 5
ROW_PAD = "x" * 2000
RUN_PAD = "y" * 1000


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Tracker:
    """What has been acknowledged, what the last flush took, and what the flush in progress covers."""

    def __init__(self, first: int) -> None:
        self.acked = first - 1
        self.taken = first - 1
        self.saving = first - 1

    def watch_takes(self) -> None:
        """Note ``acked`` whenever a flush takes the dirty set (the instant that decides what it covers)."""
        begin_flush = _storage.begin_flush

        def noting(kernel: Any) -> Any:
            ticket = begin_flush(kernel)
            if ticket is not None:
                self.taken = self.acked
            return ticket

        _storage.begin_flush = noting  # type: ignore[assignment]


class WatchedDirectory(DirectoryPersistence):
    """DirectoryPersistence that reports when a flush starts writing (so the parent can kill it then)."""

    def __init__(self, root: str, tracker: Tracker) -> None:
        super().__init__(root)
        self.tracker = tracker

    async def save(self, changeset: Changeset) -> None:
        # Not ``acked``: writes acknowledged after the take (the encoding yields between slices, and the save
        # is scheduled as its own task) are dirty again and belong to the next flush.
        self.tracker.saving = self.tracker.taken
        emit(f"saving {self.tracker.saving}")
        await super().save(changeset)


def user_of(sid: str) -> str:
    return f"u{int(sid[1:]) % 2}"


async def step(db: AsyncInMemoryDb, i: int) -> None:
    """Operation ``i``; ``tests/test_crash.py::apply_op`` is its model and must stay in step with it."""
    sid = f"s{i % SESSIONS}"
    if i % 8 == 3:
        await db.put_record("notes", f"n{i % NOTES}", {"i": i, "pad": RUN_PAD})
    elif i % 8 == 7:
        await db.delete_record("notes", f"n{i % NOTES}")
    elif i % 10 == 9:
        await db.delete_session(sid)
    elif await db.get_session(sid) is None:
        await db.upsert_session(
            {"session_id": sid, "user_id": user_of(sid), "session_data": {"created": i}, "runs": [run(i)]}
        )
    elif i % 6 == 0:
        await db.upsert_session(
            {"session_id": sid, "user_id": user_of(sid), "session_data": {"last": i, "pad": ROW_PAD}}
        )
    elif i % 13 == 1:
        await db.update_session(sid, lambda cur: None if cur is None else {**cur, "summary": f"sum{i}"})
    else:
        await db.upsert_run(sid, run(i))


def run(i: int) -> dict[str, Any]:
    return {"run_id": f"r{i}", "i": i, "pad": RUN_PAD}


async def main(root: str, mode: str, first: int, count: int | None) -> None:
    tracker = Tracker(first)

    def on_event(event: Event) -> None:
        if event.kind == "flush":
            emit(f"flushed {tracker.saving}")

    tracker.watch_takes()
    options: dict[str, Any] = {"flush_interval": 0.02, "on_event": on_event}
    mode, _, bound = mode.partition("+")
    if bound == "bounded":
        options["max_sessions"] = 2
    elif bound == "ttl":
        options["ttl"] = 0.02
    if mode == "interval":
        options["durability"] = "interval"
    else:
        options["durability"] = "journal"
        options["journal_fsync"] = 0 if mode == "journal0" else 0.05
    db = AsyncInMemoryDb(persistence=WatchedDirectory(root, tracker), **options)
    await db.start()
    emit("ready")
    i = first
    while count is None or i < first + count:
        await step(db, i)
        tracker.acked = i
        emit(f"ack {i}")
        i += 1
        await asyncio.sleep(0.001)  # lets the flusher run between writes, as a server's writes would
    await db.aclose()
    emit("closed")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else None))
