"""What is in memory: on-demand loads (``lazy=True``), bounded memory, eviction and expiry.

An evicted session keeps its indexed fields (id, owner, component ids, timestamps, version) so that listings
stay complete; only its payload (the bytes of its head and runs) is dropped, and it is read back from
persistence, single-flight, the next time it is needed. Only *clean* sessions are evicted: not dirty, not
being flushed, not locked by a read-modify-write and not pinned by a read in progress. When only dirty
sessions stand in the way, the background flusher is asked to flush now, and eviction runs again after it.

``ttl`` evicts sessions idle (neither read nor written) for that many seconds; the sweep runs in slices that
yield to the loop, so it never blocks other tasks for more than about a millisecond.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from itertools import islice
from typing import TypeVar

from aiomemdb._codec import SESSIONS
from aiomemdb._exceptions import CorruptDataError
from aiomemdb._record import SessionRecord, encode_record, record_owner
from aiomemdb._store import StoreBase
from aiomemdb.persistence._base import Key

__all__ = ["MemoryMixin"]

T = TypeVar("T")
_SWEEP_SLICE = 1024


class MemoryMixin(StoreBase):
    """Lazy loading, pinning, LRU eviction and TTL expiry of sessions."""

    _lazy: bool
    _max_sessions: int | None
    _max_bytes: int | None
    _ttl: float | None
    _lazy_tasks: dict[Key, asyncio.Task[None]]

    # -- reading with reloads --------------------------------------------------------------------------------

    async def _read(self, sid: str, fn: Callable[[SessionRecord], T]) -> T | None:
        """Apply ``fn`` to the session's record once its payload is in memory; None if there is no session."""
        rec = self._sessions.get(sid)
        if rec is None and self._lazy:
            await self._load_lazily(SESSIONS, sid)
            rec = self._sessions.get(sid)
        if rec is None:
            return None
        if rec.resident:
            self._touch(sid)
            return fn(rec)
        self._pins[sid] = self._pins.get(sid, 0) + 1
        try:
            await self._load_lazily(SESSIONS, sid)
            rec = self._sessions.get(sid)
            if rec is None or not rec.resident:
                return None
            self._touch(sid)
            return fn(rec)
        finally:
            self._unpin(sid)

    async def _read_many(self, recs: list[SessionRecord], fn: Callable[[SessionRecord], T]) -> list[T]:
        """Apply ``fn`` to each record, reloading evicted ones first (in parallel); vanished ones are skipped.

        The whole page is pinned while evicted members reload, so reloading one cannot evict another; the
        memory bound may be exceeded by one page meanwhile, and is restored when the pins go.
        """
        if all(r.resident for r in recs):
            for rec in recs:
                self._touch(rec.session_id)
            return [fn(r) for r in recs]
        sids = [r.session_id for r in recs]
        for sid in sids:
            self._pins[sid] = self._pins.get(sid, 0) + 1
        try:
            await asyncio.gather(*(self._load_lazily(SESSIONS, r.session_id) for r in recs if not r.resident))
            out: list[T] = []
            for sid in sids:
                current = self._sessions.get(sid)
                if current is not None and current.resident:
                    self._touch(sid)
                    out.append(fn(current))
            return out
        finally:
            for sid in sids:
                self._unpin(sid)

    async def _ensure_loaded(self, sid: str) -> None:
        if sid not in self._sessions and self._lazy:
            await self._load_lazily(SESSIONS, sid)

    async def _make_resident(self, rec: SessionRecord) -> None:
        if not rec.resident:
            await self._load_lazily(SESSIONS, rec.session_id)

    def _touch(self, sid: str) -> None:
        if self._bounded and sid in self._lru:
            del self._lru[sid]
            self._lru[sid] = time.monotonic()

    def _unpin(self, sid: str) -> None:
        count = self._pins[sid] - 1
        if count:
            self._pins[sid] = count
        else:
            del self._pins[sid]
            self._evict_blocked = False
            self._after_commit()

    # -- single-flight fetches -------------------------------------------------------------------------------

    async def _load_lazily(self, collection: str, rid: str) -> None:
        """Fetch one record from persistence; concurrent misses on one key share one fetch."""
        if self._persistence is None:
            return
        key = (collection, rid)
        task = self._lazy_tasks.get(key)
        if task is None:
            assert self._loop is not None
            task = self._loop.create_task(self._fetch_one(key))
            self._lazy_tasks[key] = task
            task.add_done_callback(lambda t: self._lazy_done(key, t))
        # shield: a cancelled caller must not cancel the fetch the others are waiting for.
        await asyncio.shield(task)

    def _lazy_done(self, key: Key, task: asyncio.Task[None]) -> None:
        if self._lazy_tasks.get(key) is task:
            del self._lazy_tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved here so an unawaited failure is not reported as "never retrieved"

    def _authoritative(self, key: Key) -> bool:
        """Memory wins for anything written, deleted or being flushed since the last flush."""
        return key in self._dirty or key in self._in_flight

    async def _fetch_one(self, key: Key) -> None:
        assert self._persistence is not None
        collection, rid = key
        if collection != SESSIONS:
            doc = await self._persistence.load_one(collection, rid)
            table = self._collections.setdefault(collection, {})
            if doc is None or rid in table or self._authoritative(key):
                return
            table[rid] = (encode_record(doc, what=f"{collection}/{rid}"), record_owner(doc), self._next_seq())
            self._lazy_loads += 1
            self._emit("lazy_load", collection=collection, id=rid)
            return
        current = self._sessions.get(rid)
        if (current is not None and current.resident) or self._authoritative(key):
            return
        doc = await self._persistence.load_one(collection, rid)
        current = self._sessions.get(rid)
        if (current is not None and current.resident) or self._authoritative(key):
            return
        if doc is None:
            if current is not None:  # evicted here, deleted in storage (by another replica)
                self._forget(rid, current)
            return
        where = f"{collection}/{rid}"
        loaded = SessionRecord.from_stored(doc, seq=self._next_seq(), key=where)
        if current is not None and loaded.version == current.version:
            current.refill(loaded)
            self._resident_bytes += current.size
            if self._bounded:
                self._lru[rid] = time.monotonic()
        else:
            if loaded.session_id != rid:
                raise CorruptDataError(f"{where}: contains session_id {loaded.session_id!r}", key=where)
            self._install_session(rid, loaded)
        self._lazy_loads += 1
        self._emit("lazy_load", collection=collection, id=rid)
        self._after_commit()

    def _forget(self, sid: str, rec: SessionRecord) -> None:
        """Drop a session from memory without deleting it from storage (it is already gone there)."""
        del self._sessions[sid]
        self._index.remove(rec)
        self._lru.pop(sid, None)
        self._resident_bytes -= rec.size

    # -- eviction --------------------------------------------------------------------------------------------

    def _over(self, sessions: int, nbytes: int) -> bool:
        return (self._max_sessions is not None and sessions > self._max_sessions) or (
            self._max_bytes is not None and nbytes > self._max_bytes
        )

    def _evictable(self, sid: str) -> bool:
        return (
            (SESSIONS, sid) not in self._dirty
            and (SESSIONS, sid) not in self._in_flight
            and sid not in self._locks
            and sid not in self._pins
        )

    def _after_commit(self) -> None:
        if not self._bounded or self._evict_blocked or not self._over(len(self._lru), self._resident_bytes):
            return
        sessions, nbytes = len(self._lru), self._resident_bytes
        victims: list[SessionRecord] = []
        blocked = False
        for sid in self._lru:
            if not self._over(sessions, nbytes):
                break
            if not self._evictable(sid):
                blocked = blocked or (SESSIONS, sid) in self._dirty
                continue
            rec = self._sessions[sid]
            victims.append(rec)
            sessions -= 1
            nbytes -= rec.size
        for rec in victims:
            self._evict(rec, "evict")
        if self._over(len(self._lru), self._resident_bytes):
            self._evict_blocked = True  # until a flush, unpin or unlock frees something
            if blocked:
                self._flush_soon()

    def _evict(self, rec: SessionRecord, kind: str) -> None:
        sid = rec.session_id
        self._resident_bytes -= rec.size
        rec.evict()
        del self._lru[sid]
        if kind == "expire":
            self._expirations += 1
            self._emit("expire", collection=SESSIONS, id=sid)
        else:
            self._evictions += 1
            self._emit("evict", collection=SESSIONS, id=sid)

    async def _sweep_forever(self) -> None:
        assert self._ttl is not None
        while True:
            await asyncio.sleep(min(self._ttl / 2, 1.0))
            await self._sweep_once()

    async def _sweep_once(self) -> int:
        """Evict sessions idle for longer than ``ttl``, in slices that yield to the loop; returns the count."""
        assert self._ttl is not None
        total = 0
        blocked = False
        while True:
            deadline = time.monotonic() - self._ttl
            window = list(islice(self._lru.items(), _SWEEP_SLICE))
            victims: list[SessionRecord] = []
            reached_fresh = False
            for sid, last_used in window:
                if last_used > deadline:
                    reached_fresh = True
                    break
                if self._evictable(sid):
                    victims.append(self._sessions[sid])
                else:
                    blocked = blocked or (SESSIONS, sid) in self._dirty
            for rec in victims:
                self._evict(rec, "expire")
            total += len(victims)
            if reached_fresh or len(window) < _SWEEP_SLICE or not victims:
                break
            await asyncio.sleep(0)
        if blocked:
            self._flush_soon()
        return total
