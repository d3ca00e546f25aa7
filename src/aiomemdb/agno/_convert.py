"""Conversions between agno's objects and the JSON dicts the core stores, plus the small sorting helpers.

Sessions are stored as agno's own ``to_dict()`` output (plus ``session_type``), runs as ``run.to_dict()``, other
records as agno writes them in its ``InMemoryDb``: the stored data is plain JSON and loads in any agno adapter.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any, TypeVar

import orjson
from agno.db.base import SessionType
from agno.db.in_memory.utils import apply_sorting
from agno.session import AgentSession, TeamSession, WorkflowSession

from aiomemdb._record import SessionParts
from aiomemdb.agno import _deferred as deferred

__all__ = [
    "now",
    "paginate",
    "rows_of",
    "run_to_dict",
    "session_from_parts",
    "session_row",
    "session_type_value",
    "sort_parts",
    "sort_rows",
    "to_session",
]

#: A session row (a fresh decode, without runs) and ``{run_id: stored JSON bytes}`` (None: no list).
Parts = SessionParts

T = TypeVar("T")


def now() -> int:
    """Unix seconds, as agno stamps its records."""
    return int(time.time())


def session_type_value(session_type: Any) -> str | None:
    """``SessionType.AGENT`` or ``"agent"`` -> ``"agent"``; ``None`` stays ``None``."""
    if session_type is None:
        return None
    if isinstance(session_type, SessionType):
        return session_type.value
    return str(session_type)


_AGENT_SESSION_FIELDS = tuple(f.name for f in dataclasses.fields(AgentSession) if f.name != "runs")


def agent_session_row(session: AgentSession) -> dict[str, Any]:
    """``session.to_dict(include_runs=False)`` without its deep copy: the same JSON once orjson encodes it.

    agno's ``to_dict`` is ``dataclasses.asdict`` (a deep copy that turns nested dataclasses into dicts) plus the
    summary's own ``to_dict``. The store encodes the row at once, and orjson encodes nested dataclasses natively,
    to the same JSON, so the copy is pure cost (~40-80 µs of a turn). The row holds the live session's values
    only until the store has encoded it; nothing keeps it.
    """
    row = {name: getattr(session, name) for name in _AGENT_SESSION_FIELDS}
    summary = row["summary"]
    row["summary"] = summary.to_dict() if summary is not None else None
    return row


def session_row(session: Any) -> dict[str, Any]:
    """The stored form of a session, without its runs (they are written one by one by ``upsert_run``).

    An ``AgentSession`` whose class keeps agno's own ``to_dict`` is read field by field (:func:`agent_session_row`).
    """
    if isinstance(session, dict):
        row = {k: v for k, v in session.items() if k != "runs"}
    elif type(session).to_dict is AgentSession.to_dict:
        row = agent_session_row(session)
    else:
        row = session.to_dict(include_runs=False)
    if isinstance(session, AgentSession):
        row["session_type"] = SessionType.AGENT.value
    elif isinstance(session, TeamSession):
        row["session_type"] = SessionType.TEAM.value
    elif isinstance(session, WorkflowSession):
        row["session_type"] = SessionType.WORKFLOW.value
    elif row.get("session_type") is not None:
        row["session_type"] = session_type_value(row["session_type"])
    return row


def session_runs(session: Any) -> list[Any]:
    """The runs a session object (or dict) carries."""
    runs = session.get("runs") if isinstance(session, dict) else getattr(session, "runs", None)
    return list(runs or [])


def run_to_dict(run: Any) -> dict[str, Any]:
    """A run object or dict as the dict agno stores."""
    if isinstance(run, dict):
        return run
    result: dict[str, Any] = run.to_dict()
    return result


def to_session(session_type: Any, doc: dict[str, Any]) -> Any:
    """A stored session dict (a fresh decode only the caller holds) as agno's Session class (chosen by
    ``session_type``, else detected); an agent session's runs are built on first use (:mod:`._deferred`)."""
    return deferred.to_session(session_type, doc)


#: A session given as the store's parts as agno's Session class; an agent session's runs are decoded and built on
#: first use (:mod:`._deferred`). (The function itself, not a wrapper: it is most of a session read.)
session_from_parts = deferred.session_from_parts


def rows_of(parts: Parts) -> dict[str, Any]:
    """The session dict of the store's parts: the row, with its runs decoded (each decode the caller's own)."""
    row, runs = parts
    if runs is not None:
        row["runs"] = [orjson.loads(raw) for raw in runs.values()]
    return row


def sort_parts(
    found: list[Parts], sort_by: str | None, sort_order: str | None, limit: int | None, page: int | None
) -> list[Parts]:
    """:func:`sort_rows` then :func:`paginate`, of sessions given as parts (sorted by their rows)."""
    runs_of = {id(row): runs for row, runs in found}
    ordered = sort_rows([row for row, _ in found], sort_by, sort_order)
    return [(row, runs_of[id(row)]) for row in paginate(ordered, limit, page)]


def sort_rows(rows: list[dict[str, Any]], sort_by: str | None, sort_order: str | None) -> list[dict[str, Any]]:
    """agno's in-memory sorting: descending unless ``"asc"``, ``None`` last; unknown fields leave the order."""
    result: list[dict[str, Any]] = apply_sorting(rows, sort_by, sort_order)
    return result


def paginate(items: Sequence[T], limit: int | None, page_number: int | None) -> list[T]:
    """agno's pagination: no ``limit`` returns everything; ``page`` is 1-based."""
    if limit is None:
        return list(items)
    start = (page_number - 1) * limit if page_number is not None else 0
    return list(items[start : start + limit])
