"""Real agno agents, teams and workflows on our databases, fully offline (OfflineModel)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("agno", reason="agno is not installed (pip install 'aiomemdb[agno]')")

from agno.agent import Agent
from agno.db.base import SessionType
from agno.session import AgentSession, TeamSession, WorkflowSession
from agno.team import Team
from agno.workflow import Workflow
from agno.workflow.step import Step

from aiomemdb import DirectoryPersistence
from aiomemdb.agno import AsyncInMemoryDb, InMemoryDb
from aiomemdb.agno.testing import OfflineModel, prompt_hash

FIRST = "Your first question was: What is the capital of France?"


def test_agent_run_with_sync_class() -> None:
    """Agent.run stores each run with messages and metrics, and later turns see the history."""
    with InMemoryDb() as db:
        agent = Agent(model=OfflineModel(), db=db, add_history_to_context=True, user_id="ada")
        first = agent.run("What is the capital of France?")
        assert first.content is not None
        assert prompt_hash("What is the capital of France?") in first.content
        agent.run("What is its population?")
        assert agent.run("What was my first question?").content == FIRST
        session = db.get_session(agent.session_id, SessionType.AGENT, user_id="ada")
        assert isinstance(session, AgentSession)
        assert len(session.runs) == 3
        assert session.runs[0].metrics.total_tokens > 0
        assert [m.role for m in session.runs[0].messages] == ["user", "assistant"]
        assert session.session_data["session_metrics"]["total_tokens"] > 0
        assert db.get_session(agent.session_id, user_id="someone-else") is None


def test_agent_stream_with_sync_class() -> None:
    """A streamed run is stored like a plain one."""
    with InMemoryDb() as db:
        agent = Agent(model=OfflineModel(), db=db, add_history_to_context=True)
        for _ in agent.run("What is the capital of France?", stream=True):
            pass
        answer = "".join(
            chunk.content or "" for chunk in agent.run("What was my first question?", stream=True) if chunk.content
        )
        assert answer == FIRST
        assert len(db.get_session(agent.session_id).runs) == 2


async def test_arun_with_async_class_200_concurrent_sessions() -> None:
    """200 concurrent sessions of Agent.arun on one AsyncInMemoryDb: every run stored, every history intact."""
    async with AsyncInMemoryDb() as db:

        async def conversation(i: int) -> str | None:
            agent = Agent(
                model=OfflineModel(latency=0.005),
                db=db,
                session_id=f"session-{i}",
                user_id=f"user-{i % 7}",
                add_history_to_context=True,
            )
            await agent.arun(f"What is the capital of France? ({i})")
            await agent.arun(f"Tell me more ({i})")
            result = await agent.arun("What was my first question?")
            return result.content

        answers = await asyncio.gather(*(conversation(i) for i in range(200)))
        assert answers == [f"Your first question was: What is the capital of France? ({i})" for i in range(200)]
        rows, total = await db.get_sessions(deserialize=False)
        assert total == 200
        assert all(len(r["runs"]) == 3 for r in rows)
        assert sum(1 for r in rows if r["user_id"] == "user-3") == len(range(3, 200, 7))


def test_team_sessions_are_stored() -> None:
    """A Team's run is stored as a TeamSession with the team run and its member's run."""
    with InMemoryDb() as db:
        member = Agent(model=OfflineModel(), name="Researcher")
        team = Team(model=OfflineModel(), members=[member], db=db, name="Team")
        result = team.run("Hello team")
        assert result.content is not None
        session = db.get_session(team.session_id, SessionType.TEAM)
        assert isinstance(session, TeamSession)
        assert session.team_id == team.id
        assert [r.run_id for r in session.runs][-1] == result.run_id
        assert db.get_sessions(session_type=SessionType.TEAM, component_id=team.id)[0].session_id == team.session_id


def test_workflow_sessions_are_stored() -> None:
    """A Workflow's run is stored as a WorkflowSession with its workflow run."""
    with InMemoryDb() as db:
        workflow = Workflow(
            name="Pipeline",
            db=db,
            steps=[Step(name="answer", agent=Agent(model=OfflineModel(), name="Writer"))],
        )
        result = workflow.run("Hello workflow")
        assert result.content is not None
        assert prompt_hash("Hello workflow") in str(result.content)
        session = db.get_session(workflow.session_id, SessionType.WORKFLOW)
        assert isinstance(session, WorkflowSession)
        assert [r.run_id for r in session.runs] == [result.run_id]
        run = db.get_run(result.run_id)
        assert type(run).__name__ == "WorkflowRunOutput"


async def test_async_team_and_workflow() -> None:
    """Team.arun and Workflow.arun store their sessions in the async class."""
    async with AsyncInMemoryDb() as db:
        team = Team(model=OfflineModel(), members=[Agent(model=OfflineModel(), name="M")], db=db)
        await team.arun("Hello team")
        workflow = Workflow(name="W", db=db, steps=[Step(name="s", agent=Agent(model=OfflineModel(), name="A"))])
        await workflow.arun("Hello workflow")
        assert isinstance(await db.get_session(team.session_id, SessionType.TEAM), TeamSession)
        assert isinstance(await db.get_session(workflow.session_id, SessionType.WORKFLOW), WorkflowSession)


def test_agentic_memory_is_stored_and_read_back() -> None:
    """With enable_agentic_memory, the model's update_user_memory call stores a memory the next agent reads."""
    with InMemoryDb() as db:
        agent = Agent(model=OfflineModel(), db=db, enable_agentic_memory=True, user_id="ada")
        agent.run("My name is Ada and I live in London.")
        memories = db.get_user_memories(user_id="ada")
        assert [m.memory for m in memories] == ["The user said: My name is Ada and I live in London."]
        assert set(memories[0].topics or []) == {"name", "location"}
        reader = Agent(model=OfflineModel(), db=db, user_id="ada")
        assert [m.memory for m in reader.get_user_memories() or []] == [memories[0].memory]
        assert db.get_user_memories(user_id="bob") == []


def test_memories_written_by_agno_background_threads() -> None:
    """update_memory_on_run writes memories from agno's background pool; all of them land."""
    with InMemoryDb() as db:
        agent = Agent(model=OfflineModel(), db=db, update_memory_on_run=True, user_id="ada")
        for food in ("green tea", "dark chocolate", "olives"):
            agent.run(f"I like {food}.")
        memories = db.get_user_memories(user_id="ada")
        assert sorted(m.memory for m in memories) == sorted(
            f"The user said: I like {food}." for food in ("green tea", "dark chocolate", "olives")
        )


async def test_agentic_memory_with_async_class() -> None:
    """Agentic memory through Agent.arun lands in the async class."""
    async with AsyncInMemoryDb() as db:
        agent = Agent(model=OfflineModel(), db=db, enable_agentic_memory=True, user_id="ada")
        await agent.arun("Remember that I prefer window seats.")
        memories = await db.get_user_memories(user_id="ada")
        assert len(memories) == 1
        assert "window seats" in memories[0].memory


def test_restart_from_directory_keeps_history_and_memories(tmp_path: Path) -> None:
    """After closing and reopening a directory store, the session history and user memories are there."""
    db = InMemoryDb(persistence=DirectoryPersistence(tmp_path))
    agent = Agent(model=OfflineModel(), db=db, add_history_to_context=True, enable_agentic_memory=True, user_id="ada")
    agent.run("What is the capital of France?")
    agent.run("My name is Ada.")
    session_id = agent.session_id
    db.calculate_metrics()
    db.close()

    reopened = InMemoryDb(persistence=DirectoryPersistence(tmp_path))
    try:
        again = Agent(model=OfflineModel(), db=reopened, session_id=session_id, add_history_to_context=True)
        assert again.run("What was my first question?", user_id="ada").content == FIRST
        assert [m.memory for m in reopened.get_user_memories(user_id="ada")] == ["The user said: My name is Ada."]
        rows, _ = reopened.get_metrics(user_id="ada")
        assert rows
        assert rows[0]["agent_runs_count"] == 2
    finally:
        reopened.close()


async def test_restart_async_class_from_directory(tmp_path: Path) -> None:
    """The async class persists to a directory on close and the history is there after a restart."""
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path)) as db:
        agent = Agent(model=OfflineModel(), db=db, add_history_to_context=True)
        await agent.arun("What is the capital of France?")
        session_id = agent.session_id
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path)) as db:
        again = Agent(model=OfflineModel(), db=db, session_id=session_id, add_history_to_context=True)
        assert (await again.arun("What was my first question?")).content == FIRST


def test_sync_class_works_inside_a_running_loop() -> None:
    """The sync class serves Agent.run called from a thread whose event loop is running (Jupyter-style)."""

    async def notebook_cell() -> str | None:
        with InMemoryDb() as db:
            agent = Agent(model=OfflineModel(), db=db, add_history_to_context=True)
            agent.run("What is the capital of France?")
            return agent.run("What was my first question?").content

    assert asyncio.run(notebook_cell()) == FIRST


async def test_arun_with_the_sync_class() -> None:
    """Agent.arun with the sync class (agno then calls it on the event loop) stores and reads history."""
    with InMemoryDb() as db:
        agent = Agent(model=OfflineModel(), db=db, add_history_to_context=True)
        await agent.arun("What is the capital of France?")
        assert (await agent.arun("What was my first question?")).content == FIRST
