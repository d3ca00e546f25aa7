"""The session methods of :class:`~aiomemdb.AsyncInMemoryDb`: each checks its arguments, runs one kernel
transaction through the runtime (which fetches what the kernel needs), waits as the durability policy asks,
and decodes the result.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from aiomemdb._async_records import doc as _doc
from aiomemdb._codec import SESSIONS, check_id
from aiomemdb._exceptions import ConflictError, OwnershipError, ValidationError
from aiomemdb._io._runtime import Runtime
from aiomemdb._kernel import Kernel, Query, SortBy, SortOrder, check_ids, check_limit, check_optional_str
from aiomemdb._kernel import _ops as ops
from aiomemdb._record import RawParts, SessionParts, SessionRecord, decode_parts
from aiomemdb.persistence._base import Persistence

__all__ = ["SessionFn", "SessionParts", "SessionsApi", "list_parts"]

SessionFn = Callable[[dict[str, Any] | None], "dict[str, Any] | Awaitable[dict[str, Any] | None] | None"]


def list_parts(k: Kernel, q: Query, fetched: frozenset[tuple[str, str]]) -> tuple[list[RawParts], int]:
    return k.render_page(q, lambda rec: rec.parts(include_runs=q.include_runs))


def _session_id_of(session: Any) -> str:
    if not isinstance(session, Mapping):
        raise ValidationError(f"a session must be a dict, got {type(session).__name__}")
    return check_id(session.get("session_id"), what="session_id")


class SessionsApi:
    """Sessions over the store's runtime and kernel (set by :class:`~aiomemdb.AsyncInMemoryDb`)."""

    _rt: Runtime
    _kernel: Kernel
    _persistence: Persistence | None

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

    async def _session_parts(self, session_id: str, *, user_id: str | None = None) -> SessionParts | None:
        """``(session without runs, {run_id: run JSON bytes} or None)``, or ``None``: for readers that decode
        runs one at a time, on first use (the Agno adapter). The dict is a fresh decode; the bytes are immutable.
        """
        await self._rt.ready()
        check_optional_str(user_id, "user_id")
        check_id(session_id, what="session_id")
        raw = await self._rt.call(ops.get_session_parts, session_id, user_id)
        return decode_parts(raw) if raw is not None else None

    async def _page_parts(self, q: Query) -> tuple[list[SessionParts], int]:
        """:meth:`get_sessions` of a built query, each session as :meth:`_session_parts` gives it."""
        await self._rt.ready()
        page_parts, total = await self._rt.call(list_parts, q)
        return [decode_parts(raw) for raw in page_parts], total

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

    async def _upsert_row(
        self, row: Mapping[str, Any], create: Callable[[], Mapping[str, Any]], *, preserve_updated_at: bool = False
    ) -> tuple[dict[str, Any], bool]:
        """Save a session's row without touching its runs, or create the session whole from ``create()`` (called
        only if it does not exist, in the same transaction): ``(stored row without runs, created)``. For the
        Agno adapter, whose first save of a session stores the runs it carries.

        Raises:
            ValidationError, SerializationError: nothing changed.
            OwnershipError: the session belongs to another ``user_id``.
        """
        await self._rt.ready()
        sid = _session_id_of(row)
        raw, created = await self._rt.write((sid,), ops.upsert_session_row, row, create, bool(preserve_updated_at))
        await self._rt.after_write()
        return _doc(raw), created

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
            # No flush may run between the read and the replacement: one in progress would write the local
            # version being discarded over storage's, and memory and storage would disagree.
            async with self._rt.flushes_excluded():
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


def _list(k: Kernel, q: Query, fetched: frozenset[tuple[str, str]]) -> tuple[list[bytes], int]:
    return k.list_sessions(q)
