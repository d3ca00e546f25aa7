"""Model-based test: random operation sequences against AsyncInMemoryDb and a plain-dict model of it.

The machine drives an :class:`~aiomemdb.AsyncInMemoryDb` on its own private event loop with
``loop.run_until_complete`` rather than through the ``InMemoryDb`` facade: every step then runs on one thread
in a deterministic order (no portal thread whose scheduling could make a failure unreproducible), the core is
exercised directly, and a restart is just ``aclose()`` plus a new store on the same loop. That the facade forwards
every method unchanged is proven separately by ``tests/test_sync.py``.

The model is plain dicts: ``session_id -> MSession`` (the caller's fields, the runs by ``run_id``, the store's
``created_at`` / ``updated_at`` / ``version``, and a write sequence number) plus one collection of records. The
store's clock is a fake the machine advances by 0 to 2 s, so many writes share a second and the ordering rule
"``updated_at`` descending, ties: the later write first" is exercised on every listing. Ids and users come from
tiny alphabets so that writes collide, owners clash and deletes hit.

Two stand-alone tests at the end pin down what the machine reaches only by chance or not at all: the recency
order of equal-second writes across a restart, and the rejection of non-finite floats.
"""

from __future__ import annotations

import asyncio
import copy
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from aiomemdb import (
    AiomemdbError,
    AsyncInMemoryDb,
    ClosedError,
    ConflictError,
    DirectoryPersistence,
    NotFoundError,
    OwnershipError,
    SerializationError,
    ValidationError,
)

BASE = 1_700_000_000
SIDS = ["s1", "s2", "s3", "s4", "s5"]
USERS = ["alice", "bob"]
RUN_IDS = ["r1", "r2", "r3"]
RECORD_IDS = ["m1", "m2", "m3"]
COLLECTION = "memories"
STORE_FIELDS = ("created_at", "updated_at", "version")

sids = st.sampled_from(SIDS)
users = st.sampled_from(USERS)
maybe_user = st.none() | users
small_text = st.text(alphabet="abcXYZ é", max_size=4)
json_leaf = st.none() | st.booleans() | st.integers(-5, 5) | small_text
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.sampled_from("kxy"), inner, max_size=2),
    max_leaves=4,
)
session_names = st.sampled_from(["Alpha", "alpha beta", "Gamma", "BETA"])
record_ids = st.sampled_from(RECORD_IDS)
record_owners = st.sampled_from(["absent", "none", *USERS])
# get_sessions filters; a listing draws at most two, so that most listings are not empty.
FILTERS = {
    "user_id": users,
    "agent_id": st.sampled_from(["a1", "a2"]),
    "team_id": st.just("t1"),
    "workflow_id": st.sampled_from(["w1", "a1"]),
    "component_id": st.sampled_from(["a1", "a2", "t1", "w1"]),
    "session_type": st.sampled_from(["agent", "team"]),
    "session_name": st.sampled_from(["alp", "ALPHA", "beta", "gam", "zzz"]),
    # offsets from the clock's current second: most sessions were created a few seconds ago, so bounds often
    # equal some created_at exactly (both bounds are inclusive)
    "start_timestamp": st.integers(-8, 1),
    "end_timestamp": st.integers(-8, 1),
}


class FakeClock:
    """The store's clock: unix seconds that only move when the machine says so."""

    def __init__(self) -> None:
        self.now = float(BASE)

    def __call__(self) -> float:
        return self.now


def runs_of(run_ids: list[str], payload: Any) -> list[dict[str, Any]]:
    return [{"run_id": rid, "content": f"{rid}-{i}", "payload": payload} for i, rid in enumerate(run_ids)]


@st.composite
def sessions(draw: st.DrawFn) -> dict[str, Any]:
    """A valid session dict; optional fields are absent, explicitly None, or set from a small alphabet."""
    session: dict[str, Any] = {"session_id": draw(sids)}
    for name, values in (
        ("user_id", USERS),
        ("agent_id", ["a1", "a2"]),
        ("team_id", ["t1"]),
        ("workflow_id", ["w1", "a1"]),  # "a1" is also an agent id: component_id must match either
        ("session_type", ["agent", "team"]),
    ):
        choice = draw(st.sampled_from(["absent", "none", *values]))
        if choice != "absent":
            session[name] = None if choice == "none" else choice
    data_choice = draw(st.sampled_from(["absent", "none", "named", "unnamed"]))
    if data_choice == "none":
        session["session_data"] = None
    elif data_choice != "absent":
        data: dict[str, Any] = {"state": draw(json_value)}
        if data_choice == "named":
            data["session_name"] = draw(session_names)
        session["session_data"] = data
    if draw(st.booleans()):
        session["metadata"] = {"tags": draw(st.lists(small_text, max_size=2))}
    runs_choice = draw(st.sampled_from(["absent", "none", "list"]))
    if runs_choice == "none":
        session["runs"] = None
    elif runs_choice == "list":
        session["runs"] = runs_of(draw(st.lists(st.sampled_from(RUN_IDS), unique=True, max_size=3)), draw(json_value))
    return session


def _timestamp(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


@dataclass
class MSession:
    """The model of one stored session."""

    sid: str
    head: dict[str, Any]  # the caller's fields, without runs and the store's fields
    runs: dict[str, dict[str, Any]] | None
    runs_key: bool
    created_at: int
    updated_at: int
    version: int
    seq: int

    @property
    def user_id(self) -> str | None:
        return self.head.get("user_id")

    @property
    def session_name(self) -> str | None:
        data = self.head.get("session_data")
        name = data.get("session_name") if isinstance(data, dict) else None
        return name if isinstance(name, str) else None

    def doc(self, runs_limit: int | None = None, *, include_runs: bool = True) -> dict[str, Any]:
        doc = copy.deepcopy(self.head)
        doc.update(created_at=self.created_at, updated_at=self.updated_at, version=self.version)
        if self.runs_key:
            if self.runs is None or not include_runs:
                doc["runs"] = None
            else:
                runs = list(self.runs.values())
                if runs_limit is not None:
                    runs = runs[max(0, len(runs) - runs_limit) :]
                doc["runs"] = copy.deepcopy(runs)
        return doc


class Model:
    """Plain dicts and the documented rules; every method mutates only this model."""

    def __init__(self) -> None:
        self.sessions: dict[str, MSession] = {}
        self.records: dict[str, dict[str, Any]] = {}  # insertion order: oldest write first
        self.seq = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def visible(self, sid: str, user_id: str | None) -> MSession | None:
        m = self.sessions.get(sid)
        if m is None or (user_id is not None and m.user_id != user_id):
            return None
        return m

    def put(
        self, session: dict[str, Any], *, now: int, expected_version: int | None = None, preserve: bool = False
    ) -> MSession:
        """upsert_session: conflict check, then the ownership check, then the write."""
        sid = session["session_id"]
        old = self.sessions.get(sid)
        if expected_version is not None and (old.version if old else 0) != expected_version:
            raise ConflictError("model: stale expected_version")
        head = copy.deepcopy({k: v for k, v in session.items() if k != "runs" and k not in STORE_FIELDS})
        if old is not None and old.user_id is not None and head.get("user_id") != old.user_id:
            raise OwnershipError("model: owned by another user")
        given_created = _timestamp(session.get("created_at"))
        given_updated = _timestamp(session.get("updated_at"))
        if old is not None and not preserve:
            created = old.created_at
        else:
            created = given_created if given_created is not None else now
        updated = (given_updated if given_updated is not None else created) if preserve else now
        if old is not None and "runs" not in session:
            runs, runs_key = copy.deepcopy(old.runs), old.runs_key
        else:
            runs_key = "runs" in session
            given = session.get("runs")
            runs = None if given is None else {r["run_id"]: copy.deepcopy(r) for r in given}
        new = MSession(sid, head, runs, runs_key, created, updated, old.version + 1 if old else 1, self.next_seq())
        self.sessions[sid] = new
        return new

    def touch(self, m: MSession, now: int) -> None:
        m.updated_at = now
        m.version += 1
        m.seq = self.next_seq()

    def query(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        team_id: str | None = None,
        workflow_id: str | None = None,
        component_id: str | None = None,
        session_type: str | None = None,
        session_name: str | None = None,
        start_timestamp: int | None = None,
        end_timestamp: int | None = None,
        sort_by: str = "updated_at",
        sort_order: str = "desc",
        limit: int | None = None,
        page: int | None = None,
        include_runs: bool = True,
    ) -> tuple[list[dict[str, Any]], int]:
        def match(m: MSession) -> bool:
            h = m.head
            exact = {"user_id": user_id, "agent_id": agent_id, "team_id": team_id, "workflow_id": workflow_id}
            exact["session_type"] = session_type
            if any(want is not None and h.get(name) != want for name, want in exact.items()):
                return False
            if component_id is not None and component_id not in (
                h.get("agent_id"),
                h.get("team_id"),
                h.get("workflow_id"),
            ):
                return False
            if session_name is not None and (
                m.session_name is None or session_name.lower() not in m.session_name.lower()
            ):
                return False
            return (start_timestamp is None or m.created_at >= start_timestamp) and (
                end_timestamp is None or m.created_at <= end_timestamp
            )

        keys: dict[str, Callable[[MSession], Any]] = {
            "updated_at": lambda m: (m.updated_at, m.seq),
            "created_at": lambda m: (m.created_at, m.seq),
            "session_id": lambda m: m.sid,
        }
        matches = sorted(filter(match, self.sessions.values()), key=keys[sort_by], reverse=sort_order == "desc")
        start = (page - 1) * limit if page is not None and limit is not None else 0
        stop = None if limit is None else start + limit
        return [m.doc(include_runs=include_runs) for m in matches[start:stop]], len(matches)

    @staticmethod
    def owner(record: dict[str, Any]) -> str | None:
        owner = record.get("user_id")
        return owner if isinstance(owner, str) else None


# update_session functions: pure, so the same function applied to the model's copy predicts the store.
def _fn_incr(s: dict[str, Any] | None) -> dict[str, Any] | None:
    if s is None:
        return None
    data = dict(s.get("session_data") or {})
    data["n"] = data.get("n", 0) + 1
    return {**s, "session_data": data}


def _make_fn(
    action: str, sid: str, user: str | None, other: str
) -> Callable[[dict[str, Any] | None], dict[str, Any] | None]:
    def fn(s: dict[str, Any] | None) -> dict[str, Any] | None:
        if action == "noop":
            return None
        if action == "create_or_incr":
            return _fn_incr(s) if s is not None else {"session_id": sid, "user_id": user, "session_data": {"n": 0}}
        if action == "steal":
            return {**(s or {"session_id": sid}), "user_id": other}
        return _fn_incr(s)

    return fn


class StoreMachine(RuleBasedStateMachine):
    """AsyncInMemoryDb over DirectoryPersistence, compared step by step with :class:`Model`."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="aiomemdb-model-"))
        self.clock = FakeClock()
        self.model = Model()
        self.db = self.open_store()

    # -- plumbing ---------------------------------------------------------------------------------------------

    def run(self, coro: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def open_store(self) -> AsyncInMemoryDb:
        db = AsyncInMemoryDb(
            persistence=DirectoryPersistence(self.dir, fsync=False), durability="manual", clock=self.clock
        )
        self.run(db.start())
        return db

    def teardown(self) -> None:
        try:
            self.run(self.db.aclose())
        finally:
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def now(self) -> int:
        return int(self.clock())

    def write(self, model_op: Callable[[Model], Any], store_op: Callable[[], Awaitable[Any]]) -> Any:
        """Apply an operation to a scratch copy of the model and to the store; both succeed alike or fail alike."""
        scratch = copy.deepcopy(self.model)
        try:
            want = model_op(scratch)
        except AiomemdbError as exc:
            refused: AiomemdbError | None = exc
        else:
            refused = None
        if refused is not None:
            with pytest.raises(AiomemdbError) as info:
                self.run(store_op())
            assert info.type is type(refused), f"store raised {info.value!r}, model: {type(refused).__name__}"
            return refused
        got = self.run(store_op())
        self.model = scratch
        assert got == want
        return got

    def snapshot(self) -> Any:
        sessions, total = self.run(self.db.get_sessions())
        records = self.run(self.db.list_records(COLLECTION))
        stats = self.db.stats()
        return sessions, total, records, stats.sessions, stats.records, stats.dirty

    @initialize(
        batch=st.lists(st.tuples(sessions(), st.sampled_from([0.0, 0.5, 1.0])), max_size=5),
        records=st.lists(st.tuples(record_ids, record_owners, json_value), max_size=3),
    )
    def seed(self, batch: list[tuple[dict[str, Any], float]], records: list[tuple[str, str, Any]]) -> None:
        """Start from a few sessions, some written in the same second, and a few records."""
        for session, dt in batch:
            self.clock.now += dt
            self.upsert_session(session, "none")
        for rid, owner, value in records:
            self.put_record(rid, owner, value)

    # -- the clock --------------------------------------------------------------------------------------------

    @rule(dt=st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0, 2.0]))
    def tick(self, dt: float) -> None:
        """Advance the fake clock by 0 to 2 s (fractions included, so many writes share one second)."""
        self.clock.now += dt

    # -- session writes ---------------------------------------------------------------------------------------

    @rule(session=sessions(), expect=st.sampled_from(["none", "right", "wrong"]))
    def upsert_session(self, session: dict[str, Any], expect: str) -> None:
        """upsert_session creates or replaces; without runs it keeps runs; a wrong expected_version conflicts."""
        sid = session["session_id"]
        current = self.model.sessions.get(sid)
        right = current.version if current is not None else 0
        expected = {"none": None, "right": right, "wrong": right + 1}[expect]
        before = copy.deepcopy(session)
        self.write(
            lambda m: m.put(session, now=self.now, expected_version=expected).doc(),
            lambda: self.db.upsert_session(session, expected_version=expected),
        )
        assert session == before  # the caller's dict is not mutated

    @rule(sid=sids, stale_retry=st.booleans())
    def read_modify_write(self, sid: str, stale_retry: bool) -> None:
        """A read, a change and a write with expected_version=version succeeds; the same version again conflicts."""
        doc = self.run(self.db.get_session(sid))
        if doc is None:
            doc, version = {"session_id": sid, "session_data": {"n": 0}}, 0
        else:
            version = doc["version"]
            doc = _fn_incr(doc)
        assert doc is not None
        stored = self.write(
            lambda m: m.put(doc, now=self.now, expected_version=version).doc(),
            lambda: self.db.upsert_session(doc, expected_version=version),
        )
        assert stored["version"] == version + 1
        if stale_retry:
            with pytest.raises(ConflictError) as info:
                self.run(self.db.upsert_session(doc, expected_version=version))
            assert (info.value.expected, info.value.actual) == (version, version + 1)

    @rule(sid=sids, rid=st.sampled_from(RUN_IDS), payload=json_value, as_user=maybe_user)
    def upsert_run(self, sid: str, rid: str, payload: Any, as_user: str | None) -> None:
        """upsert_run appends a new run_id, replaces an existing one in place, and is NotFoundError when unseen."""
        run = {"run_id": rid, "payload": payload}

        def model_op(m: Model) -> None:
            s = m.visible(sid, as_user)
            if s is None:
                raise NotFoundError("model: no such session")
            m.touch(s, self.now)
            if s.runs is None:
                s.runs, s.runs_key = {}, True
            s.runs[rid] = copy.deepcopy(run)

        self.write(model_op, lambda: self.db.upsert_run(sid, run, user_id=as_user))

    @rule(sid=sids, rid=st.sampled_from(RUN_IDS), as_user=maybe_user)
    def delete_run(self, sid: str, rid: str, as_user: str | None) -> None:
        """delete_run removes one visible run and reports whether it existed."""

        def model_op(m: Model) -> bool:
            s = m.visible(sid, as_user)
            if s is None or s.runs is None or rid not in s.runs:
                return False
            m.touch(s, self.now)
            del s.runs[rid]
            return True

        self.write(model_op, lambda: self.db.delete_run(sid, rid, user_id=as_user))

    @rule(sid=sids, as_user=maybe_user)
    def delete_session(self, sid: str, as_user: str | None) -> None:
        """delete_session deletes a visible session and reports whether it did."""

        def model_op(m: Model) -> bool:
            if m.visible(sid, as_user) is None:
                return False
            del m.sessions[sid]
            return True

        self.write(model_op, lambda: self.db.delete_session(sid, user_id=as_user))

    @rule(ids=st.lists(sids, max_size=4), as_user=maybe_user)
    def delete_sessions(self, ids: list[str], as_user: str | None) -> None:
        """delete_sessions deletes every visible listed session (duplicates once) and returns the count."""

        def model_op(m: Model) -> int:
            gone = [sid for sid in dict.fromkeys(ids) if m.visible(sid, as_user) is not None]
            for sid in gone:
                del m.sessions[sid]
            return len(gone)

        self.write(model_op, lambda: self.db.delete_sessions(ids, user_id=as_user))

    @rule(sid=sids, name=session_names, as_user=maybe_user)
    def rename_session(self, sid: str, name: str, as_user: str | None) -> None:
        """rename_session sets session_data.session_name on a visible session, keeping its runs."""

        def model_op(m: Model) -> dict[str, Any] | None:
            s = m.visible(sid, as_user)
            if s is None:
                return None
            head = copy.deepcopy(s.head)
            data = head.get("session_data")
            head["session_data"] = {**(data if isinstance(data, dict) else {}), "session_name": name}
            return m.put(head, now=self.now).doc()

        self.write(model_op, lambda: self.db.rename_session(sid, name, user_id=as_user))

    @rule(
        sid=sids,
        action=st.sampled_from(["incr", "create_or_incr", "noop", "steal"]),
        as_user=maybe_user,
        other=users,
        is_async=st.booleans(),
    )
    def update_session(self, sid: str, action: str, as_user: str | None, other: str, is_async: bool) -> None:
        """update_session calls fn once with the visible session (or None) and stores what it returns."""
        fn = _make_fn(action, sid, as_user, other)
        calls: list[dict[str, Any] | None] = []

        def sync_fn(s: dict[str, Any] | None) -> dict[str, Any] | None:
            calls.append(copy.deepcopy(s))
            return fn(s)

        async def async_fn(s: dict[str, Any] | None) -> dict[str, Any] | None:
            await asyncio.sleep(0)
            return sync_fn(s)

        def model_op(m: Model) -> dict[str, Any] | None:
            s = m.visible(sid, as_user)
            result = fn(s.doc() if s is not None else None)
            if result is None:
                return None
            if s is None and sid in m.sessions:
                raise OwnershipError("model: fn saw None for another user's session, so it may not write it")
            return m.put(result, now=self.now).doc()

        seen = self.model.visible(sid, as_user)
        self.write(model_op, lambda: self.db.update_session(sid, async_fn if is_async else sync_fn, user_id=as_user))
        assert calls == [seen.doc() if seen is not None else None]

    @rule(
        batch=st.lists(
            st.tuples(sessions(), st.none() | st.integers(-10, 3), st.none() | st.integers(0, 4)),
            min_size=1,
            max_size=4,
        ),
        preserve=st.booleans(),
    )
    def upsert_sessions(self, batch: list[tuple[dict[str, Any], int | None, int | None]], preserve: bool) -> None:
        """upsert_sessions is sequential upserts applied atomically; preserve_updated_at keeps (old) timestamps."""
        docs = []
        for session, created_offset, age in batch:
            doc = dict(session)
            if preserve and created_offset is not None:
                doc["created_at"] = self.now + created_offset
                if age is not None:
                    doc["updated_at"] = doc["created_at"] + age
            docs.append(doc)

        def model_op(m: Model) -> list[dict[str, Any]]:
            return [m.put(doc, now=self.now, preserve=preserve).doc() for doc in docs]

        got = self.write(model_op, lambda: self.db.upsert_sessions(docs, preserve_updated_at=preserve))
        if not isinstance(got, AiomemdbError):
            assert len(got) == len(docs)

    @rule(n=st.integers(0, 9))
    def drop(self, n: int) -> None:
        """drop (drawn rarely) empties every session and collection."""
        if n:
            return
        self.run(self.db.drop())
        self.model.sessions.clear()
        self.model.records.clear()

    # -- collection records -----------------------------------------------------------------------------------

    @rule(rid=record_ids, owner=record_owners, value=json_value)
    def put_record(self, rid: str, owner: str, value: Any) -> None:
        """put_record creates or replaces a record (moving it to the newest end) unless another user owns it."""
        record: dict[str, Any] = {"rid": rid, "memory": value}
        if owner != "absent":
            record["user_id"] = None if owner == "none" else owner

        def model_op(m: Model) -> dict[str, Any]:
            old = m.records.get(rid)
            if old is not None and m.owner(old) is not None and m.owner(old) != m.owner(record):
                raise OwnershipError("model: record owned by another user")
            m.records.pop(rid, None)  # a replaced record moves to the end: oldest write first
            m.records[rid] = copy.deepcopy(record)
            return record

        self.write(model_op, lambda: self.db.put_record(COLLECTION, rid, record))

    @rule(rid=record_ids, as_user=maybe_user)
    def get_and_delete_record(self, rid: str, as_user: str | None) -> None:
        """get_record and delete_record see a record only when it is visible to user_id."""
        rec = self.model.records.get(rid)
        visible = rec is not None and (as_user is None or self.model.owner(rec) == as_user)
        assert self.run(self.db.get_record(COLLECTION, rid, user_id=as_user)) == (rec if visible else None)

        def model_op(m: Model) -> bool:
            if visible:
                del m.records[rid]
            return visible

        self.write(model_op, lambda: self.db.delete_record(COLLECTION, rid, user_id=as_user))

    @rule(as_user=maybe_user)
    def list_records(self, as_user: str | None) -> None:
        """list_records returns the visible records, oldest write first."""
        want = [r for r in self.model.records.values() if as_user is None or self.model.owner(r) == as_user]
        assert self.run(self.db.list_records(COLLECTION, user_id=as_user)) == want

    @rule()
    def clear_collection(self) -> None:
        """clear_collection removes every record and returns how many there were."""

        def model_op(m: Model) -> int:
            n = len(m.records)
            m.records.clear()
            return n

        self.write(model_op, lambda: self.db.clear_collection(COLLECTION))

    # -- reads ------------------------------------------------------------------------------------------------

    @rule(sid=sids, as_user=maybe_user, runs_limit=st.none() | st.integers(0, 3))
    def get_session(self, sid: str, as_user: str | None, runs_limit: int | None) -> None:
        """get_session returns the visible session with only its last runs_limit runs."""
        s = self.model.visible(sid, as_user)
        got = self.run(self.db.get_session(sid, user_id=as_user, runs_limit=runs_limit))
        assert got == (s.doc(runs_limit) if s is not None else None)

    @rule(
        filters=st.lists(st.sampled_from(sorted(FILTERS)), unique=True, max_size=2).flatmap(
            lambda names: st.fixed_dictionaries({name: FILTERS[name] for name in names})
        ),
        sort_by=st.sampled_from(["updated_at", "created_at", "session_id"]),
        sort_order=st.sampled_from(["asc", "desc"]),
        limit=st.none() | st.integers(0, 4),
        page=st.none() | st.integers(1, 3),
        include_runs=st.booleans(),
    )
    def get_sessions(
        self,
        filters: dict[str, Any],
        sort_by: str,
        sort_order: str,
        limit: int | None,
        page: int | None,
        include_runs: bool,
    ) -> None:
        """get_sessions applies every filter, sorts (ties: later write first), pages and counts like the model."""
        for bound in ("start_timestamp", "end_timestamp"):
            if bound in filters:
                filters[bound] += self.now
        kwargs = {
            **filters,
            "sort_by": sort_by,
            "sort_order": sort_order,
            "limit": limit,
            "page": page,
            "include_runs": include_runs,
        }
        assert self.run(self.db.get_sessions(**kwargs)) == self.model.query(**kwargs)

    @rule(
        sort_by=st.sampled_from(["updated_at", "created_at", "session_id"]),
        sort_order=st.sampled_from(["asc", "desc"]),
        limit=st.none() | st.integers(0, 3),
        page=st.none() | st.integers(1, 2),
    )
    def every_single_filter(self, sort_by: str, sort_order: str, limit: int | None, page: int | None) -> None:
        """Each filter alone, at every value in play (timestamps at, before and after each created_at), matches."""
        created = {m.created_at + d for m in self.model.sessions.values() for d in (-1, 0, 1)}
        values: dict[str, list[Any]] = {
            "user_id": USERS,
            "agent_id": ["a1", "a2"],
            "team_id": ["t1"],
            "workflow_id": ["w1", "a1"],
            "component_id": ["a1", "a2", "t1", "w1"],
            "session_type": ["agent", "team"],
            "session_name": ["alp", "BETA", "gam"],
            "start_timestamp": sorted(created),
            "end_timestamp": sorted(created),
        }
        for name, choices in values.items():
            for value in choices:
                kwargs = {name: value, "sort_by": sort_by, "sort_order": sort_order, "limit": limit, "page": page}
                assert self.run(self.db.get_sessions(**kwargs)) == self.model.query(**kwargs), kwargs

    @rule(limit=st.integers(0, 6), as_user=maybe_user)
    def recent_and_all(self, limit: int, as_user: str | None) -> None:
        """get_recent_sessions and get_all_sessions list the newest first, the later write first on a tie."""
        assert (
            self.run(self.db.get_recent_sessions(limit=limit, user_id=as_user))
            == self.model.query(user_id=as_user, limit=limit)[0]
        )
        assert self.run(self.db.get_all_sessions(as_user)) == self.model.query(user_id=as_user)[0]

    # -- the owner guard --------------------------------------------------------------------------------------

    @rule(sid=sids, rid=record_ids, other=users)
    def owner_guard(self, sid: str, rid: str, other: str) -> None:
        """Another user's session or record is invisible to that user's reads and deletes and refuses its writes."""
        before = self.snapshot()
        s = self.model.sessions.get(sid)
        if s is not None and s.user_id is not None and s.user_id != other:
            assert self.run(self.db.get_session(sid, user_id=other)) is None
            assert self.run(self.db.delete_session(sid, user_id=other)) is False
            assert self.run(self.db.delete_sessions([sid], user_id=other)) == 0
            assert self.run(self.db.delete_run(sid, "r1", user_id=other)) is False
            assert self.run(self.db.rename_session(sid, "hijacked", user_id=other)) is None
            assert sid not in [d["session_id"] for d in self.run(self.db.get_all_sessions(other))]
            with pytest.raises(NotFoundError):
                self.run(self.db.upsert_run(sid, {"run_id": "r1"}, user_id=other))
            with pytest.raises(OwnershipError):
                self.run(self.db.upsert_session({"session_id": sid, "user_id": other}))
            with pytest.raises(OwnershipError):
                self.run(self.db.upsert_session({"session_id": sid}))  # dropping the owner is a takeover too
            with pytest.raises(OwnershipError):
                self.run(self.db.upsert_sessions([{"session_id": sid, "user_id": other}]))
        r = self.model.records.get(rid)
        if r is not None and self.model.owner(r) not in (None, other):
            assert self.run(self.db.get_record(COLLECTION, rid, user_id=other)) is None
            assert self.run(self.db.delete_record(COLLECTION, rid, user_id=other)) is False
            assert rid not in [x["rid"] for x in self.run(self.db.list_records(COLLECTION, user_id=other))]
            with pytest.raises(OwnershipError):
                self.run(self.db.put_record(COLLECTION, rid, {"rid": rid, "user_id": other}))
            with pytest.raises(OwnershipError):
                self.run(self.db.put_record(COLLECTION, rid, {"rid": rid}))
        assert self.snapshot() == before

    # -- invalid input ----------------------------------------------------------------------------------------

    @rule(sid=sids, case=st.integers(0, 22))
    def invalid_input(self, sid: str, case: int) -> None:
        """Input that cannot be stored raises the documented error (with the bad value's path) and changes nothing."""
        db = self.db
        current = self.model.sessions.get(sid)
        good = {"session_id": sid, "user_id": current.user_id if current else None, "session_data": {"ok": 1}}

        def bad_fn(s: dict[str, Any] | None) -> dict[str, Any]:
            raise ArithmeticError("fn failed")

        deep_bad = {
            "session_id": sid,
            "runs": [{"run_id": "r1"}, {"run_id": "r2", "p": {"deep": [1, {"bad": {1, 2}}]}}],
        }
        obj_data = {"session_id": sid, "session_data": {"obj": object()}}
        big_int = {"session_id": sid, "metadata": {"big": 2**70}}
        cases: list[tuple[type[BaseException], str | None, Callable[[], Awaitable[Any]]]] = [
            (SerializationError, "runs[1].p.deep[1].bad", lambda: db.upsert_session(deep_bad)),
            (SerializationError, "session_data.obj", lambda: db.upsert_session(obj_data)),
            (SerializationError, "metadata.big", lambda: db.upsert_session(big_int)),
            (SerializationError, None, lambda: db.upsert_session({"session_id": sid, "session_data": {1: "int key"}})),
            (SerializationError, "run.tools[0].t", lambda: db.upsert_run(sid, {"run_id": "r1", "tools": [{"t": {3}}]})),
            (SerializationError, None, lambda: db.upsert_sessions([good, {"session_id": "s9", "metadata": object()}])),
            (SerializationError, None, lambda: db.put_record(COLLECTION, "m1", {"memory": {"x": object()}})),
            (ValidationError, None, lambda: db.upsert_session({"session_id": ""})),
            (ValidationError, None, lambda: db.upsert_session({"session_id": "x" * 513})),
            (ValidationError, None, lambda: db.upsert_session({"session_id": 7})),
            (ValidationError, None, lambda: db.upsert_session({"session_id": "a\x00b"})),
            (ValidationError, None, lambda: db.upsert_session({"user_id": "alice"})),
            (ValidationError, None, lambda: db.upsert_session({"session_id": sid, "user_id": 5})),
            (ValidationError, None, lambda: db.upsert_session({"session_id": sid, "runs": [{"run_id": "r1"}] * 2})),
            (ValidationError, None, lambda: db.upsert_session({"session_id": sid, "runs": [{"no_run_id": 1}]})),
            (ValidationError, None, lambda: db.upsert_session(good, expected_version=-1)),
            (ValidationError, None, lambda: db.upsert_sessions([good, {"session_id": ""}])),
            (ValidationError, None, lambda: db.upsert_run(sid, {"run_id": ""})),
            (ValidationError, None, lambda: db.put_record("Bad-Name", "m1", {"memory": 1})),
            (ValidationError, None, lambda: db.put_record("sessions", "m1", {"memory": 1})),
            (ValidationError, None, lambda: db.delete_sessions(sid)),
            (ValidationError, None, lambda: db.update_session(sid, lambda s: {"session_id": "elsewhere"})),
            (ArithmeticError, None, lambda: db.update_session(sid, bad_fn)),
        ]  # fmt: skip
        expected, path, call = cases[case]
        before = self.snapshot()
        with pytest.raises(expected) as info:
            self.run(call())
        assert info.type is expected
        if path is not None:
            assert isinstance(info.value, SerializationError)
            assert info.value.path == path
        assert self.snapshot() == before

    # -- restart ----------------------------------------------------------------------------------------------

    @rule(flush_first=st.booleans())
    def restart(self, flush_first: bool) -> None:
        """Closing and reopening over the same directory restores every session and record exactly."""
        if flush_first:
            self.run(self.db.flush())
        self.run(self.db.aclose())
        with pytest.raises(ClosedError):
            self.run(self.db.get_session("s1"))
        self.db = self.open_store()
        stats = self.db.stats()
        assert (stats.loads, stats.dirty) == (len(self.model.sessions) + len(self.model.records), 0)
        # Documents, versions and timestamps are compared by the invariant; the order, ties included, here.
        assert self.run(self.db.get_all_sessions()) == self.model.query()[0]
        assert self.run(self.db.list_records(COLLECTION)) == list(self.model.records.values())

    # -- invariants -------------------------------------------------------------------------------------------

    @invariant()
    def every_session_matches(self) -> None:
        """Every session reads back equal to the model (versions, timestamps, order); no other session exists."""
        for sid in SIDS:
            m = self.model.sessions.get(sid)
            assert self.run(self.db.get_session(sid)) == (m.doc() if m is not None else None)
            assert self.run(self.db.get_session(sid, runs_limit=1)) == (m.doc(1) if m is not None else None)
        assert self.run(self.db.get_all_sessions()) == self.model.query()[0]
        total = self.run(self.db.get_sessions(limit=0))[1]
        stats = self.db.stats()
        assert total == stats.sessions == len(self.model.sessions)
        assert stats.records.get(COLLECTION, 0) == len(self.model.records)


def test_store_matches_model() -> None:
    """Over random operation sequences (restarts included) the store behaves exactly like the plain-dict model."""
    run_state_machine_as_test(
        StoreMachine,
        settings=settings(
            max_examples=60,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


async def test_restart_keeps_the_later_write_first_on_equal_seconds(tmp_path: Path) -> None:
    """After a restart, sessions and records written within one second still list in write order."""
    clock = FakeClock()
    written = ["m", "zz", "B", "A", "k", "c"]  # neither sorted nor reverse-sorted, so no name order can pass

    def store() -> AsyncInMemoryDb:
        return AsyncInMemoryDb(
            persistence=DirectoryPersistence(tmp_path, fsync=False), durability="manual", clock=clock
        )

    async with store() as db:
        for sid in written:
            await db.upsert_session({"session_id": sid})
            await db.put_record(COLLECTION, sid, {"rid": sid})
        await db.upsert_session({"session_id": "zz", "session_data": {"edited": True}})
        await db.put_record(COLLECTION, "zz", {"rid": "zz", "edited": True})
        before = await db.get_all_sessions()
        records = await db.list_records(COLLECTION)
    assert [s["session_id"] for s in before] == ["zz", "c", "k", "A", "B", "m"]
    assert [r["rid"] for r in records] == ["m", "B", "A", "k", "c", "zz"]
    async with store() as db:
        assert await db.get_all_sessions() == before
        assert [s["session_id"] for s in await db.get_recent_sessions(limit=2)] == ["zz", "c"]
        assert await db.list_records(COLLECTION) == records


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
async def test_non_finite_floats_are_rejected_not_stored_as_null(value: float) -> None:
    """A NaN or infinite float has no JSON form, so the write raises SerializationError naming its path."""
    async with AsyncInMemoryDb() as db:
        with pytest.raises(SerializationError) as info:
            await db.upsert_session({"session_id": "s", "session_data": {"score": value}})
        assert info.value.path == "session_data.score"
        assert await db.get_session("s") is None
        with pytest.raises(SerializationError):
            await db.put_record(COLLECTION, "m1", {"score": value})
        assert await db.get_record(COLLECTION, "m1") is None
