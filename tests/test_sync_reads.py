"""Adversarial tests of SyncDriver.read (e407c07): reads of an open store pass no gate; everything else does.

Readers and writers share one session in threads; stores are plain, bounded (reads hit evicted payloads while
other threads write and flush) and lazy with a TTL; closes race the readers, fail and are retried; reads are made
from the loop thread (an ``on_event`` callback). Every wait is bounded; nothing sleeps to synchronise.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aiomemdb import ClosedError, ConflictError, DirectoryPersistence, InMemoryDb, NotFoundError, PersistenceError
from aiomemdb._kernel import Query

from ._faults import Faulty
from .test_sync import _HeldFinalFlush, close_held_and_failing, fast_switching, run_threads  # noqa: F401  (fast_switching: a fixture)

SID = "shared"


def _state(tag: int, k: int) -> dict[str, Any]:
    """A whole session state: its session_data names the tag and the number of r-runs, every r-run the tag."""
    return {
        "session_id": SID,
        "user_id": "u",
        "session_type": "agent",
        "session_data": {"tag": tag, "k": k},
        "runs": [{"run_id": f"r{i}", "tag": tag, "pad": "p" * (i * 37 % 200)} for i in range(k)],
    }


def _check_whole(doc: dict[str, Any] | None) -> None:
    """A session some single write produced: r-runs r0..r{k-1} all carry session_data's tag; x-runs (added
    one by one by upsert_run) are each whole. Raises AssertionError on a mix."""
    if doc is None:
        return
    assert doc["session_id"] == SID
    assert isinstance(doc["version"], int)
    assert doc["version"] >= 1
    data = doc.get("session_data") or {}
    tag, k = data["tag"], data["k"]
    runs = doc["runs"]
    r_runs = [r for r in runs if r["run_id"].startswith("r")]
    assert [r["run_id"] for r in r_runs] == [f"r{i}" for i in range(k)], (data, [r["run_id"] for r in runs])
    assert all(r["tag"] == tag for r in r_runs), (tag, [r["tag"] for r in r_runs])
    for r in runs:
        if r["run_id"].startswith("x"):
            assert r["x"] == int(r["run_id"][1:])
            assert r["pad"] == "q" * r["x"]


def _make(kind: str, root: Path) -> InMemoryDb:
    if kind == "plain":
        return InMemoryDb()
    if kind == "bounded":
        return InMemoryDb(persistence=DirectoryPersistence(root, fsync=False), max_sessions=2, flush_interval=0.001)
    if kind == "bytes":
        return InMemoryDb(persistence=DirectoryPersistence(root, fsync=False), max_bytes=800, flush_interval=0.001)
    assert kind == "lazy-ttl"
    return InMemoryDb(persistence=DirectoryPersistence(root, fsync=False), lazy=True, ttl=0.001, flush_interval=0.001)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["plain", "bounded", "bytes", "lazy-ttl"])
def test_threaded_readers_see_only_whole_states_of_a_session_writers_change(
    tmp_path: Path, kind: str, fast_switching: None  # noqa: F811  (the fixture)
) -> None:
    """Four writer threads on ONE session (upsert_session with its runs, update_session rewriting it whole,
    upsert_run adding runs, delete_session + recreate, rename_session) and four reader threads (get_session,
    get_run, get_sessions, _session_parts); bounded/lazy stores also have other sessions and a flushing thread,
    so reads hit evicted payloads. Every read is a whole state, and nothing but the documented errors is raised."""
    db = _make(kind, tmp_path)
    for i in range(6):
        db.upsert_session({"session_id": f"other{i}", "user_id": "u", "session_data": {"tag": i, "k": 0}})
    db.upsert_session(_state(0, 3))
    done = threading.Event()
    reads = [0]

    def rewrite(t: int) -> Callable[[], None]:
        def run() -> None:
            for n in range(150):
                db.upsert_session(_state(t * 1000 + n, n % 7))

        return run

    def updater() -> None:
        def bump(doc: dict[str, Any] | None) -> dict[str, Any] | None:
            if doc is None:
                return None  # deleted meanwhile
            tag = doc["session_data"]["tag"] + 1
            doc["session_data"]["tag"] = tag
            for r in doc["runs"]:
                if r["run_id"].startswith("r"):
                    r["tag"] = tag
            return doc

        for _ in range(60):
            db.update_session(SID, bump)

    def appender() -> None:
        for j in range(200):
            with contextlib.suppress(NotFoundError):  # deleted meanwhile: documented
                db.upsert_run(SID, {"run_id": f"x{j}", "x": j, "pad": "q" * j})

    def deleter() -> None:
        for n in range(80):
            db.delete_session(SID)
            db.upsert_session(_state(-n, 2))
            db.rename_session(SID, f"name{n}")
            if kind != "plain" and n % 10 == 0:
                db.flush()  # makes payloads clean, so bounds evict them

    def reader(which: int) -> Callable[[], None]:
        def run() -> None:
            while not done.is_set():
                if which == 0:
                    _check_whole(db.get_session(SID))
                elif which == 1:
                    run_doc = db.get_run(SID, "r0")
                    assert run_doc is None or (run_doc["run_id"] == "r0" and isinstance(run_doc["tag"], int))
                elif which == 2:
                    page, total = db.get_sessions(user_id="u")
                    assert total >= len(page)
                    for doc in page:
                        if doc["session_id"] == SID:
                            _check_whole(doc)
                else:
                    parts = db._session_parts(SID)
                    if parts is not None:
                        head, runs = parts
                        _check_whole({**head, "runs": [__import__("orjson").loads(b) for b in (runs or {}).values()]})
                reads[0] += 1

        return run

    def writers() -> None:
        errors = run_threads([rewrite(1), rewrite(2), updater, appender, deleter], timeout=90)
        done.set()
        if errors:
            raise errors[0]

    errors = run_threads([writers] + [reader(w) for w in range(4)], timeout=100)
    assert errors == [], errors
    assert reads[0] > 0
    stats = db.stats()
    if kind in ("bounded", "bytes"):
        assert stats.evictions > 0  # reads did meet evicted payloads
    if kind == "lazy-ttl":
        assert stats.expirations + stats.lazy_loads > 0
    _check_whole(db.get_session(SID))
    db.close()


@pytest.mark.timeout(60)
def test_readers_racing_closes_that_fail_then_succeed(tmp_path: Path) -> None:
    """Readers in four threads while a closer's final flush fails twice (the store reopens each time) and then
    succeeds; a second thread calls close() concurrently every time. Reads return the whole session or raise
    ClosedError; after each failed close reads work again; after the last close every read raises and close()
    stays idempotent."""
    storage = Faulty(DirectoryPersistence(tmp_path, fsync=False))
    db = InMemoryDb(persistence=storage, durability="manual", max_sessions=4)
    for i in range(8):
        db.upsert_session({"session_id": f"s{i}", "session_data": {"i": i}, "runs": [{"run_id": "r", "i": i}]})
    db.flush()
    storage.fail_saves = 2
    closed = threading.Event()
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def reader(t: int) -> Callable[[], None]:
        def run() -> None:
            barrier.wait(30)
            k = 0
            while not closed.is_set():
                i = (t + k) % 8
                k += 1
                try:
                    got = db.get_session(f"s{i}")
                except ClosedError:
                    continue
                assert got is not None
                assert got["session_data"] == {"i": i}
                assert got["runs"] == [{"run_id": "r", "i": i}]

        return run

    def closer(name: str) -> Callable[[], None]:
        def run() -> None:
            barrier.wait(30)
            for attempt in range(10):
                try:
                    db.upsert_session({"session_id": f"s{attempt % 8}", "session_data": {"i": attempt % 8},
                                       "runs": [{"run_id": "r", "i": attempt % 8}]})  # fmt: skip
                    db.close()
                except PersistenceError:
                    outcomes.append(f"{name}: failed")
                    continue
                except ClosedError:
                    if db._d.closed:  # the other closer closed it: fine
                        return
                    continue  # the other closer was mid-close (gate shut): try again
                outcomes.append(f"{name}: closed")
                closed.set()
                return

        return run

    def finisher() -> None:
        barrier.wait(30)

    threads_errors = run_threads([reader(t) for t in range(3)] + [closer("a"), closer("b"), finisher], timeout=50)
    closed.set()
    assert threads_errors == []
    # two injected failures; a close shared by both closers reports its one outcome to each of them
    assert storage.fail_saves == 0
    assert 2 <= sum(o.endswith("failed") for o in outcomes) <= 4, outcomes
    assert sum(o.endswith("closed") for o in outcomes) >= 1, outcomes
    db.close()  # idempotent
    db.close()
    everything = Query.build(limit=None, page=None, sort_order="desc")
    for read in (lambda: db.get_session("s0"), lambda: db.get_run("s0", "r"), lambda: db.get_sessions(),
                 lambda: db._session_parts("s0"), lambda: db._page_parts(everything)):  # fmt: skip
        with pytest.raises(ClosedError):
            read()
    with InMemoryDb(persistence=DirectoryPersistence(tmp_path, fsync=False)) as again:
        assert {s["session_id"] for s in again.get_all_sessions()} == {f"s{i}" for i in range(8)}


@pytest.mark.timeout(60)
def test_a_read_started_during_a_held_final_flush_of_a_bounded_store_never_loads(tmp_path: Path) -> None:
    """A bounded store, close held inside its final save: a read of a resident session and of an evicted one
    (which would need a load) both raise ClosedError at once; no load begins; after the close fails the evicted
    session loads again and reads equal what was written."""
    held = _HeldFinalFlush(tmp_path)
    db = InMemoryDb(persistence=held, durability="manual", max_sessions=1)
    db.upsert_session({"session_id": "a", "session_data": {"v": 1}})
    db.upsert_session({"session_id": "b", "session_data": {"v": 2}})
    db.flush()  # both clean; one is evicted
    db.upsert_session({"session_id": "c", "session_data": {"v": 3}})  # dirty: the final flush has work
    closer, failed = close_held_and_failing(db, held)
    try:
        loads = held.loads
        for sid in ("a", "b", "c"):
            with pytest.raises(ClosedError):
                db.get_session(sid)
            with pytest.raises(ClosedError):
                db._session_parts(sid)
        assert held.loads == loads
    finally:
        held.hold = False
        held.release.set()
        closer.join(30)
    assert [type(e) for e in failed] == [PersistenceError]
    assert [db.get_session(s)["session_data"]["v"] for s in "abc"] == [1, 2, 3]  # type: ignore[index]
    db.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bounded", [False, True])
def test_a_read_from_an_on_event_callback_raises_closed_error_and_the_writer_goes_on(
    tmp_path: Path, bounded: bool
) -> None:
    """``on_event`` runs on the loop thread: a read made there (of a resident session, an evicted one, a
    listing, parts) raises ClosedError, never deadlocks, and the write that emitted the event returns normally."""
    seen: list[str] = []
    results: list[str] = []
    in_callback = threading.Event()
    db: InMemoryDb | None = None

    def on_event(event: Any) -> None:
        kind = getattr(event, "kind", None) or (event.get("kind") if isinstance(event, dict) else repr(event))
        seen.append(str(kind))
        if in_callback.is_set() or db is None:
            return
        in_callback.set()
        for name, read in (("get_session", lambda: db.get_session("a")), ("get_run", lambda: db.get_run("a", "r")),
                           ("get_sessions", lambda: db.get_sessions()), ("parts", lambda: db._session_parts("a")),
                           ("record", lambda: db.get_record("memories", "m"))):  # fmt: skip
            try:
                read()
            except ClosedError:
                results.append(f"{name}: ClosedError")
            except BaseException as exc:
                results.append(f"{name}: {type(exc).__name__}")
            else:
                results.append(f"{name}: returned")

    options: dict[str, Any] = {"max_sessions": 1} if bounded else {}
    db = InMemoryDb(persistence=DirectoryPersistence(tmp_path, fsync=False), on_event=on_event, **options)
    db.upsert_session({"session_id": "a", "runs": [{"run_id": "r"}]})
    db.flush()
    db.upsert_session({"session_id": "b"})
    db.flush()
    db.upsert_session({"session_id": "c"})  # evicts under a bound; always emits something
    if not in_callback.is_set():
        db.delete_session("c")
    db.flush()
    assert in_callback.is_set(), seen
    assert results == [f"{n}: ClosedError" for n in ("get_session", "get_run", "get_sessions", "parts", "record")]
    assert db.get_session("a") is not None  # the store is fine
    db.close()


@pytest.mark.timeout(60)
def test_update_session_racing_plain_reads_and_writes_keeps_every_increment(
    fast_switching: None,  # noqa: F811  (the fixture)
) -> None:
    """update_session (on the loop thread, under the session lock) from three threads, plain upsert_run from a
    fourth and ungated get_session readers: no increment is lost and every read's counter is one some update
    committed (never decreasing for one reader)."""
    db = InMemoryDb()
    db.upsert_session({"session_id": SID, "session_data": {"n": 0}})
    stop = threading.Event()

    def inc(doc: dict[str, Any]) -> dict[str, Any]:
        doc["session_data"]["n"] += 1
        return doc

    def updater() -> None:
        for _ in range(100):
            db.update_session(SID, inc)

    def runs() -> None:
        for j in range(200):
            db.upsert_run(SID, {"run_id": f"x{j}"})

    def reader() -> None:
        last = -1
        while not stop.is_set():
            doc = db.get_session(SID)
            assert doc is not None
            n = doc["session_data"]["n"]
            assert n >= last
            last = n

    def writers() -> None:
        errs = run_threads([updater, updater, updater, runs], timeout=50)
        stop.set()
        if errs:
            raise errs[0]

    errors = run_threads([writers, reader, reader], timeout=55)
    assert [e for e in errors if not isinstance(e, ConflictError)] == []
    assert errors == []
    doc = db.get_session(SID)
    assert doc is not None
    assert doc["session_data"]["n"] == 300
    assert len(doc["runs"]) == 200
    db.close()
