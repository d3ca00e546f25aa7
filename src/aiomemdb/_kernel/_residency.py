"""Which session payloads are in memory: the LRU, pins, the memory bound, and the choice of what to evict.

Nothing here changes a record by itself: :meth:`Residency.victims` only *chooses* (least recently used first,
skipping what is not evictable) and the kernel evicts, so the rule "only clean, unpinned sessions leave memory"
is checked in one place, :meth:`aiomemdb._kernel.Kernel._evictable`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from itertools import islice

__all__ = ["Residency"]


class Residency:
    """The LRU of resident sessions, their encoded size, and the pins that keep a payload in memory.

    Args:
        max_sessions: the most resident payloads, or None.
        max_bytes: the most resident encoded bytes, or None.
        ttl: seconds a payload may stay idle, or None.
    """

    def __init__(self, *, max_sessions: int | None, max_bytes: int | None, ttl: float | None) -> None:
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.bounded = max_sessions is not None or max_bytes is not None or ttl is not None
        self.lru: dict[str, float] = {}  # session id -> last access (monotonic), least recent first
        self.bytes = 0
        self.pins: dict[str, int] = {}
        # Set when the last eviction pass found only unevictable sessions; cleared by anything that may make one
        # evictable (a flush, an unpin), so a blocked store does not rescan the whole LRU on every write.
        self.blocked = False

    def touch(self, sid: str) -> None:
        """Mark a resident session as just used."""
        if self.bounded:
            self.lru.pop(sid, None)
            self.lru[sid] = time.monotonic()

    def forget(self, sid: str) -> None:
        """The session's payload left memory (evicted, deleted or dropped)."""
        self.lru.pop(sid, None)

    def pin(self, sids: Iterable[str]) -> None:
        """Keep these sessions' payloads in memory until :meth:`unpin` (counted)."""
        pins = self.pins
        for sid in sids:
            pins[sid] = pins.get(sid, 0) + 1

    def unpin(self, sids: Iterable[str]) -> None:
        """Release pins taken by :meth:`pin`."""
        pins = self.pins
        for sid in sids:
            count = pins[sid] - 1
            if count:
                pins[sid] = count
            else:
                del pins[sid]
                if sid in self.lru:
                    self.blocked = False  # a resident payload may have become evictable

    def over(self, sessions: int | None = None, nbytes: int | None = None) -> bool:
        """True if the given (default: current) residency exceeds a bound."""
        sessions = len(self.lru) if sessions is None else sessions
        nbytes = self.bytes if nbytes is None else nbytes
        return (self.max_sessions is not None and sessions > self.max_sessions) or (
            self.max_bytes is not None and nbytes > self.max_bytes
        )

    def victims(
        self, evictable: Callable[[str], bool], dirty: Callable[[str], bool], size: Callable[[str], int]
    ) -> tuple[list[str], bool]:
        """The least recently used evictable sessions whose eviction brings memory under the bounds.

        Returns ``(victims, flush)``; ``flush`` means the bounds cannot be met because dirty payloads are in
        the way, so a flush would help. Until something may become evictable again (:attr:`blocked` is
        cleared), later calls return at once instead of rescanning.
        """
        if not self.bounded or self.blocked or not self.over():
            return [], False
        sessions, nbytes = len(self.lru), self.bytes
        chosen: list[str] = []
        flush = False
        for sid in self.lru:
            if not self.over(sessions, nbytes):
                break
            if evictable(sid):
                chosen.append(sid)
                sessions -= 1
                nbytes -= size(sid)
            elif dirty(sid):
                flush = True
        if self.over(sessions, nbytes):
            self.blocked = True
            return chosen, flush
        return chosen, False

    def idle(self, limit: int) -> tuple[list[str], bool]:
        """Up to ``limit`` sessions idle for longer than ``ttl`` (oldest first), and whether more may follow."""
        if self.ttl is None:
            return [], False
        deadline = time.monotonic() - self.ttl
        out: list[str] = []
        for sid, last_used in islice(self.lru.items(), limit):
            if last_used > deadline:
                return out, False
            out.append(sid)
        return out, len(out) == limit
