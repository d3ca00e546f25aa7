"""Model-based test with faults: the plain-dict model of ``test_model.py`` against a bounded, faulty store.

:class:`FaultMachine` runs every rule of :class:`~tests.test_model.StoreMachine` against a store with
``max_sessions`` of 1 to 3 (so almost every read reloads), over a persistence that can be told to fail its next
save or load and to hold a load until the machine releases it. Its own rules put faults where the store's parts
meet: a delete or a replacing write landing while a reload of the same session waits on storage, a flush or a
read whose storage fails, a journal whose disk is full, async ``update_session`` functions yielding while other
sessions are evicted, restarts with and without journal mode, and two concurrent closes (one of them failing
first). After every step the store must still equal the model: nothing lost, nothing resurrected, nothing
reverted.

The number of examples is 500 by default; ``AIOMEMDB_MODEL_EXAMPLES`` sets another.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule, run_state_machine_as_test

from aiomemdb import AsyncInMemoryDb, DirectoryPersistence, PersistenceError
from aiomemdb._io import _journal
from aiomemdb.persistence import Changeset, Key, Persistence, Snapshot

from .test_model import RUN_IDS, Model, StoreMachine, sids

EXAMPLES = int(os.environ.get("AIOMEMDB_MODEL_EXAMPLES", "500"))


class Faulty:
    """A persistence that fails its next saves or loads on request, and can hold one load until released."""

    def __init__(self, inner: Persistence) -> None:
        self.inner = inner
        self.fail_saves = 0
        self.fail_loads = 0
        self.hold: tuple[asyncio.Event, asyncio.Event] | None = None  # (entered, release) for the next load_one

    async def open(self) -> None:
        await self.inner.open()

    async def load(self) -> Snapshot:
        return await self.inner.load()

    async def load_one(self, collection: str, record_id: str) -> dict[str, Any] | None:
        doc = await self.inner.load_one(collection, record_id)  # read first: what a slow GET would return
        if self.hold is not None:
            entered, release = self.hold
            self.hold = None
            entered.set()
            await release.wait()
        if self.fail_loads:
            self.fail_loads -= 1
            raise OSError("injected: storage unreadable")
        return doc

    async def list_keys(self, collection: str | None = None) -> list[Key]:
        return await self.inner.list_keys(collection)

    async def save(self, changeset: Changeset) -> Mapping[Key, dict[str, Any]] | None:
        if self.fail_saves:
            self.fail_saves -= 1
            raise OSError("injected: disk on fire")
        return await self.inner.save(changeset)

    async def aclose(self) -> None:
        await self.inner.aclose()

    @property
    def quarantined(self) -> Sequence[tuple[str, str]]:
        return self.inner.quarantined


def _enospc(fd: int, data: Any) -> int:
    raise OSError(errno.ENOSPC, "injected: no space left on device")


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
        entered, release = asyncio.Event(), asyncio.Event()
        self.storage.hold = (entered, release)
        reader = self.loop.create_task(self.db.get_session(sid))
        self.run(entered.wait())
        if replace:
            session = {"session_id": sid, "session_data": {"replaced": True}, "runs": [{"run_id": "rx"}]}
            owner = self.model.sessions[sid].user_id
            if owner is not None:
                session["user_id"] = owner
            self.write(lambda m: m.put(session, now=self.now).doc(), lambda: self.db.upsert_session(session))
        else:
            self.write(lambda m: _delete(m, sid), lambda: self.db.delete_session(sid))
        release.set()
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
        saved = _journal._write
        _journal._write = _enospc
        try:
            with pytest.raises(PersistenceError, match="not applied"):
                self.run(self.db.upsert_run(sid, {"run_id": rid, "content": "lost"}))
        finally:
            _journal._write = saved
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

