"""Conformance: our two Agno classes behave like agno's own ``InMemoryDb`` on every method of the interface.

Each test runs against three implementations (the ``db`` fixture): agno's ``InMemoryDb`` (the reference),
``aiomemdb.agno.InMemoryDb`` and ``aiomemdb.agno.AsyncInMemoryDb`` (awaited through :func:`maybe`). Where agno's
behaviour is a bug, or agno lacks the method, the agno case is a strict ``xfail`` whose reason says why we differ.
"""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

pytest.importorskip("agno", reason="agno is not installed (pip install 'aiomemdb[agno]')")

from agno.db.base import SessionType
from agno.db.schemas.evals import EvalFilterType, EvalRunRecord, EvalType
from agno.db.schemas.knowledge import KnowledgeRow
from agno.db.schemas.memory import UserMemory
from agno.run.agent import RunOutput
from agno.run.base import RunStatus
from agno.session import AgentSession, TeamSession, WorkflowSession

from tests.agno.helpers import (
    agent_run,
    agent_session,
    impls,
    maybe,
    now,
    team_run,
    team_session,
    workflow_run,
    workflow_session,
)

NO_LEARNINGS = "agno's InMemoryDb does not implement learnings (raises NotImplementedError); ours stores them"
NO_TRACES = "agno's InMemoryDb does not implement traces and spans (raises NotImplementedError); ours stores them"
NO_SEED = "agno 3.x InMemoryDb dropped the seed operations of agno 1.x InMemoryStorage; ours keeps them (SPEC §2)"


async def seed_sessions(db: Any) -> list[Any]:
    """Five sessions of three kinds, two users, distinct created_at (oldest first)."""
    base = now() - 1000
    sessions = [
        agent_session("a1", user_id="u1", agent_id="agent-1", created_at=base, name="Trip to Paris"),
        agent_session("a2", user_id="u2", agent_id="agent-2", created_at=base + 10, name="Groceries"),
        agent_session("a3", user_id="u1", agent_id="agent-1", created_at=base + 20, name="paris again"),
        team_session("t1", user_id="u1", created_at=base + 30),
        workflow_session("w1", created_at=base + 40),
    ]
    for s in sessions:
        await maybe(db.upsert_session(s))
    return sessions


# ---------------------------------------------------------------------------------------------------------------
# Basics
# ---------------------------------------------------------------------------------------------------------------


async def test_table_exists_is_always_true(db: Any) -> None:
    """An in-memory database has every table."""
    assert await maybe(db.table_exists("agno_sessions")) is True
    assert await maybe(db.table_exists("anything")) is True


async def test_schema_version_defaults_and_upserts(db: Any) -> None:
    """An unstamped table reads as 2.0.0 and a stamped one reads back its version."""
    assert await maybe(db.get_latest_schema_version("agno_sessions")) == "2.0.0"
    await maybe(db.upsert_schema_version("agno_sessions", "3.0.0"))
    assert await maybe(db.get_latest_schema_version("agno_sessions")) == "3.0.0"
    assert await maybe(db.get_latest_schema_version("agno_memories")) == "2.0.0"


# ---------------------------------------------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------------------------------------------


async def test_upsert_session_round_trip_all_types(db: Any) -> None:
    """Agent, team and workflow sessions come back as the right Session class with their fields."""
    await maybe(db.upsert_session(agent_session("a", user_id="u", state={"k": 1})))
    await maybe(db.upsert_session(team_session("t")))
    await maybe(db.upsert_session(workflow_session("w", workflow_name="flow")))
    a = await maybe(db.get_session("a", SessionType.AGENT))
    t = await maybe(db.get_session("t", SessionType.TEAM))
    w = await maybe(db.get_session("w", SessionType.WORKFLOW))
    assert isinstance(a, AgentSession)
    assert a.user_id == "u"
    assert a.session_data["session_state"] == {"k": 1}
    assert isinstance(t, TeamSession)
    assert t.team_id == "team-1"
    assert isinstance(w, WorkflowSession)
    assert w.workflow_name == "flow"
    # Without a session_type the class is detected from the stored record.
    assert isinstance(await maybe(db.get_session("t")), TeamSession)
    assert isinstance(await maybe(db.get_session("w")), WorkflowSession)


async def test_upsert_session_returns_session_or_dict(db: Any) -> None:
    """upsert_session returns a Session (deserialize=True) or the stored row as a dict with the caller's runs."""
    session = agent_session("s1", runs=[agent_run("r1")])
    out = await maybe(db.upsert_session(session))
    assert isinstance(out, AgentSession)
    assert out.session_id == "s1"
    assert out.created_at is not None
    assert out.updated_at == out.created_at
    assert [r.run_id for r in out.runs] == ["r1"]
    row = await maybe(db.upsert_session(session, deserialize=False))
    assert isinstance(row, dict)
    assert row["session_id"] == "s1"
    assert row["session_type"] == "agent"
    assert [r["run_id"] for r in row["runs"]] == ["r1"]


async def test_get_session_dict_has_agno_row_shape(db: Any) -> None:
    """deserialize=False returns the row as agno's to_dict() builds it, plus session_type and timestamps."""
    await maybe(db.upsert_session(agent_session("s1", user_id="u", runs=[agent_run("r1")])))
    row = await maybe(db.get_session("s1", deserialize=False))
    assert isinstance(row, dict)
    for key in (
        "session_id",
        "agent_id",
        "user_id",
        "session_data",
        "metadata",
        "summary",
        "created_at",
        "updated_at",
        "session_type",
        "runs",
    ):
        assert key in row, key
    assert row["session_type"] == "agent"
    assert row["runs"][0]["run_id"] == "r1"
    assert row["runs"][0]["status"] == "COMPLETED"


@pytest.mark.parametrize(
    "db",
    impls(agno_xfail="agno stores created_at=None for a session that has none, breaking metrics"),
    indirect=True,
)
async def test_missing_created_at_is_stamped(db: Any) -> None:
    """A new session without created_at gets the current time as created_at and updated_at."""
    session = agent_session("s1")
    session.created_at = None
    await maybe(db.upsert_session(session))
    row = await maybe(db.get_session("s1", deserialize=False))
    assert isinstance(row["created_at"], int)
    assert row["updated_at"] == row["created_at"]
    assert await maybe(db.calculate_metrics()) is not None


async def test_created_at_is_kept_on_insert_and_update(db: Any) -> None:
    """A supplied created_at is kept on insert (updated_at equals it) and never changes on update."""
    created = now() - 5000
    await maybe(db.upsert_session(agent_session("s1", created_at=created)))
    row = await maybe(db.get_session("s1", deserialize=False))
    assert row["created_at"] == created
    assert row["updated_at"] == created
    await maybe(db.upsert_session(agent_session("s1", created_at=created, state={"x": 1})))
    row = await maybe(db.get_session("s1", deserialize=False))
    assert row["created_at"] == created
    assert row["updated_at"] >= now() - 5
    assert row["session_data"]["session_state"] == {"x": 1}


async def test_upsert_session_owner_guard(db: Any) -> None:
    """A session owned by one user cannot be overwritten by another (upsert returns None, store unchanged)."""
    await maybe(db.upsert_session(agent_session("s1", user_id="alice", state={"v": "alice"})))
    assert await maybe(db.upsert_session(agent_session("s1", user_id="mallory", state={"v": "x"}))) is None
    assert await maybe(db.upsert_session(agent_session("s1", user_id=None, state={"v": "x"}))) is None
    row = await maybe(db.get_session("s1", deserialize=False))
    assert row["user_id"] == "alice"
    assert row["session_data"]["session_state"] == {"v": "alice"}


async def test_unowned_session_can_be_claimed(db: Any) -> None:
    """A session without user_id is writable by anyone, and the writer's user_id is stored."""
    await maybe(db.upsert_session(agent_session("s1")))
    out = await maybe(db.upsert_session(agent_session("s1", user_id="bob")))
    assert out is not None
    assert (await maybe(db.get_session("s1", deserialize=False)))["user_id"] == "bob"


async def test_get_session_user_filter(db: Any) -> None:
    """get_session with another user's id returns None; with the owner's id or none it returns the session."""
    await maybe(db.upsert_session(agent_session("s1", user_id="alice")))
    assert await maybe(db.get_session("s1", user_id="bob")) is None
    assert (await maybe(db.get_session("s1", user_id="alice"))).session_id == "s1"
    assert (await maybe(db.get_session("s1"))).session_id == "s1"
    assert await maybe(db.get_session("missing")) is None


async def test_first_insert_stores_incoming_runs(db: Any) -> None:
    """The first upsert of a session stores the runs it carries (bulk import / restore path)."""
    runs = [agent_run("r1"), agent_run("r2")]
    await maybe(db.upsert_session(agent_session("s1", runs=runs)))
    session = await maybe(db.get_session("s1"))
    assert [r.run_id for r in session.runs] == ["r1", "r2"]
    assert isinstance(session.runs[0], RunOutput)


async def test_upsert_session_keeps_runs_written_by_upsert_run(db: Any) -> None:
    """Updating a session row never drops runs that upsert_run wrote (agno serialises without runs)."""
    await maybe(db.upsert_session(agent_session("s1")))
    await maybe(db.upsert_run(agent_run("r1"), session_id="s1", run_index=0))
    await maybe(db.upsert_run(agent_run("r2"), session_id="s1", run_index=1))
    # agno's agent saves the live session object, whose runs list may be stale or empty
    await maybe(db.upsert_session(agent_session("s1", state={"after": True}, runs=[])))
    session = await maybe(db.get_session("s1"))
    assert [r.run_id for r in session.runs] == ["r1", "r2"]
    assert session.session_data["session_state"] == {"after": True}


async def test_get_session_runs_limit_filters_context_runs(db: Any) -> None:
    """runs_limit keeps the last N top-level runs, skipping member runs and paused/cancelled/error runs."""
    await maybe(db.upsert_session(agent_session("s1")))
    runs = [
        agent_run("r1"),
        agent_run("r2"),
        agent_run("m1", parent_run_id="r2"),
        agent_run("r3", status=RunStatus.error),
        agent_run("r4"),
        agent_run("r5", status=RunStatus.cancelled),
    ]
    for i, run in enumerate(runs):
        await maybe(db.upsert_run(run, session_id="s1", run_index=i))
    s = await maybe(db.get_session("s1", runs_limit=2))
    assert [r.run_id for r in s.runs] == ["r2", "r4"]
    row = await maybe(db.get_session("s1", runs_limit=10, deserialize=False))
    assert [r["run_id"] for r in row["runs"]] == ["r1", "r2", "r4"]
    full = await maybe(db.get_session("s1"))
    assert [r.run_id for r in full.runs] == ["r1", "r2", "m1", "r3", "r4", "r5"]


async def test_session_isolation(db: Any) -> None:
    """Mutating a returned session, or the object passed in, never changes what the store holds."""
    session = agent_session("s1", state={"k": [1]}, runs=[agent_run("r1")])
    await maybe(db.upsert_session(session))
    session.session_data["session_state"]["k"].append(2)
    got = await maybe(db.get_session("s1"))
    got.session_data["session_state"]["k"].append(3)
    row = await maybe(db.get_session("s1", deserialize=False))
    row["session_data"]["session_state"]["k"].append(4)
    row["runs"][0]["content"] = "changed"
    again = await maybe(db.get_session("s1", deserialize=False))
    assert again["session_data"]["session_state"]["k"] == [1]
    assert again["runs"][0]["content"] == "hello"


async def test_get_sessions_returns_list_or_page_and_total(db: Any) -> None:
    """get_sessions returns Session objects (deserialize=True) or (rows, total) (deserialize=False)."""
    await seed_sessions(db)
    sessions = await maybe(db.get_sessions())
    assert isinstance(sessions, list)
    assert len(sessions) == 5
    assert {type(s) for s in sessions} == {AgentSession, TeamSession, WorkflowSession}
    rows, total = await maybe(db.get_sessions(deserialize=False, limit=2, page=1))
    assert total == 5
    assert len(rows) == 2
    assert isinstance(rows[0], dict)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, {"a1", "a2", "a3", "t1", "w1"}),
        ({"user_id": "u1"}, {"a1", "a3", "t1"}),
        ({"session_type": SessionType.AGENT}, {"a1", "a2", "a3"}),
        ({"session_type": SessionType.TEAM}, {"t1"}),
        ({"session_type": SessionType.WORKFLOW}, {"w1"}),
        ({"component_id": "agent-1"}, {"a1", "a3"}),
        ({"component_id": "agent-1", "session_type": SessionType.AGENT}, {"a1", "a3"}),
        ({"component_id": "team-1"}, {"t1"}),
        ({"component_id": "team-1", "session_type": SessionType.AGENT}, set()),
        ({"component_id": "wf-1", "session_type": SessionType.WORKFLOW}, {"w1"}),
        ({"session_name": "PARIS"}, {"a1", "a3"}),
        ({"session_name": "paris", "user_id": "u2"}, set()),
        ({"user_id": "nobody"}, set()),
    ],
)
async def test_get_sessions_filters(db: Any, filters: dict[str, Any], expected: set[str]) -> None:
    """Each filter of get_sessions selects what agno's selects (component_id by type, name case-insensitive)."""
    await seed_sessions(db)
    rows, total = await maybe(db.get_sessions(deserialize=False, **filters))
    assert {r["session_id"] for r in rows} == expected
    assert total == len(expected)


async def test_get_sessions_timestamp_window(db: Any) -> None:
    """start_timestamp and end_timestamp bound created_at, both inclusive."""
    sessions = await seed_sessions(db)
    start, end = sessions[1].created_at, sessions[3].created_at
    rows, total = await maybe(db.get_sessions(deserialize=False, start_timestamp=start, end_timestamp=end))
    assert {r["session_id"] for r in rows} == {"a2", "a3", "t1"}
    assert total == 3


@pytest.mark.parametrize(
    ("sort_by", "sort_order", "expected"),
    [
        ("created_at", "asc", ["a1", "a2", "a3", "t1", "w1"]),
        ("created_at", "desc", ["w1", "t1", "a3", "a2", "a1"]),
        ("created_at", None, ["w1", "t1", "a3", "a2", "a1"]),
        ("updated_at", "desc", ["w1", "t1", "a3", "a2", "a1"]),
        ("session_id", "asc", ["a1", "a2", "a3", "t1", "w1"]),
        (None, None, ["a1", "a2", "a3", "t1", "w1"]),
    ],
)
async def test_get_sessions_sorting(db: Any, sort_by: str | None, sort_order: str | None, expected: list[str]) -> None:
    """Sorting follows agno's apply_sorting (desc by default); no sort_by keeps insertion (creation) order."""
    await seed_sessions(db)
    rows, _ = await maybe(db.get_sessions(deserialize=False, sort_by=sort_by, sort_order=sort_order))
    assert [r["session_id"] for r in rows] == expected


async def test_get_sessions_sort_by_other_field(db: Any) -> None:
    """Sorting by a field that is not a timestamp (agent_id) works, with None values placed as agno places them."""
    await seed_sessions(db)
    rows, _ = await maybe(
        db.get_sessions(deserialize=False, sort_by="agent_id", sort_order="asc", session_type=SessionType.AGENT)
    )
    assert [r["agent_id"] for r in rows] == ["agent-1", "agent-1", "agent-2"]


async def test_get_sessions_pagination(db: Any) -> None:
    """limit/page slice the sorted result and total counts every match."""
    await seed_sessions(db)
    pages = []
    for page in (1, 2, 3):
        rows, total = await maybe(
            db.get_sessions(deserialize=False, sort_by="created_at", sort_order="asc", limit=2, page=page)
        )
        assert total == 5
        pages.append([r["session_id"] for r in rows])
    assert pages == [["a1", "a2"], ["a3", "t1"], ["w1"]]
    rows, total = await maybe(db.get_sessions(deserialize=False, sort_by="created_at", sort_order="asc", limit=2))
    assert [r["session_id"] for r in rows] == ["a1", "a2"]
    assert total == 5


async def test_get_sessions_include_runs_false(db: Any) -> None:
    """include_runs=False leaves runs off the listed sessions, and the stored runs stay."""
    await maybe(db.upsert_session(agent_session("s1", runs=[agent_run("r1")])))
    rows, _ = await maybe(db.get_sessions(deserialize=False, include_runs=False))
    assert rows[0]["runs"] is None
    sessions = await maybe(db.get_sessions(include_runs=True))
    assert [r.run_id for r in sessions[0].runs] == ["r1"]


async def test_rename_session(db: Any) -> None:
    """rename_session sets session_data.session_name and returns the renamed session."""
    await maybe(db.upsert_session(agent_session("s1", user_id="u", state={"k": 1})))
    out = await maybe(db.rename_session("s1", SessionType.AGENT, "New name"))
    assert isinstance(out, AgentSession)
    assert out.session_data["session_name"] == "New name"
    row = await maybe(db.get_session("s1", deserialize=False))
    assert row["session_data"] == {"session_state": {"k": 1}, "session_name": "New name"}
    out = await maybe(db.rename_session("s1", SessionType.AGENT, "Dict", deserialize=False))
    assert isinstance(out, dict)
    assert out["session_data"]["session_name"] == "Dict"


async def test_rename_session_guards(db: Any) -> None:
    """rename_session returns None for a missing session, the wrong type or another user, and changes nothing."""
    await maybe(db.upsert_session(agent_session("s1", user_id="u", name="orig")))
    assert await maybe(db.rename_session("missing", SessionType.AGENT, "x")) is None
    assert await maybe(db.rename_session("s1", SessionType.TEAM, "x")) is None
    assert await maybe(db.rename_session("s1", SessionType.AGENT, "x", user_id="other")) is None
    row = await maybe(db.get_session("s1", deserialize=False))
    assert row["session_data"]["session_name"] == "orig"


async def test_delete_session(db: Any) -> None:
    """delete_session returns True once, honours the owner guard, and the session is gone."""
    await maybe(db.upsert_session(agent_session("s1", user_id="alice", runs=[agent_run("r1")])))
    assert await maybe(db.delete_session("s1", user_id="bob")) is False
    assert await maybe(db.get_session("s1")) is not None
    assert await maybe(db.delete_session("s1", user_id="alice")) is True
    assert await maybe(db.delete_session("s1")) is False
    assert await maybe(db.get_session("s1")) is None
    assert await maybe(db.get_run("r1")) is None


async def test_delete_sessions(db: Any) -> None:
    """delete_sessions removes the listed sessions, only the user's own when user_id is given."""
    await seed_sessions(db)
    await maybe(db.delete_sessions(["a1", "a2", "missing"], user_id="u1"))
    rows, _ = await maybe(db.get_sessions(deserialize=False))
    assert {r["session_id"] for r in rows} == {"a2", "a3", "t1", "w1"}
    await maybe(db.delete_sessions(["a2", "w1"]))
    rows, _ = await maybe(db.get_sessions(deserialize=False))
    assert {r["session_id"] for r in rows} == {"a3", "t1"}


async def test_upsert_sessions_bulk(db: Any) -> None:
    """upsert_sessions stores every session and returns those written, skipping ones the owner guard refuses."""
    if not hasattr(db, "upsert_sessions"):
        pytest.skip("AsyncBaseDb does not declare upsert_sessions")
    await maybe(db.upsert_session(agent_session("owned", user_id="alice")))
    batch = [agent_session("n1"), agent_session("owned", user_id="bob"), team_session("n2")]
    out = await maybe(db.upsert_sessions(batch))
    assert [s.session_id for s in out] == ["n1", "n2"]
    rows = await maybe(db.upsert_sessions([agent_session("n3")], deserialize=False))
    assert isinstance(rows[0], dict)
    assert rows[0]["session_id"] == "n3"
    assert (await maybe(db.get_session("owned", deserialize=False)))["user_id"] == "alice"
    assert await maybe(db.upsert_sessions([])) == []


@pytest.mark.parametrize(
    "db", impls(agno_xfail="agno's upsert_sessions ignores preserve_updated_at and stamps now"), indirect=True
)
async def test_upsert_sessions_preserve_updated_at(db: Any) -> None:
    """preserve_updated_at=True keeps the updated_at the imported session carries."""
    await maybe(db.upsert_session(agent_session("s1", created_at=now() - 100)))
    old = now() - 50
    imported = agent_session("s1", created_at=now() - 100)
    imported.updated_at = old
    await maybe(db.upsert_sessions([imported], preserve_updated_at=True))
    assert (await maybe(db.get_session("s1", deserialize=False)))["updated_at"] == old


@pytest.mark.parametrize(
    "db",
    impls(agno_xfail="agno's upsert_sessions swallows the error, returns [] and leaves a partial write"),
    indirect=True,
)
async def test_upsert_sessions_reports_errors(db: Any) -> None:
    """A bad item in upsert_sessions raises instead of silently returning an empty list."""
    with pytest.raises(Exception):  # noqa: B017, PT011 - agno raises nothing at all, which is the point
        await maybe(db.upsert_sessions([agent_session("ok"), object()]))


@pytest.mark.parametrize(
    "db", impls(agno_xfail="agno stores unencodable objects, which break any later persistence"), indirect=True
)
async def test_unencodable_session_is_rejected(db: Any) -> None:
    """A session holding a value that cannot become JSON is rejected by upsert_session, naming where it is."""
    from aiomemdb import SerializationError

    with pytest.raises(SerializationError) as info:
        await maybe(db.upsert_session(agent_session("s1", state={"bad": object()})))
    assert "session_state" in str(info.value)
    assert await maybe(db.get_session("s1")) is None


# ---------------------------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------------------------


async def test_upsert_run_appends_and_replaces(db: Any) -> None:
    """upsert_run appends new runs with their run_index and replaces by run_id keeping the original index."""
    await maybe(db.upsert_session(agent_session("s1")))
    before = (await maybe(db.get_session("s1", deserialize=False)))["updated_at"]
    await maybe(db.upsert_run(agent_run("r1", status=RunStatus.running), session_id="s1", run_index=0))
    await maybe(db.upsert_run(agent_run("r2"), session_id="s1", run_index=1))
    await maybe(db.upsert_run(agent_run("r1", content="final"), session_id="s1", run_index=7))
    row = await maybe(db.get_session("s1", deserialize=False))
    assert [(r["run_id"], r["run_index"]) for r in row["runs"]] == [("r1", 0), ("r2", 1)]
    assert row["runs"][0]["content"] == "final"
    assert row["runs"][0]["status"] == "COMPLETED"
    assert row["updated_at"] >= before


async def test_upsert_run_accepts_dicts(db: Any) -> None:
    """upsert_run takes a run dict as well as a run object; a run dict without run_id is refused."""
    await maybe(db.upsert_session(agent_session("s1")))
    await maybe(db.upsert_run(agent_run("r1").to_dict(), session_id="s1"))
    assert (await maybe(db.get_run("r1", deserialize=False)))["run_id"] == "r1"
    with pytest.raises(ValueError):  # noqa: PT011 - agno raises a bare ValueError
        await maybe(db.upsert_run({"content": "no id"}, session_id="s1"))


async def test_upsert_run_without_session_is_a_no_op(db: Any) -> None:
    """upsert_run for a session that does not exist writes nothing and raises nothing (as agno)."""
    await maybe(db.upsert_run(agent_run("r1"), session_id="nope"))
    assert await maybe(db.get_session("nope")) is None
    assert await maybe(db.get_run("r1")) is None


@pytest.mark.parametrize(
    "db",
    impls(agno_xfail="agno's upsert_run ignores user_id and writes into another user's session"),
    indirect=True,
)
async def test_upsert_run_owner_guard(db: Any) -> None:
    """upsert_run with another user's id cannot add a run to an owned session."""
    await maybe(db.upsert_session(agent_session("s1", user_id="alice")))
    with pytest.raises(PermissionError):
        await maybe(db.upsert_run(agent_run("r1"), session_id="s1", user_id="mallory"))
    assert await maybe(db.get_run("r1")) is None


async def test_upsert_run_isolation(db: Any) -> None:
    """A run dict the caller keeps mutating after upsert_run does not change the stored run."""
    await maybe(db.upsert_session(agent_session("s1")))
    run = agent_run("r1").to_dict()
    run["metadata"] = {"k": [1]}
    await maybe(db.upsert_run(run, session_id="s1"))
    run["metadata"]["k"].append(2)
    assert (await maybe(db.get_run("r1", deserialize=False)))["metadata"] == {"k": [1]}


async def test_get_run(db: Any) -> None:
    """get_run finds a run in any session, as the right run class or a dict, and None when missing."""
    await maybe(db.upsert_session(agent_session("s1", runs=[agent_run("r1")])))
    await maybe(db.upsert_session(team_session("t1", runs=[team_run("tr1", session_id="t1")])))
    await maybe(db.upsert_session(workflow_session("w1", runs=[workflow_run("wr1", session_id="w1")])))
    assert type(await maybe(db.get_run("r1"))).__name__ == "RunOutput"
    assert type(await maybe(db.get_run("tr1"))).__name__ == "TeamRunOutput"
    assert type(await maybe(db.get_run("wr1"))).__name__ == "WorkflowRunOutput"
    assert (await maybe(db.get_run("r1", deserialize=False)))["session_id"] == "s1"
    assert await maybe(db.get_run("missing")) is None


async def seed_runs(db: Any) -> None:
    """Two users' sessions with runs of two agents and mixed statuses."""
    await maybe(db.upsert_session(agent_session("s1", user_id="u1")))
    await maybe(db.upsert_session(agent_session("s2", user_id="u2", agent_id="agent-2")))
    base = now() - 100
    runs = [
        ("s1", agent_run("r1", session_id="s1", created_at=base + 1)),
        ("s1", agent_run("r2", session_id="s1", created_at=base + 2, status=RunStatus.error)),
        ("s2", agent_run("r3", session_id="s2", agent_id="agent-2", created_at=base + 3)),
        ("s1", agent_run("r4", session_id="s1", created_at=base + 4)),
    ]
    for i, (sid, run) in enumerate(runs):
        await maybe(db.upsert_run(run, session_id=sid, run_index=i))


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["r1", "r2", "r3", "r4"]),
        ({"session_id": "s1"}, ["r1", "r2", "r4"]),
        ({"user_id": "u2"}, ["r3"]),
        ({"agent_id": "agent-2"}, ["r3"]),
        ({"status": RunStatus.error}, ["r2"]),
        ({"status": "COMPLETED", "session_id": "s1"}, ["r1", "r4"]),
        ({"team_id": "team-1"}, []),
        ({"sort_by": "created_at", "sort_order": "desc"}, ["r4", "r3", "r2", "r1"]),
        ({"limit": 2, "page": 2}, ["r3", "r4"]),
        ({"limit": 3}, ["r1", "r2", "r3"]),
    ],
)
async def test_get_runs(db: Any, filters: dict[str, Any], expected: list[str]) -> None:
    """get_runs filters across sessions, orders by run_index by default, and paginates."""
    await seed_runs(db)
    rows, total = await maybe(db.get_runs(deserialize=False, **filters))
    assert [r["run_id"] for r in rows] == expected
    if "limit" not in filters:
        assert total == len(expected)
    objects = await maybe(db.get_runs(**filters))
    assert [r.run_id for r in objects] == expected


async def test_delete_run(db: Any) -> None:
    """delete_run removes one run from its session and reports whether it existed."""
    await seed_runs(db)
    assert await maybe(db.delete_run("r2")) is True
    assert await maybe(db.delete_run("r2")) is False
    row = await maybe(db.get_session("s1", deserialize=False))
    assert [r["run_id"] for r in row["runs"]] == ["r1", "r4"]


async def test_delete_runs(db: Any) -> None:
    """delete_runs removes every listed run across sessions and ignores unknown ids."""
    await seed_runs(db)
    await maybe(db.delete_runs(["r1", "r3", "unknown"]))
    await maybe(db.delete_runs([]))
    rows, total = await maybe(db.get_runs(deserialize=False))
    assert [r["run_id"] for r in rows] == ["r2", "r4"]
    assert total == 2


# ---------------------------------------------------------------------------------------------------------------
# Memories
# ---------------------------------------------------------------------------------------------------------------


async def seed_memories(db: Any) -> None:
    """Four memories of two users with topics, agents and distinct updated_at order."""
    memories = [
        UserMemory(memory="Likes green tea", memory_id="m1", user_id="u1", topics=["food"], agent_id="a1"),
        UserMemory(memory="Lives in Paris", memory_id="m2", user_id="u1", topics=["location"], team_id="t1"),
        UserMemory(memory="Plays chess", memory_id="m3", user_id="u2", topics=["hobbies", "games"]),
        UserMemory(memory="Shared fact", memory_id="m4", topics=["food", "misc"]),
    ]
    for m in memories:
        await maybe(db.upsert_user_memory(m))


async def test_upsert_user_memory_round_trip(db: Any) -> None:
    """A memory comes back as UserMemory (or its dict) with an id generated when missing and updated_at set."""
    memory = UserMemory(memory="Likes tea", user_id="u1", topics=["food"])
    out = await maybe(db.upsert_user_memory(memory))
    assert isinstance(out, UserMemory)
    assert out.memory_id is not None
    assert out.updated_at is not None
    assert memory.memory_id == out.memory_id  # agno assigns the id on the caller's object
    got = await maybe(db.get_user_memory(out.memory_id))
    assert got.memory == "Likes tea"
    assert got.topics == ["food"]
    assert got.user_id == "u1"
    row = await maybe(db.get_user_memory(out.memory_id, deserialize=False))
    assert isinstance(row, dict)
    assert row["memory_id"] == out.memory_id
    assert isinstance(row["updated_at"], int)
    as_dict = await maybe(db.upsert_user_memory(UserMemory(memory="x", memory_id="m9"), deserialize=False))
    assert isinstance(as_dict, dict)
    assert as_dict["memory_id"] == "m9"


async def test_upsert_user_memory_replaces(db: Any, kind: str) -> None:
    """Upserting an existing memory_id replaces it; unsorted listings follow first (agno) or last (ours) write.

    Ours lists a collection in last-write order, the order it reloads in after a restart; agno keeps the
    position of the first write. Neither is a documented order: callers that care pass sort_by.
    """
    await seed_memories(db)
    await maybe(db.upsert_user_memory(UserMemory(memory="Lives in Rome", memory_id="m2", user_id="u1")))
    rows, total = await maybe(db.get_user_memories(deserialize=False))
    expected = ["m1", "m2", "m3", "m4"] if kind == "agno" else ["m1", "m3", "m4", "m2"]
    assert [r["memory_id"] for r in rows] == expected
    assert total == 4
    assert next(r for r in rows if r["memory_id"] == "m2")["memory"] == "Lives in Rome"


async def test_memory_isolation(db: Any) -> None:
    """Mutating a memory's topics after upsert, or a returned memory, never changes the stored one."""
    memory = UserMemory(memory="x", memory_id="m1", topics=["a"])
    await maybe(db.upsert_user_memory(memory))
    memory.topics.append("b")
    got = await maybe(db.get_user_memory("m1"))
    got.topics.append("c")
    assert (await maybe(db.get_user_memory("m1"))).topics == ["a"]
    assert await maybe(db.get_all_memory_topics()) == ["a"]


async def test_get_user_memory_owner_filter(db: Any) -> None:
    """get_user_memory with another user's id returns None."""
    await seed_memories(db)
    assert await maybe(db.get_user_memory("m1", user_id="u2")) is None
    assert (await maybe(db.get_user_memory("m1", user_id="u1"))).memory_id == "m1"
    assert await maybe(db.get_user_memory("nope")) is None


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["m1", "m2", "m3", "m4"]),
        ({"user_id": "u1"}, ["m1", "m2"]),
        ({"agent_id": "a1"}, ["m1"]),
        ({"team_id": "t1"}, ["m2"]),
        ({"topics": ["food"]}, ["m1", "m4"]),
        ({"topics": ["games", "location"]}, ["m2", "m3"]),
        ({"search_content": "PARIS"}, ["m2"]),
        ({"user_id": "u1", "topics": ["hobbies"]}, []),
        ({"sort_by": "memory_id", "sort_order": "desc"}, ["m4", "m3", "m2", "m1"]),
        ({"sort_by": "memory_id", "sort_order": "asc", "limit": 2, "page": 2}, ["m3", "m4"]),
        ({"limit": 3}, ["m1", "m2", "m3"]),
    ],
)
async def test_get_user_memories(db: Any, filters: dict[str, Any], expected: list[str]) -> None:
    """get_user_memories filters by user, agent, team, any topic and content, sorts and paginates."""
    await seed_memories(db)
    rows, total = await maybe(db.get_user_memories(deserialize=False, **filters))
    assert [r["memory_id"] for r in rows] == expected
    if "limit" not in filters:
        assert total == len(expected)
    objects = await maybe(db.get_user_memories(**filters))
    assert [m.memory_id for m in objects] == expected
    assert all(isinstance(m, UserMemory) for m in objects)


async def test_get_all_memory_topics(db: Any) -> None:
    """get_all_memory_topics lists each topic once, for everyone or one user."""
    await seed_memories(db)
    assert sorted(await maybe(db.get_all_memory_topics())) == ["food", "games", "hobbies", "location", "misc"]
    assert sorted(await maybe(db.get_all_memory_topics(user_id="u1"))) == ["food", "location"]


async def test_get_user_memory_stats(db: Any) -> None:
    """Stats count memories per user (unowned ones excluded), most recently updated first, paginated."""
    await seed_memories(db)
    stats, total = await maybe(db.get_user_memory_stats())
    assert total == 2
    assert {s["user_id"]: s["total_memories"] for s in stats} == {"u1": 2, "u2": 1}
    assert all(isinstance(s["last_memory_updated_at"], int) for s in stats)
    page, total = await maybe(db.get_user_memory_stats(limit=1, page=2))
    assert total == 2
    assert len(page) == 1
    only, total = await maybe(db.get_user_memory_stats(user_id="u2"))
    assert [s["user_id"] for s in only] == ["u2"]
    assert total == 1


async def test_delete_user_memory(db: Any) -> None:
    """delete_user_memory removes a memory, but not another user's when user_id is given."""
    await seed_memories(db)
    await maybe(db.delete_user_memory("m1", user_id="u2"))
    assert await maybe(db.get_user_memory("m1")) is not None
    await maybe(db.delete_user_memory("m1", user_id="u1"))
    await maybe(db.delete_user_memory("m3"))
    await maybe(db.delete_user_memory("missing"))
    rows, _ = await maybe(db.get_user_memories(deserialize=False))
    assert [r["memory_id"] for r in rows] == ["m2", "m4"]


async def test_delete_user_memories(db: Any) -> None:
    """delete_user_memories removes the listed memories, only the user's own when user_id is given."""
    await seed_memories(db)
    await maybe(db.delete_user_memories(["m1", "m3"], user_id="u1"))
    rows, _ = await maybe(db.get_user_memories(deserialize=False))
    assert [r["memory_id"] for r in rows] == ["m2", "m3", "m4"]
    await maybe(db.delete_user_memories(["m3", "m4"]))
    rows, _ = await maybe(db.get_user_memories(deserialize=False))
    assert [r["memory_id"] for r in rows] == ["m2"]


async def test_clear_memories(db: Any) -> None:
    """clear_memories removes every memory and nothing else."""
    await seed_memories(db)
    await maybe(db.upsert_session(agent_session("s1")))
    await maybe(db.clear_memories())
    assert await maybe(db.get_user_memories()) == []
    assert await maybe(db.get_session("s1")) is not None


async def test_upsert_memories_bulk(db: Any) -> None:
    """upsert_memories stores a batch and returns what it stored."""
    if not hasattr(db, "upsert_memories"):
        pytest.skip("AsyncBaseDb does not declare upsert_memories")
    out = await maybe(db.upsert_memories([UserMemory(memory="a", memory_id="x1"), UserMemory(memory="b")]))
    assert [m.memory for m in out] == ["a", "b"]
    rows = await maybe(db.upsert_memories([UserMemory(memory="c", memory_id="x3")], deserialize=False))
    assert rows[0]["memory_id"] == "x3"
    assert len(await maybe(db.get_user_memories())) == 3
    assert await maybe(db.upsert_memories([])) == []


@pytest.mark.parametrize(
    "db", impls(agno_xfail="agno's upsert_memories ignores preserve_updated_at and stamps now"), indirect=True
)
async def test_upsert_memories_preserve_updated_at(db: Any) -> None:
    """preserve_updated_at=True keeps the updated_at an imported memory carries."""
    old = now() - 3600
    await maybe(db.upsert_memories([UserMemory(memory="a", memory_id="x1", updated_at=old)], preserve_updated_at=True))
    assert (await maybe(db.get_user_memory("x1", deserialize=False)))["updated_at"] == old


# ---------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------


async def seed_metric_sessions(db: Any) -> None:
    """Sessions created today for two users and one unowned, with runs and token metrics."""
    metrics = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
    run = agent_run("r1")
    run.model, run.model_provider = "offline-1", "Offline"
    s1 = agent_session("s1", user_id="u1", runs=[run])
    s1.session_data["session_metrics"] = metrics
    s2 = agent_session("s2", user_id="u2")
    s2.session_data["session_metrics"] = metrics
    await maybe(db.upsert_session(s1))
    await maybe(db.upsert_session(s2))
    await maybe(db.upsert_session(team_session("t1", runs=[team_run("tr1", session_id="t1")])))


async def test_calculate_metrics_without_sessions(db: Any) -> None:
    """calculate_metrics with no sessions computes nothing and returns None."""
    assert await maybe(db.calculate_metrics()) is None
    assert await maybe(db.get_metrics()) == ([], None)


async def test_calculate_and_get_metrics(db: Any) -> None:
    """Metrics are bucketed per user per day, unowned sessions under user_id None, and read back by user."""
    await seed_metric_sessions(db)
    records = await maybe(db.calculate_metrics())
    today = datetime.now(UTC).date().isoformat()
    by_user = {r["user_id"]: r for r in records}
    assert set(by_user) == {"u1", "u2", ""}
    assert by_user["u1"]["agent_sessions_count"] == 1
    assert by_user["u1"]["agent_runs_count"] == 1
    assert by_user["u1"]["token_metrics"]["total_tokens"] == 15
    assert by_user["u1"]["model_metrics"] == [{"model_id": "offline-1", "model_provider": "Offline", "count": 1}]
    assert by_user[""]["team_sessions_count"] == 1
    assert by_user[""]["users_count"] == 0
    assert all(r["date"] == today and r["aggregation_period"] == "daily" for r in records)

    rows, latest = await maybe(db.get_metrics())
    assert {r["user_id"] for r in rows} == {"u1", "u2", None}
    assert latest is not None
    rows, _ = await maybe(db.get_metrics(user_id="u2"))
    assert [r["user_id"] for r in rows] == ["u2"]
    rows, _ = await maybe(db.get_metrics(user_id=""))
    assert [r["user_id"] for r in rows] == [None]
    yesterday = date.today() - timedelta(days=3)
    assert (await maybe(db.get_metrics(ending_date=yesterday)))[0] == []
    assert len((await maybe(db.get_metrics(starting_date=yesterday)))[0]) == 3


async def test_recalculating_metrics_replaces_records(db: Any) -> None:
    """Calculating metrics again for the same day replaces that day's records instead of adding more."""
    await seed_metric_sessions(db)
    await maybe(db.calculate_metrics())
    await maybe(db.upsert_session(agent_session("s3", user_id="u1")))
    await maybe(db.calculate_metrics())
    rows, _ = await maybe(db.get_metrics(user_id="u1"))
    assert len(rows) == 1
    assert rows[0]["agent_sessions_count"] == 2


# ---------------------------------------------------------------------------------------------------------------
# Knowledge
# ---------------------------------------------------------------------------------------------------------------


def knowledge(kid: str, *, user_id: str | None = None, linked_to: str | None = None, size: int = 1) -> KnowledgeRow:
    return KnowledgeRow(id=kid, name=f"doc {kid}", description="d", user_id=user_id, linked_to=linked_to, size=size)


async def seed_knowledge(db: Any) -> None:
    """A shared row and rows of two users, linked to two knowledge bases."""
    for row in (
        knowledge("k1", linked_to="kb1", size=3),
        knowledge("k2", user_id="u1", linked_to="kb1", size=1),
        knowledge("k3", user_id="u2", linked_to="kb2", size=2),
    ):
        await maybe(db.upsert_knowledge_content(row))


async def test_knowledge_round_trip(db: Any) -> None:
    """upsert_knowledge_content returns the row and get_knowledge_content reads it back as a KnowledgeRow."""
    row = knowledge("k1", user_id="u1")
    out = await maybe(db.upsert_knowledge_content(row))
    assert out.id == "k1"
    got = await maybe(db.get_knowledge_content("k1"))
    assert isinstance(got, KnowledgeRow)
    assert got.name == "doc k1"
    assert got.user_id == "u1"
    assert await maybe(db.get_knowledge_content("missing")) is None


async def test_knowledge_visibility(db: Any) -> None:
    """A user sees their own rows and shared rows, never another user's."""
    await seed_knowledge(db)
    assert (await maybe(db.get_knowledge_content("k1", user_id="u1"))) is not None
    assert (await maybe(db.get_knowledge_content("k2", user_id="u1"))) is not None
    assert await maybe(db.get_knowledge_content("k3", user_id="u1")) is None
    rows, total = await maybe(db.get_knowledge_contents(user_id="u1"))
    assert [r.id for r in rows] == ["k1", "k2"]
    assert total == 2


@pytest.mark.parametrize(
    ("kwargs", "expected", "total"),
    [
        ({}, ["k1", "k2", "k3"], 3),
        ({"linked_to": "kb1"}, ["k1", "k2"], 2),
        ({"sort_by": "size", "sort_order": "asc"}, ["k2", "k3", "k1"], 3),
        ({"sort_by": "size", "sort_order": "desc", "limit": 2, "page": 1}, ["k1", "k3"], 3),
        ({"limit": 2, "page": 2}, ["k3"], 3),
    ],
)
async def test_get_knowledge_contents(db: Any, kwargs: dict[str, Any], expected: list[str], total: int) -> None:
    """get_knowledge_contents filters by linked_to, sorts, paginates and returns (rows, total)."""
    await seed_knowledge(db)
    rows, count = await maybe(db.get_knowledge_contents(**kwargs))
    assert [r.id for r in rows] == expected
    assert count == total


async def test_knowledge_scoped_write_guard(db: Any) -> None:
    """A scoped upsert cannot overwrite another user's or a shared row; the owner and unscoped writes can."""
    await seed_knowledge(db)
    with pytest.raises(ValueError, match="not found"):
        await maybe(db.upsert_knowledge_content(knowledge("k3", user_id="u1")))
    with pytest.raises(ValueError, match="not found"):
        await maybe(db.upsert_knowledge_content(knowledge("k1", user_id="u1")))
    await maybe(db.upsert_knowledge_content(knowledge("k2", user_id="u1", size=9)))
    assert (await maybe(db.get_knowledge_content("k2"))).size == 9
    await maybe(db.upsert_knowledge_content(knowledge("k1", size=7)))
    assert (await maybe(db.get_knowledge_content("k1"))).size == 7


@pytest.mark.parametrize(
    "db",
    impls(agno_xfail="agno lets an unscoped write strip a row's owner, turning a private document shared"),
    indirect=True,
)
async def test_knowledge_unscoped_write_keeps_owner(db: Any) -> None:
    """An unscoped upsert without user_id cannot silently make another user's row shared."""
    await seed_knowledge(db)
    with pytest.raises(PermissionError):
        await maybe(db.upsert_knowledge_content(knowledge("k3", size=7)))
    assert (await maybe(db.get_knowledge_content("k3"))).user_id == "u2"


async def test_delete_knowledge_content(db: Any) -> None:
    """A scoped delete removes only the user's own rows; shared rows go only through an unscoped delete."""
    await seed_knowledge(db)
    await maybe(db.delete_knowledge_content("k1", user_id="u1"))
    await maybe(db.delete_knowledge_content("k3", user_id="u1"))
    await maybe(db.delete_knowledge_content("k2", user_id="u1"))
    rows, _ = await maybe(db.get_knowledge_contents())
    assert [r.id for r in rows] == ["k1", "k3"]
    await maybe(db.delete_knowledge_content("k1"))
    rows, _ = await maybe(db.get_knowledge_contents())
    assert [r.id for r in rows] == ["k3"]


# ---------------------------------------------------------------------------------------------------------------
# Evals
# ---------------------------------------------------------------------------------------------------------------


def eval_record(run_id: str, **kw: Any) -> EvalRunRecord:
    return EvalRunRecord(run_id=run_id, eval_type=kw.pop("eval_type", EvalType.ACCURACY), eval_data={"score": 1}, **kw)


async def seed_evals(db: Any) -> None:
    """Three eval runs of different kinds; EvalRunRecord has no user_id, so owners are set afterwards."""
    for rec in (
        eval_record("e1", agent_id="a1", model_id="m1", name="first"),
        eval_record("e2", team_id="t1", eval_type=EvalType.PERFORMANCE),
        eval_record("e3", workflow_id="w1", eval_type=EvalType.RELIABILITY, model_id="m1"),
    ):
        await maybe(db.create_eval_run(rec))
    await maybe(db.update_eval_run_user_id("e1", "u1"))
    await maybe(db.update_eval_run_user_id("e2", "u2"))


async def test_eval_round_trip(db: Any) -> None:
    """create_eval_run returns the record and get_eval_run reads it back (object or dict) with timestamps."""
    out = await maybe(db.create_eval_run(eval_record("e1", agent_id="a1")))
    assert out.run_id == "e1"
    got = await maybe(db.get_eval_run("e1"))
    assert isinstance(got, EvalRunRecord)
    assert got.agent_id == "a1"
    assert got.eval_type == EvalType.ACCURACY
    row = await maybe(db.get_eval_run("e1", deserialize=False))
    assert row["eval_type"] == "accuracy"
    assert isinstance(row["created_at"], int)
    assert await maybe(db.get_eval_run("missing")) is None


async def test_get_eval_run_owner_filter(db: Any) -> None:
    """get_eval_run with another user's id returns None."""
    await seed_evals(db)
    assert await maybe(db.get_eval_run("e1", user_id="u2")) is None
    assert (await maybe(db.get_eval_run("e1", user_id="u1"))).run_id == "e1"


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"sort_by": "run_id", "sort_order": "asc"}, ["e1", "e2", "e3"]),
        ({"agent_id": "a1"}, ["e1"]),
        ({"team_id": "t1"}, ["e2"]),
        ({"workflow_id": "w1"}, ["e3"]),
        ({"model_id": "m1", "sort_by": "run_id", "sort_order": "asc"}, ["e1", "e3"]),
        ({"user_id": "u2"}, ["e2"]),
        ({"eval_type": [EvalType.PERFORMANCE, EvalType.RELIABILITY], "sort_by": "run_id"}, ["e3", "e2"]),
        ({"filter_type": EvalFilterType.AGENT}, ["e1"]),
        ({"filter_type": EvalFilterType.TEAM}, ["e2"]),
        ({"filter_type": EvalFilterType.WORKFLOW}, ["e3"]),
        ({"sort_by": "run_id", "sort_order": "asc", "limit": 2, "page": 2}, ["e3"]),
    ],
)
async def test_get_eval_runs(db: Any, filters: dict[str, Any], expected: list[str]) -> None:
    """get_eval_runs filters by component, model, user, eval type and filter type, sorts and paginates."""
    await seed_evals(db)
    rows, total = await maybe(db.get_eval_runs(deserialize=False, **filters))
    assert [r["run_id"] for r in rows] == expected
    if "limit" not in filters:
        assert total == len(expected)
    objects = await maybe(db.get_eval_runs(**filters))
    assert [r.run_id for r in objects] == expected


async def test_rename_eval_run(db: Any) -> None:
    """rename_eval_run renames the run, refuses another user's, and returns None for a missing one."""
    await seed_evals(db)
    assert await maybe(db.rename_eval_run("e1", "x", user_id="u2")) is None
    out = await maybe(db.rename_eval_run("e1", "renamed"))
    assert out.name == "renamed"
    row = await maybe(db.rename_eval_run("e1", "again", deserialize=False))
    assert row["name"] == "again"
    assert (await maybe(db.get_eval_run("e1"))).name == "again"
    assert await maybe(db.rename_eval_run("missing", "x")) is None


async def test_delete_eval_runs(db: Any) -> None:
    """delete_eval_runs removes the listed runs, only the user's own when user_id is given."""
    await seed_evals(db)
    await maybe(db.delete_eval_runs(["e1", "e2"], user_id="u1"))
    rows, _ = await maybe(db.get_eval_runs(deserialize=False, sort_by="run_id", sort_order="asc"))
    assert [r["run_id"] for r in rows] == ["e2", "e3"]
    await maybe(db.delete_eval_runs(["e2", "e3"]))
    assert await maybe(db.get_eval_runs()) == []


async def test_update_eval_run_user_id(db: Any) -> None:
    """update_eval_run_user_id sets the owner of an existing eval run."""
    await seed_evals(db)
    await maybe(db.update_eval_run_user_id("e3", "u9"))
    await maybe(db.update_eval_run_user_id("missing", "u9"))
    assert (await maybe(db.get_eval_run("e3", user_id="u9"))).run_id == "e3"


# ---------------------------------------------------------------------------------------------------------------
# Traces and spans (agno's InMemoryDb raises NotImplementedError; semantics follow agno's JsonDb)
# ---------------------------------------------------------------------------------------------------------------


def _trace(trace_id: str, *, start: datetime, name: str = "Agent.run", **kw: Any) -> Any:
    from agno.tracing.schemas import Trace

    fields: dict[str, Any] = {
        "run_id": None,
        "session_id": None,
        "user_id": None,
        "agent_id": None,
        "team_id": None,
        "workflow_id": None,
        "status": "OK",
    }
    fields.update(kw)
    return Trace(
        trace_id=trace_id,
        name=name,
        start_time=start,
        end_time=start + timedelta(seconds=1),
        duration_ms=1000,
        total_spans=0,
        error_count=0,
        created_at=start,
        **fields,
    )


def _span(span_id: str, trace_id: str, *, parent: str | None = None, status: str = "OK") -> Any:
    from agno.tracing.schemas import Span

    t = datetime(2030, 1, 1, tzinfo=UTC)
    return Span(
        span_id=span_id,
        trace_id=trace_id,
        parent_span_id=parent,
        name=f"span {span_id}",
        span_kind="INTERNAL",
        status_code=status,
        status_message=None,
        start_time=t,
        end_time=t + timedelta(milliseconds=5),
        duration_ms=5,
        attributes={"k": span_id},
        created_at=t,
    )


@pytest.fixture
def tracing() -> None:
    """Traces and spans are built from agno.tracing.schemas, which needs opentelemetry."""
    pytest.importorskip("opentelemetry.sdk", reason="opentelemetry-sdk is not installed (agno's tracing needs it)")


async def seed_traces(db: Any) -> datetime:
    base = datetime(2030, 1, 1, tzinfo=UTC)
    await maybe(db.upsert_trace(_trace("t1", start=base, run_id="r1", session_id="s1", user_id="u1", agent_id="a1")))
    await maybe(
        db.upsert_trace(_trace("t2", start=base + timedelta(minutes=1), session_id="s1", team_id="tm", status="ERROR"))
    )
    await maybe(db.upsert_trace(_trace("t3", start=base + timedelta(minutes=2), session_id="s2", user_id="u2")))
    await maybe(db.create_spans([_span("p1", "t1"), _span("c1", "t1", parent="p1", status="ERROR")]))
    await maybe(db.create_span(_span("c2", "t1", parent="p1")))
    return base


@pytest.mark.usefixtures("tracing")
@pytest.mark.parametrize("db", impls(agno_xfail=NO_TRACES, agno_raises=NotImplementedError), indirect=True)
async def test_trace_round_trip_and_span_counts(db: Any) -> None:
    """get_trace finds a trace by trace_id or run_id and counts its spans and errors."""
    await seed_traces(db)
    trace = await maybe(db.get_trace(trace_id="t1"))
    assert trace.trace_id == "t1"
    assert trace.total_spans == 3
    assert trace.error_count == 1
    assert (await maybe(db.get_trace(run_id="r1"))).trace_id == "t1"
    assert await maybe(db.get_trace(trace_id="missing")) is None


@pytest.mark.usefixtures("tracing")
@pytest.mark.parametrize("db", impls(agno_xfail=NO_TRACES, agno_raises=NotImplementedError), indirect=True)
async def test_upsert_trace_merges(db: Any) -> None:
    """Upserting a known trace extends its end, keeps set context fields, fills blank ones, and prefers root names."""
    base = await seed_traces(db)
    update = _trace(
        "t2",
        start=base + timedelta(minutes=5),
        name="Workflow.run",
        session_id="other",
        user_id="u7",
        team_id="tm",
        workflow_id="wf",
        status="OK",
    )
    await maybe(db.upsert_trace(update))
    trace = await maybe(db.get_trace(trace_id="t2"))
    assert trace.session_id == "s1"
    assert trace.user_id == "u7"
    assert trace.status == "OK"
    assert trace.name == "Workflow.run"
    assert trace.duration_ms == 4 * 60 * 1000 + 1000  # from the stored start (minute 1) to the new end


@pytest.mark.usefixtures("tracing")
@pytest.mark.parametrize("db", impls(agno_xfail=NO_TRACES, agno_raises=NotImplementedError), indirect=True)
async def test_get_traces(db: Any) -> None:
    """get_traces filters, orders newest first and paginates, with the total of all matches."""
    base = await seed_traces(db)
    traces, total = await maybe(db.get_traces())
    assert [t.trace_id for t in traces] == ["t3", "t2", "t1"]
    assert total == 3
    traces, total = await maybe(db.get_traces(session_id="s1"))
    assert [t.trace_id for t in traces] == ["t2", "t1"]
    assert total == 2
    traces, _ = await maybe(db.get_traces(status="ERROR"))
    assert [t.trace_id for t in traces] == ["t2"]
    traces, _ = await maybe(db.get_traces(start_time=base + timedelta(seconds=30)))
    assert [t.trace_id for t in traces] == ["t3", "t2"]
    traces, total = await maybe(db.get_traces(limit=1, page=2))
    assert [t.trace_id for t in traces] == ["t2"]
    assert total == 3


@pytest.mark.usefixtures("tracing")
@pytest.mark.parametrize("db", impls(agno_xfail=NO_TRACES, agno_raises=NotImplementedError), indirect=True)
async def test_get_trace_stats(db: Any) -> None:
    """get_trace_stats groups traces by session, most recent first; other groupings are not supported."""
    await seed_traces(db)
    stats, total = await maybe(db.get_trace_stats())
    assert total == 2
    assert [(s["session_id"], s["total_traces"]) for s in stats] == [("s2", 1), ("s1", 2)]
    assert isinstance(stats[0]["first_trace_at"], datetime)
    stats, total = await maybe(db.get_trace_stats(user_id="u1"))
    assert [s["session_id"] for s in stats] == ["s1"]
    assert total == 1
    with pytest.raises(NotImplementedError):
        await maybe(db.get_trace_stats(group_by="agent"))


@pytest.mark.usefixtures("tracing")
@pytest.mark.parametrize("db", impls(agno_xfail=NO_TRACES, agno_raises=NotImplementedError), indirect=True)
async def test_spans(db: Any) -> None:
    """Spans read back one by one and filtered by trace and parent, in insertion order, up to a limit."""
    await seed_traces(db)
    span = await maybe(db.get_span("c1"))
    assert span.parent_span_id == "p1"
    assert span.attributes == {"k": "c1"}
    assert await maybe(db.get_span("missing")) is None
    assert [s.span_id for s in await maybe(db.get_spans(trace_id="t1"))] == ["p1", "c1", "c2"]
    assert [s.span_id for s in await maybe(db.get_spans(parent_span_id="p1"))] == ["c1", "c2"]
    assert [s.span_id for s in await maybe(db.get_spans(trace_id="t1", limit=1))] == ["p1"]
    assert await maybe(db.get_spans(trace_id="t2")) == []


# ---------------------------------------------------------------------------------------------------------------
# Learnings (agno's InMemoryDb raises NotImplementedError; semantics follow agno's SqliteDb)
# ---------------------------------------------------------------------------------------------------------------


async def seed_learnings(db: Any) -> None:
    """Four learnings of two types and two users, written in order (later ones updated later)."""
    await maybe(db.upsert_learning("l1", "user_profile", {"name": "Sarah Chen"}, user_id="u1", agent_id="a1"))
    await maybe(
        db.upsert_learning("l2", "user_memory", {"fact": "likes multi-tenant setups"}, user_id="u1", namespace="user")
    )
    await maybe(
        db.upsert_learning(
            "l3", "entity_memory", {"entity": "Acme"}, entity_id="acme", entity_type="company", namespace="global"
        )
    )
    await maybe(
        db.upsert_learning(
            "l4", "user_profile", {"name": "Bob"}, user_id="u2", session_id="s9", team_id="t1", metadata={"src": "x"}
        )
    )


@pytest.mark.parametrize("db", impls(agno_xfail=NO_LEARNINGS, agno_raises=NotImplementedError), indirect=True)
async def test_learning_upsert_and_get(db: Any) -> None:
    """get_learning returns {"content": ...} for the first match of its filters, None when nothing matches."""
    await seed_learnings(db)
    assert await maybe(db.get_learning("user_profile", user_id="u1")) == {"content": {"name": "Sarah Chen"}}
    assert await maybe(db.get_learning("entity_memory", entity_id="acme", entity_type="company")) == {
        "content": {"entity": "Acme"}
    }
    assert await maybe(db.get_learning("user_profile", user_id="u3")) is None
    await maybe(db.upsert_learning("l1", "user_profile", {"name": "Sarah C."}, user_id="u1"))
    assert await maybe(db.get_learning("user_profile", user_id="u1")) == {"content": {"name": "Sarah C."}}


@pytest.mark.parametrize("db", impls(agno_xfail=NO_LEARNINGS, agno_raises=NotImplementedError), indirect=True)
async def test_get_learnings_and_by_id(db: Any) -> None:
    """get_learnings filters and returns full rows; get_learning_by_id reads one row by its id."""
    await seed_learnings(db)
    rows = await maybe(db.get_learnings(learning_type="user_profile"))
    assert {r["learning_id"] for r in rows} == {"l1", "l4"}
    assert [r["learning_id"] for r in await maybe(db.get_learnings(user_id="u1", namespace="user"))] == ["l2"]
    assert len(await maybe(db.get_learnings(limit=2))) == 2
    row = await maybe(db.get_learning_by_id("l4"))
    assert row["session_id"] == "s9"
    assert row["team_id"] == "t1"
    assert row["metadata"] == {"src": "x"}
    assert isinstance(row["created_at"], int)
    assert isinstance(row["updated_at"], int)
    assert await maybe(db.get_learning_by_id("missing")) is None


@pytest.mark.parametrize("db", impls(agno_xfail=NO_LEARNINGS, agno_raises=NotImplementedError), indirect=True)
async def test_delete_and_update_learning(db: Any) -> None:
    """delete_learning and update_learning report whether the row existed; update never inserts."""
    await seed_learnings(db)
    assert await maybe(db.delete_learning("l3")) is True
    assert await maybe(db.delete_learning("l3")) is False
    assert await maybe(db.update_learning("l3", {"x": 1})) is False
    assert await maybe(db.get_learning_by_id("l3")) is None
    assert await maybe(db.update_learning("l1", {"name": "S"}, metadata={"m": 1})) is True
    row = await maybe(db.get_learning_by_id("l1"))
    assert row["content"] == {"name": "S"}
    assert row["metadata"] == {"m": 1}
    assert row["user_id"] == "u1"


@pytest.mark.parametrize("db", impls(agno_xfail=NO_LEARNINGS, agno_raises=NotImplementedError), indirect=True)
async def test_delete_user_learnings(db: Any) -> None:
    """delete_user_learnings removes a user's learnings (optionally of one type) and returns how many."""
    await seed_learnings(db)
    assert await maybe(db.delete_user_learnings("u1", learning_type="user_memory")) == 1
    assert await maybe(db.delete_user_learnings("u1")) == 1
    assert await maybe(db.delete_user_learnings("u1")) == 0
    assert {r["learning_id"] for r in await maybe(db.get_learnings())} == {"l3", "l4"}


@pytest.mark.parametrize("db", impls(agno_xfail=NO_LEARNINGS, agno_raises=NotImplementedError), indirect=True)
async def test_search_learnings(db: Any) -> None:
    """search_learnings matches content case-insensitively across space, underscore and hyphen forms."""
    await seed_learnings(db)
    assert [r["learning_id"] for r in await maybe(db.search_learnings("sarah_chen"))] == ["l1"]
    assert [r["learning_id"] for r in await maybe(db.search_learnings("MULTI TENANT"))] == ["l2"]
    assert [r["learning_id"] for r in await maybe(db.search_learnings("bob", user_id="u1"))] == []
    assert await maybe(db.search_learnings("  %_ ")) == []


@pytest.mark.parametrize("db", impls(agno_xfail=NO_LEARNINGS, agno_raises=NotImplementedError), indirect=True)
async def test_list_learnings(db: Any) -> None:
    """list_learnings pages rows with a total, can include global rows for a user, and sorts."""
    await seed_learnings(db)
    rows, total = await maybe(db.list_learnings(user_id="u1"))
    assert {r["learning_id"] for r in rows} == {"l1", "l2"}
    assert total == 2
    rows, total = await maybe(db.list_learnings(user_id="u1", include_global=True))
    assert {r["learning_id"] for r in rows} == {"l1", "l2", "l3"}
    assert total == 3
    rows, total = await maybe(db.list_learnings(sort_by="learning_id", sort_order="asc", limit=3, page=2))
    assert [r["learning_id"] for r in rows] == ["l4"]
    assert total == 4


@pytest.mark.parametrize("db", impls(agno_xfail=NO_LEARNINGS, agno_raises=NotImplementedError), indirect=True)
async def test_get_learnings_user_stats(db: Any) -> None:
    """get_learnings_user_stats lists owners with their last update, excluding unowned learnings."""
    await seed_learnings(db)
    stats, total = await maybe(db.get_learnings_user_stats(sort_by="user_id", sort_order="asc"))
    assert [s["user_id"] for s in stats] == ["u1", "u2"]
    assert total == 2
    assert all(isinstance(s["last_learning_updated_at"], int) for s in stats)
    stats, total = await maybe(db.get_learnings_user_stats(learning_type="user_memory"))
    assert [s["user_id"] for s in stats] == ["u1"]
    assert total == 1


# ---------------------------------------------------------------------------------------------------------------
# Seed operations (SPEC §2) and to_dict
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("db", impls(agno_xfail=NO_SEED, agno_raises=AttributeError), indirect=True)
async def test_get_all_sessions(db: Any) -> None:
    """get_all_sessions returns every session as a Session object, or one user's."""
    await seed_sessions(db)
    assert {s.session_id for s in await maybe(db.get_all_sessions())} == {"a1", "a2", "a3", "t1", "w1"}
    assert {s.session_id for s in await maybe(db.get_all_sessions(user_id="u1"))} == {"a1", "a3", "t1"}


@pytest.mark.parametrize("db", impls(agno_xfail=NO_SEED, agno_raises=AttributeError), indirect=True)
async def test_get_recent_sessions(db: Any) -> None:
    """get_recent_sessions returns the most recently updated sessions first, two by default."""
    await seed_sessions(db)
    await maybe(db.upsert_session(agent_session("a1", user_id="u1", name="touched")))
    assert [s.session_id for s in await maybe(db.get_recent_sessions())] == ["a1", "w1"]
    assert [s.session_id for s in await maybe(db.get_recent_sessions(limit=3, user_id="u1"))] == ["a1", "t1", "a3"]


@pytest.mark.parametrize("db", impls(agno_xfail=NO_SEED, agno_raises=AttributeError), indirect=True)
async def test_drop(db: Any) -> None:
    """drop() removes every session and every other record."""
    await seed_sessions(db)
    await seed_memories(db)
    await maybe(db.drop())
    assert await maybe(db.get_all_sessions()) == []
    assert await maybe(db.get_user_memories()) == []


async def test_to_dict_names_tables(db: Any) -> None:
    """to_dict describes the database with its id and table names, as agno's BaseDb does."""
    data = db.to_dict()
    assert data["id"] == db.id
    assert data["session_table"] == "agno_sessions"


async def test_deepcopy_of_inputs_is_not_required(db: Any) -> None:
    """A session object saved twice in a row (as agno's agent does every run) stays consistent."""
    session = agent_session("s1", runs=[agent_run("r1")])
    await maybe(db.upsert_session(session))
    session.session_data["session_state"]["turn"] = 2
    await maybe(db.upsert_session(copy.copy(session)))
    assert (await maybe(db.get_session("s1"))).session_data["session_state"] == {"turn": 2}
