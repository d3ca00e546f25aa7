"""Deserialised run objects kept between reads of a session, and handed to each reader as its own copy.

Rebuilding a historical ``RunOutput`` from its dict costs ~45 µs per run (a 10-run session ~0.45 ms, growing with
every turn). Each run object is therefore kept with a token of its JSON (hash and length, as agno's
``SessionRunObjectCache``): any write to the run, from this process or another, changes the token and misses.

Unlike agno's cache, the kept objects are never handed out: every read gets a :func:`fresh_copy` of them (~25 µs
per run), so one caller mutating ``session.runs[0].content`` can never change what another reads (guarantee 1).
The kept objects are never mutated, so copying them needs no lock; they are never written back either, the
store's JSON stays canonical. Sessions are evicted least-recently-read beyond ``max_sessions``; ``0`` disables
the cache (every read then rebuilds its runs from their dicts).
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
from aiomemdb.agno._copy import fresh_copy

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

    def session(self, session_type: SessionType | None, doc: dict[str, Any]) -> Any:
        """A stored session (a fresh dict this call owns) as agno's Session object, no part shared with any other.

        An agent session's history runs are copies of the cached run objects; every other session is built from
        ``doc`` alone.
        """
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
            if entry is not None and entry[0] == token:
                hits += 1
                obj = fresh_copy(entry[1])
            else:
                # the dict is a fresh decode that nothing else holds, so from_dict may consume it; the reader gets
                # the object built from it, the cache a copy that no reader ever sees
                obj = deserialize_history_run(run)
                entry = (token, fresh_copy(obj))
            if isinstance(run_id, str):
                fresh[run_id] = entry
            if obj is not None:
                objects.append(obj)
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
