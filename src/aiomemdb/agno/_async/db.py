"""``aiomemdb.agno.AsyncInMemoryDb``: agno's ``AsyncBaseDb`` over :class:`aiomemdb.AsyncInMemoryDb`.

The class is put together from one part per agno area (sessions, runs, memories, records, traces, learnings).
``aiomemdb.agno._async`` is the adapter's one source; ``aiomemdb.agno._sync`` is generated from it.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, Unpack

from agno.db.base import AsyncBaseDb

from aiomemdb import FlushReport, Stats
from aiomemdb._codec import check_collection
from aiomemdb.agno._stores import AsyncStore

from .learnings import AsyncLearnings
from .memories import AsyncMemories
from .records import AsyncRecords
from .runs import AsyncRuns
from .sessions import AsyncSessions
from .traces import AsyncTraces

if TYPE_CHECKING:
    from aiomemdb._config import StoreOptions

__all__ = ["AsyncInMemoryDb"]


class AsyncInMemoryDb(AsyncSessions, AsyncRuns, AsyncMemories, AsyncRecords, AsyncTraces, AsyncLearnings, AsyncBaseDb):
    """agno's database interface (``AsyncBaseDb``) over :class:`aiomemdb.AsyncInMemoryDb`, optionally persisted.

    A drop-in for ``agno.db.in_memory.InMemoryDb`` with its semantics, plus what agno 1.x's ``InMemoryStorage``
    offered (``storage_dict=``, ``get_all_sessions``, ``get_recent_sessions``, ``drop``), persistence, and safety
    under concurrent callers: no update is lost, and every object a read returns is the caller's own (no two
    callers share a session, run, message or metrics object).

    Args:
        store: use this existing store instead of creating one (it is not closed by :meth:`close`).
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
        **options: the options of :class:`aiomemdb.AsyncInMemoryDb`, which this creates: ``storage_dict`` (the
            caller's dict becomes the live session storage), ``persistence`` (e.g.
            ``DirectoryPersistence(path)``; memories, metrics, knowledge, evals, traces and learnings are
            persisted with the sessions), ``durability``, ``flush_interval``, ``journal_path``, ``lazy``,
            ``max_sessions``, ``on_event`` …
    """

    def __init__(
        self,
        *,
        store: AsyncStore | None = None,
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
        for name in (self.memory_table_name, self.metrics_table_name, self.eval_table_name,
                     self.knowledge_table_name, self.trace_table_name, self.span_table_name,
                     self.versions_table_name, self.learnings_table_name):  # fmt: skip
            check_collection(name)  # each table is a collection: refuse a bad name now, not at first use
        self._owns_store = store is None
        self._store = AsyncStore(**options) if store is None else store

    # -- lifecycle and the store -------------------------------------------------------------------------------

    @property
    def store(self) -> AsyncStore:
        """The :class:`aiomemdb.AsyncInMemoryDb` holding the data."""
        return self._store

    async def close(self) -> None:
        """Flush and close the store (unless it was passed in as ``store=``); idempotent."""
        if self._owns_store:
            await self._store.aclose()

    # unasync: begin async-only
    async def aclose(self) -> None:
        """Same as :meth:`close` (agno's name is ``close``; aiomemdb's async name is ``aclose``)."""
        await self.close()

    # unasync: end async-only
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
