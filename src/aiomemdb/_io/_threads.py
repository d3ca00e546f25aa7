"""Where blocking file work runs: a worker thread, never the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

__all__ = ["run_blocking"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


async def run_blocking(fn: Callable[[*Ts], T], *args: *Ts) -> T:
    """Run ``fn(*args)`` in a worker thread and return its result."""
    return await asyncio.to_thread(fn, *args)
