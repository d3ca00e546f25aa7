"""The TTL sweeper: evicts payloads idle for longer than ``ttl``, in slices that yield to the loop."""

from __future__ import annotations

import asyncio

from aiomemdb._kernel import Kernel

__all__ = ["Sweeper"]

_SLICE = 1024


class Sweeper:
    """Owns the expiry task of one store; stopped by an event, never by cancellation."""

    def __init__(self, kernel: Kernel, ttl: float) -> None:
        self._kernel = kernel
        self.period = min(ttl / 2, 1.0)
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        """Start the task on the running loop (a stop's wake-up is cleared, or the new task would spin)."""
        self._stopping = False
        self._wake.clear()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="aiomemdb-expiry")
        return self._task

    async def stop(self) -> None:
        """Stop the task, after the slice it may be sweeping; a crash is the supervisor's to report, not raised."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            task, self._task = self._task, None
            await asyncio.wait([task])

    async def sweep(self) -> int:
        """Evict every payload idle for longer than ``ttl``; returns how many."""
        total = 0
        while True:
            count, more = self._kernel.expire_some(_SLICE)
            total += count
            if not more or self._stopping:
                return total
            await asyncio.sleep(0)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                async with asyncio.timeout(self.period):
                    await self._wake.wait()
            except TimeoutError:
                pass
            if self._stopping:
                return
            self._wake.clear()
            await self.sweep()
