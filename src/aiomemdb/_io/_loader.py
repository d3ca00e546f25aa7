"""Fetching single records from storage on demand: lazy misses and evicted payloads.

Single-flight: concurrent misses on one key share one fetch, and a caller that is cancelled does not cancel
the fetch the others wait for. Generation-checked: every fetch holds a :class:`~aiomemdb._kernel.LoadTicket`,
and the kernel installs its result only if the key was not written or deleted since the fetch began, so a
slow load can never bring back a deleted session or revert a newer write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiomemdb._exceptions import AiomemdbError, ClosedError, PersistenceError
from aiomemdb._kernel import Kernel, Key
from aiomemdb._kernel import _storage as storage
from aiomemdb.persistence._base import Persistence

__all__ = ["Loader"]


class Loader:
    """Owns the fetch tasks of one store."""

    def __init__(self, kernel: Kernel, persistence: Persistence) -> None:
        self._kernel = kernel
        self._persistence = persistence
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        self._stopped = False

    async def fetch(self, keys: Iterable[Key]) -> None:
        """Fetch ``keys`` (in parallel) into memory; raises the first failure.

        Raises:
            ClosedError: the store closed (and stopped its fetches) before this one ended.
        """
        if self._stopped:
            raise ClosedError("this AsyncInMemoryDb is closed")
        tasks = [self._task(key) for key in dict.fromkeys(keys)]
        # shield: a cancelled caller must not cancel a fetch that other callers are waiting for.
        try:
            if len(tasks) == 1:
                await asyncio.shield(tasks[0])
            else:
                await asyncio.shield(asyncio.gather(*tasks))
        except asyncio.CancelledError:
            this = asyncio.current_task()
            if self._stopped and (this is None or not this.cancelling()):
                # The fetch was cancelled by stop(), not this caller: the caller is told why, not cancelled.
                raise ClosedError("this AsyncInMemoryDb closed while the load was in flight") from None
            raise

    def _task(self, key: Key) -> asyncio.Task[None]:
        task = self._tasks.get(key)
        # A finished task whose done-callback has not run yet must not be reused: awaiting it would not yield,
        # and a caller retrying after a discarded (stale) load would spin without letting the callback run.
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._fetch_one(key), name="aiomemdb-load")
            self._tasks[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        return task

    def _done(self, key: Key, task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved: its callers got it; nobody else should be told it was lost

    async def _fetch_one(self, key: Key) -> None:
        ticket = storage.begin_load(self._kernel, key)
        if ticket is None:
            return
        try:
            try:
                doc = await self._persistence.load_one(*key)
            except AiomemdbError:
                raise
            except Exception as exc:
                where = f"{key[0]}/{key[1]}"
                raise PersistenceError(f"loading {where} failed: {exc!r}", key=where, cause=exc) from exc
            storage.finish_load(self._kernel, ticket, doc)
        finally:
            storage.end_load(self._kernel, ticket)

    async def stop(self) -> None:
        """Cancel fetches in flight and wait for them to end; their callers get ClosedError, as later ones do."""
        self._stopped = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)  # their errors went to their callers (and were retrieved in _done)
