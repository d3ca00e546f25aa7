"""Sessions and the seed operations of the Agno interface, over the store's sessions.

Semantics follow agno's ``InMemoryDb``: the owner guard returns ``None`` instead of writing, ``get_session`` with
``runs_limit`` keeps agno's context window (``filter_context_runs``), ``upsert_session`` never drops runs that
``upsert_run`` wrote. Where agno is wrong we are not: errors are raised rather than swallowed and
``preserve_updated_at`` is honoured. Every session object a read returns is the reader's own, built from its own
decode of the stored JSON (history runs on first use: ``_deferred``).
"""

from __future__ import annotations

from typing import Any, Literal

from agno.db.base import SessionType
from agno.db.utils import filter_context_runs

from aiomemdb import OwnershipError
from aiomemdb._kernel import Query
from aiomemdb._record import SessionParts
from aiomemdb.agno._convert import (
    rows_of,
    run_to_dict,
    session_from_parts,
    session_row,
    session_runs,
    session_type_value,
    sort_parts,
    to_session,
)
from aiomemdb.agno._rows import CoreSort, core_sort
from aiomemdb.agno._stores import AsyncStore

__all__ = ["AsyncSessions"]


class AsyncSessions:
    """Sessions and the seed operations; a part of the adapter class."""

    _store: AsyncStore

    # -- reads -------------------------------------------------------------------------------------------------

    async def get_session(
        self,
        session_id: str,
        session_type: SessionType | None = None,
        user_id: str | None = None,
        deserialize: bool | None = True,
        runs_limit: int | None = None,
    ) -> Any:
        """A session as agno's Session object (or its dict), ``None`` if missing or owned by another user.

        ``runs_limit`` keeps only the last N context-relevant runs (agno's ``filter_context_runs``).
        """
        if runs_limit is None:
            if deserialize:
                # the row decoded, each run's bytes kept: a run is decoded when the reader looks into it
                found = await self._store._session_parts(session_id, user_id=user_id)
                return session_from_parts(session_type, *found) if found is not None else None
            doc = await self._store.get_session(session_id, user_id=user_id)
        else:
            doc = await self._context_window(session_id, user_id, runs_limit)
        if doc is None:
            return None
        if not deserialize:
            return doc
        return to_session(session_type, doc)

    async def _context_window(self, session_id: str, user_id: str | None, runs_limit: int) -> dict[str, Any] | None:
        """The session with only its last ``runs_limit`` context-relevant runs (agno's bounded read).

        The core returns the last N runs cheaply, so this asks for a margin more than needed and only reads the
        whole history when skipped runs (member runs, errors, cancellations) eat the margin.
        """
        if runs_limit > 0:
            want = runs_limit + max(runs_limit, 8)
            doc = await self._store.get_session(session_id, user_id=user_id, runs_limit=want)
            if doc is None:
                return None
            runs = doc.get("runs") or []
            kept = filter_context_runs(runs)
            if len(runs) < want or len(kept) >= runs_limit:
                doc["runs"] = kept[-runs_limit:]
                return doc
        doc = await self._store.get_session(session_id, user_id=user_id)
        if doc is None:
            return None
        # Python's [-0:] is the whole list: agno returns every run for runs_limit=0, and so do we.
        doc["runs"] = filter_context_runs(doc.get("runs") or [])[-runs_limit:]
        return doc

    async def get_sessions(
        self,
        session_type: SessionType | None = None,
        user_id: str | None = None,
        component_id: str | None = None,
        session_name: str | None = None,
        start_timestamp: int | None = None,
        end_timestamp: int | None = None,
        limit: int | None = None,
        page: int | None = None,
        sort_by: str | None = None,
        sort_order: str | None = None,
        deserialize: bool | None = True,
        include_runs: bool = True,
    ) -> Any:
        """Sessions matching the filters: a list of Session objects, or ``(dicts, total)`` when not deserialising."""
        stype = session_type_value(session_type)
        # component_id is the agent, team or workflow id of a typed query; of an untyped one, any of them
        typed = stype in ("agent", "team", "workflow")

        async def rows_by(
            by: CoreSort, order: Literal["asc", "desc"], n: int | None, page_no: int | None
        ) -> tuple[list[SessionParts], int]:
            q = Query.build(
                user_id=user_id, agent_id=component_id if stype == "agent" else None,
                team_id=component_id if stype == "team" else None,
                workflow_id=component_id if stype == "workflow" else None,
                component_id=None if typed else component_id, session_type=stype, session_name=session_name,
                start_timestamp=start_timestamp, end_timestamp=end_timestamp, sort_by=by, sort_order=order,
                limit=n, page=page_no if n is not None else None, include_runs=include_runs,
            )  # fmt: skip
            return await self._store._page_parts(q)

        if sort_by is None:
            # agno lists in insertion order; creation order is the stored equivalent.
            found, total = await rows_by("created_at", "asc", limit, page)
        elif core_sort(sort_by):
            found, total = await rows_by(sort_by, "asc" if sort_order == "asc" else "desc", limit, page)
        else:
            found, total = await rows_by("created_at", "asc", None, None)
            found = sort_parts(found, sort_by, sort_order, limit, page)
        if not include_runs:
            for row, _ in found:
                row["runs"] = None
        if not deserialize:
            return [rows_of(part) for part in found], total
        # each row decoded; a session's runs are decoded when the reader looks into them
        return [session_from_parts(session_type, row, runs) for row, runs in found]

    # -- writes ------------------------------------------------------------------------------------------------

    async def upsert_session(self, session: Any, deserialize: bool | None = True) -> Any:
        """Create or update a session (its runs are kept); ``None`` if it belongs to another user."""
        return await self._upsert_one(session, deserialize, preserve_updated_at=False)

    async def _upsert_one(self, session: Any, deserialize: bool | None, preserve_updated_at: bool) -> Any:
        row = session_row(session)
        runs = session_runs(session)

        def first_insert() -> dict[str, Any]:
            # Only when this call creates the session, in the same transaction: as in agno, a first insert stores
            # the runs the session carries (imports, restores; later saves never do, because runs are written one
            # by one and the live session object may hold a stale list) and stamps updated_at = created_at.
            full = {k: v for k, v in row.items() if preserve_updated_at or k != "updated_at"}
            if runs:
                full["runs"] = [run_to_dict(r) for r in runs]
            return full

        try:
            stored, _ = await self._store._upsert_row(row, first_insert, preserve_updated_at=preserve_updated_at)
        except OwnershipError:
            return None  # agno's owner guard: an owned session is only writable by its owner
        if not deserialize:
            stored["runs"] = [run_to_dict(r) for r in runs]
            return stored
        result = session_from_parts(None, stored, None)  # the row only: a fresh decode, no runs
        # the caller's own run objects, as agno returns them (rebuilding every run on each save would cost more)
        result.runs = session.runs if not isinstance(session, dict) else result.runs
        return result

    async def upsert_sessions(
        self, sessions: list[Any], deserialize: bool | None = True, preserve_updated_at: bool = False
    ) -> list[Any]:
        """Upsert many sessions; errors are raised (agno's returns [] and hides them)."""
        results: list[Any] = []
        for session in sessions:
            if session is None:
                continue
            result = await self._upsert_one(session, deserialize, preserve_updated_at)
            if result is not None:
                results.append(result)
        return results

    async def rename_session(
        self,
        session_id: str,
        session_type: SessionType | None,
        session_name: str,
        user_id: str | None = None,
        deserialize: bool | None = True,
    ) -> Any:
        """Set ``session_data.session_name``; ``None`` if the session is missing, of another type or user."""
        if session_type is not None:
            head = await self._store.get_session(session_id, user_id=user_id, runs_limit=0)
            if head is None or head.get("session_type") != session_type_value(session_type):
                return None
        doc = await self._store.rename_session(session_id, session_name, user_id=user_id)
        if doc is None:
            return None
        if not deserialize:
            return doc
        return to_session(session_type, doc)

    async def delete_session(self, session_id: str, user_id: str | None = None) -> bool:
        """Delete a session (only ``user_id``'s, if given); True if it existed."""
        return await self._store.delete_session(session_id, user_id=user_id)

    async def delete_sessions(self, session_ids: list[str], user_id: str | None = None) -> None:
        """Delete several sessions (only ``user_id``'s, if given)."""
        await self._store.delete_sessions(list(session_ids), user_id=user_id)

    # -- the seed operations (agno 1.x InMemoryStorage, SPEC §2) ------------------------------------------------

    async def get_all_sessions(self, user_id: str | None = None, entity_id: str | None = None) -> list[Any]:
        """Every session (of ``user_id`` / agent, team or workflow ``entity_id``), most recently updated first."""
        found, _ = await self._store._page_parts(
            Query.build(user_id=user_id, component_id=entity_id, limit=None, page=None, sort_order="desc")
        )
        return [session_from_parts(None, row, runs) for row, runs in found]

    async def get_recent_sessions(
        self, user_id: str | None = None, entity_id: str | None = None, limit: int | None = 2
    ) -> list[Any]:
        """The ``limit`` most recently updated sessions; among equal ``updated_at`` the later write first."""
        q = Query.build(user_id=user_id, component_id=entity_id, limit=limit, page=None, sort_order="desc")
        found, _ = await self._store._page_parts(q)
        return [session_from_parts(None, row, runs) for row, runs in found]

    async def drop(self) -> None:
        """Delete every session and every other record of this database."""
        await self._store.drop()
