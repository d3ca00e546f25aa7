"""Quickstart: the async core with a directory store; restart, and the data is back.

python examples/quickstart.py [DIRECTORY]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from typing import Any

from aiomemdb import AsyncInMemoryDb, DirectoryPersistence


async def main(directory: str) -> None:
    # First "process": write a session and a few runs; leaving the block flushes to disk.
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(directory)) as db:
        await db.upsert_session({"session_id": "chat-1", "user_id": "ada", "session_data": {"session_name": "Paris"}})
        for i, question in enumerate(["What is the capital of France?", "What is its population?"]):
            await db.upsert_run("chat-1", {"run_id": f"run-{i}", "input": question})

        # Atomic read-modify-write, safe under any number of concurrent tasks.
        def count_turn(session: dict[str, Any] | None) -> dict[str, Any] | None:
            assert session is not None
            data = session.setdefault("session_data", {})
            data["turns"] = data.get("turns", 0) + 1
            return session

        await asyncio.gather(*(db.update_session("chat-1", count_turn) for _ in range(100)))
        print("written:", db.stats().sessions, "session(s), dirty:", db.stats().dirty)

    # Second "process": a new store over the same directory loads everything back.
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(directory)) as db:
        session = await db.get_session("chat-1", user_id="ada")
        assert session is not None, "the session did not survive the restart"
        print("after restart:", session["session_data"], [run["input"] for run in session["runs"]])
        assert session["session_data"]["turns"] == 100
        recent = await db.get_recent_sessions(limit=5)
        print("recent sessions:", [s["session_id"] for s in recent])


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(main(tmp))
