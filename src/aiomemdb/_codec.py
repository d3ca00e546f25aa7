"""Every byte aiomemdb persists is made and read here: orjson only, never pickle or eval.

- :func:`dumps` encodes a value or raises :class:`SerializationError` naming the path of the bad value.
- :func:`loads` decodes, translating orjson's error into :class:`CorruptDataError` with the key.
- :func:`encode_envelope` / :func:`decode_envelope` wrap a record in the on-storage format
  ``{"format_version": 1, "collection": ..., "id": ..., "data": {...}}``.
- :func:`object_name` turns an id into a file name / S3 key segment that cannot escape its directory.
- :func:`merge_sessions` reconciles two versions of one session written concurrently by two replicas.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import math
import re
import uuid
from collections.abc import Callable, Iterable
from datetime import date, datetime, time
from typing import Any, NamedTuple

import orjson

from aiomemdb._exceptions import CorruptDataError, SerializationError, ValidationError

__all__ = [
    "FORMAT_VERSION",
    "SESSIONS",
    "Envelope",
    "check_collection",
    "check_stored_session",
    "decode_envelope",
    "dumps",
    "encode_envelope",
    "id_from_object_name",
    "in_write_order",
    "loads",
    "merge_sessions",
    "object_name",
]

FORMAT_VERSION = 1
SESSIONS = "sessions"
MAX_ID_LENGTH = 512

_COLLECTION_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
# An escaped name longer than this is shortened with a hash; file systems cap names at 255 bytes.
_MAX_NAME = 180
_OPTS = orjson.OPT_SERIALIZE_NUMPY if hasattr(orjson, "OPT_SERIALIZE_NUMPY") else 0


def _default(value: Any) -> Any:
    # pydantic models (agno's metrics, user models) encode through their JSON mode, never through str().
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        return dump(mode="json")
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def dumps(value: Any, *, what: str = "value") -> bytes:
    """Encode ``value`` as JSON bytes.

    Raises:
        SerializationError: the value (or something inside it) cannot be encoded; ``path`` says where.
    """
    try:
        data = orjson.dumps(value, default=_default, option=_OPTS)
    except orjson.JSONEncodeError as exc:
        path, reason = _find_bad(value, "")
        where = (what + path).lstrip(".")
        raise SerializationError(f"{where or 'value'} cannot be stored as JSON: {reason or exc}", path=where) from exc
    # orjson writes NaN and ±Infinity as null, which would silently change the value; they only ever appear
    # where the output says null, so the (slower) search runs only then, and not when every null of the output
    # is a top-level None (each None is one null; a NaN, a nested None or "null" in a string adds one more).
    if b"null" in data and not _only_top_level_nulls(value, data) and _has_nonfinite(value):
        path, reason = _find_bad(value, "")
        where = (what + path).lstrip(".")
        raise SerializationError(f"{where or 'value'} cannot be stored as JSON: {reason}", path=where)
    return data


def _only_top_level_nulls(value: Any, data: bytes) -> bool:
    """True if ``data`` (``value`` encoded) says ``null`` exactly as often as ``value``, a dict, has None values."""
    if type(value) is not dict:
        return False
    nones = 0
    for item in value.values():
        if item is None:
            nones += 1
    return data.count(b"null") == nones


def _has_nonfinite(value: Any) -> bool:
    """True if a float inside ``value`` is NaN or infinite (``value`` was encoded, so it is < 256 levels deep)."""
    kind = type(value)
    if kind is dict:
        items: Iterable[Any] = value.values()
    elif kind is list or kind is tuple:
        items = value
    elif kind is float:
        return not math.isfinite(value)
    elif kind is str or kind is int or kind is bool or value is None:
        return False
    else:
        return _find_bad(value, "") != ("", "")  # dataclasses, pydantic models, subclasses: the general search
    for item in items:
        kind = type(item)
        if kind is str or item is None or kind is int or kind is bool:
            continue
        if kind is float:
            if not math.isfinite(item):
                return True
        elif _has_nonfinite(item):
            return True
    return False


_LEAVES: tuple[type, ...] = (str, bool, type(None), datetime, date, time, uuid.UUID, enum.Enum)


def _find_bad(value: Any, path: str) -> tuple[str, str]:
    """Locate the first value orjson refuses; only runs after an encode failed, so it may be slow."""
    stack: list[tuple[Any, str]] = [(value, path)]
    seen: set[int] = set()
    while stack:
        item, where = stack.pop()
        if isinstance(item, _LEAVES):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return where, f"{item} has no JSON form (orjson would store null)"
            continue
        if isinstance(item, int):
            if not -(2**63) <= item < 2**64:
                return where, f"integer {item} does not fit in 64 bits"
            continue
        if isinstance(item, dict | list | tuple) or dataclasses.is_dataclass(item):
            if id(item) in seen:
                return where, "circular reference"
            seen.add(id(item))
        if isinstance(item, dict):
            for k, v in reversed(list(item.items())):
                if not isinstance(k, str):
                    return f"{where}[{k!r}]", f"key {k!r} is a {type(k).__name__}, JSON keys must be str"
                stack.append((v, f"{where}.{k}" if k.isidentifier() else f"{where}[{k!r}]"))
        elif isinstance(item, list | tuple):
            for i in reversed(range(len(item))):
                stack.append((item[i], f"{where}[{i}]"))
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            for f in reversed(dataclasses.fields(item)):
                stack.append((getattr(item, f.name), f"{where}.{f.name}"))
        else:
            dump = getattr(item, "model_dump", None)
            if callable(dump) and not isinstance(item, type):
                try:
                    stack.append((dump(mode="json"), where))
                except Exception as exc:
                    return where, f"model_dump(mode='json') failed: {exc}"
                continue
            return where, f"{type(item).__name__} is not JSON-serialisable"
    return "", ""


def loads(data: bytes | bytearray | memoryview | str, *, key: str = "") -> Any:
    """Decode JSON bytes.

    Raises:
        CorruptDataError: the bytes are not valid JSON; ``key`` names the object they came from.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CorruptDataError(f"{key or 'object'} is not valid JSON: {exc}", key=key, cause=exc) from exc


def check_collection(name: str) -> str:
    """Return ``name`` if it is a valid collection name (lowercase letters, digits, ``_``), else raise."""
    if not isinstance(name, str) or not _COLLECTION_RE.fullmatch(name):
        raise ValidationError(f"collection name must match [a-z][a-z0-9_]{{0,63}}, got {name!r}")
    return name


def check_id(record_id: object, *, what: str = "id") -> str:
    """Return ``record_id`` if it is a non-empty str of at most 512 characters, else raise ValidationError."""
    if not isinstance(record_id, str):
        raise ValidationError(f"{what} must be a str, got {type(record_id).__name__}")
    if not record_id:
        raise ValidationError(f"{what} must not be empty")
    if len(record_id) > MAX_ID_LENGTH:
        raise ValidationError(f"{what} is {len(record_id)} characters long, the limit is {MAX_ID_LENGTH}")
    if "\x00" in record_id:
        raise ValidationError(f"{what} must not contain NUL characters")
    if not record_id.isascii():
        try:
            record_id.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValidationError(f"{what} is not valid Unicode (a lone surrogate at {exc.start})") from exc
    return record_id


def object_name(record_id: str) -> str:
    """A file-name-safe, prefix-safe name for ``record_id`` (without extension).

    Letters, digits, ``_`` and ``-`` stand for themselves; every other byte of the UTF-8 encoding becomes
    ``%XX``, so ``../x`` is ``%2E%2E%2Fx`` and no name can contain a separator or be ``.``/``..``. Names longer
    than 180 characters keep a readable start and end in ``~`` plus a SHA-256 of the id; ``~`` never appears in
    an escaped name, so the two forms cannot collide. The id itself is always stored inside the object.
    """
    raw = record_id.encode("utf-8", "surrogatepass")
    escaped = "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in raw)
    if len(escaped) <= _MAX_NAME:
        return escaped
    digest = hashlib.sha256(raw).hexdigest()
    return f"{escaped[:100]}~{digest}"


def id_from_object_name(name: str) -> str | None:
    """Invert :func:`object_name`; ``None`` for a hashed (long) name, whose id is read from the object."""
    if "~" in name:
        return None
    out = bytearray()
    i = 0
    while i < len(name):
        ch = name[i]
        if ch == "%":
            out.append(int(name[i + 1 : i + 3], 16))
            i += 3
        else:
            out.extend(ch.encode("ascii"))
            i += 1
    return out.decode("utf-8", "surrogatepass")


def encode_envelope(collection: str, record_id: str, doc: bytes, *, seq: int = 0) -> bytes:
    """Wrap an encoded record in the storage format; ``doc`` is embedded as it is (no re-encoding).

    ``seq`` is the store's write sequence (nanoseconds since the epoch, made monotonic), which orders records
    written within the same second when they are loaded again.
    """
    return b"".join(
        (
            b'{"format_version":1,"collection":',
            orjson.dumps(collection),
            b',"id":',
            orjson.dumps(record_id),
            b',"seq":%d,"data":' % seq,
            doc,
            b"}",
        )
    )


class Envelope(NamedTuple):
    """A decoded stored object."""

    id: str
    data: dict[str, Any]
    seq: int


def in_write_order(items: Iterable[tuple[str, Envelope]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Group decoded objects by collection, each collection ordered oldest write first (as loads require)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for collection, env in sorted(items, key=lambda item: (item[1].seq, item[1].id)):
        out.setdefault(collection, {})[env.id] = env.data
    return out


def decode_envelope(raw: bytes, *, key: str, collection: str | None = None, name: str | None = None) -> Envelope:
    """Decode one stored object and check its envelope.

    Args:
        raw: the object's bytes.
        key: where it came from (file path, S3 key), for error messages.
        collection: the collection it was stored under, checked against the envelope when given.
        name: the object name it was stored under, checked against the id inside when given.

    Returns:
        the id, the record and the write sequence it was stored with.

    Raises:
        CorruptDataError: invalid JSON, unknown format version, or an envelope that does not match its place.
    """
    obj = loads(raw, key=key)
    if not isinstance(obj, dict):
        raise CorruptDataError(f"{key}: expected a JSON object, got {type(obj).__name__}", key=key)
    version = obj.get("format_version")
    if version != FORMAT_VERSION:
        raise CorruptDataError(f"{key}: unsupported format_version {version!r}", key=key)
    record_id, data = obj.get("id"), obj.get("data")
    if not isinstance(record_id, str) or not isinstance(data, dict):
        raise CorruptDataError(f"{key}: envelope lacks a str 'id' or an object 'data'", key=key)
    if collection is not None and obj.get("collection") != collection:
        raise CorruptDataError(
            f"{key}: stored under collection {collection!r} but says {obj.get('collection')!r}", key=key
        )
    if name is not None and object_name(record_id) != name:
        raise CorruptDataError(f"{key}: object name does not match the id it contains ({record_id!r})", key=key)
    seq = obj.get("seq", 0)
    if not isinstance(seq, int):
        raise CorruptDataError(f"{key}: 'seq' must be an int", key=key)
    return Envelope(record_id, data, seq)


def check_stored_session(record_id: str, data: dict[str, Any], *, key: str) -> None:
    """Cheap structural check of a stored session (no encoding), so corrupt ones are caught at load.

    Raises:
        CorruptDataError: wrong ``session_id``, owner/component fields that are not strings, ``session_data``
            that is not an object, or runs that are not objects with a string ``run_id``.
    """
    problem = ""
    if data.get("session_id") != record_id:
        problem = f"session_id {data.get('session_id')!r} does not match the id {record_id!r}"
    elif any(
        not (data.get(f) is None or isinstance(data.get(f), str))
        for f in ("user_id", "agent_id", "team_id", "workflow_id", "session_type")
    ):
        problem = "an id field is not a string"
    elif not (data.get("session_data") is None or isinstance(data.get("session_data"), dict)):
        problem = "session_data is not an object"
    else:
        runs = data.get("runs")
        if runs is not None and (
            not isinstance(runs, list)
            or not all(isinstance(r, dict) and isinstance(r.get("run_id"), str) and r["run_id"] for r in runs)
        ):
            problem = "runs is not a list of objects with a run_id"
    if problem:
        raise CorruptDataError(f"{key}: not a valid session: {problem}", key=key)


def _run_key(run: Any) -> Any:
    return run.get("run_id") if isinstance(run, dict) else None


def merge_sessions(
    ours: dict[str, Any], theirs: dict[str, Any], *, prefer: Callable[[dict[str, Any]], Any] | None = None
) -> dict[str, Any]:
    """Reconcile two concurrent versions of one session (the default ``on_conflict="merge"`` policy).

    Runs are the union by ``run_id``: theirs in their order, then ours that they lack, and where both have a
    run the newer one wins (by ``updated_at``/``created_at`` inside the run, ours on a tie). Every other
    top-level field comes from the version with the newer ``updated_at`` (ours on a tie); ``version`` becomes
    one more than the larger of the two, and ``created_at`` the earlier.
    """
    newer = prefer or (lambda s: s.get("updated_at") or 0)
    base, other = (ours, theirs) if newer(ours) >= newer(theirs) else (theirs, ours)
    merged = dict(base)
    their_runs = theirs.get("runs") or []
    our_runs = ours.get("runs") or []
    if their_runs or our_runs or "runs" in base:
        by_id: dict[Any, dict[str, Any]] = {}
        order: list[Any] = []
        anonymous: list[Any] = []
        for source, runs in (("theirs", their_runs), ("ours", our_runs)):
            for run in runs:
                rid = _run_key(run)
                if rid is None:
                    anonymous.append(run)
                    continue
                if rid not in by_id:
                    order.append(rid)
                    by_id[rid] = run
                    continue
                current = by_id[rid]
                run_time = (run.get("updated_at") or run.get("created_at") or 0) if source == "ours" else 0
                cur_time = current.get("updated_at") or current.get("created_at") or 0
                if source == "ours" and run_time >= cur_time:
                    by_id[rid] = run
        merged["runs"] = [by_id[rid] for rid in order] + anonymous
    merged["version"] = max(int(ours.get("version") or 0), int(theirs.get("version") or 0)) + 1
    created = [c for c in (ours.get("created_at"), other.get("created_at")) if isinstance(c, int)]
    if created:
        merged["created_at"] = min(created)
    return merged
