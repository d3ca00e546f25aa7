"""Adversarial tests of the Agno read path after 007b435: stored agent runs as two-attribute DeferredRunOutputs.

Every run here is read back through the real store (``aiomemdb.agno.InMemoryDb.get_session`` /
``get_sessions``, i.e. ``_session_parts`` -> ``decode_parts`` -> ``session_from_parts``), and compared with what
agno's own ``AgentSession.from_dict`` builds from the same stored row.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import threading
from typing import Any

import pytest

pytest.importorskip("agno", reason="agno is not installed")

import agno.run.agent as agno_run_agent
from agno.agent import Agent
from agno.db.base import SessionType
from agno.run.agent import RunOutput
from agno.run.base import RunStatus
from agno.session import AgentSession

from aiomemdb.agno import InMemoryDb
from aiomemdb.agno._deferred import DeferredRunOutput
from aiomemdb.agno.testing import OfflineModel

ODD_IDS = ["plain", 'q"uote', "back\\slash", "é-unicode", "日本", "tab\there", 'a","agent_id', "\u2028", "x" * 300]


def _expected(db: InMemoryDb, sid: str) -> AgentSession:
    row = db.get_session(sid, deserialize=False)
    assert row is not None
    exp = AgentSession.from_dict(copy.deepcopy(row))
    assert exp is not None
    return exp


@pytest.fixture(scope="module")
def agent_db() -> Any:
    """A store holding one realistic agent session (3 turns of a real Agent on the offline model, tool calls,
    metrics) and one session whose runs have awkward ids, every run written by the adapter."""
    db = InMemoryDb()
    agent = Agent(model=OfflineModel(reply_chars=200), db=db, add_history_to_context=True, user_id="ada",
                  enable_agentic_memory=True)  # fmt: skip
    for prompt in ("My name is Ada.", "What is 2+2?", "What was my first question?"):
        agent.run(prompt)
    real = agent.session_id
    runs = [RunOutput(run_id=rid, agent_id="a1", session_id="odd", content=f"c-{rid}", status=RunStatus.completed)
            for rid in ODD_IDS]  # fmt: skip
    db.upsert_session(AgentSession(session_id="odd", agent_id="a1", user_id="ada", runs=runs))
    yield db, real
    db.close()


def test_odd_run_ids_read_back_as_agnos_from_dict_builds_them(agent_db: Any) -> None:
    """Run ids with quotes, backslashes, non-ASCII, a fake ``","agent_id`` and 300 chars: the slice test must
    not misplace them; each read run has its own id, its own content, and the session equals from_dict's."""
    db, _ = agent_db
    session = db.get_session("odd")
    expected = _expected(db, "odd")
    assert [r.run_id for r in session.runs] == ODD_IDS
    assert [r.content for r in session.runs] == [f"c-{rid}" for rid in ODD_IDS]
    assert all(isinstance(r, RunOutput) for r in session.runs)
    assert session.to_dict() == expected.to_dict()
    assert session.runs == expected.runs


@pytest.mark.parametrize(
    "use",
    [copy.copy, copy.deepcopy, lambda r: pickle.loads(pickle.dumps(r)), lambda r: pickle.loads(pickle.dumps(r, 0)),
     dataclasses.asdict, dataclasses.astuple, lambda r: dataclasses.replace(r, content="changed")],
    ids=["copy", "deepcopy", "pickle", "pickle0", "asdict", "astuple", "replace"],
)  # fmt: skip
def test_generic_uses_of_a_freshly_read_run_see_the_whole_run(agent_db: Any, use: Any) -> None:
    """A run straight out of get_session (two attribute stores, nothing decoded) handed to copy, deepcopy,
    pickle (protocols 0 and 5), asdict, astuple and dataclasses.replace: the result is the whole run."""
    db, real = agent_db
    expected = _expected(db, real)
    for i, exp in enumerate(expected.runs):
        run = db.get_session(real).runs[i]
        assert type(run) is DeferredRunOutput
        assert set(vars(run)) == {"run_id", "_aiomemdb_raw"}
        out = use(run)
        fresh = copy.deepcopy(exp)
        if use is dataclasses.asdict:
            assert out == dataclasses.asdict(fresh)
        elif use is dataclasses.astuple:
            assert out == dataclasses.astuple(fresh)
        else:
            assert type(out) is RunOutput
            want = dataclasses.replace(fresh, content="changed") if out.content == "changed" else fresh
            assert out == want
            assert out.to_dict() == want.to_dict()


def test_repr_of_a_freshly_read_run_is_agnos_repr(agent_db: Any) -> None:
    """repr (logs, debuggers, snapshot tests) of a run straight out of get_session is the repr of the RunOutput
    agno's from_dict builds: the internal subclass must not show."""
    db, real = agent_db
    expected = _expected(db, real)
    for i, exp in enumerate(expected.runs):
        run = db.get_session(real).runs[i]
        assert repr(run) == repr(exp)


def test_equality_in_both_directions_and_against_other_types(agent_db: Any) -> None:
    """``==`` between two unread runs, an unread run and a built RunOutput (either side), and non-runs."""
    db, real = agent_db
    expected = _expected(db, real)
    a = db.get_session(real).runs
    b = db.get_session(real).runs
    c = db.get_session(real).runs
    for i, exp in enumerate(expected.runs):
        assert a[i] == b[i]
        assert exp == c[i]  # the built RunOutput on the left, the deferred subclass on the right
        assert db.get_session(real).runs[i] != None  # noqa: E711
        assert db.get_session(real).runs[i] != {"run_id": exp.run_id}
        assert db.get_session(real).runs[i] != RunOutput(run_id=exp.run_id)
    assert a[0] != a[1]


def test_reading_a_run_in_another_thread_than_the_one_that_read_the_session(agent_db: Any) -> None:
    """Sessions read in one thread, their runs' fields first read in four other threads at once (behind a
    barrier): every thread sees the same, whole, built run."""
    db, real = agent_db
    expected = _expected(db, real)
    for _ in range(10):
        session = db.get_session(real)
        barrier = threading.Barrier(4)
        seen: list[list[Any]] = []
        lock = threading.Lock()

        def reader(session: AgentSession = session, barrier: threading.Barrier = barrier) -> None:
            barrier.wait(30)
            got = [(r.status, r.messages, r.metrics, r.content) for r in session.runs]
            with lock:  # noqa: B023  (joined in this iteration)
                seen.append(got)  # noqa: B023

        threads = [threading.Thread(target=reader) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        assert len(seen) == 4
        for got in seen:
            assert [g[0] for g in got] == [r.status for r in expected.runs]
            assert [g[3] for g in got] == [r.content for r in expected.runs]
            for (_, messages, metrics, _), exp in zip(got, expected.runs, strict=True):
                assert [m.to_dict() for m in messages] == [m.to_dict() for m in exp.messages]
                assert metrics.to_dict() == exp.metrics.to_dict()
        assert all(a[1] is b[1] for a, b in zip(seen[0], seen[1], strict=True))  # one build, shared by the readers


def test_fields_set_before_the_first_read_survive_decode_and_build(agent_db: Any) -> None:
    """A reader that sets a plain field, a converted field and run_id itself before reading anything keeps all
    three; every other field is as stored."""
    db, real = agent_db
    expected = _expected(db, real).runs[-1]
    run = db.get_session(real).runs[-1]
    run.content = "mine"
    run.metrics = None
    run.run_id = "renamed"
    assert run.agent_id == expected.agent_id  # decode
    assert run.messages is not None  # build
    assert type(run) is RunOutput
    assert (run.content, run.metrics, run.run_id) == ("mine", None, "renamed")
    assert [m.to_dict() for m in run.messages] == [m.to_dict() for m in expected.messages]
    assert run.session_id == expected.session_id
    assert run.status == expected.status


def test_team_and_foreign_runs_inside_an_agent_session(agent_db: Any) -> None:
    """An agent session whose stored runs mix agent runs (keys in agno's order and not), a team run, a run
    with both ids, a run with neither, a cancelled run and a run with an escaped id: the read dispatches each as
    AgentSession.from_dict does, through get_session with and without session_type and through get_sessions."""
    db, _ = agent_db
    runs = [
        {"run_id": "a1", "agent_id": "x", "status": "COMPLETED", "content": "one"},
        {"agent_id": "x", "run_id": "a2", "content": "reordered"},
        {"run_id": "t1", "team_id": "team", "status": "COMPLETED", "content": "team"},
        {"run_id": "b1", "team_id": "team", "agent_id": "x"},
        {"run_id": "n1", "content": "neither"},
        {"run_id": "c1", "agent_id": "x", "status": "CANCELLED", "cancellation_stage": "model"},
        {"run_id": 'e"1', "agent_id": "x", "content": "escaped"},
        {"run_id": "a3", "agent_id": None, "content": "null agent"},
    ]
    for run in runs:  # a stored run has its created_at; a default is int(time()) per object, one second apart
        run["created_at"] = 1_700_000_000
    db.store.upsert_session({"session_id": "mixed", "session_type": "agent", "agent_id": "x", "runs": runs})
    expected = _expected(db, "mixed")
    for session in (db.get_session("mixed"), db.get_session("mixed", SessionType.AGENT)):
        assert [type(r).__name__.removeprefix("Deferred") for r in session.runs] == [
            type(r).__name__ for r in expected.runs
        ]
        assert session.to_dict() == expected.to_dict()
    listed = [s for s in db.get_sessions(SessionType.AGENT) if s.session_id == "mixed"]
    assert len(listed) == 1
    assert listed[0].to_dict() == expected.to_dict()


@pytest.mark.parametrize(
    "row",
    [
        {"session_id": "bare"},
        {"session_id": "bare", "session_type": "agent"},
        {"session_id": "bare", "session_type": "agent", "runs": None},
        {"session_id": "bare", "session_type": "agent", "runs": []},
        {"session_id": "bare", "session_type": "agent", "summary": None, "metadata": {"k": [1]},
         "runs": [{"run_id": "r", "agent_id": "x", "created_at": 1_700_000_000}]},
        {"session_id": "bare", "summary": {"summary": "s", "topics": ["t"]},
         "runs": [{"run_id": "r", "agent_id": "x", "created_at": 1_700_000_000}]},
    ],
    ids=["id-only", "typed", "runs-null", "runs-empty", "minimal-run", "summary-untyped"],
)  # fmt: skip
def test_rows_that_lack_fields_read_as_from_dict_reads_them(row: dict[str, Any]) -> None:
    """Rows written through the core with most fields missing (no runs key, runs null, runs empty, a run with only
    its ids, a summary dict, no session_type): the adapter's read equals agno's from_dict of the stored row."""
    with InMemoryDb() as db:
        db.store.upsert_session(row)
        expected = _expected(db, "bare")
        session = db.get_session("bare")
        assert type(session) is AgentSession
        assert session.to_dict() == expected.to_dict()
        assert vars(session).keys() == vars(expected).keys()
        assert [r.to_dict() for r in session.runs] == [r.to_dict() for r in expected.runs]


def test_a_build_interrupted_by_ctrl_c_is_not_silently_missing_fields_on_retry() -> None:
    """Ctrl-C (or any exception) inside the first build of a stored run: agno's from_dict pops keys from the
    dict it is given, and the deferred run keeps that half-consumed dict as pending. The next read must not
    return a run whose messages and metrics silently vanished: either it raises again or it is whole."""
    with InMemoryDb() as db:
        run = RunOutput(run_id="r", agent_id="a", session_id="s", content="c", status=RunStatus.completed)
        Message, RunMetrics = agno_run_agent.Message, agno_run_agent.RunMetrics

        run.messages = [Message(role="user", content="hello"), Message(role="assistant", content="hi")]
        run.metrics = RunMetrics(input_tokens=3, output_tokens=5)
        db.upsert_session(AgentSession(session_id="s", agent_id="a", runs=[run]))
        stored = db.get_session("s").runs[0]
        original = agno_run_agent.RunMetrics.from_dict
        calls = 0

        def interrupted_once(data: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise KeyboardInterrupt  # as a SIGINT landing inside from_dict would
            return original(data)

        agno_run_agent.RunMetrics.from_dict = interrupted_once  # type: ignore[method-assign]
        try:
            with pytest.raises(KeyboardInterrupt):
                stored.messages  # noqa: B018  # the first build
            try:
                messages = stored.messages
            except KeyboardInterrupt:  # pragma: no cover - raising again would be acceptable
                return
        finally:
            agno_run_agent.RunMetrics.from_dict = original  # type: ignore[method-assign]
        assert messages is not None
        assert [m.content for m in messages] == ["hello", "hi"]
        assert stored.metrics is not None
        assert stored.metrics.input_tokens == 3


def test_a_deferred_run_made_by_its_own_class_compares_without_recursion(agent_db: Any) -> None:
    """``type(run)(...)`` / ``dataclasses.replace`` with every converted field given make a DeferredRunOutput
    that was never encoded; comparing it must not recurse forever (RunOutput's == returns a bool)."""
    db, real = agent_db
    run = db.get_session(real).runs[0]
    made = type(run)(run_id="made", agent_id="a")
    assert (made == RunOutput(run_id="made", agent_id="a")) is True
    assert made.run_id == "made"
