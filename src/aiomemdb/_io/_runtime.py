"""The async driver's machinery: one structured lifecycle for the I/O parts, and the loop that runs kernel calls.

:class:`Runtime` starts (load, journal replay, tasks) and stops (tasks, final flush, journal, persistence) the
parts in one order, and :meth:`Runtime.call` runs one kernel transaction: when the kernel raises
:class:`~aiomemdb._kernel.NeedsLoad`, it pins the sessions, fetches them through the loader and tries again.
Per-session locks exist only while a read-modify-write spans an await (``update_session``); a plain write waits
for one only when it exists.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from aiomemdb._codec import SESSIONS
from aiomemdb._exceptions import ClosedError, PersistenceError
from aiomemdb._io._flusher import Flusher
from aiomemdb._io._journal import Journal, has_segments
from aiomemdb._io._loader import Loader
from aiomemdb._io._sweeper import Sweeper
from aiomemdb._io._syncer import Syncer
from aiomemdb._io._threads import run_blocking
from aiomemdb._kernel import Drop, Kernel, Key, NeedsLoad, parse_entry
from aiomemdb._kernel import _ops as ops
from aiomemdb._kernel import _storage as storage
from aiomemdb.persistence._base import Persistence

__all__ = ["Runtime", "SessionLock"]

logger = logging.getLogger("aiomemdb")
T = TypeVar("T")
NEW, STARTING, OPEN, CLOSING, CLOSED = "new", "starting", "open", "closing", "closed"
_YIELD_EVERY = 256


class SessionLock:
    """A per-session lock and the number of tasks holding or waiting for it."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class Runtime:
    """Lifecycle and kernel calls of one :class:`~aiomemdb.AsyncInMemoryDb` (bound to the loop it starts in)."""

    def __init__(
        self,
        kernel: Kernel,
        persistence: Persistence | None,
        *,
        durability: str,
        flush_interval: float,
        max_backoff: float,
        journal_dir: Any,
        journal_fsync: float,
        ttl: float | None,
        emit: Callable[[str, dict[str, Any]], None],
    ) -> None:
        self.kernel = kernel
        self.persistence = persistence
        self.durability = durability
        self._flush_interval = flush_interval
        self._max_backoff = max_backoff
        self._journal_dir = journal_dir
        self._journal_fsync = journal_fsync
        self._ttl = ttl
        self._emit = emit
        self.state = NEW
        self.loop: asyncio.AbstractEventLoop | None = None
        self.flusher: Flusher | None = None
        self.loader: Loader | None = None
        self.syncer: Syncer | None = None
        self.sweeper: Sweeper | None = None
        self.journal: Journal | None = None
        self.locks: dict[str, SessionLock] = {}
        self.last_error: str | None = None
        self._start_lock: asyncio.Lock | None = None
        self._closing: asyncio.Future[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        if self.loop is None:
            self.loop = loop
            self._start_lock = asyncio.Lock()
            if self.persistence is not None:
                self.flusher = Flusher(
                    self.kernel,
                    self.persistence,
                    emit=self._emit,
                    interval=self._flush_interval,
                    max_backoff=self._max_backoff,
                )
                self.loader = Loader(self.kernel, self.persistence)
                self.kernel.wake_flusher = self._wake_flusher
            if self._ttl is not None:
                self.sweeper = Sweeper(self.kernel, self._ttl)
        elif self.loop is not loop:
            raise RuntimeError("an AsyncInMemoryDb is bound to the event loop it was first used in")

    def _wake_flusher(self) -> None:
        """Called by the kernel, possibly in a blocking caller's thread (the sync driver): wake thread-safely."""
        flusher, loop = self.flusher, self.loop
        if flusher is None or loop is None:
            return
        try:
            here = asyncio.get_running_loop() is loop
        except RuntimeError:
            here = False
        if here:
            flusher.wake()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(flusher.wake)

    async def ready(self) -> None:
        """Start on first use; raise ClosedError once closing or closed."""
        if self.state == OPEN:
            if asyncio.get_running_loop() is not self.loop:
                raise RuntimeError("an AsyncInMemoryDb is bound to the event loop it was first used in")
            return
        await self.start()

    async def start(self) -> None:
        """Open the persistence, load, replay the journal, start the tasks; idempotent."""
        if self.state in (CLOSING, CLOSED):
            raise ClosedError("this AsyncInMemoryDb is closed")
        self._bind()
        assert self._start_lock is not None
        async with self._start_lock:
            if self.state == OPEN:
                return
            if self.state in (CLOSING, CLOSED):
                raise ClosedError("this AsyncInMemoryDb is closed")
            self.state = STARTING
            try:
                await self._open()
            except BaseException as exc:
                self.state = NEW
                self.last_error = repr(exc)
                await self._release_after_failed_start(exc)
                raise
            self._start_tasks()
            self.state = OPEN

    async def _open(self) -> None:
        persistence = self.persistence
        if persistence is None:
            return
        await persistence.open()
        if not self.kernel.lazy:
            began = time.perf_counter()
            storage.ingest(self.kernel, await persistence.load())
            self._emit("load", {"records": self.kernel.counts["loads"], "duration": time.perf_counter() - began})
        if self._journal_dir is None:
            return
        journaling = self.durability == "journal"
        if journaling or await run_blocking(has_segments, self._journal_dir):
            journal = Journal(self._journal_dir)
            replayed = await self._replay(journal)
            if journaling:
                self.syncer = Syncer(journal, interval=self._journal_fsync, on_error=self._journal_failed)
                self.journal = journal
                self.kernel.journal = journal
                assert self.flusher is not None
                self.flusher.journal = journal
            elif replayed:
                # Writes from now on are not journaled, so the journal must not outlive this start: persist
                # what it held and remove it, or a later replay would put its old values over newer ones.
                assert self.flusher is not None
                await self.flusher.flush()
                await run_blocking(journal.release, journal.last_segment())

    async def _replay(self, journal: Journal) -> int:
        entries = await run_blocking(journal.read)
        for n, (where, entry) in enumerate(entries, 1):
            if n % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
            effects = parse_entry(entry, where)
            if self.kernel.lazy and any(isinstance(e, Drop) for e in effects):
                stored = await self._stored_keys()
                effects = [Drop(tuple(stored)) if isinstance(e, Drop) else e for e in effects]
            await self.call(ops.replay, effects)
        if entries:
            self._emit("load", {"journal_entries": len(entries)})
        return len(entries)

    def _journal_failed(self, exc: BaseException) -> None:
        self.last_error = repr(exc)
        self._emit("flush_failed", {"error": f"journal fsync: {exc!r}", "keys": len(self.kernel.dirty)})
        self._wake_flusher()

    def _start_tasks(self) -> None:
        if self.syncer is not None:
            self.syncer.start()
        if self.flusher is not None and self.durability != "manual":
            self.flusher.start()
        if self.sweeper is not None:
            self.sweeper.start()

    async def _stop_tasks(self) -> None:
        for part in (self.sweeper, self.flusher if self.durability != "manual" else None):
            if part is not None:
                await part.stop()

    async def _release_after_failed_start(self, exc: BaseException) -> None:
        """Release what a failed start acquired (an S3 client); the next start opens it again."""
        if self.persistence is None:
            return
        try:
            await self.persistence.aclose()
        except Exception as close_exc:
            exc.add_note(f"releasing the persistence after the failed start also failed: {close_exc!r}")

    async def aclose(self) -> None:
        """Stop the tasks, flush, close the journal and the persistence; idempotent and safe to call concurrently.

        Raises:
            PersistenceError: the final flush failed: the store is open again (nothing lost, the flusher
                retries) and ``aclose()`` may be called again. An error closing the journal or the persistence
                after a successful flush leaves the store closed, and is raised.
        """
        if self.state in (NEW, CLOSED):
            self.state = CLOSED
            return
        if self.state == STARTING:
            await self.start()
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        assert self.loop is not None
        closing = self._closing = self.loop.create_future()
        try:
            await self._close()
        except BaseException as exc:
            closing.set_exception(exc)
            closing.exception()
            raise
        else:
            closing.set_result(None)
        finally:
            self._closing = None

    async def _close(self) -> None:
        self.state = CLOSING
        await self._stop_tasks()
        try:
            if self.flusher is not None:
                await self.flusher.flush()
        except BaseException:
            self.state = OPEN
            self._start_tasks_after_failed_close()
            raise
        errors: list[BaseException] = []
        for step in (self._close_journal, self._close_loader, self._close_persistence):
            try:
                await step()
            except Exception as exc:
                errors.append(exc)
        self.state = CLOSED
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise PersistenceError(f"closing failed: {errors!r}", cause=errors[0]) from errors[0]

    def _start_tasks_after_failed_close(self) -> None:
        if self.flusher is not None and self.durability != "manual":
            self.flusher.start()
        if self.sweeper is not None:
            self.sweeper.start()

    async def _close_journal(self) -> None:
        if self.syncer is not None:
            await self.syncer.stop()
        if self.journal is not None:
            self.kernel.journal = None
            await run_blocking(self.journal.close)

    async def _close_loader(self) -> None:
        if self.loader is not None:
            await self.loader.stop()

    async def _close_persistence(self) -> None:
        if self.persistence is not None:
            await self.persistence.aclose()

    # -- kernel calls ----------------------------------------------------------------------------------------

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one kernel transaction ``fn(kernel, *args, fetched)``, fetching what it needs until it completes."""
        kernel = self.kernel
        try:
            return fn(kernel, *args, frozenset())
        except NeedsLoad as first:
            needed = first.keys
        finally:
            kernel.deliver()
        fetched: frozenset[Key] = frozenset()
        pinned: list[str] = []
        try:
            while True:
                sids = [rid for collection, rid in needed if collection == SESSIONS]
                kernel.pin(sids)
                pinned.extend(sids)
                assert self.loader is not None, "only a store with a persistence can need a load"
                await self.loader.fetch(needed)
                fetched |= frozenset(needed)
                try:
                    return fn(kernel, *args, fetched)
                except NeedsLoad as again:
                    needed = again.keys
        finally:
            if pinned:
                kernel.unpin(pinned)
            kernel.deliver()

    async def write(self, sids: Sequence[str], fn: Callable[..., T], *args: Any) -> T:
        """A write: it waits for the read-modify-writes holding any of ``sids``' locks, then runs ``fn``."""
        if not any(sid in self.locks for sid in sids):
            return await self.call(fn, *args)
        held = await self.lock_all(sids)
        try:
            return await self.call(fn, *args)
        finally:
            self.unlock_all(held)

    async def lock_all(self, sids: Sequence[str]) -> list[tuple[str, SessionLock]]:
        """Take the locks of ``sids`` (in sorted order, so two bulk writes cannot deadlock)."""
        held: list[tuple[str, SessionLock]] = []
        try:
            for sid in sorted(set(sids)):
                entry = self.locks.get(sid)
                if entry is None:
                    entry = self.locks[sid] = SessionLock()
                entry.users += 1
                try:
                    await entry.lock.acquire()
                except BaseException:
                    self._release(sid, entry)
                    raise
                held.append((sid, entry))
        except BaseException:
            self.unlock_all(held)
            raise
        return held

    def unlock_all(self, held: list[tuple[str, SessionLock]]) -> None:
        """Release locks taken by :meth:`lock_all`."""
        for sid, entry in reversed(held):
            entry.lock.release()
            self._release(sid, entry)

    def _release(self, sid: str, entry: SessionLock) -> None:
        entry.users -= 1
        if entry.users == 0 and self.locks.get(sid) is entry:
            del self.locks[sid]

    async def after_write(self) -> None:
        """Make a finished write as durable as the policy asks before the call returns."""
        if self.syncer is not None:
            await self.syncer.wait()
        elif self.durability == "write" and self.flusher is not None:
            await self.flusher.until_persisted(self.kernel.seq)

    async def stored_keys(self, collection: str | None = None) -> list[Key]:
        """Every key in storage (of ``collection``) when the store is lazy, else nothing (memory has them all)."""
        if not self.kernel.lazy:
            return []
        return await self._stored_keys(collection)

    async def _stored_keys(self, collection: str | None = None) -> list[Key]:
        assert self.persistence is not None
        return await self.persistence.list_keys(collection)

