"""The async driver's lifecycle: one structured start and one shared, shielded close for the I/O parts.

:class:`Runtime` starts (load, journal replay, tasks) and stops (tasks, final flush, journal, loader,
persistence) the parts in one order, and supervises the background tasks: one that ends without having been
asked to (a crash) is logged, reported (``stats().last_error``, a ``task_failed`` event) and raised, with its
cause, by the next close, which still makes its final flush first. Running kernel calls is :class:`Calls`.

Close semantics (``aclose``):

- one close task, shared by every caller and shielded from them: a caller that is cancelled stops waiting, the
  close goes on, and every caller that waits sees its one outcome;
- the final flush is repeated until nothing is dirty, and then the kernel refuses writes (``ClosedError``), so
  a write that was waiting for a load or a lock either is in the final flush or fails: never acknowledged and
  lost;
- a failed final flush leaves the store open again, every task running, nothing lost; any later failure
  (journal, loader, persistence) leaves it closed, every step attempted, and is raised.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiomemdb._exceptions import AiomemdbError, ClosedError, PersistenceError
from aiomemdb._io._calls import Calls, SessionLock
from aiomemdb._io._flusher import Flusher
from aiomemdb._io._journal import Journal, has_segments
from aiomemdb._io._loader import Loader
from aiomemdb._io._sweeper import Sweeper
from aiomemdb._io._syncer import Syncer
from aiomemdb._io._threads import run_blocking
from aiomemdb._kernel import Drop, Kernel, parse_entry
from aiomemdb._kernel import _ops as ops
from aiomemdb._kernel import _storage as storage
from aiomemdb.persistence._base import Persistence

__all__ = ["Runtime", "SessionLock"]

logger = logging.getLogger("aiomemdb")
NEW, STARTING, OPEN, CLOSING, CLOSED = "new", "starting", "open", "closing", "closed"
_YIELD_EVERY = 256


class Runtime(Calls):
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
        self._closing: asyncio.Task[None] | None = None
        self._tasks: dict[asyncio.Task[None], str] = {}  # background tasks running, and what each is
        self.crashes: list[tuple[str, BaseException]] = []  # tasks that ended unasked, not yet raised by a close
        # The command line's read-only stores: replay the journal into memory, but never flush (not even at
        # close) nor truncate it. ``replayed`` counts the journal entries the start found.
        self.read_only = False
        self.replayed = 0

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
        journaling = self.durability == "journal" and not self.read_only
        if journaling or await run_blocking(has_segments, self._journal_dir):
            journal = Journal(self._journal_dir, read_only=self.read_only)
            replayed = self.replayed = await self._replay(journal)
            if self.read_only:
                return  # the journal's writes are in memory; storage and the journal stay as they are
            if journaling:
                await run_blocking(journal.hold_segments)  # a replayed segment removed later is restored too
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
        self.last_error = f"journal fsync failed: {exc!r}"
        self._emit("flush_failed", {"error": f"journal fsync: {exc!r}", "keys": len(self.kernel.dirty)})
        self._wake_flusher()

    def _start_tasks(self, *, syncer: bool = True) -> None:
        if syncer and self.syncer is not None:
            self._watch(self.syncer.start(), "journal fsync")
        if self.flusher is not None and self.durability != "manual":
            self._watch(self.flusher.start(), "flusher")
        if self.sweeper is not None:
            self._watch(self.sweeper.start(), "TTL sweeper")

    def _watch(self, task: asyncio.Task[None], name: str) -> None:
        self._tasks[task] = name
        task.add_done_callback(self._task_ended)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        name = self._tasks.pop(task, "task")
        if task.cancelled():
            exc: BaseException | None = asyncio.CancelledError(f"the {name} task was cancelled")
        else:
            exc = task.exception()
        if exc is None and self.state in (CLOSING, CLOSED):
            return  # stopped as asked
        if exc is None:
            exc = RuntimeError(f"the {name} task ended while the store was open")
        self.crashes.append((name, exc))
        self.last_error = f"background {name} task crashed: {exc!r}"
        if isinstance(exc, asyncio.CancelledError):
            # Most often the event loop ended (asyncio.run returned) before the store was closed.
            logger.error("aiomemdb: the background %s task was cancelled while the store was open", name)
        else:
            logger.error("aiomemdb: the background %s task crashed; aclose() will raise it", name, exc_info=exc)
        self._emit("task_failed", {"task": name, "error": repr(exc)})

    async def _stop_tasks(self) -> None:
        """Stop the flusher and the sweeper (never raises: a crash was recorded by :meth:`_task_ended`)."""
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
        """Stop the tasks, flush, close the journal, the loader and the persistence; idempotent, and one close is
        shared by concurrent callers (see the module docstring).

        Raises:
            PersistenceError: the final flush failed: the store is open again (nothing lost, the flusher
                retries) and ``aclose()`` may be called again.
            AiomemdbError: after a complete close, a background task had crashed (the cause is chained), or
                closing the journal or the persistence failed.
        """
        if self._closing is None:
            if self.state in (NEW, CLOSED):
                self.state = CLOSED
                return
            if self.state == STARTING:
                await self.start()
            if self._closing is None:
                assert self.loop is not None
                self._closing = self.loop.create_task(self._close(), name="aiomemdb-close")
                self._closing.add_done_callback(self._closed)
        # shield: a caller that is cancelled stops waiting; the close it shares with others goes on.
        await asyncio.shield(self._closing)

    def _closed(self, task: asyncio.Task[None]) -> None:
        if self._closing is task:
            self._closing = None
        if not task.cancelled():
            task.exception()  # its callers were told; if they were all cancelled, nobody else must be

    async def _close(self) -> None:
        self.state = CLOSING
        await self._stop_tasks()
        try:
            await self._final_flush()
        except BaseException as exc:
            self.state = OPEN
            self._start_tasks(syncer=False)  # the fsync task was never stopped
            if self.crashes:
                exc.add_note(f"background tasks had crashed: {self.crashes!r}")
            raise
        errors: list[BaseException] = []
        for step in (self._close_journal, self._close_loader, self._close_persistence):
            try:
                await step()
            except Exception as exc:
                errors.append(exc)
        self.state = CLOSED
        crashes, self.crashes = self.crashes, []
        if crashes:
            name, first = crashes[0]
            error = AiomemdbError(
                f"closed (final flush done), but the background {name} task had crashed: {first!r}"
                + (f"; and {len(crashes) - 1} more: {crashes[1:]!r}" if len(crashes) > 1 else "")
                + (f"; closing also failed: {errors!r}" if errors else "")
            )
            raise error from first
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise PersistenceError(f"closing failed: {errors!r}", cause=errors[0]) from errors[0]

    async def _final_flush(self) -> None:
        """Flush until nothing is dirty, then refuse writes: a write still in progress (waiting for a load or a
        lock) either lands before this returns, and so in storage, or fails with ClosedError."""
        kernel = self.kernel
        flusher = None if self.read_only else self.flusher
        while True:
            if flusher is not None:
                await flusher.flush()
            with kernel.lock:
                if not kernel.dirty or flusher is None:
                    kernel.closed = True
                    return

    async def _close_journal(self) -> None:
        if self.syncer is not None:
            await self.syncer.stop()
        if self.journal is not None:
            self.kernel.journal = None
            await run_blocking(self._retire_journal, self.journal)

    @staticmethod
    def _retire_journal(journal: Journal) -> None:
        """After a complete final flush nothing is dirty, so every journaled write is in storage, including
        those that were never dirty (a refresh, an adopted merge, which no flush rotates out): remove them all,
        or the next start would replay them."""
        try:
            journal.release(journal.rotate())
        finally:
            journal.close()

    async def _close_loader(self) -> None:
        if self.loader is not None:
            await self.loader.stop()

    async def _close_persistence(self) -> None:
        if self.persistence is not None:
            await self.persistence.aclose()

