"""Open stores at interpreter exit and after ``os.fork()``.

**Exit.** One ``atexit`` handler (registered when aiomemdb is imported, so it runs after the handlers of code
imported later) closes, with a final flush, every store still open:

- a blocking :class:`~aiomemdb.InMemoryDb` (and so the sync Agno class): its close runs on its own loop thread,
  which is a daemon thread and still runs while ``atexit`` handlers do. Its default executor runs blocking file
  work inline once ``concurrent.futures`` has shut its pools down (it does so *before* ``atexit``), so no pool is
  involved;
- an :class:`~aiomemdb.AsyncInMemoryDb` whose event loop is still alive (running in another thread, or idle and
  not closed): ``aclose()`` runs on that loop, with the same inline executor installed first. One whose loop is
  gone (``asyncio.run`` returned) cannot be flushed any more; it is reported.

Whatever fails is printed to stderr, with the number of changes lost: at exit nobody can catch an exception, and
the ``aiomemdb`` logger has no handler by default.

**Fork.** In a child process, every store inherited from the parent is closed *for the child*: its loop thread
does not exist there, and its data belongs to the parent (which keeps flushing it). Every call raises
:class:`~aiomemdb.ClosedError` at once, and nothing is flushed at the child's exit, so a child that only exits
exits promptly. A store created in the child works normally.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import sys
import weakref
from typing import TYPE_CHECKING, Protocol

from aiomemdb._sync_loop import ExitSafeExecutor

if TYPE_CHECKING:
    from aiomemdb._async import AsyncInMemoryDb

__all__ = ["EXIT_TIMEOUT", "report", "track_async", "track_blocking", "untrack_async", "untrack_blocking"]

EXIT_TIMEOUT = 60.0  # seconds one store's final flush may take at exit before we give up and say so


class _Blocking(Protocol):
    def close_at_exit(self) -> None: ...

    def after_fork(self) -> None: ...


_blocking: dict[int, _Blocking] = {}
_async: weakref.WeakSet[AsyncInMemoryDb] = weakref.WeakSet()


def track_blocking(driver: _Blocking) -> None:
    _blocking[id(driver)] = driver


def untrack_blocking(driver: _Blocking) -> None:
    _blocking.pop(id(driver), None)


def track_async(db: AsyncInMemoryDb) -> None:
    _async.add(db)


def untrack_async(db: AsyncInMemoryDb) -> None:
    _async.discard(db)


def report(message: str) -> None:
    """Say something at exit where a user sees it."""
    print(f"aiomemdb: {message}", file=sys.stderr, flush=True)


def _at_exit() -> None:
    for driver in list(_blocking.values()):
        driver.close_at_exit()
    for db in list(_async):
        _close_async(db)


async def _final_close(db: AsyncInMemoryDb) -> None:
    asyncio.get_running_loop().set_default_executor(ExitSafeExecutor(thread_name_prefix="aiomemdb-exit"))
    await db.aclose()


def _close_async(db: AsyncInMemoryDb) -> None:
    rt = db._rt
    if rt.state not in ("open", "starting", "closing") or db._persistence is None:
        return
    dirty = db._kernel.unflushed()
    loop = rt.loop
    if loop is None or loop.is_closed():
        if dirty:
            report(f"an AsyncInMemoryDb was never closed and its event loop is gone: {dirty} unflushed changes lost")
        return
    try:
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(_final_close(db), loop).result(EXIT_TIMEOUT)
        else:
            loop.run_until_complete(_final_close(db))
    except BaseException as exc:
        lost = db._kernel.unflushed()
        report(f"the final flush of an unclosed AsyncInMemoryDb at exit failed ({exc!r}): {lost} changes are lost")
    else:
        report(f"an AsyncInMemoryDb was still open at exit; closed it, flushing {dirty} changes (use 'async with')")


def _after_fork_in_child() -> None:
    for driver in list(_blocking.values()):
        driver.after_fork()
    _blocking.clear()
    for db in list(_async):
        if db._rt.state != "new":
            db._rt.state = "closed"  # its loop and tasks are the parent's; the parent flushes its data
            _async.discard(db)


atexit.register(_at_exit)
os.register_at_fork(after_in_child=_after_fork_in_child)
