"""The blocking facade and the sync Agno class over S3 (moto's server on 127.0.0.1): start, write, restart, read,
lazy read, and two stores on one bucket and prefix conflicting. Calls come from the main thread and a worker."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from aiomemdb import ConflictError, InMemoryDb, S3Persistence

pytest.importorskip("aiobotocore")


@pytest.fixture
def make_s3(s3_bucket: str, s3_client_options: dict[str, str]) -> Callable[..., S3Persistence]:
    """Fresh S3Persistence objects over one bucket and prefix (a new one is a restart, or another replica)."""
    prefix = f"sync-{uuid.uuid4().hex[:8]}"

    def make(**options: Any) -> S3Persistence:
        return S3Persistence(s3_bucket, prefix=prefix, **s3_client_options, **options)

    return make


def in_worker(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a worker thread and return its result (or raise what it raised)."""
    out: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    if errors:
        raise errors[0]
    return out[0]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("thread", ["main", "worker"])
def test_facade_over_s3_start_write_restart_read_lazy(make_s3: Callable[..., S3Persistence], thread: str) -> None:
    """Start, write, close; a restarted store reads it all; a lazy store fetches one session on demand."""
    run: Callable[[Callable[[], Any]], Any] = in_worker if thread == "worker" else (lambda fn: fn())

    def write() -> dict[str, Any]:
        with InMemoryDb(persistence=make_s3()) as db:
            db.upsert_session({"session_id": "s1", "user_id": "u", "runs": [{"run_id": "r1", "content": "hi"}]})
            db.upsert_run("s1", {"run_id": "r2", "content": "again"})
            db.upsert_session({"session_id": "s2"})
            db.put_record("memories", "m1", {"user_id": "u", "memory": "likes tea"})
            stored = db.get_session("s1")
            assert stored is not None
            return stored

    written = run(write)

    def restart() -> None:
        with InMemoryDb(persistence=make_s3()) as db:
            assert db.get_session("s1") == written
            assert {s["session_id"] for s in db.get_all_sessions()} == {"s1", "s2"}
            assert db.get_record("memories", "m1") == {"user_id": "u", "memory": "likes tea"}

    run(restart)

    def lazy() -> None:
        with InMemoryDb(persistence=make_s3(), lazy=True) as db:
            assert db.stats().sessions == 0
            assert db.get_session("s1") == written  # fetched on the loop thread
            assert db.stats().lazy_loads == 1
            assert db.get_session("missing") is None

    run(lazy)


@pytest.mark.timeout(120)
def test_two_facades_on_one_prefix_merge_runs(make_s3: Callable[..., S3Persistence]) -> None:
    """Two stores append different runs to one session; the second flush merges (default policy): both runs kept."""
    with InMemoryDb(persistence=make_s3()) as seed:
        seed.upsert_session({"session_id": "s", "runs": [{"run_id": "r0"}]})
    a = InMemoryDb(persistence=make_s3(), durability="manual")
    b = InMemoryDb(persistence=make_s3(), durability="manual")
    try:
        a.upsert_run("s", {"run_id": "from-a"})
        b.upsert_run("s", {"run_id": "from-b"})
        a.flush()
        assert b.flush().merged == 1
        merged = b.get_session("s")
        assert merged is not None
        assert {r["run_id"] for r in merged["runs"]} == {"r0", "from-a", "from-b"}
    finally:
        a.close()
        b.close()
    with InMemoryDb(persistence=make_s3()) as again:
        stored = again.get_session("s")
        assert stored is not None
        assert {r["run_id"] for r in stored["runs"]} == {"r0", "from-a", "from-b"}


@pytest.mark.timeout(120)
def test_two_facades_on_one_prefix_raise_policy(make_s3: Callable[..., S3Persistence]) -> None:
    """With on_conflict="raise", the second store's flush raises ConflictError and overwrites nothing; its change
    stays dirty (so close() refuses too) until it is resolved with refresh()."""
    with InMemoryDb(persistence=make_s3()) as seed:
        seed.upsert_session({"session_id": "s", "runs": [{"run_id": "r0"}]})
    a = InMemoryDb(persistence=make_s3(), durability="manual")
    b = InMemoryDb(persistence=make_s3(on_conflict="raise"), durability="manual")
    try:
        a.upsert_run("s", {"run_id": "from-a"})
        b.upsert_run("s", {"run_id": "from-b"})
        a.flush()
        with pytest.raises(ConflictError):
            b.flush()
        assert b.stats().dirty == 1
        refreshed = b.refresh("s")  # take a's version, then re-apply on top
        assert refreshed is not None
        assert [r["run_id"] for r in refreshed["runs"]] == ["r0", "from-a"]
        b.upsert_run("s", {"run_id": "from-b"})
        b.flush()
    finally:
        a.close()
        b.close()
    with InMemoryDb(persistence=make_s3()) as again:
        stored = again.get_session("s")
        assert stored is not None
        assert [r["run_id"] for r in stored["runs"]] == ["r0", "from-a", "from-b"]


@pytest.mark.timeout(120)
def test_sync_agno_class_over_s3(make_s3: Callable[..., S3Persistence]) -> None:
    """aiomemdb.agno.InMemoryDb over S3: write an agno session, restart, read it (eagerly, lazily, from a worker
    thread), and a second replica's conflicting run is merged, not lost."""
    pytest.importorskip("agno")
    from agno.session import AgentSession

    from aiomemdb.agno import InMemoryDb as AgnoDb

    session = AgentSession(session_id="chat", agent_id="agent", user_id="u", runs=[], created_at=1, updated_at=1)
    db = AgnoDb(persistence=make_s3())
    db.upsert_session(session)
    db.close()

    again = AgnoDb(persistence=make_s3())
    try:
        got = again.get_session("chat", session_type=_agent_type())
        assert isinstance(got, AgentSession)
        assert got.user_id == "u"
        assert in_worker(lambda: again.get_session("chat", session_type=_agent_type(), deserialize=False))["user_id"]
    finally:
        again.close()

    lazy = AgnoDb(persistence=make_s3(), lazy=True)
    other = AgnoDb(persistence=make_s3(), durability="manual")
    try:
        assert lazy.store.stats().sessions == 0
        got = lazy.get_session("chat", session_type=_agent_type())
        assert isinstance(got, AgentSession)
        lazy.store.upsert_run("chat", {"run_id": "lazy-run"})
        other.store.upsert_run("chat", {"run_id": "other-run"})
        lazy.flush()
        assert other.flush().merged == 1
    finally:
        lazy.close()
        other.close()
    final = AgnoDb(persistence=make_s3())
    try:
        row = final.get_session("chat", session_type=_agent_type(), deserialize=False)
        assert {r["run_id"] for r in row["runs"]} == {"lazy-run", "other-run"}
    finally:
        final.close()


def _agent_type() -> Any:
    from agno.db.base import SessionType

    return SessionType.AGENT
