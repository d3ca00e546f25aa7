"""InMemoryDb: the blocking twin of AsyncInMemoryDb, for scripts, notebooks and sync agent code.

One private event loop runs in a daemon thread (the *portal*) and owns the async core; every call runs its
coroutine with that loop and waits for the result (see :class:`_Portal` for how a call usually avoids the thread
switch). Hence:

- it works from any thread, including one whose own event loop is running (Jupyter): the caller's loop is
  only blocked for the duration of the call, never re-entered;
- many threads may share one instance: their calls are serialised by the portal's mutex, and each operation
  is atomic;
- a call made while a call is running its code (say, from inside an ``update_session`` function) would wait
  for itself forever, so it raises :class:`~aiomemdb.ClosedError` instead.

The methods below forward and do nothing else; ``tests/test_sync.py`` checks that every public coroutine of
the core has a twin here with the same signature.
"""

from __future__ import annotations

import asyncio
import logging
import selectors
import threading
import types
import weakref
from collections.abc import Callable, Coroutine, Generator, Iterable, Mapping, Sequence
from contextvars import Context
from types import TracebackType
from typing import Any, Self, TypeVar, TypeVarTuple, Unpack

from aiomemdb._async import AsyncInMemoryDb, RecordFn, SessionFn, SortBy, SortOrder, StoreOptions
from aiomemdb._exceptions import ClosedError
from aiomemdb._stats import FlushReport, Stats

__all__ = ["InMemoryDb"]

logger = logging.getLogger("aiomemdb")
T = TypeVar("T")
Ts = TypeVarTuple("Ts")


_MAIN_THREAD = threading.main_thread().ident
_DEADLOCK = (
    "a blocking InMemoryDb method was called from the store's own loop thread (for example inside an "
    "update_session function); it would deadlock. Use the values passed to the function instead."
)


class _LockingSelector(selectors.DefaultSelector):
    """The portal loop's selector: the loop thread gives up the portal's mutex only while it waits for I/O."""

    def __init__(self, mutex: threading.Lock) -> None:
        super().__init__()
        self._mutex = mutex

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        self._mutex.release()
        try:
            return super().select(timeout)
        finally:
            self._mutex.acquire()


def _noop() -> None:
    pass


class _PortalLoop(asyncio.SelectorEventLoop):
    """A loop that other threads may drive while they hold the portal's mutex.

    Work they schedule (a task, a lock's waiter, a timer) must wake the loop thread, which may be asleep in
    ``select`` with a long timeout; so ``call_soon`` and ``call_at`` from another thread also write to the
    loop's self-pipe, exactly as ``call_soon_threadsafe`` does.
    """

    owner = 0  # the loop thread's ident, once it runs

    def call_soon(
        self, callback: Callable[[Unpack[Ts]], object], *args: *Ts, context: Context | None = None
    ) -> asyncio.Handle:
        if threading.get_ident() == self.owner:
            return super().call_soon(callback, *args, context=context)
        return self.call_soon_threadsafe(callback, *args, context=context)

    def call_at(
        self, when: float, callback: Callable[[Unpack[Ts]], object], *args: *Ts, context: Context | None = None
    ) -> asyncio.TimerHandle:
        handle = super().call_at(when, callback, *args, context=context)
        if threading.get_ident() != self.owner:
            self.call_soon_threadsafe(_noop)  # recompute the select timeout
        return handle


class _Waiter:
    """Where the loop thread leaves a coroutine's outcome for the blocked caller."""

    __slots__ = ("_done", "cancelled", "error", "result", "task")

    def __init__(self) -> None:
        self._done = threading.Lock()
        self._done.acquire()
        self.result: Any = None
        self.error: BaseException | None = None
        self.task: asyncio.Task[Any] | None = None
        self.cancelled = False

    def set(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self._done.release()

    def from_task(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            self.set(error=asyncio.CancelledError())
        else:
            error = task.exception()
            self.set(None if error is not None else task.result(), error)

    def cancel(self) -> None:
        """Runs on the loop thread when the caller stopped waiting (KeyboardInterrupt)."""
        self.cancelled = True
        if self.task is not None:
            self.task.cancel()

    def wait(self, loop: asyncio.AbstractEventLoop) -> Any:
        try:
            self._done.acquire()
        except BaseException:
            loop.call_soon_threadsafe(self.cancel)  # a write in flight lands whole or not at all
            raise
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return self.result


@types.coroutine
def _continue(coro: Coroutine[Any, Any, T], pending: Any) -> Generator[Any, Any, T]:
    """Drive a coroutine that was started outside any task, from the point where it first suspended.

    ``pending`` is what it yielded (the future it waits for). The task running this generator sees that
    future, waits for it and resumes us; we pass every resumption (value or exception) on unchanged, which is
    what a task would have done had it run ``coro`` from the start.
    """
    while True:
        try:
            sent = yield pending
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                pending = coro.throw(exc)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
        else:
            try:
                pending = coro.send(sent)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]


async def _resume(coro: Coroutine[Any, Any, T], pending: Any) -> T:
    return await _continue(coro, pending)


class _Portal:
    """An event loop in a daemon thread that runs the store's coroutines for blocking callers.

    Most of the store's operations finish without ever suspending (writes are synchronous critical sections;
    reads of resident sessions too), so a call does not need the loop thread at all, only exclusive use of the
    loop's state. The loop thread holds ``mutex`` except while it waits in ``select``; a caller takes the
    mutex, makes the portal loop its running loop and runs the coroutine's first step itself. If the step
    completes, that is the whole call (about a microsecond, instead of ~30-60 µs for two thread switches
    with ``run_coroutine_threadsafe``). If the coroutine suspends (I/O, a lock another task holds), the rest
    of it becomes a task on the loop and the caller waits for it.

    The main thread does not take that path: a KeyboardInterrupt arrives there between any two bytecodes and
    could split a write. It hands the coroutine to the loop thread (``call_soon_threadsafe``; the loop runs
    the first step directly, without creating a task) and waits on a lock; if the wait is interrupted, the
    call is cancelled at its next await, where nothing is half-done.
    """

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.loop = _PortalLoop(_LockingSelector(self.mutex))
        self._closed = False
        self._holder = 0  # the thread running a coroutine step under the mutex
        self.thread = threading.Thread(target=self._run, name="aiomemdb-portal", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        loop = self.loop
        with self.mutex:
            loop.owner = threading.get_ident()
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
        ident = threading.get_ident()
        if ident == self.thread.ident or ident == self._holder:
            coro.close()
            raise ClosedError(_DEADLOCK)
        if ident == _MAIN_THREAD:
            return self._call_via_loop(coro)
        with self.mutex:
            if self._closed:
                coro.close()
                raise ClosedError("this InMemoryDb is closed")
            outer = asyncio._get_running_loop()
            asyncio._set_running_loop(self.loop)
            self._holder = ident
            try:
                pending = coro.send(None)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            finally:
                self._holder = 0
                asyncio._set_running_loop(outer)
            waiter = _Waiter()
            self._adopt(coro, pending, waiter)
        return waiter.wait(self.loop)  # type: ignore[no-any-return]

    def _call_via_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise ClosedError("this InMemoryDb is closed")
        waiter = _Waiter()
        self.loop.call_soon_threadsafe(self._first_step, coro, waiter)
        return waiter.wait(self.loop)  # type: ignore[no-any-return]

    def _first_step(self, coro: Coroutine[Any, Any, Any], waiter: _Waiter) -> None:
        """On the loop thread: run a coroutine's first step directly; hand the rest, if any, to a task."""
        if waiter.cancelled:
            coro.close()
            return
        try:
            pending = coro.send(None)
        except StopIteration as stop:
            waiter.set(stop.value)
        except BaseException as exc:
            waiter.set(error=exc)
        else:
            self._adopt(coro, pending, waiter)

    def _adopt(self, coro: Coroutine[Any, Any, Any], pending: Any, waiter: _Waiter) -> None:
        waiter.task = task = self.loop.create_task(_resume(coro, pending))
        task.add_done_callback(waiter.from_task)

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
        fn: SessionFn,
        *,
        user_id: str | None = None,
    ) -> dict[str, Any] | None:
        """See :meth:`AsyncInMemoryDb.update_session`; ``fn`` runs while the store's loop is held (in this thread or
        the loop thread), so it must not call the store itself."""
        return self._portal.call(self._db.update_session(session_id, fn, user_id=user_id))

    def rename_session(
        self, session_id: str, session_name: str, *, user_id: str | None = None
    ) -> dict[str, Any] | None:
        """See :meth:`AsyncInMemoryDb.rename_session`."""
        return self._portal.call(self._db.rename_session(session_id, session_name, user_id=user_id))

    def refresh(self, session_id: str) -> dict[str, Any] | None:
        """See :meth:`AsyncInMemoryDb.refresh`."""
        return self._portal.call(self._db.refresh(session_id))

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
