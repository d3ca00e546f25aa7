"""Learnings (agno's LearningMachine stores), kept in a core collection; semantics follow agno's SqliteDb.

agno's InMemoryDb raises NotImplementedError here. A record is the row SqliteDb keeps: ``learning_id``,
``learning_type``, ``namespace``, the owner and scope ids, ``content``, ``metadata`` and the two timestamps. Unlike
SqliteDb, errors are raised, never turned into "nothing found".
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiomemdb.agno._call import Op, call
from aiomemdb.agno._convert import now, page, sort_rows

__all__ = ["LearningOps"]

_SCOPE = ("learning_type", "user_id", "agent_id", "team_id", "workflow_id", "session_id", "namespace",
          "entity_id", "entity_type")  # fmt: skip
_SEPARATORS = re.compile(r"[\s_\-]+")


def _fold(text: str) -> str:
    """Casefold and merge runs of spaces, underscores and hyphens, so "Sarah Chen" finds "sarah_chen"."""
    return _SEPARATORS.sub(" ", text.casefold()).strip()


def _matches(row: dict[str, Any], filters: dict[str, Any]) -> bool:
    return all(want is None or row.get(key) == want for key, want in filters.items())


def _newest_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: r.get("updated_at") or 0, reverse=True)


class LearningOps:
    """Learnings; mixed into both adapter classes."""

    learnings_table_name: str

    def _op_learnings(self, filters: dict[str, Any], user_id: str | None = None) -> Op[list[dict[str, Any]]]:
        records = yield call("list_records", self.learnings_table_name, user_id=user_id)
        return [r for r in records if _matches(r, filters)]

    def _op_get_learning(self, filters: dict[str, Any]) -> Op[dict[str, Any] | None]:
        rows = yield from self._op_learnings(filters, filters.get("user_id"))
        return {"content": rows[0].get("content")} if rows else None

    def _op_upsert_learning(self, learning_id: str, fields: dict[str, Any]) -> Op[None]:
        stamp = now()

        def upsert(existing: dict[str, Any] | None) -> dict[str, Any]:
            # runs inside the store's atomic read-modify-write; like SqliteDb's ON CONFLICT, an update only
            # replaces content, metadata and updated_at, never the row's identity or scope
            if existing is not None:
                return {**existing, "content": fields["content"], "metadata": fields["metadata"], "updated_at": stamp}
            return {"learning_id": learning_id, **fields, "created_at": stamp, "updated_at": stamp}

        yield call("update_record", self.learnings_table_name, learning_id, upsert)

    def _op_delete_learning(self, learning_id: str) -> Op[bool]:
        deleted: bool = yield call("delete_record", self.learnings_table_name, learning_id)
        return deleted

    def _op_update_learning(
        self, learning_id: str, content: dict[str, Any], metadata: dict[str, Any] | None
    ) -> Op[bool]:
        def update(existing: dict[str, Any] | None) -> dict[str, Any] | None:
            if existing is None:
                return None  # an update never inserts
            return {**existing, "content": content, "metadata": metadata, "updated_at": now()}

        record = yield call("update_record", self.learnings_table_name, learning_id, update)
        return record is not None

    def _op_delete_user_learnings(self, user_id: str, learning_type: str | None) -> Op[int]:
        rows = yield from self._op_learnings({"learning_type": learning_type}, user_id)
        if not rows:
            return 0
        count: int = yield call(
            "delete_records", self.learnings_table_name, [r["learning_id"] for r in rows], user_id=user_id
        )
        return count

    def _op_get_learnings(self, filters: dict[str, Any], limit: int | None) -> Op[list[dict[str, Any]]]:
        rows = yield from self._op_learnings(filters, filters.get("user_id"))
        rows = _newest_first(rows)
        return rows[:limit] if limit is not None else rows

    def _op_search_learnings(self, query: str, filters: dict[str, Any], limit: int | None) -> Op[list[dict[str, Any]]]:
        needle = _fold(query)
        if not re.sub(r"[%_\s]+", "", query.strip()):
            return []  # nothing but wildcards and spaces: agno's adapters return nothing rather than everything
        rows = yield from self._op_learnings(filters, filters.get("user_id"))
        hits = [r for r in rows if needle in _fold(json.dumps(r.get("content"), ensure_ascii=False))]
        hits = _newest_first(hits)
        return hits[:limit] if limit is not None else hits

    def _op_get_learning_by_id(self, learning_id: str) -> Op[dict[str, Any] | None]:
        record: dict[str, Any] | None = yield call("get_record", self.learnings_table_name, learning_id)
        return record

    def _op_list_learnings(
        self,
        filters: dict[str, Any],
        include_global: bool,
        limit: int,
        page_number: int,
        sort_by: str | None,
        sort_order: str | None,
    ) -> Op[tuple[list[dict[str, Any]], int]]:
        user_id = filters.pop("user_id", None)
        rows = yield from self._op_learnings(filters)
        if user_id is not None:
            rows = [r for r in rows if r.get("user_id") == user_id or (include_global and r.get("user_id") is None)]
        total = len(rows)
        rows = sort_rows(rows, sort_by or "updated_at", sort_order or "desc")
        return page(rows, limit, page_number), total

    def _op_get_learnings_user_stats(
        self,
        learning_type: str | None,
        limit: int | None,
        page_number: int | None,
        user_id: str | None,
        sort_by: str | None,
        sort_order: str | None,
    ) -> Op[tuple[list[dict[str, Any]], int]]:
        rows = yield from self._op_learnings({"learning_type": learning_type}, user_id)
        stats: dict[str, int] = {}
        for r in rows:
            owner = r.get("user_id")
            if owner is not None:
                stats[owner] = max(stats.get(owner, 0), r.get("updated_at") or 0)
        out: list[dict[str, Any]] = [{"user_id": u, "last_learning_updated_at": t} for u, t in stats.items()]
        key = "user_id" if sort_by == "user_id" else "last_learning_updated_at"
        out.sort(key=lambda s: s[key], reverse=sort_order != "asc")
        return page(out, limit, page_number), len(out)


def learning_filters(**kwargs: Any) -> dict[str, Any]:
    """The scope filters of a learnings call, by field name (``None`` means "any")."""
    return {k: v for k, v in kwargs.items() if k in _SCOPE}
