"""The named-collection methods of :class:`~aiomemdb.AsyncInMemoryDb` (memories, metrics, evals, traces …).

A collection record is any JSON object under a string id, stored as orjson bytes with its owner (its
``user_id`` field, if any) and persisted exactly like sessions: one object per record, incrementally. The store
adds no fields to them; the owner guard applies as for sessions. Like every write, each of these is one kernel
transaction; ``update_record`` takes a synchronous function, run outside the kernel's lock and committed only
if the record did not change meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from aiomemdb._codec import SESSIONS, check_collection, check_id
from aiomemdb._exceptions import ValidationError
from aiomemdb._io._runtime import Runtime
from aiomemdb._kernel import Kernel, check_ids, check_optional_str
from aiomemdb._kernel import _ops as ops
from aiomemdb._record import encode_record, record_owner

__all__ = ["RecordFn", "RecordsApi", "doc", "encode_records"]

RecordFn = Callable[[dict[str, Any] | None], "dict[str, Any] | None"]


def encode_records(name: str, records: object) -> list[tuple[str, bytes, str | None]]:
    """``put_records``' argument checked and encoded: ``(id, bytes, owner)`` per record (both drivers)."""
    if not isinstance(records, Mapping):
        raise ValidationError(f"put_records takes a dict of id -> record, got {type(records).__name__}")
    return [
        (check_id(rid, what="record_id"), encode_record(rec, what=f"{name}[{rid!r}]"), record_owner(rec))
        for rid, rec in records.items()
    ]


def doc(raw: bytes) -> dict[str, Any]:
    """Decode a stored document: a fresh copy that aliases nothing."""
    decoded: dict[str, Any] = orjson.loads(raw)
    return decoded


class RecordsApi:
    """Named collections over the store's runtime and kernel (set by :class:`~aiomemdb.AsyncInMemoryDb`)."""

    _rt: Runtime
    _kernel: Kernel

    # -- named collections -------------------------------------------------------------------------------------

    @staticmethod
    def _collection(name: str) -> str:
        if name == SESSIONS:
            raise ValidationError("'sessions' is reserved; use the session methods")
        return check_collection(name)

    async def get_record(self, collection: str, record_id: str, *, user_id: str | None = None) -> dict[str, Any] | None:
        """A copy of one record of a named collection, or ``None`` (also when owned by another user)."""
        await self._rt.ready()
        check_optional_str(user_id, "user_id")
        check_id(record_id, what="record_id")
        raw = await self._rt.call(ops.get_record, self._collection(collection), record_id, user_id)
        return doc(raw) if raw is not None else None

    async def put_record(self, collection: str, record_id: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """Create or replace one record; returns the stored copy.

        Raises:
            ValidationError, SerializationError: the record cannot be stored; nothing changed.
            OwnershipError: the stored record has a different ``user_id``.
        """
        await self._rt.ready()
        name = self._collection(collection)
        raw = encode_record(record, what=f"{name}[{check_id(record_id, what='record_id')!r}]")
        await self._rt.call(ops.put_records, name, [(record_id, raw, record_owner(record))])
        await self._rt.after_write()
        return doc(raw)

    async def put_records(self, collection: str, records: Mapping[str, Mapping[str, Any]]) -> int:
        """Create or replace many records of one collection atomically; returns how many were written.

        Raises:
            ValidationError, SerializationError, OwnershipError: nothing was written.
        """
        await self._rt.ready()
        name = self._collection(collection)
        items = encode_records(name, records)
        if not items:
            return 0
        await self._rt.call(ops.put_records, name, items)
        await self._rt.after_write()
        return len(items)

    async def update_record(self, collection: str, record_id: str, fn: RecordFn) -> dict[str, Any] | None:
        """Atomically read, modify and write one record with a synchronous ``fn``.

        ``fn`` gets a copy of the record (``None`` if absent) and returns the new record, or ``None`` to
        leave it unchanged. Returns the stored record, or ``None`` when ``fn`` returned ``None``.
        """
        await self._rt.ready()
        check_id(record_id, what="record_id")
        name = self._collection(collection)
        where = f"{name}[{record_id!r}]"

        def encode(result: Any) -> tuple[bytes, str | None]:
            return encode_record(result, what=where), record_owner(result)

        raw = await self._rt.call(ops.update_record, name, record_id, fn, encode)
        if raw is None:
            return None
        await self._rt.after_write()
        return doc(raw)

    async def delete_record(self, collection: str, record_id: str, *, user_id: str | None = None) -> bool:
        """Delete one record; ``True`` if it existed (and was visible to ``user_id``)."""
        return await self.delete_records(collection, [record_id], user_id=user_id) == 1

    async def delete_records(self, collection: str, record_ids: Iterable[str], *, user_id: str | None = None) -> int:
        """Delete many records of one collection; returns how many existed (and were visible)."""
        await self._rt.ready()
        check_optional_str(user_id, "user_id")
        ids = check_ids(record_ids, "record_id")
        count = await self._rt.call(ops.delete_records, self._collection(collection), ids, user_id)
        if count:
            await self._rt.after_write()
        return count

    async def list_records(self, collection: str, *, user_id: str | None = None) -> list[dict[str, Any]]:
        """Copies of every record of a collection (of ``user_id``, if given), oldest write first."""
        await self._rt.ready()
        check_optional_str(user_id, "user_id")
        raws = ops.list_records(self._kernel, self._collection(collection), user_id)
        return [doc(raw) for raw in raws]

    async def clear_collection(self, collection: str) -> int:
        """Delete every record of a collection; returns how many there were.

        A ``lazy`` store first lists the keys in storage, so that what it never loaded is deleted too.
        """
        await self._rt.ready()
        name = self._collection(collection)
        stored = [rid for _, rid in await self._rt.stored_keys(name)]
        count = await self._rt.call(ops.clear_collection, name, stored)
        if count:
            await self._rt.after_write()
        return count
