"""Fuzzing every public entry point of AsyncInMemoryDb with hostile input.

Hypothesis state machines call the store with sessions, runs and records of random JSON-ish shapes mixed with
values JSON cannot hold (sets, bytes, ``object()``, NaN and infinities, integers beyond 64 bits, non-str keys,
nesting deeper than any encoder allows), with hostile ids (``../x``, ``a/b``, NUL, 10 KB, lone surrogates,
unicode, empty, not a str at all) and with garbage for every other argument (sort orders, limits, pages,
filters, the functions given to ``update_session`` / ``update_record``).

Each call must either work or raise an :class:`~aiomemdb.AiomemdbError` (the documented ValidationError,
SerializationError, ConflictError, OwnershipError or NotFoundError), never anything else; and when it raises,
the store must be exactly as before (every session in order, every record, the dirty count). The only other
exception allowed is the one an ``update_*`` function raises itself, which propagates unchanged.

The persisted variants run the same machine over a DirectoryPersistence (``durability="manual"`` and
``"journal"``); at the end the store is flushed, closed and reopened, and must read back exactly as it was.
With the journal, a copy of the directory taken before that flush (a crash) must replay to the same state.

Hostile *content* (HostileInput) and garbage *arguments* (GarbageArguments: filters, limits, pages, owners and
batch containers of the wrong type) are separate machines, so that a gap in one does not hide the other; a
table test then shows each garbage argument on its own. Failing examples are reported unshrunk (see FUZZ).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import shutil
import tempfile
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from aiomemdb import AiomemdbError, AsyncInMemoryDb, DirectoryPersistence

# -- hostile input -------------------------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: float


class Boom(Exception):
    """Raised by the caller's own update function: it must propagate unchanged."""


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"k": [value]}
    return value


GOOD_IDS = ["s1", "s2", "s3"]
HOSTILE_IDS = [
    "../x", "a/b", "..", ".", "/abs", "\\x\\..\\y", "", "\x00", "a\x00b", "~", "%2E%2E", "%", "CON", "nul",
    " ", "\n", "é", "日本語", "😀", "s1/../s2",
]  # fmt: skip
SURROGATE_IDS = ["\ud800", "a\udfffb", "\udc80/.."]  # str, but not encodable as UTF-8
# Built lazily, so that hypothesis never prints them whole.
big_ids = st.one_of(st.builds(lambda: "x" * 512), st.builds(lambda: "é" * 512), st.builds(lambda: "y" * 513),
                    st.builds(lambda: "z" * 10_000))  # fmt: skip
NOT_STR = [None, 0, 1, -1, 3.5, b"s1", bytearray(b"s1"), ["s1"], ("s1",), {"s1": 1}, {"s1"}, object(), True]
ids = st.one_of(
    st.sampled_from(GOOD_IDS),
    st.sampled_from(GOOD_IDS),
    st.sampled_from(HOSTILE_IDS),
    st.sampled_from(HOSTILE_IDS),
    st.sampled_from(SURROGATE_IDS),
    big_ids,
    st.sampled_from(NOT_STR),
    st.text(max_size=12),
)
# Owners as session fields (anything), and as user_id= arguments (hostile, but not the container garbage that
# GarbageArguments throws at every non-content argument).
users = st.one_of(st.none(), st.sampled_from(["alice", "bob"]), st.sampled_from(["", "../u", 7, ["alice"], object()]))
user_args = st.one_of(st.none(), st.sampled_from(["alice", "bob"]), st.sampled_from(["", "../u", "\x00", 7, object()]))

BAD_LEAVES = [
    set(), {1, 2}, frozenset({"a"}), b"bytes", bytearray(b"x"), memoryview(b"m"), object(), float("nan"),
    float("inf"), float("-inf"), 2**64, -(2**63) - 1, 10**40, 1 + 2j, Ellipsis, print, type, Boom("x"),
]  # fmt: skip
GOOD_LEAVES = [
    dt.datetime(2024, 1, 2, 3, 4, 5), dt.date(2024, 1, 2), uuid.UUID(int=7), Color.RED, Point(1, 2.5),
    2**63, -(2**63), 2**64 - 1, 1e308, -0.0, "\u2028",
]  # fmt: skip
leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),  # NaN and infinities included
    st.text(max_size=8),
    st.sampled_from(GOOD_LEAVES),
    st.sampled_from(BAD_LEAVES),
    st.builds(lambda: nested(300)),  # deeper than orjson encodes
    st.builds(lambda: nested(60)),
    st.builds(lambda: "v" * 8_000),
)
keys = st.one_of(st.text(max_size=6), st.text(max_size=6), st.integers(-3, 3), st.none(), st.just(("t",)), st.just(1.5))
json_ish = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner),
        st.dictionaries(keys, inner, max_size=3),
    ),
    max_leaves=6,
)
clean_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
    max_leaves=4,
)
values = st.one_of(clean_json, clean_json, json_ish)


@st.composite
def runs(draw: st.DrawFn) -> Any:
    """A run: usually a dict with a run_id, sometimes anything at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(values)
    run: dict[Any, Any] = {"run_id": draw(ids), "content": draw(values)}
    if draw(st.booleans()):
        run[draw(keys)] = draw(values)
    return run


@st.composite
def sessions(draw: st.DrawFn) -> Any:
    """A session: usually a dict with the known fields holding plausible or hostile values."""
    if draw(st.integers(0, 14)) == 0:
        return draw(st.one_of(values, st.sampled_from(NOT_STR)))
    session: dict[Any, Any] = {"session_id": draw(ids)}
    for field in ("user_id", "agent_id", "team_id", "workflow_id", "session_type"):
        if draw(st.booleans()):
            session[field] = draw(users)
    if draw(st.booleans()):
        session["session_data"] = draw(
            st.one_of(st.none(), st.dictionaries(st.sampled_from(["session_name", "state"]), values), values)
        )
    if draw(st.booleans()):
        session["metadata"] = draw(values)
    choice = draw(st.integers(0, 9))
    if choice < 5:
        session["runs"] = draw(st.lists(runs(), max_size=3))
    elif choice == 5:
        session["runs"] = draw(st.one_of(st.none(), values, st.sampled_from(NOT_STR)))
    for field in ("created_at", "updated_at", "version"):
        if draw(st.integers(0, 5)) == 0:
            session[field] = draw(values)
    if draw(st.integers(0, 3)) == 0:
        session[draw(keys)] = draw(values)
    return session


collections = st.one_of(
    st.sampled_from(["notes", "notes", "memories"]),
    st.sampled_from(["sessions", "Notes", "", "a" * 70, "../x", "no tes", "n/b", 3, None, b"notes"]),
)
records = st.one_of(
    st.dictionaries(st.sampled_from(["user_id", "memory", "n"]), st.one_of(users, values), max_size=3),
    st.dictionaries(st.sampled_from(["user_id", "memory", "n"]), st.one_of(users, values), max_size=3),
    values,
    st.sampled_from(NOT_STR),
)
limits = st.one_of(st.none(), st.integers(-3, 5), st.sampled_from([True, 2.0, "2", [1], 2**62]))
garbage = st.sampled_from([None, 0, -1, 1.5, "", "x", "DESC", "Asc", "updated_at", [1], {"a": 1}, object(), True, b"x"])


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


QUERY_PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "user_id": user_args,
    "agent_id": st.sampled_from(["a1", "a2"]),
    "team_id": st.just("t1"),
    "workflow_id": st.just("w1"),
    "component_id": st.just("a1"),
    "session_type": st.sampled_from(["agent", "team"]),
    "session_name": st.text(max_size=3),
    "start_timestamp": st.integers(-(2**40), 2**40),
    "end_timestamp": st.integers(-(2**40), 2**40),
    "sort_by": st.sampled_from(["updated_at", "created_at", "session_id"]),
    "sort_order": st.sampled_from(["asc", "desc", "ASC"]),
    "limit": limits,
    "page": limits,
    "include_runs": st.booleans(),
}
# The arguments the store already validates get garbage in HostileInput too; the filters only in GarbageArguments.
VALIDATED = ("sort_by", "sort_order", "limit", "page", "include_runs")


@st.composite
def query_kwargs(draw: st.DrawFn) -> dict[str, Any]:
    """Keyword arguments for get_sessions, each absent or plausible, and the validated ones also garbage."""
    out: dict[str, Any] = {}
    for name, strategy in QUERY_PLAUSIBLE.items():
        choice = draw(st.integers(0, 5))
        if choice == 0:
            out[name] = draw(strategy)
        elif choice == 1 and name in VALIDATED:
            out[name] = draw(garbage)
    return out


@st.composite
def update_fns(draw: st.DrawFn, *, is_session: bool) -> Callable[[Any], Any]:
    """A function for update_session / update_record: sane, hostile, or raising."""
    kind = draw(st.sampled_from(["none", "same", "patch", "replace", "not_dict", "raise", "async"]))
    patch = draw(values)
    replacement = draw(sessions() if is_session else records)
    key = draw(keys)

    def fn(current: Any) -> Any:
        if kind == "none":
            return None
        if kind == "raise":
            raise Boom("the caller's own error")
        if kind == "not_dict":
            return patch
        if kind == "replace" or current is None:
            return replacement
        out = dict(current)
        if kind == "patch":
            out[key] = patch
        return out

    if kind == "async" and is_session:

        async def afn(current: Any) -> Any:
            await asyncio.sleep(0)
            return None if current is None else {**current, "metadata": patch}

        return afn
    return fn


# -- the machines -------------------------------------------------------------------------------------------


class Harness(RuleBasedStateMachine):
    """A store on a private loop, and :meth:`call`: run one call, check its error type and that a failure
    changed nothing."""

    persistence: str | None = None  # None, "manual" or "journal"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = Path(tempfile.mkdtemp(prefix="aiomemdb-fuzz-"))
        self.db = self.open(self.tmp / "store")
        self.collections: set[str] = set()
        self.failed = False  # a step already failed: the restart check would only repeat it

    def open(self, root: Path) -> AsyncInMemoryDb:
        if self.persistence is None:
            return AsyncInMemoryDb()
        return AsyncInMemoryDb(
            persistence=DirectoryPersistence(root, fsync=False), durability=self.persistence, flush_interval=3600
        )

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)

    async def dump(self, db: AsyncInMemoryDb) -> Any:
        """Everything the store holds: sessions in recency and id order, every record, and the counters."""
        sessions = await db.get_all_sessions()
        by_id, _ = await db.get_sessions(sort_by="session_id", sort_order="asc")
        stats = db.stats()
        names = sorted(set(stats.records) | self.collections)
        records = {name: await db.list_records(name) for name in names}
        return sessions, by_id, records, stats.sessions, stats.records, stats.dirty

    def call(self, what: str, make: Callable[[], Coroutine[Any, Any, Any]], *, own_error: bool = False) -> Any:
        """Run one call: its result, or None after it raised an AiomemdbError (or Boom from the caller's fn)."""
        before = self.run(self.dump(self.db))
        try:
            return self.run(make())
        except AiomemdbError as exc:
            error: BaseException = exc
        except Boom as exc:
            assert own_error, f"{what}: Boom escaped from a value the store should have rejected"
            error = exc
        except Exception as exc:
            self.failed = True
            raise AssertionError(f"{what} raised {type(exc).__name__} ({exc}), which is not an AiomemdbError") from exc
        after = self.run(self.dump(self.db))
        assert after == before, f"{what} raised {error!r} but changed the store"
        return None

    def teardown(self) -> None:
        try:
            if self.persistence is not None and not self.failed:
                self.check_restart()
        finally:
            try:
                self.run(self.db.aclose())
            finally:
                for task in asyncio.all_tasks(self.loop):  # only left when aclose failed (a failure is reported)
                    task.cancel()
                self.run(asyncio.sleep(0))
                self.db._rt.state = "closed"  # a failed close must not also warn from __del__ in a later test
                self.loop.close()
                shutil.rmtree(self.tmp, ignore_errors=True)

    def check_restart(self) -> None:
        state = self.run(self.dump(self.db))[:-1]  # without the dirty count: a restart flushes everything
        if self.persistence == "journal":
            shutil.copytree(self.tmp / "store", self.tmp / "crash")  # a crash now: only the journal has it
            crashed = self.open(self.tmp / "crash")
            try:
                assert self.run(self.dump(crashed))[:-1] == state, "the journal replays to a different state"
            finally:
                self.run(crashed.aclose())
        self.run(self.db.flush())
        self.run(self.db.aclose())
        self.db = self.open(self.tmp / "store")
        assert self.run(self.dump(self.db))[:-1] == state, "the store reads back differently after a restart"


class HostileInput(Harness):
    """Hostile content (sessions, runs, records, ids, update functions) through every public method."""

    # -- sessions: writes ----------------------------------------------------------------------------------

    @rule(session=sessions(), expected=st.one_of(st.none(), st.integers(-1, 4), garbage))
    def upsert_session(self, session: Any, expected: Any) -> None:
        self.call("upsert_session", lambda: self.db.upsert_session(session, expected_version=expected))

    @rule(batch=st.lists(sessions(), max_size=4))
    def upsert_sessions(self, batch: Any) -> None:
        self.call("upsert_sessions", lambda: self.db.upsert_sessions(batch))

    @rule(sid=ids, run=runs(), user=user_args)
    def upsert_run(self, sid: Any, run: Any, user: Any) -> None:
        self.call("upsert_run", lambda: self.db.upsert_run(sid, run, user_id=user))

    @rule(sid=ids, run_id=ids, user=user_args)
    def delete_run(self, sid: Any, run_id: Any, user: Any) -> None:
        self.call("delete_run", lambda: self.db.delete_run(sid, run_id, user_id=user))

    @rule(sid=ids, fn=update_fns(is_session=True), user=user_args)
    def update_session(self, sid: Any, fn: Any, user: Any) -> None:
        self.call("update_session", lambda: self.db.update_session(sid, fn, user_id=user), own_error=True)

    @rule(sid=ids, name=st.one_of(st.text(max_size=5), garbage, st.sampled_from(HOSTILE_IDS)), user=user_args)
    def rename_session(self, sid: Any, name: Any, user: Any) -> None:
        self.call("rename_session", lambda: self.db.rename_session(sid, name, user_id=user))

    @rule(sid=ids, user=user_args)
    def delete_session(self, sid: Any, user: Any) -> None:
        self.call("delete_session", lambda: self.db.delete_session(sid, user_id=user))

    @rule(batch=st.one_of(st.lists(ids, max_size=4), st.sampled_from(HOSTILE_IDS)), user=user_args)
    def delete_sessions(self, batch: Any, user: Any) -> None:
        self.call("delete_sessions", lambda: self.db.delete_sessions(batch, user_id=user))

    # -- sessions: reads -----------------------------------------------------------------------------------

    @rule(sid=ids, user=user_args, runs_limit=limits)
    def get_session(self, sid: Any, user: Any, runs_limit: Any) -> None:
        got = self.call("get_session", lambda: self.db.get_session(sid, user_id=user, runs_limit=runs_limit))
        assert got is None or got["session_id"] == sid

    @rule(kwargs=query_kwargs())
    def get_sessions(self, kwargs: dict[str, Any]) -> None:
        got = self.call(f"get_sessions({kwargs!r})", lambda: self.db.get_sessions(**kwargs))
        if got is not None:
            rows, total = got
            assert isinstance(total, int)
            assert len(rows) <= total

    @rule(limit=limits, user=user_args)
    def get_recent_sessions(self, limit: Any, user: Any) -> None:
        self.call("get_recent_sessions", lambda: self.db.get_recent_sessions(limit=limit, user_id=user))

    @rule(user=user_args)
    def get_all_sessions(self, user: Any) -> None:
        self.call("get_all_sessions", lambda: self.db.get_all_sessions(user))

    # -- collections ---------------------------------------------------------------------------------------

    @rule(collection=collections, rid=ids, record=records)
    def put_record(self, collection: Any, rid: Any, record: Any) -> None:
        if self.call("put_record", lambda: self.db.put_record(collection, rid, record)) is not None:
            self.collections.add(collection)

    @rule(collection=collections, batch=st.dictionaries(ids.filter(_hashable), records, max_size=3))
    def put_records(self, collection: Any, batch: Any) -> None:
        if self.call("put_records", lambda: self.db.put_records(collection, batch)) is not None:
            self.collections.add(collection)

    @rule(collection=collections, rid=ids, fn=update_fns(is_session=False))
    def update_record(self, collection: Any, rid: Any, fn: Any) -> None:
        if self.call("update_record", lambda: self.db.update_record(collection, rid, fn), own_error=True) is not None:
            self.collections.add(collection)

    @rule(collection=collections, rid=ids, user=user_args)
    def get_record(self, collection: Any, rid: Any, user: Any) -> None:
        self.call("get_record", lambda: self.db.get_record(collection, rid, user_id=user))

    @rule(collection=collections, rid=ids, user=user_args)
    def delete_record(self, collection: Any, rid: Any, user: Any) -> None:
        self.call("delete_record", lambda: self.db.delete_record(collection, rid, user_id=user))

    @rule(
        collection=collections, batch=st.one_of(st.lists(ids, max_size=3), st.sampled_from(HOSTILE_IDS)), user=user_args
    )
    def delete_records(self, collection: Any, batch: Any, user: Any) -> None:
        self.call("delete_records", lambda: self.db.delete_records(collection, batch, user_id=user))

    @rule(collection=collections, user=user_args)
    def list_records(self, collection: Any, user: Any) -> None:
        self.call("list_records", lambda: self.db.list_records(collection, user_id=user))

    @rule(collection=collections)
    def clear_collection(self, collection: Any) -> None:
        self.call("clear_collection", lambda: self.db.clear_collection(collection))


class HostileInputOnDisk(HostileInput):
    persistence = "manual"


class HostileInputJournaled(HostileInput):
    persistence = "journal"


anything = st.one_of(
    garbage,
    st.sampled_from(NOT_STR),
    st.sampled_from([10**30, -(10**30), 2**63, float("nan")]),
    st.lists(st.text(max_size=2), max_size=2),
    st.text(max_size=3),
)


class GarbageArguments(Harness):
    """Garbage (wrong types, containers where scalars belong and the reverse) for every non-content argument."""

    @rule(sid=st.sampled_from(GOOD_IDS), user=st.sampled_from(["alice", "bob", None]))
    def seed(self, sid: str, user: str | None) -> None:
        session = {"session_id": sid, "user_id": user, "agent_id": "a1", "session_data": {"session_name": sid}}
        self.call("seed", lambda: self.db.upsert_session(session))
        self.call("seed", lambda: self.db.put_record("notes", sid, {"user_id": user}))
        self.collections.add("notes")

    @rule(name=st.sampled_from(list(QUERY_PLAUSIBLE)), value=anything)
    def get_sessions(self, name: str, value: Any) -> None:
        self.call(f"get_sessions({name}={value!r})", lambda: self.db.get_sessions(**{name: value}))

    @rule(value=anything, method=st.sampled_from(["get_session", "delete_session", "get_all", "get_recent"]))
    def user_id(self, value: Any, method: str) -> None:
        calls = {
            "get_session": lambda: self.db.get_session("s1", user_id=value),
            "delete_session": lambda: self.db.delete_session("s9", user_id=value),
            "get_all": lambda: self.db.get_all_sessions(value),
            "get_recent": lambda: self.db.get_recent_sessions(user_id=value),
        }
        self.call(f"{method}(user_id={value!r})", calls[method])

    @rule(value=anything)
    def limits(self, value: Any) -> None:
        self.call(f"get_session(runs_limit={value!r})", lambda: self.db.get_session("s1", runs_limit=value))
        self.call(f"get_recent_sessions(limit={value!r})", lambda: self.db.get_recent_sessions(limit=value))
        self.call(
            f"upsert_session(expected_version={value!r})",
            lambda: self.db.upsert_session({"session_id": "s9"}, expected_version=value),
        )

    @rule(value=anything)
    def containers(self, value: Any) -> None:
        self.call(f"upsert_sessions({value!r})", lambda: self.db.upsert_sessions(value))
        self.call(f"delete_sessions({value!r})", lambda: self.db.delete_sessions(value))
        self.call(f"put_records({value!r})", lambda: self.db.put_records("notes", value))
        self.call(f"delete_records({value!r})", lambda: self.db.delete_records("notes", value))
        self.call(f"list_records(user_id={value!r})", lambda: self.db.list_records("notes", user_id=value))


# No shrinking: a failure is reported as found (its message names the call and the error), so that even a
# failing run stays well inside the per-test time limit.
FUZZ = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def test_every_entry_point_rejects_hostile_content_cleanly() -> None:
    """In memory, every call with hostile content works or raises an AiomemdbError, and a failed call changes
    nothing."""
    run_state_machine_as_test(HostileInput, settings=FUZZ)


@pytest.mark.parametrize("machine", [HostileInputOnDisk, HostileInputJournaled], ids=["manual", "journal"])
def test_hostile_content_survives_a_restart(machine: type[HostileInput]) -> None:
    """Through a DirectoryPersistence (and its journal) whatever hostile content was accepted flushes, reloads
    and replays to exactly the state the store had before the restart."""
    run_state_machine_as_test(machine, settings=FUZZ)


def test_garbage_arguments_raise_only_aiomemdb_errors() -> None:
    """Garbage for filters, sort orders, limits, pages, owners and batch containers is refused with an
    AiomemdbError (as bad ids and sort orders already are), never a TypeError or AttributeError."""
    run_state_machine_as_test(GarbageArguments, settings=FUZZ)


# One representative of each garbage argument the fuzzer above meets, so that each shows as its own test.
GARBAGE_CASES: dict[str, Callable[[AsyncInMemoryDb], Coroutine[Any, Any, Any]]] = {
    **{
        f"get_sessions-{name}-{label}": (lambda db, name=name, value=value: db.get_sessions(**{name: value}))
        for name in ("user_id", "agent_id", "team_id", "workflow_id", "component_id", "session_type")
        for label, value in (("list", ["a1"]),)
    },
    "get_sessions-session_name-int": lambda db: db.get_sessions(session_name=3),
    "get_sessions-start_timestamp-str": lambda db: db.get_sessions(start_timestamp="yesterday"),
    "get_sessions-end_timestamp-list": lambda db: db.get_sessions(end_timestamp=[1]),
    "get_sessions-limit-huge": lambda db: db.get_sessions(limit=10**30),
    "get_sessions-page-huge": lambda db: db.get_sessions(limit=2, page=10**30),
    "get_recent_sessions-limit-huge": lambda db: db.get_recent_sessions(limit=10**30),
    "get_recent_sessions-user_id-list": lambda db: db.get_recent_sessions(user_id=["alice"]),
    "get_all_sessions-user_id-dict": lambda db: db.get_all_sessions({"alice": 1}),  # type: ignore[arg-type]
    "get_session-runs_limit-huge": lambda db: db.get_session("s1", runs_limit=10**30),
    "delete_sessions-int": lambda db: db.delete_sessions(3),  # type: ignore[arg-type]
    "delete_records-int": lambda db: db.delete_records("notes", 3),  # type: ignore[arg-type]
    "put_records-list": lambda db: db.put_records("notes", [{"n": 1}]),  # type: ignore[arg-type]
    "upsert_sessions-int": lambda db: db.upsert_sessions(3),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("case", list(GARBAGE_CASES))
async def test_garbage_argument_is_refused_with_an_aiomemdb_error(case: str) -> None:
    """A wrong-typed argument is refused with an AiomemdbError (a ValidationError), not a TypeError,
    AttributeError or ValueError from deep inside, and changes nothing."""
    async with AsyncInMemoryDb() as db:
        await db.upsert_session({"session_id": "s1", "user_id": "alice", "agent_id": "a1", "runs": [{"run_id": "r"}]})
        await db.put_record("notes", "n1", {"user_id": "alice"})
        before = (await db.get_all_sessions(), await db.list_records("notes"))
        try:
            await GARBAGE_CASES[case](db)
        except AiomemdbError:
            pass
        except Exception as exc:
            pytest.fail(f"{case}: {type(exc).__name__}: {exc}")
        assert (await db.get_all_sessions(), await db.list_records("notes")) == before
