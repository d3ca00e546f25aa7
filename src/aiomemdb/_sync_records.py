"""The named-collection methods of :class:`~aiomemdb.InMemoryDb` (memories, metrics, evals, traces …).

The blocking twins of :mod:`aiomemdb._async_records`: each checks its arguments, runs its kernel transaction in
the caller's thread through the :class:`~aiomemdb._sync_driver.SyncDriver` (which goes to the loop thread only for
I/O), and decodes the result. ``update_record`` runs its function on the loop thread, like ``update_session``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable, Mapping
from threading import get_ident
from typing import Any, TypeVar

from aiomemdb._async import AsyncInMemoryDb, RecordFn
from aiomemdb._async_records import RecordsApi, doc, encode_records
from aiomemdb._codec import check_id
from aiomemdb._kernel import _ops as ops
from aiomemdb._kernel import check_ids, check_optional_str
from aiomemdb._record import encode_record, record_owner
from aiomemdb._sync_driver import SyncDriver

__all__ = ["RecordsMethods"]

T = TypeVar("T")
_collection = RecordsApi._collection


class RecordsMethods:
    """Named collections over the sync driver (``_d``) and the async store it drives (``_db``)."""

    _d: SyncDriver
    _db: AsyncInMemoryDb

    def get_record(self, collection: str, record_id: str, *, user_id: str | None = None) -> dict[str, Any] | None:
        """See :meth:`AsyncInMemoryDb.get_record`."""
        check_optional_str(user_id, "user_id")
        check_id(record_id, what="record_id")
        raw = self._d.read(ops.get_record, _collection(collection), record_id, user_id)
        return doc(raw) if raw is not None else None

    def put_record(self, collection: str, record_id: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """See :meth:`AsyncInMemoryDb.put_record`."""
        d = self._d
        me = get_ident()
        try:
            d.enter(me)
            name = _collection(collection)
            raw = encode_record(record, what=f"{name}[{check_id(record_id, what='record_id')!r}]")
            d.call(ops.put_records, name, [(record_id, raw, record_owner(record))])
            d.after_write()
        finally:
            d.leave(me)
        return doc(raw)

    def put_records(self, collection: str, records: Mapping[str, Mapping[str, Any]]) -> int:
        """See :meth:`AsyncInMemoryDb.put_records`."""
        d = self._d
        me = get_ident()
        try:
            d.enter(me)
            name = _collection(collection)
            items = encode_records(name, records)
            if not items:
                return 0
            d.call(ops.put_records, name, items)
            d.after_write()
        finally:
            d.leave(me)
        return len(items)

    def update_record(self, collection: str, record_id: str, fn: RecordFn) -> dict[str, Any] | None:
        """See :meth:`AsyncInMemoryDb.update_record`; ``fn`` runs on the store's loop thread, as for
        :meth:`update_session`."""
        return self._on_loop(lambda: self._db.update_record(collection, record_id, fn))

    def delete_record(self, collection: str, record_id: str, *, user_id: str | None = None) -> bool:
        """See :meth:`AsyncInMemoryDb.delete_record`."""
        return self.delete_records(collection, [record_id], user_id=user_id) == 1

    def delete_records(self, collection: str, record_ids: Iterable[str], *, user_id: str | None = None) -> int:
        """See :meth:`AsyncInMemoryDb.delete_records`."""
        d = self._d
        me = get_ident()
        try:
            d.enter(me)
            check_optional_str(user_id, "user_id")
            ids = check_ids(record_ids, "record_id")
            count = d.call(ops.delete_records, _collection(collection), ids, user_id)
            if count:
                d.after_write()
        finally:
            d.leave(me)
        return count

    def list_records(self, collection: str, *, user_id: str | None = None) -> list[dict[str, Any]]:
        """See :meth:`AsyncInMemoryDb.list_records`."""
        d = self._d
        me = get_ident()
        try:
            d.enter(me)
            check_optional_str(user_id, "user_id")
            raws = ops.list_records(d.kernel, _collection(collection), user_id)
        finally:
            d.leave(me)
        return [doc(raw) for raw in raws]

    def clear_collection(self, collection: str) -> int:
        """See :meth:`AsyncInMemoryDb.clear_collection`."""
        if self._db._kernel.lazy:  # it lists storage first
            return self._on_loop(lambda: self._db.clear_collection(collection))
        d = self._d
        me = get_ident()
        try:
            d.enter(me)
            count = d.call(ops.clear_collection, _collection(collection), [])
            if count:
                d.after_write()
        finally:
            d.leave(me)
        return count

    # -- helpers -----------------------------------------------------------------------------------------------

    def _on_loop(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run one of the core's coroutines (``make()``) on the loop thread, through the gate."""
        d = self._d
        me = get_ident()
        try:
            d.enter(me)
            return d.run(make)
        finally:
            d.leave(me)
