"""The sync driver: user functions run as real tasks with the caller's context, events on one thread, Ctrl-C safe."""

from __future__ import annotations

import asyncio
import contextvars
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from aiomemdb import DirectoryPersistence, Event, InMemoryDb

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("in_worker_thread", [False, True], ids=["main-thread", "worker-thread"])
def test_update_session_fn_sees_context_task_and_timeout(in_worker_thread: bool) -> None:
    """Inside update_session: the caller's context variables, a current task, and asyncio.timeout all work."""
    seen: dict[str, Any] = {}
    with InMemoryDb() as db:
        db.upsert_session({"session_id": "s", "session_data": {"n": 0}})

        def sync_fn(session: dict[str, Any] | None) -> dict[str, Any] | None:
            seen["sync_var"] = request_id.get()
            seen["sync_task"] = asyncio.current_task()
            assert session is not None
            return {**session, "session_data": {"n": session["session_data"]["n"] + 1}}

        async def async_fn(session: dict[str, Any] | None) -> dict[str, Any] | None:
            seen["async_var"] = request_id.get()
            seen["async_task"] = asyncio.current_task()
            async with asyncio.timeout(5):
                await asyncio.sleep(0)
            assert session is not None
            return {**session, "session_data": {"n": session["session_data"]["n"] + 10}}

        def call() -> None:
            request_id.set("req-42")
            db.update_session("s", sync_fn)
            db.update_session("s", async_fn)
            seen["record"] = db.update_record("notes", "n1", lambda r: {"by": request_id.get()})

        if in_worker_thread:
            thread = threading.Thread(target=call)
            thread.start()
            thread.join(20)
        else:
            call()
            request_id.set("unset")
        stored = db.get_session("s")
    assert seen["sync_var"] == seen["async_var"] == "req-42"
    assert isinstance(seen["sync_task"], asyncio.Task)
    assert isinstance(seen["async_task"], asyncio.Task)
    assert seen["record"] == {"by": "req-42"}
    assert stored is not None
    assert stored["session_data"] == {"n": 11}


@pytest.mark.timeout(30)
def test_update_session_timeout_inside_fn_raises_and_changes_nothing() -> None:
    """An asyncio.timeout that expires inside the fn raises TimeoutError to the caller; the session is unchanged."""
    with InMemoryDb() as db:
        db.upsert_session({"session_id": "s", "session_data": {"n": 0}})
        never = threading.Event()

        async def stuck(session: dict[str, Any] | None) -> dict[str, Any] | None:
            async with asyncio.timeout(0.05):
                await asyncio.get_running_loop().run_in_executor(None, never.wait)
            return {"session_id": "s", "session_data": {"n": 99}}

        with pytest.raises(TimeoutError):
            db.update_session("s", stuck)
        never.set()
        stored = db.get_session("s")
        assert stored is not None
        assert stored["session_data"] == {"n": 0}


@pytest.mark.timeout(30)
def test_on_event_runs_on_the_loop_thread_before_the_call_returns(tmp_path: Path) -> None:
    """Events caused by a caller thread (an eviction) and by the loop (a flush, a reload) all arrive on the loop
    thread, and those a call caused are delivered before it returns."""
    events: list[tuple[str, str]] = []

    def on_event(event: Event) -> None:
        events.append((event.kind, threading.current_thread().name))

    with InMemoryDb(
        persistence=DirectoryPersistence(tmp_path, fsync=False), durability="manual", max_sessions=1, on_event=on_event
    ) as db:
        db.upsert_session({"session_id": "a"})
        db.flush()
        db.upsert_session({"session_id": "b"})  # evicts "a" (clean) in this thread's commit
        assert ("evict", "aiomemdb-portal") in events
        assert db.get_session("a") is not None  # reloads "a" on the loop
    kinds = {kind for kind, _ in events}
    assert {"flush", "evict"} <= kinds
    assert {name for _, name in events} == {"aiomemdb-portal"}


class _BlockingMirror(dict[str, Any]):
    """A storage_dict whose next write (inside the kernel's commit) signals, then waits to be released."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        if self.armed:
            self.armed = False
            self.entered.set()
            self.release.wait()


def _interrupt_main_when(entered: threading.Event, release: threading.Event) -> threading.Thread:
    """A helper thread: once ``entered`` is set, send SIGINT to the main thread, then set ``release``."""

    def run() -> None:
        entered.wait()
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        release.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(30)
def test_ctrl_c_inside_a_commit_is_delivered_after_the_commit_is_whole(tmp_path: Path) -> None:
    """A SIGINT that arrives while the main thread is inside a kernel commit raises KeyboardInterrupt only after the
    write is whole: applied, marked dirty, flushed, and there after a restart."""
    assert threading.current_thread() is threading.main_thread()
    mirror = _BlockingMirror()
    db = InMemoryDb(persistence=DirectoryPersistence(tmp_path, fsync=False), durability="manual", storage_dict=mirror)
    try:
        mirror.armed = True
        helper = _interrupt_main_when(mirror.entered, mirror.release)
        with pytest.raises(KeyboardInterrupt):
            db.upsert_session({"session_id": "s", "session_data": {"k": 1}})
        helper.join(10)
        assert db.stats().dirty == 1  # marked dirty: the commit finished before the interrupt was raised
        assert db.flush().upserts == 1
    finally:
        db.close()
    with InMemoryDb(persistence=DirectoryPersistence(tmp_path, fsync=False)) as again:
        stored = again.get_session("s")
    assert stored is not None
    assert stored["session_data"] == {"k": 1}


@pytest.mark.timeout(30)
def test_ctrl_c_outside_a_commit_still_interrupts_at_once() -> None:
    """After main-thread writes installed the guard, a SIGINT outside a commit raises KeyboardInterrupt as usual."""
    with InMemoryDb() as db:
        db.upsert_session({"session_id": "s"})
        waiting, never = threading.Event(), threading.Event()
        helper = _interrupt_main_when(waiting, threading.Event())
        waiting.set()
        with pytest.raises(KeyboardInterrupt):
            never.wait(20)
        helper.join(10)
        assert db.get_session("s") is not None


@pytest.mark.timeout(30)
def test_a_user_sigint_handler_set_later_gets_the_deferred_signal() -> None:
    """A handler installed after the guard (as Jupyter does per cell) gets the signal, after the commit."""
    received: list[int] = []
    mirror = _BlockingMirror()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        with InMemoryDb(storage_dict=mirror) as db:
            mirror.armed = True
            helper = _interrupt_main_when(mirror.entered, mirror.release)
            db.upsert_session({"session_id": "s"})  # the user's handler does not raise: the call returns
            helper.join(10)
            assert received == [signal.SIGINT]
            assert "s" in mirror
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.timeout(30)
def test_a_handler_restored_by_its_owner_leaves_ctrl_c_as_before() -> None:
    """Code that saves the SIGINT handler, installs its own around some writes and restores the saved one (as
    ipykernel does around every cell) leaves Ctrl-C as it was: a later SIGINT raises KeyboardInterrupt and does
    not go to the handler that was put away."""
    received: list[int] = []
    with InMemoryDb() as db:
        db.upsert_session({"session_id": "before"})  # the guard is now the installed handler
        saved = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
        try:
            _outlast_the_guards_burst_window()  # a cell's code runs for longer than a burst of calls
            db.upsert_session({"session_id": "during"})  # the guard stands in front of the cell's handler
            assert signal.getsignal(signal.SIGINT) is not saved  # ... for that commit only
        finally:
            signal.signal(signal.SIGINT, saved)
        _outlast_the_guards_burst_window()
        db.upsert_session({"session_id": "after"})
        waiting, never = threading.Event(), threading.Event()
        helper = _interrupt_main_when(waiting, threading.Event())
        waiting.set()
        with pytest.raises(KeyboardInterrupt):
            never.wait(20)
        helper.join(10)
    assert received == []


def _outlast_the_guards_burst_window() -> None:
    """Compute until the guard's 0.1 ms "burst of calls" window has passed, so its next commit re-checks the
    installed handler (a notebook cell or a test does far more than this between two writes)."""
    end = time.perf_counter_ns() + 1_000_000
    while time.perf_counter_ns() < end:
        pass
