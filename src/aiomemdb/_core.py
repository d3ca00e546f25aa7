"""AsyncInMemoryDb: the async core every other part of aiomemdb wraps.

Concurrency model. All state belongs to one event loop. Every write is a synchronous critical section (validate,
encode, swap the record, update the indexes, mark it dirty) with no ``await`` inside, so it is atomic with
respect to every other task and cannot be half-done by a cancellation. The only read-modify-writes that span an
``await`` are :meth:`AsyncInMemoryDb.update_session` (the caller's function may be a coroutine) and the bulk
writes; they hold per-session :class:`asyncio.Lock` s, created on demand and dropped when nobody uses them. A
plain write only waits when such a lock exists for its session.

Persistence. Writes mark keys dirty; :meth:`AsyncInMemoryDb.flush` swaps the dirty set out atomically, encodes
the changed records (bytes concatenation, see :mod:`aiomemdb._record`) and hands one :class:`Changeset` to the
persistence. A failed flush puts its keys back, so nothing dirty is ever dropped; a background task flushes
every ``flush_interval`` seconds and backs off exponentially (with jitter) while storage fails.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeVar

import orjson

from aiomemdb._codec import SESSIONS, check_collection, check_id, encode_envelope, merge_sessions
from aiomemdb._exceptions import (
    AiomemdbError,
    ClosedError,
    ConflictError,
    CorruptDataError,
    NotFoundError,
    OwnershipError,
    PersistenceError,
    ValidationError,
)
from aiomemdb._index import SessionIndex
from aiomemdb._record import SessionRecord, encode_record, record_owner
from aiomemdb._stats import Event, EventKind, FlushReport, Stats
from aiomemdb.persistence._base import Changeset, Key, Persistence, Snapshot
from aiomemdb.persistence._hooks import HookPersistence

__all__ = ["AsyncInMemoryDb", "Durability"]

logger = logging.getLogger("aiomemdb")

Durability = Literal["interval", "write", "manual"]
SortBy = Literal["updated_at", "created_at", "session_id"]
SortOrder = Literal["asc", "desc"]
SessionFn = Callable[[dict[str, Any] | None], "dict[str, Any] | Awaitable[dict[str, Any] | None] | None"]
RecordFn = Callable[[dict[str, Any] | None], "dict[str, Any] | None"]
T = TypeVar("T")

_DURABILITY: Final = ("interval", "write", "manual")
_SORT_BY: Final = ("updated_at", "created_at", "session_id")
_NEW, _STARTING, _OPEN, _CLOSING, _CLOSED = "new", "starting", "open", "closing", "closed"
# Encoding a changeset yields to the loop this often, so one big flush never blocks other tasks for long.
_YIELD_EVERY: Final = 256

Blob = tuple[bytes, str | None, int]  # an encoded collection record, its owner, its write sequence


class _SessionLock:
    """A per-session lock and the number of tasks holding or waiting for it."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


def _check_limit(value: int | None, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"{what} must be a non-negative int or None, got {value!r}")
    return value


class AsyncInMemoryDb:
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
            (each write returns once persisted) or ``"manual"`` (only :meth:`flush` and close write).
        flush_interval: seconds between background flushes.
        lazy: do not load everything at start; fetch a session (or record) from persistence the first time
            it is asked for. Listings then only cover what has been loaded.
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
        lazy: bool = False,
        max_backoff: float = 30.0,
        on_event: Callable[[Event], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if persistence is not None and (load is not None or save is not None):
            raise ValidationError("pass either persistence= or load=/save= hooks, not both")
        if load is not None or save is not None:
            persistence = HookPersistence(load=load, save=save)
        if durability not in _DURABILITY:
            raise ValidationError(f"durability must be one of {', '.join(_DURABILITY)}; got {durability!r}")
        if not isinstance(flush_interval, int | float) or flush_interval <= 0:
            raise ValidationError(f"flush_interval must be a positive number of seconds, got {flush_interval!r}")
        if lazy and persistence is None:
            raise ValidationError("lazy=True needs a persistence to load from")
        self._persistence: Persistence | None = persistence
        self._durability: Durability = durability
        self._flush_interval = float(flush_interval)
        self._max_backoff = float(max_backoff)
        self._lazy = lazy
        self._clock = clock
        self._on_event = on_event

        self._sessions: dict[str, SessionRecord] = {}
        self._index = SessionIndex(self._sessions)
        self._collections: dict[str, dict[str, Blob]] = {}
        self._mirror: MutableMapping[str, Any] | None = storage_dict
        self._locks: dict[str, _SessionLock] = {}
        # Write sequence: nanoseconds since the epoch, made strictly increasing. It orders writes within one
        # second (also across restarts, being stored with each object) and tells what a flush covered.
        self._seq = 0

        self._dirty: dict[Key, None] = {}  # insertion-ordered set
        self._in_flight: frozenset[Key] = frozenset()
        self._persisted_seq = 0
        self._lazy_tasks: dict[Key, asyncio.Task[None]] = {}

        self._state = _NEW
        self._loop: asyncio.AbstractEventLoop | None = None
        self._start_lock: asyncio.Lock | None = None
        self._flush_lock: asyncio.Lock | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None

        self._flushes = 0
        self._flush_failures = 0
        self._last_flush_duration: float | None = None
        self._last_flush_at: float | None = None
        self._last_error: str | None = None
        self._loads = 0
        self._lazy_loads = 0
        self._merged = 0

        if storage_dict is not None:
            self._adopt_storage_dict(storage_dict)

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> Self:
        """Load from persistence and start the background flusher; idempotent.

        Every operation starts the store on first use, so calling this is only needed to load eagerly or to
        see load errors early.

        Raises:
            ClosedError: the store was closed.
            PersistenceError, CorruptDataError: loading failed; the store stays unstarted and can be retried.
        """
        if self._state == _OPEN:
            return self
        if self._state in (_CLOSING, _CLOSED):
            raise ClosedError("this AsyncInMemoryDb is closed")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._start_lock = asyncio.Lock()
            self._flush_lock = asyncio.Lock()
            self._wake = asyncio.Event()
        elif self._loop is not loop:
            raise RuntimeError("an AsyncInMemoryDb is bound to the event loop it was first used in")
        assert self._start_lock is not None
        async with self._start_lock:
            if self._state == _OPEN:
                return self
            if self._state in (_CLOSING, _CLOSED):
                raise ClosedError("this AsyncInMemoryDb is closed")
            self._state = _STARTING
            try:
                if self._persistence is not None:
                    await self._persistence.open()
                    if not self._lazy:
                        began = time.perf_counter()
                        await self._ingest(await self._persistence.load())
                        self._emit("load", records=self._loads, duration=time.perf_counter() - began)
            except BaseException as exc:
                self._state = _NEW
                self._last_error = repr(exc)
                raise
            if self._persistence is not None and self._durability != "manual":
                self._flusher = loop.create_task(self._flush_forever(), name="aiomemdb-flusher")
            self._state = _OPEN
        return self

    async def aclose(self) -> None:
        """Stop the flusher, flush what is dirty, and release the persistence; idempotent.

        Raises:
            PersistenceError: the final flush failed. The store stays open (nothing is lost) and the
                background flusher keeps retrying; call ``aclose()`` again to retry.
        """
        if self._state in (_NEW, _CLOSED):
            self._state = _CLOSED
            return
        if self._state == _STARTING:
            await self.start()
        if self._state == _CLOSING:
            return
        self._state = _CLOSING
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
        try:
            if self._persistence is not None:
                await self.flush()
        except BaseException:
            self._state = _OPEN
            if self._persistence is not None and self._durability != "manual" and self._loop is not None:
                self._flusher = self._loop.create_task(self._flush_forever(), name="aiomemdb-flusher")
            raise
        for task in list(self._lazy_tasks.values()):
            task.cancel()
        if self._persistence is not None:
            await self._persistence.aclose()
        self._state = _CLOSED

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_state", _CLOSED) in (_OPEN, _STARTING) and self._persistence is not None:
            dirty = len(self._dirty)
            _warn(
                f"AsyncInMemoryDb was never closed ({dirty} unflushed changes); use 'async with' or aclose()",
                ResourceWarning,
                stacklevel=1,
            )

    async def _ready(self) -> None:
        if self._state != _OPEN:
            if self._state in (_CLOSING, _CLOSED):
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
        check_id(session_id, what="session_id")
        _check_limit(runs_limit, "runs_limit")
        rec = await self._find(session_id)
        if rec is None or (user_id is not None and rec.user_id != user_id):
            return None
        return rec.to_dict(runs_limit)

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
            user_id, agent_id, team_id, workflow_id, session_type: exact matches.
            component_id: matches the agent, team or workflow id.
            session_name: case-insensitive substring of ``session_data.session_name``.
            start_timestamp, end_timestamp: inclusive bounds on ``created_at``.
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
        if sort_by not in _SORT_BY:
            raise ValidationError(f"sort_by must be one of {', '.join(_SORT_BY)}; got {sort_by!r}")
        order = sort_order.lower() if isinstance(sort_order, str) else sort_order
        if order not in ("asc", "desc"):
            raise ValidationError(f"sort_order must be 'asc' or 'desc'; got {sort_order!r}")
        _check_limit(limit, "limit")
        if page is not None and (isinstance(page, bool) or not isinstance(page, int) or page < 1):
            raise ValidationError(f"page must be an int >= 1, got {page!r}")
        start = (page - 1) * limit if (page is not None and limit is not None) else 0
        stop = None if limit is None else start + limit

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
        return [r.to_dict(include_runs=include_runs) for r in chosen], total

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
    ) -> dict[str, Any]:
        """Create or replace a session and return the stored copy.

        A session passed without a ``runs`` key keeps the runs already stored (so saving the session row does
        not rewrite its history); ``"runs": [...]`` replaces them.

        Args:
            session: a JSON-compatible dict with a ``session_id``; neither kept nor mutated.
            expected_version: write only if the stored ``version`` equals this (``0``: only if absent).
            preserve_updated_at: keep the caller's ``created_at``/``updated_at`` (imports).

        Raises:
            ValidationError, SerializationError: the session cannot be stored; nothing changed.
            ConflictError: ``expected_version`` does not match.
            OwnershipError: the session belongs to another ``user_id``.
        """
        await self._ready()
        sid = self._session_id_of(session)
        _check_limit(expected_version, "expected_version")
        rec = await self._write(sid, lambda: self._put_session(sid, session, expected_version, preserve_updated_at))
        await self._after_write()
        return rec.to_dict()

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

        records = await self._write_many(ids, apply)
        await self._after_write()
        return [r.to_dict() for r in records]

    async def upsert_run(self, session_id: str, run: Mapping[str, Any], *, user_id: str | None = None) -> None:
        """Append a run to a session, or replace the run with the same ``run_id``; O(1) in session length.

        Raises:
            NotFoundError: no such session (or it belongs to another ``user_id``).
            ValidationError, SerializationError: the run cannot be stored; nothing changed.
        """
        await self._ready()
        check_id(session_id, what="session_id")
        run_id, raw = SessionRecord.encode_run(run)

        def apply() -> None:
            rec = self._visible(session_id, user_id)
            if rec is None:
                raise NotFoundError(f"upsert_run: no session {session_id!r}")
            self._touch(rec)
            rec.put_run(run_id, raw)
            self._commit_session(session_id, rec, rec)

        await self._write(session_id, apply)
        await self._after_write()

    async def delete_run(self, session_id: str, run_id: str, *, user_id: str | None = None) -> bool:
        """Remove one run from a session; ``True`` if it existed."""
        await self._ready()
        check_id(session_id, what="session_id")
        check_id(run_id, what="run_id")

        def apply() -> bool:
            rec = self._visible(session_id, user_id)
            if rec is None or rec.runs is None or run_id not in rec.runs:
                return False
            self._touch(rec)
            rec.remove_run(run_id)
            self._commit_session(session_id, rec, rec)
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
        check_id(session_id, what="session_id")
        entry = await self._lock(session_id)
        try:
            await self._find(session_id)
            rec = self._visible(session_id, user_id)
            result = fn(rec.to_dict() if rec is not None else None)
            if inspect.isawaitable(result):
                result = await result  # the session lock is held across this await: that is the point
            if result is None:
                return None
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

    async def delete_session(self, session_id: str, *, user_id: str | None = None) -> bool:
        """Delete a session; ``True`` if it existed (and was visible to ``user_id``)."""
        await self._ready()
        check_id(session_id, what="session_id")

        def apply() -> bool:
            rec = self._visible(session_id, user_id)
            if rec is None:
                return False
            self._commit_session(session_id, rec, None)
            return True

        deleted = await self._write(session_id, apply)
        if deleted:
            await self._after_write()
        return deleted

    async def delete_sessions(self, session_ids: Iterable[str], *, user_id: str | None = None) -> int:
        """Delete many sessions atomically; returns how many existed (and were visible to ``user_id``)."""
        await self._ready()
        if isinstance(session_ids, str):
            raise ValidationError("delete_sessions takes a list of ids, not one str")
        ids = list(dict.fromkeys(check_id(s, what="session_id") for s in session_ids))

        def apply() -> int:
            count = 0
            for sid in ids:
                rec = self._visible(sid, user_id)
                if rec is not None:
                    self._commit_session(sid, rec, None)
                    count += 1
            return count

        count = await self._write_many(ids, apply)
        if count:
            await self._after_write()
        return count

    async def drop(self) -> None:
        """Delete every session and every collection record (in memory and, at the next flush, in storage)."""
        await self._ready()
        ids = list(self._sessions)

        def apply() -> None:
            for sid in list(self._sessions):
                self._mark((SESSIONS, sid))
            for name, records in self._collections.items():
                for rid in records:
                    self._mark((name, rid))
            self._sessions.clear()
            self._index.clear()
            self._collections.clear()
            if self._mirror is not None:
                self._mirror.clear()

        await self._write_many(ids, apply)
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

    def _next_seq(self) -> int:
        self._seq = max(self._seq + 1, time.time_ns())
        return self._seq

    def _touch(self, rec: SessionRecord) -> None:
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
        return new

    def _put_session(
        self, sid: str, session: Mapping[str, Any], expected_version: int | None, preserve: bool
    ) -> SessionRecord:
        old = self._sessions.get(sid)
        new = self._build_session(sid, session, old, expected_version, preserve)
        self._commit_session(sid, old, new)
        return new

    def _commit_session(self, sid: str, old: SessionRecord | None, new: SessionRecord | None) -> None:
        """Install (or remove) a session: the one place sessions change."""
        if new is None:
            if old is not None:
                del self._sessions[sid]
                self._index.remove(old)
            if self._mirror is not None:
                self._mirror.pop(sid, None)
        else:
            self._sessions[sid] = new
            self._index.put(old, new)
            if self._mirror is not None:
                # pop first: the caller's dict stays in write order, so a JSON round trip keeps recency ties
                self._mirror.pop(sid, None)
                self._mirror[sid] = new.to_dict()
        self._mark((SESSIONS, sid))

    def _emit(self, kind: EventKind, **data: Any) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(Event(kind=kind, at=time.time(), data=data))
        except Exception:
            logger.exception("aiomemdb: on_event callback failed for a %r event", kind)

    def _mark(self, key: Key) -> None:
        if self._persistence is not None:
            self._dirty[key] = None

    # -- locking and lazy loading ------------------------------------------------------------------------------

    async def _lock(self, sid: str) -> _SessionLock:
        entry = self._locks.get(sid)
        if entry is None:
            entry = self._locks[sid] = _SessionLock()
        entry.users += 1
        try:
            await entry.lock.acquire()
        except BaseException:
            self._release_entry(sid, entry)
            raise
        return entry

    def _unlock(self, sid: str, entry: _SessionLock) -> None:
        entry.lock.release()
        self._release_entry(sid, entry)

    def _release_entry(self, sid: str, entry: _SessionLock) -> None:
        entry.users -= 1
        if entry.users == 0 and self._locks.get(sid) is entry:
            del self._locks[sid]

    async def _write(self, sid: str, apply: Callable[[], T]) -> T:
        """Run a synchronous write for one session after any lazy load and any RMW holding its lock."""
        if self._lazy and sid not in self._sessions:
            await self._load_lazily(SESSIONS, sid)
        if sid not in self._locks:
            return apply()
        entry = await self._lock(sid)
        try:
            return apply()
        finally:
            self._unlock(sid, entry)

    async def _write_many(self, sids: Sequence[str], apply: Callable[[], T]) -> T:
        """Run a synchronous write spanning many sessions, holding all their locks (in a fixed order)."""
        unique = sorted(set(sids))
        if self._lazy:
            await asyncio.gather(*(self._load_lazily(SESSIONS, s) for s in unique if s not in self._sessions))
        if not any(s in self._locks for s in unique):
            return apply()
        held: list[tuple[str, _SessionLock]] = []
        try:
            for sid in unique:
                held.append((sid, await self._lock(sid)))
            return apply()
        finally:
            for sid, entry in reversed(held):
                self._unlock(sid, entry)

    async def _find(self, sid: str) -> SessionRecord | None:
        rec = self._sessions.get(sid)
        if rec is None and self._lazy:
            await self._load_lazily(SESSIONS, sid)
            rec = self._sessions.get(sid)
        return rec

    async def _load_lazily(self, collection: str, rid: str) -> None:
        """Fetch one record from persistence into memory; concurrent misses on one key share one fetch."""
        key = (collection, rid)
        task = self._lazy_tasks.get(key)
        if task is None:
            assert self._loop is not None
            task = self._loop.create_task(self._fetch_one(key))
            self._lazy_tasks[key] = task
            task.add_done_callback(lambda t: self._lazy_done(key, t))
        # shield: a cancelled caller must not cancel the fetch the others are waiting for.
        await asyncio.shield(task)

    def _lazy_done(self, key: Key, task: asyncio.Task[None]) -> None:
        if self._lazy_tasks.get(key) is task:
            del self._lazy_tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved here so an unawaited failure is not reported as "never retrieved"

    async def _fetch_one(self, key: Key) -> None:
        assert self._persistence is not None
        collection, rid = key
        doc = await self._persistence.load_one(collection, rid)
        # Memory is authoritative for anything written, deleted or being flushed meanwhile.
        if doc is None or key in self._dirty or key in self._in_flight:
            return
        if collection == SESSIONS:
            if rid in self._sessions:
                return
            rec = SessionRecord.from_stored(doc, seq=self._next_seq(), key=f"{collection}/{rid}")
            self._install_session(rid, rec, key=f"{collection}/{rid}")
        else:
            records = self._collections.setdefault(collection, {})
            if rid in records:
                return
            records[rid] = (encode_record(doc, what=f"{collection}/{rid}"), record_owner(doc), self._next_seq())
        self._lazy_loads += 1
        self._emit("lazy_load", collection=collection, id=rid)

    def _install_session(self, sid: str, rec: SessionRecord, *, key: str) -> None:
        """Put a loaded session in memory without marking it dirty."""
        if rec.session_id != sid:
            raise CorruptDataError(f"{key}: contains session_id {rec.session_id!r}", key=key)
        old = self._sessions.get(sid)
        self._sessions[sid] = rec
        self._index.put(old, rec)
        if self._mirror is not None:
            self._mirror.pop(sid, None)
            self._mirror[sid] = rec.to_dict()

    # -- durability --------------------------------------------------------------------------------------------

    async def _after_write(self) -> None:
        if self._durability == "write" and self._persistence is not None:
            target = self._seq
            while self._persisted_seq < target:
                await self.flush()

    async def flush(self) -> FlushReport:
        """Write every change since the last successful flush; one flush runs at a time.

        Raises:
            PersistenceError: storage failed; every change stays dirty and is retried by the next flush.
            ConflictError: another replica's write conflicted and the persistence's policy is ``"raise"``.
        """
        if self._state not in (_OPEN, _CLOSING):
            await self._ready()
        if self._persistence is None:
            return FlushReport()
        assert self._flush_lock is not None
        async with self._flush_lock:
            return await self._flush_locked(self._persistence)

    async def _flush_locked(self, persistence: Persistence) -> FlushReport:
        started = time.perf_counter()
        covered = self._seq
        if not self._dirty:
            self._persisted_seq = covered
            return FlushReport()
        keys, self._dirty = self._dirty, {}
        self._in_flight = frozenset(keys)
        try:
            changeset, versions = await self._encode_changeset(keys)
            merged = await persistence.save(changeset)
        except BaseException as exc:
            # Put the keys back (before anything dirtied since, keeping first-dirtied-first order).
            self._dirty = {**dict.fromkeys(keys), **self._dirty}
            self._flush_failures += 1
            self._last_error = repr(exc)
            self._emit("flush_failed", error=repr(exc), keys=len(keys))
            if isinstance(exc, AiomemdbError | asyncio.CancelledError) or not isinstance(exc, Exception):
                raise
            raise PersistenceError(f"flush failed: {exc!r}", cause=exc) from exc
        finally:
            self._in_flight = frozenset()
        adopted = self._adopt(merged, versions) if merged else 0
        self._persisted_seq = covered
        duration = time.perf_counter() - started
        self._flushes += 1
        self._last_flush_duration = duration
        self._last_flush_at = time.time()
        self._last_error = None
        report = FlushReport(
            upserts=len(changeset.upserts),
            deletes=len(changeset.deletes),
            bytes=changeset.nbytes,
            duration=duration,
            merged=adopted,
        )
        logger.debug("aiomemdb: flushed %s", report)
        self._emit("flush", upserts=report.upserts, deletes=report.deletes, bytes=report.bytes, duration=duration)
        return report

    async def _encode_changeset(self, keys: Iterable[Key]) -> tuple[Changeset, dict[Key, int]]:
        upserts: dict[Key, bytes] = {}
        deletes: set[Key] = set()
        versions: dict[Key, int] = {}
        for n, key in enumerate(keys, 1):
            collection, rid = key
            if collection == SESSIONS:
                rec = self._sessions.get(rid)
                if rec is None:
                    deletes.add(key)
                else:
                    upserts[key] = encode_envelope(collection, rid, rec.doc_bytes(), seq=rec.seq)
                    versions[key] = rec.version
            else:
                blob = self._collections.get(collection, {}).get(rid)
                if blob is None:
                    deletes.add(key)
                else:
                    upserts[key] = encode_envelope(collection, rid, blob[0], seq=blob[2])
            if n % _YIELD_EVERY == 0:
                # A key changed after it was encoded here is dirty again, so yielding cannot lose a write.
                await asyncio.sleep(0)
        return Changeset(upserts=upserts, deletes=frozenset(deletes)), versions

    def _adopt(self, merged: Mapping[Key, dict[str, Any]], versions: Mapping[Key, int]) -> int:
        """Take in what storage holds after merging our write with another replica's."""
        count = 0
        for key, doc in merged.items():
            collection, rid = key
            count += 1
            self._emit("merge", collection=collection, id=rid)
            if collection != SESSIONS:
                if key not in self._dirty:
                    blob = (encode_record(doc, what=rid), record_owner(doc), self._next_seq())
                    self._collections.setdefault(collection, {})[rid] = blob
                continue
            current = self._sessions.get(rid)
            if current is not None and current.version == versions.get(key):
                self._install_session(rid, SessionRecord.from_stored(doc, seq=self._next_seq(), key=rid), key=rid)
            elif current is not None:
                # Changed again while the flush ran: fold storage's merge into the newer local version.
                both = merge_sessions(current.to_dict(), doc)
                rec = SessionRecord.from_stored(both, seq=self._next_seq(), key=rid)
                self._install_session(rid, rec, key=rid)
                self._mark(key)
        self._merged += count
        return count

    async def _flush_forever(self) -> None:
        failures = 0
        while True:
            if failures:
                delay = min(self._max_backoff, self._flush_interval * 2**failures)
                delay = random.uniform(delay / 2, delay)
            else:
                delay = self._flush_interval
            await asyncio.sleep(delay)
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures = min(failures + 1, 30)
                logger.warning("aiomemdb: background flush failed (attempt %d), will retry: %s", failures, exc)
            else:
                failures = 0

    # -- loading -----------------------------------------------------------------------------------------------

    async def _ingest(self, snapshot: Snapshot) -> None:
        """Install a loaded snapshot; anything written before the load (dirty) wins over it."""
        n = 0
        for collection, records in snapshot.items():
            check_collection(collection)
            for rid, doc in records.items():
                n += 1
                if n % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                key = (collection, rid)
                if key in self._dirty:
                    continue
                where = f"{collection}/{rid}"
                if collection == SESSIONS:
                    self._install_session(
                        rid, SessionRecord.from_stored(doc, seq=self._next_seq(), key=where), key=where
                    )
                else:
                    self._collections.setdefault(collection, {})[rid] = (
                        encode_record(doc, what=where),
                        record_owner(doc),
                        self._next_seq(),
                    )
                self._loads += 1

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

    # -- collections -------------------------------------------------------------------------------------------

    def _collection(self, name: str) -> dict[str, Blob]:
        if name == SESSIONS:
            raise ValidationError("'sessions' is reserved; use the session methods")
        check_collection(name)
        return self._collections.setdefault(name, {})

    async def _find_record(self, collection: str, rid: str) -> Blob | None:
        blob = self._collection(collection).get(rid)
        if blob is None and self._lazy:
            await self._load_lazily(collection, rid)
            blob = self._collection(collection).get(rid)
        return blob

    async def get_record(self, collection: str, record_id: str, *, user_id: str | None = None) -> dict[str, Any] | None:
        """A copy of one record of a named collection, or ``None`` (also when owned by another user)."""
        await self._ready()
        check_id(record_id, what="record_id")
        blob = await self._find_record(collection, record_id)
        if blob is None or (user_id is not None and blob[1] != user_id):
            return None
        return orjson.loads(blob[0])  # type: ignore[no-any-return]

    async def put_record(self, collection: str, record_id: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """Create or replace one record; returns the stored copy.

        Raises:
            ValidationError, SerializationError: the record cannot be stored; nothing changed.
            OwnershipError: the stored record has a different ``user_id``.
        """
        await self._ready()
        check_id(record_id, what="record_id")
        self._collection(collection)
        raw = encode_record(record, what=f"{collection}[{record_id!r}]")
        owner = record_owner(record)
        if self._lazy:
            await self._find_record(collection, record_id)
        self._put_blob(collection, record_id, raw, owner)
        await self._after_write()
        return orjson.loads(raw)  # type: ignore[no-any-return]

    async def put_records(self, collection: str, records: Mapping[str, Mapping[str, Any]]) -> int:
        """Create or replace many records of one collection atomically; returns how many were written."""
        await self._ready()
        table = self._collection(collection)
        encoded = [
            (check_id(rid, what="record_id"), encode_record(rec, what=f"{collection}[{rid!r}]"), record_owner(rec))
            for rid, rec in records.items()
        ]
        if self._lazy:
            await asyncio.gather(*(self._find_record(collection, rid) for rid, _, _ in encoded))
        for rid, _, owner in encoded:
            self._check_owner(table, collection, rid, owner)
        for rid, raw, owner in encoded:
            self._put_blob(collection, rid, raw, owner)
        if encoded:
            await self._after_write()
        return len(encoded)

    async def update_record(self, collection: str, record_id: str, fn: RecordFn) -> dict[str, Any] | None:
        """Atomically read, modify and write one record with a synchronous ``fn`` (as in update_session)."""
        await self._ready()
        check_id(record_id, what="record_id")
        blob = await self._find_record(collection, record_id)
        result = fn(orjson.loads(blob[0]) if blob is not None else None)
        if result is None:
            return None
        raw = encode_record(result, what=f"{collection}[{record_id!r}]")
        self._put_blob(collection, record_id, raw, record_owner(result))
        await self._after_write()
        return orjson.loads(raw)  # type: ignore[no-any-return]

    def _check_owner(self, table: dict[str, Blob], collection: str, rid: str, owner: str | None) -> None:
        old = table.get(rid)
        if old is not None and old[1] is not None and old[1] != owner:
            raise OwnershipError(f"{collection} record {rid!r} belongs to another user")

    def _put_blob(self, collection: str, rid: str, raw: bytes, owner: str | None) -> None:
        table = self._collection(collection)
        self._check_owner(table, collection, rid, owner)
        table.pop(rid, None)  # keep each collection in write order, as it reloads
        table[rid] = (raw, owner, self._next_seq())
        self._mark((collection, rid))

    async def delete_record(self, collection: str, record_id: str, *, user_id: str | None = None) -> bool:
        """Delete one record; ``True`` if it existed (and was visible to ``user_id``)."""
        return await self.delete_records(collection, [record_id], user_id=user_id) == 1

    async def delete_records(self, collection: str, record_ids: Iterable[str], *, user_id: str | None = None) -> int:
        """Delete many records of one collection; returns how many existed (and were visible)."""
        await self._ready()
        if isinstance(record_ids, str):
            raise ValidationError("delete_records takes a list of ids, not one str")
        ids = list(dict.fromkeys(check_id(r, what="record_id") for r in record_ids))
        table = self._collection(collection)
        if self._lazy:
            await asyncio.gather(*(self._find_record(collection, rid) for rid in ids if rid not in table))
        count = 0
        for rid in ids:
            blob = table.get(rid)
            if blob is not None and (user_id is None or blob[1] == user_id):
                del table[rid]
                self._next_seq()
                self._mark((collection, rid))
                count += 1
        if count:
            await self._after_write()
        return count

    async def list_records(self, collection: str, *, user_id: str | None = None) -> list[dict[str, Any]]:
        """Copies of every record of a collection (of ``user_id``, if given), in first-written order."""
        await self._ready()
        table = self._collection(collection)
        return [orjson.loads(raw) for raw, owner, _ in table.values() if user_id is None or owner == user_id]

    async def clear_collection(self, collection: str) -> int:
        """Delete every record of a collection; returns how many there were."""
        await self._ready()
        table = self._collection(collection)
        for rid in table:
            self._mark((collection, rid))
        count = len(table)
        table.clear()
        if count:
            self._next_seq()
            await self._after_write()
        return count

    # -- introspection -----------------------------------------------------------------------------------------

    def stats(self) -> Stats:
        """A snapshot of the store's counters; O(store) for the byte count, so not for hot paths."""
        return Stats(
            state=self._state,
            sessions=len(self._sessions),
            records={name: len(table) for name, table in self._collections.items() if table},
            bytes=sum(r.nbytes for r in self._sessions.values())
            + sum(len(blob[0]) for table in self._collections.values() for blob in table.values()),
            dirty=len(self._dirty) + len(self._in_flight),
            flushes=self._flushes,
            flush_failures=self._flush_failures,
            last_flush_duration=self._last_flush_duration,
            last_flush_at=self._last_flush_at,
            last_error=self._last_error,
            loads=self._loads,
            lazy_loads=self._lazy_loads,
            merged=self._merged,
        )

    def __repr__(self) -> str:
        return f"<AsyncInMemoryDb {self._state} sessions={len(self._sessions)} dirty={len(self._dirty)}>"
