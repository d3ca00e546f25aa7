"""The sync facade's portal: the direct path taken by non-main threads, and the loop path of the main thread."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aiomemdb import ClosedError, DirectoryPersistence, InMemoryDb, ValidationError


def in_thread(fn: Callable[[], Any], *, timeout: float = 30) -> Any:
    """Run ``fn`` in a fresh (non-main) thread and return its result or raise what it raised."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the worker thread is stuck"
    if "error" in box:
        raise box["error"]
    return box.get("result")


@pytest.mark.timeout(20)
def test_reentrant_call_from_a_worker_thread_raises_closed_error() -> None:
    """A facade call made inside an update_session fn run by a worker thread raises ClosedError, not a hang."""
    with InMemoryDb() as db:
        db.upsert_session({"session_id": "s", "session_data": {"n": 0}})

        def fn(session: dict[str, Any] | None) -> dict[str, Any] | None:
            db.get_session("s")
            return session

        with pytest.raises(ClosedError, match="deadlock"):
            in_thread(lambda: db.update_session("s", fn))
        updated = in_thread(lambda: db.update_session("s", lambda s: {**s, "session_data": {"n": 1}} if s else None))
        assert updated["session_data"] == {"n": 1}


def test_worker_thread_errors_propagate_and_leave_the_store_usable() -> None:
    """A validation error raised on the direct path reaches the caller; the next call works."""
    with InMemoryDb() as db:
        with pytest.raises(ValidationError):
            in_thread(lambda: db.upsert_session({"session_id": ""}))
        assert in_thread(lambda: db.upsert_session({"session_id": "ok"}))["session_id"] == "ok"
        assert db.get_session("ok") is not None


def test_suspending_call_from_a_worker_thread_finishes_on_the_loop() -> None:
    """An update whose fn awaits (so the call suspends) completes, and its result is returned to the thread."""
    with InMemoryDb() as db:
        db.upsert_session({"session_id": "s", "session_data": {"n": 0}})

        async def slow_bump(session: dict[str, Any] | None) -> dict[str, Any] | None:
            assert session is not None
            await asyncio.sleep(0.02)
            return {**session, "session_data": {"n": session["session_data"]["n"] + 1}}

        async def failing(session: dict[str, Any] | None) -> dict[str, Any] | None:
            await asyncio.sleep(0.01)
            raise LookupError("from the fn")

        got = in_thread(lambda: db.update_session("s", slow_bump))
        assert got["session_data"] == {"n": 1}
        with pytest.raises(LookupError, match="from the fn"):
            in_thread(lambda: db.update_session("s", failing))
        assert db.get_session("s")["session_data"] == {"n": 1}  # type: ignore[index]


def test_worker_thread_with_its_own_running_loop_keeps_it() -> None:
    """A thread running its own event loop can call the facade, and its running loop is restored afterwards."""
    with InMemoryDb() as db:

        async def cell() -> tuple[bool, dict[str, Any] | None]:
            mine = asyncio.get_running_loop()
            db.upsert_session({"session_id": "s", "user_id": "u"})
            got = db.get_session("s")
            return asyncio.get_running_loop() is mine, got

        same_loop, got = in_thread(lambda: asyncio.run(cell()))
        assert same_loop
        assert got is not None
        assert got["user_id"] == "u"


def test_durability_write_from_a_worker_thread_waits_for_the_flush(tmp_path: Path) -> None:
    """With durability="write" a write from a worker thread suspends on file I/O and returns once it is on disk."""
    with InMemoryDb(persistence=DirectoryPersistence(tmp_path, fsync=False), durability="write") as db:
        in_thread(lambda: db.upsert_session({"session_id": "s", "runs": [{"run_id": "r1"}]}))
        assert list(tmp_path.rglob("*.json"))
        assert db.stats().dirty == 0


@pytest.mark.timeout(30)
def test_background_flusher_keeps_running_under_a_stream_of_thread_calls(tmp_path: Path) -> None:
    """Threads calling back to back do not starve the loop thread: the interval flusher still flushes."""
    stop = time.monotonic() + 1.0
    with InMemoryDb(persistence=DirectoryPersistence(tmp_path, fsync=False), flush_interval=0.05) as db:
        db.upsert_session({"session_id": "s"})

        def hammer(t: int) -> None:
            k = 0
            while time.monotonic() < stop:
                db.upsert_run("s", {"run_id": f"t{t}-{k % 50}", "k": k})
                db.get_session("s", runs_limit=2)
                k += 1

        threads = [threading.Thread(target=hammer, args=(t,), daemon=True) for t in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        assert db.stats().flushes >= 3


@pytest.mark.timeout(20)
def test_interrupted_main_thread_call_is_cancelled_whole() -> None:
    """Ctrl-C while the main thread waits cancels the call at its next await: the session is left unchanged."""
    with InMemoryDb() as db:
        db.upsert_session({"session_id": "s", "session_data": {"n": 0}})

        async def slow(session: dict[str, Any] | None) -> dict[str, Any] | None:
            await asyncio.sleep(5)
            return {"session_id": "s", "session_data": {"n": 99}}

        # A real SIGINT (interrupt_main would not wake a thread blocked on a lock).
        timer = threading.Timer(0.2, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            db.update_session("s", slow)
        timer.join()
        assert db.get_session("s")["session_data"] == {"n": 0}  # type: ignore[index]
        assert db.update_session("s", lambda s: s) is not None  # the session's lock was released
