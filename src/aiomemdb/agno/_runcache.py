"""Deserialised run objects, reused across reads of a session (agno's own InMemoryDb does the same).

Rebuilding every historical ``RunOutput`` from its dict costs about 0.25 ms per run, so reading a 10-run session
as objects costs ~2.5 ms and grows with every turn; re-encoding the freshly decoded run dicts to check them costs
~25 µs. Each run object is therefore kept with a token of its JSON (hash and length, as agno's
``SessionRunObjectCache``): any write to the run, from this process or another, changes the token and misses.

The cached objects are shared by every read of the session and are immutable by contract, exactly as in agno
(every agno code path that changes a historical run copies it first); they are never written back, the store's
JSON stays canonical. Sessions are evicted least-recently-read beyond ``max_sessions``; ``0`` disables the cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import orjson
from agno.db.base import SessionType
from agno.db.utils import deserialize_history_run
from agno.session import AgentSession

from aiomemdb.agno._convert import to_session

__all__ = ["RunCache"]

Entry = tuple[tuple[int, int], Any]


class RunCache:
    """Per-session maps ``run_id -> (token, run object)``; thread-safe."""

    def __init__(self, max_sessions: int = 256) -> None:
        if isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 0:
            raise ValueError(f"run_cache_size must be an int >= 0, got {max_sessions!r}")
        self._max = max_sessions
        self._per_session: OrderedDict[str, dict[str, Entry]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def session(self, session_type: Any, doc: dict[str, Any]) -> Any:
        """Deserialise a stored session, reusing cached run objects for an agent session's history."""
        if (
            self._max == 0
            or doc.get("session_type") != SessionType.AGENT.value
            or session_type not in (None, SessionType.AGENT)
        ):
            return to_session(session_type, doc)
        runs = doc.get("runs") or []
        session = AgentSession.from_dict({**doc, "runs": None})
        if session is None:
            return None
        sid = doc["session_id"]
        with self._lock:
            cached = self._per_session.pop(sid, None) or {}
        fresh: dict[str, Entry] = {}
        objects: list[Any] = []
        hits = 0
        for run in runs:
            if not isinstance(run, dict):
                continue
            raw = orjson.dumps(run)
            token = (hash(raw), len(raw))
            run_id = run.get("run_id")
            entry = cached.get(run_id) if isinstance(run_id, str) else None
            if entry is None or entry[0] != token:
                # the dict is a fresh decode that nothing else holds, so from_dict may consume it
                entry = (token, deserialize_history_run(run))
            else:
                hits += 1
            if isinstance(run_id, str):
                fresh[run_id] = entry
            if entry[1] is not None:
                objects.append(entry[1])
        with self._lock:
            self.hits += hits
            self.misses += len(runs) - hits
            self._per_session[sid] = fresh
            while len(self._per_session) > self._max:
                self._per_session.popitem(last=False)
        session.runs = objects
        return session

    def drop(self, session_id: str) -> None:
        """Forget one session's runs (it was deleted)."""
        with self._lock:
            self._per_session.pop(session_id, None)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._per_session.clear()
