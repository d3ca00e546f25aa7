"""The conditional-write check against two S3 implementations: moto (enforces If-Match / If-None-Match) and
s3rver (accepts and ignores them), both real servers on 127.0.0.1 started by fixtures in conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from aiomemdb import AsyncInMemoryDb, UnsafeStorageError
from tests._faultproxy import read_all, server_log

pytest.importorskip("aiobotocore")

from aiomemdb.persistence._s3 import S3Persistence

VERDICT = "app/v1/_meta/conditional-writes"


@pytest.fixture(params=["moto", "s3rver"])
def server(request: pytest.FixtureRequest) -> dict[str, Any]:
    """One S3 server per run: its name, a fresh bucket, client options, and whether it enforces conditions."""
    if request.param == "moto":
        options = request.getfixturevalue("s3_client_options")
        bucket = request.getfixturevalue("s3_bucket")
    else:
        options = request.getfixturevalue("s3rver_client_options")
        bucket = request.getfixturevalue("s3rver_bucket")
    return {"name": request.param, "bucket": bucket, "options": options, "enforces": request.param == "moto"}


@pytest.fixture
async def raw(server: dict[str, Any]) -> AsyncIterator[Any]:
    from aiobotocore.session import get_session

    async with get_session().create_client("s3", **server["options"]) as client:
        yield client


def replica(server: dict[str, Any], **options: Any) -> AsyncInMemoryDb:
    persistence = S3Persistence(server["bucket"], "app", **server["options"], **options)
    return AsyncInMemoryDb(persistence=persistence, durability="manual")


async def test_the_server_is_checked_at_start(server: dict[str, Any], raw: Any) -> None:
    """moto passes the check (cached, stats say conditional_writes=True); s3rver is refused with
    UnsafeStorageError naming what it did and the single_writer way out, and nothing is cached or left behind."""
    db = replica(server)
    if server["enforces"]:
        async with db:
            stats = db.stats()
            assert stats.conditional_writes is True
            assert stats.single_writer is False
        stored = await read_all(raw, server["bucket"], "app/", meta=True)
        assert list(stored) == [VERDICT]  # the sentinel was deleted, the verdict kept
        return
    with pytest.raises(UnsafeStorageError) as info:
        await db.start()
    await db.aclose()
    text = str(info.value)
    assert "does not enforce conditional writes" in text
    assert "If-None-Match: *" in info.value.behaviour
    assert "If-Match" in info.value.behaviour
    assert "single_writer=True" in text
    assert await read_all(raw, server["bucket"], "app/", meta=True) == {}


async def test_a_cached_verdict_costs_one_get_per_start(s3_bucket: str, s3_client_options: dict[str, str]) -> None:
    """After one passing check, the next start only reads the cached verdict: no probe PUTs."""
    async with AsyncInMemoryDb(persistence=S3Persistence(s3_bucket, "app", **s3_client_options)):
        pass
    with server_log(s3_bucket) as log:
        async with AsyncInMemoryDb(persistence=S3Persistence(s3_bucket, "app", **s3_client_options)):
            pass
    meta = [(method, key) for method, key, _ in log.requests if "/_meta/" in key]
    assert meta == [("GET", f"/{s3_bucket}/{VERDICT}")], log.requests


async def test_two_replicas_against_s3rver_are_refused_then_work_as_single_writers(
    s3rver_bucket: str, s3rver_client_options: dict[str, str]
) -> None:
    """Two replicas on s3rver both refuse to start; with single_writer=True they start, stats() labels them
    (single_writer=True, conditional_writes=False), and their writes to distinct sessions all land."""
    server = {"bucket": s3rver_bucket, "options": s3rver_client_options}
    first, second = replica(server), replica(server)
    for db in (first, second):
        with pytest.raises(UnsafeStorageError):
            await db.start()
        await db.aclose()
    first, second = replica(server, single_writer=True), replica(server, single_writer=True)
    async with first, second:
        for db, name in ((first, "a"), (second, "b")):
            await db.upsert_session({"session_id": name, "runs": [{"run_id": f"{name}-0"}]})
            await db.flush()
            stats = db.stats()
            assert stats.single_writer is True
            assert stats.conditional_writes is False
    async with replica(server, single_writer=True) as check:
        assert {s["session_id"] for s in await check.get_all_sessions()} == {"a", "b"}


async def test_read_only_opens_without_the_check(server: dict[str, Any], raw: Any) -> None:
    """A read-only persistence (the command line's reads) writes no probe and loads on either server."""
    async with replica(server, single_writer=not server["enforces"]) as writer:
        await writer.upsert_session({"session_id": "Ada", "runs": [{"run_id": "r"}]})
    before = await read_all(raw, server["bucket"], "app/", meta=True)
    reader = S3Persistence(server["bucket"], "app", read_only=True, **server["options"])
    await reader.open()
    try:
        assert set((await reader.load())["sessions"]) == {"Ada"}
        assert reader.conditional_writes is None
    finally:
        await reader.aclose()
    assert await read_all(raw, server["bucket"], "app/", meta=True) == before


@pytest.mark.parametrize("sid", ["Ada", "ada", "\u00e9", "e\u0301", "../x", "a/b"])
async def test_awkward_ids_round_trip_on_both_servers(server: dict[str, Any], sid: str) -> None:
    """Ids that differ by case or normalisation, or look like paths, round-trip through a restart and a lazy
    read on either server (S3 keys are case-sensitive, so they keep their layout-1 names)."""
    options = {"single_writer": not server["enforces"]}
    async with replica(server, **options) as db:
        await db.upsert_session({"session_id": sid, "session_data": {"id": sid}})
    persistence = S3Persistence(server["bucket"], "app", **server["options"], **options)
    async with AsyncInMemoryDb(persistence=persistence, lazy=True) as lazy:
        got = await lazy.get_session(sid)
    assert got is not None
    assert got["session_data"] == {"id": sid}
