"""Realistic benchmark sessions, produced by real Agno agent turns and multiplied by re-id-ing.

A few *template* sessions come from a real ``agno.agent.Agent`` driven by :class:`aiomemdb.agno.testing.OfflineModel`
(no network): ten turns each, ``add_history_to_context=True``, agentic memory on, so the first turn makes a real
tool call (``update_user_memory``) and every run stores agno's system prompt, messages, metrics and session state
exactly as agno writes them. They are stored through agno's own ``InMemoryDb`` and read back as rows
(``deserialize=False``): the dicts agno's storage layer holds.

The templates are cached in ``benchmarks/.cache/`` (gitignored; delete it to regenerate). Session ``i`` of any
size is then derived in a few microseconds by substituting ids in the template's JSON bytes: its own session id
and run ids (uuid-shaped), ``user_id`` over 100 users, ``agent_id`` over 10 agents, and ``created_at`` /
``updated_at`` increasing with ``i``. So 100k distinct sessions take seconds to make and nothing else to store.

Run alone to print the template sizes: ``python benchmarks/sessions.py``.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

CACHE = Path(__file__).resolve().parent / ".cache"
USERS = 100
AGENTS = 10
BASE_TIME = 1_760_000_000

_TPL_SESSION = "TPLSESSION"
_TPL_USER = "TPLUSER"
_TPL_AGENT = "TPLAGENT"
# Placeholders for the store-owned timestamps, distinct 10-digit numbers replaced in the bytes.
_TPL_CREATED = 1_111_111_111
_TPL_UPDATED = 1_222_222_222
_PLACEHOLDER = re.compile(
    rb'(TPLSESSION|TPLRUNA|TPLRUNB|TPLUSER|TPLAGENT|"created_at":%d|"updated_at":%d)' % (_TPL_CREATED, _TPL_UPDATED)
)

# Each template is one conversation: a stated fact, follow-ups that need the history, small talk. The first two
# agents have agentic memory (the fact becomes a real ``update_user_memory`` tool call and every run stores agno's
# memory system prompt); the other two are plain chat agents with longer replies. Together they average the ~25 KB
# of a real 10-run agent session.
_AGENTIC = (True, True, False, False)
_REPLY_CHARS = (0, 0, 400, 400)
_SCRIPTS: tuple[tuple[str, ...], ...] = (
    (
        "My name is Ada and I live in Lisbon.",
        "What is the capital of France?",
        "What is its population?",
        *(f"Tell me about city number {i}." for i in range(6)),
        "What was my first question?",
    ),
    (
        "I like hiking in the mountains, remember that.",
        "Plan a three day trip to the Alps for me.",
        "Which month is best for it?",
        "What should I pack?",
        "How do I get there from Zurich by train?",
        "Is a rail pass worth it?",
        "Suggest two huts to sleep in.",
        "What about the weather risks?",
        "Summarise the plan in five bullet points.",
        "What was my first message?",
    ),
    (
        "I work as a data engineer at a logistics company.",
        "Explain what a write-ahead log is.",
        "How does Redis implement its append only file?",
        "What does group commit mean?",
        "Compare fsync policies: always, everysec, no.",
        "When would you pick everysec?",
        "What breaks if the disk lies about fsync?",
        "How do databases detect torn pages?",
        "Give me one book on the topic.",
        "What was my first question?",
    ),
    (
        "My favourite language is Python.",
        *(f"Question {i}: what does the standard library module number {i} do?" for i in range(8)),
        "What was my first question?",
    ),
)


def _generate_templates() -> list[dict[str, Any]]:
    """Run the real agents (about half a second each) and return their stored session rows."""
    from agno.agent import Agent
    from agno.db.in_memory import InMemoryDb

    from aiomemdb.agno.testing import OfflineModel

    rows: list[dict[str, Any]] = []
    for t, script in enumerate(_SCRIPTS):
        db = InMemoryDb()
        agent = Agent(
            model=OfflineModel(reply_chars=_REPLY_CHARS[t]),
            db=db,
            id=_TPL_AGENT,
            user_id=_TPL_USER,
            session_id=_TPL_SESSION,
            add_history_to_context=True,
            num_history_runs=3,
            enable_agentic_memory=_AGENTIC[t],
            instructions=None if _AGENTIC[t] else ["You are a helpful assistant. Answer concisely."],
            session_state={"template": t},
        )
        for prompt in script:
            agent.run(prompt)
        row = db.get_session(_TPL_SESSION, deserialize=False)
        if not isinstance(row, dict) or len(row["runs"]) != len(script):
            raise RuntimeError(f"template {t}: agno did not store every run")
        rows.append(row)
    return rows


def _placeholders(row: dict[str, Any]) -> bytes:
    """A template row as JSON bytes, with every id and the two timestamps replaced by placeholders."""
    row = dict(row, created_at=_TPL_CREATED, updated_at=_TPL_UPDATED)
    raw = orjson.dumps(row)
    for k, run in enumerate(row["runs"]):
        # Run ids become "TPLRUNA-<k>-TPLRUNB", so two substitutions re-id all the runs of a session.
        raw = raw.replace(run["run_id"].encode(), b"TPLRUNA-%04x-TPLRUNB" % k)
    return raw


def _cache_file() -> Path:
    import agno

    version = getattr(agno, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("agno")
    key = hashlib.sha256(repr((_SCRIPTS, _AGENTIC, _REPLY_CHARS, version)).encode()).hexdigest()[:12]
    return CACHE / f"templates-{key}.json"


def templates() -> list[bytes]:
    """The template sessions as JSON bytes with placeholders (generated once, then read from the cache)."""
    path = _cache_file()
    if path.exists():
        return [t.encode() for t in orjson.loads(path.read_bytes())]
    made = [_placeholders(row) for row in _generate_templates()]
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps([t.decode() for t in made]))
    tmp.replace(path)
    return made


def session_id(i: int) -> str:
    """The id of session ``i``: uuid-shaped like agno's, deterministic."""
    return f"{i:08x}-5e55-4000-8000-{(i * 2654435761) % 2**48:012x}"


def user_id(i: int) -> str:
    """The owner of session ``i`` (100 users, round robin)."""
    return f"user-{i % USERS:03d}"


def agent_id(i: int) -> str:
    """The agent of session ``i`` (10 agents, independent of the user)."""
    return f"agent-{(i // USERS) % AGENTS}"


class SessionFactory:
    """Derives distinct realistic sessions from the templates; ``raw(i)`` is one ``bytes.join``."""

    def __init__(self, tpls: list[bytes] | None = None) -> None:
        self.templates = tpls if tpls is not None else templates()
        # Split each template at its placeholders once: even items are literal bytes, odd items placeholders.
        self._parts = [_PLACEHOLDER.split(t) for t in self.templates]

    def raw(self, i: int) -> bytes:
        """Session ``i`` as agno-shaped JSON bytes."""
        created = BASE_TIME + i
        values = {
            b"TPLSESSION": session_id(i).encode(),
            b"TPLRUNA": b"%08x" % i,
            b"TPLRUNB": b"4000-9000-%012x" % i,
            b"TPLUSER": user_id(i).encode(),
            b"TPLAGENT": agent_id(i).encode(),
            b'"created_at":%d' % _TPL_CREATED: b'"created_at":%d' % created,
            b'"updated_at":%d' % _TPL_UPDATED: b'"updated_at":%d' % created,
        }
        parts = self._parts[i % len(self._parts)]
        out = parts.copy()
        for j in range(1, len(out), 2):
            out[j] = values[out[j]]
        return b"".join(out)

    def session(self, i: int) -> dict[str, Any]:
        """Session ``i`` as a fresh dict (the shape agno's storage holds)."""
        doc: dict[str, Any] = orjson.loads(self.raw(i))
        return doc

    def sessions(self, n: int, start: int = 0) -> Iterator[dict[str, Any]]:
        """Sessions ``start .. start + n - 1``, oldest first."""
        for i in range(start, start + n):
            yield self.session(i)

    def run(self, i: int, k: int) -> dict[str, Any]:
        """A new run ``k`` for session ``i`` (a template run with a fresh id), for append/replace benchmarks."""
        runs = self.session(i)["runs"]
        run: dict[str, Any] = runs[k % len(runs)]
        run["run_id"] = f"{i:08x}-{k:04x}-4000-a000-{i:012x}"
        return run


def main() -> None:
    factory = SessionFactory()
    print(f"{len(factory.templates)} template sessions (real agno turns, OfflineModel), cached in {CACHE}")
    for t in range(len(factory.templates)):
        doc = factory.session(t)
        tools = sum(1 for run in doc["runs"] for m in run["messages"] if m.get("tool_calls"))
        print(f"  template {t}: {len(factory.raw(t)):6,d} bytes, {len(doc['runs'])} runs, {tools} tool call(s)")
    sizes = [len(factory.raw(i)) for i in range(1000)]
    print(f"  mean over 1,000 derived sessions: {sum(sizes) / len(sizes):,.0f} bytes")
    import time

    began = time.perf_counter()
    for i in range(10_000):
        factory.session(i)
    print(f"  deriving + decoding 10,000 sessions: {time.perf_counter() - began:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
