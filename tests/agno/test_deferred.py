"""History runs built on first use (``_deferred``): the same objects agno's ``from_dict`` builds, the reader's own."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import threading
from typing import Any

import orjson
import pytest

pytest.importorskip("agno", reason="agno is not installed (pip install 'aiomemdb[agno]')")

from agno.agent import Agent
from agno.run.agent import RunOutput
from agno.run.base import RunStatus
from agno.session import AgentSession

from aiomemdb.agno import InMemoryDb
from aiomemdb.agno._deferred import (
    DeferredRunOutput,
    _is_agent_run,
    deferred_run,
    encoded_run,
    session_from_parts,
    to_agent_session,
)
from aiomemdb.agno.testing import OfflineModel

PROMPTS = ("My name is Ada and I live in Lisbon.", "What is the capital of France?", "What was my first question?")


@pytest.fixture(scope="module")
def stored_runs() -> list[bytes]:
    """The runs of a real offline agent session (a memory tool call, history, metrics), as stored JSON."""
    with InMemoryDb() as db:
        agent = Agent(model=OfflineModel(reply_chars=300), db=db, add_history_to_context=True, user_id="ada",
                      enable_agentic_memory=True)  # fmt: skip
        for prompt in PROMPTS:
            agent.run(prompt)
        doc = db.get_session(agent.session_id, deserialize=False)
    return [orjson.dumps(run) for run in doc["runs"]]


def built(raw: bytes) -> RunOutput:
    return RunOutput.from_dict(orjson.loads(raw))


def from_dict_of(raw: bytes) -> RunOutput:
    """A deferred run from the reader's decode of the stored JSON (step 2)."""
    return deferred_run(orjson.loads(raw))


def from_bytes_of(raw: bytes) -> RunOutput:
    """A deferred run from the stored JSON itself, not decoded yet (step 1), as a session read gives it."""
    run = encoded_run(orjson.loads(raw)["run_id"], raw)
    assert type(run) is DeferredRunOutput
    assert set(vars(run)) == {"run_id", "_aiomemdb_raw"}
    return run  # type: ignore[no-any-return]


MAKERS = pytest.mark.parametrize("make", [from_dict_of, from_bytes_of], ids=["decoded", "encoded"])


@MAKERS
def test_a_deferred_run_becomes_what_from_dict_builds(stored_runs: list[bytes], make: Any) -> None:
    """Reading a converted field builds the run: it is then a plain RunOutput equal to agno's from_dict result."""
    for raw in stored_runs:
        run = make(raw)
        assert type(run) is DeferredRunOutput
        expected = built(raw)
        assert (run.run_id, run.status, run.parent_run_id, run.agent_id) == (
            expected.run_id, expected.status, expected.parent_run_id, expected.agent_id,
        )  # fmt: skip
        assert isinstance(run.status, RunStatus)
        assert type(run) is DeferredRunOutput  # plain fields need no build
        assert "_aiomemdb_raw" not in vars(run)  # ... but a decode
        assert run.messages is not None
        assert type(run) is RunOutput
        assert run == expected
        assert run.to_dict() == expected.to_dict()
        assert vars(run) == vars(expected)


@pytest.mark.parametrize(
    "use",
    [copy.copy, copy.deepcopy, lambda r: pickle.loads(pickle.dumps(r)), dataclasses.asdict, RunOutput.to_dict,
     lambda r: r == RunOutput(run_id="other"), repr],
    ids=["copy", "deepcopy", "pickle", "asdict", "to_dict", "eq", "repr"],
)  # fmt: skip
@MAKERS
def test_every_generic_use_sees_the_built_run(stored_runs: list[bytes], use: Any, make: Any) -> None:
    """copy, deepcopy, pickle, asdict, to_dict, == and repr see the whole run, as from_dict builds it."""
    raw = stored_runs[-1]
    run = make(raw)
    result = use(run)
    assert type(run) is RunOutput
    assert run == built(raw)
    if isinstance(result, RunOutput):
        assert type(result) is RunOutput
        assert result == built(raw)


@MAKERS
def test_a_field_set_before_the_build_keeps_its_value(stored_runs: list[bytes], make: Any) -> None:
    """A reader's assignment wins over the stored value, whether the field is plain or built later."""
    run = make(stored_runs[0])
    run.content = "mine"
    run.metrics = None
    assert run.messages  # builds
    assert run.content == "mine"
    assert run.metrics is None


@MAKERS
def test_first_use_from_two_threads_builds_once(stored_runs: list[bytes], make: Any) -> None:
    """Two threads touching one deferred run at once both see its built messages."""
    for _ in range(20):
        run = make(stored_runs[-1])
        start = threading.Barrier(2)
        seen: list[Any] = []

        def touch(run: RunOutput = run, start: threading.Barrier = start, seen: list[Any] = seen) -> None:
            start.wait()
            seen.append(run.messages)

        threads = [threading.Thread(target=touch) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(seen) == 2
        assert seen[0] is seen[1]
        assert seen[0]


def test_a_session_read_builds_only_the_runs_a_turn_looks_into() -> None:
    """After a turn with num_history_runs=1 on a 3-run session, only the last stored run has been built."""
    with InMemoryDb() as db:
        agent = Agent(model=OfflineModel(), db=db, add_history_to_context=True, num_history_runs=1, user_id="ada")
        for prompt in PROMPTS:
            agent.run(prompt)
        session = db.get_session(agent.session_id)
        assert [type(r) for r in session.runs] == [DeferredRunOutput] * 3
        assert all("_aiomemdb_raw" in vars(r) for r in session.runs)  # a session read decodes no run
        history = session.get_messages(last_n_runs=1)
        assert history
        assert [type(r) for r in session.runs] == [DeferredRunOutput, DeferredRunOutput, RunOutput]
        assert not any("_aiomemdb_raw" in vars(r) for r in session.runs)  # get_messages read every status
        # and the session as a whole is what agno's own from_dict makes of the stored row
        row = db.get_session(agent.session_id, deserialize=False)
        expected = AgentSession.from_dict(copy.deepcopy(row))
        assert expected is not None
        assert session.to_dict() == expected.to_dict()


def test_unusual_runs_are_built_at_once() -> None:
    """A cancelled run (agno coerces its stage) and agno's legacy nested shape are built by from_dict directly."""
    cancelled = {"run_id": "r1", "agent_id": "a", "status": "CANCELLED", "cancellation_stage": "model", "created_at": 1}
    legacy = {"run": {"run_id": "r2", "agent_id": "a"}}
    assert type(deferred_run(dict(cancelled))) is RunOutput
    assert deferred_run(dict(cancelled)) == RunOutput.from_dict(dict(cancelled))
    assert type(deferred_run(copy.deepcopy(legacy))) is RunOutput
    session = to_agent_session({"session_id": "s", "runs": [{"run_id": "t", "team_id": "x"}, {"other": 1}]})
    assert session is not None
    assert [type(r).__name__ for r in session.runs or []] == ["TeamRunOutput"]


def test_an_agent_session_row_is_the_json_of_agnos_to_dict() -> None:
    """The row saved for an AgentSession (read field by field) encodes to the JSON of agno's deep-copying to_dict."""
    from datetime import UTC, datetime

    from agno.session.summary import SessionSummary

    from aiomemdb.agno._convert import agent_session_row

    with InMemoryDb() as db:
        agent = Agent(model=OfflineModel(), db=db, add_history_to_context=True, user_id="ada",
                      enable_agentic_memory=True, session_state={"cart": [1, {"n": 2}]})  # fmt: skip
        for prompt in PROMPTS:
            agent.run(prompt)
        for session in (agent.get_session(), db.get_session(agent.session_id)):
            assert session is not None
            for summary in (None, SessionSummary(summary="s", topics=["t"], updated_at=datetime.now(UTC))):
                session.summary = summary
                expected = orjson.loads(orjson.dumps(session.to_dict(include_runs=False)))
                assert orjson.loads(orjson.dumps(agent_session_row(session))) == expected


def test_a_field_set_before_the_decode_keeps_its_value(stored_runs: list[bytes]) -> None:
    """An encoded run: a plain field the reader sets before anything was decoded is not overwritten by the decode."""
    run = from_bytes_of(stored_runs[0])
    run.content = "mine"
    run.status = RunStatus.error
    assert run.agent_id == built(stored_runs[0]).agent_id  # decodes
    assert (run.content, run.status) == ("mine", RunStatus.error)
    assert run.messages  # builds
    assert (run.content, run.status) == ("mine", RunStatus.error)


def test_encoded_runs_are_dispatched_as_agnos_from_dict_does() -> None:
    """Only runs whose bytes prove them agent runs stay encoded; the others are decoded at once and dispatched
    as AgentSession.from_dict does (team run, skipped, legacy and cancelled shapes built by from_dict)."""
    cases: list[tuple[dict[str, Any], str | None]] = [
        ({"run_id": "a", "agent_id": "x", "status": "COMPLETED"}, "DeferredRunOutput"),
        ({"agent_id": "x", "run_id": "b"}, "DeferredRunOutput"),  # another key order: decoded, then deferred
        ({"run_id": "c", "team_id": "t"}, "TeamRunOutput"),
        ({"run_id": "d", "other": 1}, None),
        # encoded; its first read finds the cancellation stage and builds it whole
        ({"run_id": "e", "agent_id": "x", "status": "CANCELLED", "cancellation_stage": "model"}, "DeferredRunOutput"),
        ({"run_id": 'q"uote', "agent_id": "x"}, "DeferredRunOutput"),  # escaped id: decoded, then deferred
    ]
    for data, _ in cases:
        # a stored run has its created_at; without one, each object takes int(time()) and two can differ by 1
        data["created_at"] = 1_700_000_000
    for data, kind in cases:
        run = encoded_run(data["run_id"], orjson.dumps(data))
        assert (type(run).__name__ if run is not None else None) == kind, data
        if kind == "DeferredRunOutput":
            assert run.status == RunOutput.from_dict(dict(data)).status  # the first read
            assert type(run) is (RunOutput if "cancellation_stage" in data else DeferredRunOutput)
            assert run.to_dict() == RunOutput.from_dict(dict(data)).to_dict()
    head = {"session_id": "s", "agent_id": "x", "session_type": "agent"}
    runs = {d["run_id"]: orjson.dumps(d) for d, _ in cases}
    session = session_from_parts(None, dict(head), runs)
    expected = AgentSession.from_dict({**head, "runs": [dict(d) for d, _ in cases]})
    assert session is not None
    assert expected is not None
    kinds = [type(r).__name__ for r in expected.runs]
    assert [type(r).__name__.removeprefix("Deferred") for r in session.runs] == kinds
    assert session.to_dict() == expected.to_dict()


@pytest.mark.parametrize("run_id", ["r", "00000003-0001-4000-9000-000000000003", 'a"b', "a\\", "é", "x\n",
                                    'a","agent_id', 'a\\","agent_id', "é\",\"agent_id", "\u2028"])  # fmt: skip
@pytest.mark.parametrize("second", ["agent_id", "team_id", "x"])
def test_the_agent_run_test_is_exact(run_id: str, second: str) -> None:
    """True only when agent_id is the second top-level key; ids that need escapes (or are not ASCII) give False,
    which costs only a decode, whatever the id's characters imitate."""
    for data in ({"run_id": run_id, second: "agent_id"}, {second: 1, "run_id": run_id}, {"run_id": run_id}):
        raw = orjson.dumps(data)
        keys = list(data)
        simple = run_id.isascii() and orjson.dumps(run_id) == b'"' + run_id.encode() + b'"'
        assert _is_agent_run(run_id, raw) == (keys[:2] == ["run_id", "agent_id"] and simple), raw


def test_a_session_row_is_filled_in_as_from_dict_builds_it() -> None:
    """The AgentSession of a read (filled in field by field) equals agno's from_dict of the same row."""
    from agno.session.summary import SessionSummary

    from aiomemdb.agno._deferred import _DIRECT, _agent_session

    assert _DIRECT  # agno 3.1.10's AgentSession: the direct path is the one measured
    with InMemoryDb() as db:
        agent = Agent(model=OfflineModel(), db=db, add_history_to_context=True, user_id="ada",
                      session_state={"cart": [1, {"n": 2}]})  # fmt: skip
        agent.run(PROMPTS[0])
        session = db.get_session(agent.session_id)
        session.summary = SessionSummary(summary="s", topics=["t"])
        db.upsert_session(session)
        row = db.get_session(agent.session_id, deserialize=False)
    row.pop("runs")
    for head in (row, {**row, "summary": None}, {"session_id": "s"}):
        ours = _agent_session(copy.deepcopy(head))
        expected = AgentSession.from_dict(copy.deepcopy(head))
        assert type(ours) is AgentSession
        assert vars(ours) == vars(expected)
    assert _agent_session({"agent_id": "x"}) is None  # no session_id: agno's answer
