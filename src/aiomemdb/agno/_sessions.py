"""Session and run operations of the Agno interface, written once as store-call generators (see ``_call``).

Semantics follow agno's ``InMemoryDb``: the owner guard returns ``None`` instead of writing, ``get_session`` with
``runs_limit`` keeps agno's context window (``filter_context_runs``), ``upsert_session`` never drops runs that
``upsert_run`` wrote, and a run written for a missing session is skipped. Where agno is wrong we are not: errors
are raised rather than swallowed, ``preserve_updated_at`` is honoured, and ``upsert_run`` respects the owner.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

from agno.db.base import SessionType
from agno.db.utils import deserialize_run, filter_context_runs, get_run_type

from aiomemdb._codec import check_collection
from aiomemdb._exceptions import ConflictError, NotFoundError, OwnershipError
from aiomemdb.agno._call import Op, call
from aiomemdb.agno._convert import (
    page,
    run_to_dict,
    session_row,
    session_runs,
    session_type_value,
    sort_rows,
    to_session,
)
from aiomemdb.agno._runcache import RunCache

__all__ = ["SessionOps"]

_CORE_SORTS = ("updated_at", "created_at", "session_id")
# get_run and delete_run look for a run newest session first, a page at a time, and stop when found.
_SCAN_PAGE = 64


S = TypeVar("S")


class SessionOps:
    """Sessions, runs and the seed operations; mixed into both adapter classes."""

    _run_cache: RunCache
    _owns_store: bool
    memory_table_name: str
    metrics_table_name: str
    eval_table_name: str
    knowledge_table_name: str
    trace_table_name: str
    span_table_name: str
    versions_table_name: str
    learnings_table_name: str

    def _bind_store(self, store: S | None, make: Callable[[], S], run_cache_size: int) -> S:
        """The constructors' shared tail: check agno's table names (each is a collection), set up the run
        cache, and return the store to use (``store``, which is then not ours to close, or a new one)."""
        for name in (self.memory_table_name, self.metrics_table_name, self.eval_table_name,
                     self.knowledge_table_name, self.trace_table_name, self.span_table_name,
                     self.versions_table_name, self.learnings_table_name):  # fmt: skip
            check_collection(name)
        self._run_cache = RunCache(run_cache_size)
        self._owns_store = store is None
        return make() if store is None else store

    # -- sessions: reads ---------------------------------------------------------------------------------------

    def _op_get_session(
        self,
        session_id: str,
        session_type: Any,
        user_id: str | None,
        deserialize: bool | None,
        runs_limit: int | None,
    ) -> Op[Any]:
        if runs_limit is None:
            doc = yield call("get_session", session_id, user_id=user_id)
        else:
            doc = yield from self._op_context_window(session_id, user_id, runs_limit)
        if doc is None:
            return None
        if not deserialize:
            return doc
        return self._run_cache.session(session_type, doc)

    def _op_context_window(self, session_id: str, user_id: str | None, runs_limit: int) -> Op[Any]:
        """The session with only its last ``runs_limit`` context-relevant runs (agno's bounded read).

        The core returns the last N runs cheaply, so this asks for a margin more than needed and only reads the
        whole history when skipped runs (member runs, errors, cancellations) eat the margin.
        """
        if runs_limit > 0:
            want = runs_limit + max(runs_limit, 8)
            doc = yield call("get_session", session_id, user_id=user_id, runs_limit=want)
            if doc is None:
                return None
            runs = doc.get("runs") or []
            kept = filter_context_runs(runs)
            if len(runs) < want or len(kept) >= runs_limit:
                doc["runs"] = kept[-runs_limit:]
                return doc
        doc = yield call("get_session", session_id, user_id=user_id)
        if doc is None:
            return None
        # Python's [-0:] is the whole list: agno returns every run for runs_limit=0, and so do we.
        doc["runs"] = filter_context_runs(doc.get("runs") or [])[-runs_limit:]
        return doc

    def _op_get_sessions(
        self,
        session_type: Any,
        user_id: str | None,
        component_id: str | None,
        session_name: str | None,
        start_timestamp: int | None,
        end_timestamp: int | None,
        limit: int | None,
        page_number: int | None,
        sort_by: str | None,
        sort_order: str | None,
        deserialize: bool | None,
        include_runs: bool,
    ) -> Op[Any]:
        stype = session_type_value(session_type)
        filters: dict[str, Any] = {
            "user_id": user_id,
            "session_type": stype,
            "session_name": session_name,
            "start_timestamp": start_timestamp,
            "end_timestamp": end_timestamp,
            "include_runs": include_runs,
        }
        if component_id is not None:
            by_type = {"agent": "agent_id", "team": "team_id", "workflow": "workflow_id"}
            filters[by_type.get(stype or "", "component_id")] = component_id
        order = "asc" if sort_order == "asc" else "desc"
        if sort_by is None:
            # agno lists in insertion order; creation order is the stored equivalent.
            rows, total = yield call("get_sessions", sort_by="created_at", sort_order="asc", limit=limit,
                                     page=page_number if limit is not None else None, **filters)  # fmt: skip
        elif sort_by in _CORE_SORTS:
            rows, total = yield call("get_sessions", sort_by=sort_by, sort_order=order, limit=limit,
                                     page=page_number if limit is not None else None, **filters)  # fmt: skip
        else:
            rows, total = yield call("get_sessions", sort_by="created_at", sort_order="asc", **filters)
            rows = page(sort_rows(rows, sort_by, sort_order), limit, page_number)
        if not include_runs:
            for row in rows:
                row["runs"] = None
        if not deserialize:
            return rows, total
        return [to_session(session_type, row) for row in rows]

    # -- sessions: writes --------------------------------------------------------------------------------------

    def _op_upsert_session(self, session: Any, deserialize: bool | None, preserve_updated_at: bool = False) -> Op[Any]:
        row = session_row(session)
        try:
            stored = yield call("upsert_session", row, preserve_updated_at=preserve_updated_at, include_runs=False)
        except OwnershipError:
            return None  # agno's owner guard: an owned session is only writable by its owner
        runs = session_runs(session)
        created = stored.get("created_at")
        stale_stamp = not preserve_updated_at and stored.get("updated_at") != created
        if stored.get("version") == 1 and (runs or stale_stamp):
            # This call created the session. As in agno, a first insert stores the runs the session carries
            # (imports, restores; later saves never do, because runs are written one by one and the live
            # session object may hold a stale list) and stamps updated_at = created_at.
            full = {**row, "created_at": created, "updated_at": created if stale_stamp else stored.get("updated_at")}
            if runs:
                full["runs"] = [run_to_dict(r) for r in runs]
            # ConflictError: another writer got there first, and its version stands
            with contextlib.suppress(ConflictError):
                stored = yield call(
                    "upsert_session", full, expected_version=1, preserve_updated_at=True, include_runs=False
                )
        stored.pop("runs", None)
        if not deserialize:
            stored["runs"] = [run_to_dict(r) for r in runs]
            return stored
        result = to_session(None, stored)
        result.runs = session.runs if not isinstance(session, dict) else result.runs
        return result

    def _op_upsert_sessions(
        self, sessions: list[Any], deserialize: bool | None, preserve_updated_at: bool
    ) -> Op[list[Any]]:
        results: list[Any] = []
        for session in sessions:
            if session is None:
                continue
            result = yield from self._op_upsert_session(session, deserialize, preserve_updated_at)
            if result is not None:
                results.append(result)
        return results

    def _op_rename_session(
        self,
        session_id: str,
        session_type: Any,
        session_name: str,
        user_id: str | None,
        deserialize: bool | None,
    ) -> Op[Any]:
        if session_type is not None:
            head = yield call("get_session", session_id, user_id=user_id, runs_limit=0)
            if head is None or head.get("session_type") != session_type_value(session_type):
                return None
        doc = yield call("rename_session", session_id, session_name, user_id=user_id)
        if doc is None:
            return None
        if not deserialize:
            return doc
        return to_session(session_type, doc)

    def _op_delete_session(self, session_id: str, user_id: str | None) -> Op[bool]:
        deleted: bool = yield call("delete_session", session_id, user_id=user_id)
        self._run_cache.drop(session_id)
        return deleted

    def _op_delete_sessions(self, session_ids: list[str], user_id: str | None) -> Op[None]:
        yield call("delete_sessions", list(session_ids), user_id=user_id)
        for sid in session_ids:
            self._run_cache.drop(sid)

    # -- runs --------------------------------------------------------------------------------------------------

    def _op_upsert_run(self, run: Any, session_id: str, user_id: str | None, run_index: int | None) -> Op[None]:
        run_dict = run_to_dict(run)
        run_id = run_dict.get("run_id")
        if run_id is None:
            raise ValueError("Run must have a run_id")
        if "run_index" not in run_dict:
            # agno keeps the index a run was first written with: read the stored run (O(1), one run decoded)
            old = yield call("get_run", session_id, run_id, user_id=user_id)
            if old is not None and "run_index" in old:
                run_dict = {**run_dict, "run_index": old["run_index"]}
            elif old is None and run_index is not None:
                run_dict = {**run_dict, "run_index": run_index}
        try:
            yield call("upsert_run", session_id, run_dict, user_id=user_id)
        except NotFoundError:
            if user_id is not None:
                head = yield call("get_session", session_id, runs_limit=0)
                if head is not None:
                    raise OwnershipError(f"session {session_id!r} belongs to another user") from None
            # agno skips a run whose session does not exist (the run is saved with the session instead)
            return None
        return None

    def _op_find_run(self, run_id: str) -> Op[tuple[str, dict[str, Any]] | None]:
        """The session id and stored dict of a run, searching the most recently updated sessions first."""
        page_number = 1
        while True:
            rows, total = yield call("get_sessions", limit=_SCAN_PAGE, page=page_number)
            for row in rows:
                for run in row.get("runs") or []:
                    if isinstance(run, dict) and run.get("run_id") == run_id:
                        return row["session_id"], run
            if page_number * _SCAN_PAGE >= total:
                return None
            page_number += 1

    def _op_get_run(self, run_id: str, deserialize: bool | None) -> Op[Any]:
        found = yield from self._op_find_run(run_id)
        if found is None:
            return None
        run = found[1]
        if not deserialize:
            return run
        return deserialize_run(get_run_type(run), run)

    def _op_get_runs(
        self,
        session_id: str | None,
        user_id: str | None,
        agent_id: str | None,
        team_id: str | None,
        workflow_id: str | None,
        status: Any,
        limit: int | None,
        page_number: int | None,
        sort_by: str | None,
        sort_order: str | None,
        deserialize: bool | None,
    ) -> Op[Any]:
        if session_id is not None:
            doc = yield call("get_session", session_id, user_id=user_id)
            sessions = [doc] if doc is not None else []
        else:
            sessions, _ = yield call("get_sessions", user_id=user_id, sort_by="created_at", sort_order="asc")
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
        rows = page(rows, limit, page_number)
        if not deserialize:
            return rows, total
        return [deserialize_run(get_run_type(r), r) for r in rows]

    def _op_delete_run(self, run_id: str) -> Op[bool]:
        found = yield from self._op_find_run(run_id)
        if found is None:
            return False
        deleted: bool = yield call("delete_run", found[0], run_id)
        return deleted

    def _op_delete_runs(self, run_ids: list[str]) -> Op[None]:
        wanted = set(run_ids)
        if not wanted:
            return None
        sessions, _ = yield call("get_sessions")
        for session in sessions:
            for run in session.get("runs") or []:
                if isinstance(run, dict) and run.get("run_id") in wanted:
                    yield call("delete_run", session["session_id"], run["run_id"])
        return None

    # -- the seed operations (agno 1.x InMemoryStorage, SPEC §2) ------------------------------------------------

    def _op_get_all_sessions(self, user_id: str | None, entity_id: str | None) -> Op[list[Any]]:
        rows, _ = yield call("get_sessions", user_id=user_id, component_id=entity_id)
        return [to_session(None, row) for row in rows]

    def _op_get_recent_sessions(self, user_id: str | None, entity_id: str | None, limit: int | None) -> Op[list[Any]]:
        rows, _ = yield call("get_sessions", user_id=user_id, component_id=entity_id, limit=limit)
        return [to_session(None, row) for row in rows]

    def _op_drop(self) -> Op[None]:
        yield call("drop")
        self._run_cache.clear()


def session_type_of(session: Any) -> SessionType | None:
    """The SessionType of a stored session dict, if it names one."""
    value = session.get("session_type")
    try:
        return SessionType(value) if value is not None else None
    except ValueError:
        return None
