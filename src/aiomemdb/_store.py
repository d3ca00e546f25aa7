"""The state every part of the async core shares, and the primitives that change it.

:class:`StoreBase` holds the records, the indexes, the dirty set, the per-session locks and the counters. Its
``_commit_*`` methods are the only places records change: each updates the indexes, the caller's mirror dict,
the memory accounting, the dirty set and the journal in one synchronous step. The mixins in
``_durability.py`` (flushing, loading, the journal), ``_memory.py`` (on-demand loads, eviction, expiry) and
``_collections.py`` (named record collections) build on them, and ``_core.py`` assembles the public class.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any, Final, Literal

import orjson

from aiomemdb._codec import SESSIONS, check_id
from aiomemdb._exceptions import ValidationError
from aiomemdb._index import SessionIndex
from aiomemdb._record import SessionRecord
from aiomemdb._stats import Event, EventKind

if TYPE_CHECKING:
    from aiomemdb._journal import Journal
    from aiomemdb.persistence._base import Key, Persistence

__all__ = ["Blob", "Durability", "StoreBase"]

logger = logging.getLogger("aiomemdb")

Durability = Literal["interval", "write", "manual", "journal"]
Blob = tuple[bytes, str | None, int]  # an encoded collection record, its owner, its write sequence

NEW, STARTING, OPEN, CLOSING, CLOSED = "new", "starting", "open", "closing", "closed"
# Long loops (encoding a changeset, ingesting a snapshot, sweeping) yield to the loop this often.
YIELD_EVERY: Final = 256


class SessionLock:
    """A per-session lock and the number of tasks holding or waiting for it."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


def check_limit(value: int | None, what: str) -> int | None:
    """Return ``value`` if it is None or an int in ``[0, sys.maxsize]``, else raise ValidationError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= sys.maxsize:
        raise ValidationError(f"{what} must be a non-negative int (at most {sys.maxsize}) or None, got {value!r}")
    return value


def check_optional_str(value: object, what: str) -> str | None:
    """Return ``value`` if it is None or a str, else raise ValidationError (filters, owner ids)."""
    if value is None or isinstance(value, str):
        return value
    raise ValidationError(f"{what} must be a str or None, got {type(value).__name__}")


def check_ids(ids: object, what: str) -> list[str]:
    """A list of distinct valid ids from an iterable of ids (not one str), else ValidationError."""
    if isinstance(ids, str | bytes) or not isinstance(ids, Iterable):
        raise ValidationError(f"{what} must be a list of ids, got {type(ids).__name__}")
    return list(dict.fromkeys(check_id(i, what=what) for i in ids))


def stamp(op: bytes, sid: str, rec: SessionRecord) -> bytes:
    """The common head of a session's journal entry."""
    return b'{"op":"%s","c":"sessions","id":%s,"seq":%d,"updated_at":%d,"version":%d' % (
        op,
        orjson.dumps(sid),
        rec.seq,
        rec.updated_at,
        rec.version,
    )


class StoreBase(ABC):
    """Shared state and primitives of :class:`~aiomemdb.AsyncInMemoryDb` (see the module docstring)."""

    def __init__(
        self,
        *,
        persistence: Persistence | None,
        durability: Durability,
        mirror: MutableMapping[str, Any] | None,
        on_event: Callable[[Event], None] | None,
        clock: Callable[[], float],
        bounded: bool,
    ) -> None:
        self._persistence = persistence
        self._durability: Durability = durability
        self._mirror = mirror
        self._on_event = on_event
        self._clock = clock

        self._sessions: dict[str, SessionRecord] = {}
        self._index = SessionIndex(self._sessions)
        self._collections: dict[str, dict[str, Blob]] = {}
        self._locks: dict[str, SessionLock] = {}
        # Write sequence: nanoseconds since the epoch, made strictly increasing. It orders writes within one
        # second (also across restarts, being stored with each object) and tells what a flush covered.
        self._seq = 0

        self._dirty: dict[Key, None] = {}  # an insertion-ordered set
        self._in_flight: frozenset[Key] = frozenset()
        self._persisted_seq = 0
        self._journal: Journal | None = None

        # Memory bounds: resident sessions in least-recently-used order, with their last access (monotonic).
        self._bounded = bounded
        self._lru: dict[str, float] = {}
        self._resident_bytes = 0
        self._pins: dict[str, int] = {}
        # Set when eviction found only unevictable (dirty, pinned, locked) sessions; cleared when one may have
        # become evictable (a flush, an unpin, an unlock), so blocked writes do not rescan the LRU each time.
        self._evict_blocked = False

        self._state = NEW
        self._loop: asyncio.AbstractEventLoop | None = None

        self._flushes = 0
        self._flush_failures = 0
        self._last_flush_duration: float | None = None
        self._last_flush_at: float | None = None
        self._last_error: str | None = None
        self._loads = 0
        self._lazy_loads = 0
        self._merged = 0
        self._evictions = 0
        self._expirations = 0

    # -- provided by the assembled class -------------------------------------------------------------------

    @abstractmethod
    async def _ready(self) -> None:
        """Start the store if needed; raise ClosedError if it is closed."""

    @abstractmethod
    def _after_commit(self) -> None:
        """Called after every commit (eviction checks)."""

    @abstractmethod
    async def _after_write(self) -> None:
        """Make a finished write as durable as the policy asks."""

    @abstractmethod
    async def _load_lazily(self, collection: str, rid: str) -> None:
        """Fetch one record from persistence into memory (single-flight)."""

    @abstractmethod
    async def _stored_keys(self, collection: str | None = None) -> list[Key]:
        """Every key in storage when the store is lazy (whole-store deletes need them)."""

    @abstractmethod
    def _flush_soon(self) -> None:
        """Ask the background flusher to flush now."""

    @abstractmethod
    async def _ensure_loaded(self, sid: str) -> None:
        """Fetch a session that is in storage but not in memory (lazy stores)."""

    @abstractmethod
    async def _make_resident(self, rec: SessionRecord) -> None:
        """Put an evicted session's payload back."""

    # -- small helpers -------------------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq = max(self._seq + 1, time.time_ns())
        return self._seq

    def _emit(self, kind: EventKind, **data: Any) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(Event(kind=kind, at=time.time(), data=data))
        except Exception:
            logger.exception("aiomemdb: on_event callback failed for a %r event", kind)

    def _mark(self, key: Key) -> None:
        if self._persistence is not None:
            self._dirty[key] = None

    def _journal_append(self, line: bytes) -> None:
        if self._journal is not None:
            _ = self._journal.append(line)  # awaited in bulk by _after_write (group commit)

    # -- committing ----------------------------------------------------------------------------------------

    def _commit_session(
        self,
        sid: str,
        old: SessionRecord | None,
        new: SessionRecord | None,
        *,
        journal: bytes | None = None,
        old_size: int | None = None,
    ) -> None:
        """Install, replace or remove a session: the one place sessions change (synchronous).

        ``journal`` overrides the journal entry (``upsert_run`` logs just the run, not the whole session).
        ``old_size`` is the size before an in-place change (``old is new``), for the memory accounting.
        """
        if new is None:
            if old is not None:
                self._resident_bytes -= old.size
                del self._sessions[sid]
                self._index.remove(old)
            self._lru.pop(sid, None)
            if self._mirror is not None:
                self._mirror.pop(sid, None)
            if self._journal is not None:
                self._journal_append(b'{"op":"del","c":"sessions","id":%s}' % orjson.dumps(sid))
        else:
            self._place(sid, old, new, old_size=old_size)
            if self._journal is not None:
                self._journal_append(journal or stamp(b"put", sid, new) + b',"doc":' + new.doc_bytes() + b"}")
        self._mark((SESSIONS, sid))
        self._after_commit()

    @staticmethod
    def _run_entry(sid: str, rec: SessionRecord, run_id: str, run: bytes | None) -> bytes:
        """The journal entry of ``upsert_run`` (``run`` given) or ``delete_run`` (``run`` None)."""
        if run is None:
            return stamp(b"delrun", sid, rec) + b',"run_id":%s}' % orjson.dumps(run_id)
        return stamp(b"run", sid, rec) + b',"run":' + run + b"}"

    def _install_session(self, sid: str, rec: SessionRecord) -> None:
        """Put a session read from storage in memory, replacing what is there, without marking it dirty."""
        self._place(sid, self._sessions.get(sid), rec)

    def _place(self, sid: str, old: SessionRecord | None, new: SessionRecord, *, old_size: int | None = None) -> None:
        """Make ``new`` the session in memory: records, index, memory accounting, LRU, the caller's dict."""
        if old is not None:
            if old is new:
                assert old_size is not None, "an in-place change must say the size it had"
                self._resident_bytes -= old_size
            else:
                self._resident_bytes -= old.size
        self._sessions[sid] = new
        self._index.put(old, new)
        self._resident_bytes += new.size
        if self._bounded:
            self._lru.pop(sid, None)
            self._lru[sid] = time.monotonic()
        if self._mirror is not None:
            # pop first: the caller's dict stays in write order, so a JSON round trip keeps recency ties
            self._mirror.pop(sid, None)
            self._mirror[sid] = new.to_dict()

    def _commit_blob(self, collection: str, rid: str, blob: Blob | None) -> None:
        """Install, replace or remove one collection record (synchronous)."""
        where = b'"c":%s,"id":%s' % (orjson.dumps(collection), orjson.dumps(rid))  # before any change
        table = self._collections.setdefault(collection, {})
        table.pop(rid, None)  # keep each collection in write order, as it reloads
        if blob is not None:
            table[rid] = blob
            self._journal_append(b'{"op":"put",%s,"seq":%d,"doc":%s}' % (where, blob[2], blob[0]))
        else:
            self._journal_append(b'{"op":"del",%s}' % where)
        self._mark((collection, rid))

    # -- per-session locks ---------------------------------------------------------------------------------

    async def _lock(self, sid: str) -> SessionLock:
        entry = self._locks.get(sid)
        if entry is None:
            entry = self._locks[sid] = SessionLock()
        entry.users += 1
        try:
            await entry.lock.acquire()
        except BaseException:
            self._release_entry(sid, entry)
            raise
        return entry

    def _unlock(self, sid: str, entry: SessionLock) -> None:
        entry.lock.release()
        self._release_entry(sid, entry)
        if self._evict_blocked and sid not in self._locks:
            self._evict_blocked = False
            self._after_commit()

    def _release_entry(self, sid: str, entry: SessionLock) -> None:
        entry.users -= 1
        if entry.users == 0 and self._locks.get(sid) is entry:
            del self._locks[sid]
