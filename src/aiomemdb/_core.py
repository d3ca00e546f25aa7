"""AsyncInMemoryDb: the async core every other part of aiomemdb wraps.

Concurrency model. All state belongs to one event loop. Every write is a synchronous critical section
(validate, encode, swap the record, update the indexes, mark it dirty, journal it) with no ``await`` inside, so
it is atomic with respect to every other task and cannot be half-done by a cancellation. The only
read-modify-writes that span an ``await`` are :meth:`AsyncInMemoryDb.update_session` (the caller's function may
be a coroutine), bulk writes and writes that must first reload an evicted session; they hold per-session
:class:`asyncio.Lock` s, created on demand and dropped when nobody uses them. A plain write only waits when
such a lock exists for its session.

The class is assembled from mixins, one idea per file: ``_store.py`` (shared state and the commit
primitives), ``_durability.py`` (flushing, loading, journal replay), ``_memory.py`` (lazy loads, eviction,
expiry) and ``_collections.py`` (named record collections). This file holds the lifecycle and the sessions API.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
import time
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self, TypedDict, TypeVar

import orjson

from aiomemdb._codec import SESSIONS, check_id
from aiomemdb._collections import CollectionsMixin, RecordFn
from aiomemdb._durability import DurabilityMixin
from aiomemdb._exceptions import (
    ClosedError,
    ConflictError,
    CorruptDataError,
    NotFoundError,
    OwnershipError,
    ValidationError,
)
from aiomemdb._journal import Journal
from aiomemdb._memory import MemoryMixin
from aiomemdb._options import check_hooks, check_persistence
from aiomemdb._record import SessionRecord
from aiomemdb._stats import Event, Stats
from aiomemdb._store import (
    CLOSED,
    CLOSING,
    NEW,
    OPEN,
    STARTING,
    Durability,
    check_ids,
    check_limit,
    check_optional_str,
    stamp,
)
from aiomemdb.persistence._base import Key, Persistence
from aiomemdb.persistence._directory import DirectoryPersistence
from aiomemdb.persistence._hooks import HookPersistence

__all__ = ["AsyncInMemoryDb", "Durability", "RecordFn", "SessionFn", "SortBy", "SortOrder", "StoreOptions"]

SortBy = Literal["updated_at", "created_at", "session_id"]
SortOrder = Literal["asc", "desc"]
SessionFn = Callable[[dict[str, Any] | None], "dict[str, Any] | Awaitable[dict[str, Any] | None] | None"]
T = TypeVar("T")

_DURABILITY: Final = ("interval", "write", "manual", "journal")
_SORT_BY: Final = ("updated_at", "created_at", "session_id")


class StoreOptions(TypedDict, total=False):
    """The keyword arguments of :class:`AsyncInMemoryDb`, for the classes that create one for you
    (:class:`~aiomemdb.InMemoryDb`, the Agno adapters). See :class:`AsyncInMemoryDb` for their meaning."""

    persistence: Persistence | None
    load: Callable[[], Awaitable[Mapping[str, Any] | None]] | None
    save: Callable[[dict[str, Any]], Awaitable[None]] | None
    storage_dict: dict[str, Any] | None
    durability: Durability
    flush_interval: float
    journal_path: str | Path | None
    journal_fsync: float
    lazy: bool
    max_sessions: int | None
    max_bytes: int | None
    ttl: float | None
    max_backoff: float
    on_event: Callable[[Event], None] | None
    clock: Callable[[], float]


def _positive(value: float | None, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValidationError(f"{what} must be a positive number, got {value!r}")
    return float(value)


class AsyncInMemoryDb(CollectionsMixin, MemoryMixin, DurabilityMixin):
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
            ``"interval"``; the journal is replayed on start).
        flush_interval: seconds between background flushes.
        journal_path: the journal's directory (``durability="journal"``); defaults to ``journal/`` inside a
            :class:`~aiomemdb.DirectoryPersistence` root; any other persistence must name one.
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
            An exception it raises is logged and otherwise ignored.
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
        persistence, (load, save) = check_persistence(persistence), check_hooks(load, save)
        if persistence is not None and (load is not None or save is not None):
            raise ValidationError("pass either persistence= or load=/save= hooks, not both")
        if load is not None or save is not None:
            persistence = HookPersistence(load=load, save=save)
        if durability not in _DURABILITY:
            raise ValidationError(f"durability must be one of {', '.join(_DURABILITY)}; got {durability!r}")
        flush_every = _positive(flush_interval, "flush_interval")
        assert flush_every is not None
        if lazy and persistence is None:
            raise ValidationError("lazy=True needs a persistence to load from")
        check_limit(max_sessions, "max_sessions")
        check_limit(max_bytes, "max_bytes")
        _positive(ttl, "ttl")
        bounded = max_sessions is not None or max_bytes is not None or ttl is not None
        if bounded and persistence is None:
            raise ValidationError("max_sessions, max_bytes and ttl need a persistence to reload evicted sessions")
        if bounded and storage_dict is not None:
            raise ValidationError("storage_dict holds every session by contract; it cannot be bounded")
        if not isinstance(journal_fsync, int | float) or journal_fsync < 0:
            raise ValidationError(f"journal_fsync must be >= 0 seconds, got {journal_fsync!r}")
        if durability == "journal":
            if persistence is None:
                raise ValidationError("durability='journal' needs a persistence to flush to")
            if journal_path is None:
                if not isinstance(persistence, DirectoryPersistence):
                    raise ValidationError(
                        "durability='journal' needs journal_path= unless the persistence is a directory"
                    )
                journal_path = persistence.path / "journal"
        elif journal_path is not None:
            raise ValidationError("journal_path is only used with durability='journal'")
        super().__init__(
            persistence=persistence,
            durability=durability,
            mirror=storage_dict,
            on_event=on_event,
            clock=clock,
            bounded=bounded,
        )
        self._flush_interval = flush_every
        self._max_backoff = float(max_backoff)
        self._lazy = lazy
        self._max_sessions = max_sessions
        self._max_bytes = max_bytes
        self._ttl = ttl
        self._journal_path = Path(journal_path) if journal_path is not None else None
        self._journal_fsync = float(journal_fsync)
        self._lazy_tasks: dict[Key, asyncio.Task[None]] = {}
        self._start_lock: asyncio.Lock | None = None
        self._flush_lock: asyncio.Lock | None = None
        self._flush_wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        if storage_dict is not None:
            self._adopt_storage_dict(storage_dict)

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> Self:
        """Load from persistence, replay the journal, and start the background tasks; idempotent.

        Every operation starts the store on first use, so calling this is only needed to load eagerly or to
        see load errors early.

        Raises:
            ClosedError: the store was closed.
            PersistenceError, CorruptDataError: loading failed; the store stays unstarted and can be retried.
        """
        if self._state == OPEN:
            return self
        if self._state in (CLOSING, CLOSED):
            raise ClosedError("this AsyncInMemoryDb is closed")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._start_lock = asyncio.Lock()
            self._flush_lock = asyncio.Lock()
            self._flush_wake = asyncio.Event()
        elif self._loop is not loop:
            raise RuntimeError("an AsyncInMemoryDb is bound to the event loop it was first used in")
        assert self._start_lock is not None
        async with self._start_lock:
            if self._state == OPEN:
                return self
            if self._state in (CLOSING, CLOSED):
                raise ClosedError("this AsyncInMemoryDb is closed")
            self._state = STARTING
            try:
                await self._open_storage()
            except BaseException as exc:
                self._state = NEW
                self._last_error = repr(exc)
                if self._persistence is not None:
                    # release what open() acquired (an S3 client); the next start() opens it again
                    with contextlib.suppress(Exception):
                        await self._persistence.aclose()
                raise
            if self._persistence is not None and self._durability != "manual":
                self._tasks.append(loop.create_task(self._flush_forever(), name="aiomemdb-flusher"))
            if self._ttl is not None:
                self._tasks.append(loop.create_task(self._sweep_forever(), name="aiomemdb-expiry"))
            self._state = OPEN
        return self

    async def _open_storage(self) -> None:
        if self._persistence is None:
            return
        await self._persistence.open()
        if not self._lazy:
            began = time.perf_counter()
            await self._ingest(await self._persistence.load())
            self._emit("load", records=self._loads, duration=time.perf_counter() - began)
        if self._journal_path is not None and self._journal is None:
            journal = Journal(self._journal_path, fsync_interval=self._journal_fsync)
            replayed = await self._replay(journal)
            journal.start()
            self._journal = journal
            if replayed:
                self._emit("load", journal_entries=replayed)

    async def aclose(self) -> None:
        """Stop the background tasks, flush what is dirty, and release the persistence; idempotent.

        Raises:
            PersistenceError: the final flush failed. The store stays open (nothing is lost) and the
                background flusher keeps retrying; call ``aclose()`` again to retry.
        """
        if self._state in (NEW, CLOSED):
            self._state = CLOSED
            return
        if self._state == STARTING:
            await self.start()
        if self._state == CLOSING:
            return
        self._state = CLOSING
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            if self._persistence is not None:
                await self.flush()
        except BaseException:
            self._state = OPEN
            if self._persistence is not None and self._durability != "manual" and self._loop is not None:
                self._tasks.append(self._loop.create_task(self._flush_forever(), name="aiomemdb-flusher"))
            raise
        for lazy in list(self._lazy_tasks.values()):
            lazy.cancel()
        if self._journal is not None:
            await self._journal.aclose()
        if self._persistence is not None:
            await self._persistence.aclose()
        self._state = CLOSED

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_state", CLOSED) in (OPEN, STARTING) and self._persistence is not None:
            dirty = len(self._dirty)
            _warn(
                f"AsyncInMemoryDb was never closed ({dirty} unflushed changes); use 'async with' or aclose()",
                ResourceWarning,
                stacklevel=1,
            )

    async def _ready(self) -> None:
        if self._state != OPEN:
            if self._state in (CLOSING, CLOSED):
                raise ClosedError("this AsyncInMemoryDb is closed")
            await self.start()
        elif asyncio.get_running_loop() is not self._loop:
            raise RuntimeError("an AsyncInMemoryDb is bound to the event loop it was first used in")

    # -- sessions: reads ---------------------------------------------------------------------------------------

    async def get_session(
        self, session_id: str, *, user_id: str | None = None, runs_limit: int | None = None
    ) -> dict[str, Any] | None:
        """Return a copy of a session, or ``None``.

        Args:
            session_id: the session to read.
            user_id: if given, a session owned by another user is reported as missing (owner guard).
            runs_limit: return only the last ``runs_limit`` runs.
        """
        await self._ready()
        check_optional_str(user_id, "user_id")
        check_id(session_id, what="session_id")
        check_limit(runs_limit, "runs_limit")
        rec = self._sessions.get(session_id)
        if rec is not None and user_id is not None and rec.user_id != user_id:
            return None
        return await self._read(
            session_id, lambda r: r.to_dict(runs_limit) if user_id is None or r.user_id == user_id else None
        )

    async def get_run(self, session_id: str, run_id: str, *, user_id: str | None = None) -> dict[str, Any] | None:
        """Return a copy of one run of a session (O(1): only that run is decoded), or ``None``."""
        await self._ready()
        check_optional_str(user_id, "user_id")
        check_id(session_id, what="session_id")
        check_id(run_id, what="run_id")
        return await self._read(
            session_id, lambda r: r.get_run(run_id) if user_id is None or r.user_id == user_id else None
        )

    async def get_sessions(
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
        """List sessions matching every given filter, one page at a time.

        Args:
            user_id: exact match on the owner.
            agent_id: exact match.
            team_id: exact match.
            workflow_id: exact match.
            component_id: matches the agent, team or workflow id.
            session_type: exact match (``"agent"``, ``"team"``, ``"workflow"``).
            session_name: case-insensitive substring of ``session_data.session_name``.
            start_timestamp: inclusive lower bound on ``created_at``.
            end_timestamp: inclusive upper bound on ``created_at``.
            sort_by: ``"updated_at"`` (ties: the later write first when descending), ``"created_at"`` or
                ``"session_id"``.
            sort_order: ``"desc"`` or ``"asc"``.
            limit: page size; ``None`` returns everything.
            page: 1-based page number (needs ``limit``).
            include_runs: ``False`` leaves ``runs`` out (list views).

        Returns:
            ``(sessions, total)`` where ``total`` counts every match, not just this page.
        """
        await self._ready()
        check_optional_str(user_id, "user_id")
        for name, value in (
            ("user_id", user_id), ("agent_id", agent_id), ("team_id", team_id), ("workflow_id", workflow_id),
            ("component_id", component_id), ("session_type", session_type), ("session_name", session_name),
        ):  # fmt: skip
            check_optional_str(value, name)
        for name, stamp_value in (("start_timestamp", start_timestamp), ("end_timestamp", end_timestamp)):
            if stamp_value is not None and (isinstance(stamp_value, bool) or not isinstance(stamp_value, int | float)):
                raise ValidationError(f"{name} must be a number of unix seconds or None, got {stamp_value!r}")
        if sort_by not in _SORT_BY:
            raise ValidationError(f"sort_by must be one of {', '.join(_SORT_BY)}; got {sort_by!r}")
        order = sort_order.lower() if isinstance(sort_order, str) else sort_order
        if order not in ("asc", "desc"):
            raise ValidationError(f"sort_order must be 'asc' or 'desc'; got {sort_order!r}")
        check_limit(limit, "limit")
        if page is not None and (check_limit(page, "page") or 0) < 1:
            raise ValidationError(f"page must be an int >= 1, got {page!r}")
        start = min((page - 1) * limit, sys.maxsize) if (page is not None and limit is not None) else 0
        stop = None if limit is None else min(start + limit, sys.maxsize)

        components = [c for c in (agent_id, team_id, workflow_id, component_id) if c is not None]
        bucket = self._index.candidates(
            user_id=user_id,
            filter_user=user_id is not None,
            components=components,
            session_type=session_type,
            filter_type=session_type is not None,
        )
        residual = self._residual_filter(
            user_id, agent_id, team_id, workflow_id, component_id, session_type,
            session_name, start_timestamp, end_timestamp,
        )  # fmt: skip
        exact = residual is None or (
            bucket is not self._index.order
            and sum(x is not None for x in (user_id, session_type, component_id)) == 1
            and all(x is None for x in (agent_id, team_id, workflow_id, session_name, start_timestamp, end_timestamp))
        )
        records = self._sessions
        if sort_by == "updated_at" and exact:
            total = len(bucket)
            if order == "desc":
                ids: Iterable[str] = self._index.newest(bucket, start, stop)
            else:
                ids = list(bucket)[start:stop]
            chosen = [records[sid] for sid in ids]
        else:
            if sort_by == "updated_at":
                ordered = self._index.newest(bucket) if order == "desc" else iter(list(bucket))
                matches = [records[sid] for sid in ordered]
            else:
                key: Callable[[SessionRecord], Any] = (
                    (lambda r: (r.created_at, r.seq)) if sort_by == "created_at" else (lambda r: r.session_id)
                )
                matches = sorted((records[sid] for sid in bucket), key=key, reverse=order == "desc")
            if residual is not None:
                matches = [r for r in matches if residual(r)]
            total = len(matches)
            chosen = matches[start:stop]
        return await self._read_many(chosen, lambda r: r.to_dict(include_runs=include_runs)), total

    @staticmethod
    def _residual_filter(
        user_id: str | None,
        agent_id: str | None,
        team_id: str | None,
        workflow_id: str | None,
        component_id: str | None,
        session_type: str | None,
        session_name: str | None,
        start_timestamp: int | None,
        end_timestamp: int | None,
    ) -> Callable[[SessionRecord], bool] | None:
        checks: list[Callable[[SessionRecord], bool]] = []
        if user_id is not None:
            checks.append(lambda r: r.user_id == user_id)
        if agent_id is not None:
            checks.append(lambda r: r.agent_id == agent_id)
        if team_id is not None:
            checks.append(lambda r: r.team_id == team_id)
        if workflow_id is not None:
            checks.append(lambda r: r.workflow_id == workflow_id)
        if component_id is not None:
            checks.append(lambda r: component_id in (r.agent_id, r.team_id, r.workflow_id))
        if session_type is not None:
            checks.append(lambda r: r.session_type == session_type)
        if session_name is not None:
            needle = session_name.lower()
            checks.append(lambda r: r.session_name is not None and needle in r.session_name.lower())
        if start_timestamp is not None:
            checks.append(lambda r: r.created_at >= start_timestamp)
        if end_timestamp is not None:
            checks.append(lambda r: r.created_at <= end_timestamp)
        if not checks:
            return None
        return lambda r: all(check(r) for check in checks)

    async def get_all_sessions(self, user_id: str | None = None) -> list[dict[str, Any]]:
        """Every session (of ``user_id``, if given), most recently updated first."""
        sessions, _ = await self.get_sessions(user_id=user_id)
        return sessions

    async def get_recent_sessions(self, *, limit: int = 2, user_id: str | None = None) -> list[dict[str, Any]]:
        """The ``limit`` most recently updated sessions; among equal ``updated_at`` the later write first."""
        sessions, _ = await self.get_sessions(user_id=user_id, limit=limit)
        return sessions

    # -- sessions: writes --------------------------------------------------------------------------------------

    async def upsert_session(
        self,
        session: Mapping[str, Any],
        *,
        expected_version: int | None = None,
        preserve_updated_at: bool = False,
        include_runs: bool = True,
    ) -> dict[str, Any]:
        """Create or replace a session and return the stored copy.

        A session passed without a ``runs`` key keeps the runs already stored (so saving the session row does
        not rewrite its history); ``"runs": [...]`` replaces them.

        Args:
            session: a JSON-compatible dict with a ``session_id``; neither kept nor mutated.
            expected_version: write only if the stored ``version`` equals this (``0``: only if absent).
            preserve_updated_at: keep the caller's ``created_at``/``updated_at`` (imports).
            include_runs: ``False`` returns the stored session without its runs, so saving a long session's
                row does not pay for decoding its whole history.

        Raises:
            ValidationError, SerializationError: the session cannot be stored; nothing changed.
            ConflictError: ``expected_version`` does not match.
            OwnershipError: the session belongs to another ``user_id``.
        """
        await self._ready()
        sid = self._session_id_of(session)
        check_limit(expected_version, "expected_version")
        rec = await self._write(
            sid,
            lambda: self._put_session(sid, session, expected_version, preserve_updated_at),
            payload="runs" not in session,  # the stored runs are carried over
        )
        await self._after_write()
        return rec.to_dict(include_runs=include_runs)

    async def upsert_sessions(
        self, sessions: Sequence[Mapping[str, Any]], *, preserve_updated_at: bool = False
    ) -> list[dict[str, Any]]:
        """Create or replace many sessions atomically: all are validated before any is stored.

        Raises:
            ValidationError, SerializationError, OwnershipError: nothing was stored.
        """
        await self._ready()
        if isinstance(sessions, Mapping) or not isinstance(sessions, Sequence):
            raise ValidationError("upsert_sessions takes a list of session dicts")
        ids = [self._session_id_of(s) for s in sessions]

        def apply() -> list[SessionRecord]:
            built: dict[str, SessionRecord] = {}
            out: list[SessionRecord] = []
            for sid, session in zip(ids, sessions, strict=True):
                old = built.get(sid) or self._sessions.get(sid)
                new = self._build_session(sid, session, old, None, preserve_updated_at)
                built[sid] = new
                out.append(new)
            for sid, new in built.items():
                self._commit_session(sid, self._sessions.get(sid), new)
            return out

        records = await self._write_many(ids, apply, payload=True)
        await self._after_write()
        return [r.to_dict() for r in records]

    async def upsert_run(self, session_id: str, run: Mapping[str, Any], *, user_id: str | None = None) -> None:
        """Append a run to a session, or replace the run with the same ``run_id``; O(1) in session length.

        Raises:
            NotFoundError: no such session (or it belongs to another ``user_id``).
            ValidationError, SerializationError: the run cannot be stored; nothing changed.
        """
        await self._ready()
        check_optional_str(user_id, "user_id")
        check_id(session_id, what="session_id")
        run_id, raw = SessionRecord.encode_run(run)

        def apply() -> None:
            rec = self._visible(session_id, user_id)
            if rec is None:
                raise NotFoundError(f"upsert_run: no session {session_id!r}")
            before = rec.size
            self._stamp_write(rec)
            rec.put_run(run_id, raw)
            entry = self._run_entry(session_id, rec, run_id, raw) if self._journal is not None else None
            self._commit_session(session_id, rec, rec, journal=entry, old_size=before)

        await self._write(session_id, apply)
        await self._after_write()

    async def delete_run(self, session_id: str, run_id: str, *, user_id: str | None = None) -> bool:
        """Remove one run from a session; ``True`` if it existed."""
        await self._ready()
        check_optional_str(user_id, "user_id")
        check_id(session_id, what="session_id")
        check_id(run_id, what="run_id")

        def apply() -> bool:
            rec = self._visible(session_id, user_id)
            if rec is None or rec.runs is None or run_id not in rec.runs:
                return False
            before = rec.size
            self._stamp_write(rec)
            rec.remove_run(run_id)
            entry = self._run_entry(session_id, rec, run_id, None) if self._journal is not None else None
            self._commit_session(session_id, rec, rec, journal=entry, old_size=before)
            return True

        removed = await self._write(session_id, apply)
        if removed:
            await self._after_write()
        return removed

    async def update_session(
        self, session_id: str, fn: SessionFn, *, user_id: str | None = None
    ) -> dict[str, Any] | None:
        """Atomically read, modify and write one session.

        ``fn`` receives a copy of the session (``None`` if it does not exist or is not visible to ``user_id``)
        and returns the new session dict, or ``None`` to leave it unchanged. It may be a coroutine function:
        the session's lock is held while it runs, so no other write to this session interleaves.

        Returns:
            The stored session after the update, or ``None`` when ``fn`` returned ``None``.
        """
        await self._ready()
        check_optional_str(user_id, "user_id")
        check_id(session_id, what="session_id")
        entry = await self._lock(session_id)
        try:
            await self._ensure_loaded(session_id)
            current = self._sessions.get(session_id)
            if current is not None:
                await self._make_resident(current)
            rec = self._visible(session_id, user_id)
            result = fn(rec.to_dict() if rec is not None else None)
            if inspect.isawaitable(result):
                result = await result  # the session lock is held across this await: that is the point
            if result is None:
                return None
            if rec is None and session_id in self._sessions:
                # The session exists but is not this caller's: it saw None, and may not write it either.
                raise OwnershipError(f"session {session_id!r} belongs to another user")
            if not isinstance(result, Mapping) or result.get("session_id") != session_id:
                raise ValidationError(f"update_session: fn must return a dict with session_id={session_id!r}")
            new = self._put_session(session_id, result, None, False)
        finally:
            self._unlock(session_id, entry)
        await self._after_write()
        return new.to_dict()

    async def rename_session(
        self, session_id: str, session_name: str, *, user_id: str | None = None
    ) -> dict[str, Any] | None:
        """Set ``session_data.session_name``; returns the stored session, or ``None`` if not found."""
        await self._ready()
        check_optional_str(user_id, "user_id")
        check_id(session_id, what="session_id")
        if not isinstance(session_name, str):
            raise ValidationError(f"session_name must be a str, got {type(session_name).__name__}")

        def apply() -> SessionRecord | None:
            rec = self._visible(session_id, user_id)
            if rec is None:
                return None
            head: dict[str, Any] = orjson.loads(rec.head)
            data = head.get("session_data")
            head["session_data"] = {**(data if isinstance(data, dict) else {}), "session_name": session_name}
            return self._put_session(session_id, head, None, False)

        rec = await self._write(session_id, apply)
        if rec is None:
            return None
        await self._after_write()
        return rec.to_dict()

    async def refresh(self, session_id: str) -> dict[str, Any] | None:
        """Replace the session in memory with the version in storage, discarding unflushed local changes.

        For replicas sharing storage: take another replica's newer version, or resolve a
        :class:`~aiomemdb.ConflictError` raised by a flush under ``on_conflict="raise"`` (then re-apply your
        change on top, e.g. with :meth:`update_session`). Returns the stored session, or ``None`` (and the
        session is dropped from memory) when storage has none.
        """
        await self._ready()
        check_id(session_id, what="session_id")
        if self._persistence is None:
            raise ValidationError("refresh needs a persistence to read from")
        key = (SESSIONS, session_id)
        entry = await self._lock(session_id)
        try:
            doc = await self._persistence.load_one(SESSIONS, session_id)
            self._dirty.pop(key, None)
            current = self._sessions.get(session_id)
            if doc is None:
                if current is not None:
                    self._forget(session_id, current)
                if self._mirror is not None:
                    self._mirror.pop(session_id, None)
                return None
            where = f"{SESSIONS}/{session_id}"
            rec = SessionRecord.from_stored(doc, seq=self._next_seq(), key=where)
            if rec.session_id != session_id:
                raise CorruptDataError(f"{where}: contains session_id {rec.session_id!r}", key=where)
            self._install_session(session_id, rec)
            self._journal_append(stamp(b"put", session_id, rec) + b',"doc":' + rec.doc_bytes() + b"}")
            return rec.to_dict()
        finally:
            self._unlock(session_id, entry)

    async def delete_session(self, session_id: str, *, user_id: str | None = None) -> bool:
        """Delete a session; ``True`` if it existed (and was visible to ``user_id``)."""
        await self._ready()
        check_optional_str(user_id, "user_id")
        check_id(session_id, what="session_id")

        def apply() -> bool:
            rec = self._visible(session_id, user_id)
            if rec is None:
                return False
            self._commit_session(session_id, rec, None)
            return True

        deleted = await self._write(session_id, apply, payload=False)
        if deleted:
            await self._after_write()
        return deleted

    async def delete_sessions(self, session_ids: Iterable[str], *, user_id: str | None = None) -> int:
        """Delete many sessions atomically; returns how many existed (and were visible to ``user_id``)."""
        await self._ready()
        check_optional_str(user_id, "user_id")
        ids = check_ids(session_ids, "session_id")

        def apply() -> int:
            count = 0
            for sid in ids:
                rec = self._visible(sid, user_id)
                if rec is not None:
                    self._commit_session(sid, rec, None)
                    count += 1
            return count

        count = await self._write_many(ids, apply, payload=False)
        if count:
            await self._after_write()
        return count

    async def drop(self) -> None:
        """Delete every session and every collection record (in memory and, at the next flush, in storage).

        A ``lazy`` store first lists storage (by loading it: O(store)), so that what it never loaded is
        deleted too.
        """
        await self._ready()
        ids = list(self._sessions)
        unloaded = await self._stored_keys()

        def apply() -> None:
            for key in unloaded:
                self._mark(key)
            for sid in self._sessions:
                self._mark((SESSIONS, sid))
            for name, records in self._collections.items():
                for rid in records:
                    self._mark((name, rid))
            self._sessions.clear()
            self._index.clear()
            self._collections.clear()
            self._lru.clear()
            self._resident_bytes = 0
            if self._mirror is not None:
                self._mirror.clear()
            self._journal_append(b'{"op":"drop"}')

        await self._write_many(ids, apply, payload=False)
        await self._after_write()

    # -- session helpers (synchronous: no await inside) --------------------------------------------------------

    @staticmethod
    def _session_id_of(session: Any) -> str:
        if not isinstance(session, Mapping):
            raise ValidationError(f"a session must be a dict, got {type(session).__name__}")
        return check_id(session.get("session_id"), what="session_id")

    def _visible(self, session_id: str, user_id: str | None) -> SessionRecord | None:
        rec = self._sessions.get(session_id)
        if rec is None or (user_id is not None and rec.user_id != user_id):
            return None
        return rec

    def _stamp_write(self, rec: SessionRecord) -> None:
        rec.updated_at = int(self._clock())
        rec.version += 1
        rec.seq = self._next_seq()

    def _build_session(
        self,
        sid: str,
        session: Mapping[str, Any],
        old: SessionRecord | None,
        expected_version: int | None,
        preserve: bool,
    ) -> SessionRecord:
        if expected_version is not None:
            actual = old.version if old is not None else 0
            if actual != expected_version:
                raise ConflictError(
                    f"session {sid!r} is at version {actual}, expected {expected_version}",
                    key=sid,
                    expected=expected_version,
                    actual=actual,
                )
        new = SessionRecord.build(
            session, now=int(self._clock()), seq=self._next_seq(), previous=old, preserve_timestamps=preserve
        )
        if old is not None and old.user_id is not None and new.user_id != old.user_id:
            raise OwnershipError(f"session {sid!r} belongs to another user")
        if old is not None and "runs" not in session:
            new.runs, new.runs_key = old.runs, old.runs_key
            new.resize()
        return new

    def _put_session(
        self, sid: str, session: Mapping[str, Any], expected_version: int | None, preserve: bool
    ) -> SessionRecord:
        old = self._sessions.get(sid)
        new = self._build_session(sid, session, old, expected_version, preserve)
        self._commit_session(sid, old, new)
        return new

    # -- writing with locks, lazy loads and reloads --------------------------------------------------------------

    async def _write(self, sid: str, apply: Callable[[], T], *, payload: bool = True) -> T:
        """Run a synchronous write for one session after any lazy load and any RMW holding its lock.

        ``payload``: the write reads the session's head or runs, so an evicted session is reloaded first
        (under the session's lock, which also keeps it from being evicted again before ``apply`` runs).
        """
        if self._lazy and sid not in self._sessions:
            await self._load_lazily(SESSIONS, sid)
        rec = self._sessions.get(sid)
        reload = payload and rec is not None and not rec.resident
        if sid not in self._locks and not reload:
            return apply()
        entry = await self._lock(sid)
        try:
            rec = self._sessions.get(sid)
            if payload and rec is not None:
                await self._make_resident(rec)
            return apply()
        finally:
            self._unlock(sid, entry)

    async def _write_many(self, sids: Sequence[str], apply: Callable[[], T], *, payload: bool) -> T:
        """Run a synchronous write spanning many sessions, holding all their locks (in a fixed order)."""
        unique = sorted(set(sids))
        if self._lazy:
            await asyncio.gather(*(self._load_lazily(SESSIONS, s) for s in unique if s not in self._sessions))
        evicted = [s for s in unique if payload and s in self._sessions and not self._sessions[s].resident]
        if not evicted and not any(s in self._locks for s in unique):
            return apply()
        held: list[tuple[str, Any]] = []
        try:
            for sid in unique:
                held.append((sid, await self._lock(sid)))
            for sid in evicted:
                rec = self._sessions.get(sid)
                if rec is not None:
                    await self._make_resident(rec)
            return apply()
        finally:
            for sid, entry in reversed(held):
                self._unlock(sid, entry)

    def _adopt_storage_dict(self, storage: dict[str, Any]) -> None:
        if not isinstance(storage, dict):
            raise ValidationError(f"storage_dict must be a dict, got {type(storage).__name__}")
        built: list[SessionRecord] = []
        for key, value in storage.items():
            if not isinstance(key, str):
                raise ValidationError(f"storage_dict key {key!r} is not a str")
            if not isinstance(value, Mapping):
                raise ValidationError(f"storage_dict[{key!r}] must be a session dict, got {type(value).__name__}")
            if value.get("session_id") != key:
                raise ValidationError(f"storage_dict[{key!r}] has session_id {value.get('session_id')!r}")
            version = value.get("version")
            try:
                rec = SessionRecord.build(
                    value,
                    now=int(self._clock()),
                    seq=self._next_seq(),
                    previous=None,
                    preserve_timestamps=True,
                    version=version if isinstance(version, int) and not isinstance(version, bool) else 1,
                )
            except ValidationError as exc:
                raise type(exc)(f"storage_dict[{key!r}]: {exc}") from exc
            built.append(rec)
        for rec in built:
            self._commit_session(rec.session_id, None, rec)

    # -- introspection -----------------------------------------------------------------------------------------

    def stats(self) -> Stats:
        """A snapshot of the store's counters; cheap (no scan of the sessions, only of collection sizes)."""
        quarantined = getattr(self._persistence, "quarantined", ())
        return Stats(
            state=self._state,
            sessions=len(self._sessions),
            resident=len(self._lru) if self._bounded else len(self._sessions),
            records={name: len(table) for name, table in self._collections.items() if table},
            bytes=self._resident_bytes + sum(len(b[0]) for t in self._collections.values() for b in t.values()),
            dirty=len(self._dirty) + len(self._in_flight),
            flushes=self._flushes,
            flush_failures=self._flush_failures,
            last_flush_duration=self._last_flush_duration,
            last_flush_at=self._last_flush_at,
            last_error=self._last_error,
            loads=self._loads,
            lazy_loads=self._lazy_loads,
            merged=self._merged,
            evictions=self._evictions,
            expirations=self._expirations,
            quarantined=len(quarantined) if isinstance(quarantined, list | tuple) else 0,
        )

    def __repr__(self) -> str:
        return f"<AsyncInMemoryDb {self._state} sessions={len(self._sessions)} dirty={len(self._dirty)}>"
