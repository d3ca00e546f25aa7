"""The journal's fsync task: periodic (``journal_fsync > 0``) or group commit before writes return (``0``).

A failed fsync never kills the task and never vanishes: it is logged, reported through ``on_error`` (an event
and ``stats().last_error``), fails the writes waiting for that fsync with :class:`~aiomemdb.PersistenceError`,
wakes the flusher (a successful flush makes those writes durable in storage and releases the segment), and the
next round tries again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiomemdb._exceptions import PersistenceError
from aiomemdb._io._background import Background
from aiomemdb._io._journal import Journal
from aiomemdb._io._threads import run_blocking

__all__ = ["Syncer"]

logger = logging.getLogger("aiomemdb")


class Syncer(Background):
    """Owns the fsync task of one journal.

    Args:
        journal: the journal to fsync.
        interval: seconds between fsyncs; 0 fsyncs on demand, for the writes waiting in :meth:`wait`.
        on_error: called with the error when an fsync fails.
    """

    task_name = "aiomemdb-journal-fsync"

    def __init__(self, journal: Journal, *, interval: float, on_error: Callable[[BaseException], None]) -> None:
        super().__init__()
        self.journal = journal
        self.interval = interval
        self._on_error = on_error
        self._synced = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def wait(self) -> None:
        """With ``interval == 0``: return once everything appended so far is fsynced (else at once).

        Raises:
            PersistenceError: the fsync failed; the write is applied in memory and is written by the next flush.
        """
        if self.interval > 0:
            return
        target = self.journal.appended
        if target <= self._synced:
            return
        if self._task is None or self._task.done():
            # No task to do it (stopped by a close, or crashed, which the runtime reports): fsync here.
            await self._sync_once()
            if target > self._synced:
                raise PersistenceError(
                    "journal fsync failed; the write is applied in memory but not yet durable",
                    key=str(self.journal.directory),
                )
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        self._wake.set()
        await asyncio.shield(future)

    async def _run(self) -> None:
        try:
            while not self._stopping:
                if self.interval > 0:
                    try:
                        async with asyncio.timeout(self.interval):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
                else:
                    await self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    break
                await self._sync_once()
        except BaseException as exc:
            # A crash (reported by the runtime) must not leave writers waiting for an fsync nobody will run.
            self._fail_waiters(PersistenceError(f"journal fsync task failed: {exc!r}", cause=exc))
            raise

    def _fail_waiters(self, error: PersistenceError) -> None:
        waiters, self._waiters = self._waiters, []
        for _, future in waiters:
            if not future.done():
                future.set_exception(error)
                future.exception()  # a cancelled writer must not cause "exception never retrieved"

    async def _sync_once(self) -> None:
        try:
            covered = await run_blocking(self.journal.sync)
        except OSError as exc:
            logger.warning("aiomemdb: journal fsync failed (writes stay dirty until the next flush): %s", exc)
            self._on_error(exc)
            error = PersistenceError(
                f"journal fsync failed: {exc}; the write is applied in memory but not yet durable, "
                "and is written to storage by the next flush",
                key=str(self.journal.directory),
                cause=exc,
            )
            self._fail_waiters(error)
            return
        self._synced = max(self._synced, covered)
        still: list[tuple[int, asyncio.Future[None]]] = []
        for target, future in self._waiters:
            if target <= self._synced:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((target, future))
        self._waiters = still
        if still:
            self._wake.set()

    async def stop(self) -> None:
        """Stop the task (after any fsync in progress), then fsync once more for the waiters."""
        await self.stop_task()
        if self._waiters:
            await self._sync_once()
