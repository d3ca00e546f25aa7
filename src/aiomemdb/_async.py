"""AsyncInMemoryDb: the async driver over the kernel.

This class checks arguments, decides how to wait, and decodes results; every state change happens in the
kernel (``_kernel/``) and every I/O part is owned by the runtime (``_io/_runtime.py``). All state belongs to one
event loop: a write is a synchronous kernel transaction with no ``await`` inside, so it is atomic with respect
to every other task and cannot be half-done by a cancellation. The only read-modify-write that spans an
``await`` is :meth:`AsyncInMemoryDb.update_session` (its function may be a coroutine); it holds the session's
lock, which plain writes of that session wait for.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiomemdb import _exit
from aiomemdb._async_records import RecordFn, RecordsApi
from aiomemdb._async_sessions import SessionFn, SessionsApi
from aiomemdb._config import Config, Durability, StoreOptions
from aiomemdb._exceptions import UnclosedStoreWarning
from aiomemdb._io._runtime import OPEN, STARTING, Runtime
from aiomemdb._kernel import (
    Kernel,
    Residency,
    SortBy,
    SortOrder,
)
from aiomemdb._kernel import _ops as ops
from aiomemdb._kernel._storage import rewrite_resident
from aiomemdb._stats import Event, FlushReport, Stats
from aiomemdb.persistence._base import EmitsEvents, Persistence, WriterPolicy

__all__ = ["AsyncInMemoryDb", "Durability", "RecordFn", "SessionFn", "SortBy", "SortOrder", "StoreOptions"]

logger = logging.getLogger("aiomemdb")


class AsyncInMemoryDb(SessionsApi, RecordsApi):
    """An in-memory session store with async operations and incremental persistence.

    Args:
        persistence: where data lives between runs (:class:`~aiomemdb.DirectoryPersistence`,
            :class:`~aiomemdb.S3Persistence`, or anything implementing the protocol). ``None`` keeps
            everything in memory only.
        load: instead of ``persistence``, an async callable returning a whole snapshot dict (or a
            seed-style ``{session_id: session}`` dict, or ``None`` for "nothing yet").
        save: instead of ``persistence``, an async callable receiving the whole snapshot dict after changes.
        storage_dict: the caller's dict becomes the live session storage: ``session_id -> session dict``.
            It is validated here (a bad entry raises :class:`ValidationError` naming its key) and then kept
            in step with every write; read it freely, write through the store.
        durability: ``"interval"`` (flush in the background every ``flush_interval`` seconds), ``"write"``
            (each write returns once persisted), ``"manual"`` (only :meth:`flush` and close write) or
            ``"journal"`` (each write is appended to a local journal before it returns; flushes as
            ``"interval"``).
        flush_interval: seconds between background flushes.
        journal_path: the journal's directory; defaults to ``journal/`` inside a
            :class:`~aiomemdb.DirectoryPersistence` root (any other persistence must name one for
            ``durability="journal"``). Whatever the durability, a store that finds journal segments there
            replays them on start (and, if it does not journal itself, flushes and removes them before it opens).
        journal_fsync: seconds between journal fsyncs (a power loss loses at most this window); ``0`` fsyncs
            before each write returns (concurrent writes share one fsync).
        lazy: do not load everything at start; fetch a session (or record) from persistence the first time
            it is asked for. Listings then only cover what has been loaded.
        max_sessions: keep at most this many sessions' payloads in memory; the least recently used clean
            ones are evicted and reloaded on demand (needs a persistence).
        max_bytes: the same bound on the sessions' encoded size.
        ttl: evict sessions neither read nor written for this many seconds (they reload on demand).
        max_backoff: the longest pause, in seconds, between retries of a failing background flush.
        on_event: called (on the store's loop, synchronously) with an :class:`~aiomemdb.Event` for every
            flush, failed flush, load, on-demand load, merge, eviction and expiry; feed your metrics from it.
            An exception it raises is logged and otherwise ignored. For the blocking
            :class:`~aiomemdb.InMemoryDb` it always runs on the store's loop thread (``aiomemdb-portal``).
        clock: the store's clock in unix seconds (tests inject a fake one).
    """

    def __init__(
        self,
        *,
        persistence: Persistence | None = None,
        load: Callable[[], Awaitable[Mapping[str, Any] | None]] | None = None,
        save: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
        storage_dict: dict[str, Any] | None = None,
        durability: Durability = "interval",
        flush_interval: float = 1.0,
        journal_path: str | Path | None = None,
        journal_fsync: float = 1.0,
        lazy: bool = False,
        max_sessions: int | None = None,
        max_bytes: int | None = None,
        ttl: float | None = None,
        max_backoff: float = 30.0,
        on_event: Callable[[Event], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        config = Config.build(
            persistence=persistence, load=load, save=save, storage_dict=storage_dict, durability=durability,
            flush_interval=flush_interval, journal_path=journal_path, journal_fsync=journal_fsync, lazy=lazy,
            max_sessions=max_sessions, max_bytes=max_bytes, ttl=ttl, max_backoff=max_backoff,
            on_event=on_event, clock=clock,
        )  # fmt: skip
        self._config = config
        self._persistence = config.persistence
        self._kernel = Kernel(
            lazy=config.lazy,
            persistent=config.persistence is not None,
            mirror=config.storage_dict,
            clock=config.clock,
            residency=Residency(max_sessions=config.max_sessions, max_bytes=config.max_bytes, ttl=config.ttl),
            on_event=self._emit,
            wake_flusher=lambda: None,
        )
        self._rt = Runtime(
            self._kernel,
            config.persistence,
            durability=config.durability,
            flush_interval=config.flush_interval,
            max_backoff=config.max_backoff,
            journal_dir=config.journal_dir,
            journal_fsync=config.journal_fsync,
            ttl=config.ttl,
            emit=self._emit,
        )
        if config.storage_dict is not None:
            ops.adopt_storage_dict(self._kernel, config.storage_dict)
        if isinstance(config.persistence, EmitsEvents):
            config.persistence.bind_events(self._storage_event)
        _exit.track_async(self)  # flushed at interpreter exit if its loop is still alive (see _exit.py)

    def _storage_event(self, kind: str, data: dict[str, Any]) -> None:
        """An event the persistence reports. A folder it had to create again lost the files of every record in it,
        so whatever memory holds of them is written back by the next flush; the event counts both."""
        if kind == "recreate":
            rewritten, lost = rewrite_resident(self._kernel, data.get("collection"))
            data = {**data, "rewritten": rewritten, "lost": lost}
            if lost:
                logger.error("aiomemdb: %s was removed; %d sessions not in memory are lost with it", data["path"], lost)
        self._emit(kind, data)

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        callback = self._config.on_event
        if callback is None:
            return
        try:
            callback(Event(kind=kind, at=time.time(), data=data))  # type: ignore[arg-type]
        except Exception:
            logger.exception("aiomemdb: on_event callback failed for a %r event", kind)

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> Self:
        """Load from persistence, replay the journal, and start the background tasks; idempotent.

        Every operation starts the store on first use, so calling this is only needed to load eagerly or to
        see load errors early.

        Raises:
            ClosedError: the store was closed.
            PersistenceError, CorruptDataError: loading failed; the store stays unstarted and can be retried.
        """
        await self._rt.start()
        return self

    async def aclose(self) -> None:
        """Stop the background tasks, flush what is dirty, and release the persistence; idempotent.

        Concurrent callers all wait for the one close in progress and see its outcome.

        Raises:
            PersistenceError: the final flush failed. The store stays open (nothing is lost) and the
                background flusher keeps retrying; call ``aclose()`` again to retry.
        """
        await self._rt.aclose()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        rt = getattr(self, "_rt", None)
        if rt is not None and rt.state in (OPEN, STARTING) and self._persistence is not None:
            _warn(
                f"AsyncInMemoryDb was never closed ({self._kernel.unflushed()} unflushed changes); "
                "use 'async with' or aclose()",
                UnclosedStoreWarning,
                stacklevel=1,
            )

    async def flush(self) -> FlushReport:
        """Write every change since the last successful flush; one flush runs at a time.

        Raises:
            PersistenceError: storage failed; every change stays dirty and is retried by the next flush.
            ConflictError: another replica's write conflicted and the persistence's policy is ``"raise"``.
        """
        if self._rt.state not in ("open", "closing"):
            await self._rt.ready()
        if self._rt.flusher is None:
            return FlushReport()
        return await self._rt.flusher.flush()

    def stats(self) -> Stats:
        """A snapshot of the store's counters; cheap (no scan of the sessions, only of collection sizes)."""
        flusher = self._rt.flusher
        quarantined = self._persistence.quarantined if self._persistence is not None else ()
        policy = self._persistence if isinstance(self._persistence, WriterPolicy) else None
        return Stats(
            state=self._rt.state,
            flushes=flusher.flushes if flusher else 0,
            flush_failures=flusher.failures if flusher else 0,
            last_flush_duration=flusher.last_duration if flusher else None,
            last_flush_at=flusher.last_at if flusher else None,
            last_error=(flusher.last_error if flusher else None) or self._rt.last_error,
            quarantined=len(quarantined),
            single_writer=policy.single_writer if policy is not None else None,
            conditional_writes=policy.conditional_writes if policy is not None else None,
            **self._kernel.sizes(),
        )

    def __repr__(self) -> str:
        k = self._kernel
        return f"<AsyncInMemoryDb {self._rt.state} sessions={len(k.sessions)} dirty={len(k.dirty)}>"

