"""Learnings (agno's LearningMachine stores), kept in a store collection; semantics follow agno's SqliteDb.

agno's InMemoryDb raises NotImplementedError here. A record is the row SqliteDb keeps: ``learning_id``,
``learning_type``, ``namespace``, the owner and scope ids, ``content``, ``metadata`` and the two timestamps. Unlike
SqliteDb, errors are raised, never turned into "nothing found".
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiomemdb.agno._convert import now, paginate, sort_rows
from aiomemdb.agno._rows import fold, learning_filters, matches, newest_first
from aiomemdb.agno._stores import AsyncStore

__all__ = ["AsyncLearnings"]


class AsyncLearnings:
    """Learnings; a part of the adapter class."""

    _store: AsyncStore
    learnings_table_name: str

    async def _learnings(self, filters: dict[str, Any], user_id: str | None = None) -> list[dict[str, Any]]:
        records = await self._store.list_records(self.learnings_table_name, user_id=user_id)
        return [r for r in records if matches(r, filters)]

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
        rows = await self._learnings(learning_filters(
            learning_type=learning_type, user_id=user_id, agent_id=agent_id, team_id=team_id,
            workflow_id=workflow_id, session_id=session_id, namespace=namespace, entity_id=entity_id,
            entity_type=entity_type), user_id)  # fmt: skip
        return {"content": rows[0].get("content")} if rows else None

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
        stamp = now()

        def upsert(existing: dict[str, Any] | None) -> dict[str, Any]:
            # runs inside the store's atomic read-modify-write; like SqliteDb's ON CONFLICT, an update only
            # replaces content, metadata and updated_at, never the row's identity or scope
            if existing is not None:
                return {**existing, "content": content, "metadata": metadata, "updated_at": stamp}
            return {
                "learning_id": id, "learning_type": learning_type, "namespace": namespace, "user_id": user_id,
                "agent_id": agent_id, "team_id": team_id, "workflow_id": None, "session_id": session_id,
                "entity_id": entity_id, "entity_type": entity_type, "content": content, "metadata": metadata,
                "created_at": stamp, "updated_at": stamp,
            }  # fmt: skip

        await self._store.update_record(self.learnings_table_name, id, upsert)

    async def delete_learning(self, id: str) -> bool:
        """Delete a learning; True if it existed."""
        return await self._store.delete_record(self.learnings_table_name, id)

    async def update_learning(self, id: str, content: dict[str, Any], metadata: dict[str, Any] | None = None) -> bool:
        """Replace an existing learning's content and metadata; False (and no insert) if it does not exist."""

        def update(existing: dict[str, Any] | None) -> dict[str, Any] | None:
            if existing is None:
                return None  # an update never inserts
            return {**existing, "content": content, "metadata": metadata, "updated_at": now()}

        record = await self._store.update_record(self.learnings_table_name, id, update)
        return record is not None

    async def delete_user_learnings(self, user_id: str, learning_type: str | None = None) -> int:
        """Delete a user's learnings (of one type, if given); returns how many."""
        rows = await self._learnings({"learning_type": learning_type}, user_id)
        if not rows:
            return 0
        ids = [r["learning_id"] for r in rows]
        return await self._store.delete_records(self.learnings_table_name, ids, user_id=user_id)

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
        rows = newest_first(await self._learnings(learning_filters(
            learning_type=learning_type, user_id=user_id, agent_id=agent_id, team_id=team_id,
            workflow_id=workflow_id, session_id=session_id, namespace=namespace, entity_id=entity_id,
            entity_type=entity_type), user_id))  # fmt: skip
        return rows[:limit] if limit is not None else rows

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
        needle = fold(query)
        if not re.sub(r"[%_\s]+", "", query.strip()):
            return []  # nothing but wildcards and spaces: agno's adapters return nothing rather than everything
        rows = await self._learnings(learning_filters(
            learning_type=learning_type, user_id=user_id, agent_id=agent_id, team_id=team_id,
            workflow_id=workflow_id, session_id=session_id, namespace=namespace, entity_id=entity_id,
            entity_type=entity_type), user_id)  # fmt: skip
        hits = newest_first([r for r in rows if needle in fold(json.dumps(r.get("content"), ensure_ascii=False))])
        return hits[:limit] if limit is not None else hits

    async def get_learning_by_id(self, id: str) -> dict[str, Any] | None:
        """One learning row by id, or ``None``."""
        return await self._store.get_record(self.learnings_table_name, id)

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
        rows = await self._learnings(learning_filters(
            learning_type=learning_type, agent_id=agent_id, team_id=team_id, session_id=session_id,
            namespace=namespace, entity_id=entity_id, entity_type=entity_type))  # fmt: skip
        if user_id is not None:
            rows = [r for r in rows if r.get("user_id") == user_id or (include_global and r.get("user_id") is None)]
        total = len(rows)
        rows = sort_rows(rows, sort_by or "updated_at", sort_order or "desc")
        return paginate(rows, limit, page), total

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
        rows = await self._learnings({"learning_type": learning_type}, user_id)
        stats: dict[str, int] = {}
        for r in rows:
            owner = r.get("user_id")
            if owner is not None:
                stats[owner] = max(stats.get(owner, 0), r.get("updated_at") or 0)
        out: list[dict[str, Any]] = [{"user_id": u, "last_learning_updated_at": t} for u, t in stats.items()]
        key = "user_id" if sort_by == "user_id" else "last_learning_updated_at"
        out.sort(key=lambda s: s[key], reverse=sort_order != "asc")
        return paginate(out, limit, page), len(out)
