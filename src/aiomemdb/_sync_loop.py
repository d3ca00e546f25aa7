"""The blocking facade's one background event loop: a daemon thread that runs the store's I/O as real tasks.

A blocking caller hands a coroutine to :meth:`LoopThread.run`; it becomes an ``asyncio.Task`` on the loop thread,
created with a copy of the caller's context (so context variables, ``asyncio.current_task()`` and
``asyncio.timeout`` inside it behave exactly as in the async core), and the caller waits for its outcome. If the
wait is interrupted (Ctrl-C on the main thread), the task is cancelled: at its next ``await``, where no kernel
transaction is ever in progress (they are synchronous), so a write lands whole or not at all.

The loop's default executor is :class:`ExitSafeExecutor`. ``concurrent.futures`` shuts every thread pool down
before ``atexit`` handlers run (``asyncio.to_thread`` then fails with "cannot schedule new futures after
interpreter shutdown"); this executor runs the blocking call inline on the loop thread instead, which is what
makes the final flush at interpreter exit work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from aiomemdb._exceptions import ClosedError
from aiomemdb._sigint import GUARD

logger = logging.getLogger("aiomemdb")

__all__ = ["DEADLOCK", "ExitSafeExecutor", "LoopThread"]

T = TypeVar("T")
P = ParamSpec("P")

DEADLOCK = (
    "a blocking InMemoryDb method was called from the store's own loop thread (inside an update_session "
    "function or an on_event callback); it would deadlock. Use the values passed to the function instead."
)


class ExitSafeExecutor(concurrent.futures.ThreadPoolExecutor):
    """A thread pool that runs a call inline once pools can no longer start work (interpreter exit).

    At exit blocking the loop thread is harmless: the final flush is all it still has to do.
    """

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> concurrent.futures.Future[T]:
        try:
            return super().submit(fn, *args, **kwargs)
        except RuntimeError:  # "cannot schedule new futures after (interpreter) shutdown"
            future: concurrent.futures.Future[T] = concurrent.futures.Future()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
            return future


class _Call:
    """One coroutine handed to the loop thread, the task running it, and its outcome.

    The caller waits on ``done``, a plain lock the loop thread only ever *releases* (after setting
    ``outcome``). Not a ``concurrent.futures.Future``: its condition is an RLock that the waiting thread holds
    around every check, and a ``KeyboardInterrupt`` landing inside ``Condition.wait``'s own clean-up (a burst of
    Ctrl-C on the main thread) can leave it held, after which the loop thread blocks forever setting the result,
    and every store on that loop with it. A lock's ``acquire`` is either done or not.
    """

    __slots__ = ("cancelled", "coro", "ctx", "done", "outcome", "task")

    def __init__(self, ctx: contextvars.Context) -> None:
        self.coro: Coroutine[Any, Any, Any] | None = None  # set once handed over (with SIGINT deferred)
        self.ctx = ctx
        self.done = threading.Lock()
        self.done.acquire()
        self.outcome: tuple[bool, Any] | None = None  # (True, result) or (False, exception); None: cancelled
        self.task: asyncio.Task[Any] | None = None
        self.cancelled = False

    def settle(self, outcome: tuple[bool, Any] | None) -> None:
        """On the loop thread, once: record the outcome and wake the caller (never blocks)."""
        self.outcome = outcome
        self.done.release()


class LoopThread:
    """An event loop running in one daemon thread (named ``aiomemdb-portal``) until :meth:`stop`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._executor = ExitSafeExecutor(thread_name_prefix="aiomemdb-io")
        self.loop.set_default_executor(self._executor)
        self.stopped = False
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), name="aiomemdb-portal", daemon=True)
        self.thread.start()
        started.wait()
        self.ident = self.thread.ident

    def _run(self, started: threading.Event) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        loop.call_soon(started.set)
        try:
            loop.run_forever()
        finally:
            self.stopped = True  # also when the loop died of an error: later calls raise ClosedError
            pending = list(asyncio.all_tasks(loop))
            for task in pending:
                task.cancel()
            outcomes = loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            for task, outcome in zip(pending, outcomes, strict=True):
                if isinstance(outcome, Exception):  # not a CancelledError: a task failed as the loop stopped
                    logger.error("aiomemdb: %r failed as its loop stopped", task, exc_info=outcome)
            loop.run_until_complete(loop.shutdown_asyncgens())
            # Not loop.shutdown_default_executor(): it starts a thread to join the pool, which Python 3.12+
            # refuses once the interpreter is shutting down (this runs at exit too). Joining the pool here, on
            # the loop's own thread after the loop stopped, blocks nothing else.
            self._executor.shutdown(wait=True)
            loop.close()

    def on_loop(self) -> bool:
        """Whether the calling thread is the loop thread."""
        return threading.get_ident() == self.ident

    def run(self, make: Callable[[], Coroutine[Any, Any, T]], *, timeout: float | None = None) -> T:
        """Run ``make()`` as a task on the loop, with a copy of the caller's context; block until it ends.

        The coroutine is made and handed over with SIGINT deferred (:data:`~aiomemdb._sigint.GUARD`): a Ctrl-C
        on the main thread can come before it exists or once the loop owns it, never in between, where the
        coroutine would be dropped unawaited (a ``RuntimeWarning``, and a later Ctrl-C could be lost in printing
        it). A Ctrl-C (or the timeout) while waiting cancels the task at its next await.

        Raises:
            ClosedError: called from the loop thread itself (it would deadlock), or the loop has stopped.
            TimeoutError: ``timeout`` seconds passed (the task is cancelled).
        """
        if self.on_loop():
            raise ClosedError(DEADLOCK)
        if self.stopped:
            raise ClosedError("this InMemoryDb is closed")
        call = _Call(contextvars.copy_context())
        try:
            GUARD.run(self._hand_over, call, make)
            if not call.done.acquire(timeout=-1 if timeout is None else timeout):
                raise TimeoutError(f"the call did not finish within {timeout} s")
        except BaseException:
            if call.coro is not None and call.outcome is None:
                # KeyboardInterrupt (or the timeout) while waiting: cancel the task at its next await.
                self.loop.call_soon_threadsafe(self._cancel, call)
            raise
        outcome = call.outcome
        if outcome is None:
            raise ClosedError("this InMemoryDb's loop stopped while the call was running")
        ok, value = outcome
        if not ok:
            raise value
        result: T = value
        return result

    def _hand_over(self, call: _Call, make: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        coro = call.coro = make()
        try:
            self.loop.call_soon_threadsafe(self._start, call)
        except BaseException as exc:  # the loop closed meanwhile: it never saw the coroutine
            call.coro = None
            coro.close()
            if isinstance(exc, RuntimeError) and self.loop.is_closed():
                raise ClosedError("this InMemoryDb is closed") from None
            raise

    def _start(self, call: _Call) -> None:
        coro = call.coro
        assert coro is not None  # set before the handover
        if call.cancelled:
            coro.close()
            call.settle(None)
            return
        task = call.task = self.loop.create_task(_outcome(coro), context=call.ctx)
        task.add_done_callback(lambda t: _settle(t, call))

    @staticmethod
    def _cancel(call: _Call) -> None:
        call.cancelled = True
        if call.task is not None:
            call.task.cancel()

    def call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        """Schedule ``fn(*args)`` on the loop thread from any thread (in order)."""
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        """Stop the loop (its remaining tasks are cancelled) and join the thread; idempotent."""
        if self.stopped:
            return
        self.stopped = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        if not self.on_loop():
            self.thread.join()


async def _outcome(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """``coro``'s result or exception, as ``(ok, value)``. A ``KeyboardInterrupt`` or ``SystemExit`` raised inside
    (a user's ``update_session`` function calling ``sys.exit()``, say) would otherwise be re-raised by asyncio out
    of the loop itself, killing the loop of every call waiting on it; here it goes to the caller, like any error.
    """
    try:
        return True, await coro
    except (KeyboardInterrupt, SystemExit) as exc:
        return False, exc


def _settle(task: asyncio.Task[Any], call: _Call) -> None:
    if call.coro is not None:
        call.coro.close()  # a no-op once it ran; a task cancelled before its first step never awaited it
    if task.cancelled():
        call.settle(None)
        return
    exc = task.exception()
    call.settle((False, exc) if exc is not None else task.result())
