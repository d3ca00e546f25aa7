"""Memories, metrics, knowledge, evals and schema versions, each kept in a core collection named after agno's table.

Records are stored as agno's ``InMemoryDb`` stores them (``UserMemory.to_dict()``, ``KnowledgeRow.model_dump()``,
``EvalRunRecord.model_dump()``, agno's metric rows), one record per id, so they persist and reload like sessions.
Filtering, sorting and paging reuse agno's own helpers, over the collection's records in first-written order
(agno keeps them in a list in that order).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import uuid4

from agno.db.in_memory.utils import (
    calculate_date_metrics,
    fetch_all_sessions_data,
    get_dates_to_calculate_metrics_for,
)
from agno.db.schemas.evals import EvalFilterType, EvalRunRecord
from agno.db.schemas.knowledge import KnowledgeRow
from agno.db.schemas.memory import UserMemory
from agno.db.utils import detect_session_type, drop_legacy_metrics, metrics_starting_date_from_records

from aiomemdb._exceptions import OwnershipError
from aiomemdb.agno._call import Op, call
from aiomemdb.agno._convert import now, page, sort_rows

__all__ = ["RecordOps"]

DEFAULT_SCHEMA_VERSION = "2.0.0"


class RecordOps:
    """Memories, metrics, knowledge, evals and schema versions; mixed into both adapter classes."""

    memory_table_name: str
    metrics_table_name: str
    eval_table_name: str
    knowledge_table_name: str
    versions_table_name: str

    # -- schema versions ---------------------------------------------------------------------------------------

    def _op_get_latest_schema_version(self, table_name: str) -> Op[str]:
        record = yield call("get_record", self.versions_table_name, table_name or "_")
        # Unstamped tables read as 2.0.0 so agno's MigrationManager runs its migrations (as agno's InMemoryDb).
        return str(record["version"]) if record is not None else DEFAULT_SCHEMA_VERSION

    def _op_upsert_schema_version(self, table_name: str, version: str) -> Op[None]:
        record = {"table_name": table_name, "version": version, "updated_at": now()}
        yield call("put_record", self.versions_table_name, table_name or "_", record)

    # -- memories ----------------------------------------------------------------------------------------------

    @staticmethod
    def _memory_record(memory: Any, preserve_updated_at: bool) -> dict[str, Any]:
        if memory.memory_id is None:
            memory.memory_id = str(uuid4())  # agno assigns the id on the caller's object
        record: dict[str, Any] = memory.to_dict() if hasattr(memory, "to_dict") else dict(vars(memory))
        if not (preserve_updated_at and isinstance(memory.updated_at, int)):
            record["updated_at"] = now()
        else:
            record["updated_at"] = memory.updated_at
        return record

    def _op_upsert_user_memory(self, memory: Any, deserialize: bool | None) -> Op[Any]:
        record = self._memory_record(memory, preserve_updated_at=False)
        stored = yield call("put_record", self.memory_table_name, record["memory_id"], record)
        return UserMemory.from_dict(stored) if deserialize else stored

    def _op_upsert_memories(self, memories: list[Any], deserialize: bool | None, preserve_updated_at: bool) -> Op[Any]:
        records = [self._memory_record(m, preserve_updated_at) for m in memories if m is not None]
        if not records:
            return []
        yield call("put_records", self.memory_table_name, {r["memory_id"]: r for r in records})
        return [UserMemory.from_dict(r) if deserialize else r for r in records]

    def _op_get_user_memory(self, memory_id: str, deserialize: bool | None, user_id: str | None) -> Op[Any]:
        record = yield call("get_record", self.memory_table_name, memory_id, user_id=user_id)
        if record is None or not deserialize:
            return record
        return UserMemory.from_dict(record)

    def _op_get_user_memories(
        self,
        user_id: str | None,
        agent_id: str | None,
        team_id: str | None,
        topics: list[str] | None,
        search_content: str | None,
        limit: int | None,
        page_number: int | None,
        sort_by: str | None,
        sort_order: str | None,
        deserialize: bool | None,
    ) -> Op[Any]:
        records = yield call("list_records", self.memory_table_name, user_id=user_id)
        needle = search_content.lower() if search_content is not None else None
        rows = [
            m
            for m in records
            if (agent_id is None or m.get("agent_id") == agent_id)
            and (team_id is None or m.get("team_id") == team_id)
            and (topics is None or any(t in (m.get("topics") or []) for t in topics))
            and (needle is None or needle in str(m.get("memory", "")).lower())
        ]
        total = len(rows)
        rows = page(sort_rows(rows, sort_by, sort_order), limit, page_number)
        if not deserialize:
            return rows, total
        return [UserMemory.from_dict(m) for m in rows]

    def _op_get_all_memory_topics(self, user_id: str | None) -> Op[list[str]]:
        records = yield call("list_records", self.memory_table_name, user_id=user_id)
        topics: dict[str, None] = {}
        for m in records:
            if isinstance(m.get("topics"), list):
                topics.update(dict.fromkeys(m["topics"]))
        return list(topics)

    def _op_get_user_memory_stats(
        self, limit: int | None, page_number: int | None, user_id: str | None
    ) -> Op[tuple[list[dict[str, Any]], int]]:
        records = yield call("list_records", self.memory_table_name, user_id=user_id)
        stats: dict[str, dict[str, Any]] = {}
        for m in records:
            owner = m.get("user_id")
            if not owner:
                continue
            entry = stats.setdefault(owner, {"user_id": owner, "total_memories": 0, "last_memory_updated_at": 0})
            entry["total_memories"] += 1
            updated = m.get("updated_at") or 0
            if updated > entry["last_memory_updated_at"]:
                entry["last_memory_updated_at"] = updated
        rows = sorted(stats.values(), key=lambda s: s["last_memory_updated_at"], reverse=True)
        return page(rows, limit, page_number), len(rows)

    def _op_delete_user_memory(self, memory_id: str, user_id: str | None) -> Op[None]:
        yield call("delete_record", self.memory_table_name, memory_id, user_id=user_id)

    def _op_delete_user_memories(self, memory_ids: list[str], user_id: str | None) -> Op[None]:
        yield call("delete_records", self.memory_table_name, list(memory_ids), user_id=user_id)

    def _op_clear_memories(self) -> Op[None]:
        yield call("clear_collection", self.memory_table_name)

    # -- metrics -----------------------------------------------------------------------------------------------

    def _op_calculate_metrics(self) -> Op[list[dict[str, Any]] | None]:
        existing = yield call("list_records", self.metrics_table_name)
        starting = metrics_starting_date_from_records(existing)
        if starting is None:
            first, _ = yield call("get_sessions", sort_by="created_at", sort_order="asc", limit=1, include_runs=False)
            if not first:
                return None
            starting = datetime.fromtimestamp(first[0]["created_at"], tz=UTC).date()
        dates = get_dates_to_calculate_metrics_for(starting)
        if not dates:
            return None
        start = int(datetime.combine(dates[0], datetime.min.time()).replace(tzinfo=UTC).timestamp())
        end = int(datetime.combine(dates[-1] + timedelta(days=1), datetime.min.time()).replace(tzinfo=UTC).timestamp())
        # the core's end bound is inclusive; agno's window ends before midnight of the day after the last date
        sessions, _ = yield call("get_sessions", start_timestamp=start, end_timestamp=end - 1, sort_by="created_at")
        slim = [
            {
                "user_id": s.get("user_id"),
                "session_data": s.get("session_data"),
                "runs": s.get("runs"),
                "created_at": s.get("created_at"),
                "session_type": detect_session_type(s),
            }
            for s in sessions
        ]
        by_date = fetch_all_sessions_data(sessions=slim, dates_to_process=dates, start_timestamp=start)
        if not by_date:
            return None
        results: list[dict[str, Any]] = []
        for day in dates:
            for_date = by_date.get(day.isoformat(), {})
            if not any(for_date.values()):
                continue
            results.extend(calculate_date_metrics(day, for_date))
        if results:
            # one record per (user, day, period): the id agno derives from them makes a recalculation replace it
            yield call("put_records", self.metrics_table_name, {r["id"]: r for r in results})
        return results

    def _op_get_metrics(
        self, starting_date: date | None, ending_date: date | None, user_id: str | None
    ) -> Op[tuple[list[dict[str, Any]], int | None]]:
        records = yield call("list_records", self.metrics_table_name)
        metrics = drop_legacy_metrics(records) if user_id is None else records
        rows: list[dict[str, Any]] = []
        latest: int | None = None
        for metric in metrics:
            day = datetime.strptime(metric.get("date", ""), "%Y-%m-%d").date()
            if starting_date and day < starting_date:
                continue
            if ending_date and day > ending_date:
                continue
            if user_id is not None and metric.get("user_id") != user_id:
                continue
            if metric.get("user_id") == "":
                metric["user_id"] = None  # the unowned bucket is stored as "" and reported as None
            rows.append(metric)
            updated = metric.get("updated_at")
            if updated and (latest is None or updated > latest):
                latest = updated
        return rows, latest

    # -- knowledge ---------------------------------------------------------------------------------------------

    @staticmethod
    def _visible(item: dict[str, Any], user_id: str | None) -> bool:
        return user_id is None or item.get("user_id") is None or item.get("user_id") == user_id

    def _op_upsert_knowledge_content(self, knowledge_row: Any) -> Op[Any]:
        record: dict[str, Any] = knowledge_row.model_dump(mode="json")
        scoped = knowledge_row.user_id

        def guarded(existing: dict[str, Any] | None) -> dict[str, Any]:
            # runs inside the store's atomic read-modify-write
            if existing is not None and scoped is not None and existing.get("user_id") != scoped:
                raise ValueError(f"Knowledge content {knowledge_row.id} not found")
            return record

        yield call("update_record", self.knowledge_table_name, knowledge_row.id, guarded)
        return knowledge_row

    def _op_get_knowledge_content(self, kid: str, user_id: str | None) -> Op[Any]:
        record = yield call("get_record", self.knowledge_table_name, kid)
        if record is None or not self._visible(record, user_id):
            return None
        return KnowledgeRow.model_validate(record)

    def _op_get_knowledge_contents(
        self,
        limit: int | None,
        page_number: int | None,
        sort_by: str | None,
        sort_order: str | None,
        linked_to: str | None,
        user_id: str | None,
    ) -> Op[tuple[list[Any], int]]:
        records = yield call("list_records", self.knowledge_table_name)
        rows = [
            r for r in records if (linked_to is None or r.get("linked_to") == linked_to) and self._visible(r, user_id)
        ]
        total = len(rows)
        rows = page(sort_rows(rows, sort_by, sort_order), limit, page_number)
        return [KnowledgeRow.model_validate(r) for r in rows], total

    def _op_delete_knowledge_content(self, kid: str, user_id: str | None) -> Op[None]:
        # scoped: only the user's own row; shared rows (user_id None) only through an unscoped delete
        yield call("delete_record", self.knowledge_table_name, kid, user_id=user_id)

    # -- evals -------------------------------------------------------------------------------------------------

    def _op_create_eval_run(self, eval_run: Any) -> Op[Any]:
        record = eval_run.model_dump(mode="json")
        record["created_at"] = record["updated_at"] = now()
        yield call("put_record", self.eval_table_name, eval_run.run_id, record)
        return eval_run

    def _op_delete_eval_runs(self, eval_run_ids: list[str], user_id: str | None) -> Op[None]:
        yield call("delete_records", self.eval_table_name, list(eval_run_ids), user_id=user_id)

    def _op_get_eval_run(self, eval_run_id: str, deserialize: bool | None, user_id: str | None) -> Op[Any]:
        record = yield call("get_record", self.eval_table_name, eval_run_id, user_id=user_id)
        if record is None or not deserialize:
            return record
        return EvalRunRecord.model_validate(record)

    def _op_get_eval_runs(
        self,
        limit: int | None,
        page_number: int | None,
        sort_by: str | None,
        sort_order: str | None,
        agent_id: str | None,
        team_id: str | None,
        workflow_id: str | None,
        model_id: str | None,
        filter_type: Any,
        eval_type: list[Any] | None,
        deserialize: bool | None,
        user_id: str | None,
    ) -> Op[Any]:
        records = yield call("list_records", self.eval_table_name, user_id=user_id)
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
        rows = page(rows, limit, page_number)
        if not deserialize:
            return rows, total
        return [EvalRunRecord.model_validate(r) for r in rows]

    def _op_rename_eval_run(
        self, eval_run_id: str, name: str, deserialize: bool | None, user_id: str | None
    ) -> Op[Any]:
        def rename(existing: dict[str, Any] | None) -> dict[str, Any] | None:
            if existing is None or (user_id is not None and existing.get("user_id") != user_id):
                return None
            return {**existing, "name": name, "updated_at": now()}

        record = yield call("update_record", self.eval_table_name, eval_run_id, rename)
        if record is None or not deserialize:
            return record
        return EvalRunRecord.model_validate(record)

    def _op_update_eval_run_user_id(self, eval_run_id: str, user_id: str) -> Op[None]:
        def set_owner(existing: dict[str, Any] | None) -> dict[str, Any] | None:
            return None if existing is None else {**existing, "user_id": user_id}

        try:
            yield call("update_record", self.eval_table_name, eval_run_id, set_owner)
        except OwnershipError:
            # A transfer between two owners: the core's owner guard refuses an in-place change, and this is
            # agno's explicit "set the owner" call, so it is a delete followed by a write.
            record = yield call("get_record", self.eval_table_name, eval_run_id)
            if record is not None:
                yield call("delete_record", self.eval_table_name, eval_run_id)
                yield call("put_record", self.eval_table_name, eval_run_id, {**record, "user_id": user_id})
