"""Model-based test with faults: the plain-dict model of ``test_model.py`` against a bounded, faulty store.

:class:`FaultMachine` runs every rule of :class:`~tests.test_model.StoreMachine` against a store with
``max_sessions`` of 1 to 3 (so almost every read reloads), over a persistence that can be told to fail its next
save or load and to hold a load until the machine releases it. Its own rules put faults where the store's parts
meet: a delete or a replacing write landing while a reload of the same session waits on storage, a flush or a
read whose storage fails, a journal whose disk is full, async ``update_session`` functions yielding while other
sessions are evicted, restarts with and without journal mode, two concurrent closes (one of them failing
first), writes and a ``refresh`` landing while a flush is held at its save, and two concurrent closes held at
the final flush with one caller cancelled and a reload in flight. After every step the store must still equal
the model: nothing lost, nothing resurrected, nothing reverted.

The number of examples is 500 by default; ``AIOMEMDB_MODEL_EXAMPLES`` sets another.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule, run_state_machine_as_test

from aiomemdb import AsyncInMemoryDb, ClosedError, DirectoryPersistence, PersistenceError

from ._faults import Faulty, Gate, disk_full
from .test_model import RUN_IDS, Model, StoreMachine, sids

EXAMPLES = int(os.environ.get("AIOMEMDB_MODEL_EXAMPLES", "500"))


class FaultMachine(StoreMachine):
    """StoreMachine over a bounded store with a faulty persistence, plus rules that inject the faults."""

    def __init__(self) -> None:
        self.max_sessions = 1
        self.journal = False
        self.faulty: Faulty | None = None
        super().__init__()

    def open_store(self) -> AsyncInMemoryDb:
        self.faulty = Faulty(DirectoryPersistence(self.dir, fsync=False))
        db = AsyncInMemoryDb(
            persistence=self.faulty,
            durability="journal" if self.journal else "manual",
            journal_path=self.dir / "journal",
            journal_fsync=3600,
            flush_interval=3600,
            max_sessions=self.max_sessions,
            clock=self.clock,
        )
        self.run(db.start())
        return db

    def snapshot(self) -> Any:
        """What a step that must change nothing compares, without the dirty count: a bounded store whose dirty
        payloads block eviction wakes its flusher, which then flushes in the background (even with manual
        durability) whenever the rule's awaits let it run, so that count may fall during any step."""
        sessions, total, records, n_sessions, n_records, _dirty = super().snapshot()
        return sessions, total, records, n_sessions, n_records

    @property
    def storage(self) -> Faulty:
        assert self.faulty is not None
        return self.faulty

    def evicted(self, sid: str) -> bool:
        rec = self.db._kernel.sessions.get(sid)
        return rec is not None and not rec.resident

    # -- faults -------------------------------------------------------------------------------------------------

    @rule(bound=st.integers(1, 3), journal=st.booleans(), concurrent=st.booleans(), fail_first=st.booleans())
    def reopen(self, bound: int, journal: bool, concurrent: bool, fail_first: bool) -> None:
        """Restart with another bound and mode; a failing close keeps the store open, concurrent closes both end
        with the store closed, and the reopened store equals the model."""
        if fail_first:
            self.storage.fail_saves = 1_000  # the background flusher (journal mode) may try first: it fails too
            try:
                self.run(self.db.aclose())
            except PersistenceError:
                assert self.db.stats().state == "open"  # nothing lost: the store stays open
            finally:
                self.storage.fail_saves = 0
        if concurrent:

            async def close_twice() -> None:
                await asyncio.gather(self.db.aclose(), self.db.aclose())

            self.run(close_twice())
        else:
            self.run(self.db.aclose())
        assert self.db.stats().state == "closed"
        self.max_sessions, self.journal = bound, journal
        self.db = self.open_store()
        assert self.run(self.db.get_all_sessions()) == self.model.query()[0]

    @rule()
    def flush(self) -> None:
        """A flush makes everything clean, so the bound evicts down to max_sessions."""
        self.run(self.db.flush())
        assert self.db.stats().dirty == 0
        assert self.db.stats().resident <= self.max_sessions

    @rule()
    def failing_flush(self) -> None:
        """A flush whose save fails raises and keeps every change dirty; nothing is lost either way."""
        self.storage.fail_saves = 1_000  # in journal mode the background flusher may try first: it fails too
        try:
            self.run(self.db.flush())
        except PersistenceError:
            assert self.db.stats().dirty > 0
        else:
            # Nothing was dirty, or a background flush (journal mode) had already taken it all to storage.
            assert self.db.stats().dirty == 0
        finally:
            self.storage.fail_saves = 0

    @rule(sid=sids)
    def failing_reload(self, sid: str) -> None:
        """A read of an evicted session whose load fails raises PersistenceError and changes nothing."""
        self.run(self.db.flush())
        if not self.evicted(sid):
            return
        self.storage.fail_loads = 1
        with pytest.raises(PersistenceError):
            self.run(self.db.get_session(sid))
        self.storage.fail_loads = 0
        assert self.evicted(sid)

    @rule(sid=sids, replace=st.booleans())
    def write_during_reload(self, sid: str, replace: bool) -> None:
        """A delete (or a replacing write) that lands while a reload of the session waits on storage wins: the
        stale reload is never installed, so nothing deleted comes back and nothing newer is reverted."""
        self.run(self.db.flush())
        if not self.evicted(sid):
            return
        gate = self.storage.load_gate = Gate()
        reader = self.loop.create_task(self.db.get_session(sid))
        self.run(gate.entered.wait())
        if replace:
            session = {"session_id": sid, "session_data": {"replaced": True}, "runs": [{"run_id": "rx"}]}
            owner = self.model.sessions[sid].user_id
            if owner is not None:
                session["user_id"] = owner
            self.write(lambda m: m.put(session, now=self.now).doc(), lambda: self.db.upsert_session(session))
        else:
            self.write(lambda m: _delete(m, sid), lambda: self.db.delete_session(sid))
        gate.release.set()
        got = self.run(reader)
        if got is not None:  # the read began before the write: the old or the new value, never a third
            assert got["session_id"] == sid
        self.run(self.db.flush())
        self.every_session_matches()

    @rule(sid=sids, rid=st.sampled_from(RUN_IDS))
    def journal_disk_full(self, sid: str, rid: str) -> None:
        """In journal mode a write whose journal append fails raises and changes nothing; the next write works."""
        if not self.journal or sid not in self.model.sessions:
            return
        before = self.snapshot()
        with disk_full(), pytest.raises(PersistenceError, match="not applied"):
            self.run(self.db.upsert_run(sid, {"run_id": rid, "content": "lost"}))
        assert self.snapshot() == before

    @rule(a=sids, b=sids)
    def yielding_updates(self, a: str, b: str) -> None:
        """Async update_session functions that yield while other sessions are read (and evicted) lose nothing."""
        self.run(self.db.flush())

        async def bump(s: dict[str, Any] | None) -> dict[str, Any] | None:
            await asyncio.sleep(0)
            if s is None:
                return None
            return {**s, "session_data": {**(s.get("session_data") or {}), "bumped": True}}

        async def both() -> None:
            await asyncio.gather(
                self.db.update_session(a, bump),
                self.db.get_session(b),
                self.db.update_session(b, bump) if b != a else asyncio.sleep(0),
            )

        self.run(both())
        # The two updates ran concurrently: apply them to the model in the order the store committed them.
        kernel = self.db._kernel
        for sid in sorted(dict.fromkeys([a, b]), key=lambda x: kernel.sessions[x].seq if x in kernel.sessions else 0):
            m = self.model.sessions.get(sid)
            if m is not None:
                bumped = {**m.doc(), "session_data": {**(m.head.get("session_data") or {}), "bumped": True}}
                self.model.put(bumped, now=self.now)


    # -- faults where a slow flush or a close meets other work -------------------------------------------------

    def until_entered(self, gate: Gate, task: asyncio.Task[Any]) -> None:
        """Run the loop until the store reaches ``gate`` or ``task`` ends (a flush with nothing to write)."""
        entered = self.loop.create_task(gate.entered.wait())
        self.run(asyncio.wait([entered, task], return_when=asyncio.FIRST_COMPLETED))
        entered.cancel()

    @rule(sid=sids, rid=st.sampled_from(RUN_IDS), other=sids)
    def writes_during_a_slow_flush(self, sid: str, rid: str, other: str) -> None:
        """Writes acknowledged while a flush is held at its save are not counted as flushed: the next flush
        writes them, and then nothing is dirty."""
        self.upsert_run(sid, rid, "before the flush", None)
        gate = self.storage.save_gate = Gate()
        flushing = self.loop.create_task(self.db.flush())
        self.until_entered(gate, flushing)
        self.upsert_run(sid, rid, "during the flush", None)
        self.upsert_run(other, rid, "during the flush", None)
        gate.release.set()
        self.storage.save_gate = None
        self.run(flushing)
        self.run(self.db.flush())
        assert self.db.stats().dirty == 0

    @rule(sid=sids)
    def refresh_during_a_flush(self, sid: str) -> None:
        """refresh() while a flush writes the session waits for it: what it installs is what storage then holds,
        which is what the model says (and it keeps its place in the recency order)."""
        self.upsert_run(sid, "r1", "dirty", None)
        gate = self.storage.save_gate = Gate()
        flushing = self.loop.create_task(self.db.flush())
        self.until_entered(gate, flushing)
        refreshing = self.loop.create_task(self.db.refresh(sid))
        self.run(asyncio.sleep(0))
        gate.release.set()
        self.storage.save_gate = None
        self.run(flushing)
        got = self.run(refreshing)
        m = self.model.sessions.get(sid)
        assert got == (m.doc() if m is not None else None)

    @rule(
        cancel=st.sampled_from(["none", "first", "second"]),
        reader=sids,
        bound=st.integers(1, 3),
        journal=st.booleans(),
    )
    def close_under_load(self, cancel: str, reader: str, bound: int, journal: bool) -> None:
        """Two concurrent closes while the final flush is held, one caller maybe cancelled, a reload in flight:
        one close happens (the store ends closed, not reopened), the reader gets its session or ClosedError,
        and the reopened store (another bound and mode) equals the model."""
        self.run(self.db.flush())  # everything clean: the bound evicts, so the reader may have to reload
        load_gate = None
        reading = None
        if self.evicted(reader):
            load_gate = self.storage.load_gate = Gate()
            reading = self.loop.create_task(self.db.get_session(reader))
            self.run(load_gate.entered.wait())
        self.put_record("m1", "absent", "written just before the close")  # for the final flush to write
        save_gate = self.storage.save_gate = Gate()
        first = self.loop.create_task(self.db.aclose())
        self.until_entered(save_gate, first)
        second = self.loop.create_task(self.db.aclose())
        self.run(asyncio.sleep(0))
        victim = {"first": first, "second": second}.get(cancel)
        if victim is not None:
            victim.cancel()
        if load_gate is not None:
            load_gate.release.set()
        save_gate.release.set()
        self.storage.save_gate = None
        outcomes = self.run(asyncio.gather(first, second, return_exceptions=True))
        for task, outcome in zip((first, second), outcomes, strict=True):
            if task is victim and not isinstance(outcome, asyncio.CancelledError):
                assert outcome is None  # it ended before the cancel reached it
            elif task is not victim:
                assert outcome is None
        if reading is not None:
            got = self.run(_outcome(reading))
            m = self.model.sessions.get(reader)
            assert isinstance(got, ClosedError) or got == (m.doc() if m is not None else None)
        assert self.db.stats().state == "closed"
        assert self.storage.closes == 1
        self.max_sessions, self.journal = bound, journal
        self.db = self.open_store()
        assert self.run(self.db.get_all_sessions()) == self.model.query()[0]


async def _outcome(awaitable: Awaitable[Any]) -> Any:
    try:
        return await awaitable
    except ClosedError as exc:
        return exc


def _delete(m: Model, sid: str) -> bool:
    if sid not in m.sessions:
        return False
    del m.sessions[sid]
    return True


def test_bounded_faulty_store_matches_model() -> None:
    """Over random operation sequences with faults (slow and failing loads and saves, deletes during reloads,
    a full journal disk, restarts in both modes, concurrent closes) a bounded store equals the model."""
    run_state_machine_as_test(
        FaultMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )

