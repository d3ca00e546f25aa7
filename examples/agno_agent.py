"""Agno agents on aiomemdb, offline: the seed example, then an async agent with a directory store.

Run it with ``python examples/agno_agent.py`` (needs ``pip install 'aiomemdb[agno]'``). It uses
``aiomemdb.agno.testing.OfflineModel`` instead of a hosted model, so it needs no network and no API key; put
your own model (``OpenAIChat(id=...)``) in its place for real answers. It exits non-zero if an agent does not
answer from the stored history.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from typing import Any

# An offline example: stop agno from posting usage telemetry (remove this line to allow it).
os.environ.setdefault("AGNO_TELEMETRY", "false")

from agno.agent import Agent

from aiomemdb import DirectoryPersistence
from aiomemdb.agno import AsyncInMemoryDb, InMemoryDb
from aiomemdb.agno.testing import OfflineModel

EXPECTED = "Your first question was: What is the capital of France?"


def seed_example() -> str | None:
    """agno's in-memory storage guide, with aiomemdb's InMemoryDb: your own dict, your own JSON persistence."""
    my_sessions: dict[str, Any] = {}
    db = InMemoryDb(storage_dict=my_sessions)  # the caller's dict IS the session storage
    agent = Agent(model=OfflineModel(), db=db, add_history_to_context=True)
    agent.print_response("What is the capital of France?")
    agent.print_response("What is its population?")
    print(f"sessions stored: {len(my_sessions)}")
    blob = json.dumps(my_sessions)  # plain JSON: no default=str needed, nothing is turned into a string
    db.close()

    new_db = InMemoryDb(storage_dict=json.loads(blob))
    new_agent = Agent(model=OfflineModel(), db=new_db, session_id=agent.session_id, add_history_to_context=True)
    new_agent.print_response("What was my first question?")  # sees the earlier history
    last = new_agent.get_last_run_output()
    new_db.close()
    return None if last is None else str(last.content)


async def async_example(directory: str) -> str | None:
    """An async agent whose sessions (and memories) persist in a directory and survive a restart."""
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(directory)) as db:
        agent = Agent(model=OfflineModel(), db=db, add_history_to_context=True, user_id="ada")
        await agent.arun("What is the capital of France?")
        session_id = agent.session_id
    # the store flushed on exit; a new one (a restarted server) loads the session from the directory
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(directory)) as db:
        again = Agent(model=OfflineModel(), db=db, session_id=session_id, add_history_to_context=True)
        result = await again.arun("What was my first question?", user_id="ada")
        print(f"async agent after restart: {result.content}")
        return None if result.content is None else str(result.content)


def main() -> int:
    answer = seed_example()
    print(f"seed example: {answer}")
    with tempfile.TemporaryDirectory() as directory:
        async_answer = asyncio.run(async_example(directory))
    ok = answer == EXPECTED and async_answer == EXPECTED
    print("OK" if ok else f"FAILED: expected {EXPECTED!r}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
