"""What a write does to the store, as data: the effects a commit applies, and their journal lines.

Every write kind (upsert, run write, delete, collection write, drop, journal replay, adoption of a merge) is
turned into a list of effects *before* anything changes. The kernel then journals them as one line, applies
them and marks them dirty, in that order (:meth:`aiomemdb._kernel.Kernel._commit`). Replay parses a journal
line back into the same effects, so a replayed write takes exactly the path of the original.

Journal lines (one JSON object each; a write of several effects is one ``batch`` line, so a crash can never
replay half of it)::

    {"op":"put","c":"sessions","id":ID,"seq":N,"updated_at":N,"version":N,"doc":{...}}
    {"op":"run","c":"sessions","id":ID,"seq":N,"updated_at":N,"version":N,"run":{...}}
    {"op":"delrun","c":"sessions","id":ID,"seq":N,"updated_at":N,"version":N,"run_id":RID}
    {"op":"put","c":COLLECTION,"id":ID,"seq":N,"doc":{...}}
    {"op":"del","c":COLLECTION,"id":ID}
    {"op":"drop"}
    {"op":"batch","ops":[...]}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from aiomemdb._codec import SESSIONS, check_collection
from aiomemdb._exceptions import AiomemdbError, CorruptDataError
from aiomemdb._record import SessionRecord, encode_record, record_owner

__all__ = ["Blob", "Drop", "Effect", "SetRecord", "SetRun", "SetSession", "journal_line", "parse_entry"]

#: An encoded collection record, its owner (``user_id``) and its write sequence.
Blob = tuple[bytes, str | None, int]


@dataclass(slots=True)
class SetSession:
    """Install ``rec`` as session ``sid`` (replacing what is there), or delete it (``rec`` None)."""

    sid: str
    rec: SessionRecord | None


@dataclass(slots=True)
class SetRun:
    """Put (``raw`` given) or remove one run of a resident session, with the session's new stamps."""

    sid: str
    run_id: str
    raw: bytes | None
    updated_at: int
    version: int
    seq: int


@dataclass(slots=True)
class SetRecord:
    """Install or delete (``blob`` None) one record of a named collection."""

    collection: str
    rid: str
    blob: Blob | None


@dataclass(slots=True)
class Drop:
    """Delete everything in memory, and the ``stored`` keys that a lazy store never loaded."""

    stored: tuple[tuple[str, str], ...] = ()


Effect = SetSession | SetRun | SetRecord | Drop


def _head(op: bytes, sid: str, seq: int, updated_at: int, version: int) -> bytes:
    return b'{"op":"%s","c":"sessions","id":%s,"seq":%d,"updated_at":%d,"version":%d' % (
        op,
        orjson.dumps(sid),
        seq,
        updated_at,
        version,
    )


def _line(effect: Effect) -> bytes:
    if isinstance(effect, SetSession):
        rec = effect.rec
        if rec is None:
            return b'{"op":"del","c":"sessions","id":%s}' % orjson.dumps(effect.sid)
        return _head(b"put", effect.sid, rec.seq, rec.updated_at, rec.version) + b',"doc":' + rec.doc_bytes() + b"}"
    if isinstance(effect, SetRun):
        if effect.raw is None:
            head = _head(b"delrun", effect.sid, effect.seq, effect.updated_at, effect.version)
            return head + b',"run_id":%s}' % orjson.dumps(effect.run_id)
        return _head(b"run", effect.sid, effect.seq, effect.updated_at, effect.version) + b',"run":' + effect.raw + b"}"
    if isinstance(effect, SetRecord):
        where = b'"c":%s,"id":%s' % (orjson.dumps(effect.collection), orjson.dumps(effect.rid))
        if effect.blob is None:
            return b'{"op":"del",%s}' % where
        return b'{"op":"put",%s,"seq":%d,"doc":%s}' % (where, effect.blob[2], effect.blob[0])
    return b'{"op":"drop"}'


def journal_line(effects: list[Effect]) -> bytes:
    """The one journal line recording ``effects`` (a ``batch`` when there are several)."""
    if len(effects) == 1:
        return _line(effects[0])
    return b'{"op":"batch","ops":[' + b",".join(_line(e) for e in effects) + b"]}"


def _int(entry: dict[str, Any], field: str, where: str) -> int:
    value = entry.get(field)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CorruptDataError(f"{where}: {field!r} must be an int, got {value!r}", key=where)
    return value


def parse_entry(entry: Any, where: str) -> list[Effect]:
    """The effects of one journal entry; ``where`` (segment and offset) names it in errors.

    Raises:
        CorruptDataError: the entry is malformed (unknown op, missing field, invalid document).
    """
    if not isinstance(entry, dict):
        raise CorruptDataError(f"{where}: not a journal entry", key=where)
    op = entry.get("op")
    if op == "batch":
        ops = entry.get("ops")
        if not isinstance(ops, list):
            raise CorruptDataError(f"{where}: batch without a list of ops", key=where)
        return [effect for sub in ops for effect in parse_entry(sub, where)]
    if op == "drop":
        return [Drop()]
    collection, rid = entry.get("c"), entry.get("id")
    if not isinstance(collection, str) or not isinstance(rid, str):
        raise CorruptDataError(f"{where}: {op} entry without a str collection and id", key=where)
    try:
        check_collection(collection)
        return [_parse_one(op, collection, rid, entry, where)]
    except CorruptDataError:
        raise
    except AiomemdbError as exc:
        raise CorruptDataError(f"{where}: invalid {op} entry: {exc}", key=where, cause=exc) from exc


def _parse_one(op: Any, collection: str, rid: str, entry: dict[str, Any], where: str) -> Effect:
    if op == "del":
        return SetSession(rid, None) if collection == SESSIONS else SetRecord(collection, rid, None)
    if op == "put":
        doc = entry.get("doc")
        if not isinstance(doc, dict):
            raise CorruptDataError(f"{where}: put entry without a document", key=where)
        seq = _int(entry, "seq", where)
        if collection != SESSIONS:
            return SetRecord(collection, rid, (encode_record(doc, what=where), record_owner(doc), seq))
        rec = SessionRecord.from_stored(doc, seq=seq, key=where)
        if rec.session_id != rid:
            raise CorruptDataError(f"{where}: document has session_id {rec.session_id!r}", key=where)
        return SetSession(rid, rec)
    if op in ("run", "delrun") and collection == SESSIONS:
        stamps = (_int(entry, "updated_at", where), _int(entry, "version", where), _int(entry, "seq", where))
        if op == "run":
            run_id, raw = SessionRecord.encode_run(entry.get("run"))
            return SetRun(rid, run_id, raw, *stamps)
        removed = entry.get("run_id")
        if not isinstance(removed, str):
            raise CorruptDataError(f"{where}: delrun entry without a run_id", key=where)
        return SetRun(rid, removed, None, *stamps)
    raise CorruptDataError(f"{where}: unknown journal operation {op!r}", key=where)
