"""What a command shows while it works: a progress bar on stderr, and the worker pool that advances it.

:class:`Progress` draws only when stderr is a terminal, so pipes and logs stay clean; :func:`waiting` shows
elapsed time for a step that reports no progress of its own (a store's load, a listing); :func:`pool` runs
one coroutine per item with a bounded number in flight, advancing a bar as each finishes.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import IO, TypeVar

__all__ = ["Progress", "pool", "progress_text", "waiting"]

T = TypeVar("T")


def progress_text(label: str, done: int, total: int | None, elapsed: float, *, unit: str = "") -> str:
    """The text of one progress line: a bar with ``done/total`` when the total is known, else a count so far.

    >>> progress_text("reading", 120, 1000, 1.25, unit="objects")
    'reading [###                           ] 120/1000 objects 1.2s'
    >>> progress_text("listing", 0, None, 0.5)
    'listing... 0.5s'
    """
    counted = f" {unit}" if unit else ""
    if total:
        share = min(1.0, done / total)
        return f"{label} [{'#' * int(share * 30):<30}] {done}/{total}{counted} {elapsed:.1f}s"
    if done:
        return f"{label}... {done}{counted} {elapsed:.1f}s"
    return f"{label}... {elapsed:.1f}s"


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal (never in pipes or logs)."""

    def __init__(self, label: str, total: int | None = None, *, unit: str = "", stream: IO[str] | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.enabled = self.stream.isatty()
        self.label, self.total, self.unit, self.done = label, total, unit, 0
        self._started = time.monotonic()
        self._drawn = 0.0

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more items done; redraws at most ten times a second (and at the end)."""
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._drawn >= 0.1 or self.done == self.total):
            self._drawn = now
            text = progress_text(self.label, self.done, self.total, now - self._started, unit=self.unit)
            self.stream.write(f"\r{text}\x1b[K")
            self.stream.flush()

    def close(self) -> None:
        """Erase the bar, leaving the line to the command's own report."""
        if self.enabled and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


async def waiting(label: str, work: Awaitable[T]) -> T:
    """Await ``work`` with an elapsed-time indicator (for steps that report no progress of their own)."""
    progress = Progress(label)
    if not progress.enabled:
        return await work

    async def tick() -> None:
        while True:
            progress.advance(0)
            await asyncio.sleep(0.1)

    ticker = asyncio.create_task(tick())
    try:
        return await work
    finally:
        ticker.cancel()
        progress.close()


async def pool(fn: Callable[[T], Awaitable[None]], items: Sequence[T], workers: int, progress: Progress) -> None:
    """Run ``fn`` over ``items`` with at most ``workers`` in flight; the first failure cancels the rest."""
    queue = iter(items)

    async def worker() -> None:
        for item in queue:  # one shared iterator: each item is taken by exactly one worker
            await fn(item)
            progress.advance()

    failure: BaseException | None = None
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(workers, len(items))):
                group.create_task(worker())
    except ExceptionGroup as eg:
        failure = eg.exceptions[0]
    finally:
        progress.close()
    if failure is not None:
        raise failure
