"""User memories and daily metrics, each kept in a store collection named after agno's table.

Memories are stored as agno's ``InMemoryDb`` stores them (``UserMemory.to_dict()``), one record per id, metrics as
agno's metric rows, one per user, day and period; they persist and reload like sessions. Filtering, sorting and
paging follow agno's own helpers, over the collection's records in first-written order (agno keeps them in a
list in that order).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from agno.db.in_memory.utils import (
    calculate_date_metrics,
    fetch_all_sessions_data,
    get_dates_to_calculate_metrics_for,
)
from agno.db.schemas.memory import UserMemory
from agno.db.utils import detect_session_type, drop_legacy_metrics, metrics_starting_date_from_records

from aiomemdb.agno._convert import paginate, sort_rows
from aiomemdb.agno._rows import memory_record
from aiomemdb.agno._stores import AsyncStore

__all__ = ["AsyncMemories"]


class AsyncMemories:
    """Memories and metrics; a part of the adapter class."""

    _store: AsyncStore
    memory_table_name: str
    metrics_table_name: str

    # -- memories ----------------------------------------------------------------------------------------------

    async def upsert_user_memory(self, memory: UserMemory, deserialize: bool | None = True) -> Any:
        """Create or replace a memory (an id is assigned if missing)."""
        record = memory_record(memory, preserve_updated_at=False)
        stored = await self._store.put_record(self.memory_table_name, record["memory_id"], record)
        return UserMemory.from_dict(stored) if deserialize else stored

    async def upsert_memories(
        self, memories: list[UserMemory], deserialize: bool | None = True, preserve_updated_at: bool = False
    ) -> list[Any]:
        """Create or replace many memories at once."""
        records = [memory_record(m, preserve_updated_at) for m in memories if m is not None]
        if not records:
            return []
        await self._store.put_records(self.memory_table_name, {r["memory_id"]: r for r in records})
        return [UserMemory.from_dict(r) if deserialize else r for r in records]

    async def get_user_memory(self, memory_id: str, deserialize: bool | None = True, user_id: str | None = None) -> Any:
        """One memory as UserMemory (or dict); ``None`` if missing or another user's."""
        record = await self._store.get_record(self.memory_table_name, memory_id, user_id=user_id)
        if record is None or not deserialize:
            return record
        return UserMemory.from_dict(record)

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
        records = await self._store.list_records(self.memory_table_name, user_id=user_id)
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
        rows = paginate(sort_rows(rows, sort_by, sort_order), limit, page)
        if not deserialize:
            return rows, total
        return [UserMemory.from_dict(m) for m in rows]

    async def get_all_memory_topics(self, user_id: str | None = None) -> list[str]:
        """Every topic used by the memories (of ``user_id``, if given)."""
        records = await self._store.list_records(self.memory_table_name, user_id=user_id)
        topics: dict[str, None] = {}
        for m in records:
            if isinstance(m.get("topics"), list):
                topics.update(dict.fromkeys(m["topics"]))
        return list(topics)

    async def get_user_memory_stats(
        self, limit: int | None = None, page: int | None = None, user_id: str | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """Per-user memory counts and last update, most recent first."""
        records = await self._store.list_records(self.memory_table_name, user_id=user_id)
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
        return paginate(rows, limit, page), len(rows)

    async def delete_user_memory(self, memory_id: str, user_id: str | None = None) -> None:
        """Delete one memory (only ``user_id``'s, if given)."""
        await self._store.delete_record(self.memory_table_name, memory_id, user_id=user_id)

    async def delete_user_memories(self, memory_ids: list[str], user_id: str | None = None) -> None:
        """Delete several memories (only ``user_id``'s, if given)."""
        await self._store.delete_records(self.memory_table_name, list(memory_ids), user_id=user_id)

    async def clear_memories(self) -> None:
        """Delete every user memory."""
        await self._store.clear_collection(self.memory_table_name)

    # -- metrics -----------------------------------------------------------------------------------------------

    async def calculate_metrics(self) -> list[dict[str, Any]] | None:
        """Compute the daily metrics still owed, per user, from the stored sessions."""
        existing = await self._store.list_records(self.metrics_table_name)
        starting = metrics_starting_date_from_records(existing)
        if starting is None:
            first, _ = await self._store.get_sessions(sort_by="created_at", sort_order="asc", limit=1,
                                                      include_runs=False)  # fmt: skip
            if not first:
                return None
            starting = datetime.fromtimestamp(first[0]["created_at"], tz=UTC).date()
        dates = get_dates_to_calculate_metrics_for(starting)
        if not dates:
            return None
        start = int(datetime.combine(dates[0], datetime.min.time()).replace(tzinfo=UTC).timestamp())
        end = int(datetime.combine(dates[-1] + timedelta(days=1), datetime.min.time()).replace(tzinfo=UTC).timestamp())
        # the core's end bound is inclusive; agno's window ends before midnight of the day after the last date
        sessions, _ = await self._store.get_sessions(start_timestamp=start, end_timestamp=end - 1, sort_by="created_at")
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
            await self._store.put_records(self.metrics_table_name, {r["id"]: r for r in results})
        return results

    async def get_metrics(
        self, starting_date: date | None = None, ending_date: date | None = None, user_id: str | None = None
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Daily metric rows in the date range (``user_id=""``: the unowned bucket) and the latest update time."""
        records = await self._store.list_records(self.metrics_table_name)
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
