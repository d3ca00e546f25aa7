"""The persistence protocol: what the core hands to storage and what it expects back.

A persistence is any object with these six coroutines and the ``quarantined`` list; nothing needs to inherit
from anything. The core owns
encoding: :meth:`Persistence.save` receives bytes that are written as they are, and :meth:`Persistence.load`
returns records decoded through :mod:`aiomemdb._codec`, so every byte on disk or in S3 has one format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["Changeset", "EmitsEvents", "Key", "Persistence", "Snapshot", "WriterPolicy"]

#: ``(collection, record id)``; sessions live in the collection ``"sessions"``.
Key = tuple[str, str]

#: collection -> record id -> decoded record (a JSON-compatible dict).
Snapshot = dict[str, dict[str, dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Changeset:
    """What changed since the last successful flush, taken atomically from the store.

    Attributes:
        upserts: key -> the complete encoded object (format envelope included) to store under that key.
        deletes: keys whose objects must be removed; deleting a missing object is not an error.
    """

    upserts: Mapping[Key, bytes] = field(default_factory=dict)
    deletes: frozenset[Key] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.upserts or self.deletes)

    @property
    def nbytes(self) -> int:
        """Total size of the objects to write."""
        return sum(len(b) for b in self.upserts.values())


@runtime_checkable
class Persistence(Protocol):
    """Durable storage behind an :class:`~aiomemdb.AsyncInMemoryDb`.

    Implementations must make each object write atomic (a reader never sees half an object), must raise
    :class:`~aiomemdb.PersistenceError` (or :class:`~aiomemdb.CorruptDataError`) with the key and cause instead
    of swallowing an error, and must treat "nothing stored yet" as an empty snapshot, not an error.
    """

    async def open(self) -> None:
        """Acquire resources (clients, directories). Called once by the store's ``start()``."""
        ...

    async def load(self) -> Snapshot:
        """Return every stored record, decoded, each collection in write order (oldest first).

        The order matters only among records updated within the same second: the store keeps "the later
        write first" across restarts by loading in this order (:func:`aiomemdb._codec.in_write_order`).
        """
        ...

    async def load_one(self, collection: str, record_id: str) -> dict[str, Any] | None:
        """Return one stored record, or ``None`` when it does not exist."""
        ...

    async def list_keys(self, collection: str | None = None) -> list[Key]:
        """Every stored key (of ``collection``, if given), without reading the records.

        A lazy store uses it to delete what it never loaded (``drop()``, ``clear_collection()``).
        """
        ...

    async def save(self, changeset: Changeset) -> Mapping[Key, dict[str, Any]] | None:
        """Apply a changeset (every upsert and every delete) or raise.

        Returns:
            ``None``, or the records that storage now holds *instead of* what was sent (for example the merge
            of this write with another replica's concurrent one); the store adopts them.
        """
        ...

    async def aclose(self) -> None:
        """Release resources. Clients the caller injected are left open."""
        ...

    @property
    def quarantined(self) -> Sequence[tuple[str, str]]:
        """``(key, reason)`` of every corrupt object moved aside by this instance (``on_corrupt="quarantine"``)."""
        ...


@runtime_checkable
class WriterPolicy(Protocol):
    """Optional: how a persistence keeps writers apart; ``stats()`` reports it (``None`` when not told).

    Attributes:
        single_writer: writes assume no other writer (a directory's lock, ``S3Persistence(single_writer=True)``).
        conditional_writes: writes are conditional on the stored version, and the server was checked to
            enforce that (``None``: not known, e.g. before ``open()`` or read-only).
    """

    @property
    def single_writer(self) -> bool: ...

    @property
    def conditional_writes(self) -> bool | None: ...


@runtime_checkable
class EmitsEvents(Protocol):
    """Optional: a persistence that reports events (``migrate``, ``recreate``) through the store's ``on_event``."""

    def bind_events(self, emit: Callable[[str, dict[str, Any]], None]) -> None:
        """Called once by the store's constructor with its emitter (call it on the store's loop)."""
        ...
