"""AsyncInMemoryDb: the async driver over the kernel.

This class checks arguments, decides how to wait, and decodes results; every state change happens in the
kernel (``_kernel/``) and every I/O part is owned by the runtime (``_io/_runtime.py``). All state belongs to one
event loop: a write is a synchronous kernel transaction with no ``await`` inside, so it is atomic with respect
to every other task and cannot be half-done by a cancellation. The only read-modify-write that spans an
``await`` is :meth:`AsyncInMemoryDb.update_session` (its function may be a coroutine); it holds the session's
lock, which plain writes of that session wait for.
"""

from __future__ import annotations

import inspect
import logging
import time
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import orjson

from aiomemdb._codec import SESSIONS, check_collection, check_id
from aiomemdb._config import Config, Durability, StoreOptions
from aiomemdb._exceptions import ConflictError, OwnershipError, ValidationError
from aiomemdb._io._runtime import OPEN, STARTING, Runtime
from aiomemdb._kernel import (
    Kernel,
    Query,
    Residency,
    SetSession,
    SortBy,
    SortOrder,
    check_ids,
    check_limit,
    check_optional_str,
)
from aiomemdb._kernel import _ops as ops
from aiomemdb._record import SessionRecord, encode_record, record_owner
from aiomemdb._stats import Event, FlushReport, Stats
from aiomemdb.persistence._base import Persistence

__all__ = ["AsyncInMemoryDb", "Durability", "RecordFn", "SessionFn", "SortBy", "SortOrder", "StoreOptions"]

logger = logging.getLogger("aiomemdb")
SessionFn = Callable[[dict[str, Any] | None], "dict[str, Any] | Awaitable[dict[str, Any] | None] | None"]
RecordFn = Callable[[dict[str, Any] | None], "dict[str, Any] | None"]


def _doc(raw: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(raw)
    return doc


def _session_id_of(session: Any) -> str:
    if not isinstance(session, Mapping):
        raise ValidationError(f"a session must be a dict, got {type(session).__name__}")
    return check_id(session.get("session_id"), what="session_id")


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
            self._adopt_storage_dict(config.storage_dict)

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        callback = self._config.on_event
        if callback is None:
            return
        try:
            callback(Event(kind=kind, at=time.time(), data=data))  # type: ignore[arg-type]
        except Exception:
            logger.exception("aiomemdb: on_event callback failed for a %r event", kind)

    def _adopt_storage_dict(self, storage: dict[str, Any]) -> None:
        if not isinstance(storage, dict):
            raise ValidationError(f"storage_dict must be a dict, got {type(storage).__name__}")
        k = self._kernel
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
                    now=int(k.clock()),
                    seq=k.next_seq(),
                    previous=None,
                    preserve_timestamps=True,
                    version=version if isinstance(version, int) and not isinstance(version, bool) else 1,
                )
            except ValidationError as exc:
                raise type(exc)(f"storage_dict[{key!r}]: {exc}") from exc
            built.append(rec)
        with k.lock:
            k.commit([SetSession(rec.session_id, rec) for rec in built])

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
                f"AsyncInMemoryDb was never closed ({len(self._kernel.dirty)} unflushed changes); "
                "use 'async with' or aclose()",
                ResourceWarning,
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
        return Stats(
            state=self._rt.state,
            flushes=flusher.flushes if flusher else 0,
            flush_failures=flusher.failures if flusher else 0,
            last_flush_duration=flusher.last_duration if flusher else None,
            last_flush_at=flusher.last_at if flusher else None,
            last_error=(flusher.last_error if flusher else None) or self._rt.last_error,
            quarantined=len(quarantined),
            **self._kernel.sizes(),
        )

    def __repr__(self) -> str:
        k = self._kernel
        return f"<AsyncInMemoryDb {self._rt.state} sessions={len(k.sessions)} dirty={len(k.dirty)}>"

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
        await self._rt.ready()
        check_optional_str(user_id, "user_id")
        check_id(session_id, what="session_id")
        check_limit(runs_limit, "runs_limit")
        raw = await self._rt.call(ops.get_session, session_id, user_id, runs_limit)
        return _doc(raw) if raw is not None else None

    async def get_run(self, session_id: str, run_id: str, *, user_id: str | None = None) -> dict[str, Any] | None:
        """Return a copy of one run of a session (O(1): only that run is decoded), or ``None``."""
        await self._rt.ready()
        check_optional_str(user_id, "user_id")
        check_id(session_id, what="session_id")
        check_id(run_id, what="run_id")
        raw = await self._rt.call(ops.get_run, session_id, run_id, user_id)
        return _doc(raw) if raw is not None else None

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
        await self._rt.ready()
        q = Query.build(
            user_id=user_id, agent_id=agent_id, team_id=team_id, workflow_id=workflow_id,
            component_id=component_id, session_type=session_type, session_name=session_name,
            start_timestamp=start_timestamp, end_timestamp=end_timestamp, sort_by=sort_by,
            sort_order=sort_order, limit=limit, page=page, include_runs=include_runs,
        )  # fmt: skip
        page_docs, total = await self._rt.call(_list, q)
        return [_doc(raw) for raw in page_docs], total

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
        await self._rt.ready()
        sid = _session_id_of(session)
        check_limit(expected_version, "expected_version")
        raw = await self._rt.write(
            (sid,), ops.upsert_session, session, expected_version, bool(preserve_updated_at), include_runs
        )
        await self._rt.after_write()
        return _doc(raw)

    async def upsert_sessions(
        self, sessions: Sequence[Mapping[str, Any]], *, preserve_updated_at: bool = False
    ) -> list[dict[str, Any]]:
        """Create or replace many sessions atomically: all are validated before any is stored.

        Raises:
            ValidationError, SerializationError, OwnershipError: nothing was stored.
        """
        await self._rt.ready()
        if isinstance(sessions, Mapping) or not isinstance(sessions, Sequence):
            raise ValidationError("upsert_sessions takes a list of session dicts")
        ids = [_session_id_of(s) for s in sessions]
        if not ids:
            return []
        raws = await self._rt.write(ids, ops.upsert_sessions, list(sessions), bool(preserve_updated_at))
        await self._rt.after_write()
        return [_doc(raw) for raw in raws]

    async def upsert_run(self, session_id: str, run: Mapping[str, Any], *, user_id: str | None = None) -> None:
        """Append a run to a session, or replace the run with the same ``run_id``; O(1) in session length.

        Raises:
            NotFoundError: no such session (or it belongs to another ``user_id``).
            ValidationError, SerializationError: the run cannot be stored; nothing changed.
        """
        await self._rt.ready()
        check_optional_str(user_id, "user_id")
        check_id(session_id, what="session_id")
        run_id, raw = SessionRecord.encode_run(run)
        await self._rt.write((session_id,), ops.upsert_run, session_id, run_id, raw, user_id)
        await self._rt.after_write()

    async def delete_run(self, session_id: str, run_id: str, *, user_id: str | None = None) -> bool:
        """Remove one run from a session; ``True`` if it existed."""
        await self._rt.ready()
        check_optional_str(user_id, "user_id")
        check_id(session_id, what="session_id")
        check_id(run_id, what="run_id")
        removed = await self._rt.write((session_id,), ops.delete_run, session_id, run_id, user_id)
        if removed:
            await self._rt.after_write()
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

        Raises:
            ValidationError: ``fn`` returned something other than a dict for this session, or changed the
                copy it was given in place and returned ``None`` (the change would be lost: return the dict).
            OwnershipError: the session belongs to another user.
        """
        await self._rt.ready()
        check_optional_str(user_id, "user_id")
        check_id(session_id, what="session_id")
        if not callable(fn):
            raise ValidationError(f"update_session: fn must be callable, got {type(fn).__name__}")
        rt = self._rt
        held = await rt.lock_all((session_id,))
        try:
            while True:
                raw, version, foreign = await rt.call(ops.read_for_update, session_id, user_id)
                current = _doc(raw) if raw is not None else None
                result = fn(current)
                if inspect.isawaitable(result):
                    result = await result  # the session lock is held across this await: that is the point
                if result is None:
                    if current is not None and raw is not None and current != _doc(raw):
                        raise ValidationError(
                            "update_session: fn changed the session it was given in place and returned None, "
                            "which means 'leave it unchanged'; return the changed dict instead "
                            "(for example: lambda s: {**s, 'field': value})"
                        )
                    return None
                if foreign:
                    raise OwnershipError(f"session {session_id!r} belongs to another user")
                new = ops.check_session_result(session_id, result)
                try:
                    out = await rt.call(ops.upsert_session, new, version, False, True)
                except ConflictError:
                    continue  # storage's merge changed it meanwhile (a flush adopted another replica's write)
                break
        finally:
            rt.unlock_all(held)
        await rt.after_write()
        return _doc(out)

    async def rename_session(
        self, session_id: str, session_name: str, *, user_id: str | None = None
    ) -> dict[str, Any] | None:
        """Set ``session_data.session_name``; returns the stored session, or ``None`` if not found."""
        await self._rt.ready()
        check_optional_str(user_id, "user_id")
        check_id(session_id, what="session_id")
        if not isinstance(session_name, str):
            raise ValidationError(f"session_name must be a str, got {type(session_name).__name__}")
        raw = await self._rt.write((session_id,), ops.rename_session, session_id, session_name, user_id)
        if raw is None:
            return None
        await self._rt.after_write()
        return _doc(raw)

    async def refresh(self, session_id: str) -> dict[str, Any] | None:
        """Replace the session in memory with the version in storage, discarding unflushed local changes.

        For replicas sharing storage: take another replica's newer version, or resolve a
        :class:`~aiomemdb.ConflictError` raised by a flush under ``on_conflict="raise"`` (then re-apply your
        change on top, e.g. with :meth:`update_session`). Returns the stored session, or ``None`` (and the
        session is dropped from memory) when storage has none.
        """
        await self._rt.ready()
        check_id(session_id, what="session_id")
        if self._persistence is None:
            raise ValidationError("refresh needs a persistence to read from")
        held = await self._rt.lock_all((session_id,))
        try:
            doc = await self._persistence.load_one(SESSIONS, session_id)
            raw = ops.refresh(self._kernel, session_id, doc)
        finally:
            self._rt.unlock_all(held)
            self._kernel.deliver()
        return _doc(raw) if raw is not None else None

    async def delete_session(self, session_id: str, *, user_id: str | None = None) -> bool:
        """Delete a session; ``True`` if it existed (and was visible to ``user_id``)."""
        return await self.delete_sessions([session_id], user_id=user_id) == 1

    async def delete_sessions(self, session_ids: Iterable[str], *, user_id: str | None = None) -> int:
        """Delete many sessions atomically; returns how many existed (and were visible to ``user_id``)."""
        await self._rt.ready()
        check_optional_str(user_id, "user_id")
        ids = check_ids(session_ids, "session_id")
        count = await self._rt.write(ids, ops.delete_sessions, ids, user_id)
        if count:
            await self._rt.after_write()
        return count

    async def drop(self) -> None:
        """Delete every session and every collection record (in memory and, at the next flush, in storage).

        A ``lazy`` store first lists the keys in storage, so that what it never loaded is deleted too.
        """
        await self._rt.ready()
        stored = await self._rt.stored_keys()
        await self._rt.write(list(self._kernel.sessions), ops.drop, stored)
        await self._rt.after_write()

    # -- named collections -------------------------------------------------------------------------------------

    @staticmethod
    def _collection(name: str) -> str:
        if name == SESSIONS:
            raise ValidationError("'sessions' is reserved; use the session methods")
        return check_collection(name)

    async def get_record(self, collection: str, record_id: str, *, user_id: str | None = None) -> dict[str, Any] | None:
        """A copy of one record of a named collection, or ``None`` (also when owned by another user)."""
        await self._rt.ready()
        check_optional_str(user_id, "user_id")
        check_id(record_id, what="record_id")
        raw = await self._rt.call(ops.get_record, self._collection(collection), record_id, user_id)
        return _doc(raw) if raw is not None else None

    async def put_record(self, collection: str, record_id: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """Create or replace one record; returns the stored copy.

        Raises:
            ValidationError, SerializationError: the record cannot be stored; nothing changed.
            OwnershipError: the stored record has a different ``user_id``.
        """
        await self._rt.ready()
        name = self._collection(collection)
        raw = encode_record(record, what=f"{name}[{check_id(record_id, what='record_id')!r}]")
        await self._rt.call(ops.put_records, name, [(record_id, raw, record_owner(record))])
        await self._rt.after_write()
        return _doc(raw)

    async def put_records(self, collection: str, records: Mapping[str, Mapping[str, Any]]) -> int:
        """Create or replace many records of one collection atomically; returns how many were written.

        Raises:
            ValidationError, SerializationError, OwnershipError: nothing was written.
        """
        await self._rt.ready()
        name = self._collection(collection)
        if not isinstance(records, Mapping):
            raise ValidationError(f"put_records takes a dict of id -> record, got {type(records).__name__}")
        items = [
            (check_id(rid, what="record_id"), encode_record(rec, what=f"{name}[{rid!r}]"), record_owner(rec))
            for rid, rec in records.items()
        ]
        if not items:
            return 0
        await self._rt.call(ops.put_records, name, items)
        await self._rt.after_write()
        return len(items)

    async def update_record(self, collection: str, record_id: str, fn: RecordFn) -> dict[str, Any] | None:
        """Atomically read, modify and write one record with a synchronous ``fn``.

        ``fn`` gets a copy of the record (``None`` if absent) and returns the new record, or ``None`` to
        leave it unchanged. Returns the stored record, or ``None`` when ``fn`` returned ``None``.
        """
        await self._rt.ready()
        check_id(record_id, what="record_id")
        name = self._collection(collection)
        where = f"{name}[{record_id!r}]"

        def encode(result: Any) -> tuple[bytes, str | None]:
            return encode_record(result, what=where), record_owner(result)

        raw = await self._rt.call(ops.update_record, name, record_id, fn, encode)
        if raw is None:
            return None
        await self._rt.after_write()
        return _doc(raw)

    async def delete_record(self, collection: str, record_id: str, *, user_id: str | None = None) -> bool:
        """Delete one record; ``True`` if it existed (and was visible to ``user_id``)."""
        return await self.delete_records(collection, [record_id], user_id=user_id) == 1

    async def delete_records(self, collection: str, record_ids: Iterable[str], *, user_id: str | None = None) -> int:
        """Delete many records of one collection; returns how many existed (and were visible)."""
        await self._rt.ready()
        check_optional_str(user_id, "user_id")
        ids = check_ids(record_ids, "record_id")
        count = await self._rt.call(ops.delete_records, self._collection(collection), ids, user_id)
        if count:
            await self._rt.after_write()
        return count

    async def list_records(self, collection: str, *, user_id: str | None = None) -> list[dict[str, Any]]:
        """Copies of every record of a collection (of ``user_id``, if given), oldest write first."""
        await self._rt.ready()
        check_optional_str(user_id, "user_id")
        raws = ops.list_records(self._kernel, self._collection(collection), user_id)
        return [_doc(raw) for raw in raws]

    async def clear_collection(self, collection: str) -> int:
        """Delete every record of a collection; returns how many there were.

        A ``lazy`` store first lists the keys in storage, so that what it never loaded is deleted too.
        """
        await self._rt.ready()
        name = self._collection(collection)
        stored = [rid for _, rid in await self._rt.stored_keys(name)]
        count = await self._rt.call(ops.clear_collection, name, stored)
        if count:
            await self._rt.after_write()
        return count


def _list(k: Kernel, q: Query, fetched: frozenset[tuple[str, str]]) -> tuple[list[bytes], int]:
    return k.list_sessions(q)
