"""Fault-injecting wrappers for the regression and model tests: persistences and journals that fail or wait.

Every wait is on an :class:`asyncio.Event` the test controls (never a sleep): a test arms a :class:`Gate`, lets
the store reach it (``await gate.entered.wait()``), does what must happen "meanwhile", then opens it.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiomemdb import AsyncInMemoryDb, DirectoryPersistence
from aiomemdb._io import _journal
from aiomemdb.persistence import Changeset, Key, Persistence, Snapshot


class Gate:
    """One pause point: ``entered`` is set when the store reaches it; it waits until ``release`` is set."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def pass_through(self) -> None:
        self.entered.set()
        await self.release.wait()


class Faulty:
    """A persistence that fails its next saves or loads on request, and pauses at armed gates.

    ``load_one`` reads from the inner persistence *before* pausing, as a slow GET returns what storage held
    when it was sent; ``save`` pauses before writing.
    """

    def __init__(self, inner: Persistence) -> None:
        self.inner = inner
        self.fail_saves = 0
        self.fail_loads = 0
        self.fail_close = 0
        self.load_gate: Gate | None = None  # the next load_one pauses here
        self.save_gate: Gate | None = None  # the next save pauses here
        self.saves = 0
        self.loads = 0
        self.closes = 0

    async def open(self) -> None:
        await self.inner.open()

    async def load(self) -> Snapshot:
        return await self.inner.load()

    async def load_one(self, collection: str, record_id: str) -> dict[str, Any] | None:
        self.loads += 1
        doc = await self.inner.load_one(collection, record_id)
        gate, self.load_gate = self.load_gate, None
        if gate is not None:
            await gate.pass_through()
        if self.fail_loads:
            self.fail_loads -= 1
            raise OSError("injected: storage unreadable")
        return doc

    async def list_keys(self, collection: str | None = None) -> list[Key]:
        return await self.inner.list_keys(collection)

    async def save(self, changeset: Changeset) -> Mapping[Key, dict[str, Any]] | None:
        gate, self.save_gate = self.save_gate, None
        if gate is not None:
            await gate.pass_through()
        if self.fail_saves:
            self.fail_saves -= 1
            raise OSError("injected: disk on fire")
        result = await self.inner.save(changeset)
        self.saves += 1
        return result

    async def aclose(self) -> None:
        self.closes += 1
        if self.fail_close:
            self.fail_close -= 1
            raise OSError("injected: close failed")
        await self.inner.aclose()

    @property
    def quarantined(self) -> Sequence[tuple[str, str]]:
        return self.inner.quarantined


def _enospc(fd: int, data: Any) -> int:
    raise OSError(errno.ENOSPC, "injected: no space left on device")


@contextmanager
def disk_full() -> Iterator[None]:
    """Every journal append fails with ENOSPC while inside the block (the journal's one write call)."""
    saved = _journal._write
    _journal._write = _enospc
    try:
        yield
    finally:
        _journal._write = saved


async def yield_many(n: int = 50) -> None:
    """Let every ready task run (no clock involved)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def two_closes_held_at_the_final_flush(
    root: Path,
) -> tuple[AsyncInMemoryDb, Faulty, Gate, asyncio.Task[None], asyncio.Task[None]]:
    """A store with one dirty session and two concurrent ``aclose()`` calls, the first held at its final save."""
    storage = Faulty(DirectoryPersistence(root, fsync=False))
    db = AsyncInMemoryDb(persistence=storage, durability="manual")
    await db.upsert_session({"session_id": "a"})
    gate = storage.save_gate = Gate()
    first = asyncio.create_task(db.aclose())
    await gate.entered.wait()
    second = asyncio.create_task(db.aclose())
    await yield_many()
    return db, storage, gate, first, second
