"""Agent sessions whose history runs are decoded and built on first use: each reader pays only for what it reads.

agno's ``AgentSession.from_dict`` builds every stored run with ``RunOutput.from_dict`` (~45-75 µs per run: its
messages, metrics, tool executions), although an agent turn looks into few of them: ``add_history_to_context``
reads the messages of the last ``num_history_runs`` runs and only the status and ids of the others. A read here
gives each agent run as a :class:`DeferredRunOutput`, a ``RunOutput`` built in up to three steps:

1. *encoded*: it holds only its ``run_id`` and the stored JSON bytes of the run (immutable; the store's own
   object, never copied). Reading the session row without looking into runs decodes none of them.
2. *decoded* (the first read of any other field): its own ``orjson.loads`` of the bytes; the plain fields (ids,
   status, timestamps, content, everything ``from_dict`` passes through unchanged) are set (~2 µs plus the
   decode).
3. *built* (the first read of a converted field: messages, metrics, tools, media, events, input ...): agno's own
   ``RunOutput.from_dict`` of that decode. After that the object *is* a ``RunOutput`` (its class is switched
   back), identical to what ``from_dict`` returns; copying, pickling, comparing or ``dataclasses.asdict`` build
   it first. A field the reader has set before keeps the reader's value.

Isolation costs nothing: bytes cannot be mutated, and every decode is the one reader's own, so no object is
shared with any other reader or with the store. A stored run is given encoded only when its bytes prove it an
agent run (``"agent_id"`` is its second top-level key, as agno's ``to_dict`` writes it); any other run is
decoded at once and dispatched as ``AgentSession.from_dict`` does. Team sessions and team runs are built
eagerly by agno's code, as before.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import Any

import orjson
from agno.db.base import SessionType
from agno.db.utils import deserialize_session, detect_session_type
from agno.run.agent import RunOutput
from agno.run.base import RunStatus
from agno.run.team import TeamRunOutput
from agno.session import AgentSession
from agno.session.summary import SessionSummary

__all__ = ["DeferredRunOutput", "deferred_run", "encoded_run", "session_from_parts", "to_agent_session", "to_session"]

# The keys RunOutput.from_dict converts (pops and rebuilds); every other field it passes through unchanged.
_CONVERTED = frozenset({
    "run", "events", "messages", "citations", "tools", "requirements", "images", "videos", "audio", "files",
    "response_audio", "input", "metrics", "compaction", "additional_input", "reasoning_steps", "reasoning_messages",
    "references",
})  # fmt: skip
_SCALARS = (str, int, float, bool, type(None))
_FIELDS = {f.name: f for f in dataclasses.fields(RunOutput)}
# Plain defaults of the pass-through fields (a stored run omits its None fields: agno's to_dict drops them).
_DEFAULTS = {
    name: f.default for name, f in _FIELDS.items() if name not in _CONVERTED and f.default is not dataclasses.MISSING
}
_FACTORIES = {
    name: f.default_factory
    for name, f in _FIELDS.items()
    if name not in _CONVERTED and f.default_factory is not dataclasses.MISSING
}
_new = object.__new__
_STATUS = {status.value: status for status in RunStatus}
_PENDING = "_aiomemdb_pending"  # step 2: the reader's decoded dict, for from_dict
_SOURCE = "_aiomemdb_source"  # step 2: the bytes that dict was decoded from (to build again after a failure)
_RAW = "_aiomemdb_raw"  # step 1: the stored bytes, not decoded yet
# An agent run as agno's RunOutput.to_dict writes it (and orjson encodes it: compact, in the dict's order) starts
# with these two keys: ``{"run_id":<the run's id>,"agent_id":``. See _is_agent_run for why the test is exact.
_RUN_ID_KEY = b'{"run_id":"'
_AGENT_ID_NEXT = b'","agent_id":'
_BUILD = threading.Lock()  # a reader may hand its session to another thread; the first use builds once


def _new_build_lock() -> None:
    """After fork() in the child: a parent thread that held the lock does not exist there to release it."""
    global _BUILD
    _BUILD = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_build_lock)


class _Deferred:
    """A non-data descriptor for one field: read only while the field is not in the instance dict."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            field = _FIELDS[self.name]
            if field.default is dataclasses.MISSING:
                raise AttributeError(self.name)
            return field.default
        values = obj.__dict__
        if _RAW in values:
            obj._aiomemdb_decode()
            if self.name in values:
                return values[self.name]  # a plain field: decoded, not built
        obj._aiomemdb_build()
        try:
            return values[self.name]
        except KeyError:
            raise AttributeError(self.name) from None


class DeferredRunOutput(RunOutput):
    """A ``RunOutput`` whose converted fields are built by ``RunOutput.from_dict`` on first use (then a RunOutput)."""

    def _aiomemdb_decode(self) -> None:
        """Step 2: decode the run's bytes (this reader's own copy) and set its plain fields."""
        with _BUILD:
            self._decode_locked()

    def _decode_locked(self) -> None:
        values = self.__dict__
        raw = values.get(_RAW)
        if raw is None:
            return
        data: dict[str, Any] = orjson.loads(raw)
        if _built_at_once(data):
            _finish(self, RunOutput.from_dict(data))
            del values[_RAW]
            return
        for name, value in _plain_fields(data).items():
            values.setdefault(name, value)  # a field the reader has set already keeps its value
        values[_PENDING] = data
        values[_SOURCE] = raw
        del values[_RAW]

    def _aiomemdb_build(self) -> None:
        """Step 3: build the converted fields from the run's own dict, then become a plain ``RunOutput``."""
        with _BUILD:
            self._decode_locked()
            values = self.__dict__
            pending = values.get(_PENDING)
            if pending is None:
                if type(self) is DeferredRunOutput:  # made by its own constructor: nothing to build
                    object.__setattr__(self, "__class__", RunOutput)
                return
            # from_dict consumes the dict as it goes (pops fields, converts nested ones in place): a build that
            # fails part-way (any exception, Ctrl-C included) starts again from the JSON, never from the remains
            source = values.get(_SOURCE)
            if source is None:
                source = orjson.dumps(pending)  # given decoded (deferred_run): ~1 µs, against ~50 µs for the build
            try:
                full = RunOutput.from_dict(pending)
            except BaseException:
                values[_PENDING] = orjson.loads(source)
                values[_SOURCE] = source
                raise
            _finish(self, full)
            del values[_PENDING]
            values.pop(_SOURCE, None)

    def __reduce_ex__(self, protocol: Any) -> Any:
        # copy.copy, copy.deepcopy and pickle all come here: they see the finished RunOutput
        self._aiomemdb_build()
        return object.__reduce_ex__(self, protocol)

    def __eq__(self, other: object) -> bool:
        self._aiomemdb_build()  # now a RunOutput: the comparison below is the dataclass's
        if isinstance(other, DeferredRunOutput):
            other._aiomemdb_build()
        return bool(self == other)

    def __repr__(self) -> str:
        self._aiomemdb_build()  # the dataclass repr names the class before it reads a field
        return repr(self)

    __hash__ = None  # type: ignore[assignment]  # as the dataclass (eq=True, not frozen)


for _name in _FIELDS:
    setattr(DeferredRunOutput, _name, _Deferred(_name))


def _finish(run: DeferredRunOutput, full: RunOutput) -> None:
    """Take ``full``'s fields (keeping any the reader has set) and become a plain ``RunOutput``."""
    values = run.__dict__
    for name, value in full.__dict__.items():
        values.setdefault(name, value)
    object.__setattr__(run, "__class__", RunOutput)  # now exactly what from_dict returns


def _built_at_once(data: dict[str, Any]) -> bool:
    """agno's legacy nested shape, or a cancelled run: built by ``from_dict`` at once."""
    return "run" in data or "cancellation_stage" in data


def _plain_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The fields ``from_dict`` passes through unchanged, with their defaults; the rest wait for the build."""
    values: dict[str, Any] = dict(_DEFAULTS)
    for name, factory in _FACTORIES.items():
        if name not in data:
            values[name] = factory()
    for key, value in data.items():
        if key not in _FIELDS:
            continue
        if key in _CONVERTED or not isinstance(value, _SCALARS):
            values.pop(key, None)  # built from the dict on first use
        else:
            values[key] = value
    status = values.get("status")
    if isinstance(status, str):
        values["status"] = _STATUS.get(status, status)  # as from_dict: a status agno does not know stays a string
    return values


def deferred_run(data: dict[str, Any]) -> RunOutput:
    """A stored agent run (a dict that only the caller holds) as a :class:`DeferredRunOutput` (step 2)."""
    if _built_at_once(data):
        return RunOutput.from_dict(data)
    values = _plain_fields(data)
    values[_PENDING] = data
    run = object.__new__(DeferredRunOutput)
    run.__dict__.update(values)
    return run


def _is_agent_run(run_id: str, raw: bytes) -> bool:
    """True if ``raw`` (the stored JSON of the run ``run_id``) has ``agent_id`` as its second top-level key.

    Exact, not a heuristic, and false only costs a decode. If ``raw`` begins with the ``run_id`` key, the string
    that follows is the JSON form of ``run_id`` itself. When that is ASCII without escapes, it is ``run_id`` in
    quotes (one byte per character), and the test reads the next key. Otherwise the string is longer than
    ``len(run_id)``, so the tested position falls inside it, where every ``"`` is escaped (preceded by ``\\``)
    except the closing one, which is followed by ``,`` or ``}``; the test wants ``","agent_id":``, an unescaped
    ``"`` two bytes on followed by ``agent_id``, which cannot occur there.
    """
    return raw.startswith(_RUN_ID_KEY) and raw.startswith(_AGENT_ID_NEXT, 11 + len(run_id))


def encoded_run(run_id: str, raw: bytes) -> Any:
    """A stored run (its id and JSON bytes) as agno's ``AgentSession.from_dict`` would build it, deferred.

    An agent run is given encoded (step 1); any other shape is decoded now: an agent run at step 2, a team run
    built by agno, and ``None`` for a run ``from_dict`` would skip.
    """
    if _is_agent_run(run_id, raw):
        run = _new(DeferredRunOutput)
        run.__dict__ = {"run_id": run_id, _RAW: raw}
        return run
    data: dict[str, Any] = orjson.loads(raw)
    if "agent_id" in data:
        return deferred_run(data)
    if "team_id" in data:
        return TeamRunOutput.from_dict(data)
    return None


def to_agent_session(doc: dict[str, Any]) -> AgentSession | None:
    """A stored agent session (a dict only the caller holds) as agno's ``AgentSession``, runs deferred."""
    runs = doc.get("runs")
    session = AgentSession.from_dict({**doc, "runs": None})
    if session is None:
        return None
    objects: list[Any] = []
    if runs and isinstance(runs[0], dict):  # as AgentSession.from_dict: agent runs, team runs, nothing else
        for run in runs:
            if "agent_id" in run:
                objects.append(deferred_run(run))
            elif "team_id" in run:
                objects.append(TeamRunOutput.from_dict(run))
    session.runs = objects
    return session


def to_session(session_type: Any, doc: dict[str, Any]) -> Any:
    """A stored session dict (only the caller holds it) as the Session class ``deserialize_session`` picks."""
    if session_type is None:
        agent = detect_session_type(doc) not in ("team", "workflow")  # agno's fallback is an AgentSession
    else:
        agent = session_type == SessionType.AGENT
    if agent:
        return to_agent_session(doc)
    return deserialize_session(session_type, doc)


# AgentSession.from_dict passes these fields of the row to the constructor (runs and summary converted); the
# dataclass has exactly these fields and no __post_init__, so the instance can be filled in directly.
_SESSION_FIELDS = ("session_id", "agent_id", "team_id", "user_id", "workflow_id", "session_data", "metadata",
                   "agent_data", "runs", "summary", "created_at", "updated_at")  # fmt: skip
_DIRECT = tuple(f.name for f in dataclasses.fields(AgentSession)) == _SESSION_FIELDS and not hasattr(
    AgentSession, "__post_init__"
)


def _agent_session(head: dict[str, Any]) -> AgentSession | None:
    """``AgentSession.from_dict(head)`` of a row without runs (``runs`` is []), without its call overhead."""
    head.pop("runs", None)  # a row without a runs list reads as one with no runs, as in from_dict
    if not _DIRECT or head.get("session_id") is None:
        return AgentSession.from_dict(head)  # agno's own path (and its warning for a row without an id)
    summary = head.get("summary")
    if summary is not None and isinstance(summary, dict):
        summary = SessionSummary.from_dict(summary)
    get = head.get
    session = _new(AgentSession)
    session.__dict__ = {
        "session_id": head["session_id"], "agent_id": get("agent_id"), "team_id": get("team_id"),
        "user_id": get("user_id"), "workflow_id": get("workflow_id"), "session_data": get("session_data"),
        "metadata": get("metadata"), "agent_data": get("agent_data"), "runs": [], "summary": summary,
        "created_at": get("created_at"), "updated_at": get("updated_at"),
    }  # fmt: skip
    return session


def session_from_parts(session_type: Any, head: dict[str, Any], runs: dict[str, bytes] | None) -> Any:
    """A stored session given as the store's parts (a fresh decode without runs, and each run's bytes) as the
    Session class :func:`to_session` picks; an agent session's runs stay encoded until read."""
    if session_type is None:
        agent = detect_session_type(head) not in ("team", "workflow")
    else:
        agent = session_type == SessionType.AGENT
    if not agent:
        if runs is not None:
            head["runs"] = [orjson.loads(raw) for raw in runs.values()]
        return deserialize_session(session_type, head)
    session = _agent_session(head)
    if session is None or runs is None:
        return session
    objects: list[Any] = []
    append = objects.append
    # encoded_run, inlined for the common case: this loop is most of a session read. The slice comparisons are
    # _is_agent_run's two startswith tests (a slice past the end is shorter, so it is unequal), ~30 ns less each;
    # two attribute stores instead of a new __dict__ save another ~20 ns a run.
    for run_id, raw in runs.items():
        at = 11 + len(run_id)
        if raw[:11] == _RUN_ID_KEY and raw[at : at + 13] == _AGENT_ID_NEXT:
            run = _new(DeferredRunOutput)
            run.run_id = run_id
            run._aiomemdb_raw = raw  # type: ignore[attr-defined]  # _RAW: step 1 (see the module docstring)
            append(run)
        else:
            other = encoded_run(run_id, raw)
            if other is not None:
                append(other)
    session.runs = objects
    return session
