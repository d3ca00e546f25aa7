"""Schema versions, knowledge and evals, each kept in a store collection named after agno's table.

Records are stored as agno's ``InMemoryDb`` stores them (``KnowledgeRow.model_dump()``,
``EvalRunRecord.model_dump()``), one record per id. A scoped knowledge call sees the user's own rows and the shared
(unowned) ones; a scoped write never replaces another user's row or a shared one.
"""

from __future__ import annotations

from typing import Any

from agno.db.schemas.evals import EvalFilterType, EvalRunRecord
from agno.db.schemas.knowledge import KnowledgeRow

from aiomemdb import OwnershipError, ValidationError
from aiomemdb.agno._convert import now, paginate, sort_rows
from aiomemdb.agno._rows import visible
from aiomemdb.agno._stores import AsyncStore

__all__ = ["AsyncRecords"]

DEFAULT_SCHEMA_VERSION = "2.0.0"


class AsyncRecords:
    """Schema versions, knowledge and evals; a part of the adapter class."""

    _store: AsyncStore
    eval_table_name: str
    knowledge_table_name: str
    versions_table_name: str

    # -- schema versions ---------------------------------------------------------------------------------------

    async def get_latest_schema_version(self, table_name: str = "") -> str:
        """The version stamped for ``table_name``; ``"2.0.0"`` when none is (so agno runs its migrations)."""
        record = await self._store.get_record(self.versions_table_name, table_name or "_")
        return str(record["version"]) if record is not None else DEFAULT_SCHEMA_VERSION

    async def upsert_schema_version(self, table_name: str = "", version: str = "") -> None:
        """Stamp ``table_name`` with ``version``."""
        record = {"table_name": table_name, "version": version, "updated_at": now()}
        await self._store.put_record(self.versions_table_name, table_name or "_", record)

    # -- knowledge ---------------------------------------------------------------------------------------------

    async def upsert_knowledge_content(self, knowledge_row: KnowledgeRow) -> KnowledgeRow:
        """Create or replace a knowledge row; a scoped write cannot replace another user's or a shared row."""
        if knowledge_row.id is None:  # KnowledgeRow assigns one when it is built; only a later assignment clears it
            raise ValidationError("knowledge row id must be a str, got None")
        record = knowledge_row.model_dump(mode="json")
        scoped = knowledge_row.user_id

        def guarded(existing: dict[str, Any] | None) -> dict[str, Any]:
            # runs inside the store's atomic read-modify-write
            if existing is not None and scoped is not None and existing.get("user_id") != scoped:
                raise ValueError(f"Knowledge content {knowledge_row.id} not found")
            return record

        await self._store.update_record(self.knowledge_table_name, knowledge_row.id, guarded)
        return knowledge_row

    async def get_knowledge_content(self, id: str, user_id: str | None = None) -> Any:
        """A knowledge row visible to ``user_id`` (theirs or shared), or ``None``."""
        record = await self._store.get_record(self.knowledge_table_name, id)
        if record is None or not visible(record, user_id):
            return None
        return KnowledgeRow.model_validate(record)

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
        records = await self._store.list_records(self.knowledge_table_name)
        rows = [r for r in records if (linked_to is None or r.get("linked_to") == linked_to) and visible(r, user_id)]
        total = len(rows)
        rows = paginate(sort_rows(rows, sort_by, sort_order), limit, page)
        return [KnowledgeRow.model_validate(r) for r in rows], total

    async def delete_knowledge_content(self, id: str, user_id: str | None = None) -> None:
        """Delete a knowledge row; a scoped call deletes only the user's own rows."""
        # shared rows (user_id None) go only through an unscoped delete
        await self._store.delete_record(self.knowledge_table_name, id, user_id=user_id)

    # -- evals -------------------------------------------------------------------------------------------------

    async def create_eval_run(self, eval_run: EvalRunRecord) -> EvalRunRecord:
        """Store an eval run."""
        record = eval_run.model_dump(mode="json")
        record["created_at"] = record["updated_at"] = now()
        await self._store.put_record(self.eval_table_name, eval_run.run_id, record)
        return eval_run

    async def delete_eval_runs(self, eval_run_ids: list[str], user_id: str | None = None) -> None:
        """Delete eval runs (only ``user_id``'s, if given)."""
        await self._store.delete_records(self.eval_table_name, list(eval_run_ids), user_id=user_id)

    async def get_eval_run(self, eval_run_id: str, deserialize: bool | None = True, user_id: str | None = None) -> Any:
        """One eval run, or ``None`` (also when it is another user's)."""
        record = await self._store.get_record(self.eval_table_name, eval_run_id, user_id=user_id)
        if record is None or not deserialize:
            return record
        return EvalRunRecord.model_validate(record)

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
        records = await self._store.list_records(self.eval_table_name, user_id=user_id)
        types = [getattr(t, "value", t) for t in eval_type] if eval_type else None
        required = {
            EvalFilterType.AGENT: "agent_id",
            EvalFilterType.TEAM: "team_id",
            EvalFilterType.WORKFLOW: "workflow_id",
        }.get(filter_type) if filter_type is not None else None  # fmt: skip
        rows = [
            r
            for r in records
            if (agent_id is None or r.get("agent_id") == agent_id)
            and (team_id is None or r.get("team_id") == team_id)
            and (workflow_id is None or r.get("workflow_id") == workflow_id)
            and (model_id is None or r.get("model_id") == model_id)
            and (types is None or r.get("eval_type") in types)
            and (required is None or r.get(required) is not None)
        ]
        total = len(rows)
        if sort_by is None:
            rows.sort(key=lambda r: r.get("created_at", 0), reverse=True)
        else:
            rows = sort_rows(rows, sort_by, sort_order)
        rows = paginate(rows, limit, page)
        if not deserialize:
            return rows, total
        return [EvalRunRecord.model_validate(r) for r in rows]

    async def rename_eval_run(
        self, eval_run_id: str, name: str, deserialize: bool | None = True, user_id: str | None = None
    ) -> Any:
        """Rename an eval run; ``None`` if missing or another user's."""

        def rename(existing: dict[str, Any] | None) -> dict[str, Any] | None:
            if existing is None or (user_id is not None and existing.get("user_id") != user_id):
                return None
            return {**existing, "name": name, "updated_at": now()}

        record = await self._store.update_record(self.eval_table_name, eval_run_id, rename)
        if record is None or not deserialize:
            return record
        return EvalRunRecord.model_validate(record)

    async def update_eval_run_user_id(self, eval_run_id: str, user_id: str) -> None:
        """Set the owner of an eval run."""

        def set_owner(existing: dict[str, Any] | None) -> dict[str, Any] | None:
            return None if existing is None else {**existing, "user_id": user_id}

        try:
            await self._store.update_record(self.eval_table_name, eval_run_id, set_owner)
        except OwnershipError:
            # A transfer between two owners: the core's owner guard refuses an in-place change, and this is
            # agno's explicit "set the owner" call, so it is a delete followed by a write.
            record = await self._store.get_record(self.eval_table_name, eval_run_id)
            if record is not None:
                await self._store.delete_record(self.eval_table_name, eval_run_id)
                await self._store.put_record(self.eval_table_name, eval_run_id, {**record, "user_id": user_id})
