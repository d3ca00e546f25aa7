"""The sync driver: kernel transactions in the caller's thread, I/O on one loop thread.

:class:`SyncDriver` mirrors :class:`~aiomemdb._io._runtime.Runtime`'s ``call`` / ``write`` / ``after_write``
without ``await``: it runs the kernel transaction directly in the calling thread; only when the kernel raises
:class:`~aiomemdb._kernel.NeedsLoad` (a lazy miss, an evicted payload), when a read-modify-write holds the
session's lock, or when the durability policy makes the call wait for storage, does the work go to the loop
thread, where the runtime runs it as a real task (with the caller's context) exactly as in the async core.

Three things only a blocking driver has to care about:

- **Ctrl-C.** On the main thread a ``KeyboardInterrupt`` can arrive between any two bytecodes, also inside a
  kernel commit, between applying a write and marking it dirty. The kernel enters :data:`~aiomemdb._sigint.GUARD`
  around every commit (and this driver around every transaction of a bounded store, whose reads move the LRU):
  SIGINT is deferred there and delivered once the commit is whole (see ``_sigint.py``).
- **Close racing calls.** Calls in other threads do not run on the loop, so close waits until every call in
  progress has left the kernel (the *gate*) before the final flush; a call arriving after that raises
  :class:`~aiomemdb.ClosedError`. A write therefore either is in the final flush or raises.
- **Events** (``on_event``) run on the loop thread, one thread for every callback: a caller thread's events are
  handed over and the call returns once they were delivered.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from aiomemdb import _exit
from aiomemdb._async import AsyncInMemoryDb
from aiomemdb._exceptions import ClosedError
from aiomemdb._io._runtime import OPEN
from aiomemdb._kernel import NeedsLoad
from aiomemdb._sigint import GUARD
from aiomemdb._sync_loop import DEADLOCK, LoopThread

__all__ = ["FORKED", "Lifecycle", "SyncDriver"]

T = TypeVar("T")
logger = logging.getLogger("aiomemdb")
FORKED = (
    "this InMemoryDb was inherited across os.fork(): its loop thread does not exist in this process, and the "
    "parent owns its data. Create a new store in the child (after the fork)."
)


class SyncDriver:
    """One blocking store's machinery: its async store, the loop thread, the gate and SIGINT deferral."""

    def __init__(self, db: AsyncInMemoryDb) -> None:
        self.db = db
        self.kernel = db._kernel
        self.rt = db._rt
        self.loop = LoopThread()
        self.forked = False
        self.closed = False
        self._gate = threading.Lock()
        self._inside: set[int] = set()  # the threads with a call inside the gate (see enter)
        self.leave = self._inside.discard  # leave(me): one C call
        self._closer: int | None = None  # the thread that closes (its own entry is not a call in progress)
        self._closing = False
        self._pause = threading.Event()  # never set: close_gate waits on it as a bounded pause
        self.kernel.on_event = self._event
        self.kernel.guard = GUARD
        # A read of a bounded store updates the LRU, so it is a mutation too: guard the whole transaction.
        self._guard_reads = self.kernel.res.bounded

    # -- the gate ----------------------------------------------------------------------------------------------

    def enter(self, me: int) -> None:
        """Admit a call of the thread ``me`` (``threading.get_ident()``); raises ClosedError once closing.

        Callers take ``me`` first, then call this as the first thing inside a ``try`` whose ``finally`` calls
        :attr:`leave` (``set.discard``, one C call), so that a ``KeyboardInterrupt`` on the main thread, which can
        land between any two calls, never leaves an admission behind: before ``try`` nothing is admitted, and
        the leave cannot be split. The gate holds threads, not a count: a thread is in one call at a time (calls
        do not nest, and a callback runs on the loop thread, where calls raise DEADLOCK), and close ignores its
        own thread's entry.
        """
        if self.forked:  # before the gate: a parent thread may have held its lock at the fork
            raise ClosedError(FORKED)
        if self.loop.on_loop():
            raise ClosedError(DEADLOCK)
        with self._gate:
            if self._closing or self.closed:
                raise ClosedError(FORKED if self.forked else "this InMemoryDb is closed")
            self._inside.add(me)
        if self.rt.state != OPEN:
            self.run(self.rt.start)  # raises ClosedError if the store is closing or closed

    @property
    def active(self) -> int:
        """How many threads have a call inside the gate."""
        return len(self._inside)

    def _others_inside(self) -> bool:
        return any(ident != self._closer for ident in tuple(self._inside))  # a snapshot: leaves do not lock

    def close_gate(self, timeout: float | None = None) -> bool:
        """Refuse new calls and wait for those in progress (at most ``timeout`` s); whether they all left.

        A leave is one ``set.discard`` with no wake-up (a wake-up would be Python code a Ctrl-C could split), so
        this polls, from 1 ms backing off to 20 ms; it only runs while calls are still inside, at close.
        """
        with self._gate:
            self._closing = True
            self._closer = threading.get_ident()
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.001
        while self._others_inside():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self._pause.wait(pause)
            pause = min(pause * 2, 0.02)
        return True

    def after_fork(self) -> None:
        """In a forked child: every call raises ClosedError (FORKED). The locks are new: a parent thread may have
        held one at the fork, and it does not exist here to release it."""
        self.forked = self.closed = True
        self._gate = threading.Lock()
        self._inside = set()
        self.leave = self._inside.discard

    def reopen_gate(self) -> None:
        with self._gate:
            self._closing = False

    # -- kernel calls --------------------------------------------------------------------------------------------

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one kernel transaction here; if it needs storage, run it on the loop (fetch, then retry)."""
        try:
            return self._here(fn, *args)
        except NeedsLoad:
            pass
        return self.run(lambda: self.rt.call(fn, *args))

    def read(self, fn: Callable[..., T], *args: Any) -> T:
        """A read-only transaction, admitted without the gate while the store is open.

        The gate exists so that close waits for writes in progress (each is in the final flush or raises). A
        read changes nothing a flush writes, and close leaves memory as it is, so a read that races close
        returns what it would have returned a moment earlier. What a read must not do is start I/O on a closing
        store: when the kernel needs storage (a lazy miss, an evicted payload) the read passes the gate like any
        call, and so does every call of a store that is not plainly open (closing, closed, forked, not started)
        or made on the loop thread.
        """
        if self._closing or self.closed or self.rt.state != OPEN or self.loop.on_loop():
            me = threading.get_ident()
            try:
                self.enter(me)
                return self.call(fn, *args)
            finally:
                self.leave(me)
        try:
            return self._here(fn, *args)
        except NeedsLoad:
            pass
        me = threading.get_ident()
        try:
            self.enter(me)
            return self.run(lambda: self.rt.call(fn, *args))
        finally:
            self.leave(me)

    def _here(self, fn: Callable[..., T], *args: Any) -> T:
        """The transaction in the calling thread (raises NeedsLoad if it needs storage); events delivered after."""
        kernel = self.kernel
        try:
            if self._guard_reads:
                return GUARD.run(fn, kernel, *args, frozenset())  # type: ignore[no-any-return]
            return fn(kernel, *args, frozenset())
        finally:
            kernel.deliver()

    def write(self, sids: Sequence[str], fn: Callable[..., T], *args: Any) -> T:
        """A write; it waits (on the loop) for a read-modify-write holding any of ``sids``' locks."""
        locks = self.rt.locks
        if locks and any(sid in locks for sid in sids):
            return self.run(lambda: self.rt.write(sids, fn, *args))
        return self.call(fn, *args)

    def after_write(self) -> None:
        """Wait, as the durability policy asks, until the write is durable (journal fsync or flush)."""
        syncer = self.rt.syncer
        if syncer is not None:
            if syncer.interval == 0:
                self.run(syncer.wait)
        elif self.rt.durability == "write" and (flusher := self.rt.flusher) is not None:
            self.run(lambda: flusher.until_persisted(self.kernel.seq))

    def run(self, make: Callable[[], Coroutine[Any, Any, T]], *, timeout: float | None = None) -> T:
        """Run I/O on the loop thread as a real task (``make()``, made there with SIGINT deferred) and wait for it."""
        if self.forked:
            raise ClosedError(FORKED)
        return self.loop.run(make, timeout=timeout)

    # -- events ----------------------------------------------------------------------------------------------

    def _event(self, kind: str, data: dict[str, Any]) -> None:
        """The kernel's event sink: deliver on the loop thread; a caller thread waits until it was delivered."""
        if self.loop.on_loop() or self.loop.stopped:
            self.db._emit(kind, data)
            return
        done = threading.Event()

        def deliver() -> None:
            try:
                self.db._emit(kind, data)
            except (KeyboardInterrupt, SystemExit):  # raised by a callback: it must not kill the loop thread
                logger.exception("aiomemdb: on_event callback raised for a %r event", kind)
            finally:
                done.set()

        try:
            self.loop.call_soon(deliver)
        except RuntimeError:  # the loop is closed (calls are gated, so only at the very end of a close)
            self.db._emit(kind, data)
            return
        done.wait()


class Lifecycle:
    """Close, exit and fork for one facade; held by the finalizer and the exit registry, never by the facade's users."""

    def __init__(self, driver: SyncDriver) -> None:
        self.driver = driver
        self.finalizer: weakref.finalize[Any, Any] | None = None
        self.closing: asyncio.Task[None] | None = None
        self._closing_lock = threading.Lock()  # one blocking close at a time

    def close(self, *, timeout: float | None = None) -> None:
        """Close once: a close that finds another in progress waits for it (and returns if it closed the store)."""
        d = self.driver
        if d.closed:
            return
        if d.loop.on_loop():
            raise ClosedError(DEADLOCK)
        if not self._closing_lock.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError(f"another close of this InMemoryDb did not finish within {timeout} s")
        try:
            if d.closed:
                return
            d.close_gate(timeout)
            try:
                d.run(d.rt.aclose, timeout=timeout)
            except BaseException:
                d.reopen_gate()
                raise
            d.closed = True
            _exit.untrack_blocking(self)
            if self.finalizer is not None:
                self.finalizer.detach()
            d.loop.stop()
        finally:
            self._closing_lock.release()

    def close_at_exit(self) -> None:
        d = self.driver
        if d.closed or d.forked:
            return
        try:
            self.close(timeout=_exit.EXIT_TIMEOUT)
        except BaseException as exc:
            lost = d.kernel.unflushed()
            _exit.report(f"the final flush of an InMemoryDb at interpreter exit failed ({exc!r}): {lost} changes lost")

    async def _close_here(self) -> None:
        d = self.driver
        d.close_gate(0)
        try:
            await d.rt.aclose()
        except BaseException as exc:
            d.reopen_gate()
            lost = d.kernel.unflushed()
            _exit.report(f"closing a garbage-collected InMemoryDb failed ({exc!r}): {lost} changes are lost")
            return
        d.closed = True
        _exit.untrack_blocking(self)
        d.loop.stop()

    def after_fork(self) -> None:
        d = self.driver
        d.after_fork()
        if self.finalizer is not None:
            self.finalizer.detach()

    def collected(self) -> None:
        """The facade was garbage-collected unclosed: close it like close() would, but never raise."""
        d = self.driver
        if d.closed or d.forked:
            return
        if d.loop.on_loop():  # collected on its own loop thread, which must not block: close in a task
            self.closing = d.loop.loop.create_task(self._close_here())
            return
        try:
            self.close()
        except BaseException as exc:
            lost = self.driver.kernel.unflushed()
            _exit.report(f"closing a garbage-collected InMemoryDb failed ({exc!r}): {lost} changes are lost")
