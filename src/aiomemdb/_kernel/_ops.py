"""The store's operations as synchronous kernel transactions: plan under the lock, then one commit.

Each function takes the :class:`~aiomemdb._kernel.Kernel`, its arguments (already type-checked by the driver)
and ``fetched``, the keys the driver has just asked storage for; it raises
:class:`~aiomemdb._kernel.NeedsLoad` when it needs more. Results are built inside the critical section (as
bytes, decoded by the caller outside it), so nothing a later eviction or flush does can spoil them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from aiomemdb._codec import SESSIONS
from aiomemdb._exceptions import CorruptDataError, ValidationError
from aiomemdb._kernel._effects import Drop, Effect, SetRecord, SetRun, SetSession
from aiomemdb._kernel._kernel import Kernel, Key, NeedsLoad
from aiomemdb._record import RawParts, SessionRecord

__all__ = [
    "adopt_storage_dict",
    "clear_collection",
    "delete_records",
    "delete_run",
    "delete_sessions",
    "drop",
    "get_record",
    "get_run",
    "get_session",
    "get_session_parts",
    "list_records",
    "put_records",
    "read_for_update",
    "refresh",
    "rename_session",
    "replay",
    "update_record",
    "upsert_run",
    "upsert_session",
    "upsert_session_row",
    "upsert_sessions",
]

Fetched = frozenset[Key]


# -- sessions: reads ---------------------------------------------------------------------------------------


def get_session(k: Kernel, sid: str, user_id: str | None, runs_limit: int | None, fetched: Fetched) -> bytes | None:
    """The session's document, or None (missing, or owned by another user)."""
    with k.lock:
        rec = k.visible(sid, user_id, fetched, payload=True)
        if rec is None:
            return None
        k.res.touch(sid)
        return rec.doc_bytes(runs_limit)


def get_session_parts(k: Kernel, sid: str, user_id: str | None, fetched: Fetched) -> RawParts | None:
    """The session as ``SessionRecord.parts()`` (its head, stamps and each run's bytes), or None."""
    with k.lock:
        rec = k.visible(sid, user_id, fetched, payload=True)
        if rec is None:
            return None
        k.res.touch(sid)
        return rec.parts()


def get_run(k: Kernel, sid: str, run_id: str, user_id: str | None, fetched: Fetched) -> bytes | None:
    """One run's document, or None."""
    with k.lock:
        rec = k.visible(sid, user_id, fetched, payload=True)
        if rec is None or not rec.runs:
            return None
        k.res.touch(sid)
        return rec.runs.get(run_id)


def read_for_update(k: Kernel, sid: str, user_id: str | None, fetched: Fetched) -> tuple[bytes | None, int, bool]:
    """``(document or None, version or 0, exists but owned by another user)`` for a read-modify-write."""
    with k.lock:
        rec = k.session(sid, fetched, payload=True)
        if rec is None:
            return None, 0, False
        if user_id is not None and rec.user_id != user_id:
            return None, rec.version, True
        k.res.touch(sid)
        return rec.doc_bytes(), rec.version, False


# -- sessions: writes --------------------------------------------------------------------------------------


def upsert_session(
    k: Kernel,
    session: Mapping[str, Any],
    expected_version: int | None,
    preserve: bool,
    include_runs: bool,
    fetched: Fetched,
) -> bytes:
    """Create or replace one session; the stored document."""
    sid = session["session_id"]
    with k.lock:
        old = k.session(sid, fetched, payload="runs" not in session)  # the stored runs are carried over
        new = k.build_session(session, old, expected_version=expected_version, preserve=preserve)
        k.commit([SetSession(sid, new)])
        return new.doc_bytes(include_runs=include_runs)


def upsert_session_row(
    k: Kernel,
    row: Mapping[str, Any],
    create: Callable[[], Mapping[str, Any]],
    preserve: bool,
    fetched: Fetched,
) -> tuple[bytes, bool]:
    """Save a session's row (its stored runs kept) or, if the session does not exist, create it as ``create()``
    returns it: one commit either way, so a session created with its runs is never seen (nor journaled) without
    them. ``create`` runs under the lock, and only when the session is new; a created session keeps the
    timestamps ``create()`` gives. Returns the stored row (no runs) and whether this call created the session.
    """
    sid = row["session_id"]
    with k.lock:
        old = k.session(sid, fetched, payload=True)  # the stored runs are carried over
        if old is None:
            doc = create()
            if not isinstance(doc, Mapping) or doc.get("session_id") != sid:
                raise ValidationError(f"the session created for {sid!r} must be a dict with that session_id")
            new = k.build_session(doc, None, preserve=True)
        else:
            new = k.build_session(row, old, preserve=preserve)
        k.commit([SetSession(sid, new)])
        return new.doc_bytes(include_runs=False), old is None


def upsert_sessions(
    k: Kernel, sessions: Sequence[Mapping[str, Any]], preserve: bool, fetched: Fetched
) -> list[bytes]:
    """Create or replace many sessions atomically (all validated before any is stored)."""
    with k.lock:
        missing = _missing(k, {s["session_id"] for s in sessions}, fetched)
        if missing:
            raise NeedsLoad(missing)
        built: dict[str, SessionRecord] = {}
        out: list[SessionRecord] = []
        for session in sessions:
            sid = session["session_id"]
            old = built.get(sid) or k.sessions.get(sid)
            new = k.build_session(session, old, preserve=preserve)
            built[sid] = new
            out.append(new)
        k.commit([SetSession(sid, rec) for sid, rec in built.items()])
        return [rec.doc_bytes() for rec in out]


def _missing(k: Kernel, sids: set[str], fetched: Fetched) -> list[Key]:
    """The sessions among ``sids`` that must be fetched before their payload can be used."""
    out: list[Key] = []
    for sid in sorted(sids):
        try:
            k.session(sid, fetched, payload=True)
        except NeedsLoad as need:
            out.extend(need.keys)
    return out


def upsert_run(k: Kernel, sid: str, run_id: str, raw: bytes, user_id: str | None, fetched: Fetched) -> None:
    """Append or replace one run (O(1) in session length)."""
    with k.lock:
        k.commit([k.run_effect(sid, user_id, run_id, raw, fetched)])


def delete_run(k: Kernel, sid: str, run_id: str, user_id: str | None, fetched: Fetched) -> bool:
    """Remove one run; True if it existed."""
    with k.lock:
        rec = k.visible(sid, user_id, fetched, payload=True)
        if rec is None or rec.runs is None or run_id not in rec.runs:
            return False
        k.commit([k.run_effect(sid, user_id, run_id, None, fetched)])
        return True


def rename_session(k: Kernel, sid: str, name: str, user_id: str | None, fetched: Fetched) -> bytes | None:
    """Set ``session_data.session_name``; the stored document, or None if not found."""
    with k.lock:
        rec = k.visible(sid, user_id, fetched, payload=True)
        if rec is None:
            return None
        head: dict[str, Any] = orjson.loads(rec.head)
        data = head.get("session_data")
        head["session_data"] = {**(data if isinstance(data, dict) else {}), "session_name": name}
        new = k.build_session(head, rec)
        k.commit([SetSession(sid, new)])
        return new.doc_bytes()


def delete_sessions(k: Kernel, sids: Sequence[str], user_id: str | None, fetched: Fetched) -> int:
    """Delete the visible ones among ``sids`` atomically; how many there were."""
    with k.lock:
        need = [key for sid in sids for key in _lazy_miss(k, sid, fetched)]
        if need:
            raise NeedsLoad(need)
        gone = [sid for sid in sids if k.visible(sid, user_id, fetched, payload=False) is not None]
        k.commit([SetSession(sid, None) for sid in gone])
        return len(gone)


def _lazy_miss(k: Kernel, sid: str, fetched: Fetched) -> tuple[Key, ...]:
    try:
        k.session(sid, fetched, payload=False)
    except NeedsLoad as need:
        return need.keys
    return ()


def drop(k: Kernel, stored: Sequence[Key], fetched: Fetched) -> None:
    """Delete everything, and the ``stored`` keys a lazy store never loaded."""
    with k.lock:
        k.commit([Drop(tuple(stored))])


def refresh(k: Kernel, sid: str, doc: dict[str, Any] | None) -> bytes | None:
    """Replace the session in memory with storage's version, discarding local changes (``doc`` None: gone)."""
    where = f"{SESSIONS}/{sid}"
    rec = None
    if doc is not None:
        rec = SessionRecord.from_stored(doc, seq=0, key=where)
        if rec.session_id != sid:
            raise CorruptDataError(f"{where}: contains session_id {rec.session_id!r}", key=where)
    with k.lock:
        k.dirty.pop((SESSIONS, sid), None)
        if rec is not None:
            # Keep the session's place in the recency order (as a reload does): storage's version is not a new
            # write, and a new seq would be forgotten by the next restart, which orders by the stored one.
            current = k.sessions.get(sid)
            rec.seq = current.seq if current is not None else k.next_seq()
        k.commit([SetSession(sid, rec)], dirty=False)
        return rec.doc_bytes() if rec is not None else None


def replay(k: Kernel, effects: list[Effect], fetched: Fetched) -> None:
    """Apply one journal entry's effects (they are in the journal already)."""
    with k.lock:
        need: list[Key] = []
        for effect in effects:
            if isinstance(effect, SetRun) and effect.sid in k.sessions and not k.sessions[effect.sid].resident:
                need.append((SESSIONS, effect.sid))
            elif isinstance(effect, SetRun | SetSession):
                need.extend(_lazy_miss(k, effect.sid, fetched))
        if need:
            raise NeedsLoad(need)
        # A run of a session deleted later (whose delete a flush already persisted) has nothing to apply to.
        kept = [e for e in effects if not (isinstance(e, SetRun) and e.sid not in k.sessions)]
        k.commit(kept, journal=False)


# -- the caller's storage_dict ------------------------------------------------------------------------------


def adopt_storage_dict(k: Kernel, storage: dict[str, Any]) -> None:
    """Take the caller's ``storage_dict`` in as the sessions (validated: a bad entry names its key)."""
    if not isinstance(storage, dict):
        raise ValidationError(f"storage_dict must be a dict, got {type(storage).__name__}")
    built: list[SessionRecord] = []
    for key, value in storage.items():
        if not isinstance(key, str):
            raise ValidationError(f"storage_dict key {key!r} is not a str")
        if not isinstance(value, Mapping):
            raise ValidationError(f"storage_dict[{key!r}] must be a session dict, got {type(value).__name__}")
        if value.get("session_id") != key:
            raise ValidationError(f"storage_dict[{key!r}] has session_id {value.get('session_id')!r}")
        version = value.get("version")
        try:
            rec = SessionRecord.build(
                value,
                now=int(k.clock()),
                seq=k.next_seq(),
                previous=None,
                preserve_timestamps=True,
                version=version if isinstance(version, int) and not isinstance(version, bool) else 1,
            )
        except ValidationError as exc:
            raise type(exc)(f"storage_dict[{key!r}]: {exc}") from exc
        built.append(rec)
    with k.lock:
        k.commit([SetSession(rec.session_id, rec) for rec in built])


# -- collections -------------------------------------------------------------------------------------------


def get_record(k: Kernel, collection: str, rid: str, user_id: str | None, fetched: Fetched) -> bytes | None:
    """One record's document, or None (missing, or owned by another user)."""
    with k.lock:
        blob = k.record(collection, rid, fetched)
        if blob is None or (user_id is not None and blob[1] != user_id):
            return None
        return blob[0]


def put_records(k: Kernel, collection: str, items: Sequence[tuple[str, bytes, str | None]], fetched: Fetched) -> None:
    """Create or replace records atomically; ``items`` are ``(id, encoded, owner)``."""
    with k.lock:
        need = [key for rid, _, _ in items for key in _record_miss(k, collection, rid, fetched)]
        if need:
            raise NeedsLoad(need)
        for rid, _, owner in items:
            k.check_record_owner(collection, rid, owner)
        k.commit([SetRecord(collection, rid, (raw, owner, k.next_seq())) for rid, raw, owner in items])


def _record_miss(k: Kernel, collection: str, rid: str, fetched: Fetched) -> tuple[Key, ...]:
    try:
        k.record(collection, rid, fetched)
    except NeedsLoad as need:
        return need.keys
    return ()


def update_record(
    k: Kernel,
    collection: str,
    rid: str,
    fn: Callable[[dict[str, Any] | None], Any],
    encode: Callable[[Any], tuple[bytes, str | None]],
    fetched: Fetched,
) -> bytes | None:
    """Read-modify-write one record with a synchronous ``fn``; the stored document, or None if unchanged.

    ``fn`` runs outside the lock (it is the caller's code); the write is committed only if the record did
    not change meanwhile, else ``fn`` runs again on the new value.
    """
    while True:
        with k.lock:
            blob = k.record(collection, rid, fetched)
        result = fn(orjson.loads(blob[0]) if blob is not None else None)
        if result is None:
            return None
        raw, owner = encode(result)
        with k.lock:
            if k.collections.get(collection, {}).get(rid) is not blob:
                continue
            k.check_record_owner(collection, rid, owner)
            k.commit([SetRecord(collection, rid, (raw, owner, k.next_seq()))])
            return raw


def delete_records(k: Kernel, collection: str, rids: Sequence[str], user_id: str | None, fetched: Fetched) -> int:
    """Delete the visible ones among ``rids``; how many there were."""
    with k.lock:
        need = [key for rid in rids for key in _record_miss(k, collection, rid, fetched)]
        if need:
            raise NeedsLoad(need)
        table = k.collections.get(collection, {})
        gone = [rid for rid in rids if rid in table and (user_id is None or table[rid][1] == user_id)]
        k.commit([SetRecord(collection, rid, None) for rid in gone])
        return len(gone)


def list_records(k: Kernel, collection: str, user_id: str | None) -> list[bytes]:
    """Every record of a collection held in memory (of ``user_id``, if given), oldest write first."""
    with k.lock:
        table = k.collections.get(collection, {})
        return [raw for raw, owner, _ in table.values() if user_id is None or owner == user_id]


def clear_collection(k: Kernel, collection: str, stored: Sequence[str], fetched: Fetched) -> int:
    """Delete every record of a collection, and the ``stored`` ids a lazy store never loaded."""
    with k.lock:
        ids = list(dict.fromkeys([*k.collections.get(collection, {}), *stored]))
        k.commit([SetRecord(collection, rid, None) for rid in ids])
        return len(ids)


def check_session_result(sid: str, result: object) -> Mapping[str, Any]:
    """What an update_session function returned must be a dict for the same session."""
    if not isinstance(result, Mapping) or result.get("session_id") != sid:
        raise ValidationError(f"update_session: fn must return a dict with session_id={sid!r}")
    return result
