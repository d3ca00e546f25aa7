"""Pure helpers over stored rows, shared by the async source and its generated sync twin (no store calls here).

Learnings follow agno's SqliteDb (scope filters, folded text search); traces follow agno's JsonDb (ISO string
timestamps, a trace named after its highest-ranking root span); knowledge rows are visible to their owner and,
when unowned, to everyone.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeGuard
from uuid import uuid4

from aiomemdb.agno._convert import now

if TYPE_CHECKING:
    from agno.db.schemas.memory import UserMemory
    from agno.tracing.schemas import Trace

__all__ = [
    "CoreSort",
    "core_sort",
    "fold",
    "learning_filters",
    "matches",
    "memory_record",
    "merge_trace",
    "newest_first",
    "no_filter_expr",
    "parse_time",
    "to_trace",
    "trace_row",
    "visible",
]

#: The session fields the core sorts by itself (in O(result)); any other field is sorted here.
CoreSort = Literal["updated_at", "created_at", "session_id"]
_CORE_SORTS = ("updated_at", "created_at", "session_id")

_SCOPE = ("learning_type", "user_id", "agent_id", "team_id", "workflow_id", "session_id", "namespace",
          "entity_id", "entity_type")  # fmt: skip
_SEPARATORS = re.compile(r"[\s_\-]+")


def core_sort(sort_by: str | None) -> TypeGuard[CoreSort]:
    """Whether the core can sort sessions by ``sort_by``."""
    return sort_by in _CORE_SORTS


# -- learnings -------------------------------------------------------------------------------------------------


def learning_filters(**kwargs: Any) -> dict[str, Any]:
    """The scope filters of a learnings call, by field name (``None`` means "any")."""
    return {k: v for k, v in kwargs.items() if k in _SCOPE}


def fold(text: str) -> str:
    """Casefold and merge runs of spaces, underscores and hyphens, so "Sarah Chen" finds "sarah_chen"."""
    return _SEPARATORS.sub(" ", text.casefold()).strip()


def matches(row: dict[str, Any], filters: dict[str, Any]) -> bool:
    """Whether ``row`` has every field of ``filters`` that is not ``None``."""
    return all(want is None or row.get(key) == want for key, want in filters.items())


def newest_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` by ``updated_at``, most recent first."""
    return sorted(rows, key=lambda r: r.get("updated_at") or 0, reverse=True)


# -- memories --------------------------------------------------------------------------------------------------


def memory_record(memory: UserMemory, preserve_updated_at: bool) -> dict[str, Any]:
    """The stored form of an agno ``UserMemory``, stamped now unless asked to keep its ``updated_at``."""
    if memory.memory_id is None:
        memory.memory_id = str(uuid4())  # agno assigns the id on the caller's object
    record: dict[str, Any] = memory.to_dict() if hasattr(memory, "to_dict") else dict(vars(memory))
    if not (preserve_updated_at and isinstance(memory.updated_at, int)):
        record["updated_at"] = now()
    else:
        record["updated_at"] = memory.updated_at
    return record


# -- knowledge -------------------------------------------------------------------------------------------------


def visible(item: dict[str, Any], user_id: str | None) -> bool:
    """Whether a knowledge row is visible to ``user_id``: theirs, unowned, or any row for an unscoped call."""
    return user_id is None or item.get("user_id") is None or item.get("user_id") == user_id


# -- traces ----------------------------------------------------------------------------------------------------


def parse_time(value: str) -> datetime:
    """An ISO timestamp as agno writes it (``Z`` or an offset)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _level(workflow_id: Any, team_id: Any, agent_id: Any, name: str) -> int:
    """How high a trace's name ranks: workflow > team > agent root spans > anything else."""
    if ".run" not in name and ".arun" not in name:
        return 0
    if workflow_id:
        return 3
    if team_id:
        return 2
    return 1 if agent_id else 0


def trace_row(trace: Trace) -> dict[str, Any]:
    """The stored form of an ``agno.tracing.schemas.Trace``: without the counts every read derives from the spans."""
    row: dict[str, Any] = trace.to_dict()
    row.pop("total_spans", None)
    row.pop("error_count", None)
    return row


def merge_trace(trace: Trace, new: dict[str, Any], existing: dict[str, Any] | None) -> dict[str, Any]:
    """The stored trace after ``trace`` (whose :func:`trace_row` is ``new``) is upserted over ``existing``."""
    if existing is None:
        return new
    merged = dict(existing)
    start = existing.get("start_time")
    began = parse_time(start) if isinstance(start, str) else trace.start_time
    merged["end_time"] = trace.end_time.isoformat()
    merged["duration_ms"] = int((trace.end_time - began).total_seconds() * 1000)
    merged["status"] = trace.status
    old_level = _level(existing.get("workflow_id"), existing.get("team_id"), existing.get("agent_id"),
                       existing.get("name", ""))  # fmt: skip
    if _level(trace.workflow_id, trace.team_id, trace.agent_id, trace.name) > old_level:
        merged["name"] = trace.name
    # A later child span must not overwrite context the trace already has; it only fills blanks.
    for field in ("run_id", "session_id", "user_id", "agent_id", "team_id", "workflow_id"):
        if merged.get(field) is None and new.get(field) is not None:
            merged[field] = new[field]
    return merged


def to_trace(record: dict[str, Any], spans: list[dict[str, Any]]) -> Trace:
    """A stored trace as agno's ``Trace``, with the span and error counts of ``spans``."""
    from agno.tracing.schemas import Trace  # needs opentelemetry: imported only when a trace is read

    record["total_spans"] = len(spans)
    record["error_count"] = sum(1 for s in spans if s.get("status_code") == "ERROR")
    return Trace.from_dict(record)


def no_filter_expr(filter_expr: dict[str, Any] | None) -> None:
    """Refuse agno's ``filter_expr`` (a query language the adapter does not implement)."""
    if filter_expr:
        raise NotImplementedError("filter_expr is not supported by aiomemdb's adapter")
