"""Builders and helpers shared by the Agno adapter tests (imported by test modules after their importorskip)."""

from __future__ import annotations

import inspect
import time
from typing import Any

import pytest
from agno.db.in_memory import InMemoryDb as AgnoInMemoryDb
from agno.run.agent import RunOutput
from agno.run.base import RunStatus
from agno.run.team import TeamRunOutput
from agno.run.workflow import WorkflowRunOutput
from agno.session import AgentSession, TeamSession, WorkflowSession

IMPLEMENTATIONS = ("agno", "ours_sync", "ours_async")


def make_db(kind: str, **options: Any) -> Any:
    """A fresh database of the given kind (``agno``, ``ours_sync`` or ``ours_async``)."""
    if kind == "agno":
        return AgnoInMemoryDb()
    if kind == "ours_sync":
        from aiomemdb.agno import InMemoryDb

        return InMemoryDb(**options)
    if kind == "ours_async":
        from aiomemdb.agno import AsyncInMemoryDb

        return AsyncInMemoryDb(**options)
    raise AssertionError(kind)


async def close_db(db: Any) -> None:
    """Close any of the three kinds (agno's ``close`` is a no-op)."""
    await maybe(db.close())


async def maybe(value: Any) -> Any:
    """Await ``value`` if it is awaitable, so sync and async databases are called the same way."""
    if inspect.isawaitable(value):
        return await value
    return value


def impls(*, agno_xfail: str | None = None, agno_raises: type[BaseException] | None = None) -> list[Any]:
    """Parameters for ``@pytest.mark.parametrize("db", impls(...), indirect=True)``.

    Args:
        agno_xfail: why agno's own InMemoryDb is expected to fail this test (a bug of agno's, or a feature it
            lacks); the mark is strict, so the test fails if agno ever starts passing.
        agno_raises: the exception agno raises instead, when the xfail is about an exception.
    """
    params: list[Any] = []
    for kind in IMPLEMENTATIONS:
        if kind == "agno" and agno_xfail is not None:
            params.append(
                pytest.param(kind, marks=pytest.mark.xfail(reason=agno_xfail, raises=agno_raises, strict=True))
            )
        else:
            params.append(kind)
    return params


# -- builders -------------------------------------------------------------------------------------------------


def agent_run(
    run_id: str,
    *,
    session_id: str = "s1",
    agent_id: str = "agent-1",
    status: RunStatus = RunStatus.completed,
    parent_run_id: str | None = None,
    content: str = "hello",
    created_at: int | None = None,
) -> RunOutput:
    """An agent run as agno produces it."""
    run = RunOutput(
        run_id=run_id,
        agent_id=agent_id,
        session_id=session_id,
        content=content,
        status=status,
        parent_run_id=parent_run_id,
    )
    if created_at is not None:
        run.created_at = created_at
    return run


def agent_session(
    session_id: str,
    *,
    user_id: str | None = None,
    agent_id: str | None = "agent-1",
    created_at: int | None = None,
    name: str | None = None,
    runs: list[Any] | None = None,
    state: dict[str, Any] | None = None,
) -> AgentSession:
    """An agent session as agno builds it before its first save."""
    session_data: dict[str, Any] = {"session_state": dict(state or {})}
    if name is not None:
        session_data["session_name"] = name
    return AgentSession(
        session_id=session_id,
        agent_id=agent_id,
        user_id=user_id,
        session_data=session_data,
        # agno's Agent always stamps created_at on a new session
        created_at=now() if created_at is None else created_at,
        runs=runs,
    )


def team_session(session_id: str, *, team_id: str = "team-1", user_id: str | None = None, **kw: Any) -> TeamSession:
    """A team session."""
    kw.setdefault("created_at", now())
    return TeamSession(session_id=session_id, team_id=team_id, user_id=user_id, session_data={}, **kw)


def workflow_session(
    session_id: str, *, workflow_id: str = "wf-1", user_id: str | None = None, **kw: Any
) -> WorkflowSession:
    """A workflow session."""
    kw.setdefault("created_at", now())
    return WorkflowSession(session_id=session_id, workflow_id=workflow_id, user_id=user_id, session_data={}, **kw)


def team_run(run_id: str, *, session_id: str, team_id: str = "team-1") -> TeamRunOutput:
    """A team run."""
    return TeamRunOutput(run_id=run_id, team_id=team_id, session_id=session_id, content="t", status=RunStatus.completed)


def workflow_run(run_id: str, *, session_id: str, workflow_id: str = "wf-1") -> WorkflowRunOutput:
    """A workflow run."""
    return WorkflowRunOutput(
        run_id=run_id, workflow_id=workflow_id, session_id=session_id, content="w", status=RunStatus.completed
    )


def now() -> int:
    """The current unix time in seconds."""
    return int(time.time())
