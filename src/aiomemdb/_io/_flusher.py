"""Getting changes to storage: one flush at a time, and the background task that flushes every interval.

Flow of a flush, under the flush lock::

    kernel.begin_flush (take the dirty set, rotate the journal) ─ kernel.encode, a slice at a time ─ save
        ok:   kernel.finish_flush (adopt merges, record what is persisted) ─ release the journal segment
        fail: kernel.fail_flush (the keys are dirty again) ─ PersistenceError; the task backs off and retries

A save in flight is never abandoned: its worker threads or requests would land after a newer flush and
overwrite it. A cancelled caller waits for the save to end, then is cancelled. The background task is stopped
by an event, never by cancellation (Python 3.11's ``wait_for`` can swallow a cancellation).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from aiomemdb._exceptions import AiomemdbError, PersistenceError
from aiomemdb._io._background import Background
from aiomemdb._io._journal import Journal
from aiomemdb._io._threads import run_blocking
from aiomemdb._kernel import FlushTicket, Kernel, Key
from aiomemdb._kernel import _storage as storage
from aiomemdb._stats import FlushReport
from aiomemdb.persistence._base import Changeset, Persistence

__all__ = ["Flusher"]

logger = logging.getLogger("aiomemdb")
_SLICE = 256  # keys encoded per critical section; the loop runs other tasks in between


class Flusher(Background):
    """Owns flushing for one store.

    Args:
        kernel: the state to flush.
        persistence: where to.
        emit: the store's event callback.
        interval: seconds between background flushes.
        max_backoff: the longest pause between retries of a failing background flush.
    """

    task_name = "aiomemdb-flusher"

    def __init__(
        self,
        kernel: Kernel,
        persistence: Persistence,
        *,
        emit: Callable[[str, dict[str, Any]], None],
        interval: float,
        max_backoff: float,
    ) -> None:
        super().__init__()
        self._kernel = kernel
        self._persistence = persistence
        self._emit = emit
        self.interval = interval
        self.max_backoff = max_backoff
        self.journal: Journal | None = None  # set when the kernel journals (its segments are released here)
        self._lock = asyncio.Lock()
        self.flushes = 0
        self.failures = 0
        self.last_duration: float | None = None
        self.last_at: float | None = None
        self.last_error: str | None = None

    # -- one flush -----------------------------------------------------------------------------------------

    async def flush(self) -> FlushReport:
        """Write every change since the last successful flush.

        Raises:
            PersistenceError: storage failed; every change stays dirty.
            ConflictError: another replica conflicted under ``on_conflict="raise"``.
        """
        async with self._lock:
            return await self._flush_locked()

    async def _flush_locked(self) -> FlushReport:
        started = time.perf_counter()
        ticket = storage.begin_flush(self._kernel)
        if ticket is None:
            return FlushReport()
        work = asyncio.ensure_future(self._encode_and_save(ticket))
        cancelled = False
        while not work.done():
            try:
                await asyncio.wait([work])
            except asyncio.CancelledError:
                cancelled = True
        exc = asyncio.CancelledError() if work.cancelled() else work.exception()
        if exc is not None:
            storage.fail_flush(self._kernel, ticket)
            self.failures += 1
            self.last_error = repr(exc)
            self._emit("flush_failed", {"error": repr(exc), "keys": len(ticket.keys)})
            if cancelled:
                raise asyncio.CancelledError()
            if isinstance(exc, AiomemdbError) or not isinstance(exc, Exception):
                raise exc
            raise PersistenceError(f"flush failed: {exc!r}", cause=exc) from exc
        changeset, merged, versions = work.result()
        adopted = storage.finish_flush(self._kernel, ticket, merged, versions)
        if self.journal is not None and ticket.segment is not None:
            try:
                await run_blocking(self.journal.release, ticket.segment)
            except PersistenceError as release_exc:
                # The flush itself succeeded; a leftover segment is replayed harmlessly at the next start.
                logger.warning("aiomemdb: %s", release_exc)
        duration = time.perf_counter() - started
        self.flushes += 1
        self.last_duration = duration
        self.last_at = time.time()
        self.last_error = None
        report = FlushReport(
            upserts=len(changeset.upserts),
            deletes=len(changeset.deletes),
            bytes=changeset.nbytes,
            duration=duration,
            merged=adopted,
        )
        logger.debug("aiomemdb: flushed %s", report)
        self._emit(
            "flush", {"upserts": report.upserts, "deletes": report.deletes, "bytes": report.bytes, "duration": duration}
        )
        if cancelled:
            raise asyncio.CancelledError()
        return report

    async def _encode_and_save(self, ticket: FlushTicket) -> tuple[Changeset, Any, dict[Key, int]]:
        upserts: dict[Key, bytes] = {}
        deletes: set[Key] = set()
        versions: dict[Key, int] = {}
        keys = ticket.keys
        for start in range(0, len(keys), _SLICE):
            if start:
                # A key changed after it was encoded here is dirty again, so yielding cannot lose a write.
                await asyncio.sleep(0)
            up, gone, ver = storage.encode(self._kernel, keys[start : start + _SLICE])
            upserts.update(up)
            deletes.update(gone)
            versions.update(ver)
        changeset = Changeset(upserts=upserts, deletes=frozenset(deletes))
        return changeset, await self._persistence.save(changeset), versions

    async def until_persisted(self, seq: int) -> None:
        """Flush until every write up to ``seq`` is in storage (``durability="write"``; writers share flushes)."""
        while self._kernel.persisted_seq < seq:
            await self.flush()

    # -- the background task ---------------------------------------------------------------------------------

    def wake(self) -> None:
        """Ask the background task to flush now (eviction is blocked by dirty sessions)."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop the background task, after the flush it may be running; a crash is reported by the supervisor
        (the runtime), not raised here, so a close always goes on to its final flush."""
        await self.stop_task()

    @property
    def lock(self) -> asyncio.Lock:
        """Held while a flush runs: whoever holds it knows no flush is in progress (``refresh``)."""
        return self._lock

    async def _run(self) -> None:
        failures = 0
        while True:
            if failures:
                delay = min(self.max_backoff, self.interval * 2**failures)
                delay = random.uniform(delay / 2, delay)
            else:
                delay = self.interval
            if not await self.pause(delay):
                return
            try:
                await self.flush()
            except Exception as exc:
                failures = min(failures + 1, 30)
                logger.warning("aiomemdb: background flush failed (attempt %d), will retry: %s", failures, exc)
            else:
                failures = 0
