"""A real Jupyter kernel (ipykernel, driven by nbclient) runs a notebook against aiomemdb: the blocking facade over a
directory and over S3 (moto's server), top-level ``await`` on the async store, two turns of a sync Agno agent, and a
store left open when the kernel is shut down, whose data must be on disk afterwards."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from aiomemdb import DirectoryPersistence, InMemoryDb

nbformat = pytest.importorskip("nbformat", reason="the test extra installs nbformat")
nbclient = pytest.importorskip("nbclient", reason="the test extra installs nbclient")
pytest.importorskip("ipykernel", reason="the test extra installs ipykernel")
pytest.importorskip("agno")
pytest.importorskip("aiobotocore")

CELLS = [
    """
    import asyncio
    from agno.agent import Agent
    from aiomemdb import AsyncInMemoryDb, DirectoryPersistence, InMemoryDb, S3Persistence
    from aiomemdb.agno import InMemoryDb as AgnoDb
    from aiomemdb.agno.testing import OfflineModel
    asyncio.get_running_loop()  # the kernel's own loop runs in this thread: the facade must work anyway
    """,
    """
    db = InMemoryDb(persistence=DirectoryPersistence(ROOT + "/facade"))
    db.upsert_session({"session_id": "nb", "runs": [{"run_id": "r1"}]})
    db.update_session("nb", lambda s: {**s, "session_data": {"task": asyncio.current_task() is not None}})
    assert db.get_session("nb")["session_data"] == {"task": True}
    db.close()
    with InMemoryDb(persistence=DirectoryPersistence(ROOT + "/facade")) as again:
        assert [r["run_id"] for r in again.get_session("nb")["runs"]] == ["r1"]
    """,
    """
    s3 = dict(bucket=BUCKET, prefix=PREFIX, **S3_OPTIONS)
    with InMemoryDb(persistence=S3Persistence(**s3)) as sdb:
        sdb.upsert_session({"session_id": "over-s3", "user_id": "u"})
    with InMemoryDb(persistence=S3Persistence(**s3), lazy=True) as sdb:
        assert sdb.get_session("over-s3")["user_id"] == "u"
    """,
    """
    adb = AsyncInMemoryDb(persistence=DirectoryPersistence(ROOT + "/async"))
    await adb.upsert_session({"session_id": "awaited"})
    assert (await adb.get_session("awaited"))["session_id"] == "awaited"
    await adb.aclose()
    """,
    """
    agno_db = AgnoDb(persistence=DirectoryPersistence(ROOT + "/agno"))
    agent = Agent(model=OfflineModel(), db=agno_db, session_id="chat", add_history_to_context=True)
    agent.run("What is the capital of France?")
    answer = agent.run("What was my first question?").content
    assert "capital of France" in answer, answer
    """,
    """
    left_open = InMemoryDb(persistence=DirectoryPersistence(ROOT + "/left-open"), durability="manual")
    for i in range(25):
        left_open.upsert_session({"session_id": f"open-{i}"})
    import builtins
    builtins.kept_open = left_open  # alive past the namespace clean-up: only the exit handler can flush it
    """,
]


@pytest.mark.timeout(300)
def test_notebook_in_a_real_kernel(tmp_path: Path, s3_bucket: str, s3_client_options: dict[str, str]) -> None:
    """Every cell runs; after the kernel shut down, the store the notebook left open has all its data on disk."""
    setup = f"ROOT = {str(tmp_path)!r}\nBUCKET = {s3_bucket!r}\nPREFIX = {'nb-' + uuid.uuid4().hex[:6]!r}\n"
    setup += f"S3_OPTIONS = {s3_client_options!r}\n"
    cells = [nbformat.v4.new_code_cell(setup)] + [nbformat.v4.new_code_cell(_dedent(c)) for c in CELLS]
    notebook = nbformat.v4.new_notebook(cells=cells)
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3", shutdown_kernel="graceful")
    client.execute()  # raises CellExecutionError with the cell's traceback if any cell fails; then shuts down
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    with InMemoryDb(persistence=DirectoryPersistence(tmp_path / "left-open")) as db:
        assert {s["session_id"] for s in db.get_all_sessions()} == {f"open-{i}" for i in range(25)}
    with InMemoryDb(persistence=DirectoryPersistence(tmp_path / "agno")) as db:
        chat: Any = db.get_session("chat")
        assert chat is not None
        assert len(chat["runs"]) == 2


def _dedent(code: str) -> str:
    import textwrap

    return textwrap.dedent(code).strip()
