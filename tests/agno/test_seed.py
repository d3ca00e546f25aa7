"""The seed contract of SPEC §2, verbatim, with ``aiomemdb.agno.InMemoryDb`` and the offline model."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("agno", reason="agno is not installed (pip install 'aiomemdb[agno]')")

from agno.agent import Agent

from aiomemdb.agno import InMemoryDb
from aiomemdb.agno.testing import OfflineModel


def test_seed_snippet_verbatim(capsys: pytest.CaptureFixture[str]) -> None:
    """The seed snippet runs unchanged: one session in the caller's dict, a JSON round trip, history answered."""
    # -- the snippet of SPEC §2, with OfflineModel() for the model ----------------------------------------------
    my_sessions: dict[str, Any] = {}
    db = InMemoryDb(storage_dict=my_sessions)  # the caller's dict IS the session storage
    agent = Agent(model=OfflineModel(), db=db, add_history_to_context=True)
    agent.print_response("What is the capital of France?")
    agent.print_response("What is its population?")
    print(len(my_sessions))  # number of sessions
    blob = json.dumps(my_sessions, default=str)  # the user's own persistence
    new_db = InMemoryDb(storage_dict=json.loads(blob))
    new_agent = Agent(model=OfflineModel(), db=new_db, session_id=agent.session_id, add_history_to_context=True)
    new_agent.print_response("What was my first question?")  # sees the earlier history
    # ------------------------------------------------------------------------------------------------------------
    try:
        out = capsys.readouterr().out
        assert len(my_sessions) == 1
        assert "Your first question was: What is the capital of France?" in out
        last = new_agent.get_last_run_output()
        assert last is not None
        assert last.content == "Your first question was: What is the capital of France?"
        # default=str never had anything to stringify: the caller's dict is plain JSON all the way down
        assert json.loads(blob) == json.loads(json.dumps(my_sessions))
        stored = my_sessions[agent.session_id]
        assert [r["input"]["input_content"] for r in stored["runs"]] == [
            "What is the capital of France?",
            "What is its population?",
        ]
        # the new store has all three runs; the caller's original dict still has two
        assert len(new_db.get_session(agent.session_id).runs) == 3
    finally:
        db.close()
        new_db.close()


def test_seed_common_operations() -> None:
    """get_all_sessions, get_recent_sessions(limit=2), delete_session and drop() work as the seed used them."""
    my_sessions: dict[str, Any] = {}
    with InMemoryDb(storage_dict=my_sessions) as db:
        agents = [Agent(model=OfflineModel(), db=db, user_id=f"user-{i % 2}") for i in range(3)]
        for i, agent in enumerate(agents):
            agent.run(f"hello {i}")
        agents[0].run("again")  # the first session becomes the most recently updated
        assert len(db.get_all_sessions()) == 3
        assert {s.session_id for s in db.get_all_sessions(user_id="user-0")} == {
            agents[0].session_id,
            agents[2].session_id,
        }
        recent = db.get_recent_sessions(limit=2)
        assert [s.session_id for s in recent] == [agents[0].session_id, agents[2].session_id]
        assert db.delete_session(agents[1].session_id) is True
        assert agents[1].session_id not in my_sessions
        db.drop()
        assert db.get_all_sessions() == []
        assert my_sessions == {}
