"""Every record kind the Agno adapter writes survives a restart, and reads reuse run objects safely."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

pytest.importorskip("agno", reason="agno is not installed (pip install 'aiomemdb[agno]')")

from agno.db.schemas.evals import EvalRunRecord, EvalType
from agno.db.schemas.knowledge import KnowledgeRow
from agno.db.schemas.memory import UserMemory

from aiomemdb import DirectoryPersistence
from aiomemdb.agno import AsyncInMemoryDb, InMemoryDb
from tests.agno.helpers import agent_run, agent_session


def test_every_record_kind_survives_a_restart(tmp_path: Path) -> None:
    """Sessions, runs, memories, metrics, knowledge, evals, learnings and schema versions reload from disk."""
    with InMemoryDb(persistence=DirectoryPersistence(tmp_path)) as db:
        db.upsert_session(agent_session("s1", user_id="u1", runs=[agent_run("r1", session_id="s1")]))
        db.upsert_run(agent_run("r2", session_id="s1"), session_id="s1", run_index=1)
        db.upsert_user_memory(UserMemory(memory="likes tea", memory_id="m1", user_id="u1", topics=["food"]))
        db.calculate_metrics()
        db.upsert_knowledge_content(KnowledgeRow(id="k1", name="doc", description="d", user_id="u1"))
        db.create_eval_run(EvalRunRecord(run_id="e1", eval_type=EvalType.ACCURACY, eval_data={"score": 1}))
        db.upsert_learning("l1", "user_profile", {"name": "Ada"}, user_id="u1")
        db.upsert_schema_version("agno_sessions", "3.0.0")

    with InMemoryDb(persistence=DirectoryPersistence(tmp_path)) as db:
        assert [r.run_id for r in db.get_session("s1", user_id="u1").runs] == ["r1", "r2"]
        assert db.get_user_memory("m1").topics == ["food"]
        assert db.get_metrics(user_id="u1")[0][0]["agent_sessions_count"] == 1
        assert db.get_knowledge_content("k1", user_id="u1").name == "doc"
        assert db.get_eval_run("e1").eval_data == {"score": 1}
        assert db.get_learning("user_profile", user_id="u1") == {"content": {"name": "Ada"}}
        assert db.get_latest_schema_version("agno_sessions") == "3.0.0"


def test_traces_and_spans_survive_a_restart(tmp_path: Path) -> None:
    """Traces and spans reload from disk with their span counts."""
    pytest.importorskip("opentelemetry.sdk", reason="opentelemetry-sdk is not installed (agno's tracing needs it)")
    from agno.tracing.schemas import Span, Trace

    t = datetime(2030, 1, 1, tzinfo=UTC)
    trace = Trace(trace_id="t1", name="Agent.run", status="OK", start_time=t, end_time=t + timedelta(seconds=1),
                  duration_ms=1000, total_spans=0, error_count=0, run_id="r1", session_id="s1", user_id=None,
                  agent_id="a", team_id=None, workflow_id=None, created_at=t)  # fmt: skip
    span = Span(span_id="p1", trace_id="t1", parent_span_id=None, name="root", span_kind="INTERNAL",
                status_code="OK", status_message=None, start_time=t, end_time=t, duration_ms=0,
                attributes={"k": 1}, created_at=t)  # fmt: skip
    with InMemoryDb(persistence=DirectoryPersistence(tmp_path)) as db:
        db.upsert_trace(trace)
        db.create_span(span)
    with InMemoryDb(persistence=DirectoryPersistence(tmp_path)) as db:
        assert db.get_trace(trace_id="t1").total_spans == 1
        assert db.get_span("p1").attributes == {"k": 1}


def test_each_read_builds_its_own_runs_and_sees_a_rewritten_run() -> None:
    """Every read gets run objects of its own (built on first use); a rewritten run is read as rewritten."""
    with InMemoryDb() as db:
        db.upsert_session(agent_session("s1", runs=[agent_run("r1"), agent_run("r2")]))
        first = db.get_session("s1")
        second = db.get_session("s1")
        assert [r.to_dict() for r in second.runs] == [r.to_dict() for r in first.runs]
        assert all(a is not b for a, b in zip(first.runs, second.runs, strict=True))
        db.upsert_run(agent_run("r2", content="changed"), session_id="s1")
        third = db.get_session("s1")
        assert [r.content for r in third.runs] == ["hello", "changed"]
        assert first.runs[1].content == "hello"


async def test_async_storage_dict_is_the_live_storage() -> None:
    """The async class keeps the caller's storage_dict in step with its writes, as the sync one does."""
    mine: dict[str, dict[str, object]] = {}
    async with AsyncInMemoryDb(storage_dict=mine) as db:
        await db.upsert_session(agent_session("s1"))
        await db.upsert_run(agent_run("r1"), session_id="s1", run_index=0)
        assert [r["run_id"] for r in mine["s1"]["runs"]] == ["r1"]
        await db.delete_session("s1")
        assert mine == {}


def test_shared_store_is_not_closed_by_the_adapter() -> None:
    """An adapter over a store passed in as store= leaves it open on close; both see the same data."""
    from aiomemdb import InMemoryDb as Store

    with Store() as store:
        db = InMemoryDb(store=store)
        db.upsert_session(agent_session("s1"))
        db.close()
        assert store.get_session("s1") is not None
