"""Plain value objects the store reports: one flush, and the store's counters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Event", "EventKind", "FlushReport", "Stats"]


@dataclass(frozen=True, slots=True)
class FlushReport:
    """What one flush wrote.

    Attributes:
        upserts: objects written.
        deletes: objects deleted.
        bytes: bytes written.
        duration: seconds spent, encoding included.
        merged: records that storage merged with another writer's version (adopted by the store).
    """

    upserts: int = 0
    deletes: int = 0
    bytes: int = 0
    duration: float = 0.0
    merged: int = 0


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of the store's counters (cheap to take; safe to keep).

    Attributes:
        state: ``"new"``, ``"starting"``, ``"open"``, ``"closing"`` or ``"closed"``.
        sessions: sessions known to the store (evicted ones included).
        resident: sessions whose payload is in memory (not evicted).
        records: records per extra collection.
        bytes: approximate encoded size of everything held.
        dirty: records changed since the last successful flush.
        flushes: successful flushes that wrote something.
        flush_failures: failed flush attempts.
        last_flush_duration: seconds the last successful flush took.
        last_flush_at: unix time of the last successful flush.
        last_error: the last flush or load error, as text (cleared by a successful flush).
        loads: records loaded at start.
        lazy_loads: records loaded on demand (``lazy=True``).
        merged: records merged with another replica's concurrent write.
        evictions: sessions evicted to respect ``max_sessions`` / ``max_bytes``.
        expirations: sessions evicted after ``ttl`` seconds idle.
        quarantined: corrupt objects the persistence moved aside (``on_corrupt="quarantine"``).
        single_writer: the persistence assumes it is the only writer (a directory, held by its lock; S3 with
            ``single_writer=True``); ``None`` when it does not say (hooks, no persistence).
        conditional_writes: writes are conditional on the stored version and the server was checked to
            enforce it (S3 by default); ``False`` when writes are unconditional; ``None`` when not known.
    """

    state: str
    sessions: int
    resident: int = 0
    records: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    dirty: int = 0
    flushes: int = 0
    flush_failures: int = 0
    last_flush_duration: float | None = None
    last_flush_at: float | None = None
    last_error: str | None = None
    loads: int = 0
    lazy_loads: int = 0
    merged: int = 0
    evictions: int = 0
    expirations: int = 0
    quarantined: int = 0
    single_writer: bool | None = None
    conditional_writes: bool | None = None


#: What happened: a flush wrote something, a flush failed, a snapshot was loaded at start, a record was
#: fetched on demand, a record was merged with another replica's write, a session was evicted or expired, a
#: background task (flusher, journal fsync, TTL sweeper) crashed (``task``, ``error``; the next close raises it),
#: a directory's file names were migrated to the current layout, a removed folder was created again.
EventKind = Literal[
    "flush", "flush_failed", "load", "lazy_load", "merge", "evict", "expire", "task_failed", "migrate", "recreate"
]


@dataclass(frozen=True, slots=True)
class Event:
    """One thing the store did, handed to the ``on_event`` callback.

    Attributes:
        kind: see :data:`EventKind`.
        at: unix time it happened.
        data: details: ``upserts``/``deletes``/``bytes``/``duration`` for flushes, ``error``/``keys`` (how
            many changes stay dirty) for failures, ``records``/``duration`` for loads (``journal_entries``
            for a journal replay), ``collection``/``id`` for per-record events.
    """

    kind: EventKind
    at: float
    data: dict[str, Any] = field(default_factory=dict)
