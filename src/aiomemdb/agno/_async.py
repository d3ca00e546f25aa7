"""``aiomemdb.agno.AsyncInMemoryDb``: agno's ``AsyncBaseDb`` over :class:`aiomemdb.AsyncInMemoryDb`.

For ``await agent.arun(...)``, teams and workflows in async servers (AgentOS, FastAPI). Every method forwards
to an operation written once in the mixins (``_sessions``, ``_records``, ``_tracing``, ``_learnings``) and
awaited here against the async store; the sync twin drives the same operations. The store starts on first
use and is bound to that event loop; ``await db.close()`` (or ``async with db``) flushes and closes it.
"""

from __future__ import annotations

from datetime import date, datetime
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, Unpack

from agno.db.base import AsyncBaseDb, SessionType

from aiomemdb._async import AsyncInMemoryDb as _Store
from aiomemdb._async import StoreOptions
from aiomemdb._stats import FlushReport, Stats
from aiomemdb.agno._call import Op, drive_async
from aiomemdb.agno._learnings import LearningOps, learning_filters
from aiomemdb.agno._records import RecordOps
from aiomemdb.agno._sessions import SessionOps
from aiomemdb.agno._tracing import TraceOps

__all__ = ["AsyncInMemoryDb"]

T = TypeVar("T")


class AsyncInMemoryDb(SessionOps, RecordOps, TraceOps, LearningOps, AsyncBaseDb):
    """agno's async database interface (``AsyncBaseDb``) in memory, optionally persisted.

    The async twin of :class:`aiomemdb.agno.InMemoryDb`: the same methods and semantics (agno's
    ``InMemoryDb``), awaited; concurrent tasks never lose an update.

    Args:
        store: use this existing store instead of creating one (it is not closed by :meth:`close`).
        run_cache_size: how many sessions keep their deserialised run objects for reuse (0: none).
        id: agno's database id.
        session_table: agno's table names (this and the ``*_table`` arguments after it); each table is a
            collection of the store.
        memory_table: see ``session_table``.
        metrics_table: see ``session_table``.
        eval_table: see ``session_table``.
        knowledge_table: see ``session_table``.
        traces_table: see ``session_table``.
        spans_table: see ``session_table``.
        versions_table: see ``session_table``.
        learnings_table: see ``session_table``.
        **options: the store's options, passed to :class:`aiomemdb.AsyncInMemoryDb`: ``storage_dict`` (the caller's dict
            becomes the live session storage), ``persistence`` (e.g. ``DirectoryPersistence(path)``;
            memories, metrics, knowledge, evals, traces and learnings are persisted with the sessions),
            ``durability``, ``flush_interval``, ``journal_path``, ``lazy``, ``max_sessions``, ``on_event`` …
    """

    def __init__(
        self,
        *,
        store: _Store | None = None,
        run_cache_size: int = 256,
        id: str | None = None,
        session_table: str | None = None,
        memory_table: str | None = None,
        metrics_table: str | None = None,
        eval_table: str | None = None,
        knowledge_table: str | None = None,
        traces_table: str | None = None,
        spans_table: str | None = None,
        versions_table: str | None = None,
        learnings_table: str | None = None,
        **options: Unpack[StoreOptions],
    ) -> None:
        super().__init__(
            id=id,
            session_table=session_table,
            memory_table=memory_table,
            metrics_table=metrics_table,
            eval_table=eval_table,
            knowledge_table=knowledge_table,
            traces_table=traces_table,
            spans_table=spans_table,
            versions_table=versions_table,
            learnings_table=learnings_table,
        )
        self._store = self._bind_store(store, lambda: _Store(**options), run_cache_size)

    async def _run(self, op: Op[T]) -> T:
        return await drive_async(self._store, op)

    # -- lifecycle and the store -------------------------------------------------------------------------------

    @property
    def store(self) -> _Store:
        """The :class:`aiomemdb.AsyncInMemoryDb` holding the data."""
        return self._store

    async def close(self) -> None:
        """Flush and close the store (unless it was passed in as ``store=``); idempotent."""
        if self._owns_store:
            await self._store.aclose()

    async def aclose(self) -> None:
        """Same as :meth:`close` (agno's name is ``close``; aiomemdb's async name is ``aclose``)."""
        await self.close()

    async def __aenter__(self) -> Self:
        await self._store.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def flush(self) -> FlushReport:
        """Persist every change now (see :meth:`aiomemdb.AsyncInMemoryDb.flush`)."""
        return await self._store.flush()

    def stats(self) -> Stats:
        """The store's counters."""
        return self._store.stats()

    def to_dict(self) -> dict[str, Any]:
        """agno's description of this database: its id, table names and type."""
        return {**super().to_dict(), "type": "aiomemdb"}

    async def table_exists(self, table_name: str) -> bool:
        """Every table exists in memory."""
        return True

    # -- schema versions ---------------------------------------------------------------------------------------

    async def get_latest_schema_version(self, table_name: str = "") -> str:
        """The version stamped for ``table_name``; ``"2.0.0"`` when none is (so agno runs its migrations)."""
        return await self._run(self._op_get_latest_schema_version(table_name))

    async def upsert_schema_version(self, table_name: str = "", version: str = "") -> None:
        """Stamp ``table_name`` with ``version``."""
        await self._run(self._op_upsert_schema_version(table_name, version))

    # -- sessions ----------------------------------------------------------------------------------------------

    async def delete_session(self, session_id: str, user_id: str | None = None) -> bool:
        """Delete a session (only ``user_id``'s, if given); True if it existed."""
        return await self._run(self._op_delete_session(session_id, user_id))

    async def delete_sessions(self, session_ids: list[str], user_id: str | None = None) -> None:
        """Delete several sessions (only ``user_id``'s, if given)."""
        await self._run(self._op_delete_sessions(session_ids, user_id))

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
        return await self._run(self._op_get_session(session_id, session_type, user_id, deserialize, runs_limit))

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
        return await self._run(
            self._op_get_sessions(session_type, user_id, component_id, session_name, start_timestamp,
                                  end_timestamp, limit, page, sort_by, sort_order, deserialize, include_runs)
        )  # fmt: skip

    async def rename_session(
        self,
        session_id: str,
        session_type: SessionType | None,
        session_name: str,
        user_id: str | None = None,
        deserialize: bool | None = True,
    ) -> Any:
        """Set ``session_data.session_name``; ``None`` if the session is missing, of another type or user."""
        return await self._run(self._op_rename_session(session_id, session_type, session_name, user_id, deserialize))

    async def upsert_session(self, session: Any, deserialize: bool | None = True) -> Any:
        """Create or update a session (its runs are kept); ``None`` if it belongs to another user."""
        return await self._run(self._op_upsert_session(session, deserialize))

    async def upsert_sessions(
        self, sessions: list[Any], deserialize: bool | None = True, preserve_updated_at: bool = False
    ) -> list[Any]:
        """Upsert many sessions; errors are raised (agno's returns [] and hides them)."""
        return await self._run(self._op_upsert_sessions(sessions, deserialize, preserve_updated_at))

    # -- seed operations (agno 1.x InMemoryStorage) ------------------------------------------------------------

    async def get_all_sessions(self, user_id: str | None = None, entity_id: str | None = None) -> list[Any]:
        """Every session (of ``user_id`` / agent, team or workflow ``entity_id``), most recently updated first."""
        return await self._run(self._op_get_all_sessions(user_id, entity_id))

    async def get_recent_sessions(
        self, user_id: str | None = None, entity_id: str | None = None, limit: int | None = 2
    ) -> list[Any]:
        """The ``limit`` most recently updated sessions; among equal ``updated_at`` the later write first."""
        return await self._run(self._op_get_recent_sessions(user_id, entity_id, limit))

    async def drop(self) -> None:
        """Delete every session and every other record of this database."""
        await self._run(self._op_drop())

    # -- runs --------------------------------------------------------------------------------------------------

    async def get_run(self, run_id: str, deserialize: bool | None = True) -> Any:
        """A run from any session (newest sessions searched first), or ``None``."""
        return await self._run(self._op_get_run(run_id, deserialize))

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
        return await self._run(
            self._op_get_runs(session_id, user_id, agent_id, team_id, workflow_id, status, limit, page,
                              sort_by, sort_order, deserialize)
        )  # fmt: skip

    async def upsert_run(
        self, run: Any, session_id: str, user_id: str | None = None, run_index: int | None = None
    ) -> None:
        """Append a run to its session or replace it by run_id (keeping its run_index); O(1) in session length."""
        await self._run(self._op_upsert_run(run, session_id, user_id, run_index))

    async def delete_run(self, run_id: str) -> bool:
        """Remove one run from its session; True if it existed."""
        return await self._run(self._op_delete_run(run_id))

    async def delete_runs(self, run_ids: list[str]) -> None:
        """Remove runs from whichever sessions hold them."""
        await self._run(self._op_delete_runs(run_ids))

    # -- memories ----------------------------------------------------------------------------------------------

    async def clear_memories(self) -> None:
        """Delete every user memory."""
        await self._run(self._op_clear_memories())

    async def delete_user_memory(self, memory_id: str, user_id: str | None = None) -> None:
        """Delete one memory (only ``user_id``'s, if given)."""
        await self._run(self._op_delete_user_memory(memory_id, user_id))

    async def delete_user_memories(self, memory_ids: list[str], user_id: str | None = None) -> None:
        """Delete several memories (only ``user_id``'s, if given)."""
        await self._run(self._op_delete_user_memories(memory_ids, user_id))

    async def get_all_memory_topics(self, user_id: str | None = None) -> list[str]:
        """Every topic used by the memories (of ``user_id``, if given)."""
        return await self._run(self._op_get_all_memory_topics(user_id))

    async def get_user_memory(self, memory_id: str, deserialize: bool | None = True, user_id: str | None = None) -> Any:
        """One memory as UserMemory (or dict); ``None`` if missing or another user's."""
        return await self._run(self._op_get_user_memory(memory_id, deserialize, user_id))

    async def get_user_memories(
        self,
        user_id: str | None = None,
        agent_id: str | None = None,
        team_id: str | None = None,
        topics: list[str] | None = None,
        search_content: str | None = None,
        limit: int | None = None,
        page: int | None = None,
        sort_by: str | None = None,
        sort_order: str | None = None,
        deserialize: bool | None = True,
    ) -> Any:
        """Memories matching the filters; ``(dicts, total)`` when not deserialising."""
        return await self._run(
            self._op_get_user_memories(user_id, agent_id, team_id, topics, search_content, limit, page, sort_by,
                                       sort_order, deserialize)
        )  # fmt: skip

    async def get_user_memory_stats(
        self, limit: int | None = None, page: int | None = None, user_id: str | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """Per-user memory counts and last update, most recent first."""
        return await self._run(self._op_get_user_memory_stats(limit, page, user_id))

    async def upsert_user_memory(self, memory: Any, deserialize: bool | None = True) -> Any:
        """Create or replace a memory (an id is assigned if missing)."""
        return await self._run(self._op_upsert_user_memory(memory, deserialize))

    async def upsert_memories(
        self, memories: list[Any], deserialize: bool | None = True, preserve_updated_at: bool = False
    ) -> list[Any]:
        """Create or replace many memories at once."""
        return await self._run(self._op_upsert_memories(memories, deserialize, preserve_updated_at))

    # -- metrics -----------------------------------------------------------------------------------------------

    async def get_metrics(
        self, starting_date: date | None = None, ending_date: date | None = None, user_id: str | None = None
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Daily metric rows in the date range (``user_id=""``: the unowned bucket) and the latest update time."""
        return await self._run(self._op_get_metrics(starting_date, ending_date, user_id))

    async def calculate_metrics(self) -> list[dict[str, Any]] | None:
        """Compute the daily metrics still owed, per user, from the stored sessions."""
        return await self._run(self._op_calculate_metrics())

    # -- knowledge ---------------------------------------------------------------------------------------------

    async def delete_knowledge_content(self, id: str, user_id: str | None = None) -> None:
        """Delete a knowledge row; a scoped call deletes only the user's own rows."""
        await self._run(self._op_delete_knowledge_content(id, user_id))

    async def get_knowledge_content(self, id: str, user_id: str | None = None) -> Any:
        """A knowledge row visible to ``user_id`` (theirs or shared), or ``None``."""
        return await self._run(self._op_get_knowledge_content(id, user_id))

    async def get_knowledge_contents(
        self,
        limit: int | None = None,
        page: int | None = None,
        sort_by: str | None = None,
        sort_order: str | None = None,
        linked_to: str | None = None,
        user_id: str | None = None,
    ) -> tuple[list[Any], int]:
        """Knowledge rows visible to ``user_id``, with the total count."""
        return await self._run(self._op_get_knowledge_contents(limit, page, sort_by, sort_order, linked_to, user_id))

    async def upsert_knowledge_content(self, knowledge_row: Any) -> Any:
        """Create or replace a knowledge row; a scoped write cannot replace another user's or a shared row."""
        return await self._run(self._op_upsert_knowledge_content(knowledge_row))

    # -- evals -------------------------------------------------------------------------------------------------

    async def create_eval_run(self, eval_run: Any) -> Any:
        """Store an eval run."""
        return await self._run(self._op_create_eval_run(eval_run))

    async def delete_eval_runs(self, eval_run_ids: list[str], user_id: str | None = None) -> None:
        """Delete eval runs (only ``user_id``'s, if given)."""
        await self._run(self._op_delete_eval_runs(eval_run_ids, user_id))

    async def get_eval_run(self, eval_run_id: str, deserialize: bool | None = True, user_id: str | None = None) -> Any:
        """One eval run, or ``None`` (also when it is another user's)."""
        return await self._run(self._op_get_eval_run(eval_run_id, deserialize, user_id))

    async def get_eval_runs(
        self,
        limit: int | None = None,
        page: int | None = None,
        sort_by: str | None = None,
        sort_order: str | None = None,
        agent_id: str | None = None,
        team_id: str | None = None,
        workflow_id: str | None = None,
        model_id: str | None = None,
        filter_type: Any = None,
        eval_type: list[Any] | None = None,
        deserialize: bool | None = True,
        user_id: str | None = None,
    ) -> Any:
        """Eval runs matching the filters, newest first by default; ``(dicts, total)`` when not deserialising."""
        return await self._run(
            self._op_get_eval_runs(limit, page, sort_by, sort_order, agent_id, team_id, workflow_id, model_id,
                                   filter_type, eval_type, deserialize, user_id)
        )  # fmt: skip

    async def rename_eval_run(
        self, eval_run_id: str, name: str, deserialize: bool | None = True, user_id: str | None = None
    ) -> Any:
        """Rename an eval run; ``None`` if missing or another user's."""
        return await self._run(self._op_rename_eval_run(eval_run_id, name, deserialize, user_id))

    async def update_eval_run_user_id(self, eval_run_id: str, user_id: str) -> None:
        """Set the owner of an eval run."""
        await self._run(self._op_update_eval_run_user_id(eval_run_id, user_id))

    # -- traces and spans --------------------------------------------------------------------------------------

    async def upsert_trace(self, trace: Any) -> None:
        """Create a trace, or extend a known one (context fields are only filled, never overwritten)."""
        await self._run(self._op_upsert_trace(trace))

    async def get_trace(self, trace_id: str | None = None, run_id: str | None = None) -> Any:
        """A trace by id (or the latest of a run), with its span and error counts; ``None`` if missing."""
        return await self._run(self._op_get_trace(trace_id, run_id))

    async def get_traces(
        self,
        run_id: str | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        team_id: str | None = None,
        workflow_id: str | None = None,
        status: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        limit: int | None = 20,
        page: int | None = 1,
        filter_expr: dict[str, Any] | None = None,
    ) -> tuple[list[Any], int]:
        """Traces matching the filters, newest first, with the total count (``filter_expr`` is not supported)."""
        if filter_expr:
            raise NotImplementedError("filter_expr is not supported by aiomemdb's adapter")
        return await self._run(
            self._op_get_traces(run_id, session_id, user_id, agent_id, team_id, workflow_id, status, start_time,
                                end_time, limit, page)
        )  # fmt: skip

    async def get_trace_stats(
        self,
        user_id: str | None = None,
        agent_id: str | None = None,
        team_id: str | None = None,
        workflow_id: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        limit: int | None = 20,
        page: int | None = 1,
        filter_expr: dict[str, Any] | None = None,
        group_by: Literal["session", "agent", "team", "workflow", "endpoint"] = "session",
    ) -> tuple[list[dict[str, Any]], int]:
        """Trace counts per session, most recent first (only ``group_by="session"``)."""
        if filter_expr:
            raise NotImplementedError("filter_expr is not supported by aiomemdb's adapter")
        return await self._run(
            self._op_get_trace_stats(user_id, agent_id, team_id, workflow_id, start_time, end_time, limit, page,
                                     group_by)
        )  # fmt: skip

    async def create_span(self, span: Any) -> None:
        """Store a span."""
        await self._run(self._op_create_spans([span]))

    async def create_spans(self, spans: list[Any]) -> None:
        """Store several spans at once."""
        await self._run(self._op_create_spans(spans))

    async def get_span(self, span_id: str) -> Any:
        """A span by id, or ``None``."""
        return await self._run(self._op_get_span(span_id))

    async def get_spans(
        self, trace_id: str | None = None, parent_span_id: str | None = None, limit: int | None = 1000
    ) -> list[Any]:
        """Spans of a trace and/or parent, in the order they were stored."""
        return await self._run(self._op_get_spans(trace_id, parent_span_id, limit))

    # -- learnings ---------------------------------------------------------------------------------------------

    async def get_learning(
        self,
        learning_type: str,
        user_id: str | None = None,
        agent_id: str | None = None,
        team_id: str | None = None,
        session_id: str | None = None,
        namespace: str | None = None,
        entity_id: str | None = None,
        entity_type: str | None = None,
        workflow_id: str | None = None,
    ) -> dict[str, Any] | None:
        """``{"content": ...}`` of the first learning matching the filters, or ``None``."""
        return await self._run(self._op_get_learning(learning_filters(
            learning_type=learning_type, user_id=user_id, agent_id=agent_id, team_id=team_id,
            workflow_id=workflow_id, session_id=session_id, namespace=namespace, entity_id=entity_id,
            entity_type=entity_type)))  # fmt: skip

    async def upsert_learning(
        self,
        id: str,
        learning_type: str,
        content: dict[str, Any],
        user_id: str | None = None,
        agent_id: str | None = None,
        team_id: str | None = None,
        session_id: str | None = None,
        namespace: str | None = None,
        entity_id: str | None = None,
        entity_type: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Insert a learning, or replace the content and metadata of an existing one."""
        fields = {
            "learning_type": learning_type, "namespace": namespace, "user_id": user_id, "agent_id": agent_id,
            "team_id": team_id, "workflow_id": None, "session_id": session_id, "entity_id": entity_id,
            "entity_type": entity_type, "content": content, "metadata": metadata,
        }  # fmt: skip
        await self._run(self._op_upsert_learning(id, fields))

    async def delete_learning(self, id: str) -> bool:
        """Delete a learning; True if it existed."""
        return await self._run(self._op_delete_learning(id))

    async def update_learning(self, id: str, content: dict[str, Any], metadata: dict[str, Any] | None = None) -> bool:
        """Replace an existing learning's content and metadata; False (and no insert) if it does not exist."""
        return await self._run(self._op_update_learning(id, content, metadata))

    async def delete_user_learnings(self, user_id: str, learning_type: str | None = None) -> int:
        """Delete a user's learnings (of one type, if given); returns how many."""
        return await self._run(self._op_delete_user_learnings(user_id, learning_type))

    async def get_learnings(
        self,
        learning_type: str | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        team_id: str | None = None,
        session_id: str | None = None,
        namespace: str | None = None,
        entity_id: str | None = None,
        entity_type: str | None = None,
        limit: int | None = None,
        workflow_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Learning rows matching the filters, most recently updated first."""
        return await self._run(self._op_get_learnings(learning_filters(
            learning_type=learning_type, user_id=user_id, agent_id=agent_id, team_id=team_id,
            workflow_id=workflow_id, session_id=session_id, namespace=namespace, entity_id=entity_id,
            entity_type=entity_type), limit))  # fmt: skip

    async def search_learnings(
        self,
        query: str,
        learning_type: str | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        team_id: str | None = None,
        workflow_id: str | None = None,
        session_id: str | None = None,
        namespace: str | None = None,
        entity_id: str | None = None,
        entity_type: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Learnings whose content contains ``query`` (case, spaces, ``_`` and ``-`` folded), newest first."""
        return await self._run(self._op_search_learnings(query, learning_filters(
            learning_type=learning_type, user_id=user_id, agent_id=agent_id, team_id=team_id,
            workflow_id=workflow_id, session_id=session_id, namespace=namespace, entity_id=entity_id,
            entity_type=entity_type), limit))  # fmt: skip

    async def get_learning_by_id(self, id: str) -> dict[str, Any] | None:
        """One learning row by id, or ``None``."""
        return await self._run(self._op_get_learning_by_id(id))

    async def list_learnings(
        self,
        learning_type: str | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        team_id: str | None = None,
        session_id: str | None = None,
        namespace: str | None = None,
        entity_id: str | None = None,
        entity_type: str | None = None,
        include_global: bool = False,
        limit: int = 100,
        page: int = 1,
        sort_by: str | None = None,
        sort_order: str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of learning rows and the total (``include_global`` adds unowned rows to a user's)."""
        filters = learning_filters(learning_type=learning_type, user_id=user_id, agent_id=agent_id,
                                   team_id=team_id, session_id=session_id, namespace=namespace,
                                   entity_id=entity_id, entity_type=entity_type)  # fmt: skip
        return await self._run(self._op_list_learnings(filters, include_global, limit, page, sort_by, sort_order))

    async def get_learnings_user_stats(
        self,
        learning_type: str | None = None,
        limit: int | None = None,
        page: int | None = None,
        user_id: str | None = None,
        sort_by: str | None = None,
        sort_order: str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """Users owning learnings, with their last update, most recent first by default."""
        return await self._run(
            self._op_get_learnings_user_stats(learning_type, limit, page, user_id, sort_by, sort_order)
        )
