"""Adversarial tests of ``ops.upsert_session_row`` and the Agno adapter's first insert (f82bd3d).

The create function runs under the kernel lock, only for a session that does not exist, in the same commit.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agno", reason="agno is not installed")

from agno.db.in_memory import InMemoryDb as AgnoInMemoryDb

from aiomemdb import (
    AsyncInMemoryDb,
    DirectoryPersistence,
    InMemoryDb,
    SerializationError,
    ValidationError,
)
from aiomemdb.agno import AsyncInMemoryDb as AgnoAsync
from aiomemdb.agno import InMemoryDb as AgnoSync

from .agno.helpers import agent_run, agent_session, maybe
from .test_journal import segments
from .test_sync import FakeClock, run_threads


def _ours(kind: str, **options: Any) -> Any:
    return AgnoSync(**options) if kind == "sync" else AgnoAsync(**options)


def _stamps(row: dict[str, Any]) -> tuple[Any, Any]:
    return row["created_at"], row["updated_at"]


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("bulk", [False, True], ids=["upsert_session", "upsert_sessions"])
async def test_first_insert_and_later_save_stamp_like_agno(
    kind: str, bulk: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One clock for both: agno's own InMemoryDb and ours, first insert (created_at from the object, updated_at =
    created_at, the runs it carries) and a later save (created_at kept, updated_at = now, runs kept)."""
    clock = FakeClock()
    monkeypatch.setattr(time, "time", clock)
    agno = AgnoInMemoryDb()
    ours = _ours(kind, clock=clock)
    try:
        results = []
        base = int(clock.now)
        for db in (agno, ours):
            clock.now = base
            session = agent_session("s1", created_at=base - 100, runs=[agent_run("r1")])
            session.updated_at = base - 50  # a stamp the first insert must not keep
            first = await maybe(db.upsert_sessions([session]) if bulk else db.upsert_session(session))
            row1 = await maybe(db.get_session("s1", deserialize=False))
            clock.now += 10
            session.runs = []  # a later save never rewrites the stored runs
            await maybe(db.upsert_sessions([session]) if bulk else db.upsert_session(session))
            row2 = await maybe(db.get_session("s1", deserialize=False))
            results.append((_stamps(row1), _stamps(row2), [r["run_id"] for r in row2["runs"]], bool(first)))
        assert results[1] == results[0]
        assert results[0][:2] == ((base - 100, base - 100), (base - 100, base + 10))
    finally:
        await maybe(ours.close())


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_first_insert_with_preserve_updated_at_keeps_the_objects_stamps(kind: str) -> None:
    """upsert_sessions(preserve_updated_at=True) creating a session: both stamps are the imported object's, its
    runs stored; a later preserved save keeps the stored runs and takes the object's stamps."""
    ours = _ours(kind)
    try:
        session = agent_session("s1", created_at=1_000, runs=[agent_run("r1"), agent_run("r2")])
        session.updated_at = 2_000
        await maybe(ours.upsert_sessions([session], preserve_updated_at=True))
        row = await maybe(ours.get_session("s1", deserialize=False))
        assert _stamps(row) == (1_000, 2_000)
        assert [r["run_id"] for r in row["runs"]] == ["r1", "r2"]
        session.runs = []
        session.updated_at = 3_000
        await maybe(ours.upsert_sessions([session], preserve_updated_at=True))
        row = await maybe(ours.get_session("s1", deserialize=False))
        assert _stamps(row) == (1_000, 3_000)
        assert [r["run_id"] for r in row["runs"]] == ["r1", "r2"]
    finally:
        await maybe(ours.close())


async def _seed_on_disk(root: Path) -> None:
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(root, fsync=False)) as seed:
        await seed.upsert_session(
            {
                "session_id": "s1",
                "session_type": "agent",
                "agent_id": "agent-1",
                "user_id": "u",
                "created_at": 1_000,
                "updated_at": 1_000,
                "session_data": {"v": "disk"},
                "runs": [agent_run("stored").to_dict()],
            },
            preserve_updated_at=True,
        )


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("layout", ["lazy", "evicted"])
async def test_a_session_only_on_disk_is_updated_not_created_over(tmp_path: Path, kind: str, layout: str) -> None:
    """A session stored on disk but not in memory (lazy=True and never read; or a bounded store that evicted it):
    the adapter's save of a session object carrying other runs must update the stored one: its runs and created_at
    kept, its version bumped, the object's runs not stored."""
    await _seed_on_disk(tmp_path)
    options: dict[str, Any] = {"persistence": DirectoryPersistence(tmp_path, fsync=False), "durability": "manual"}
    if layout == "lazy":
        options["lazy"] = True
    else:
        options["max_sessions"] = 1
    ours = _ours(kind, **options)
    try:
        if layout == "evicted":
            await maybe(ours.upsert_session(agent_session("other")))
            await maybe(ours._store.flush())
            assert ours._store.stats().resident <= 1
        session = agent_session("s1", user_id="u", created_at=5_000, runs=[agent_run("fresh")])
        out = await maybe(ours.upsert_session(session))
        assert out is not None
        row = await maybe(ours.get_session("s1", deserialize=False))
        assert [r["run_id"] for r in row["runs"]] == ["stored"]
        assert row["created_at"] == 1_000
        assert row["version"] == 2
    finally:
        await maybe(ours.close())


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_another_users_session_is_left_untouched(kind: str) -> None:
    """The owner guard: saving a session another user owns returns None, and the stored row, its runs and its
    version stay as they were; the create function is never called."""
    ours = _ours(kind)
    try:
        await maybe(ours.upsert_session(agent_session("s1", user_id="alice", runs=[agent_run("r1")], state={"k": 1})))
        before = await maybe(ours.get_session("s1", deserialize=False))
        assert await maybe(ours.upsert_session(agent_session("s1", user_id="bob", runs=[agent_run("x")]))) is None
        assert await maybe(ours.get_session("s1", deserialize=False)) == before
    finally:
        await maybe(ours.close())


class _Unencodable:
    pass


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_first_insert_the_kernel_rejects_changes_nothing(tmp_path: Path, kind: str) -> None:
    """A first insert whose run cannot be encoded (an object orjson refuses): SerializationError, no session, no
    journal line, nothing dirty; the same session saved with good runs afterwards is created with them."""
    ours = _ours(kind, persistence=DirectoryPersistence(tmp_path, fsync=False), durability="journal", journal_fsync=0)
    try:
        bad = agent_session("s1", runs=[{"run_id": "r1", "agent_id": "agent-1", "blob": _Unencodable()}])
        with pytest.raises(SerializationError):
            await maybe(ours.upsert_session(bad))
        assert await maybe(ours.get_session("s1")) is None
        assert ours._store.stats().dirty == 0
        assert segments(tmp_path) == []
        await maybe(ours.upsert_session(agent_session("s1", runs=[agent_run("r1")])))
        row = await maybe(ours.get_session("s1", deserialize=False))
        assert [r["run_id"] for r in row["runs"]] == ["r1"]
        lines = (tmp_path / "journal" / segments(tmp_path)[0]).read_bytes().splitlines()
        assert len(lines) == 1  # created with its runs in one commit: one journal line
    finally:
        await maybe(ours.close())


def test_upsert_row_create_is_called_only_for_a_new_session_and_checked() -> None:
    """The core's _upsert_row: create() is not called for an existing session; a create() that raises, returns a
    non-dict or another session_id changes nothing."""
    db = InMemoryDb()
    calls: list[str] = []

    def create() -> dict[str, Any]:
        calls.append("create")
        return {"session_id": "a", "runs": [{"run_id": "r"}]}

    _, created = db._upsert_row({"session_id": "a"}, create)
    assert created is True
    _, created = db._upsert_row({"session_id": "a", "session_data": {"x": 1}}, create)
    assert created is False
    assert calls == ["create"]
    assert db.get_session("a")["runs"] == [{"run_id": "r"}]  # type: ignore[index]

    def boom() -> dict[str, Any]:
        raise RuntimeError("create failed")

    with pytest.raises(RuntimeError):
        db._upsert_row({"session_id": "b"}, boom)
    with pytest.raises(ValidationError):
        db._upsert_row({"session_id": "b"}, lambda: {"session_id": "other"})
    with pytest.raises(ValidationError):
        db._upsert_row({"session_id": "b"}, lambda: ["not", "a", "dict"])  # type: ignore[arg-type, return-value]
    assert db.get_session("b") is None
    assert db.get_session("other") is None
    db.close()


def test_two_threads_creating_the_same_session_at_once_one_creates_the_other_keeps_its_runs() -> None:
    """50 rounds of two threads saving a new session with different runs at the same instant: exactly one call
    creates it (with its runs), the other updates the row and the creator's runs stay."""
    db = InMemoryDb()
    try:
        for i in range(50):
            sid = f"s{i}"
            outcomes: dict[str, bool] = {}

            def save(who: str, sid: str = sid, outcomes: dict[str, bool] = outcomes) -> None:
                _, created = db._upsert_row(
                    {"session_id": sid, "session_data": {"by": who}},
                    lambda: {"session_id": sid, "runs": [{"run_id": who}]},
                )
                outcomes[who] = created

            assert run_threads([lambda: save("x"), lambda: save("y")], timeout=30) == []
            creators = [who for who, created in outcomes.items() if created]
            assert len(creators) == 1
            assert db.get_session(sid)["runs"] == [{"run_id": creators[0]}]  # type: ignore[index]
            assert db.get_session(sid)["version"] == 2  # type: ignore[index]
    finally:
        db.close()


def test_a_reader_never_sees_a_new_agno_session_without_its_runs() -> None:
    """While a writer thread first-inserts 200 sessions each carrying two runs through the sync adapter, a reader
    polling the core sees each session either absent or with both runs."""
    ours = AgnoSync()
    store = ours._store
    done = threading.Event()
    bad: list[Any] = []

    def writer() -> None:
        try:
            for i in range(200):
                ours.upsert_session(agent_session(f"s{i}", runs=[agent_run("r1"), agent_run("r2")]))
        finally:
            done.set()

    def reader() -> None:
        while not done.is_set():
            for doc in store.get_all_sessions():
                if [r["run_id"] for r in doc.get("runs") or []] != ["r1", "r2"]:
                    bad.append(doc["session_id"])

    try:
        assert run_threads([writer, reader], timeout=60) == []
        assert bad == []
        assert len(store.get_all_sessions()) == 200
    finally:
        ours.close()
