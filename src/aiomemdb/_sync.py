"""InMemoryDb: the blocking twin of AsyncInMemoryDb, for scripts, notebooks and sync agent code.

It calls the store's synchronous kernel directly in the caller's thread for everything that needs no I/O: reads
of resident records and writes under the default durability (a commit that marks the keys dirty). Only I/O runs
on the store's one background loop thread (``aiomemdb-portal``), as real tasks with the caller's context copied:
loads (lazy misses, evicted sessions), flushes, ``durability="write"`` and journal fsync waits, start and close,
and the read-modify-writes whose function is the user's (``update_session``, ``update_record``). Hence:

- it works from any thread, including one whose own event loop is running (Jupyter): the caller's loop is only
  blocked for the duration of the call, never re-entered;
- many threads may share one instance: the kernel is thread-safe and each operation is atomic;
- ``update_session`` / ``update_record`` functions and ``on_event`` callbacks run on the loop thread, inside a
  task: ``asyncio.current_task()``, ``asyncio.timeout`` and the caller's context variables work there as in the
  async core. A blocking call made from that thread would wait for itself, so it raises
  :class:`~aiomemdb.ClosedError` instead.

See ``_sync_driver.py`` for Ctrl-C and close, and ``_exit.py`` for interpreter exit and ``fork()``.
``tests/test_sync.py`` checks that every public coroutine of the core has a twin here with the same signature.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from threading import get_ident
from types import TracebackType
from typing import Any, Self, Unpack

from aiomemdb import _exit
from aiomemdb._async import AsyncInMemoryDb, SessionFn, SortBy, SortOrder, StoreOptions
from aiomemdb._async_records import doc
from aiomemdb._async_sessions import _list, _session_id_of, list_parts
from aiomemdb._codec import check_id
from aiomemdb._exceptions import ClosedError, ValidationError
from aiomemdb._kernel import Query, check_ids, check_limit, check_optional_str
from aiomemdb._kernel import _ops as ops
from aiomemdb._record import SessionParts, SessionRecord, decode_parts
from aiomemdb._stats import FlushReport, Stats
from aiomemdb._sync_driver import FORKED, Lifecycle, SyncDriver
from aiomemdb._sync_records import RecordsMethods

__all__ = ["InMemoryDb"]

class InMemoryDb(RecordsMethods):
    """A blocking session store: :class:`~aiomemdb.AsyncInMemoryDb`'s methods, without ``await``.

    Takes the same arguments as :class:`~aiomemdb.AsyncInMemoryDb`, starts (loads) on construction, and is
    closed by :meth:`close`, by ``with``, when garbage-collected, or at interpreter exit, whichever comes first,
    with a final flush (a failure at exit is printed to stderr with the number of changes lost). ``on_event``
    callbacks run on the store's loop thread. After ``os.fork()`` the child's copy raises
    :class:`~aiomemdb.ClosedError`: create a new store in the child.
    """

    def __init__(self, **options: Unpack[StoreOptions]) -> None:
        db = AsyncInMemoryDb(**options)
        _exit.untrack_async(db)  # its exit and fork are this facade's
        self._db = db
        self._d = driver = SyncDriver(db)
        self._life = life = Lifecycle(driver)
        try:
            driver.run(db.start)
        except BaseException:
            driver.loop.stop()
            raise
        life.finalizer = weakref.finalize(self, life.collected)
        life.finalizer.atexit = False  # exit is _exit's handler, which also covers the stores still referenced
        _exit.track_blocking(life)

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> Self:
        """Idempotent: the store starts on construction."""
        me = get_ident()
        try:
            self._d.enter(me)
        finally:
            self._d.leave(me)
        return self

    def close(self) -> None:
        """Flush, release the persistence and stop the loop thread; idempotent.

        Raises:
            PersistenceError: the final flush failed; the store stays open and can be closed again.
        """
        if self._d.forked:
            return
        self._life.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def flush(self) -> FlushReport:
        """See :meth:`AsyncInMemoryDb.flush`."""
        me = get_ident()
        try:
            self._d.enter(me)
            return self._d.run(self._db.flush)
        finally:
            self._d.leave(me)

    def stats(self) -> Stats:
        """See :meth:`AsyncInMemoryDb.stats`."""
        if self._d.forked:
            raise ClosedError(FORKED)
        return self._db.stats()

    def __repr__(self) -> str:
        return f"<InMemoryDb {self._db!r}>"

    # -- sessions: reads ---------------------------------------------------------------------------------------

    def get_session(
        self, session_id: str, *, user_id: str | None = None, runs_limit: int | None = None
    ) -> dict[str, Any] | None:
        """See :meth:`AsyncInMemoryDb.get_session`."""
        check_optional_str(user_id, "user_id")
        check_id(session_id, what="session_id")
        check_limit(runs_limit, "runs_limit")
        raw = self._d.read(ops.get_session, session_id, user_id, runs_limit)
        return doc(raw) if raw is not None else None

    def get_run(self, session_id: str, run_id: str, *, user_id: str | None = None) -> dict[str, Any] | None:
        """See :meth:`AsyncInMemoryDb.get_run`."""
        check_optional_str(user_id, "user_id")
        check_id(session_id, what="session_id")
        check_id(run_id, what="run_id")
        raw = self._d.read(ops.get_run, session_id, run_id, user_id)
        return doc(raw) if raw is not None else None

    def get_sessions(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        team_id: str | None = None,
        workflow_id: str | None = None,
        component_id: str | None = None,
        session_type: str | None = None,
        session_name: str | None = None,
        start_timestamp: int | None = None,
        end_timestamp: int | None = None,
        sort_by: SortBy = "updated_at",
        sort_order: SortOrder = "desc",
        limit: int | None = None,
        page: int | None = None,
        include_runs: bool = True,
    ) -> tuple[list[dict[str, Any]], int]:
        """See :meth:`AsyncInMemoryDb.get_sessions`."""
        q = Query.build(
            user_id=user_id, agent_id=agent_id, team_id=team_id, workflow_id=workflow_id,
            component_id=component_id, session_type=session_type, session_name=session_name,
            start_timestamp=start_timestamp, end_timestamp=end_timestamp, sort_by=sort_by,
            sort_order=sort_order, limit=limit, page=page, include_runs=include_runs,
        )  # fmt: skip
        page_docs, total = self._d.read(_list, q)
        return [doc(raw) for raw in page_docs], total

    def _session_parts(self, session_id: str, *, user_id: str | None = None) -> SessionParts | None:
        """See :meth:`AsyncInMemoryDb._session_parts`."""
        check_optional_str(user_id, "user_id")
        check_id(session_id, what="session_id")
        raw = self._d.read(ops.get_session_parts, session_id, user_id)
        return decode_parts(raw) if raw is not None else None

    def _page_parts(self, q: Query) -> tuple[list[SessionParts], int]:
        """See :meth:`AsyncInMemoryDb._page_parts`."""
        page_parts, total = self._d.read(list_parts, q)
        return [decode_parts(raw) for raw in page_parts], total

    def get_all_sessions(self, user_id: str | None = None) -> list[dict[str, Any]]:
        """See :meth:`AsyncInMemoryDb.get_all_sessions`."""
        return self.get_sessions(user_id=user_id)[0]

    def get_recent_sessions(self, *, limit: int = 2, user_id: str | None = None) -> list[dict[str, Any]]:
        """See :meth:`AsyncInMemoryDb.get_recent_sessions`."""
        return self.get_sessions(user_id=user_id, limit=limit)[0]

    # -- sessions: writes --------------------------------------------------------------------------------------

    def upsert_session(
        self,
        session: Mapping[str, Any],
        *,
        expected_version: int | None = None,
        preserve_updated_at: bool = False,
        include_runs: bool = True,
    ) -> dict[str, Any]:
        """See :meth:`AsyncInMemoryDb.upsert_session`."""
        d = self._d
        me = get_ident()
        try:
            d.enter(me)
            sid = _session_id_of(session)
            check_limit(expected_version, "expected_version")
            raw = d.write(
                (sid,), ops.upsert_session, session, expected_version, bool(preserve_updated_at), include_runs
            )
            d.after_write()
        finally:
            d.leave(me)
        return doc(raw)

    def _upsert_row(
        self, row: Mapping[str, Any], create: Callable[[], Mapping[str, Any]], *, preserve_updated_at: bool = False
    ) -> tuple[dict[str, Any], bool]:
        """See :meth:`AsyncInMemoryDb._upsert_row`."""
        d = self._d
        me = get_ident()
        try:
            d.enter(me)
            sid = _session_id_of(row)
            raw, created = d.write((sid,), ops.upsert_session_row, row, create, bool(preserve_updated_at))
            d.after_write()
        finally:
            d.leave(me)
        return doc(raw), created

    def upsert_sessions(
        self, sessions: Sequence[Mapping[str, Any]], *, preserve_updated_at: bool = False
    ) -> list[dict[str, Any]]:
        """See :meth:`AsyncInMemoryDb.upsert_sessions`."""
        d = self._d
        me = get_ident()
        try:
            d.enter(me)
            if isinstance(sessions, Mapping) or not isinstance(sessions, Sequence):
                raise ValidationError("upsert_sessions takes a list of session dicts")
            ids = [_session_id_of(s) for s in sessions]
            if not ids:
                return []
            raws = d.write(ids, ops.upsert_sessions, list(sessions), bool(preserve_updated_at))
            d.after_write()
        finally:
            d.leave(me)
        return [doc(raw) for raw in raws]

    def upsert_run(self, session_id: str, run: Mapping[str, Any], *, user_id: str | None = None) -> None:
        """See :meth:`AsyncInMemoryDb.upsert_run`."""
        d = self._d
        me = get_ident()
        try:
            d.enter(me)
            check_optional_str(user_id, "user_id")
            check_id(session_id, what="session_id")
            run_id, raw = SessionRecord.encode_run(run)
            d.write((session_id,), ops.upsert_run, session_id, run_id, raw, user_id)
            d.after_write()
        finally:
            d.leave(me)

    def delete_run(self, session_id: str, run_id: str, *, user_id: str | None = None) -> bool:
        """See :meth:`AsyncInMemoryDb.delete_run`."""
        d = self._d
        me = get_ident()
        try:
            d.enter(me)
            check_optional_str(user_id, "user_id")
            check_id(session_id, what="session_id")
            check_id(run_id, what="run_id")
            removed = d.write((session_id,), ops.delete_run, session_id, run_id, user_id)
            if removed:
                d.after_write()
        finally:
            d.leave(me)
        return removed

    def update_session(
        self,
        session_id: str,
        fn: SessionFn,
        *,
        user_id: str | None = None,
    ) -> dict[str, Any] | None:
        """See :meth:`AsyncInMemoryDb.update_session`.

        ``fn`` (sync or async) runs on the store's loop thread inside a task that carries a copy of the caller's
        context, as it would in the async core; it must not call this store's blocking methods (they raise
        :class:`~aiomemdb.ClosedError`, as they would deadlock).
        """
        return self._on_loop(lambda: self._db.update_session(session_id, fn, user_id=user_id))

    def rename_session(
        self, session_id: str, session_name: str, *, user_id: str | None = None
    ) -> dict[str, Any] | None:
        """See :meth:`AsyncInMemoryDb.rename_session`."""
        d = self._d
        me = get_ident()
        try:
            d.enter(me)
            check_optional_str(user_id, "user_id")
            check_id(session_id, what="session_id")
            if not isinstance(session_name, str):
                raise ValidationError(f"session_name must be a str, got {type(session_name).__name__}")
            raw = d.write((session_id,), ops.rename_session, session_id, session_name, user_id)
            if raw is None:
                return None
            d.after_write()
        finally:
            d.leave(me)
        return doc(raw)

    def refresh(self, session_id: str) -> dict[str, Any] | None:
        """See :meth:`AsyncInMemoryDb.refresh`."""
        return self._on_loop(lambda: self._db.refresh(session_id))

    def delete_session(self, session_id: str, *, user_id: str | None = None) -> bool:
        """See :meth:`AsyncInMemoryDb.delete_session`."""
        return self.delete_sessions([session_id], user_id=user_id) == 1

    def delete_sessions(self, session_ids: Iterable[str], *, user_id: str | None = None) -> int:
        """See :meth:`AsyncInMemoryDb.delete_sessions`."""
        d = self._d
        me = get_ident()
        try:
            d.enter(me)
            check_optional_str(user_id, "user_id")
            ids = check_ids(session_ids, "session_id")
            count = d.write(ids, ops.delete_sessions, ids, user_id)
            if count:
                d.after_write()
        finally:
            d.leave(me)
        return count

    def drop(self) -> None:
        """See :meth:`AsyncInMemoryDb.drop`."""
        if self._db._kernel.lazy:  # it lists storage first
            return self._on_loop(self._db.drop)
        d = self._d
        me = get_ident()
        try:
            d.enter(me)
            d.write(list(d.kernel.sessions), ops.drop, [])
            d.after_write()
        finally:
            d.leave(me)
        return None
