"""No two callers share a mutable agno object, and mutating one never changes the store (guarantee 1).

Sessions come from real offline agent turns (messages, run and message metrics, session state), plus a summary
and metadata. Each test reads a session twice before mutating, so both paths of the run cache are covered: the
first read builds the run objects, later reads copy the cached ones.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from enum import Enum
from typing import Any

import pytest

pytest.importorskip("agno", reason="agno is not installed (pip install 'aiomemdb[agno]')")

from agno.agent import Agent
from agno.models.message import Message
from agno.run.agent import RunOutput
from agno.run.team import TeamRunOutput
from agno.session import AgentSession
from agno.session.summary import SessionSummary
from pydantic import BaseModel

from aiomemdb.agno import AsyncInMemoryDb, InMemoryDb
from aiomemdb.agno.testing import OfflineModel

PROMPTS = ("My name is Ada and I live in Lisbon.", "What is the capital of France?", "What was my first question?")
READERS, READS = 2, 10


def mutable_parts(obj: Any) -> list[Any]:
    """Every mutable object reachable from ``obj`` (itself included): dicts, lists, sets, dataclasses, models."""
    found: list[Any] = []
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes | int | float | bool | Enum) or item is None:
            continue
        if isinstance(item, tuple | frozenset):
            stack.extend(item)
            continue
        found.append(item)
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | set):
            stack.extend(item)
        elif isinstance(item, BaseModel):
            stack.extend(item.__dict__.values())
        elif hasattr(item, "__dict__"):
            stack.extend(vars(item).values())
    return found


def add_summary_and_metadata(session: AgentSession) -> AgentSession:
    """The session with a summary (topics included) and nested metadata, as a summarising agent would store it."""
    session.summary = SessionSummary(summary="Ada asked about France.", topics=["geography"])
    session.metadata = {"tags": ["demo"], "nested": {"n": 1}}
    return session


def mutate_everything(session: AgentSession) -> None:
    """Change every mutable piece of a returned session: its data, metadata, summary, runs, messages, metrics."""
    assert session.session_data is not None
    assert session.metadata is not None
    assert session.summary is not None
    assert session.runs is not None
    assert len(session.runs) == len(PROMPTS)
    session.session_data["session_state"]["mutated"] = True
    session.session_data["session_metrics"]["total_tokens"] = -1
    session.metadata["tags"].append("mutated")
    session.metadata["nested"]["n"] = -1
    session.summary.summary = "mutated"
    assert session.summary.topics is not None
    session.summary.topics.append("mutated")
    run = session.runs[0]
    assert isinstance(run, RunOutput)
    assert run.messages
    assert run.metrics
    assert run.input
    run.content = "mutated"
    run.input.input_content = "mutated"
    run.metrics.total_tokens = -1
    message = run.messages[-1]
    assert message.metrics is not None
    message.content = "mutated"
    message.metrics.output_tokens = -1
    run.messages.append(Message(role="user", content="injected"))
    session.runs[1].content = "mutated too"
    session.runs.pop()
    session.runs.append(RunOutput(run_id="injected", content="injected"))


def assert_distinct(results: list[Any], at_least: int = 30) -> None:
    """No mutable object is reachable from two of ``results`` (they are all alive, so ids are not reused), and
    each reaches ``at_least`` of them (so the walk did get into the runs, messages and metrics).

    Checked twice: as returned (a history run nobody has read yet holds only its immutable stored bytes), then
    after every run of every result has been read (built), so the walk reaches their messages and metrics."""
    _assert_distinct(results, at_least=1)
    for result in results:
        for part in mutable_parts(result):
            if isinstance(part, RunOutput | TeamRunOutput):
                assert part.messages is not None or part.content is not None  # reading a field builds the run
    _assert_distinct(results, at_least)


def _assert_distinct(results: list[Any], at_least: int) -> None:
    seen: dict[int, int] = {}
    for index, result in enumerate(results):
        parts = mutable_parts(result)
        assert len(parts) >= at_least
        for part in parts:
            owner = seen.setdefault(id(part), index)
            assert owner == index, f"{type(part).__name__} shared by results {owner} and {index}"


def test_mutating_a_read_changes_neither_later_reads_nor_the_store() -> None:
    """Sync class: mutating every piece of two returned sessions leaves the next read and the stored JSON unchanged."""
    with InMemoryDb() as db:
        agent = Agent(model=OfflineModel(), db=db, add_history_to_context=True, user_id="ada")
        for prompt in PROMPTS:
            agent.run(prompt)
        sid = agent.session_id
        assert sid is not None
        db.upsert_session(add_summary_and_metadata(db.get_session(sid)))
        stored = db.get_session(sid, deserialize=False)
        expected = copy.deepcopy(db.get_session(sid).to_dict())
        first, second = db.get_session(sid), db.get_session(sid)
        mutate_everything(first)
        mutate_everything(second)
        assert db.get_session(sid).to_dict() == expected
        assert db.get_session(sid, deserialize=False) == stored
        assert db.store.get_session(sid) == stored


async def test_mutating_a_read_changes_neither_later_reads_nor_the_store_async() -> None:
    """Async class: mutating every piece of two returned sessions leaves the next read and the stored JSON unchanged."""
    async with AsyncInMemoryDb() as db:
        agent = Agent(model=OfflineModel(), db=db, add_history_to_context=True, user_id="ada")
        for prompt in PROMPTS:
            await agent.arun(prompt)
        sid = agent.session_id
        assert sid is not None
        await db.upsert_session(add_summary_and_metadata(await db.get_session(sid)))
        stored = await db.get_session(sid, deserialize=False)
        expected = copy.deepcopy((await db.get_session(sid)).to_dict())
        first, second = await db.get_session(sid), await db.get_session(sid)
        mutate_everything(first)
        mutate_everything(second)
        assert (await db.get_session(sid)).to_dict() == expected
        assert await db.get_session(sid, deserialize=False) == stored
        assert await db.store.get_session(sid) == stored


def test_threads_reading_one_session_get_distinct_objects() -> None:
    """Sync class: two threads reading the same session at once never receive a shared mutable object."""
    with InMemoryDb() as db:
        agent = Agent(model=OfflineModel(), db=db, add_history_to_context=True)
        for prompt in PROMPTS:
            agent.run(prompt)
        db.upsert_session(add_summary_and_metadata(db.get_session(agent.session_id)))
        start = threading.Barrier(READERS)
        results: list[list[Any]] = [[] for _ in range(READERS)]

        def read(mine: list[Any]) -> None:
            start.wait()
            mine.extend(db.get_session(agent.session_id) for _ in range(READS))

        threads = [threading.Thread(target=read, args=(mine,)) for mine in results]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [len(mine) for mine in results] == [READS] * READERS
        assert_distinct([session for mine in results for session in mine])


async def test_tasks_reading_one_session_get_distinct_objects() -> None:
    """Async class: concurrent tasks reading the same session never receive a shared mutable object."""
    async with AsyncInMemoryDb() as db:
        agent = Agent(model=OfflineModel(), db=db, add_history_to_context=True)
        for prompt in PROMPTS:
            await agent.arun(prompt)
        await db.upsert_session(add_summary_and_metadata(await db.get_session(agent.session_id)))
        sessions = await asyncio.gather(*(db.get_session(agent.session_id) for _ in range(READERS * READS)))
        assert_distinct(list(sessions))


def test_other_reads_return_objects_of_their_own() -> None:
    """get_sessions, get_run and get_runs also hand each caller objects no other caller holds."""
    with InMemoryDb() as db:
        agent = Agent(model=OfflineModel(), db=db, add_history_to_context=True)
        for prompt in PROMPTS:
            agent.run(prompt)
        run_id = db.get_session(agent.session_id).runs[0].run_id
        assert_distinct([db.get_sessions(), db.get_sessions(), db.get_session(agent.session_id)])
        assert_distinct([[db.get_run(run_id), db.get_runs()], [db.get_run(run_id), db.get_runs()]])
