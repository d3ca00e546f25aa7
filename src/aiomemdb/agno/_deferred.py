"""Agent sessions whose history runs are built on first use: each reader pays only for the runs it looks into.

agno's ``AgentSession.from_dict`` builds every stored run with ``RunOutput.from_dict`` (~45-75 µs per run: its
messages, metrics, tool executions), although an agent turn looks into few of them: ``add_history_to_context``
reads the messages of the last ``num_history_runs`` runs and only the status and ids of the others. A read here
gives each run as a :class:`DeferredRunOutput`: a ``RunOutput`` whose plain fields (ids, status, timestamps,
content, everything ``from_dict`` passes through unchanged) are set at once (~2 µs), and whose converted fields
(messages, metrics, tools, media, events, input ...) are built by agno's own ``RunOutput.from_dict`` the first
time any of them is read. After that the object *is* a ``RunOutput`` (its class is switched back), identical to
what ``from_dict`` returns; copying, pickling, comparing or ``dataclasses.asdict`` build it first.

Isolation costs nothing: every read decodes its own JSON, so the dict a deferred run holds belongs to that one
reader and no object is shared with any other reader or with the store. Team sessions and team runs are built
eagerly by agno's code, as before.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from agno.db.base import SessionType
from agno.db.utils import deserialize_session, detect_session_type
from agno.run.agent import RunOutput
from agno.run.base import RunStatus
from agno.run.team import TeamRunOutput
from agno.session import AgentSession

__all__ = ["DeferredRunOutput", "deferred_run", "to_agent_session", "to_session"]

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
_STATUS = {status.value: status for status in RunStatus}
_PENDING = "_aiomemdb_pending"
_BUILD = threading.Lock()  # a reader may hand its session to another thread; the first use builds once


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
        obj._aiomemdb_build()
        try:
            return obj.__dict__[self.name]
        except KeyError:
            raise AttributeError(self.name) from None


class DeferredRunOutput(RunOutput):
    """A ``RunOutput`` whose converted fields are built by ``RunOutput.from_dict`` on first use (then a RunOutput)."""

    def _aiomemdb_build(self) -> None:
        """Build the converted fields from the run's own dict, then become a plain ``RunOutput``."""
        with _BUILD:
            values = self.__dict__
            pending = values.get(_PENDING)
            if pending is None:
                return
            full = RunOutput.from_dict(pending)  # the dict is this reader's own decode: from_dict may consume it
            for name, value in full.__dict__.items():
                values.setdefault(name, value)  # a field the reader has set already keeps its value
            del values[_PENDING]
            object.__setattr__(self, "__class__", RunOutput)  # now exactly what from_dict returns

    def __reduce_ex__(self, protocol: Any) -> Any:
        # copy.copy, copy.deepcopy and pickle all come here: they see the finished RunOutput
        self._aiomemdb_build()
        return object.__reduce_ex__(self, protocol)

    def __eq__(self, other: object) -> bool:
        self._aiomemdb_build()
        if isinstance(other, DeferredRunOutput):
            other._aiomemdb_build()
        return bool(self == other)

    __hash__ = None  # type: ignore[assignment]  # as the dataclass (eq=True, not frozen)


for _name in _FIELDS:
    setattr(DeferredRunOutput, _name, _Deferred(_name))


def deferred_run(data: dict[str, Any]) -> RunOutput:
    """A stored agent run (a dict that only the caller holds) as a :class:`DeferredRunOutput`."""
    if "run" in data or "cancellation_stage" in data:
        return RunOutput.from_dict(data)  # agno's legacy nested shape, or a cancelled run: built at once
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
    values[_PENDING] = data
    run = object.__new__(DeferredRunOutput)
    run.__dict__.update(values)
    return run


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
