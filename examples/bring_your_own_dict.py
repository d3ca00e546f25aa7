"""The seed's bring-your-own-dict flow, with a local file standing in for S3.

Your dict IS the session storage; persist it however you like. The two differences from the seed recipe:
values are checked when they are written (no ``default=str`` surprises later), and loading a broken blob is
an error, not a silently empty store. ``AsyncInMemoryDb(load=..., save=...)`` does the same with async hooks
and a background flush.

    python examples/bring_your_own_dict.py
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from aiomemdb import AsyncInMemoryDb, InMemoryDb, SerializationError


def seed_flow(blob_file: Path) -> None:
    my_sessions: dict[str, Any] = {}
    db = InMemoryDb(storage_dict=my_sessions)
    db.upsert_session({"session_id": "s1", "user_id": "u1", "runs": [{"run_id": "r1", "input": "capital of France?"}]})
    db.upsert_session({"session_id": "s2", "user_id": "u1", "runs": []})
    try:
        db.upsert_run("s2", {"run_id": "r2", "input": object()})
    except SerializationError as exc:
        print("rejected at the door:", exc)
    print("sessions in my dict:", len(my_sessions))
    blob_file.write_text(json.dumps(my_sessions, default=str))  # "save to S3"
    db.close()

    new_db = InMemoryDb(storage_dict=json.loads(blob_file.read_text()))  # "load from S3"
    assert [s["session_id"] for s in new_db.get_recent_sessions(limit=2)] == ["s2", "s1"]
    print("reloaded:", [s["session_id"] for s in new_db.get_all_sessions(user_id="u1")])
    new_db.close()


async def hooks_flow(blob_file: Path) -> None:
    # File I/O goes to a worker thread: hooks run on the event loop and must not block it.
    def read() -> dict[str, Any] | None:
        return json.loads(blob_file.read_text()) if blob_file.exists() else None

    def write(snapshot: dict[str, Any]) -> None:
        tmp = blob_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(snapshot))
        tmp.replace(blob_file)  # atomic: a crash leaves the old blob or the new one

    async def load() -> dict[str, Any] | None:
        return await asyncio.to_thread(read)

    async def save(snapshot: dict[str, Any]) -> None:
        await asyncio.to_thread(write, snapshot)

    # The seed-style blob written above loads as the sessions collection; saves write the full snapshot.
    async with AsyncInMemoryDb(load=load, save=save, flush_interval=0.1) as db:
        await db.upsert_run("s1", {"run_id": "r3", "input": "and its population?"})
        seen = await db.get_session("s1")
        assert seen is not None
        print("hooks store sees:", [r["run_id"] for r in seen["runs"]])
    async with AsyncInMemoryDb(load=load, save=save) as db:
        session = await db.get_session("s1")
        assert session is not None
        assert len(session["runs"]) == 2


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        blob = Path(tmp) / "sessions.json"
        seed_flow(blob)
        asyncio.run(hooks_flow(blob))
