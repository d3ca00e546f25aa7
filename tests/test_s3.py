"""S3Persistence against a real S3 server (moto on 127.0.0.1): layout, conditional writes, conflicts, errors.

The first half drives the persistence protocol directly with changesets built like the store builds them; the
second half goes through :class:`aiomemdb.AsyncInMemoryDb`. Requests are counted at the server (werkzeug's
request log), so a test sees what really went over the wire.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from aiomemdb import _codec
from aiomemdb._exceptions import (
    ClosedError,
    ConflictError,
    CorruptDataError,
    PersistenceError,
    ValidationError,
)
from aiomemdb.persistence._base import Changeset, Persistence
from aiomemdb.persistence._s3 import S3Persistence
from tests._faultproxy import changeset, envelope, read_all, run_ids, server_log, session

pytest.importorskip("aiobotocore")

Factory = Callable[..., Awaitable[S3Persistence]]
SESSIONS = _codec.SESSIONS


@pytest.fixture
async def raw(s3_client_options: dict[str, str]) -> AsyncIterator[Any]:
    """A plain aiobotocore client to look at (or tamper with) the bucket behind the persistence's back."""
    from aiobotocore.session import get_session

    async with get_session().create_client("s3", **s3_client_options) as client:
        yield client


@pytest.fixture
async def make(s3_bucket: str, s3_client_options: dict[str, str]) -> AsyncIterator[Factory]:
    """Build opened S3Persistence instances on the test bucket (prefix "app" unless given); close them after."""
    opened: list[S3Persistence] = []

    async def factory(**kwargs: Any) -> S3Persistence:
        kwargs.setdefault("prefix", "app")
        persistence = S3Persistence(s3_bucket, **s3_client_options, **kwargs)
        await persistence.open()
        opened.append(persistence)
        return persistence

    yield factory
    for persistence in opened:
        await persistence.aclose()


def sessions_changeset(n: int, *, start: int = 0) -> tuple[Changeset, dict[str, dict[str, Any]]]:
    records = {f"s{i:04d}": session(f"s{i:04d}", runs=1) for i in range(start, start + n)}
    return changeset({(SESSIONS, sid): rec for sid, rec in records.items()}), records


# -- construction ------------------------------------------------------------------------------------------------


def test_is_a_persistence_and_repr_hides_credentials(s3_client_options: dict[str, str]) -> None:
    """S3Persistence satisfies the Persistence protocol and its repr never shows the secret key."""
    persistence = S3Persistence("my-bucket", "/a/b/", **{**s3_client_options, "aws_secret_access_key": "s3cr3t"})
    assert isinstance(persistence, Persistence)
    assert persistence.prefix == "a/b"
    assert "s3cr3t" not in repr(persistence)


@pytest.mark.parametrize("bucket", ["b", "Upper", "-lead", "trail-", "a..b", "192.168.0.1", "x" * 64, "a_b"])
def test_rejects_invalid_bucket_names(bucket: str) -> None:
    """A bucket name S3 would refuse is rejected at construction with a ValidationError."""
    with pytest.raises(ValidationError, match="bucket"):
        S3Persistence(bucket)


@pytest.mark.parametrize("prefix", ["a//b", "a/../b", "./a", "a\nb", "x" * 600])
def test_rejects_bad_prefixes(prefix: str) -> None:
    """A prefix with empty, '.' or '..' segments, control characters or excessive length is rejected."""
    with pytest.raises(ValidationError, match="prefix"):
        S3Persistence("good-bucket", prefix)


def test_rejects_unknown_conflict_policy() -> None:
    """on_conflict accepts only 'merge' and 'raise'."""
    with pytest.raises(ValidationError, match="on_conflict"):
        S3Persistence("good-bucket", on_conflict="ignore")  # type: ignore[arg-type]


def test_missing_aiobotocore_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without aiobotocore, constructing S3Persistence raises an ImportError naming pip install 'aiomemdb[s3]'."""
    from aiomemdb.persistence import _s3_wire

    monkeypatch.setattr(_s3_wire, "_deps", None)
    monkeypatch.setitem(sys.modules, "aiobotocore.session", None)
    with pytest.raises(ImportError, match=r"pip install 'aiomemdb\[s3\]'"):
        S3Persistence("good-bucket")


async def test_use_before_open_raises_closed_error() -> None:
    """Calling load() before open() raises ClosedError instead of an AttributeError deep inside."""
    with pytest.raises(ClosedError):
        await S3Persistence("good-bucket").load()


async def test_injected_client_is_used_and_left_open(raw: Any, s3_bucket: str) -> None:
    """A caller's client is used as it is and still works after aclose()."""
    persistence = S3Persistence(s3_bucket, "inj", client=raw)
    await persistence.open()
    await persistence.save(changeset({(SESSIONS, "a"): session("a")}))
    await persistence.aclose()
    listed = await raw.list_objects_v2(Bucket=s3_bucket, Prefix="inj/")
    assert [o["Key"] for o in listed["Contents"]] == ["inj/v1/_meta/conditional-writes", "inj/v1/sessions/a.json"]


# -- load / save -------------------------------------------------------------------------------------------------


async def test_round_trip_of_500_records_through_a_fresh_instance(make: Factory) -> None:
    """500 sessions plus records of another collection saved by one instance load intact in a new one."""
    writer = await make()
    cs, records = sessions_changeset(500)
    memories = {f"m{i}": {"memory_id": f"m{i}", "memory": f"likes {i}"} for i in range(20)}
    extra = changeset({("memories", mid): m for mid, m in memories.items()})
    assert await writer.save(Changeset(upserts={**cs.upserts, **extra.upserts})) is None

    snapshot = await (await make()).load()
    assert snapshot == {SESSIONS: records, "memories": memories}


async def test_layout_is_prefix_v1_collection_escaped_id(make: Factory, raw: Any, s3_bucket: str) -> None:
    """Objects are stored at {prefix}/v1/{collection}/{escaped id}.json holding exactly the changeset's bytes."""
    persistence = await make(prefix="/tenant/one/")
    cs = changeset({(SESSIONS, "chat 1"): session("chat 1")})
    await persistence.save(cs)
    stored = await read_all(raw, s3_bucket, "")
    assert stored == {"tenant/one/v1/sessions/chat%201.json": cs.upserts[(SESSIONS, "chat 1")]}


async def test_empty_prefix_has_no_leading_slash(make: Factory, raw: Any, s3_bucket: str) -> None:
    """With no prefix, keys start at v1/ (not /v1/)."""
    await (await make(prefix="")).save(changeset({(SESSIONS, "a"): session("a")}))
    assert list(await read_all(raw, s3_bucket, "")) == ["v1/sessions/a.json"]


async def test_load_returns_each_collection_in_write_order(make: Factory) -> None:
    """load() orders each collection by the write sequence stored in the envelopes, whatever the GET order."""
    seqs = {"b": 3, "a": 1, "d": 4, "c": 2}
    upserts = {
        (SESSIONS, sid): _codec.encode_envelope(SESSIONS, sid, _codec.dumps(session(sid)), seq=seq)
        for sid, seq in seqs.items()
    }
    await (await make()).save(Changeset(upserts=upserts))
    assert list((await (await make(max_concurrency=4)).load())[SESSIONS]) == ["a", "c", "b", "d"]


async def test_nothing_stored_is_an_empty_snapshot(make: Factory) -> None:
    """load() of a prefix with no objects returns an empty snapshot, not an error."""
    assert await (await make(prefix="never/written")).load() == {}


async def test_changing_3_of_500_issues_exactly_3_puts(make: Factory, s3_bucket: str) -> None:
    """A changeset of 3 upserts in a 500-record store costs exactly 3 PUTs and no other request."""
    seeded = await make()
    cs, records = sessions_changeset(500)
    await seeded.save(cs)
    persistence = await make()
    await persistence.load()
    changed = {sid: {**records[sid], "summary": "changed"} for sid in ("s0001", "s0250", "s0499")}
    with server_log(s3_bucket) as log:
        await persistence.save(changeset({(SESSIONS, sid): rec for sid, rec in changed.items()}))
    assert log.count("PUT", status=200) == 3
    assert len(log.requests) == 3, log.requests
    fresh = await make()
    for sid, rec in changed.items():
        assert await fresh.load_one(SESSIONS, sid) == rec


async def test_deletes_reach_s3_and_missing_deletes_are_fine(make: Factory, raw: Any, s3_bucket: str) -> None:
    """Deleted keys vanish from S3, by ETag when known and unconditionally when not; a missing key is no error."""
    writer = await make()
    cs, _ = sessions_changeset(5)
    await writer.save(cs)
    other = await make()  # knows no ETags: its deletes are unconditional
    await writer.save(changeset(deletes={(SESSIONS, "s0000"), (SESSIONS, "never-existed")}))
    await other.save(changeset(deletes={(SESSIONS, "s0001")}))
    keys = sorted(await read_all(raw, s3_bucket, "app/"))
    assert keys == [f"app/v1/sessions/s000{i}.json" for i in (2, 3, 4)]


async def test_load_one_returns_record_or_none(make: Factory) -> None:
    """load_one() GETs one record, and returns None for an id that was never stored."""
    persistence = await make()
    await persistence.save(changeset({(SESSIONS, "here"): session("here")}))
    fresh = await make()
    assert await fresh.load_one(SESSIONS, "here") == session("here")
    assert await fresh.load_one(SESSIONS, "not-here") is None


@pytest.mark.parametrize(
    "record_id", ["../x", "a/b", "../../../etc/passwd", "Grüße 👋", "/leading", "x" * 500, "%2E", "~tilde", "."]
)
async def test_awkward_ids_round_trip_and_stay_under_the_prefix(
    make: Factory, raw: Any, s3_bucket: str, record_id: str
) -> None:
    """Ids with separators, dots, unicode or 500 characters round-trip, and their keys stay inside the prefix."""
    persistence = await make(prefix="p")
    await persistence.save(changeset({(SESSIONS, record_id): session(record_id)}))
    keys = list(await read_all(raw, s3_bucket, ""))
    assert len(keys) == 1
    assert keys[0].startswith("p/v1/sessions/")
    assert "/" not in keys[0][len("p/v1/sessions/") :]
    assert len(keys[0].encode()) < 1024
    fresh = await make(prefix="p")
    assert await fresh.load() == {SESSIONS: {record_id: session(record_id)}}
    assert await fresh.load_one(SESSIONS, record_id) == session(record_id)


async def test_corrupt_object_raises_corrupt_data_error_naming_its_key(make: Factory, raw: Any, s3_bucket: str) -> None:
    """Garbage bytes in a record object make load() raise CorruptDataError whose key names that object."""
    persistence = await make()
    await persistence.save(sessions_changeset(3)[0])
    bad = "app/v1/sessions/s0001.json"
    await raw.put_object(Bucket=s3_bucket, Key=bad, Body=b"\x00garbage{")
    with pytest.raises(CorruptDataError) as info:
        await (await make()).load()
    assert info.value.key == bad
    with pytest.raises(CorruptDataError) as one:
        await (await make()).load_one(SESSIONS, "s0001")
    assert one.value.key == bad


async def test_corrupt_objects_can_be_quarantined(make: Factory, raw: Any, s3_bucket: str) -> None:
    """With on_corrupt='quarantine', corrupt objects move to {prefix}/quarantine/ and the rest loads."""
    await (await make()).save(sessions_changeset(3)[0])
    await raw.put_object(Bucket=s3_bucket, Key="app/v1/sessions/s0001.json", Body=b"{broken")
    bad_session = envelope(SESSIONS, "s0002", {"session_id": "s0002", "runs": [{"no": "run_id"}]})
    await raw.put_object(Bucket=s3_bucket, Key="app/v1/sessions/s0002.json", Body=bad_session)
    persistence = await make(on_corrupt="quarantine")
    assert list((await persistence.load())[SESSIONS]) == ["s0000"]
    assert sorted(k for k, _ in persistence.quarantined) == ["app/v1/sessions/s0001.json", "app/v1/sessions/s0002.json"]
    stored = await read_all(raw, s3_bucket, "app/")
    assert sorted(stored) == [
        "app/quarantine/v1/sessions/s0001.json",
        "app/quarantine/v1/sessions/s0002.json",
        "app/v1/sessions/s0000.json",
    ]
    assert stored["app/quarantine/v1/sessions/s0001.json"] == b"{broken"


async def test_object_whose_id_does_not_match_its_key_is_corrupt(make: Factory, raw: Any, s3_bucket: str) -> None:
    """A valid envelope stored under another record's key is reported as corrupt, not loaded under either id."""
    await raw.put_object(Bucket=s3_bucket, Key="app/v1/sessions/a.json", Body=envelope(SESSIONS, "b", session("b")))
    with pytest.raises(CorruptDataError, match="does not match") as info:
        await (await make()).load()
    assert info.value.key == "app/v1/sessions/a.json"


async def test_non_json_objects_are_skipped_with_a_warning(
    make: Factory, raw: Any, s3_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A stray non-.json object under v1/ (an upload tool's temp file) is skipped with a warning."""
    persistence = await make()
    await persistence.save(changeset({(SESSIONS, "a"): session("a")}))
    await raw.put_object(Bucket=s3_bucket, Key="app/v1/sessions/a.json.tmp", Body=b"partial")
    with caplog.at_level(logging.WARNING, logger="aiomemdb.s3"):
        assert await (await make()).load() == {SESSIONS: {"a": session("a")}}
    assert "a.json.tmp" in caplog.text


async def test_json_object_outside_the_layout_is_corrupt(make: Factory, raw: Any, s3_bucket: str) -> None:
    """A .json object in a nested folder or a bad collection folder under v1/ raises CorruptDataError."""
    await raw.put_object(Bucket=s3_bucket, Key="app/v1/Bad-Coll/x.json", Body=b"{}")
    with pytest.raises(CorruptDataError) as info:
        await (await make()).load()
    assert info.value.key == "app/v1/Bad-Coll/x.json"


async def test_missing_bucket_raises_persistence_error(s3_client_options: dict[str, str]) -> None:
    """A bucket that does not exist makes open (its server check), load, load_one and save raise PersistenceError
    with key and cause."""
    checked = S3Persistence("no-such-bucket-here", "app", **s3_client_options)
    with pytest.raises(PersistenceError, match="NoSuchBucket") as opening:
        await checked.open()
    assert opening.value.key == "app/v1/_meta/conditional-writes"
    # single_writer skips the check, so the requests below reach the missing bucket themselves
    persistence = S3Persistence("no-such-bucket-here", "app", single_writer=True, **s3_client_options)
    await persistence.open()
    try:
        with pytest.raises(PersistenceError, match="s3://no-such-bucket-here/app/v1/") as loading:
            await persistence.load()
        assert loading.value.cause is not None
        assert "NoSuchBucket" in str(loading.value)
        with pytest.raises(PersistenceError, match="NoSuchBucket") as one:
            await persistence.load_one(SESSIONS, "a")
        assert one.value.key == "app/v1/sessions/a.json"
        with pytest.raises(PersistenceError, match="NoSuchBucket") as saving:
            await persistence.save(changeset({(SESSIONS, "a"): session("a")}))
        assert saving.value.key == "app/v1/sessions/a.json"
        assert "testing" not in str(saving.value)  # no credentials in messages
    finally:
        await persistence.aclose()


async def test_unreachable_endpoint_raises_persistence_error_after_retries(unused_tcp_port: int) -> None:
    """A dead endpoint is retried `retries` times (transient) and then raises PersistenceError naming the key."""
    persistence = S3Persistence(
        "good-bucket",
        endpoint_url=f"http://127.0.0.1:{unused_tcp_port}",
        region_name="us-east-1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
        retries=2,
        backoff_base=0.001,
        read_only=True,  # no server check at open, so load_one is the first request
    )
    await persistence.open()
    try:
        with pytest.raises(PersistenceError, match="after 2 retries") as info:
            await persistence.load_one(SESSIONS, "a")
        assert info.value.key == "v1/sessions/a.json"
    finally:
        await persistence.aclose()


# -- conditional writes and conflicts ------------------------------------------------------------------------------


async def test_creates_and_updates_are_conditional(make: Factory, s3_bucket: str) -> None:
    """A blind create of an existing key and an update over a stale ETag are both refused by S3 (412 seen)."""
    first = await make()
    await first.save(changeset({(SESSIONS, "a"): session("a", tag="x")}))
    second = await make(on_conflict="raise")  # never read "a": its write must be a create
    with server_log(s3_bucket) as log, pytest.raises(ConflictError):
        await second.save(changeset({(SESSIONS, "a"): session("a", tag="y")}))
    assert log.count("PUT", status=412) == 1
    stored = await (await make()).load_one(SESSIONS, "a")
    assert stored is not None
    assert run_ids(stored) == ["xrun-0", "xrun-1"]


async def test_concurrent_writers_merge_runs_of_one_session(make: Factory) -> None:
    """Two instances appending their own runs to one session concurrently end with every run in S3 (merge)."""
    seed = await make()
    await seed.save(changeset({(SESSIONS, "chat"): session("chat", runs=1, tag="base-")}))
    a, b = await make(), await make()
    base_a, base_b = await a.load_one(SESSIONS, "chat"), await b.load_one(SESSIONS, "chat")
    assert base_a is not None
    assert base_b is not None
    mine = {**base_a, "runs": base_a["runs"] + session("chat", tag="a-")["runs"], "updated_at": 1_700_000_010}
    theirs = {**base_b, "runs": base_b["runs"] + session("chat", tag="b-")["runs"], "updated_at": 1_700_000_020}
    results = await asyncio.gather(
        a.save(changeset({(SESSIONS, "chat"): mine})), b.save(changeset({(SESSIONS, "chat"): theirs}))
    )
    merged = [r for r in results if r]
    assert len(merged) == 1  # exactly one writer lost the race and merged
    final = await (await make()).load_one(SESSIONS, "chat")
    assert final is not None
    assert sorted(run_ids(final)) == sorted(["base-run-0", "a-run-0", "a-run-1", "b-run-0", "b-run-1"])
    assert next(iter(merged[0].values())) == final  # what save() returned is what S3 holds


async def test_independent_creates_of_one_session_merge(make: Factory) -> None:
    """Two instances that each create the same session (If-None-Match) end with the union of their runs."""
    a, b = await make(), await make()
    await a.save(changeset({(SESSIONS, "s"): session("s", tag="a-")}))
    merged = await b.save(changeset({(SESSIONS, "s"): session("s", tag="b-")}))
    assert merged is not None
    final = await (await make()).load_one(SESSIONS, "s")
    assert final is not None
    assert run_ids(final) == ["a-run-0", "a-run-1", "b-run-0", "b-run-1"]
    assert final["version"] == 2
    assert merged[(SESSIONS, "s")] == final


async def test_other_collections_are_last_writer_wins_but_conditional(make: Factory, s3_bucket: str) -> None:
    """For non-session records a conflict is resolved by writing ours again, conditionally on their ETag."""
    a, b = await make(), await make()
    await a.save(changeset({("memories", "m"): {"memory": "from a"}}))
    with server_log(s3_bucket) as log:
        assert await b.save(changeset({("memories", "m"): {"memory": "from b"}})) is None
    assert log.count("PUT", status=412) == 1
    assert log.count("PUT", status=200) == 1
    assert await (await make()).load_one("memories", "m") == {"memory": "from b"}


async def test_repeated_save_is_idempotent_after_a_merge(make: Factory, s3_bucket: str) -> None:
    """Saving the same conflicting changeset twice does not duplicate runs or write again needlessly."""
    a, b = await make(), await make()
    await a.save(changeset({(SESSIONS, "s"): session("s", tag="a-")}))
    ours = changeset({(SESSIONS, "s"): session("s", tag="b-")})
    first = await b.save(ours)
    with server_log(s3_bucket) as log:
        second = await (await make()).save(ours)  # a fresh instance, as after a restart
    assert first == second
    assert log.count("PUT", status=200) == 0  # S3 already holds everything of ours
    final = await (await make()).load_one(SESSIONS, "s")
    assert final is not None
    assert run_ids(final) == ["a-run-0", "a-run-1", "b-run-0", "b-run-1"]


async def test_landed_write_with_lost_response_is_adopted(make: Factory, raw: Any, s3_bucket: str) -> None:
    """When our bytes are already in S3 (a PUT whose response was lost), a retry adopts them without rewriting."""
    persistence = await make()
    cs = changeset({(SESSIONS, "s"): session("s")})
    await raw.put_object(Bucket=s3_bucket, Key="app/v1/sessions/s.json", Body=cs.upserts[(SESSIONS, "s")])
    with server_log(s3_bucket) as log:
        assert await persistence.save(cs) is None
    assert log.count("PUT", status=412) == 1
    assert log.count("PUT", status=200) == 0
    # and the adopted ETag is good for the next update
    with server_log(s3_bucket) as log:
        await persistence.save(changeset({(SESSIONS, "s"): session("s", runs=3)}))
    assert [r[2] for r in log.requests] == [200]


async def test_failed_save_never_lets_the_stores_version_overwrite_a_merge(
    make: Factory, raw: Any, s3_bucket: str
) -> None:
    """When save() fails after merging one key, sending the store's unmerged version again merges again instead of
    overwriting the merge (the store adopts merged records only from a successful save)."""
    other, ours = await make(), await make()
    await other.save(changeset({(SESSIONS, "s"): session("s", tag="other-")}))
    await raw.put_object(Bucket=s3_bucket, Key="app/v1/sessions/t.json", Body=b"garbage")
    cs = changeset({(SESSIONS, "s"): session("s", tag="ours-"), (SESSIONS, "t"): session("t")})
    with pytest.raises(CorruptDataError):
        await ours.save(cs)  # "s" was merged and written, "t" failed
    await raw.delete_object(Bucket=s3_bucket, Key="app/v1/sessions/t.json")
    merged = await ours.save(cs)  # the store sends the same dirty versions again
    assert merged is not None
    stored = await (await make()).load()
    assert run_ids(stored[SESSIONS]["s"]) == ["other-run-0", "other-run-1", "ours-run-0", "ours-run-1"]
    assert merged[(SESSIONS, "s")] == stored[SESSIONS]["s"]


async def test_raise_policy_reports_conflicts_and_applies_the_rest(make: Factory) -> None:
    """With on_conflict='raise', a conflict raises ConflictError naming every conflicting key, after the
    non-conflicting items were written, and never overwrites the other writer."""
    a = await make()
    b = await make(on_conflict="raise")
    await a.save(changeset({(SESSIONS, "x"): session("x", tag="a-"), (SESSIONS, "y"): session("y", tag="a-")}))
    ours = changeset(
        {
            (SESSIONS, "x"): session("x", tag="b-"),
            (SESSIONS, "y"): session("y", tag="b-"),
            (SESSIONS, "z"): session("z", tag="b-"),
        }
    )
    with pytest.raises(ConflictError) as info:
        await b.save(ours)
    message = str(info.value)
    assert "app/v1/sessions/x.json" in message
    assert "app/v1/sessions/y.json" in message
    assert info.value.key in ("app/v1/sessions/x.json", "app/v1/sessions/y.json")
    with pytest.raises(ConflictError):  # retrying the same changeset must not overwrite either
        await b.save(ours)
    final = await (await make()).load()
    assert run_ids(final[SESSIONS]["x"]) == ["a-run-0", "a-run-1"]
    assert run_ids(final[SESSIONS]["y"]) == ["a-run-0", "a-run-1"]
    assert run_ids(final[SESSIONS]["z"]) == ["b-run-0", "b-run-1"]
    # once b has read the current version, its write is an ordinary update
    await b.load_one(SESSIONS, "x")
    await b.save(changeset({(SESSIONS, "x"): session("x", tag="b-")}))
    assert run_ids(await (await make()).load_one(SESSIONS, "x") or {}) == ["b-run-0", "b-run-1"]


async def test_delete_wins_over_a_concurrent_update_with_merge(make: Factory, raw: Any, s3_bucket: str) -> None:
    """Under 'merge', a delete that meets a newer version of the object deletes that version (delete wins)."""
    a, b = await make(), await make()
    await a.save(changeset({(SESSIONS, "s"): session("s")}))
    await b.load()
    await a.save(changeset({(SESSIONS, "s"): session("s", runs=5)}))  # b's ETag is now stale
    with server_log(s3_bucket) as log:
        await b.save(changeset(deletes={(SESSIONS, "s")}))
    assert log.count("DELETE", status=412) == 1
    assert await read_all(raw, s3_bucket, "app/") == {}


async def test_delete_conflict_raises_under_raise_policy(make: Factory) -> None:
    """Under 'raise', a delete that meets a newer version raises ConflictError and leaves the object alone."""
    a, b = await make(), await make(on_conflict="raise")
    await a.save(changeset({(SESSIONS, "s"): session("s")}))
    await b.load()
    await a.save(changeset({(SESSIONS, "s"): session("s", runs=5)}))
    with pytest.raises(ConflictError, match=r"/s\.json"):
        await b.save(changeset(deletes={(SESSIONS, "s")}))
    stored = await (await make()).load_one(SESSIONS, "s")
    assert stored is not None
    assert len(stored["runs"]) == 5


async def test_write_after_concurrent_delete_recreates(make: Factory) -> None:
    """An update whose object another writer deleted meanwhile is written again as a create."""
    a, b = await make(), await make()
    await a.save(changeset({(SESSIONS, "s"): session("s")}))
    await b.load()
    await a.save(changeset(deletes={(SESSIONS, "s")}))
    assert await b.save(changeset({(SESSIONS, "s"): session("s", runs=3)})) is None
    stored = await (await make()).load_one(SESSIONS, "s")
    assert stored is not None
    assert len(stored["runs"]) == 3


async def test_corrupt_object_of_another_writer_is_not_overwritten(make: Factory, raw: Any, s3_bucket: str) -> None:
    """A merge that meets an undecodable object raises CorruptDataError instead of silently replacing it."""
    persistence = await make()
    await raw.put_object(Bucket=s3_bucket, Key="app/v1/sessions/s.json", Body=b"not json")
    with pytest.raises(CorruptDataError) as info:
        await persistence.save(changeset({(SESSIONS, "s"): session("s")}))
    assert info.value.key == "app/v1/sessions/s.json"
    got = await raw.get_object(Bucket=s3_bucket, Key="app/v1/sessions/s.json")
    async with got["Body"] as stream:
        assert await stream.read() == b"not json"


# -- through the store ---------------------------------------------------------------------------------------------


@pytest.fixture
def store(s3_bucket: str, s3_client_options: dict[str, str]) -> Callable[..., Any]:
    """Build an AsyncInMemoryDb over a fresh S3Persistence on the test bucket (prefix "app", manual flushes)."""
    from aiomemdb import AsyncInMemoryDb

    def factory(*, on_conflict: str = "merge", **kwargs: Any) -> Any:
        kwargs.setdefault("durability", "manual")
        persistence = S3Persistence(s3_bucket, "app", on_conflict=on_conflict, **s3_client_options)  # type: ignore[arg-type]
        return AsyncInMemoryDb(persistence=persistence, **kwargs)

    return factory


def agent_session(sid: str, *, runs: int = 1, tag: str = "") -> dict[str, Any]:
    return {
        "session_id": sid,
        "user_id": "u1",
        "agent_id": "agent-1",
        "session_type": "agent",
        "session_data": {"session_name": sid},
        "runs": [{"run_id": f"{tag}run-{i}", "content": f"answer {i}"} for i in range(runs)],
    }


async def test_store_500_sessions_survive_a_restart(store: Callable[..., Any]) -> None:
    """500 sessions written through the store and flushed are all there, unchanged, in a restarted store."""
    async with store() as db:
        written = await db.upsert_sessions([agent_session(f"s{i:03d}", runs=2) for i in range(500)])
        report = await db.flush()
        assert report.upserts == 500
    async with store() as db2:
        assert db2.stats().sessions == 500
        for expected in written:
            assert await db2.get_session(expected["session_id"]) == expected


async def test_store_flush_of_3_changed_in_500_is_3_puts(store: Callable[..., Any], s3_bucket: str) -> None:
    """After loading 500 sessions, changing 3 and flushing sends exactly 3 PUTs and nothing else."""
    async with store() as db:
        await db.upsert_sessions([agent_session(f"s{i:03d}") for i in range(500)])
    async with store() as db:
        for sid in ("s000", "s123", "s499"):
            await db.upsert_run(sid, {"run_id": "new-run", "content": "later"})
        with server_log(s3_bucket) as log:
            report = await db.flush()
        assert (report.upserts, report.deletes) == (3, 0)
        assert log.count("PUT", status=200) == 3
        assert len(log.requests) == 3, log.requests
        with server_log(s3_bucket) as log:
            assert (await db.flush()).upserts == 0
        assert log.requests == []


async def test_store_deletes_reach_s3(store: Callable[..., Any], raw: Any, s3_bucket: str) -> None:
    """delete_session removes the session's object from S3 at the next flush."""
    async with store() as db:
        await db.upsert_sessions([agent_session(f"s{i}") for i in range(3)])
        await db.flush()
        assert await db.delete_session("s1")
        report = await db.flush()
        assert report.deletes == 1
    assert sorted(await read_all(raw, s3_bucket, "app/")) == ["app/v1/sessions/s0.json", "app/v1/sessions/s2.json"]


async def test_store_lazy_misses_are_single_flight(store: Callable[..., Any], s3_bucket: str) -> None:
    """With lazy=True, 100 concurrent get_session misses on one id cost one GET at the server."""
    async with store() as db:
        written = await db.upsert_session(agent_session("hot", runs=3))
    async with store(lazy=True) as db:
        with server_log(s3_bucket) as log:
            got = await asyncio.gather(*(db.get_session("hot") for _ in range(100)))
            assert await db.get_session("cold") is None
        assert all(g == written for g in got)
        assert log.count("GET", contains="/hot.json") == 1
        assert log.count("GET", contains="/cold.json") == 1
        assert log.count("GET", contains="list-type") == 0  # lazy: nothing listed


@pytest.mark.parametrize("together", [False, True], ids=["one-after-the-other", "concurrently"])
async def test_two_stores_merge_runs_of_one_session(store: Callable[..., Any], together: bool) -> None:
    """Two stores on one prefix appending their own runs to one session both flush, and a reload has all runs."""
    async with store() as seed:
        await seed.upsert_session(agent_session("chat", tag="base-"))
    async with store() as a, store() as b:
        for i in range(3):
            await a.upsert_run("chat", {"run_id": f"a-{i}", "content": "from a"})
            await b.upsert_run("chat", {"run_id": f"b-{i}", "content": "from b"})
        if together:
            reports = await asyncio.gather(a.flush(), b.flush())
        else:
            reports = [await a.flush(), await b.flush()]
        assert sum(r.merged for r in reports) == 1
    async with store() as check:
        final = await check.get_session("chat")
    assert final is not None
    assert sorted(run_ids(final)) == sorted(["base-run-0", "a-0", "a-1", "a-2", "b-0", "b-1", "b-2"])


async def test_two_stores_raise_policy_surfaces_conflict_through_flush(
    store: Callable[..., Any], s3_bucket: str, s3_client_options: dict[str, str]
) -> None:
    """With on_conflict='raise', the second store's flush raises ConflictError and keeps its change dirty while
    the first store's runs stay in S3; nothing of either is lost once merging is allowed."""
    from aiomemdb import AsyncInMemoryDb

    async with store() as seed:
        await seed.upsert_session(agent_session("chat", tag="base-"))
    b_persistence = S3Persistence(s3_bucket, "app", on_conflict="raise", **s3_client_options)
    a, b = store(on_conflict="raise"), AsyncInMemoryDb(persistence=b_persistence, durability="manual")
    async with a:
        await b.start()
        await a.upsert_run("chat", {"run_id": "a-0"})
        await b.upsert_run("chat", {"run_id": "b-0"})
        await a.flush()
        with pytest.raises(ConflictError, match=r"chat\.json"):
            await b.flush()
        assert b.stats().dirty == 1  # nothing dropped
    async with store() as check:
        final = await check.get_session("chat")
    assert final is not None
    assert run_ids(final) == ["base-run-0", "a-0"]
    with pytest.raises(ConflictError):
        await b.aclose()  # the final flush still refuses to overwrite
    assert b.stats().dirty == 1
    b_persistence.on_conflict = "merge"  # the operator resolves the conflict by allowing a merge
    await b.aclose()
    async with store() as check:
        final = await check.get_session("chat")
    assert final is not None
    assert run_ids(final) == ["base-run-0", "a-0", "b-0"]


async def test_raise_policy_conflict_is_resolved_with_refresh(
    store: Callable[..., Any], s3_bucket: str, s3_client_options: dict[str, str]
) -> None:
    """Under on_conflict='raise', ConflictError.keys names the session; refresh() takes the stored version,
    and re-applying the local change on top flushes cleanly, so both writers' runs end up in S3."""
    from aiomemdb import AsyncInMemoryDb

    async with store() as seed:
        await seed.upsert_session(agent_session("chat", tag="base-"))
    persistence = S3Persistence(s3_bucket, "app", on_conflict="raise", **s3_client_options)
    async with store() as a, AsyncInMemoryDb(persistence=persistence, durability="manual") as b:
        await a.upsert_run("chat", {"run_id": "a-0"})
        await b.upsert_run("chat", {"run_id": "b-0"})
        await a.flush()
        with pytest.raises(ConflictError) as info:
            await b.flush()
        assert info.value.keys == (("sessions", "chat"),)
        mine = await b.get_run("chat", "b-0")
        theirs = await b.refresh("chat")
        assert theirs is not None
        assert run_ids(theirs) == ["base-run-0", "a-0"]
        assert b.stats().dirty == 0
        assert mine is not None
        await b.upsert_run("chat", mine)
        assert (await b.flush()).upserts == 1
    async with store() as check:
        final = await check.get_session("chat")
    assert final is not None
    assert run_ids(final) == ["base-run-0", "a-0", "b-0"]
