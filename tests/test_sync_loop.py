"""Adversarial tests of the loop handover (``LoopThread.run(make, timeout=)``, ``_Call.settle``).

Every wait is bounded; no test sleeps or measures time.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from pathlib import Path
from typing import Any

import pytest

from aiomemdb import ClosedError, DirectoryPersistence, InMemoryDb, _exit
from aiomemdb._sync_loop import LoopThread

from .test_sync import _HeldFinalFlush


class Custom(BaseException):
    """A BaseException that is neither KeyboardInterrupt, SystemExit nor CancelledError."""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("exc", [ValueError("v"), Custom("c")], ids=["exception", "custom_base_exception"])
def test_an_exception_inside_update_session_reaches_the_caller_and_the_store_goes_on(
    tmp_path: Path, exc: BaseException
) -> None:
    """An Exception or a custom BaseException raised by the update function reaches the caller as itself; the
    session is unchanged, later calls work and close() stores the later write."""
    db = InMemoryDb(persistence=DirectoryPersistence(tmp_path, fsync=False), durability="manual")
    db.upsert_session({"session_id": "a", "session_data": {"n": 0}})

    def fn(session: dict[str, Any]) -> dict[str, Any]:
        raise exc

    with pytest.raises(type(exc)) as info:
        db.update_session("a", fn)
    assert info.value is exc
    assert db.get_session("a")["session_data"] == {"n": 0}  # type: ignore[index]
    db.upsert_session({"session_id": "b"})
    db.close()
    with InMemoryDb(persistence=DirectoryPersistence(tmp_path, fsync=False)) as again:
        assert again.get_session("b") is not None


@pytest.mark.timeout(60)
def test_a_cancelled_error_raised_inside_the_task_is_closed_error_as_before_and_the_store_goes_on(
    tmp_path: Path,
) -> None:
    """CancelledError raised by the update function itself (not a cancel from outside): the task ends cancelled,
    which the caller sees as ClosedError (as before the change); the loop did not stop, so the store still works."""
    db = InMemoryDb(persistence=DirectoryPersistence(tmp_path, fsync=False), durability="manual")
    db.upsert_session({"session_id": "a", "session_data": {"n": 0}})

    async def fn(session: dict[str, Any]) -> dict[str, Any]:
        raise asyncio.CancelledError("inside")

    with pytest.raises(ClosedError):
        db.update_session("a", fn)
    assert db._d.loop.thread.is_alive()
    assert db.update_session("a", lambda s: {**s, "session_data": {"n": 1}})["session_data"] == {"n": 1}  # type: ignore[index]
    db.close()


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_or_system_exit_inside_update_session_reaches_the_caller_and_close_still_flushes(
    tmp_path: Path, exc_type: type[BaseException]
) -> None:
    """The update function raises KeyboardInterrupt (or calls sys.exit()): the caller gets it; but asyncio re-raises
    both out of the task step, so they escape ``run_forever`` and the store's loop thread ends (its finally closes
    the loop) while ``LoopThread.stopped`` stays False. Expected: later writes and close() still work and the data
    is stored. Actual: close() raises RuntimeError('Event loop is closed') and the write is never flushed (the exit
    handler later reports '2 changes lost')."""
    db = InMemoryDb(persistence=DirectoryPersistence(tmp_path, fsync=False), durability="manual")
    db.upsert_session({"session_id": "a"})

    def fn(session: dict[str, Any]) -> dict[str, Any]:
        raise exc_type()

    with pytest.raises(exc_type):
        db.update_session("a", fn)
    db._d.loop.thread.join(5)  # the loop thread ends (bounded wait; it is alive if the store survived)
    db.upsert_session({"session_id": "b"})
    try:
        db.close()
    finally:
        if not db._d.closed:  # keep the exit handler quiet about this deliberately broken store
            _exit.untrack_blocking(db._life)
            if db._life.finalizer is not None:
                db._life.finalizer.detach()
    with InMemoryDb(persistence=DirectoryPersistence(tmp_path, fsync=False)) as again:
        assert again.get_session("b") is not None


@pytest.mark.timeout(60)
def test_the_loop_stopping_while_a_call_waits_raises_closed_error() -> None:
    """A caller waits in LoopThread.run for a coroutine that never ends; the loop is stopped from another thread:
    the task is cancelled and the caller gets ClosedError instead of waiting forever."""
    loop = LoopThread()
    started = threading.Event()
    errors: list[BaseException] = []

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    def caller() -> None:
        try:
            loop.run(forever)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=caller, daemon=True)
    t.start()
    assert started.wait(30)
    loop.stop()
    t.join(30)
    assert not t.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], ClosedError)
    with pytest.raises(ClosedError):
        loop.run(forever)


@pytest.mark.timeout(60)
def test_a_timeout_cancels_the_task_at_its_next_await_and_the_loop_goes_on() -> None:
    """run(timeout=) gives up with TimeoutError; the task is cancelled (its finally runs on the loop) and the
    next call on the same loop works."""
    loop = LoopThread()
    cleaned = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.set()

    async def answer() -> int:
        return 42

    try:
        with pytest.raises(TimeoutError):
            loop.run(forever, timeout=0.05)
        assert cleaned.wait(30)
        assert loop.run(answer) == 42
    finally:
        loop.stop()


@pytest.mark.timeout(60)
def test_close_with_a_timeout_during_a_held_final_flush_raises_and_a_later_close_stores_everything(
    tmp_path: Path,
) -> None:
    """close(timeout=) while the final flush is held: TimeoutError, the gate reopens; the close task itself goes on
    (it is shielded), so once the flush is released the store ends closed with the data stored, later calls raise
    ClosedError, and a second close() returns."""
    held = _HeldFinalFlush(tmp_path)
    db = InMemoryDb(persistence=held, durability="manual")
    db.upsert_session({"session_id": "a"})
    held.hold = True
    with pytest.raises(TimeoutError):
        db._life.close(timeout=0.05)
    assert held.saving.is_set()
    held.release.set()
    db.close()
    with pytest.raises(ClosedError):
        db.upsert_session({"session_id": "late"})
    with InMemoryDb(persistence=DirectoryPersistence(tmp_path, fsync=False)) as again:
        assert again.get_session("a") is not None
        assert again.get_session("late") is None


@pytest.mark.timeout(60)
def test_the_exit_path_gives_up_after_its_timeout_and_reports_the_loss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """close_at_exit with the final flush held beyond EXIT_TIMEOUT: it returns (no hang) and says on stderr how many
    changes are lost; released afterwards, a plain close() still stores them. The count is ``len(kernel.dirty)``,
    and a flush in flight has taken its keys out of the dirty set, so the report says '0 changes lost' for a
    write that is not in storage."""
    monkeypatch.setattr(_exit, "EXIT_TIMEOUT", 0.05)
    held = _HeldFinalFlush(tmp_path)
    db = InMemoryDb(persistence=held, durability="manual")
    db.upsert_session({"session_id": "a"})
    held.hold = True
    try:
        db._life.close_at_exit()
        err = capfd.readouterr().err
    finally:
        held.release.set()
    db.close()
    assert "1 changes lost" in err
    with InMemoryDb(persistence=DirectoryPersistence(tmp_path, fsync=False)) as again:
        assert again.get_session("a") is not None


VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


@pytest.mark.timeout(60)
def test_context_variables_are_copied_into_the_task_and_do_not_leak_back() -> None:
    """The caller's context variables (main thread and a worker thread, each its own value) are seen by the update
    function on the loop thread; what the function sets stays in the task's copy."""
    db = InMemoryDb()
    db.upsert_session({"session_id": "a"})
    seen: list[str] = []

    async def fn(session: dict[str, Any]) -> dict[str, Any]:
        seen.append(VAR.get())
        VAR.set("changed-in-task")
        await asyncio.sleep(0)
        seen.append(VAR.get())
        return session

    token = VAR.set("main")
    try:
        db.update_session("a", fn)
        assert VAR.get() == "main"

        def worker() -> None:
            VAR.set("worker")
            db.update_session("a", fn)
            seen.append(f"after:{VAR.get()}")

        t = threading.Thread(target=worker, daemon=True)
        t.start()
        t.join(30)
        assert not t.is_alive()
    finally:
        VAR.reset(token)
        db.close()
    assert seen == ["main", "changed-in-task", "worker", "changed-in-task", "after:worker"]
