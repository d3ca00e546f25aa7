"""What the store's background tasks share: started on the running loop, stopped by an event, never cancelled.

A task that is cancelled can be cut off inside a flush, an fsync or a sweep; these are asked to stop instead:
:meth:`Background.stop_task` sets ``_stopping``, wakes the task, and waits for it to end after the work in hand.
A crash is the supervisor's (the runtime's) to report, not raised here, so a close always goes on to its final
flush.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

__all__ = ["Background"]


class Background:
    """One named background task: ``_run`` waits on ``_wake`` and returns once ``_stopping`` is set."""

    task_name = "aiomemdb-task"

    def __init__(self) -> None:
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        """Start the task on the running loop (a stop's wake-up is cleared first, or the new task would spin)."""
        self._stopping = False
        self._wake.clear()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.task_name)
        return self._task

    async def stop_task(self) -> None:
        """Ask the task to stop and wait until it has (after the work it may be doing)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            task, self._task = self._task, None
            await asyncio.wait([task])

    async def pause(self, delay: float) -> bool:
        """Wait until woken or ``delay`` seconds have passed; False once asked to stop, else True (wake-up cleared)."""
        try:
            async with asyncio.timeout(delay):
                await self._wake.wait()
        except TimeoutError:
            pass
        if self._stopping:
            return False
        self._wake.clear()
        return True

    def _run(self) -> Coroutine[Any, Any, None]:
        raise NotImplementedError
