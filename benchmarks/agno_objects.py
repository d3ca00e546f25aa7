"""What agno objects cost the adapter: rebuilding runs for a reader, and encoding sessions and runs for the store.

Usage: ``python benchmarks/agno_objects.py [--repeats N]``. Sessions are the four real offline agent sessions of
``benchmarks/sessions.py`` (10 runs each, ~25 KB of JSON). Every row is the best of N interleaved repeats (each
repeat times every contender once, in turn), in µs.

1. **Per run, for a reader**: ``orjson.loads`` of the run's JSON; ``RunOutput.from_dict`` of that dict (agno's
   ``deserialize_history_run``, what building every run costs); ``deferred_run`` (what the adapter hands a reader:
   plain fields set, the rest built on first use) and the same followed by its first use; ``copy.deepcopy`` of a
   built run for reference.
2. **Per session read** through ``aiomemdb.agno.InMemoryDb.get_session`` from the main thread: as returned (runs
   deferred) and with every run then built, and agno's own ``InMemoryDb`` (which hands every reader the same
   cached run objects) for reference.
3. **Encoding** a run and a session (without runs) for the store: ``to_dict()`` then ``orjson.dumps`` (what the
   adapter does) against orjson's native dataclass encoding (``orjson.dumps(obj, default=model_dump)``, pydantic
   messages need the ``default``), and whether the two produce the same JSON.
"""

from __future__ import annotations

import argparse
import copy
import os
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

os.environ.setdefault("AGNO_TELEMETRY", "false")

import orjson
from _harness import machine
from agno.db.in_memory import InMemoryDb as AgnoInMemoryDb
from agno.db.utils import deserialize_history_run
from agno.run.agent import RunOutput
from agno.session import AgentSession
from agno.session.summary import SessionSummary
from pydantic import BaseModel
from sessions import SessionFactory

from aiomemdb.agno import InMemoryDb
from aiomemdb.agno._deferred import deferred_run


def best(contenders: dict[str, Callable[[], Any]], repeats: int, number: int) -> dict[str, float]:
    """Best time per call of each contender in µs, over interleaved repeats."""
    result = dict.fromkeys(contenders, float("inf"))
    for _ in range(repeats):
        for name, fn in contenders.items():
            result[name] = min(result[name], timeit.timeit(fn, number=number) / number * 1e6)
    return result


def model_dump(obj: Any) -> Any:
    """orjson's ``default`` for what it cannot encode natively: pydantic models (agno's messages)."""
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    raise TypeError(type(obj).__name__)


def json_diff(native: dict[str, Any], via_to_dict: dict[str, Any]) -> str:
    """A one-line description of how two JSON objects differ."""
    only_native = sorted(set(native) - set(via_to_dict))
    only_to_dict = sorted(set(via_to_dict) - set(native))
    changed = sorted(k for k in set(native) & set(via_to_dict) if native[k] != via_to_dict[k])
    return (
        f"same JSON: {native == via_to_dict}; keys only in native: {len(only_native)} "
        f"({', '.join(only_native[:4])} ...), only in to_dict: {len(only_to_dict)}, values differing: {changed}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(machine())
    factory = SessionFactory()
    docs = [factory.session(i) for i in range(len(factory.templates))]

    print("\n1. per run, for a reader (µs per run, mean of the 4 templates)")
    totals: dict[str, float] = {}
    for doc in docs:
        raws = [orjson.dumps(run) for run in doc["runs"]]
        objects = [RunOutput.from_dict(orjson.loads(raw)) for raw in raws]
        rows = best({
            "orjson.loads": lambda raws=raws: [orjson.loads(raw) for raw in raws],
            "from_dict(orjson.loads)": lambda raws=raws: [deserialize_history_run(orjson.loads(raw)) for raw in raws],
            "deferred_run(orjson.loads)": lambda raws=raws: [deferred_run(orjson.loads(raw)) for raw in raws],
            "deferred_run + first use": lambda raws=raws: [deferred_run(orjson.loads(raw)).messages for raw in raws],
            "copy.deepcopy(cached)": lambda objects=objects: copy.deepcopy(objects),
        }, args.repeats, 50)  # fmt: skip
        for name, value in rows.items():
            totals[name] = totals.get(name, 0.0) + value / len(raws) / len(docs)
    for name, value in totals.items():
        print(f"   {name:<28} {value:8.1f}")

    print("\n2. get_session of a 10-run session, main thread (µs per read)")
    ours, agno = InMemoryDb(), AgnoInMemoryDb()
    sids = []
    for doc in docs:
        for db in (ours, agno):
            db.upsert_sessions([AgentSession.from_dict(copy.deepcopy(doc))], preserve_updated_at=True)
        sids.append(doc["session_id"])
    rows = best({
        "aiomemdb (runs deferred)": lambda: [ours.get_session(sid) for sid in sids],
        "aiomemdb, every run built": lambda: [[r.messages for r in ours.get_session(sid).runs] for sid in sids],
        "agno InMemoryDb (shares runs)": lambda: [agno.get_session(sid) for sid in sids],
        "aiomemdb, deserialize=False": lambda: [ours.get_session(sid, deserialize=False) for sid in sids],
    }, 2 * args.repeats, 30)  # fmt: skip
    for name, value in rows.items():
        print(f"   {name:<30} {value / len(sids):8.1f}")
    ours.close()

    print("\n3. encoding for the store (µs per object, template 0)")
    session = AgentSession.from_dict(copy.deepcopy(docs[0]))
    assert session is not None
    assert session.runs
    run = session.runs[1]
    # as agno's summary manager leaves it when the model names no topics
    session.summary = SessionSummary(summary="The user asked about France.", updated_at=datetime.now(UTC))
    head = copy.copy(session)
    head.runs = None
    rows = best({
        "run: to_dict + dumps": lambda: orjson.dumps(run.to_dict()),
        "run: native dataclass dumps": lambda: orjson.dumps(run, default=model_dump),
        "session: to_dict(no runs) + dumps": lambda: orjson.dumps(session.to_dict(include_runs=False)),
        "session: native dataclass dumps": lambda: orjson.dumps(head, default=model_dump),
    }, args.repeats, 200)  # fmt: skip
    for name, value in rows.items():
        print(f"   {name:<34} {value:8.1f}")
    print("   run:     " + json_diff(orjson.loads(orjson.dumps(run, default=model_dump)), run.to_dict()))
    native_head = orjson.loads(orjson.dumps(head, default=model_dump))
    via_to_dict = orjson.loads(orjson.dumps(session.to_dict(include_runs=False)))
    print("   session: " + json_diff(native_head, via_to_dict))
    print(f"   summary: native {native_head['summary']} / to_dict {via_to_dict['summary']}")


if __name__ == "__main__":
    main()
