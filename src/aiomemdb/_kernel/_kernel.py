"""The kernel: every piece of the store's state, and the one path that changes it. Synchronous, no I/O.

The h11 pattern: the kernel never waits and never touches a file or a socket. A driver (``_async.py``) calls
it, and when the kernel needs something from storage it says so by raising :class:`NeedsLoad`; the driver
fetches (through :mod:`aiomemdb._io`), hands the result back with :meth:`Kernel.finish_load`, and retries.

Every write goes through :meth:`Kernel._commit`, in this order, under one short lock:

1. plan: validate and encode, decide the effects (nothing has changed yet; any error leaves the store as it was);
2. journal: append the effects' one line to the journal, if there is one (a failure raises: nothing changed);
3. apply: records, indexes, the caller's ``storage_dict``;
4. dirty: mark the keys for the next flush and invalidate loads in flight for them (a load that began before
   this write can never be installed over it);
5. residency: evict least-recently-used clean, unpinned payloads if a bound is exceeded.

The result a caller gets back is built inside the same critical section, before anything can evict it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any, Protocol, TypeVar

from aiomemdb._codec import SESSIONS
from aiomemdb._exceptions import ClosedError, ConflictError, NotFoundError, OwnershipError, ValidationError
from aiomemdb._index import SessionIndex
from aiomemdb._kernel._effects import Blob, Drop, Effect, SetRecord, SetRun, SetSession, journal_line
from aiomemdb._kernel._query import Query, select
from aiomemdb._kernel._residency import Residency
from aiomemdb._record import SessionRecord

__all__ = ["CommitGuard", "FlushTicket", "JournalSink", "Kernel", "LoadTicket", "NeedsLoad"]

Key = tuple[str, str]
EventSink = Callable[[str, dict[str, Any]], None]
T = TypeVar("T")


class NeedsLoad(Exception):
    """The operation needs these keys from storage first (lazy misses, evicted payloads)."""

    def __init__(self, keys: Sequence[Key]) -> None:
        super().__init__(keys)
        self.keys = tuple(keys)


class JournalSink(Protocol):
    """What the kernel needs from a journal: append one line (or raise), and start a new segment."""

    def append(self, line: bytes) -> None: ...

    def rotate(self) -> int: ...


class CommitGuard(Protocol):
    """Set by a driver whose callers can be interrupted mid-commit (the sync driver: Ctrl-C on the main thread)."""

    def enter(self) -> bool: ...

    def exit(self) -> None: ...


class LoadTicket:
    """One fetch of one key from storage; ``stale`` once the key was written or deleted meanwhile."""

    __slots__ = ("key", "stale")

    def __init__(self, key: Key) -> None:
        self.key = key
        self.stale = False


class FlushTicket:
    """The keys one flush took, the write sequence it covers, and the journal segment it makes obsolete."""

    __slots__ = ("covered", "keys", "segment")

    def __init__(self, keys: list[Key], covered: int, segment: int | None) -> None:
        self.keys, self.covered, self.segment = keys, covered, segment


class Kernel:
    """All state of one store: sessions, indexes, collections, the dirty set, loads in flight, residency.

    Args:
        lazy: storage may hold keys memory has never seen (a miss must be fetched, not reported absent).
        persistent: there is a persistence to flush to (else nothing is ever marked dirty).
        mirror: the caller's ``storage_dict``, kept equal to the sessions.
        clock: unix seconds.
        residency: the memory bounds.
        on_event: called with ``(kind, data)`` after the lock is released.
        wake_flusher: called (under the lock; it must only signal) when dirty payloads block eviction.
    """

    def __init__(
        self,
        *,
        lazy: bool,
        persistent: bool,
        mirror: MutableMapping[str, Any] | None,
        clock: Callable[[], float],
        residency: Residency,
        on_event: EventSink,
        wake_flusher: Callable[[], None],
    ) -> None:
        self.lock = threading.Lock()
        self.lazy = lazy
        self.persistent = persistent
        self.mirror = mirror
        self.clock = clock
        self.res = residency
        self.on_event = on_event
        self.wake_flusher = wake_flusher
        self.journal: JournalSink | None = None
        self.guard: CommitGuard | None = None  # entered around every commit (see CommitGuard)
        # Set by a close once its final flush has covered every write: a write still in progress then (it was
        # waiting for a load or a lock) fails with ClosedError instead of landing after the last flush.
        self.closed = False

        self.sessions: dict[str, SessionRecord] = {}
        self.index = SessionIndex(self.sessions)
        self.collections: dict[str, dict[str, Blob]] = {}
        self.dirty: dict[Key, None] = {}  # insertion-ordered set: first dirtied, first flushed
        self.in_flight: set[Key] = set()
        self.loading: dict[Key, LoadTicket] = {}
        # Write sequence: nanoseconds since the epoch, made strictly increasing. It orders writes within one
        # second (also across restarts: it is stored with each object) and tells what a flush covered.
        self.seq = 0
        self.persisted_seq = 0
        self.counts = dict.fromkeys(("loads", "lazy_loads", "merged", "evictions", "expirations"), 0)
        self._events: list[tuple[str, dict[str, Any]]] = []

    # -- small helpers (lock held) ---------------------------------------------------------------------------

    def next_seq(self) -> int:
        self.seq = max(self.seq + 1, time.time_ns())
        return self.seq

    def event(self, kind: str, **data: Any) -> None:
        self._events.append((kind, data))

    def deliver(self) -> None:
        """Hand queued events to ``on_event``; call after releasing the lock."""
        while self._events:
            with self.lock:
                events, self._events = self._events, []
            for kind, data in events:
                self.on_event(kind, data)

    def unflushed(self) -> int:
        """How many keys storage does not hold yet: dirty ones and those a flush in progress has taken."""
        return len(self.in_flight.union(self.dirty))

    def authoritative(self, key: Key) -> bool:
        """Memory wins for what was written or deleted since the last flush (and what is being flushed)."""
        return key in self.dirty or key in self.in_flight

    def session(self, sid: str, fetched: frozenset[Key], *, payload: bool) -> SessionRecord | None:
        """The session, or None if it does not exist; raises NeedsLoad if storage must be asked first."""
        rec = self.sessions.get(sid)
        if rec is None:
            key = (SESSIONS, sid)
            if self.lazy and key not in fetched and not self.authoritative(key):
                raise NeedsLoad([key])
            return None
        if payload and not rec.resident:
            raise NeedsLoad([(SESSIONS, sid)])
        return rec

    def visible(self, sid: str, user_id: str | None, fetched: frozenset[Key], *, payload: bool) -> SessionRecord | None:
        """The session if it exists and ``user_id`` (when given) owns it."""
        if user_id is not None:
            rec = self.sessions.get(sid)
            if rec is not None and rec.user_id != user_id:
                return None
        rec = self.session(sid, fetched, payload=payload)
        if rec is None or (user_id is not None and rec.user_id != user_id):
            return None
        return rec

    def record(self, collection: str, rid: str, fetched: frozenset[Key]) -> Blob | None:
        """A collection record, or None; raises NeedsLoad on a lazy miss."""
        blob = self.collections.get(collection, {}).get(rid)
        key = (collection, rid)
        if blob is None and self.lazy and key not in fetched and not self.authoritative(key):
            raise NeedsLoad([key])
        return blob

    # -- the commit path -------------------------------------------------------------------------------------

    def commit(self, effects: list[Effect], *, journal: bool = True, dirty: bool = True) -> None:
        """Journal, apply, mark dirty and settle residency (the lock must be held; see the module docstring).

        ``journal=False`` for replayed entries (already in the journal); ``dirty=False`` for what storage
        itself holds (a refresh, an adopted merge).
        """
        if not effects:
            return
        if self.closed:
            raise ClosedError("the store is closed")
        guarded = self.guard is not None and self.guard.enter()
        try:
            if journal and self.journal is not None:
                self.journal.append(journal_line(effects))  # raises PersistenceError: nothing has changed
            for effect in effects:
                for key in self._apply(effect):
                    ticket = self.loading.get(key)
                    if ticket is not None:
                        ticket.stale = True
                    if dirty and self.persistent:
                        self.dirty[key] = None
            self.settle()
        finally:
            if guarded:
                self.guard.exit()  # type: ignore[union-attr]

    def _apply(self, effect: Effect) -> Iterable[Key]:
        if isinstance(effect, SetSession):
            self.set_session(effect.sid, effect.rec)
            return ((SESSIONS, effect.sid),)
        if isinstance(effect, SetRun):
            rec = self.sessions[effect.sid]
            before = rec.size
            if effect.raw is None:
                rec.remove_run(effect.run_id)
            else:
                rec.put_run(effect.run_id, effect.raw)
            rec.updated_at, rec.version, rec.seq = effect.updated_at, effect.version, effect.seq
            self.res.bytes += rec.size - before
            self.index.put(rec, rec)
            self.res.touch(effect.sid)
            if self.mirror is not None:
                self.mirror.pop(effect.sid, None)
                self.mirror[effect.sid] = rec.to_dict()
            return ((SESSIONS, effect.sid),)
        if isinstance(effect, SetRecord):
            table = self.collections.setdefault(effect.collection, {})
            table.pop(effect.rid, None)  # each collection stays in write order, as it reloads
            if effect.blob is not None:
                table[effect.rid] = effect.blob
            return ((effect.collection, effect.rid),)
        return self._drop(effect)

    def set_session(self, sid: str, rec: SessionRecord | None) -> None:
        old = self.sessions.get(sid)
        if old is not None:
            self.res.bytes -= old.size
        if rec is None:
            if old is not None:
                del self.sessions[sid]
                self.index.remove(old)
            self.res.forget(sid)
            if self.mirror is not None:
                self.mirror.pop(sid, None)
            return
        self.sessions[sid] = rec
        self.index.put(old, rec)
        self.res.bytes += rec.size
        self.res.touch(sid)
        if self.mirror is not None:
            # pop first: the caller's dict stays in write order, so a JSON round trip keeps recency ties
            self.mirror.pop(sid, None)
            self.mirror[sid] = rec.to_dict()

    def _drop(self, effect: Drop) -> list[Key]:
        keys: list[Key] = [(SESSIONS, sid) for sid in self.sessions]
        keys.extend((name, rid) for name, table in self.collections.items() for rid in table)
        keys.extend(effect.stored)
        keys.extend(self.loading)  # a load in flight must not bring anything back
        self.sessions.clear()
        self.index.clear()
        self.collections.clear()
        self.res.lru.clear()
        self.res.bytes = 0
        if self.mirror is not None:
            self.mirror.clear()
        return list(dict.fromkeys(keys))

    # -- residency -------------------------------------------------------------------------------------------

    def _evictable(self, sid: str) -> bool:
        key = (SESSIONS, sid)
        return key not in self.dirty and key not in self.in_flight and sid not in self.res.pins

    def settle(self) -> None:
        """Evict least-recently-used clean payloads while a memory bound is exceeded (lock held)."""
        victims, flush = self.res.victims(
            self._evictable, lambda sid: (SESSIONS, sid) in self.dirty, lambda sid: self.sessions[sid].size
        )
        for sid in victims:
            self._evict(sid, "evict")
        if flush:
            self.wake_flusher()

    def _evict(self, sid: str, kind: str) -> None:
        rec = self.sessions[sid]
        self.res.bytes -= rec.size
        rec.evict()
        self.res.forget(sid)
        self.counts["expirations" if kind == "expire" else "evictions"] += 1
        self.event(kind, collection=SESSIONS, id=sid)

    def pin(self, sids: Sequence[str]) -> None:
        """Keep these payloads in memory (once resident) until :meth:`unpin`."""
        with self.lock:
            self.res.pin(sids)

    def unpin(self, sids: Sequence[str]) -> None:
        """Release pins; what they kept may now be evicted."""
        with self.lock:
            self.res.unpin(sids)
            self.settle()
        self.deliver()

    def expire_some(self, limit: int) -> tuple[int, bool]:
        """Evict up to ``limit`` payloads idle for longer than ``ttl``; returns ``(count, more may follow)``."""
        with self.lock:
            idle, more = self.res.idle(limit)
            victims = [sid for sid in idle if self._evictable(sid)]
            for sid in victims:
                self._evict(sid, "expire")
            if len(victims) < len(idle) and any((SESSIONS, sid) in self.dirty for sid in idle):
                self.wake_flusher()
        self.deliver()
        return len(victims), more and bool(victims)

    # -- sessions: building records (lock held) --------------------------------------------------------------

    def build_session(
        self,
        session: Mapping[str, Any],
        old: SessionRecord | None,
        *,
        expected_version: int | None = None,
        preserve: bool = False,
    ) -> SessionRecord:
        """Validate and encode a caller's session against the one it replaces; nothing changes."""
        sid = session["session_id"]
        if expected_version is not None:
            actual = old.version if old is not None else 0
            if actual != expected_version:
                raise ConflictError(
                    f"session {sid!r} is at version {actual}, expected {expected_version}",
                    key=sid,
                    expected=expected_version,
                    actual=actual,
                )
        new = SessionRecord.build(
            session, now=int(self.clock()), seq=self.next_seq(), previous=old, preserve_timestamps=preserve
        )
        if old is not None and old.user_id is not None and new.user_id != old.user_id:
            raise OwnershipError(f"session {sid!r} belongs to another user")
        if old is not None and "runs" not in session:
            new.runs, new.runs_key = old.runs, old.runs_key
            new.resize()
        return new

    def run_effect(
        self, sid: str, user_id: str | None, run_id: str, raw: bytes | None, fetched: frozenset[Key]
    ) -> SetRun:
        """The effect of putting (``raw``) or removing a run; raises NotFoundError for a missing session."""
        rec = self.visible(sid, user_id, fetched, payload=True)
        if rec is None:
            raise NotFoundError(f"upsert_run: no session {sid!r}")
        return SetRun(sid, run_id, raw, int(self.clock()), rec.version + 1, self.next_seq())

    def check_record_owner(self, collection: str, rid: str, owner: str | None) -> None:
        """Raise OwnershipError if the stored record belongs to another user."""
        old = self.collections.get(collection, {}).get(rid)
        if old is not None and old[1] is not None and old[1] != owner:
            raise OwnershipError(f"{collection} record {rid!r} belongs to another user")

    # -- listings --------------------------------------------------------------------------------------------

    def list_sessions(self, q: Query) -> tuple[list[bytes], int]:
        """The encoded page of a query and the total count; raises NeedsLoad for evicted members."""
        return self.render_page(q, lambda rec: rec.doc_bytes(include_runs=q.include_runs))

    def render_page(self, q: Query, render: Callable[[SessionRecord], T]) -> tuple[list[T], int]:
        """The page of a query, each member rendered under the lock by ``render``, and the total count."""
        with self.lock:
            chosen, total = select(q, self.sessions, self.index)
            evicted = [(SESSIONS, r.session_id) for r in chosen if not r.resident]
            if evicted:
                raise NeedsLoad(evicted)
            for rec in chosen:
                self.res.touch(rec.session_id)
            return [render(r) for r in chosen], total

    # -- introspection ---------------------------------------------------------------------------------------

    def sizes(self) -> dict[str, Any]:
        """Counters for :class:`~aiomemdb.Stats`."""
        with self.lock:
            return {
                "sessions": len(self.sessions),
                "resident": len(self.res.lru) if self.res.bounded else len(self.sessions),
                "records": {name: len(table) for name, table in self.collections.items() if table},
                "bytes": self.res.bytes + sum(len(b[0]) for t in self.collections.values() for b in t.values()),
                "dirty": len(self.dirty) + len(self.in_flight),
                **self.counts,
            }


def check_ids(ids: object, what: str) -> list[str]:
    """A list of distinct valid ids from an iterable of ids (not one str), else ValidationError."""
    from aiomemdb._codec import check_id

    if isinstance(ids, str | bytes) or not isinstance(ids, Iterable):
        raise ValidationError(f"{what} must be a list of ids, got {type(ids).__name__}")
    return list(dict.fromkeys(check_id(i, what=what) for i in ids))
