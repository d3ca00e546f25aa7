"""InMemoryDb: the blocking twin of AsyncInMemoryDb, for scripts, notebooks and sync agent code.

One private event loop runs in a daemon thread (the *portal*) and owns the async core; every method hands its
coroutine to that loop and waits for the result. Hence:

- it works from any thread, including one whose own event loop is running (Jupyter): the caller's loop is
  only blocked for the duration of the call, never re-entered;
- many threads may share one instance: their calls are serialised on the portal's loop, where each operation
  is atomic;
- a call from the portal thread itself (say, from inside an ``update_session`` function) would wait for
  itself forever, so it raises :class:`~aiomemdb.ClosedError` instead.

The methods below forward and do nothing else; ``tests/test_sync.py`` checks that every public coroutine of
the core has a twin here with the same signature.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

from aiomemdb._core import AsyncInMemoryDb, RecordFn, SortBy, SortOrder, StoreOptions
from aiomemdb._exceptions import ClosedError
from aiomemdb._stats import FlushReport, Stats

__all__ = ["InMemoryDb"]

logger = logging.getLogger("aiomemdb")
T = TypeVar("T")


class _Portal:
    """An event loop in a daemon thread that runs coroutines for blocking callers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._closed = False
        self.thread = threading.Thread(target=self._run, name="aiomemdb-portal", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the portal loop and block until it finishes."""
        if threading.get_ident() == self.thread.ident:
            coro.close()
            raise ClosedError(
                "a blocking InMemoryDb method was called from the store's own loop thread (for example inside "
                "an update_session function); it would deadlock. Use the values passed to the function instead."
            )
        if self._closed:
            coro.close()
            raise ClosedError("this InMemoryDb is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # only matters when the *wait* was interrupted (KeyboardInterrupt)
            raise

    def stop(self) -> None:
        """Stop the loop and join its thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.get_ident() != self.thread.ident:
            self.thread.join()


async def _call(fn: Callable[[], T]) -> T:
    return fn()


def _finalize(portal: _Portal, db: AsyncInMemoryDb) -> None:
    """Close a facade that was garbage-collected or is still open at interpreter exit."""
    try:
        if not portal._closed:
            portal.call(db.aclose())
    except Exception as exc:
        logger.error("aiomemdb: closing an InMemoryDb at exit failed; unflushed changes are lost: %s", exc)
    finally:
        portal.stop()


class InMemoryDb:
    """A blocking session store: :class:`~aiomemdb.AsyncInMemoryDb`'s methods, without ``await``.

    Takes the same arguments as :class:`~aiomemdb.AsyncInMemoryDb`, starts (loads) on construction, and is
    closed by :meth:`close`, by ``with``, when garbage-collected, or at interpreter exit — whichever comes
    first, with a final flush.
    """

    def __init__(self, **options: Unpack[StoreOptions]) -> None:
        self._db = AsyncInMemoryDb(**options)
        self._portal = _Portal()
        self._finalizer = weakref.finalize(self, _finalize, self._portal, self._db)
        try:
            self._portal.call(self._db.start())
        except BaseException:
            self._finalizer.detach()
            self._portal.stop()
            raise

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> Self:
        """Idempotent: the store starts on construction."""
        self._portal.call(self._db.start())
        return self

    def close(self) -> None:
        """Flush, release the persistence and stop the loop thread; idempotent.

        Raises:
            PersistenceError: the final flush failed; the store stays open and can be closed again.
        """
        if self._portal._closed:
            return
        self._portal.call(self._db.aclose())
        self._finalizer.detach()
        self._portal.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def flush(self) -> FlushReport:
        """See :meth:`AsyncInMemoryDb.flush`."""
        return self._portal.call(self._db.flush())

    def stats(self) -> Stats:
        """See :meth:`AsyncInMemoryDb.stats`."""
        return self._portal.call(_call(self._db.stats))

    def __repr__(self) -> str:
        return f"<InMemoryDb {self._db!r}>"

    # -- sessions ----------------------------------------------------------------------------------------------

    def get_session(
        self, session_id: str, *, user_id: str | None = None, runs_limit: int | None = None
    ) -> dict[str, Any] | None:
        """See :meth:`AsyncInMemoryDb.get_session`."""
        return self._portal.call(self._db.get_session(session_id, user_id=user_id, runs_limit=runs_limit))

    def get_run(self, session_id: str, run_id: str, *, user_id: str | None = None) -> dict[str, Any] | None:
        """See :meth:`AsyncInMemoryDb.get_run`."""
        return self._portal.call(self._db.get_run(session_id, run_id, user_id=user_id))

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
        return self._portal.call(
            self._db.get_sessions(
                user_id=user_id,
                agent_id=agent_id,
                team_id=team_id,
                workflow_id=workflow_id,
                component_id=component_id,
                session_type=session_type,
                session_name=session_name,
                start_timestamp=start_timestamp,
                end_timestamp=end_timestamp,
                sort_by=sort_by,
                sort_order=sort_order,
                limit=limit,
                page=page,
                include_runs=include_runs,
            )
        )

    def get_all_sessions(self, user_id: str | None = None) -> list[dict[str, Any]]:
        """See :meth:`AsyncInMemoryDb.get_all_sessions`."""
        return self._portal.call(self._db.get_all_sessions(user_id))

    def get_recent_sessions(self, *, limit: int = 2, user_id: str | None = None) -> list[dict[str, Any]]:
        """See :meth:`AsyncInMemoryDb.get_recent_sessions`."""
        return self._portal.call(self._db.get_recent_sessions(limit=limit, user_id=user_id))

    def upsert_session(
        self,
        session: Mapping[str, Any],
        *,
        expected_version: int | None = None,
        preserve_updated_at: bool = False,
        include_runs: bool = True,
    ) -> dict[str, Any]:
        """See :meth:`AsyncInMemoryDb.upsert_session`."""
        return self._portal.call(
            self._db.upsert_session(
                session,
                expected_version=expected_version,
                preserve_updated_at=preserve_updated_at,
                include_runs=include_runs,
            )
        )

    def upsert_sessions(
        self, sessions: Sequence[Mapping[str, Any]], *, preserve_updated_at: bool = False
    ) -> list[dict[str, Any]]:
        """See :meth:`AsyncInMemoryDb.upsert_sessions`."""
        return self._portal.call(self._db.upsert_sessions(sessions, preserve_updated_at=preserve_updated_at))

    def upsert_run(self, session_id: str, run: Mapping[str, Any], *, user_id: str | None = None) -> None:
        """See :meth:`AsyncInMemoryDb.upsert_run`."""
        return self._portal.call(self._db.upsert_run(session_id, run, user_id=user_id))

    def delete_run(self, session_id: str, run_id: str, *, user_id: str | None = None) -> bool:
        """See :meth:`AsyncInMemoryDb.delete_run`."""
        return self._portal.call(self._db.delete_run(session_id, run_id, user_id=user_id))

    def update_session(
        self,
        session_id: str,
        fn: Callable[[dict[str, Any] | None], dict[str, Any] | None],
        *,
        user_id: str | None = None,
    ) -> dict[str, Any] | None:
        """See :meth:`AsyncInMemoryDb.update_session`; ``fn`` runs on the store's loop thread."""
        return self._portal.call(self._db.update_session(session_id, fn, user_id=user_id))

    def rename_session(
        self, session_id: str, session_name: str, *, user_id: str | None = None
    ) -> dict[str, Any] | None:
        """See :meth:`AsyncInMemoryDb.rename_session`."""
        return self._portal.call(self._db.rename_session(session_id, session_name, user_id=user_id))

    def delete_session(self, session_id: str, *, user_id: str | None = None) -> bool:
        """See :meth:`AsyncInMemoryDb.delete_session`."""
        return self._portal.call(self._db.delete_session(session_id, user_id=user_id))

    def delete_sessions(self, session_ids: Iterable[str], *, user_id: str | None = None) -> int:
        """See :meth:`AsyncInMemoryDb.delete_sessions`."""
        return self._portal.call(self._db.delete_sessions(session_ids, user_id=user_id))

    def drop(self) -> None:
        """See :meth:`AsyncInMemoryDb.drop`."""
        return self._portal.call(self._db.drop())

    # -- collections -------------------------------------------------------------------------------------------

    def get_record(self, collection: str, record_id: str, *, user_id: str | None = None) -> dict[str, Any] | None:
        """See :meth:`AsyncInMemoryDb.get_record`."""
        return self._portal.call(self._db.get_record(collection, record_id, user_id=user_id))

    def put_record(self, collection: str, record_id: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """See :meth:`AsyncInMemoryDb.put_record`."""
        return self._portal.call(self._db.put_record(collection, record_id, record))

    def put_records(self, collection: str, records: Mapping[str, Mapping[str, Any]]) -> int:
        """See :meth:`AsyncInMemoryDb.put_records`."""
        return self._portal.call(self._db.put_records(collection, records))

    def update_record(self, collection: str, record_id: str, fn: RecordFn) -> dict[str, Any] | None:
        """See :meth:`AsyncInMemoryDb.update_record`."""
        return self._portal.call(self._db.update_record(collection, record_id, fn))

    def delete_record(self, collection: str, record_id: str, *, user_id: str | None = None) -> bool:
        """See :meth:`AsyncInMemoryDb.delete_record`."""
        return self._portal.call(self._db.delete_record(collection, record_id, user_id=user_id))

    def delete_records(self, collection: str, record_ids: Iterable[str], *, user_id: str | None = None) -> int:
        """See :meth:`AsyncInMemoryDb.delete_records`."""
        return self._portal.call(self._db.delete_records(collection, record_ids, user_id=user_id))

    def list_records(self, collection: str, *, user_id: str | None = None) -> list[dict[str, Any]]:
        """See :meth:`AsyncInMemoryDb.list_records`."""
        return self._portal.call(self._db.list_records(collection, user_id=user_id))

    def clear_collection(self, collection: str) -> int:
        """See :meth:`AsyncInMemoryDb.clear_collection`."""
        return self._portal.call(self._db.clear_collection(collection))
