"""S3Persistence under network faults: a proxy between the client and moto resets connections, drops responses
of requests that did land, answers 503 SlowDown, or holds requests back past the client's timeout.

Every test ends by healing the network and reading S3 directly (a raw client on the real endpoint): whatever the
faults did, the bucket must hold exactly the expected content, with nothing lost and no run duplicated.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from aiomemdb import _codec
from aiomemdb._exceptions import PersistenceError
from aiomemdb.persistence._base import Changeset
from aiomemdb.persistence._s3 import S3Persistence
from tests._faultproxy import FaultProxy, changeset, read_all, run_ids, server_log, session

pytest.importorskip("aiobotocore")

SESSIONS = _codec.SESSIONS
Factory = Callable[..., Awaitable[S3Persistence]]


@pytest.fixture
async def proxy(s3_endpoint: str) -> AsyncIterator[FaultProxy]:
    """A fault-injecting proxy in front of the test server, healthy until a test says otherwise."""
    seed = int(os.environ.get("AIOMEMDB_FAULT_SEED", "1234"))
    async with FaultProxy(s3_endpoint, seed=seed) as fault_proxy:
        yield fault_proxy


@pytest.fixture
async def raw(s3_client_options: dict[str, str]) -> AsyncIterator[Any]:
    """A plain client on the real endpoint (no proxy) to read what S3 holds."""
    from aiobotocore.session import get_session

    async with get_session().create_client("s3", **s3_client_options) as client:
        yield client


def proxied(s3_bucket: str, s3_client_options: dict[str, str], proxy: FaultProxy, **kwargs: Any) -> S3Persistence:
    """An S3Persistence that talks through ``proxy``, with short timeouts and backoff."""
    from botocore.config import Config

    kwargs.setdefault("backoff_base", 0.005)
    kwargs.setdefault("backoff_max", 0.05)
    kwargs.setdefault("config", Config(connect_timeout=1, read_timeout=1))
    return S3Persistence(s3_bucket, "app", **{**s3_client_options, "endpoint_url": proxy.url}, **kwargs)


@pytest.fixture
async def make(s3_bucket: str, s3_client_options: dict[str, str], proxy: FaultProxy) -> AsyncIterator[Factory]:
    """Opened proxied S3Persistence instances, closed after the test."""
    opened: list[S3Persistence] = []

    async def factory(**kwargs: Any) -> S3Persistence:
        persistence = proxied(s3_bucket, s3_client_options, proxy, **kwargs)
        await persistence.open()
        opened.append(persistence)
        return persistence

    yield factory
    for persistence in opened:
        await persistence.aclose()


async def stored_sessions(raw: Any, bucket: str) -> dict[str, dict[str, Any]]:
    """Every session object under app/v1/sessions/, decoded, by id."""
    out: dict[str, dict[str, Any]] = {}
    for key, data in (await read_all(raw, bucket, "app/v1/sessions/")).items():
        env = _codec.decode_envelope(data, key=key)
        out[env.id] = env.data
    return out


async def save_until_it_lands(persistence: S3Persistence, cs: Changeset, *, attempts: int = 30) -> Any:
    """Call save() again after each failure with the same changeset, as the store's flusher does."""
    for _ in range(attempts - 1):
        try:
            return await persistence.save(cs)
        except PersistenceError:
            await asyncio.sleep(0.01)
    return await persistence.save(cs)


async def eventually(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


# -- single faults, protocol level ---------------------------------------------------------------------------------


async def test_503_slow_down_is_retried(
    make: Factory, proxy: FaultProxy, raw: Any, s3_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Three 503 SlowDown answers in a row are retried with a warning each, and the write lands once."""
    persistence = await make(retries=5)
    proxy.fail_next(3, "503")
    with caplog.at_level(logging.WARNING, logger="aiomemdb.s3"), server_log(s3_bucket) as log:
        assert await persistence.save(changeset({(SESSIONS, "s"): session("s")})) is None
    assert proxy.injected["503"] == 3
    assert caplog.text.count("SlowDown (HTTP 503)") == 3
    assert log.count("PUT", status=200) == 1
    assert await stored_sessions(raw, s3_bucket) == {"s": session("s")}


async def test_connection_resets_are_retried(make: Factory, proxy: FaultProxy, raw: Any, s3_bucket: str) -> None:
    """Connections reset before the request reaches S3 are retried until the write lands."""
    persistence = await make(retries=5)
    await persistence.save(changeset({(SESSIONS, "s"): session("s")}))
    proxy.fail_next(3, "reset")
    await persistence.save(changeset({(SESSIONS, "s"): session("s", runs=4)}))
    assert proxy.injected["reset"] == 3
    assert await stored_sessions(raw, s3_bucket) == {"s": session("s", runs=4)}


async def test_exhausted_retries_raise_and_a_later_save_converges(
    make: Factory, proxy: FaultProxy, raw: Any, s3_bucket: str
) -> None:
    """When every retry fails, save() raises PersistenceError naming the key; saving again later lands it once."""
    persistence = await make(retries=2)
    cs = changeset({(SESSIONS, "s"): session("s"), (SESSIONS, "t"): session("t")})
    proxy.fail_next(50, "503")
    with pytest.raises(PersistenceError, match=r"s3://.*/app/v1/sessions/[st]\.json failed after 2 retries") as info:
        await persistence.save(cs)
    assert info.value.cause is not None
    proxy.heal()
    await persistence.save(cs)
    assert await stored_sessions(raw, s3_bucket) == {"s": session("s"), "t": session("t")}


async def test_create_whose_response_was_lost_is_adopted(
    make: Factory, proxy: FaultProxy, raw: Any, s3_bucket: str
) -> None:
    """A create that landed but whose response was lost is recognised on retry (412, same bytes) and adopted."""
    persistence = await make()
    cs = changeset({(SESSIONS, "s"): session("s")})
    proxy.fail_next(1, "reset_after")
    with server_log(s3_bucket) as log:
        assert await persistence.save(cs) is None
    assert proxy.injected["reset_after"] == 1
    assert log.count("PUT", status=200) == 1  # the lost one
    assert log.count("PUT", status=412) == 1  # its retry, refused because it had landed
    with server_log(s3_bucket) as log:  # the adopted ETag is the current one: the next update just works
        await persistence.save(changeset({(SESSIONS, "s"): session("s", runs=3)}))
    assert [status for _, _, status in log.requests] == [200]
    assert await stored_sessions(raw, s3_bucket) == {"s": session("s", runs=3)}


async def test_merge_whose_response_was_lost_does_not_duplicate_runs(
    make: Factory, proxy: FaultProxy, raw: Any, s3_bucket: str
) -> None:
    """A merged write that landed without a response, then a repeated save, leave each run exactly once."""
    other, ours = await make(), await make()
    await other.save(changeset({(SESSIONS, "s"): session("s", tag="other-")}))
    cs = changeset({(SESSIONS, "s"): session("s", tag="ours-")})
    # our create (412), GET theirs, merged PUT: lands but its response is lost
    proxy.plan(None, None, "reset_after")
    merged = await ours.save(cs)
    assert proxy.injected["reset_after"] == 1
    assert merged is not None
    stored = (await stored_sessions(raw, s3_bucket))["s"]
    assert run_ids(stored) == ["other-run-0", "other-run-1", "ours-run-0", "ours-run-1"]
    assert stored == merged[(SESSIONS, "s")]
    # a restarted replica that never saw the result sends its version again: S3 already holds all of it
    with server_log(s3_bucket) as log:
        again = await (await make()).save(cs)
    assert again == merged
    assert log.count("PUT", status=200) == 0


async def test_lost_delete_response_is_fine(make: Factory, proxy: FaultProxy, raw: Any, s3_bucket: str) -> None:
    """A conditional delete that landed without a response is not an error when retried (the object is gone)."""
    persistence = await make()
    await persistence.save(changeset({(SESSIONS, "s"): session("s"), (SESSIONS, "t"): session("t")}))
    proxy.fail_next(1, "reset_after")
    await persistence.save(changeset(deletes={(SESSIONS, "s")}))
    assert proxy.injected["reset_after"] == 1
    assert set(await stored_sessions(raw, s3_bucket)) == {"t"}


async def test_delayed_request_arriving_after_its_retry_cannot_overwrite(
    make: Factory, proxy: FaultProxy, raw: Any, s3_bucket: str
) -> None:
    """A PUT held back past the client's timeout and delivered after newer writes is refused by its condition."""
    from botocore.config import Config

    persistence = await make(retries=0, config=Config(connect_timeout=1, read_timeout=0.3))
    v1 = changeset({(SESSIONS, "s"): session("s", runs=1)})
    v2 = changeset({(SESSIONS, "s"): session("s", runs=2)})
    proxy.delay = 1.5
    proxy.fail_next(1, "delay")
    with server_log(s3_bucket) as log:
        with pytest.raises(PersistenceError, match="Timeout"):
            await persistence.save(v1)
        await persistence.save(v1)  # the store retries the same dirty data...
        await persistence.save(v2)  # ...and moves on
        await eventually(lambda: log.count("PUT", status=412) == 1)  # the stale v1 arrives, and is refused
    assert log.count("PUT", status=200) == 2
    assert await stored_sessions(raw, s3_bucket) == {"s": session("s", runs=2)}


# -- chaos, through the store --------------------------------------------------------------------------------------


async def test_store_under_chaos_loses_nothing_and_duplicates_nothing(
    s3_bucket: str, s3_client_options: dict[str, str], proxy: FaultProxy, raw: Any
) -> None:
    """Two stores appending runs to shared sessions while 30% of requests fail keep every run exactly once."""
    from botocore.config import Config

    from aiomemdb import AsyncInMemoryDb

    def replica() -> AsyncInMemoryDb:
        # The chaos faults are resets and 503s, never delays, so the client's timeouts only have to be long enough
        # never to fire by themselves: with 1 s, one CI run on 3.12 saw connects to the proxy (which shares this
        # loop) time out, and the final flush, which has no retry, failed the close.
        return AsyncInMemoryDb(
            persistence=proxied(
                s3_bucket, s3_client_options, proxy, retries=0, config=Config(connect_timeout=15, read_timeout=15)
            ),
            flush_interval=0.05,
            max_backoff=0.2,
        )

    ids = [f"chat-{i}" for i in range(8)]
    async with replica() as seed:
        for sid in ids:
            await seed.upsert_session({"session_id": sid, "runs": [{"run_id": "seed"}]})
        await seed.upsert_session({"session_id": "doomed", "runs": []})

    expected: dict[str, set[str]] = {sid: {"seed"} for sid in ids}
    a, b = replica(), replica()
    async with a, b:
        proxy.chaos = 0.3
        rng = random.Random(7)
        step = 0
        while step < 60 or (sum(proxy.injected.values()) < 25 and step < 600):
            step += 1
            for name, db in (("a", a), ("b", b)):
                sid = rng.choice(ids)
                run_id = f"{name}-{step}"
                await db.upsert_run(sid, {"run_id": run_id, "content": f"{name} says {step}"})
                expected[sid].add(run_id)
            if step == 30:
                assert await a.delete_session("doomed")
            await asyncio.sleep(0.01)  # let the flushers run into the faults
        proxy.heal()
        # closing flushes what is still dirty
    assert sum(proxy.injected.values()) >= 25, proxy.injected
    assert a.stats().flush_failures + b.stats().flush_failures > 2  # the stores' own retries were exercised
    stored = await stored_sessions(raw, s3_bucket)
    assert set(stored) == set(ids)
    for sid in ids:
        runs = run_ids(stored[sid])
        assert len(runs) == len(set(runs)), f"{sid}: duplicated runs {runs}"
        assert set(runs) == expected[sid], sid
