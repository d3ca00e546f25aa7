"""The blocking facade InMemoryDb: the core's API without await, safe from any thread and inside a running loop."""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import sys
import threading
import time
import typing
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aiomemdb import AsyncInMemoryDb, ClosedError, DirectoryPersistence, InMemoryDb, PersistenceError
from aiomemdb.persistence import Changeset

from ._faults import Faulty

# Core names whose blocking twin has another name; everything else keeps its name.
RENAMED = {"aclose": "close", "__aenter__": "__enter__", "__aexit__": "__exit__"}


def public_methods(cls: type) -> dict[str, Callable[..., Any]]:
    return {name: member for name, member in inspect.getmembers(cls, callable) if not name.startswith("_")}


def shape(fn: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    """A signature without annotations: each parameter's name, kind and default."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def portal_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "aiomemdb-portal"}


class FakeClock:
    """A clock the test moves by hand, so every write lands in a known second."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def run_threads(targets: list[Callable[[], None]], *, timeout: float = 90) -> list[BaseException]:
    """Start every target at once (behind a barrier), join them all, and return what any of them raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(targets))

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                barrier.wait()
                target()
            except BaseException as exc:
                errors.append(exc)

        return run

    threads = [threading.Thread(target=guarded(t), daemon=True) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not [t for t in threads if t.is_alive()], "a worker thread is stuck"
    return errors


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Make the interpreter switch threads as often as it can, so races show up; restore it afterwards."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


# -- the API mirrors the core ----------------------------------------------------------------------------------


def test_every_core_coroutine_has_a_blocking_twin_with_the_same_signature() -> None:
    """Each public coroutine method of AsyncInMemoryDb has a plain method on InMemoryDb with identical parameters."""
    core = dict(inspect.getmembers(AsyncInMemoryDb, inspect.iscoroutinefunction))
    assert {"get_session", "upsert_session", "update_session", "aclose", "__aenter__"} <= set(core)
    problems = []
    for name, coro in sorted(core.items()):
        if name.startswith("_") and name not in RENAMED:
            continue
        twin = getattr(InMemoryDb, RENAMED.get(name, name), None)
        if twin is None:
            problems.append(f"InMemoryDb lacks {RENAMED.get(name, name)}")
        elif inspect.iscoroutinefunction(twin):
            problems.append(f"InMemoryDb.{twin.__name__} is a coroutine function")
        elif shape(twin) != shape(coro):
            problems.append(f"{name}: {shape(coro)} != {shape(twin)}")
    assert problems == []


def test_facade_has_no_public_method_the_core_lacks() -> None:
    """InMemoryDb's public methods are exactly AsyncInMemoryDb's, with close in place of aclose."""
    core = set(public_methods(AsyncInMemoryDb))
    facade = set(public_methods(InMemoryDb))
    assert facade == (core - {"aclose"}) | {"close"}


def test_constructor_takes_the_core_arguments(tmp_path: Path) -> None:
    """InMemoryDb takes exactly AsyncInMemoryDb's keyword arguments (typed as StoreOptions) and hands them on."""
    from aiomemdb._async import StoreOptions

    hints = typing.get_type_hints(InMemoryDb.__init__, include_extras=True)
    assert hints["options"] == typing.Unpack[StoreOptions]
    core = set(inspect.signature(AsyncInMemoryDb).parameters)
    assert set(StoreOptions.__annotations__) == core
    with InMemoryDb(
        persistence=DirectoryPersistence(tmp_path), durability="manual", flush_interval=7.5, max_sessions=3
    ) as db:
        cfg = db._db._config
        assert (cfg.durability, cfg.flush_interval, cfg.max_sessions) == ("manual", 7.5, 3)
    with pytest.raises(TypeError):
        InMemoryDb(not_an_option=1)  # type: ignore[call-arg]


# -- calling contexts ------------------------------------------------------------------------------------------


def test_blocking_calls_work_inside_a_running_event_loop() -> None:
    """A coroutine under asyncio.run (as in Jupyter) can call the blocking methods, and its loop keeps working."""

    async def notebook_cell() -> tuple[dict[str, Any] | None, list[dict[str, Any]], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        with InMemoryDb() as db:
            db.upsert_session({"session_id": "s", "user_id": "u"})
            db.upsert_run("s", {"run_id": "r1", "content": "hi"})
            got = db.get_session("s")
            recent = db.get_recent_sessions(limit=2)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return got, recent, ticks

    got, recent, ticks = asyncio.run(notebook_cell())
    assert got is not None
    assert got["runs"] == [{"run_id": "r1", "content": "hi"}]
    assert [s["session_id"] for s in recent] == ["s"]
    assert ticks >= 1  # the caller's own loop was not wedged by the blocking calls


def test_blocking_calls_work_inside_a_running_event_loop_in_a_worker_thread() -> None:
    """A worker thread running its own event loop can call the blocking methods, and that loop stays its own."""
    outcome: list[Any] = []

    async def bump(s: dict[str, Any] | None) -> dict[str, Any] | None:
        await asyncio.sleep(0)  # suspends, so the rest of the call runs on the store's loop
        return None if s is None else {**s, "session_data": {"n": 1}}

    bump_later: Any = bump  # the facade's annotation names sync functions only; the core takes both

    with InMemoryDb() as db:

        async def main() -> None:
            outer = asyncio.get_running_loop()
            db.upsert_session({"session_id": "w", "session_data": {"n": 0}})
            assert asyncio.get_running_loop() is outer
            updated = db.update_session("w", bump_later)
            assert asyncio.get_running_loop() is outer
            await asyncio.sleep(0.001)  # the thread's own loop still runs timers
            outcome.append((updated, db.get_session("w")))

        errors = run_threads([lambda: asyncio.run(main())])
    assert errors == []
    ((updated, stored),) = outcome
    assert updated is not None
    assert updated == stored
    assert updated["session_data"] == {"n": 1}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("in_worker_thread", [False, True], ids=["main-thread", "worker-thread"])
@pytest.mark.parametrize("suspend_first", [False, True], ids=["sync-fn", "async-fn"])
def test_reentrant_call_raises_closed_error_instead_of_deadlocking(in_worker_thread: bool, suspend_first: bool) -> None:
    """A blocking call made from inside an update_session fn, wherever the fn runs, raises ClosedError."""
    with InMemoryDb() as db:
        db.upsert_session({"session_id": "s", "session_data": {"n": 0}})
        inner: list[BaseException] = []
        outer: list[BaseException] = []

        def nested(session: dict[str, Any] | None) -> dict[str, Any] | None:
            try:
                db.get_session("s")
            except ClosedError as exc:
                inner.append(exc)
                raise
            return session

        async def nested_later(session: dict[str, Any] | None) -> dict[str, Any] | None:
            await asyncio.sleep(0)
            return nested(session)

        def call() -> None:
            try:
                fn: Any = nested_later if suspend_first else nested
                db.update_session("s", fn)
            except ClosedError as exc:
                outer.append(exc)

        if in_worker_thread:
            assert run_threads([call]) == []
        else:
            call()
        assert len(inner) == 1
        assert outer == inner
        assert "deadlock" in str(outer[0])
        # The session's lock was released: the store still serves reads and writes of that session.
        updated = db.update_session("s", lambda s: None if s is None else {**s, "session_data": {"n": 1}})
        assert updated is not None
        assert updated["session_data"] == {"n": 1}


# -- threads ---------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("fast_switching")
def test_six_threads_on_one_facade_lose_nothing() -> None:
    """Writers, deleters and listers sharing one facade under heavy thread switching lose nothing and never fail."""
    rounds = 40
    with InMemoryDb() as db:

        def writer(w: int) -> Callable[[], None]:
            def run() -> None:
                for i in range(rounds):
                    sid = f"w{w}-{i % 4}"
                    # No "runs" key: the stored runs are kept.
                    db.upsert_session({"session_id": sid, "user_id": f"writer{w}", "session_data": {"i": i}})
                    db.upsert_run(sid, {"run_id": f"r{i}", "i": i})

            return run

        def deleter(d: int) -> Callable[[], None]:
            def run() -> None:
                for i in range(rounds):
                    sid = f"d{d}-{i}"
                    db.upsert_session({"session_id": sid, "user_id": f"deleter{d}", "runs": [{"run_id": "x"}]})
                    got = db.get_session(sid, user_id=f"deleter{d}")
                    assert got is not None
                    assert got["runs"] == [{"run_id": "x"}]
                    assert db.delete_session(sid, user_id=f"deleter{d}") is True
                    assert db.get_session(sid) is None

            return run

        def lister() -> None:
            for i in range(rounds):
                page, total = db.get_sessions(limit=5, include_runs=bool(i % 2))
                assert len(page) <= 5
                assert total >= len(page)
                stamps = [s["updated_at"] for s in page]
                assert stamps == sorted(stamps, reverse=True)
                recent = db.get_recent_sessions(limit=3)
                assert len(recent) <= 3
                for s in recent:
                    got = db.get_session(s["session_id"])  # may be deleted meanwhile, never another session
                    assert got is None or got["session_id"] == s["session_id"]
                mine, count = db.get_sessions(user_id=f"writer{i % 2}")
                assert count == len(mine)
                assert {s["user_id"] for s in mine} <= {f"writer{i % 2}"}

        errors = run_threads([writer(0), writer(1), deleter(0), deleter(1), lister, lister])
        assert errors == []
        for w in range(2):
            for k in range(4):
                got = db.get_session(f"w{w}-{k}")
                assert got is not None
                mine = [i for i in range(rounds) if i % 4 == k]
                assert [r["run_id"] for r in got["runs"]] == [f"r{i}" for i in mine]
                assert got["session_data"] == {"i": mine[-1]}
                assert got["version"] == 2 * len(mine)
        assert all(db.get_session(f"d{d}-{i}") is None for d in range(2) for i in range(rounds))
        assert sorted(s["session_id"] for s in db.get_all_sessions()) == sorted(
            f"w{w}-{k}" for w in range(2) for k in range(4)
        )
        assert db.stats().sessions == 8


@pytest.mark.usefixtures("fast_switching")
def test_update_session_from_many_threads_loses_no_increment() -> None:
    """8 worker threads x 100 update_session increments on 4 sessions, plus 50 from the main thread, all land."""
    with InMemoryDb() as db:
        for k in range(4):
            db.upsert_session({"session_id": f"c{k}", "session_data": {"n": 0}})

        def bump(s: dict[str, Any] | None) -> dict[str, Any] | None:
            assert s is not None
            return {**s, "session_data": {"n": s["session_data"]["n"] + 1}}

        async def bump_later(s: dict[str, Any] | None) -> dict[str, Any] | None:
            await asyncio.sleep(0)  # let other updates of this session try to interleave
            return bump(s)

        def worker(t: int) -> Callable[[], None]:
            fn: Any = bump if t % 2 else bump_later

            def run() -> None:
                for _ in range(100):
                    db.update_session(f"c{t % 4}", fn)

            return run

        main_done = threading.Event()

        def also_in_main_thread() -> None:
            # The main thread takes another path into the store than worker threads do; it joins the race.
            while not main_done.is_set():
                db.update_session("c0", bump)
                main_extra.append(1)
                if len(main_extra) >= 50:
                    main_done.set()

        main_extra: list[int] = []
        helper = threading.Thread(target=lambda: main_done.wait(60), daemon=True)
        helper.start()
        workers = threading.Thread(
            target=lambda: errors.extend(run_threads([worker(t) for t in range(8)])), daemon=True
        )
        errors: list[BaseException] = []
        workers.start()
        also_in_main_thread()
        workers.join(90)
        helper.join(1)
        assert not workers.is_alive()
        assert errors == []
        sessions = [db.get_session(f"c{k}") for k in range(4)]
        assert [s["session_data"]["n"] if s else None for s in sessions] == [250, 200, 200, 200]
        assert [s["version"] if s else None for s in sessions] == [251, 201, 201, 201]


# -- lifecycle -------------------------------------------------------------------------------------------------


def test_close_stops_the_portal_thread_and_later_calls_raise_closed_error() -> None:
    """close() joins the loop thread, is idempotent, and every later call raises ClosedError."""
    before = portal_threads()
    db = InMemoryDb()
    (thread,) = portal_threads() - before
    assert thread.is_alive()
    db.upsert_session({"session_id": "s"})
    db.close()
    assert not thread.is_alive()
    with pytest.raises(ClosedError):
        db.get_session("s")
    with pytest.raises(ClosedError):
        db.upsert_session({"session_id": "t"})
    with pytest.raises(ClosedError):
        db.get_recent_sessions(limit=2)
    db.close()  # idempotent: no error, nothing to do
    assert not thread.is_alive()


@pytest.mark.timeout(60)
def test_calls_racing_close_either_land_or_raise_closed_error(tmp_path: Path) -> None:
    """Writes and flushes racing close() either complete, and are then persisted, or raise ClosedError; none hangs."""
    db = InMemoryDb(persistence=DirectoryPersistence(tmp_path, fsync=False), durability="manual")
    written: list[list[str]] = [[] for _ in range(4)]
    outcomes: list[str] = []

    def writer(t: int) -> Callable[[], None]:
        def run() -> None:
            for i in range(1_000_000):
                sid = f"t{t}-{i}"
                try:
                    if t == 3 and i % 5 == 0:
                        db.flush()  # the flush goes through the persistence's worker threads
                    db.upsert_session({"session_id": sid})
                except ClosedError:
                    outcomes.append("closed")
                    return
                written[t].append(sid)
            outcomes.append("never closed")

        return run

    def closer() -> None:
        deadline = time.monotonic() + 20
        while not all(written) and time.monotonic() < deadline:  # every writer is under way
            time.sleep(0.001)
        time.sleep(0.05)
        db.close()
        outcomes.append("close returned")

    errors = run_threads([writer(t) for t in range(4)] + [closer])
    assert errors == []
    assert sorted(outcomes) == ["close returned"] + ["closed"] * 4
    assert all(written)
    with InMemoryDb(persistence=DirectoryPersistence(tmp_path, fsync=False)) as again:
        stored = {s["session_id"] for s in again.get_all_sessions()}
    assert stored == {sid for w in written for sid in w}


class _HeldFinalFlush(Faulty):
    """Saves pause (on the loop thread) once ``hold`` is set, until the test thread sets ``release``."""

    def __init__(self, root: Path) -> None:
        super().__init__(DirectoryPersistence(root, fsync=False))
        self.hold = False
        self.saving = threading.Event()
        self.release = threading.Event()

    async def save(self, changeset: Changeset) -> Any:
        if self.hold:
            self.saving.set()
            await asyncio.to_thread(self.release.wait, 60)
        return await super().save(changeset)


def close_in_thread(db: InMemoryDb) -> tuple[threading.Thread, list[BaseException]]:
    """Start ``db.close()`` in a daemon thread: the thread, and the list the close's error goes to."""
    failed: list[BaseException] = []

    def close() -> None:
        try:
            db.close()
        except BaseException as exc:
            failed.append(exc)

    closer = threading.Thread(target=close, daemon=True)
    closer.start()
    return closer, failed


def close_held_and_failing(db: InMemoryDb, held: _HeldFinalFlush) -> tuple[threading.Thread, list[BaseException]]:
    """Start ``db.close()`` in a thread, its final flush held at ``held`` and then failing once; return once it is
    held (the thread, and the list the close's error goes to)."""
    held.hold, held.fail_saves = True, 1
    closer, failed = close_in_thread(db)
    assert held.saving.wait(30)  # close is in its final flush
    return closer, failed


@pytest.mark.timeout(60)
def test_reads_during_close_raise_closed_error_and_start_no_load(tmp_path: Path) -> None:
    """Reads pass no gate while the store is open; once close has begun every read raises ClosedError, and a lazy
    miss starts no load on the closing store. A close whose final flush fails leaves the store readable again."""
    with InMemoryDb(persistence=DirectoryPersistence(tmp_path, fsync=False)) as seed:
        seed.upsert_session({"session_id": "old", "session_data": {"n": 0}})
    held = _HeldFinalFlush(tmp_path)
    db = InMemoryDb(persistence=held, lazy=True, durability="manual")
    db.upsert_session({"session_id": "s", "session_data": {"n": 1}})
    db.put_record("memories", "m", {"memory_id": "m"})
    closer, failed = close_held_and_failing(db, held)
    loads = held.loads
    reads: list[Callable[[], object]] = [
        lambda: db.get_session("s"), lambda: db.get_session("old"), lambda: db.get_run("s", "r"),
        lambda: db.get_sessions(), lambda: db.get_record("memories", "m"), lambda: db.get_record("memories", "x"),
    ]  # fmt: skip
    for read in reads:
        with pytest.raises(ClosedError):
            read()
    assert held.loads == loads  # no lazy load was started on the closing store
    held.hold = False
    held.release.set()
    closer.join(30)
    assert [type(e) for e in failed] == [PersistenceError]  # the injected failure: the store is open again
    assert db.get_session("s")["session_data"] == {"n": 1}  # type: ignore[index]
    assert db.get_session("old")["session_data"] == {"n": 0}  # type: ignore[index]  # loaded now
    assert held.loads == loads + 1
    db.close()
    for read in reads:
        with pytest.raises(ClosedError):
            read()
    with InMemoryDb(persistence=DirectoryPersistence(tmp_path, fsync=False)) as again:
        assert {s["session_id"] for s in again.get_all_sessions()} == {"old", "s"}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bounded", [False, True])
def test_reads_racing_close_return_the_session_or_raise_closed_error(tmp_path: Path, bounded: bool) -> None:
    """Readers in four threads while another closes: each read returns the stored session, whole, or raises
    ClosedError; after close returns, every read raises. (A bounded store's reads move its LRU: guarded.)"""
    options: dict[str, Any] = {"max_sessions": 8} if bounded else {}
    db = InMemoryDb(persistence=DirectoryPersistence(tmp_path, fsync=False), **options)
    for i in range(16):
        db.upsert_session({"session_id": f"s{i}", "session_data": {"i": i}, "runs": [{"run_id": "r", "i": i}]})
    db.flush()  # a bounded store evicts clean sessions: reads of evicted ones load (through the gate)
    started = threading.Barrier(5)
    closed = threading.Event()
    after_close: list[str] = []

    def reader(t: int) -> Callable[[], None]:
        def run() -> None:
            started.wait()
            for k in range(1_000_000):
                i = (t + k) % 16
                try:
                    got = db.get_session(f"s{i}")
                except ClosedError:
                    return
                if closed.is_set():
                    after_close.append(f"s{i}")
                assert got is not None
                assert got["session_data"] == {"i": i}
                assert got["runs"] == [{"run_id": "r", "i": i}]

        return run

    def closer() -> None:
        started.wait()
        db.close()
        closed.set()

    assert run_threads([reader(t) for t in range(4)] + [closer]) == []
    # a read admitted just before close may return once close has returned, but none may begin after it
    assert len(after_close) <= 4
    with pytest.raises(ClosedError):
        db.get_session("s0")


def test_with_block_closes_the_store() -> None:
    """Leaving a with block closes the facade and stops its thread, also when the block raises."""
    before = portal_threads()
    with InMemoryDb() as db:
        assert isinstance(db, InMemoryDb)
        (thread,) = portal_threads() - before
        db.upsert_session({"session_id": "s"})
    assert not thread.is_alive()
    with pytest.raises(ClosedError):
        db.get_session("s")

    def failing_block() -> None:
        with InMemoryDb() as other:
            (thread,) = portal_threads() - before
            raise LookupError(other, thread)

    with pytest.raises(LookupError) as info:
        failing_block()
    other, thread = info.value.args
    assert not thread.is_alive()
    with pytest.raises(ClosedError):
        other.get_session("s")


def test_close_flushes_to_directory_persistence(tmp_path: Path) -> None:
    """With durability="manual" nothing is written until close(), which flushes; a reopened store sees it all."""
    db = InMemoryDb(persistence=DirectoryPersistence(tmp_path, fsync=False), durability="manual")
    db.upsert_session({"session_id": "s", "user_id": "u", "runs": [{"run_id": "r1"}]})
    db.put_record("memories", "m1", {"user_id": "u", "memory": "likes tea"})
    assert not list(tmp_path.rglob("*.json"))  # nothing persisted yet: close is what writes
    stored = db.get_session("s")
    db.close()
    assert list(tmp_path.rglob("*.json"))
    with InMemoryDb(persistence=DirectoryPersistence(tmp_path, fsync=False)) as again:
        assert again.get_session("s") == stored
        assert again.get_record("memories", "m1") == {"user_id": "u", "memory": "likes tea"}


def test_dropped_facade_stops_its_thread_and_flushes(tmp_path: Path) -> None:
    """A facade garbage-collected without close() stops its loop thread and flushes (weakref.finalize)."""
    before = portal_threads()
    db = InMemoryDb(persistence=DirectoryPersistence(tmp_path, fsync=False), durability="manual")
    (thread,) = portal_threads() - before
    db.upsert_session({"session_id": "s", "session_data": {"k": 1}})
    ref = weakref.ref(db)
    del db
    gc.collect()
    assert ref() is None
    thread.join(10)
    assert not thread.is_alive()
    with InMemoryDb(persistence=DirectoryPersistence(tmp_path, fsync=False)) as again:
        got = again.get_session("s")
        assert got is not None
        assert got["session_data"] == {"k": 1}


# -- the seed contract (SPEC section 2) ------------------------------------------------------------------------


def test_storage_dict_seed_flow() -> None:
    """The caller's dict is the storage, and its json round trip seeds a new facade with the same sessions."""
    clock = FakeClock()
    my_sessions: dict[str, Any] = {}
    db = InMemoryDb(storage_dict=my_sessions, clock=clock)
    q1 = {"run_id": "r1", "content": "What is the capital of France?"}
    q2 = {"run_id": "r2", "content": "What is its population?"}
    db.upsert_session({"session_id": "a", "user_id": "u1", "agent_id": "ag", "runs": [q1]})
    clock.now += 1
    db.upsert_session({"session_id": "b", "user_id": "u2"})
    clock.now += 1
    db.upsert_session({"session_id": "c", "user_id": "u1"})
    clock.now += 1
    db.upsert_run("a", {**q2})
    assert len(my_sessions) == 3
    assert my_sessions["a"] == db.get_session("a")  # kept in step with every write
    everything = db.get_all_sessions()
    recent = db.get_recent_sessions(limit=2)
    assert [s["session_id"] for s in recent] == ["a", "c"]
    blob = json.dumps(my_sessions, default=str)
    db.close()

    restored = json.loads(blob)
    new_db = InMemoryDb(storage_dict=restored)
    try:
        assert new_db.get_all_sessions() == everything
        assert [s["session_id"] for s in new_db.get_all_sessions(user_id="u1")] == ["a", "c"]
        assert new_db.get_recent_sessions(limit=2) == recent
        got = new_db.get_session("a")
        assert got is not None
        assert got["runs"] == [q1, q2]  # sees the earlier history
        assert new_db.delete_session("b") is True
        assert sorted(restored) == ["a", "c"]
        assert new_db.delete_session("b") is False
        new_db.drop()
        assert restored == {}
        assert new_db.get_all_sessions() == []
        assert new_db.get_recent_sessions(limit=2) == []
    finally:
        new_db.close()


def test_storage_dict_round_trip_keeps_the_later_write_first() -> None:
    """A json round trip of the storage dict keeps "the later write first" among sessions of one second."""
    clock = FakeClock()
    my_sessions: dict[str, Any] = {}
    with InMemoryDb(storage_dict=my_sessions, clock=clock) as db:
        db.upsert_session({"session_id": "a"})
        db.upsert_session({"session_id": "b"})
        db.upsert_session({"session_id": "a", "session_data": {"edited": True}})
        assert [s["session_id"] for s in db.get_recent_sessions(limit=2)] == ["a", "b"]
        blob = json.dumps(my_sessions, default=str)
    with InMemoryDb(storage_dict=json.loads(blob), clock=clock) as new_db:
        assert [s["session_id"] for s in new_db.get_recent_sessions(limit=2)] == ["a", "b"]
