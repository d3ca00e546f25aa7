"""Named collections: the other record kinds an agent keeps (memories, metrics, evals, traces, learnings …).

A collection record is any JSON object under a string id, stored as orjson bytes with its owner (its
``user_id`` field, if any) and persisted exactly like sessions: one object per record, incrementally. The
store adds no fields to them; the owner guard applies as for sessions. Every write is one synchronous
section, so it is atomic without locks; ``update_record`` takes a synchronous function for the same reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from aiomemdb._codec import SESSIONS, check_collection, check_id
from aiomemdb._exceptions import OwnershipError, ValidationError
from aiomemdb._record import encode_record, record_owner
from aiomemdb._store import Blob, StoreBase, check_ids, check_optional_str

__all__ = ["CollectionsMixin", "RecordFn"]

RecordFn = Callable[[dict[str, Any] | None], "dict[str, Any] | None"]


class CollectionsMixin(StoreBase):
    """The record methods of :class:`~aiomemdb.AsyncInMemoryDb`."""

    _lazy: bool

    def _table(self, name: str) -> dict[str, Blob]:
        if name == SESSIONS:
            raise ValidationError("'sessions' is reserved; use the session methods")
        check_collection(name)
        return self._collections.setdefault(name, {})

    async def _find_record(self, collection: str, rid: str) -> Blob | None:
        blob = self._table(collection).get(rid)
        if blob is None and self._lazy:
            await self._load_lazily(collection, rid)
            blob = self._table(collection).get(rid)
        return blob

    def _check_owner(self, collection: str, rid: str, owner: str | None) -> None:
        old = self._table(collection).get(rid)
        if old is not None and old[1] is not None and old[1] != owner:
            raise OwnershipError(f"{collection} record {rid!r} belongs to another user")

    def _put_blob(self, collection: str, rid: str, raw: bytes, owner: str | None) -> None:
        self._check_owner(collection, rid, owner)
        self._commit_blob(collection, rid, (raw, owner, self._next_seq()))

    async def get_record(self, collection: str, record_id: str, *, user_id: str | None = None) -> dict[str, Any] | None:
        """A copy of one record of a named collection, or ``None`` (also when owned by another user)."""
        await self._ready()
        check_optional_str(user_id, "user_id")
        check_id(record_id, what="record_id")
        blob = await self._find_record(collection, record_id)
        if blob is None or (user_id is not None and blob[1] != user_id):
            return None
        record: dict[str, Any] = orjson.loads(blob[0])
        return record

    async def put_record(self, collection: str, record_id: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """Create or replace one record; returns the stored copy.

        Raises:
            ValidationError, SerializationError: the record cannot be stored; nothing changed.
            OwnershipError: the stored record has a different ``user_id``.
        """
        await self._ready()
        check_id(record_id, what="record_id")
        self._table(collection)
        raw = encode_record(record, what=f"{collection}[{record_id!r}]")
        if self._lazy:
            await self._find_record(collection, record_id)
        self._put_blob(collection, record_id, raw, record_owner(record))
        await self._after_write()
        stored: dict[str, Any] = orjson.loads(raw)
        return stored

    async def put_records(self, collection: str, records: Mapping[str, Mapping[str, Any]]) -> int:
        """Create or replace many records of one collection atomically; returns how many were written.

        Raises:
            ValidationError, SerializationError, OwnershipError: nothing was written.
        """
        await self._ready()
        self._table(collection)
        if not isinstance(records, Mapping):
            raise ValidationError(f"put_records takes a dict of id -> record, got {type(records).__name__}")
        encoded = [
            (check_id(rid, what="record_id"), encode_record(rec, what=f"{collection}[{rid!r}]"), record_owner(rec))
            for rid, rec in records.items()
        ]
        if self._lazy:
            await asyncio.gather(*(self._find_record(collection, rid) for rid, _, _ in encoded))
        for rid, _, owner in encoded:
            self._check_owner(collection, rid, owner)
        for rid, raw, owner in encoded:
            self._put_blob(collection, rid, raw, owner)
        if encoded:
            await self._after_write()
        return len(encoded)

    async def update_record(self, collection: str, record_id: str, fn: RecordFn) -> dict[str, Any] | None:
        """Atomically read, modify and write one record with a synchronous ``fn``.

        ``fn`` gets a copy of the record (``None`` if absent) and returns the new record, or ``None`` to
        leave it unchanged. Returns the stored record, or ``None`` when ``fn`` returned ``None``.
        """
        await self._ready()
        check_id(record_id, what="record_id")
        blob = await self._find_record(collection, record_id)
        result = fn(orjson.loads(blob[0]) if blob is not None else None)
        if result is None:
            return None
        raw = encode_record(result, what=f"{collection}[{record_id!r}]")
        self._put_blob(collection, record_id, raw, record_owner(result))
        await self._after_write()
        stored: dict[str, Any] = orjson.loads(raw)
        return stored

    async def delete_record(self, collection: str, record_id: str, *, user_id: str | None = None) -> bool:
        """Delete one record; ``True`` if it existed (and was visible to ``user_id``)."""
        return await self.delete_records(collection, [record_id], user_id=user_id) == 1

    async def delete_records(self, collection: str, record_ids: Iterable[str], *, user_id: str | None = None) -> int:
        """Delete many records of one collection; returns how many existed (and were visible)."""
        await self._ready()
        check_optional_str(user_id, "user_id")
        ids = check_ids(record_ids, "record_id")
        table = self._table(collection)
        if self._lazy:
            await asyncio.gather(*(self._find_record(collection, rid) for rid in ids if rid not in table))
        visible = [rid for rid in ids if rid in table and (user_id is None or table[rid][1] == user_id)]
        for rid in visible:
            self._commit_blob(collection, rid, None)
        if visible:
            await self._after_write()
        return len(visible)

    async def list_records(self, collection: str, *, user_id: str | None = None) -> list[dict[str, Any]]:
        """Copies of every record of a collection (of ``user_id``, if given), oldest write first."""
        await self._ready()
        check_optional_str(user_id, "user_id")
        table = self._table(collection)
        return [orjson.loads(raw) for raw, owner, _ in table.values() if user_id is None or owner == user_id]

    async def clear_collection(self, collection: str) -> int:
        """Delete every record of a collection; returns how many there were.

        A ``lazy`` store first lists storage (by loading it: O(store)), so that what it never loaded is
        deleted too.
        """
        await self._ready()
        table = self._table(collection)
        stored = await self._stored_keys(collection)
        ids = list(dict.fromkeys([*table, *(rid for _, rid in stored)]))
        for rid in ids:
            self._commit_blob(collection, rid, None)
        if ids:
            await self._after_write()
        return len(ids)
