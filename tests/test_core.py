"""AsyncInMemoryDb without persistence: every method, isolation, validation, owner guard, concurrency."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

from aiomemdb import (
    AsyncInMemoryDb,
    ClosedError,
    ConflictError,
    NotFoundError,
    OwnershipError,
    SerializationError,
    ValidationError,
)


class FakeClock:
    """A settable clock so tests control updated_at without sleeping."""

    def __init__(self, now: float = 1_700_000_000) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def db(clock: FakeClock) -> AsyncIterator[AsyncInMemoryDb]:
    async with AsyncInMemoryDb(clock=clock) as store:
        yield store


def session(sid: str, **fields: Any) -> dict[str, Any]:
    return {"session_id": sid, **fields}


def runs(n: int, prefix: str = "r") -> list[dict[str, Any]]:
    return [{"run_id": f"{prefix}{i}", "content": f"answer {i}", "metrics": {"t": i}} for i in range(n)]


# -- basic reads and writes -------------------------------------------------------------------------------------


async def test_upsert_then_get_returns_equal_copy_with_store_fields(db: AsyncInMemoryDb, clock: FakeClock) -> None:
    """A stored session comes back equal, with created_at/updated_at from the clock and version 1."""
    stored = await db.upsert_session(session("s1", user_id="u1", session_data={"k": [1, 2]}, runs=runs(2)))
    got = await db.get_session("s1")
    assert got == stored
    assert got is not None
    assert got["session_data"] == {"k": [1, 2]}
    assert [r["run_id"] for r in got["runs"]] == ["r0", "r1"]
    assert (got["created_at"], got["updated_at"], got["version"]) == (int(clock.now), int(clock.now), 1)


async def test_update_keeps_created_at_bumps_version_and_updated_at(db: AsyncInMemoryDb, clock: FakeClock) -> None:
    """Replacing a session keeps its created_at, sets updated_at to now and increments version."""
    await db.upsert_session(session("s1"))
    created = int(clock.now)
    clock.now += 10
    stored = await db.upsert_session(session("s1", summary="x", created_at=5))
    assert (stored["created_at"], stored["updated_at"], stored["version"]) == (created, created + 10, 2)


async def test_create_keeps_callers_created_at(db: AsyncInMemoryDb) -> None:
    """A new session supplied with created_at keeps it (agno passes its own)."""
    stored = await db.upsert_session(session("s1", created_at=123))
    assert stored["created_at"] == 123


async def test_upsert_without_runs_key_keeps_stored_runs(db: AsyncInMemoryDb) -> None:
    """Saving the session row without a runs key never drops runs written before."""
    await db.upsert_session(session("s1", runs=runs(3)))
    await db.upsert_session(session("s1", summary="new"))
    got = await db.get_session("s1")
    assert got is not None
    assert got["summary"] == "new"
    assert [r["run_id"] for r in got["runs"]] == ["r0", "r1", "r2"]


async def test_upsert_with_runs_replaces_runs(db: AsyncInMemoryDb) -> None:
    """An explicit runs list (even empty or None) replaces the stored runs."""
    await db.upsert_session(session("s1", runs=runs(3)))
    await db.upsert_session(session("s1", runs=[]))
    assert (await db.get_session("s1") or {})["runs"] == []
    await db.upsert_session(session("s1", runs=None))
    assert (await db.get_session("s1") or {})["runs"] is None


async def test_missing_session_is_none(db: AsyncInMemoryDb) -> None:
    """Reading an unknown id returns None rather than raising."""
    assert await db.get_session("nope") is None


async def test_runs_limit_returns_last_runs(db: AsyncInMemoryDb) -> None:
    """runs_limit=N returns the N most recent runs in order; 0 returns none."""
    await db.upsert_session(session("s1", runs=runs(5)))
    got = await db.get_session("s1", runs_limit=2)
    assert got is not None
    assert [r["run_id"] for r in got["runs"]] == ["r3", "r4"]
    got0 = await db.get_session("s1", runs_limit=0)
    assert got0 is not None
    assert got0["runs"] == []
    with pytest.raises(ValidationError):
        await db.get_session("s1", runs_limit=-1)


# -- expected_version -------------------------------------------------------------------------------------------


async def test_expected_version_conflicts(db: AsyncInMemoryDb) -> None:
    """A stale expected_version raises ConflictError and leaves the stored session unchanged."""
    await db.upsert_session(session("s1", summary="a"), expected_version=0)
    with pytest.raises(ConflictError) as info:
        await db.upsert_session(session("s1", summary="b"), expected_version=0)
    assert info.value.actual == 1
    await db.upsert_session(session("s1", summary="b"), expected_version=1)
    with pytest.raises(ConflictError):
        await db.upsert_session(session("s1", summary="c"), expected_version=1)
    got = await db.get_session("s1")
    assert got is not None
    assert (got["summary"], got["version"]) == ("b", 2)


# -- isolation --------------------------------------------------------------------------------------------------


async def test_mutating_input_or_output_never_changes_store(db: AsyncInMemoryDb) -> None:
    """No returned object aliases stored state, and later changes to the passed-in object are not seen."""
    data = session("s1", session_data={"nested": {"list": [1]}}, runs=runs(1))
    returned = await db.upsert_session(data)
    data["session_data"]["nested"]["list"].append(2)
    data["runs"][0]["content"] = "hacked"
    returned["session_data"]["nested"]["list"].append(3)
    returned["runs"].append({"run_id": "x"})
    got = await db.get_session("s1")
    assert got is not None
    got["session_data"]["nested"]["list"].append(4)
    again = await db.get_session("s1")
    assert again is not None
    assert again["session_data"] == {"nested": {"list": [1]}}
    assert again["runs"] == runs(1)
    listed, _ = await db.get_sessions()
    listed[0]["runs"].clear()
    run = {"run_id": "r9", "meta": {"a": 1}}
    await db.upsert_run("s1", run)
    run["meta"]["a"] = 2
    final = await db.get_session("s1")
    assert final is not None
    assert final["runs"][-1] == {"run_id": "r9", "meta": {"a": 1}}
    assert len(final["runs"]) == 2


# -- validation -------------------------------------------------------------------------------------------------


async def test_non_serialisable_value_names_its_path_and_stores_nothing(db: AsyncInMemoryDb) -> None:
    """A value orjson cannot encode raises SerializationError with its path; the old version survives."""
    await db.upsert_session(session("s1", summary="kept", runs=runs(4)))
    bad_runs = runs(4)
    bad_runs[3]["metrics"]["t"] = object()
    with pytest.raises(SerializationError) as info:
        await db.upsert_session(session("s1", summary="lost", runs=bad_runs))
    assert info.value.path == "runs[3].metrics.t"
    assert "runs[3].metrics.t" in str(info.value)
    got = await db.get_session("s1")
    assert got is not None
    assert got["summary"] == "kept"
    assert got["version"] == 1


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"a": {1, 2}}, "session_data.a"),
        ({"a": [b"bytes"]}, "session_data.a[0]"),
        ({"a": {1: "int key"}}, "session_data.a[1]"),
        ({"a": 2**70}, "session_data.a"),
    ],
)
async def test_serialisation_errors_have_paths(db: AsyncInMemoryDb, value: Any, path: str) -> None:
    """Sets, bytes, non-str keys and huge ints are refused with the path of the bad value."""
    with pytest.raises(SerializationError) as info:
        await db.upsert_session(session("s1", session_data=value))
    assert info.value.path == path
    assert await db.get_session("s1") is None


async def test_rich_values_encode_natively(db: AsyncInMemoryDb) -> None:
    """datetimes, UUIDs, dataclasses and pydantic models are stored as their JSON forms, never str()'d."""

    class Model(BaseModel):
        x: int
        when: dt.datetime

    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    when = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    uid = uuid.UUID(int=7)
    await db.upsert_session(
        session("s1", metadata={"when": when, "id": uid, "model": Model(x=1, when=when), "pt": Point(1, 2)})
    )
    got = await db.get_session("s1")
    assert got is not None
    assert got["metadata"] == {
        "when": "2025-01-02T03:04:05+00:00",
        "id": str(uid),
        "model": {"x": 1, "when": "2025-01-02T03:04:05Z"},
        "pt": {"x": 1, "y": 2},
    }


@pytest.mark.parametrize("bad", ["", None, 5, "x" * 513, "a\x00b"])
async def test_bad_session_ids_rejected(db: AsyncInMemoryDb, bad: Any) -> None:
    """Empty, non-str, over-long and NUL-containing ids raise ValidationError at the call."""
    with pytest.raises(ValidationError):
        await db.upsert_session({"session_id": bad})
    with pytest.raises(ValidationError):
        await db.get_session(bad)
    assert (await db.get_sessions())[1] == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"session_id": "s", "runs": [{"no_run_id": 1}]},
        {"session_id": "s", "runs": [{"run_id": "a"}, {"run_id": "a"}]},
        {"session_id": "s", "runs": "not a list"},
        {"session_id": "s", "runs": ["not a dict"]},
        {"session_id": "s", "user_id": 5},
        {"session_id": "s", "session_data": "not a dict"},
        ["not", "a", "dict"],
    ],
)
async def test_bad_shapes_rejected(db: AsyncInMemoryDb, bad: Any) -> None:
    """Sessions of the wrong shape raise ValidationError and nothing is stored."""
    with pytest.raises(ValidationError):
        await db.upsert_session(bad)
    assert await db.get_session("s") is None


# -- runs -------------------------------------------------------------------------------------------------------


async def test_upsert_run_appends_and_replaces_in_place(db: AsyncInMemoryDb, clock: FakeClock) -> None:
    """upsert_run appends a new run, replaces one with the same run_id in place, and bumps the version."""
    await db.upsert_session(session("s1", runs=runs(3)))
    clock.now += 5
    await db.upsert_run("s1", {"run_id": "r1", "content": "edited"})
    await db.upsert_run("s1", {"run_id": "r9", "content": "new"})
    got = await db.get_session("s1")
    assert got is not None
    assert [r["run_id"] for r in got["runs"]] == ["r0", "r1", "r2", "r9"]
    assert got["runs"][1] == {"run_id": "r1", "content": "edited"}
    assert (got["version"], got["updated_at"]) == (3, int(clock.now))


async def test_upsert_run_on_session_without_runs(db: AsyncInMemoryDb) -> None:
    """The first run of a session created without runs starts its runs list."""
    await db.upsert_session(session("s1"))
    await db.upsert_run("s1", {"run_id": "a"})
    assert (await db.get_session("s1") or {})["runs"] == [{"run_id": "a"}]


async def test_upsert_run_errors(db: AsyncInMemoryDb) -> None:
    """upsert_run on a missing session raises NotFoundError; a bad run raises and changes nothing."""
    with pytest.raises(NotFoundError):
        await db.upsert_run("missing", {"run_id": "a"})
    await db.upsert_session(session("s1", runs=runs(1)))
    with pytest.raises(ValidationError):
        await db.upsert_run("s1", {"content": "no id"})
    with pytest.raises(SerializationError) as info:
        await db.upsert_run("s1", {"run_id": "b", "x": {"y": object()}})
    assert info.value.path == "run.x.y"
    got = await db.get_session("s1")
    assert got is not None
    assert got["runs"] == runs(1)
    assert got["version"] == 1


async def test_delete_run(db: AsyncInMemoryDb) -> None:
    """delete_run removes exactly one run and reports whether it existed."""
    await db.upsert_session(session("s1", runs=runs(3)))
    assert await db.delete_run("s1", "r1") is True
    assert await db.delete_run("s1", "r1") is False
    assert await db.delete_run("missing", "r1") is False
    assert [r["run_id"] for r in (await db.get_session("s1") or {})["runs"]] == ["r0", "r2"]


# -- update_session ---------------------------------------------------------------------------------------------


async def test_update_session_sync_and_async_fn(db: AsyncInMemoryDb) -> None:
    """update_session applies sync and async functions, creates from None, and None means no change."""

    def create(current: dict[str, Any] | None) -> dict[str, Any]:
        assert current is None
        return session("s1", session_data={"n": 1})

    async def bump(current: dict[str, Any] | None) -> dict[str, Any]:
        assert current is not None
        await asyncio.sleep(0)
        current["session_data"]["n"] += 1
        return current

    assert (await db.update_session("s1", create) or {})["session_data"] == {"n": 1}
    assert (await db.update_session("s1", bump) or {})["session_data"] == {"n": 2}
    assert await db.update_session("s1", lambda cur: None) is None
    assert (await db.get_session("s1") or {})["version"] == 2
    with pytest.raises(ValidationError):
        await db.update_session("s1", lambda cur: session("other"))


async def test_thousand_concurrent_updates_lose_nothing(db: AsyncInMemoryDb) -> None:
    """1,000 tasks incrementing 10 sessions through update_session (yielding mid-update) lose no increment."""
    for i in range(10):
        await db.upsert_session(session(f"s{i}", session_data={"n": 0}))

    async def incr(current: dict[str, Any] | None) -> dict[str, Any]:
        assert current is not None
        n = current["session_data"]["n"]
        await asyncio.sleep(0)  # let every other task run between the read and the write
        current["session_data"]["n"] = n + 1
        return current

    async def writer(i: int) -> None:
        await db.update_session(f"s{i % 10}", incr)
        if i % 7 == 0:  # plain writes to the same sessions must also wait for the lock
            await db.upsert_run(f"s{i % 10}", {"run_id": f"r{i}"})

    await asyncio.gather(*(writer(i) for i in range(1000)))
    for i in range(10):
        got = await db.get_session(f"s{i}")
        assert got is not None
        assert got["session_data"]["n"] == 100
    assert db._rt.locks == {}  # every per-session lock was dropped once idle


async def test_cancelled_update_writes_nothing_and_releases_lock(db: AsyncInMemoryDb) -> None:
    """Cancelling update_session while its function awaits leaves the session untouched and unlocked."""
    await db.upsert_session(session("s1", summary="before"))
    entered = asyncio.Event()

    async def slow(current: dict[str, Any] | None) -> dict[str, Any]:
        entered.set()
        await asyncio.sleep(60)
        return session("s1", summary="after")

    task = asyncio.create_task(db.update_session("s1", slow))
    await entered.wait()
    waiting_writer = asyncio.create_task(db.upsert_session(session("s1", summary="queued")))
    await asyncio.sleep(0)
    assert not waiting_writer.done()  # the plain write waits for the lock
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await waiting_writer
    got = await db.get_session("s1")
    assert got is not None
    assert got["summary"] == "queued"
    assert got["version"] == 2
    assert db._rt.locks == {}


async def test_cancelled_waiting_write_lands_nothing(db: AsyncInMemoryDb) -> None:
    """A write cancelled while waiting for a session's lock is not applied at all."""
    await db.upsert_session(session("s1", summary="before"))
    release = asyncio.Event()

    async def hold(current: dict[str, Any] | None) -> None:
        await release.wait()
        return None

    holder = asyncio.create_task(db.update_session("s1", hold))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(db.upsert_session(session("s1", summary="never")))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await holder
    got = await db.get_session("s1")
    assert got is not None
    assert got["summary"] == "before"


# -- owner guard ------------------------------------------------------------------------------------------------


async def test_owner_guard(db: AsyncInMemoryDb) -> None:
    """A session owned by one user is invisible to and not writable by another."""
    await db.upsert_session(session("s1", user_id="alice", runs=runs(1)))
    assert await db.get_session("s1", user_id="bob") is None
    assert await db.get_session("s1", user_id="alice") is not None
    with pytest.raises(OwnershipError):
        await db.upsert_session(session("s1", user_id="bob"))
    with pytest.raises(OwnershipError):
        await db.upsert_session(session("s1"))  # dropping the owner is a write by "nobody"
    with pytest.raises(NotFoundError):
        await db.upsert_run("s1", {"run_id": "x"}, user_id="bob")
    assert await db.delete_run("s1", "r0", user_id="bob") is False
    assert await db.rename_session("s1", "pwned", user_id="bob") is None
    assert await db.update_session("s1", lambda cur: cur, user_id="bob") is None
    assert await db.delete_session("s1", user_id="bob") is False
    assert await db.delete_sessions(["s1"], user_id="bob") == 0
    assert (await db.get_sessions(user_id="bob"))[1] == 0
    got = await db.get_session("s1")
    assert got is not None
    assert got["version"] == 1
    assert got["user_id"] == "alice"
    assert await db.delete_session("s1", user_id="alice") is True


async def test_unowned_session_can_be_claimed(db: AsyncInMemoryDb) -> None:
    """A session without user_id may be taken over by a user, as in Agno."""
    await db.upsert_session(session("s1"))
    stored = await db.upsert_session(session("s1", user_id="alice"))
    assert stored["user_id"] == "alice"


# -- listing ----------------------------------------------------------------------------------------------------


async def _populate(db: AsyncInMemoryDb, clock: FakeClock) -> None:
    specs = [
        ("a1", "alice", "agent", "ag1", None, "Trip to Paris"),
        ("a2", "alice", "team", None, "tm1", "paris again"),
        ("b1", "bob", "agent", "ag1", None, "groceries"),
        ("b2", "bob", "workflow", None, None, None),
        ("c1", None, "agent", "ag2", None, "PARIS"),
    ]
    for sid, user, kind, agent, team, name in specs:
        clock.now += 1
        await db.upsert_session(
            session(
                sid,
                user_id=user,
                session_type=kind,
                agent_id=agent,
                team_id=team,
                workflow_id="wf1" if kind == "workflow" else None,
                session_data={"session_name": name} if name else None,
            )
        )


async def test_get_sessions_filters(db: AsyncInMemoryDb, clock: FakeClock) -> None:
    """Each filter of get_sessions selects exactly the matching sessions, newest first, with a total."""
    await _populate(db, clock)

    async def ids(**kw: Any) -> list[str]:
        rows, total = await db.get_sessions(**kw)
        assert total == len(rows)
        return [r["session_id"] for r in rows]

    assert await ids() == ["c1", "b2", "b1", "a2", "a1"]
    assert await ids(user_id="alice") == ["a2", "a1"]
    assert await ids(session_type="agent") == ["c1", "b1", "a1"]
    assert await ids(agent_id="ag1") == ["b1", "a1"]
    assert await ids(team_id="tm1") == ["a2"]
    assert await ids(workflow_id="wf1") == ["b2"]
    assert await ids(component_id="ag1") == ["b1", "a1"]
    assert await ids(component_id="tm1") == ["a2"]
    assert await ids(session_name="paris") == ["c1", "a2", "a1"]
    assert await ids(user_id="alice", session_type="agent") == ["a1"]
    assert await ids(user_id="bob", agent_id="ag2") == []
    assert await ids(user_id="nobody") == []
    t0 = 1_700_000_000
    assert await ids(start_timestamp=t0 + 2, end_timestamp=t0 + 4) == ["b2", "b1", "a2"]


async def test_get_sessions_sorting(db: AsyncInMemoryDb, clock: FakeClock) -> None:
    """sort_by/sort_order order by updated_at, created_at or session_id in either direction."""
    await _populate(db, clock)
    clock.now += 1
    await db.upsert_session(session("a1", user_id="alice", session_type="agent"))  # a1 becomes the newest

    async def ids(**kw: Any) -> list[str]:
        return [r["session_id"] for r in (await db.get_sessions(**kw))[0]]

    assert await ids() == ["a1", "c1", "b2", "b1", "a2"]
    assert await ids(sort_order="asc") == ["a2", "b1", "b2", "c1", "a1"]
    assert await ids(sort_by="created_at") == ["c1", "b2", "b1", "a2", "a1"]
    assert await ids(sort_by="created_at", sort_order="asc") == ["a1", "a2", "b1", "b2", "c1"]
    assert await ids(sort_by="session_id", sort_order="asc") == ["a1", "a2", "b1", "b2", "c1"]
    assert await ids(user_id="alice", sort_order="asc") == ["a2", "a1"]
    with pytest.raises(ValidationError):
        await db.get_sessions(sort_by="bogus")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        await db.get_sessions(sort_order="sideways")  # type: ignore[arg-type]


async def test_pagination_edges(db: AsyncInMemoryDb, clock: FakeClock) -> None:
    """Pages slice the sorted result; the total always counts every match."""
    for i in range(7):
        clock.now += 1
        await db.upsert_session(session(f"s{i}", user_id="u"))

    async def page(**kw: Any) -> tuple[list[str], int]:
        rows, total = await db.get_sessions(**kw)
        return [r["session_id"] for r in rows], total

    assert await page(limit=3) == (["s6", "s5", "s4"], 7)
    assert await page(limit=3, page=2) == (["s3", "s2", "s1"], 7)
    assert await page(limit=3, page=3) == (["s0"], 7)
    assert await page(limit=3, page=4) == ([], 7)
    assert await page(limit=0) == ([], 7)
    assert await page(page=2) == ([f"s{i}" for i in range(6, -1, -1)], 7)
    assert await page(limit=3, page=2, user_id="u", sort_order="asc") == (["s3", "s4", "s5"], 7)
    assert await page(limit=2, page=2, session_name="x") == ([], 0)
    for bad in ({"limit": -1}, {"page": 0}, {"page": -2, "limit": 1}, {"limit": True}):
        with pytest.raises(ValidationError):
            await db.get_sessions(**bad)


async def test_recent_sessions_tie_break_later_write_first(db: AsyncInMemoryDb) -> None:
    """Among sessions updated in the same second, the later write comes first."""
    for sid in ["x", "y", "z"]:
        await db.upsert_session(session(sid))
    await db.upsert_session(session("x", summary="again"))
    recent = await db.get_recent_sessions(limit=2)
    assert [s["session_id"] for s in recent] == ["x", "z"]
    assert [s["session_id"] for s in await db.get_all_sessions()] == ["x", "z", "y"]


async def test_preserved_old_timestamps_are_sorted_correctly(db: AsyncInMemoryDb, clock: FakeClock) -> None:
    """Imports that keep old updated_at values land in their true place in the recency order."""
    await db.upsert_session(session("now"))
    await db.upsert_sessions(
        [session("old", updated_at=100, created_at=50), session("older", updated_at=10, created_at=5)],
        preserve_updated_at=True,
    )
    assert [s["session_id"] for s in await db.get_recent_sessions(limit=3)] == ["now", "old", "older"]
    assert (await db.get_session("old") or {})["updated_at"] == 100


async def test_upsert_sessions_is_all_or_nothing(db: AsyncInMemoryDb) -> None:
    """One bad session in a batch means none of the batch is stored."""
    with pytest.raises(SerializationError):
        await db.upsert_sessions([session("ok1"), session("bad", metadata={"x": object()}), session("ok2")])
    assert (await db.get_sessions())[1] == 0
    stored = await db.upsert_sessions([session("a"), session("b"), session("a", summary="second")])
    assert [s["session_id"] for s in stored] == ["a", "b", "a"]
    assert (await db.get_session("a") or {})["summary"] == "second"


async def test_rename_delete_drop(db: AsyncInMemoryDb) -> None:
    """rename_session sets session_name; delete_session(s) and drop remove sessions and records."""
    await db.upsert_session(session("s1", session_data={"other": 1}, runs=runs(2)))
    await db.upsert_session(session("s2"))
    renamed = await db.rename_session("s1", "Named")
    assert renamed is not None
    assert renamed["session_data"] == {"other": 1, "session_name": "Named"}
    assert len(renamed["runs"]) == 2
    assert [s["session_id"] for s in (await db.get_sessions(session_name="nam"))[0]] == ["s1"]
    assert await db.rename_session("missing", "x") is None
    assert await db.delete_sessions(["s1", "s2", "s3"]) == 2
    assert await db.delete_session("s1") is False
    await db.upsert_session(session("s4"))
    await db.put_record("memories", "m1", {"memory": "x"})
    await db.drop()
    assert (await db.get_sessions())[1] == 0
    assert await db.list_records("memories") == []
    assert db.stats().sessions == 0


# -- collections ------------------------------------------------------------------------------------------------


async def test_collections(db: AsyncInMemoryDb) -> None:
    """Named collections store, list, update, delete and clear records with the owner guard."""
    assert await db.put_record("memories", "m1", {"user_id": "u1", "memory": "likes tea"}) == {
        "user_id": "u1",
        "memory": "likes tea",
    }
    await db.put_records("memories", {"m2": {"user_id": "u2", "memory": "b"}, "m3": {"memory": "c"}})
    assert [m["memory"] for m in await db.list_records("memories")] == ["likes tea", "b", "c"]
    assert [m["memory"] for m in await db.list_records("memories", user_id="u1")] == ["likes tea"]
    assert await db.get_record("memories", "m1", user_id="u2") is None
    with pytest.raises(OwnershipError):
        await db.put_record("memories", "m1", {"user_id": "u2", "memory": "stolen"})
    updated = await db.update_record("memories", "m1", lambda cur: {**(cur or {}), "memory": "likes coffee"})
    assert updated == {"user_id": "u1", "memory": "likes coffee"}
    assert await db.delete_record("memories", "m1", user_id="u2") is False
    assert await db.delete_records("memories", ["m1", "m2", "zz"]) == 2
    assert await db.clear_collection("memories") == 1
    assert await db.list_records("memories") == []
    for bad in ("sessions", "Bad-Name", "", "a" * 65):
        with pytest.raises(ValidationError):
            await db.put_record(bad, "x", {})
    with pytest.raises(ValidationError):
        await db.put_record("memories", "x", ["not a dict"])  # type: ignore[arg-type]
    with pytest.raises(SerializationError):
        await db.put_record("memories", "x", {"v": {1, 2}})
    assert await db.get_record("memories", "x") is None


# -- storage_dict (the seed contract) ---------------------------------------------------------------------------


async def test_storage_dict_is_the_storage_and_round_trips_through_json() -> None:
    """The caller's dict mirrors the store, and json.dumps(default=str) of it reloads the same store."""
    mine: dict[str, Any] = {}
    async with AsyncInMemoryDb(storage_dict=mine) as db:
        await db.upsert_session(session("s1", user_id="u", runs=runs(2)))
        await db.upsert_session(session("s2"))
        await db.upsert_run("s2", {"run_id": "x", "when": dt.datetime(2025, 1, 1, tzinfo=dt.UTC)})
        await db.delete_session("s1")
        await db.upsert_session(session("s3", user_id="u"))
        assert len(mine) == 2
        assert mine["s2"] == await db.get_session("s2")
        before = await db.get_all_sessions()
    blob = json.dumps(mine, default=str)
    async with AsyncInMemoryDb(storage_dict=json.loads(blob)) as again:
        assert await again.get_all_sessions() == before
        assert [s["session_id"] for s in await again.get_recent_sessions(limit=2)] == ["s3", "s2"]
        assert [s["session_id"] for s in await again.get_all_sessions(user_id="u")] == ["s3"]


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ({"s1": {"session_id": "other"}}, "'s1'"),
        ({"s1": "not a dict"}, "'s1'"),
        ({"s1": {"session_id": "s1", "runs": [{"x": 1}]}}, "'s1'"),
        ({5: {"session_id": 5}}, "5"),
    ],
)
async def test_storage_dict_validated_at_construction(bad: dict[Any, Any], fragment: str) -> None:
    """A bad storage_dict entry raises ValidationError naming its key."""
    with pytest.raises(ValidationError, match=fragment):
        AsyncInMemoryDb(storage_dict=bad)


# -- lifecycle --------------------------------------------------------------------------------------------------


async def test_closed_store_raises() -> None:
    """Every operation on a closed store raises ClosedError; closing twice is fine."""
    db = AsyncInMemoryDb()
    await db.upsert_session(session("s1"))  # auto-starts
    await db.aclose()
    await db.aclose()
    with pytest.raises(ClosedError):
        await db.get_session("s1")
    with pytest.raises(ClosedError):
        await db.start()


def test_store_is_bound_to_its_loop() -> None:
    """Using one store from a second event loop raises instead of corrupting its locks."""
    db = AsyncInMemoryDb()
    asyncio.run(db.upsert_session(session("s1")))
    with pytest.raises(RuntimeError, match="bound to the event loop"):
        asyncio.run(db.get_session("s1"))


def test_bad_options_rejected() -> None:
    """Unknown durability, non-positive intervals and conflicting persistence options raise."""
    with pytest.raises(ValidationError):
        AsyncInMemoryDb(durability="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        AsyncInMemoryDb(flush_interval=0)
    with pytest.raises(ValidationError):
        AsyncInMemoryDb(lazy=True)

    async def load() -> dict[str, Any]:
        return {}

    from aiomemdb import DirectoryPersistence

    with pytest.raises(ValidationError):
        AsyncInMemoryDb(persistence=DirectoryPersistence("/tmp/x"), load=load)


async def test_get_run_and_row_only_upsert_return(db: AsyncInMemoryDb) -> None:
    """get_run decodes one run (owner-guarded); upsert_session(include_runs=False) returns the row only."""
    await db.upsert_session(session("s1", user_id="alice", runs=runs(3)))
    assert await db.get_run("s1", "r1") == runs(3)[1]
    assert await db.get_run("s1", "nope") is None
    assert await db.get_run("missing", "r1") is None
    assert await db.get_run("s1", "r1", user_id="bob") is None
    row = await db.upsert_session(session("s1", user_id="alice", summary="x"), include_runs=False)
    assert row["runs"] is None  # left out, as in get_sessions(include_runs=False)
    assert row["summary"] == "x"
    stored = await db.get_session("s1")
    assert stored is not None
    assert len(stored["runs"]) == 3
