"""The blocking facade called from inside a running event loop, as in a Jupyter cell.

Jupyter runs every cell inside an asyncio loop, so ``asyncio.run()`` fails there and naive sync wrappers
deadlock. ``InMemoryDb`` runs its own loop in a private thread, so blocking calls just work.

    python examples/notebook_sync.py
"""

from __future__ import annotations

import asyncio
import tempfile

from aiomemdb import DirectoryPersistence, InMemoryDb


async def notebook_cell(directory: str) -> None:
    # This coroutine plays the notebook: an event loop is running in this thread right now.
    asyncio.get_running_loop()
    with InMemoryDb(persistence=DirectoryPersistence(directory)) as db:
        db.upsert_session({"session_id": "nb-1", "user_id": "grace", "runs": [{"run_id": "r1", "input": "hi"}]})
        db.upsert_run("nb-1", {"run_id": "r2", "input": "and again"})
        session = db.get_session("nb-1")
        assert session is not None
        print("inside a running loop:", [r["run_id"] for r in session["runs"]])
    with InMemoryDb(persistence=DirectoryPersistence(directory)) as db:
        sessions, total = db.get_sessions(user_id="grace")
        assert total == 1, "the notebook's session was not persisted"
        assert len(sessions[0]["runs"]) == 2
        print("reloaded:", total, "session(s) for grace")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(notebook_cell(tmp))
