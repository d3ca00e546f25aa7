"""The TTL sweeper: evicts payloads idle for longer than ``ttl``, in slices that yield to the loop."""

from __future__ import annotations

import asyncio

from aiomemdb._io._background import Background
from aiomemdb._kernel import Kernel

__all__ = ["Sweeper"]

_SLICE = 1024


class Sweeper(Background):
    """Owns the expiry task of one store; stopped by an event, never by cancellation."""

    task_name = "aiomemdb-expiry"

    def __init__(self, kernel: Kernel, ttl: float) -> None:
        super().__init__()
        self._kernel = kernel
        self.period = min(ttl / 2, 1.0)

    async def stop(self) -> None:
        """Stop the task, after the slice it may be sweeping."""
        await self.stop_task()

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
            if not await self.pause(self.period):
                return
            await self.sweep()
