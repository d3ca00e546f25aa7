"""Security: the owner guard on every path, ids that look like paths, no code execution, no leaked secrets.

- Owner guard (guarantee 11): one session and one record of ``alice``; ``bob`` tries every read, write, delete
  and listing of the core and of the sync facade. Each attempt is invisible (``None``/``False``/``0``/empty) or
  refused (:class:`~aiomemdb.OwnershipError`, :class:`~aiomemdb.NotFoundError`) as documented, and alice's data
  is unchanged to the last field.
- Path-like ids (guarantee 12) through DirectoryPersistence and S3Persistence: nothing lands outside the root
  or prefix (the whole temporary directory and the whole bucket are listed), every id reads back exactly, NUL is
  refused.
- No pickle, marshal, eval or exec anywhere in the installed package's code.
- Credentials never reach a log line or an error message, even at DEBUG and through chained causes.
"""

from __future__ import annotations

import io
import logging
import tokenize
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import aiomemdb
from aiomemdb import (
    AsyncInMemoryDb,
    DirectoryPersistence,
    InMemoryDb,
    NotFoundError,
    OwnershipError,
    PersistenceError,
    ValidationError,
)

# -- the owner guard ------------------------------------------------------------------------------------------

ALICE_SESSION = {
    "session_id": "s-a",
    "user_id": "alice",
    "agent_id": "agent-1",
    "session_type": "agent",
    "session_data": {"session_name": "secret plans"},
    "summary": "alice's",
    "runs": [{"run_id": "r1", "content": "alice's run"}],
}
ALICE_RECORD = {"user_id": "alice", "memory": "alice likes tea"}


class Spy:
    """An update function that records what it was shown and returns a fixed session or record."""

    def __init__(self, result: dict[str, Any]) -> None:
        self.result = result
        self.seen: list[Any] = []

    def __call__(self, current: Any) -> dict[str, Any]:
        self.seen.append(current)
        return self.result


Expect = Any  # a value to compare with, or an exception type (or tuple of them) the call must raise
# (method, args, kwargs, expected). Everything is done as bob, or without naming any user for writes that carry
# their owner inside the data.
ATTEMPTS: dict[str, tuple[str, tuple[Any, ...], dict[str, Any], Expect]] = {
    "get_session": ("get_session", ("s-a",), {"user_id": "bob"}, None),
    "get_session-runs_limit": ("get_session", ("s-a",), {"user_id": "bob", "runs_limit": 1}, None),
    "get_sessions-user": ("get_sessions", (), {"user_id": "bob"}, ([], 0)),
    "get_sessions-agent": ("get_sessions", (), {"user_id": "bob", "agent_id": "agent-1"}, ([], 0)),
    "get_sessions-component": ("get_sessions", (), {"user_id": "bob", "component_id": "agent-1"}, ([], 0)),
    "get_sessions-type": ("get_sessions", (), {"user_id": "bob", "session_type": "agent"}, ([], 0)),
    "get_sessions-name": ("get_sessions", (), {"user_id": "bob", "session_name": "secret"}, ([], 0)),
    "get_sessions-by-id": ("get_sessions", (), {"user_id": "bob", "sort_by": "session_id", "limit": 5}, ([], 0)),
    "get_sessions-time": ("get_sessions", (), {"user_id": "bob", "start_timestamp": 0}, ([], 0)),
    "get_all_sessions": ("get_all_sessions", ("bob",), {}, []),
    "get_recent_sessions": ("get_recent_sessions", (), {"user_id": "bob", "limit": 10}, []),
    "upsert_session-as-bob": ("upsert_session", ({"session_id": "s-a", "user_id": "bob"},), {}, OwnershipError),
    "upsert_session-ownerless": ("upsert_session", ({"session_id": "s-a", "summary": "mine"},), {}, OwnershipError),
    "upsert_session-versioned": (
        "upsert_session",
        ({"session_id": "s-a", "user_id": "bob"},),
        {"expected_version": 1},
        OwnershipError,
    ),
    "upsert_sessions": (
        "upsert_sessions",
        ([{"session_id": "s-b", "user_id": "bob"}, {"session_id": "s-a", "user_id": "bob"}],),
        {},
        OwnershipError,
    ),
    "upsert_run": ("upsert_run", ("s-a", {"run_id": "r-bob"}), {"user_id": "bob"}, NotFoundError),
    "upsert_run-replace": (
        "upsert_run",
        ("s-a", {"run_id": "r1", "content": "bob's"}),
        {"user_id": "bob"},
        NotFoundError,
    ),
    "delete_run": ("delete_run", ("s-a", "r1"), {"user_id": "bob"}, False),
    "update_session-take-over": (
        "update_session",
        ("s-a", Spy({"session_id": "s-a", "user_id": "bob"})),
        {"user_id": "bob"},
        OwnershipError,
    ),
    "update_session-forged-owner": (
        "update_session",
        ("s-a", Spy({"session_id": "s-a", "user_id": "alice", "summary": "overwritten by bob"})),
        {"user_id": "bob"},
        (OwnershipError, NotFoundError),
    ),
    "rename_session": ("rename_session", ("s-a", "pwned"), {"user_id": "bob"}, None),
    "delete_session": ("delete_session", ("s-a",), {"user_id": "bob"}, False),
    "delete_sessions": ("delete_sessions", (["s-a", "s-a"],), {"user_id": "bob"}, 0),
    "get_record": ("get_record", ("memories", "m-a"), {"user_id": "bob"}, None),
    "list_records": ("list_records", ("memories",), {"user_id": "bob"}, []),
    "put_record-as-bob": ("put_record", ("memories", "m-a", {"user_id": "bob", "memory": "x"}), {}, OwnershipError),
    "put_record-ownerless": ("put_record", ("memories", "m-a", {"memory": "x"}), {}, OwnershipError),
    "put_records": (
        "put_records",
        ("memories", {"m-b": {"user_id": "bob"}, "m-a": {"user_id": "bob"}}),
        {},
        OwnershipError,
    ),
    "update_record": ("update_record", ("memories", "m-a", Spy({"user_id": "bob"})), {}, OwnershipError),
    "delete_record": ("delete_record", ("memories", "m-a"), {"user_id": "bob"}, False),
    "delete_records": ("delete_records", ("memories", ["m-a"]), {"user_id": "bob"}, 0),
}


def _is_error_spec(expected: Expect) -> bool:
    if isinstance(expected, type):
        return issubclass(expected, BaseException)
    return isinstance(expected, tuple) and bool(expected) and all(isinstance(e, type) for e in expected)


async def alice_state(db: AsyncInMemoryDb) -> Any:
    return (
        await db.get_session("s-a"),
        await db.get_all_sessions(),
        await db.list_records("memories"),
        await db.get_record("memories", "m-a"),
        db.stats().records,
    )


def check_spies(args: tuple[Any, ...]) -> None:
    for arg in args:
        if isinstance(arg, Spy) and "session_id" in arg.result:
            assert arg.seen == [None], "update_session showed alice's session to bob"


@pytest.mark.parametrize("attempt", list(ATTEMPTS))
async def test_owner_guard_async(attempt: str) -> None:
    """Every read, write, delete and listing by bob on alice's session and record is invisible or refused, and
    leaves alice's data exactly as it was."""
    method, args, kwargs, expected = ATTEMPTS[attempt]
    args = tuple(Spy(a.result) if isinstance(a, Spy) else a for a in args)  # a fresh spy for each test
    async with AsyncInMemoryDb() as db:
        await db.upsert_session(ALICE_SESSION)
        await db.put_record("memories", "m-a", ALICE_RECORD)
        before = await alice_state(db)
        if _is_error_spec(expected):
            with pytest.raises(expected):
                await getattr(db, method)(*args, **kwargs)
        else:
            assert await getattr(db, method)(*args, **kwargs) == expected
        check_spies(args)
        assert await alice_state(db) == before
        assert await db.get_session("s-b") is None, "a refused batch stored part of itself"
        assert await db.get_record("memories", "m-b") is None, "a refused batch stored part of itself"


@pytest.mark.parametrize("attempt", list(ATTEMPTS))
def test_owner_guard_sync_facade(attempt: str) -> None:
    """The blocking InMemoryDb enforces the same owner guard on every method."""
    method, args, kwargs, expected = ATTEMPTS[attempt]
    args = tuple(Spy(a.result) if isinstance(a, Spy) else a for a in args)  # a fresh spy for each test
    with InMemoryDb() as db:
        db.upsert_session(ALICE_SESSION)
        db.put_record("memories", "m-a", ALICE_RECORD)
        before = (db.get_session("s-a"), db.get_all_sessions(), db.list_records("memories"))
        if _is_error_spec(expected):
            with pytest.raises(expected):
                getattr(db, method)(*args, **kwargs)
        else:
            assert getattr(db, method)(*args, **kwargs) == expected
        check_spies(args)
        assert (db.get_session("s-a"), db.get_all_sessions(), db.list_records("memories")) == before
        assert db.get_session("s-b") is None
        assert db.get_record("memories", "m-b") is None


async def test_owner_sees_own_data_through_the_same_paths() -> None:
    """The guard hides only other users' data: alice reaches her own session and record on every read path."""
    async with AsyncInMemoryDb() as db:
        await db.upsert_session(ALICE_SESSION)
        await db.put_record("memories", "m-a", ALICE_RECORD)
        assert (await db.get_session("s-a", user_id="alice") or {}).get("summary") == "alice's"
        assert (await db.get_sessions(user_id="alice", session_name="secret"))[1] == 1
        assert len(await db.get_recent_sessions(user_id="alice")) == 1
        assert await db.get_record("memories", "m-a", user_id="alice") == ALICE_RECORD
        assert await db.list_records("memories", user_id="alice") == [ALICE_RECORD]
        await db.upsert_run("s-a", {"run_id": "r2"}, user_id="alice")
        assert await db.delete_session("s-a", user_id="alice") is True


# -- ids that look like paths ------------------------------------------------------------------------------------

PATH_IDS = [
    "../x", "../../etc/passwd", "a/b", "a/../../b", "..", ".", "/abs", "\\x", "..\\..\\x", "~", "~root", "%2E%2E%2Fx",
    "%", "-", "_", " ", "\t", "CON", "nul", ".hidden", ".tmp-abc", "x.json", "é", "日本/../語", "😀/😀",
    "x" * 512, "x" * 511 + "y", "é" * 512, "/" * 512,
]  # fmt: skip


async def write_path_ids(db: AsyncInMemoryDb) -> None:
    for rid in PATH_IDS:
        await db.upsert_session({"session_id": rid, "runs": [{"run_id": rid}]})
        await db.put_record("notes", rid, {"id": rid})
    for bad in ("a\x00b", "\x00", "../\x00"):
        with pytest.raises(ValidationError):
            await db.upsert_session({"session_id": bad})
        with pytest.raises(ValidationError):
            await db.put_record("notes", bad, {})
    for collection in ("../x", "a/b", "..", "notes/..", "Notes", ""):
        with pytest.raises(ValidationError):
            await db.put_record(collection, "x", {})


async def check_path_ids(db: AsyncInMemoryDb) -> None:
    sessions = await db.get_all_sessions()
    assert sorted(s["session_id"] for s in sessions) == sorted(PATH_IDS)
    for rid in PATH_IDS:
        got = await db.get_session(rid)
        assert got is not None, rid
        assert got["runs"] == [{"run_id": rid}]
        assert await db.get_record("notes", rid) == {"id": rid}


async def test_path_like_ids_stay_inside_the_directory(tmp_path: Path) -> None:
    """Ids that look like paths become single escaped file names directly under root/v1/{collection}/: nothing
    is written anywhere else in the temporary directory, and every id reads back after a restart."""
    root = tmp_path / "deep" / "store"
    (tmp_path / "x").mkdir()  # where "../x"-style escapes would land
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(root, fsync=False), durability="journal") as db:
        await write_path_ids(db)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    own = {root / "LAYOUT", root / "LOCK"}  # the store's layout marker and its writer lock
    assert own <= set(files)
    files = [p for p in files if p not in own]
    assert len(files) == 2 * len(PATH_IDS), sorted(str(p) for p in files)  # one file per id, no collisions
    for path in files:
        assert path.parent.parent == root / "v1", path
        assert path.parent.name in ("sessions", "notes"), path
        assert path.name.endswith(".json"), path
        assert not path.name.startswith("."), path
        assert path.resolve().is_relative_to((root / "v1").resolve()), path
    assert not any((tmp_path / "x").iterdir())
    assert not (tmp_path / "etc").exists()
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(root), durability="manual") as again:
        await check_path_ids(again)


async def all_keys(bucket: str, options: dict[str, str]) -> list[str]:
    from aiobotocore.session import get_session

    keys: list[str] = []
    async with get_session().create_client("s3", **options) as client:
        paginator = client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=bucket):
            keys.extend(o["Key"] for o in page.get("Contents", []))
    return keys


async def test_path_like_ids_stay_inside_the_s3_prefix(s3_bucket: str, s3_client_options: dict[str, str]) -> None:
    """On S3 every path-like id is one escaped key segment under {prefix}/v1/{collection}/: listing the whole
    bucket finds nothing else, and every id reads back through a fresh store."""
    pytest.importorskip("aiobotocore")
    from aiomemdb import S3Persistence

    prefix = "tenant/app"
    async with AsyncInMemoryDb(persistence=S3Persistence(s3_bucket, prefix=prefix, **s3_client_options)) as db:
        await write_path_ids(db)
    keys = await all_keys(s3_bucket, s3_client_options)
    meta = [key for key in keys if key.startswith(f"{prefix}/v1/_meta/")]
    assert meta == [f"{prefix}/v1/_meta/conditional-writes"]  # the start's cached server check, nothing else
    keys = [key for key in keys if key not in meta]
    assert len(keys) == 2 * len(PATH_IDS), keys
    for key in keys:
        collection, _, name = key.removeprefix(f"{prefix}/v1/").partition("/")
        assert key.startswith(f"{prefix}/v1/"), key
        assert collection in ("sessions", "notes"), key
        assert name.endswith(".json"), key
        assert "/" not in name, key
        assert name not in (".json", "..json"), key
        assert ".." not in key.split("/"), key
    async with AsyncInMemoryDb(persistence=S3Persistence(s3_bucket, prefix=prefix, **s3_client_options)) as again:
        await check_path_ids(again)


@pytest.mark.parametrize("prefix", ["../x", "a/../b", "a//b", "./a", "a\x00b", "a\nb", "x" * 600])
def test_s3_prefix_cannot_escape(prefix: str) -> None:
    """A prefix with '..', '.', empty segments, control characters or over 512 bytes is refused."""
    pytest.importorskip("aiobotocore")
    from aiomemdb import S3Persistence

    with pytest.raises(ValidationError):
        S3Persistence("some-bucket", prefix=prefix)


# -- no code execution from data ---------------------------------------------------------------------------------

FORBIDDEN_NAMES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle", "eval",
                   "exec", "__import__", "yaml"}  # fmt: skip


def package_sources() -> Iterator[Path]:
    root = Path(aiomemdb.__file__).parent
    sources = sorted(root.rglob("*.py"))
    assert len(sources) > 10, f"the installed package looks incomplete: {sources}"
    return iter(sources)


def test_no_pickle_marshal_eval_or_exec_in_the_package() -> None:
    """No module of the installed package uses pickle, marshal, shelve, eval or exec (as code: names in
    comments and docstrings, such as "never pickle", do not count)."""
    found: list[str] = []
    for path in package_sources():
        source = path.read_text(encoding="utf-8")
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.NAME and token.string in FORBIDDEN_NAMES:
                found.append(f"{path.name}:{token.start[0]}: {token.line.strip()}")
    assert not found, found


# -- credentials -------------------------------------------------------------------------------------------------

# Built at run time, so that no source line in a traceback can contain them.
SECRET = "SECRET" + "SHOULDNOTLEAK123"
ACCESS_KEY = "AKIA" + "FAKEKEYIDLEAK9"
TOKEN = "TOKEN" + "SHOULDNOTLEAK456"


class Capture(logging.Handler):
    """Every record, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.name, self.format(record)))


@pytest.fixture
def captured() -> Iterator[Capture]:
    """Capture every log record at DEBUG, from the root logger and from aiomemdb's (which has its own handler)."""
    handler = Capture()
    loggers = [logging.getLogger(), logging.getLogger("aiomemdb")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    try:
        yield handler
    finally:
        logging.getLogger().removeHandler(handler)
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def texts_of(exc: BaseException) -> list[str]:
    """str and repr of an exception and of every cause and context it chains, with their attributes."""
    out: list[str] = []
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        out += [
            str(item),
            repr(item),
            repr(getattr(item, "args", ())),
            repr(vars(item)) if hasattr(item, "__dict__") else "",
        ]
        stack += [item.__cause__, item.__context__, getattr(item, "cause", None)]
        stack += list(getattr(item, "exceptions", ()))
    return out


def assert_no_secret(where: str, texts: list[str], *, all_secrets: bool) -> None:
    secrets = (SECRET, ACCESS_KEY, TOKEN) if all_secrets else (SECRET,)
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"{where} leaks {secret[:6]}...: {text[:300]}"


def leaky_persistence(bucket: str, endpoint: str, **options: Any) -> Any:
    from aiomemdb import S3Persistence

    return S3Persistence(
        bucket,
        prefix="app",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET,
        aws_session_token=TOKEN,
        retries=1,
        backoff_base=0.001,
        **options,
    )


def check_captured(captured: Capture) -> None:
    assert captured.lines, "nothing was logged: the capture is not working"
    # aiomemdb's own lines may name nothing secret; botocore's DEBUG lines legitimately carry the access key id
    # and the session token in request headers, but never the secret key (it only signs).
    ours = [line for name, line in captured.lines if name.startswith("aiomemdb")]
    assert ours, "aiomemdb logged nothing about the failures"
    assert_no_secret("an aiomemdb log line", ours, all_secrets=True)
    assert_no_secret("a log line", [line for _, line in captured.lines], all_secrets=False)


async def test_credentials_never_leak_from_an_unreachable_endpoint(captured: Capture) -> None:
    """With a dead endpoint, the failed load's error (and its causes), the store's stats and repr, and every
    DEBUG log line are free of the credentials."""
    pytest.importorskip("aiobotocore")
    persistence = leaky_persistence("some-bucket", "http://127.0.0.1:9")
    db = AsyncInMemoryDb(persistence=persistence)
    with pytest.raises(PersistenceError) as info:
        await db.start()
    await persistence.aclose()
    await db.aclose()
    texts = [*texts_of(info.value), repr(db), repr(persistence), str(db.stats())]
    assert_no_secret("the error", texts, all_secrets=True)
    check_captured(captured)


@pytest.fixture
async def s3_raw(s3_client_options: dict[str, str]) -> AsyncIterator[Any]:
    from aiobotocore.session import get_session

    async with get_session().create_client("s3", **s3_client_options) as client:
        yield client


async def test_credentials_never_leak_from_a_missing_bucket(captured: Capture, s3_endpoint: str, s3_raw: Any) -> None:
    """Against a bucket that does not exist (or vanished), failed loads, on-demand loads, flushes and the
    flush events carry no credentials."""
    pytest.importorskip("aiobotocore")
    bucket = "bucket-for-leak-test"
    events: list[Any] = []
    texts: list[str] = []
    db = AsyncInMemoryDb(persistence=leaky_persistence(bucket, s3_endpoint))
    with pytest.raises(PersistenceError) as load_error:
        await db.start()  # LIST on a missing bucket
    texts += texts_of(load_error.value)
    await db.aclose()
    lazy = AsyncInMemoryDb(persistence=leaky_persistence(bucket, s3_endpoint), lazy=True, durability="manual")
    with pytest.raises(PersistenceError) as lazy_error:
        await lazy.get_session("s1")  # GET on a missing bucket
    texts += texts_of(lazy_error.value)
    await lazy.aclose()

    await s3_raw.create_bucket(Bucket=bucket)
    db = AsyncInMemoryDb(
        persistence=leaky_persistence(bucket, s3_endpoint), durability="manual", on_event=events.append
    )
    await db.upsert_session({"session_id": "s1", "user_id": "alice"})
    # the start's conditional-write check cached its verdict in the bucket; S3 deletes only empty buckets
    await s3_raw.delete_object(Bucket=bucket, Key="app/v1/_meta/conditional-writes")
    await s3_raw.delete_bucket(Bucket=bucket)
    with pytest.raises(PersistenceError) as flush_error:
        await db.flush()  # PUT into a bucket that vanished
    texts += [*texts_of(flush_error.value), repr(db), str(db.stats()), *(repr(e) for e in events)]
    assert any(e.kind == "flush_failed" for e in events)
    assert_no_secret("the error", texts, all_secrets=True)
    await s3_raw.create_bucket(Bucket=bucket)  # now the final flush can succeed and the store can close
    await db.aclose()
    check_captured(captured)
