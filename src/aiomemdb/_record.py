"""How one session is held in memory: orjson bytes, split so that writing one run is O(1).

A session is kept as

- ``head``: the encoded session *without* ``runs``, ``created_at``, ``updated_at`` and ``version``;
- ``runs``: ``run_id -> encoded run`` in insertion order (``None`` when the session has no runs list);
- the store-managed scalars and the fields the indexes need, as plain attributes.

The full JSON document is assembled by byte concatenation (no re-encoding), so a read is one
``orjson.loads``, a flush writes the bytes as they are, and memory stays close to the JSON size. Records are
replaced whole on every write except :meth:`SessionRecord.put_run` / :meth:`SessionRecord.remove_run`, which
the store calls inside a critical section without awaits.
"""

from __future__ import annotations

import datetime
import enum
import math
from collections.abc import Mapping, Sequence
from itertools import islice
from typing import Any

import orjson

from aiomemdb._codec import check_id, dumps
from aiomemdb._exceptions import CorruptDataError, ValidationError

__all__ = ["STORE_FIELDS", "RawParts", "SessionParts", "SessionRecord", "decode_parts", "encode_record", "record_owner"]

#: Fields the store owns: it sets them on every write and strips them from what callers pass.
STORE_FIELDS = ("created_at", "updated_at", "version")
_NOT_IN_HEAD = ("runs", *STORE_FIELDS)


def _opt_str(session: Mapping[str, Any], field: str) -> str | None:
    value = session.get(field)
    if value is None or type(value) is str:
        return value
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or isinstance(value, str):
        return value
    raise ValidationError(f"session.{field} must be a str or None, got {type(value).__name__}")


#: 9999-12-31T23:59:59Z, the last second a ``datetime`` (and ``aiomemdb ls``) can show; a larger number is
#: almost always milliseconds.
_MAX_TIMESTAMP = 253_402_300_799
_TIMESTAMP_FORMS = "unix seconds (int or float), an ISO 8601 string with a timezone, or a timezone-aware datetime"


def _timestamp(value: Any, path: str) -> int | None:
    """Unix seconds from a caller's ``created_at`` / ``updated_at``; ``None`` when it is absent.

    Converted: int or float unix seconds (a fraction is dropped), an ISO 8601 string with a timezone (``Z`` or
    an offset), a timezone-aware ``datetime``. Refused, never replaced: anything ambiguous (a naive string or
    datetime, a date), bool, NaN, infinities, times before 1970 or after 9999, and any other type.

    Raises:
        ValidationError: naming ``path`` (``session.created_at``) and what would be accepted.
    """
    if type(value) is int:
        if 0 <= value <= _MAX_TIMESTAMP:
            return value  # the common case: what the store itself returned
        seconds: float = value
    elif value is None:
        return None
    elif isinstance(value, bool) or not isinstance(value, int | float | str | datetime.datetime):
        problem = "a date without a time" if isinstance(value, datetime.date) else f"a {type(value).__name__}"
        raise ValidationError(f"{path} must be {_TIMESTAMP_FORMS}; got {value!r}, {problem}")
    elif isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValidationError(f"{path} must be a finite number of unix seconds, got {value!r}")
        seconds = value
    else:
        moment = value
        if isinstance(moment, str):
            try:
                moment = datetime.datetime.fromisoformat(moment)
            except ValueError:
                raise ValidationError(f"{path} must be {_TIMESTAMP_FORMS}; got {value!r}, not ISO 8601") from None
        if moment.utcoffset() is None:
            raise ValidationError(
                f"{path} must name its timezone; got {value!r}, which has none (ambiguous): use "
                f"'Z' / '+00:00' in a string, or datetime(..., tzinfo=timezone.utc)"
            )
        seconds = moment.timestamp()
    if seconds < 0:
        raise ValidationError(f"{path} must be unix seconds from 1970 on, got {value!r}")
    if seconds > _MAX_TIMESTAMP:
        raise ValidationError(
            f"{path} must be unix seconds up to year 9999, got {value!r} (milliseconds? divide by 1000)"
        )
    return int(seconds)


def _stored(raw: bytes) -> bytes:
    """An exact-size copy of ``raw`` for keeping.

    orjson returns its output in the buffer it grew while writing, which stays allocated with the bytes object:
    at least 4 KiB, and about 16 KiB for a 2.6 KB run (orjson 3.13, measured with tracemalloc). Records hold
    their bytes for the life of the store, so they keep a copy (a memcpy: ~0.3 µs per run) instead.
    """
    return memoryview(raw).tobytes()


def _encode_runs(runs: Any) -> dict[str, bytes] | None:
    if runs is None:
        return None
    if not isinstance(runs, Sequence) or isinstance(runs, str | bytes):
        raise ValidationError(f"session.runs must be a list of dicts, got {type(runs).__name__}")
    encoded: dict[str, bytes] = {}
    for i, run in enumerate(runs):
        run_id = _run_id(run, f"runs[{i}]")
        if run_id in encoded:
            raise ValidationError(f"runs[{i}]: duplicate run_id {run_id!r}")
        encoded[run_id] = _stored(dumps(run, what=f"runs[{i}]"))
    return encoded


def _run_id(run: Any, where: str) -> str:
    if type(run) is not dict and not isinstance(run, Mapping):
        raise ValidationError(f"{where} must be a dict, got {type(run).__name__}")
    return check_id(run.get("run_id"), what=f"{where}.run_id")


#: What :meth:`SessionRecord.parts` returns: ``(head, created_at, updated_at, version, runs_key, runs)``.
RawParts = tuple[bytes, int, int, int, bool, dict[str, bytes] | None]
#: A session without its runs (a fresh decode) and ``{run_id: run bytes}`` (None: no runs list, or not asked for).
SessionParts = tuple[dict[str, Any], dict[str, bytes] | None]


def decode_parts(raw: RawParts) -> SessionParts:
    """The session of :meth:`SessionRecord.parts` as a fresh dict without runs (equal to decoding
    ``doc_bytes(include_runs=False)``: the same keys in the same order) and the run bytes, still encoded."""
    head_bytes, created_at, updated_at, version, runs_key, runs = raw
    head: dict[str, Any] = orjson.loads(head_bytes)
    head["created_at"] = created_at
    head["updated_at"] = updated_at
    head["version"] = version
    if runs_key:
        head["runs"] = None
    return head, runs


def encode_record(record: Any, *, what: str) -> bytes:
    """Encode a collection record (any JSON object); reject anything that is not a dict."""
    if not isinstance(record, Mapping):
        raise ValidationError(f"{what} must be a dict, got {type(record).__name__}")
    return _stored(dumps(dict(record), what=what))


def record_owner(record: Mapping[str, Any]) -> str | None:
    """The ``user_id`` that owns a collection record, if any."""
    owner = record.get("user_id")
    return owner if isinstance(owner, str) else None


class SessionRecord:
    """One stored session; see the module docstring for the representation."""

    __slots__ = (
        "agent_id",
        "created_at",
        "head",
        "runs",
        "runs_key",
        "seq",
        "session_id",
        "session_name",
        "session_type",
        "size",
        "team_id",
        "updated_at",
        "user_id",
        "version",
        "workflow_id",
    )

    session_id: str
    user_id: str | None
    agent_id: str | None
    team_id: str | None
    workflow_id: str | None
    session_type: str | None
    session_name: str | None
    created_at: int
    updated_at: int
    version: int
    seq: int
    head: bytes
    runs: dict[str, bytes] | None
    runs_key: bool
    size: int

    @classmethod
    def build(
        cls,
        session: Any,
        *,
        now: int,
        seq: int,
        previous: SessionRecord | None,
        preserve_timestamps: bool = False,
        version: int | None = None,
    ) -> SessionRecord:
        """Validate and encode a caller's session dict.

        Args:
            session: the caller's dict; not kept, not mutated.
            now: the store's clock, in unix seconds.
            seq: the store's write sequence number (orders writes within one second).
            previous: the record this one replaces, if any (keeps ``created_at``, bumps ``version``).
            preserve_timestamps: keep the caller's ``created_at``/``updated_at`` (imports and loads).
            version: an explicit version (loads); by default ``previous.version + 1`` or 1.

        Raises:
            ValidationError: missing or bad ``session_id``, wrong field types, runs without ``run_id``.
            SerializationError: a value orjson cannot encode, with its path (``runs[3].metrics.t``).
        """
        if type(session) is not dict and not isinstance(session, Mapping):
            raise ValidationError(f"a session must be a dict, got {type(session).__name__}")
        rec = cls.__new__(cls)
        rec.session_id = check_id(session.get("session_id"), what="session_id")
        rec.user_id = _opt_str(session, "user_id")
        rec.agent_id = _opt_str(session, "agent_id")
        rec.team_id = _opt_str(session, "team_id")
        rec.workflow_id = _opt_str(session, "workflow_id")
        rec.session_type = _opt_str(session, "session_type")
        session_data = session.get("session_data")
        if session_data is not None and type(session_data) is not dict and not isinstance(session_data, Mapping):
            raise ValidationError(f"session.session_data must be a dict or None, got {type(session_data).__name__}")
        name = session_data.get("session_name") if session_data else None
        rec.session_name = name if isinstance(name, str) else None

        given_created = _timestamp(session.get("created_at"), "session.created_at")
        given_updated = _timestamp(session.get("updated_at"), "session.updated_at")
        if previous is not None and not preserve_timestamps:
            rec.created_at = previous.created_at
        else:
            rec.created_at = given_created if given_created is not None else now
        if not preserve_timestamps:
            rec.updated_at = now
        else:
            rec.updated_at = given_updated if given_updated is not None else rec.created_at
        if version is not None:
            rec.version = version
        else:
            rec.version = previous.version + 1 if previous is not None else 1
        rec.seq = seq

        rec.runs_key = "runs" in session
        rec.runs = _encode_runs(session.get("runs"))
        head = dict(session)  # a copy in C, then drop what is kept elsewhere (order is kept)
        for field in _NOT_IN_HEAD:
            head.pop(field, None)
        rec.head = _stored(dumps(head, what=""))
        rec.resize()
        return rec

    @classmethod
    def from_stored(cls, session: Any, *, seq: int, key: str) -> SessionRecord:
        """Rebuild a record from a stored document, keeping its timestamps and version.

        Raises:
            CorruptDataError: the document is not a valid session; ``key`` names where it came from.
        """
        try:
            version = session.get("version") if isinstance(session, Mapping) else None
            version = version if isinstance(version, int) and not isinstance(version, bool) else 1
            return cls.build(session, now=0, seq=seq, previous=None, preserve_timestamps=True, version=version)
        except ValidationError as exc:
            raise CorruptDataError(f"{key}: not a valid session: {exc}", key=key, cause=exc) from exc

    # -- reading -------------------------------------------------------------------------------------------

    def doc_bytes(self, runs_limit: int | None = None, *, include_runs: bool = True) -> bytes:
        """The complete session as JSON bytes, assembled without re-encoding."""
        tail = b'"created_at":%d,"updated_at":%d,"version":%d' % (self.created_at, self.updated_at, self.version)
        sep = b"," if len(self.head) > 2 else b""
        if not include_runs or self.runs is None:
            runs_part = b',"runs":null' if self.runs_key else b""
            return b"".join((self.head[:-1], sep, tail, runs_part, b"}"))
        values = self.runs.values()
        if runs_limit is None:
            chosen = list(values)
        elif runs_limit <= 0:
            chosen = []
        else:
            chosen = list(islice(reversed(values), runs_limit))
            chosen.reverse()
        prefix = b"".join((self.head[:-1], sep, tail, b',"runs":['))
        if not chosen:
            return prefix + b"]}"
        # One join over the runs, with the prefix and the closing fused into the first and last run: the
        # document is copied once, not twice (the runs are most of it).
        chosen[0] = prefix + chosen[0]
        chosen[-1] += b"]}"
        return b",".join(chosen)

    def parts(self, *, include_runs: bool = True) -> RawParts:
        """The session in pieces, for readers that decode runs one at a time (the Agno adapter): the stored head
        (the document without timestamps, version and runs), ``created_at``, ``updated_at``, ``version``,
        whether the document has a ``runs`` key, and ``{run_id: run bytes}`` (a copy of the mapping; the bytes
        are the stored immutable objects) or ``None`` when the session has no runs list or ``include_runs`` is
        false. :func:`decode_parts` turns the first five into what :meth:`doc_bytes` with ``include_runs=False``
        decodes to, without assembling those bytes.
        """
        runs = self.runs.copy() if include_runs and self.runs is not None else None
        return self.head, self.created_at, self.updated_at, self.version, self.runs_key, runs

    def to_dict(self, runs_limit: int | None = None, *, include_runs: bool = True) -> dict[str, Any]:
        """A fresh decoded copy of the session (never aliases stored state)."""
        doc: dict[str, Any] = orjson.loads(self.doc_bytes(runs_limit, include_runs=include_runs))
        return doc

    def resize(self) -> None:
        """Recompute :attr:`size` (the approximate encoded size) from the payload."""
        runs = self.runs
        self.size = len(self.head) + 64 + (sum(map(len, runs.values())) + len(runs) if runs else 0)

    # -- eviction: the payload can be dropped and put back; the indexed fields stay --------------------------

    @property
    def resident(self) -> bool:
        """False once :meth:`evict` dropped the payload (a real head is never empty)."""
        return bool(self.head)

    def evict(self) -> None:
        """Drop the payload (head and runs), keeping the indexed fields; :meth:`refill` puts it back."""
        self.head = b""
        self.runs = None
        self.size = 0

    def refill(self, loaded: SessionRecord) -> None:
        """Take the payload of ``loaded`` (the same version, read back from storage)."""
        self.head, self.runs, self.runs_key, self.size = loaded.head, loaded.runs, loaded.runs_key, loaded.size

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """A decoded copy of one run, or None."""
        raw = self.runs.get(run_id) if self.runs else None
        if raw is None:
            return None
        run: dict[str, Any] = orjson.loads(raw)
        return run

    # -- run writes (called inside the store's critical section) -------------------------------------------

    @staticmethod
    def encode_run(run: Any) -> tuple[str, bytes]:
        """Validate and encode one run; returns ``(run_id, bytes)``."""
        run_id = _run_id(run, "run")
        return run_id, _stored(dumps(run, what="run"))

    def put_run(self, run_id: str, run: bytes) -> None:
        """Append the run, or replace the run with the same id in place (O(1))."""
        if self.runs is None:
            self.runs = {}
            self.runs_key = True
        old = self.runs.get(run_id)
        self.size += len(run) - len(old) if old is not None else len(run) + 1
        self.runs[run_id] = run

    def remove_run(self, run_id: str) -> bool:
        """Remove one run; True if it existed."""
        old = self.runs.pop(run_id, None) if self.runs is not None else None
        if old is None:
            return False
        self.size -= len(old) + 1
        return True
