"""Runs of the Agno interface, stored inside their sessions and written one at a time.

``upsert_run`` appends or replaces one run by ``run_id`` at a cost independent of the session's length, keeps the
``run_index`` a run was first written with (as agno does) and, as in agno, skips a run whose session does not
exist (the run is saved with the session instead); unlike agno's, it respects the session's owner.
"""

from __future__ import annotations

from typing import Any

from agno.db.utils import deserialize_run, get_run_type

from aiomemdb import NotFoundError, OwnershipError
from aiomemdb.agno._convert import paginate, run_to_dict, sort_rows
from aiomemdb.agno._stores import AsyncStore

__all__ = ["AsyncRuns"]

# get_run and delete_run look for a run newest session first, a page at a time, and stop when found.
_SCAN_PAGE = 64


class AsyncRuns:
    """Runs; a part of the adapter class."""

    _store: AsyncStore

    async def get_run(self, run_id: str, deserialize: bool | None = True) -> Any:
        """A run from any session (newest sessions searched first), or ``None``."""
        found = await self._find_run(run_id)
        if found is None:
            return None
        run = found[1]
        if not deserialize:
            return run
        return deserialize_run(get_run_type(run), run)

    async def _find_run(self, run_id: str) -> tuple[str, dict[str, Any]] | None:
        """The session id and stored dict of a run, searching the most recently updated sessions first."""
        page_number = 1
        while True:
            rows, total = await self._store.get_sessions(limit=_SCAN_PAGE, page=page_number)
            for row in rows:
                for run in row.get("runs") or []:
                    if isinstance(run, dict) and run.get("run_id") == run_id:
                        return row["session_id"], run
            if page_number * _SCAN_PAGE >= total:
                return None
            page_number += 1

    async def get_runs(
        self,
        session_id: str | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        team_id: str | None = None,
        workflow_id: str | None = None,
        status: Any = None,
        limit: int | None = None,
        page: int | None = None,
        sort_by: str | None = None,
        sort_order: str | None = None,
        deserialize: bool | None = True,
    ) -> Any:
        """Runs matching the filters, by run_index unless sorted; ``(dicts, total)`` when not deserialising."""
        if session_id is not None:
            doc = await self._store.get_session(session_id, user_id=user_id)
            sessions = [doc] if doc is not None else []
        else:
            sessions, _ = await self._store.get_sessions(user_id=user_id, sort_by="created_at", sort_order="asc")
        expected = getattr(status, "value", status)
        rows: list[dict[str, Any]] = []
        for session in sessions:
            for run in session.get("runs") or []:
                if not isinstance(run, dict):
                    continue
                if agent_id is not None and run.get("agent_id") != agent_id:
                    continue
                if team_id is not None and run.get("team_id") != team_id:
                    continue
                if workflow_id is not None and run.get("workflow_id") != workflow_id:
                    continue
                if status is not None and run.get("status") != expected:
                    continue
                rows.append(run)
        total = len(rows)
        if sort_by is not None:
            rows = sort_rows(rows, sort_by, sort_order)
        else:
            rows.sort(key=lambda r: (r.get("run_index") or 0, r.get("created_at") or 0))
        rows = paginate(rows, limit, page)
        if not deserialize:
            return rows, total
        return [deserialize_run(get_run_type(r), r) for r in rows]

    async def upsert_run(
        self, run: Any, session_id: str, user_id: str | None = None, run_index: int | None = None
    ) -> None:
        """Append a run to its session or replace it by run_id (keeping its run_index); O(1) in session length."""
        run_dict = run_to_dict(run)
        run_id = run_dict.get("run_id")
        if run_id is None:
            raise ValueError("Run must have a run_id")
        if "run_index" not in run_dict:
            # agno keeps the index a run was first written with: read the stored run (O(1), one run decoded)
            old = await self._store.get_run(session_id, run_id, user_id=user_id)
            if old is not None and "run_index" in old:
                run_dict = {**run_dict, "run_index": old["run_index"]}
            elif old is None and run_index is not None:
                run_dict = {**run_dict, "run_index": run_index}
        try:
            await self._store.upsert_run(session_id, run_dict, user_id=user_id)
        except NotFoundError:
            if user_id is not None:
                head = await self._store.get_session(session_id, runs_limit=0)
                if head is not None:
                    raise OwnershipError(f"session {session_id!r} belongs to another user") from None
            # agno skips a run whose session does not exist (the run is saved with the session instead)

    async def delete_run(self, run_id: str) -> bool:
        """Remove one run from its session; True if it existed."""
        found = await self._find_run(run_id)
        if found is None:
            return False
        return await self._store.delete_run(found[0], run_id)

    async def delete_runs(self, run_ids: list[str]) -> None:
        """Remove runs from whichever sessions hold them."""
        wanted = set(run_ids)
        if not wanted:
            return
        sessions, _ = await self._store.get_sessions()
        for session in sessions:
            for run in session.get("runs") or []:
                if isinstance(run, dict) and run.get("run_id") in wanted:
                    await self._store.delete_run(session["session_id"], run["run_id"])
