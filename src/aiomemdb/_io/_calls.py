"""How the async driver runs kernel transactions: fetch what the kernel needs, retry; per-session locks.

:meth:`Calls.call` runs one kernel transaction: when the kernel raises :class:`~aiomemdb._kernel.NeedsLoad`,
it pins the sessions, fetches them through the loader and tries again. Per-session locks exist only while a
read-modify-write spans an await (``update_session``); a plain write waits for one only when it exists.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from aiomemdb._codec import SESSIONS
from aiomemdb._io._flusher import Flusher
from aiomemdb._io._loader import Loader
from aiomemdb._io._syncer import Syncer
from aiomemdb._kernel import Kernel, Key, NeedsLoad
from aiomemdb.persistence._base import Persistence

__all__ = ["Calls", "SessionLock"]

T = TypeVar("T")


class SessionLock:
    """A per-session lock and the number of tasks holding or waiting for it."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class Calls:
    """The kernel-call half of :class:`~aiomemdb._io._runtime.Runtime` (which sets these attributes)."""

    kernel: Kernel
    persistence: Persistence | None
    durability: str
    loader: Loader | None
    flusher: Flusher | None
    syncer: Syncer | None
    locks: dict[str, SessionLock]

    # -- kernel calls ------------------------------------------------------------------------------------------

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


    def flushes_excluded(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """While held, no flush runs: ``refresh`` reads storage and replaces memory without a flush in between
        (one in progress would write the discarded local version over what memory now holds)."""
        if self.flusher is None:
            return contextlib.nullcontext()
        return self.flusher.lock
