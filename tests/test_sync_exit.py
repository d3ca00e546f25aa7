"""Interpreter exit and fork(), in real subprocesses: open stores get their final flush, failures are printed,
inherited stores raise ClosedError in the child and never hang it. Every subprocess is bounded by a timeout."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aiomemdb import DirectoryPersistence, InMemoryDb

TIMEOUT = 90


def run_script(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with ``ROOT`` bound to a store directory; fail if it hangs."""
    script = tmp_path / "script.py"
    script.write_text(f"ROOT = {str(tmp_path / 'store')!r}\n" + textwrap.dedent(code))
    env = {**os.environ, "AGNO_TELEMETRY": "false", "PYTHONWARNINGS": "default"}
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=TIMEOUT, env=env, check=False
    )


def stored_ids(tmp_path: Path) -> set[str]:
    with InMemoryDb(persistence=DirectoryPersistence(tmp_path / "store")) as db:
        return {s["session_id"] for s in db.get_all_sessions()}


@pytest.mark.parametrize("durability", ["manual", "interval"])
def test_unclosed_facade_is_flushed_at_exit(tmp_path: Path, durability: str) -> None:
    """A script that never closes its facade (no flush ran yet) still has every write on disk after it ends."""
    result = run_script(
        f"""
        from aiomemdb import DirectoryPersistence, InMemoryDb
        db = InMemoryDb(persistence=DirectoryPersistence(ROOT), durability={durability!r}, flush_interval=3600)
        for i in range(50):
            db.upsert_session({{"session_id": f"s{{i}}", "runs": [{{"run_id": "r"}}]}})
        db.put_record("memories", "m", {{"memory": "likes tea"}})
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "aiomemdb" not in result.stderr
    assert stored_ids(tmp_path) == {f"s{i}" for i in range(50)}


def test_worker_thread_writing_after_main_returned_is_flushed(tmp_path: Path) -> None:
    """A non-daemon thread that writes after the main thread finished (pools already shut down) loses nothing."""
    result = run_script(
        """
        import threading
        from aiomemdb import DirectoryPersistence, InMemoryDb
        db = InMemoryDb(persistence=DirectoryPersistence(ROOT), durability="manual")
        main_done = threading.Event()

        def late_writer():
            main_done.wait()
            for i in range(30):
                db.upsert_session({"session_id": f"late{i}"})

        threading.Thread(target=late_writer).start()
        db.upsert_session({"session_id": "early"})
        main_done.set()
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert stored_ids(tmp_path) == {"early"} | {f"late{i}" for i in range(30)}


def test_sync_agno_agent_run_without_close_is_flushed(tmp_path: Path) -> None:
    """agent.run() with the sync Agno class and no close(): the session and its runs are on disk afterwards."""
    pytest.importorskip("agno")
    result = run_script(
        """
        from agno.agent import Agent
        from aiomemdb import DirectoryPersistence
        from aiomemdb.agno import InMemoryDb
        from aiomemdb.agno.testing import OfflineModel
        db = InMemoryDb(persistence=DirectoryPersistence(ROOT), durability="manual")
        agent = Agent(model=OfflineModel(), db=db, session_id="chat", add_history_to_context=True)
        agent.run("What is the capital of France?")
        agent.run("What was my first question?")
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    with InMemoryDb(persistence=DirectoryPersistence(tmp_path / "store")) as db:
        session = db.get_session("chat")
    assert session is not None
    assert len(session["runs"]) == 2


def test_failing_final_flush_is_printed_with_the_count(tmp_path: Path) -> None:
    """If the final flush at exit fails, stderr says so and how many changes were lost."""
    result = run_script(
        """
        from aiomemdb import InMemoryDb

        async def load():
            return None

        async def save(snapshot):
            raise OSError("disk on fire")

        db = InMemoryDb(load=load, save=save, durability="manual")
        for i in range(7):
            db.upsert_session({"session_id": f"s{i}"})
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "final flush of an InMemoryDb at interpreter exit failed" in result.stderr
    assert "disk on fire" in result.stderr
    assert "7 changes lost" in result.stderr


def test_async_store_on_a_live_loop_is_flushed_at_exit(tmp_path: Path) -> None:
    """An AsyncInMemoryDb never closed, whose loop still runs in a daemon thread, is closed and flushed at exit,
    and stderr says it was left open."""
    result = run_script(
        """
        import asyncio, threading
        from aiomemdb import AsyncInMemoryDb, DirectoryPersistence
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()
        db = AsyncInMemoryDb(persistence=DirectoryPersistence(ROOT), durability="manual")

        async def work():
            for i in range(20):
                await db.upsert_session({"session_id": f"a{i}"})

        asyncio.run_coroutine_threadsafe(work(), loop).result(30)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "AsyncInMemoryDb was still open at exit" in result.stderr
    assert stored_ids(tmp_path) == {f"a{i}" for i in range(20)}


def test_async_store_whose_loop_is_gone_says_so(tmp_path: Path) -> None:
    """An AsyncInMemoryDb left open when asyncio.run returned cannot be flushed at exit: stderr says so, with the
    number of changes lost."""
    result = run_script(
        """
        import asyncio
        from aiomemdb import AsyncInMemoryDb, DirectoryPersistence
        db = AsyncInMemoryDb(persistence=DirectoryPersistence(ROOT), durability="manual")

        async def work():
            for i in range(3):
                await db.upsert_session({"session_id": f"a{i}"})

        asyncio.run(work())
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "never closed and its event loop is gone: 3 unflushed changes lost" in result.stderr


def test_forked_child_gets_closed_error_and_exits_promptly(tmp_path: Path) -> None:
    """After os.fork() the child's inherited facade raises ClosedError at once, a store created in the child works,
    the child exits without flushing the parent's data, and the parent's store is unaffected."""
    result = run_script(
        """
        import os, sys
        from aiomemdb import ClosedError, DirectoryPersistence, InMemoryDb
        db = InMemoryDb(persistence=DirectoryPersistence(ROOT), durability="manual")
        db.upsert_session({"session_id": "before-fork"})
        pid = os.fork()
        if pid == 0:
            try:
                db.get_session("before-fork")
            except ClosedError as exc:
                assert "fork" in str(exc), exc
            else:
                sys.exit(3)
            try:
                db.upsert_session({"session_id": "from-child"})
            except ClosedError:
                pass
            else:
                sys.exit(4)
            own = InMemoryDb(persistence=DirectoryPersistence(ROOT + "-child"))
            own.upsert_session({"session_id": "child-own"})
            own.close()
            sys.exit(0)  # normal interpreter exit: atexit runs in the child too
        _, status = os.waitpid(pid, 0)
        db.upsert_session({"session_id": "after-fork"})
        print("child-exit", os.waitstatus_to_exitcode(status))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "child-exit 0" in result.stdout, result.stdout + result.stderr
    assert stored_ids(tmp_path) == {"before-fork", "after-fork"}
    with InMemoryDb(persistence=DirectoryPersistence(tmp_path / "store-child")) as child_store:
        assert child_store.get_session("child-own") is not None


def test_multiprocessing_fork_child_that_only_exits_does_not_hang(tmp_path: Path) -> None:
    """A multiprocessing child (fork start method) that never touches the inherited store exits, and one that calls
    it gets ClosedError, while the parent writes meanwhile."""
    result = run_script(
        """
        import multiprocessing as mp
        from aiomemdb import ClosedError, DirectoryPersistence, InMemoryDb
        db = InMemoryDb(persistence=DirectoryPersistence(ROOT), durability="interval", flush_interval=0.01)
        db.upsert_session({"session_id": "p0"})

        def idle():
            pass

        def uses_store(queue):
            try:
                db.get_session("p0")
                queue.put("no error")
            except ClosedError:
                queue.put("closed")

        if __name__ == "__main__":
            ctx = mp.get_context("fork")
            quiet = ctx.Process(target=idle)
            quiet.start()
            queue = ctx.Queue()
            user = ctx.Process(target=uses_store, args=(queue,))
            user.start()
            db.upsert_session({"session_id": "p1"})
            print("child says", queue.get(timeout=30))
            quiet.join(30)
            user.join(30)
            print("exit codes", quiet.exitcode, user.exitcode)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "child says closed" in result.stdout, result.stdout + result.stderr
    assert "exit codes 0 0" in result.stdout, result.stdout + result.stderr
    assert stored_ids(tmp_path) == {"p0", "p1"}
