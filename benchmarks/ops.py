"""Store operations: aiomemdb's async core against Agno's InMemoryDb and a raw dict, on the same sessions.

Usage: ``python benchmarks/ops.py [--quick]`` (1k and 10k sessions; without ``--quick`` also 100k).

How each contender is called (the fairness rules):

- **ours**: ``aiomemdb.AsyncInMemoryDb`` (no persistence), awaited in a coroutine on one event loop.
- **agno**: ``agno.db.in_memory.InMemoryDb`` called as Agno's own code calls it, with dict rows out
  (``deserialize=False``). Its store is filled by assigning the rows that its ``upsert_session`` +
  ``upsert_run`` would have produced (the same dict shape). Writes need a ``Session`` object; so that both
  stores do the same work from the same dict, agno gets an ``AgentSession`` whose ``to_dict()`` returns a fresh
  shallow copy of the prepared row (its ``asdict`` conversion, ~80 µs per call, would otherwise be charged to
  agno's store). The row with agno's real ``AgentSession.to_dict()`` is shown separately.
- **dict+orjson**: a ``dict[str, bytes]`` read with ``orjson.loads``: the cheapest read that gives the isolation
  ours gives (nothing returned aliases the store). **dict.get**: a bare ``dict`` lookup, no copy (no isolation).

Garbage collection is paused inside timed repeats for every contender (it would otherwise charge agno for
collecting its dict-of-dicts heap; ours holds bytes, which the collector never scans).
"""

from __future__ import annotations

import asyncio
import copy
import gc
import heapq
import random
import time
from collections.abc import Callable
from typing import Any

import orjson
from _harness import Report, compare, machine, parse_args, size_label, sizes
from agno.db.in_memory import InMemoryDb as AgnoDb
from agno.session import AgentSession
from sessions import SessionFactory, session_id, user_id

from aiomemdb import AsyncInMemoryDb

SAMPLE = 4096  # distinct sessions each read benchmark cycles through
WRITE_POOL = 256  # distinct inputs each write benchmark cycles through
BIG_RUNS = 1000
RAW_UP_TO = 10_000
BIG_SESSIONS = 8  # sessions per side in the flatness comparison


class _PreparedSession(AgentSession):
    """An AgentSession whose ``to_dict`` is a fresh shallow copy of a prepared row (see the module docstring)."""

    _row: dict[str, Any]

    @classmethod
    def of(cls, row: dict[str, Any]) -> _PreparedSession:
        obj = cls(session_id=row["session_id"], user_id=row.get("user_id"), agent_id=row.get("agent_id"))
        obj._row = {k: v for k, v in row.items() if k != "runs"}
        obj.runs = row.get("runs")  # type: ignore[assignment]  # dicts: agno deep-copies them on insert
        return obj

    def to_dict(self, include_runs: bool = True) -> dict[str, Any]:
        return dict(self._row)


def _fill_ours(loop: asyncio.AbstractEventLoop, factory: SessionFactory, n: int) -> AsyncInMemoryDb:
    db = AsyncInMemoryDb()

    async def fill() -> None:
        await db.start()
        batch: list[dict[str, Any]] = []
        for i in range(n):
            batch.append(factory.session(i))
            if len(batch) == 256 or i == n - 1:
                await db.upsert_sessions(batch, preserve_updated_at=True)
                batch.clear()

    loop.run_until_complete(fill())
    return db


def _fill_agno(factory: SessionFactory, n: int) -> AgnoDb:
    db = AgnoDb()
    for i in range(n):
        doc = factory.session(i)
        db._sessions[doc["session_id"]] = doc
    return db


def _run_writer(db: AsyncInMemoryDb, jobs: list[tuple[str, dict[str, Any]]]) -> Callable[[int], Any]:
    async def write(n: int) -> None:
        for k in range(n):
            sid, run = jobs[k % len(jobs)]
            await db.upsert_run(sid, run)

    return write


def _agno_run_writer(db: AgnoDb, jobs: list[tuple[str, dict[str, Any]]]) -> Callable[[int], Any]:
    def write(n: int) -> None:
        for k in range(n):
            sid, run = jobs[k % len(jobs)]
            db.upsert_run(run, sid)

    return write


class Bench:
    """One store size: the three stores, filled with the same sessions, and the operations timed on them."""

    def __init__(
        self,
        n: int,
        factory: SessionFactory,
        args: Any,
        report: Report,
        loop: asyncio.AbstractEventLoop,
        small: AsyncInMemoryDb,
    ) -> None:
        self.n, self.factory, self.args, self.report, self.loop = n, factory, args, report, loop
        self.small = small  # a 1k-session store, for the flatness rows
        self.small_ids = [session_id(i) for i in random.Random(1).sample(range(1000), 1000)]
        self.size = size_label(n)
        began = time.perf_counter()
        self.ours = _fill_ours(loop, factory, n)
        self.agno = _fill_agno(factory, n)
        self.bare: dict[str, dict[str, Any]] = self.agno._sessions  # same objects: no extra memory
        # The dict+orjson floor is left out at 100k to keep the run within ~10 GB (ours ~2.7 GB, agno ~6 GB).
        self.with_raw = n <= RAW_UP_TO
        self.raw: dict[str, bytes] = {session_id(i): factory.raw(i) for i in range(n)} if self.with_raw else {}
        rng = random.Random(n)
        picks = rng.sample(range(n), min(n, SAMPLE))
        self.ids = [session_id(i) for i in picks]
        self.picks = picks
        gc.freeze()  # the stores are long-lived: keep the collector from rescanning them between repeats
        print(f"  [{self.size}] filled three stores in {time.perf_counter() - began:.1f} s")

    def compare(self, contenders: dict[str, Callable[[int], Any]], **kw: Any) -> dict[str, float]:
        return compare(contenders, budget=self.args.budget, repeats=self.args.repeats, loop=self.loop, **kw)

    # -- reads ---------------------------------------------------------------------------------------------

    def get_session(self) -> None:
        ids, m = self.ids, len(self.ids)
        ours, agno, raw, bare = self.ours, self.agno, self.raw, self.bare
        loads = orjson.loads

        async def f_ours(n: int) -> None:
            for k in range(n):
                await ours.get_session(ids[k % m])

        def f_agno(n: int) -> None:
            for k in range(n):
                agno.get_session(ids[k % m], deserialize=False)

        def f_raw(n: int) -> None:
            for k in range(n):
                loads(raw[ids[k % m]])

        def f_bare(n: int) -> None:
            for k in range(n):
                bare.get(ids[k % m])

        small, small_ids = self.small, self.small_ids

        async def f_small(n: int) -> None:
            for k in range(n):
                await small.get_session(small_ids[k % 1000])

        floor = {"dict+orjson": f_raw} if self.with_raw else {}
        r = self.compare({"ours": f_ours, "agno": f_agno, **floor, "dict.get": f_bare, **self.at_1k(f_small)})
        add = self.report.add
        add("get_session", self.size, r["ours"], "agno", r["agno"], target="≥5x", check=lambda x: x >= 5)
        if self.with_raw:
            add("get_session", self.size, r["ours"], "dict+orjson.loads", r["dict+orjson"])
        add("get_session", self.size, r["ours"], "dict.get (no copy)", r["dict.get"])
        self.flat("get_session", r)

    def get_session_window(self) -> None:
        ids, m = self.ids, len(self.ids)
        ours, agno = self.ours, self.agno

        async def f_ours(n: int) -> None:
            for k in range(n):
                await ours.get_session(ids[k % m], runs_limit=2)

        def f_agno(n: int) -> None:
            for k in range(n):
                agno.get_session(ids[k % m], deserialize=False, runs_limit=2)

        r = self.compare({"ours": f_ours, "agno": f_agno})
        self.report.add("get_session(runs_limit=2)", self.size, r["ours"], "agno", r["agno"], target="≥5x",
                        check=lambda x: x >= 5)  # fmt: skip

    def get_sessions_user(self) -> None:
        users = [user_id(i) for i in self.picks[:64]]
        ours, agno, bare = self.ours, self.agno, self.bare
        per_user = self.n // 100

        async def f_ours(n: int) -> None:
            for k in range(n):
                await ours.get_sessions(user_id=users[k % 64])

        def f_agno(n: int) -> None:
            for k in range(n):
                agno.get_sessions(user_id=users[k % 64], deserialize=False)

        async def f_ours_page(n: int) -> None:
            for k in range(n):
                await ours.get_sessions(user_id=users[k % 64], limit=5)

        def f_agno_page(n: int) -> None:
            for k in range(n):
                agno.get_sessions(user_id=users[k % 64], limit=5, sort_by="updated_at", deserialize=False)

        def f_bare_page(n: int) -> None:
            # A raw dict has no index: scan everything, keep the user's 5 newest, copy those.
            for k in range(n):
                u = users[k % 64]
                top = heapq.nlargest(5, (s for s in bare.values() if s.get("user_id") == u),
                                     key=lambda s: s["updated_at"])  # fmt: skip
                [orjson.loads(orjson.dumps(s)) for s in top]

        r = self.compare({"ours": f_ours, "agno": f_agno})
        self.report.add(f"get_sessions(user_id) [all {per_user}]", self.size, r["ours"], "agno", r["agno"])

        async def f_ours_list(n: int) -> None:
            for k in range(n):
                await ours.get_sessions(user_id=users[k % 64], limit=5, include_runs=False)

        def f_agno_list(n: int) -> None:
            for k in range(n):
                agno.get_sessions(user_id=users[k % 64], limit=5, sort_by="updated_at", deserialize=False,
                                  include_runs=False)  # fmt: skip

        small = self.small

        async def f_small(n: int) -> None:
            for k in range(n):
                await small.get_sessions(user_id=users[k % 64], limit=5)

        r = self.compare({"ours": f_ours_page, "agno": f_agno_page, "dict scan": f_bare_page, **self.at_1k(f_small)})
        add = self.report.add
        target, check = self.target_at_10k()
        add("get_sessions(user_id, limit=5)", self.size, r["ours"], "agno", r["agno"], target=target, check=check)
        add("get_sessions(user_id, limit=5)", self.size, r["ours"], "dict scan+nlargest+copy", r["dict scan"])
        self.flat("get_sessions(user_id, limit=5)", r)
        r = self.compare({"ours": f_ours_list, "agno": f_agno_list})
        add("get_sessions(user_id, limit=5, include_runs=False)", self.size, r["ours"], "agno", r["agno"],
            target=target, check=check)  # fmt: skip

    def get_recent(self) -> None:
        ours, agno, bare = self.ours, self.agno, self.bare

        async def f_ours(n: int) -> None:
            for _ in range(n):
                await ours.get_recent_sessions(limit=5)

        def f_agno(n: int) -> None:
            # agno 2.x/3.x has no get_recent_sessions: this is its equivalent call.
            for _ in range(n):
                agno.get_sessions(sort_by="updated_at", sort_order="desc", limit=5, deserialize=False)

        def f_bare(n: int) -> None:
            for _ in range(n):
                top = heapq.nlargest(5, bare.values(), key=lambda s: s["updated_at"])
                [orjson.loads(orjson.dumps(s)) for s in top]

        small = self.small

        async def f_small(n: int) -> None:
            for _ in range(n):
                await small.get_recent_sessions(limit=5)

        contenders: dict[str, Callable[[int], Any]] = {"ours": f_ours, "dict scan": f_bare, **self.at_1k(f_small)}
        # agno deep-copies every session for this call: ~0.5 s per 1k sessions, and at 100k ~50 s and ~5 GB
        # of copies per call, so it is measured up to 10k only (its cost is linear in the store).
        if self.n <= 10_000:
            contenders["agno"] = f_agno
        repeats = self.args.repeats if self.n < 10_000 else min(self.args.repeats, 3)
        r = compare(contenders, budget=self.args.budget, repeats=repeats, loop=self.loop,
                    fixed_n={"agno": 1} if self.n >= 10_000 else None)  # fmt: skip
        add = self.report.add
        if "agno" in r:
            target, check = self.target_at_10k()
            add("get_recent_sessions(limit=5)", self.size, r["ours"], "agno", r["agno"], target=target, check=check)
        else:
            add("get_recent_sessions(limit=5)", self.size, r["ours"], "agno (not run: O(store))", None)
        add("get_recent_sessions(limit=5)", self.size, r["ours"], "dict scan+nlargest+copy", r["dict scan"])
        self.flat("get_recent_sessions(limit=5)", r)

    # -- writes --------------------------------------------------------------------------------------------

    def upsert_existing(self) -> None:
        """Save a session's row (no runs key: runs are kept), as agno does after every run.

        agno returns the row without the stored runs, so ours is called with ``include_runs=False``, which
        returns the same; the full stored copy (``include_runs=True``, decoding all 10 runs) is shown too.
        """
        rows = [{k: v for k, v in self.factory.session(i).items() if k != "runs"} for i in self.picks[:WRITE_POOL]]
        for row in rows:
            row["session_data"] = {**(row.get("session_data") or {}), "session_name": "renamed"}
        prepared = [_PreparedSession.of(row) for row in rows]
        for p in prepared:
            p.runs = None
        real = [AgentSession.from_dict(row) for row in rows]
        ours, agno, m = self.ours, self.agno, len(rows)

        async def f_ours(n: int) -> None:
            for k in range(n):
                await ours.upsert_session(rows[k % m], include_runs=False)

        async def f_ours_full(n: int) -> None:
            for k in range(n):
                await ours.upsert_session(rows[k % m])

        def f_agno(n: int) -> None:
            for k in range(n):
                agno.upsert_session(prepared[k % m], deserialize=False)

        def f_agno_real(n: int) -> None:
            for k in range(n):
                agno.upsert_session(real[k % m], deserialize=False)

        def f_raw(n: int) -> None:
            raw = self.raw
            for k in range(n):
                row = rows[k % m]
                raw[row["session_id"]] = orjson.dumps(row)

        r = self.compare({"ours": f_ours, "ours full": f_ours_full, "agno": f_agno, "agno+to_dict": f_agno_real,
                          "dict": f_raw})  # fmt: skip
        add = self.report.add
        op = "upsert_session (existing, row only)"
        add(op, self.size, r["ours"], "agno", r["agno"], target="≥3x", check=lambda x: x >= 3)
        add(op, self.size, r["ours"], "agno incl. Session.to_dict", r["agno+to_dict"])
        add(op, self.size, r["ours"], "dict[id]=orjson.dumps", r["dict"])
        add(op + " returning runs", self.size, r["ours full"], "agno", r["agno"])

    def upsert_new(self) -> None:
        """Create a session with its 10 runs (imports, restores, a first save).

        agno returns a copy of the row and hands back the caller's own run objects (no copy), so the target row
        calls ours with ``include_runs=False``; returning a decoded copy of all 10 runs is shown too.
        """
        base = 10_000_000 + self.n
        docs = [self.factory.session(base + k) for k in range(WRITE_POOL)]
        prepared = [_PreparedSession.of(d) for d in docs]
        ours, agno, raw, m = self.ours, self.agno, self.raw, len(docs)

        async def f_ours(n: int) -> None:
            for k in range(n):
                await ours.upsert_session(docs[k % m], include_runs=False)

        async def f_ours_full(n: int) -> None:
            for k in range(n):
                await ours.upsert_session(docs[k % m])

        def f_agno(n: int) -> None:
            for k in range(n):
                agno.upsert_session(prepared[k % m], deserialize=False)

        def f_raw(n: int) -> None:
            for k in range(n):
                raw[docs[k % m]["session_id"]] = orjson.dumps(docs[k % m])

        async def reset_ours() -> None:
            await ours.delete_sessions([d["session_id"] for d in docs])

        def reset_agno() -> None:
            agno.delete_sessions([d["session_id"] for d in docs])

        r = self.compare({"ours": f_ours, "ours full": f_ours_full, "agno": f_agno, "dict": f_raw}, max_n=m,
                         resets={"ours": reset_ours, "ours full": reset_ours, "agno": reset_agno})  # fmt: skip
        self.loop.run_until_complete(reset_ours())
        reset_agno()
        for d in docs:
            raw.pop(d["session_id"], None)
        add = self.report.add
        op = "upsert_session (new, 10 runs)"
        add(op, self.size, r["ours"], "agno", r["agno"], target="≥3x", check=lambda x: x >= 3)
        add(op, self.size, r["ours"], "dict[id]=orjson.dumps", r["dict"])
        add(op + " returning runs", self.size, r["ours full"], "agno", r["agno"])

    def upsert_run(self, *, long_sessions: bool) -> None:
        """Replace a session's latest run (agno re-saves the current run as it progresses).

        With ``long_sessions``, also on 8 sessions of 1,000 runs against 8 sessions of 10 runs, both in two
        small stores of their own and timed in the same repeats, so the flatness ratio compares like with like.
        """
        jobs = [(session_id(i), self.factory.session(i)["runs"][-1]) for i in self.picks[:WRITE_POOL]]
        contenders = {"ours": _run_writer(self.ours, jobs), "agno": _agno_run_writer(self.agno, jobs)}
        side_ours, side_agno = AsyncInMemoryDb(), AgnoDb()
        if long_sessions:
            for runs, label in ((10, "short"), (BIG_RUNS, "long")):
                side_jobs = []
                for b in range(BIG_SESSIONS):
                    i = 20_000_000 + runs * 100 + b
                    doc = self.factory.session(i)
                    doc["runs"] = [self.factory.run(i, k) for k in range(runs)]
                    self.loop.run_until_complete(side_ours.upsert_session(doc))
                    side_agno._sessions[doc["session_id"]] = copy.deepcopy(doc)
                    side_jobs.append((doc["session_id"], doc["runs"][-1]))
                contenders[f"ours {label}"] = _run_writer(side_ours, side_jobs)
                contenders[f"agno {label}"] = _agno_run_writer(side_agno, side_jobs)
        r = self.compare(contenders)
        add = self.report.add
        add("upsert_run (10-run sessions)", self.size, r["ours"], "agno", r["agno"])
        if long_sessions:
            add(f"upsert_run ({BIG_RUNS:,}-run sessions)", self.size, r["ours long"], "agno", r["agno long"])
            flat = "≥0.5x (flat)"
            add(f"upsert_run flatness: {BIG_RUNS:,} vs 10 runs", self.size, r["ours long"],
                "ours on 10-run sessions", r["ours short"], target=flat, check=lambda x: x >= 0.5)  # fmt: skip
            add(f"  (agno's own: {BIG_RUNS:,} vs 10 runs)", self.size, r["agno long"], "agno on 10-run sessions",
                r["agno short"])  # fmt: skip
        self.loop.run_until_complete(side_ours.aclose())

    def delete_session(self) -> None:
        ids = self.ids[:WRITE_POOL]
        ours, agno = self.ours, self.agno
        raw: dict[str, Any] = self.raw if self.with_raw else dict.fromkeys(self.bare)
        saved_ours = [self.factory.session(i) for i in self.picks[:WRITE_POOL]]
        saved = dict(zip(ids, (agno._sessions[s] for s in ids), strict=True))
        saved_raw = {s: raw[s] for s in ids}

        async def f_ours(n: int) -> None:
            for k in range(n):
                await ours.delete_session(ids[k])

        def f_agno(n: int) -> None:
            for k in range(n):
                agno.delete_session(ids[k])

        def f_raw(n: int) -> None:
            for k in range(n):
                raw.pop(ids[k], None)

        async def reset_ours() -> None:
            await ours.upsert_sessions(saved_ours, preserve_updated_at=True)

        def reset_agno() -> None:
            agno._sessions.update(saved)

        r = self.compare(
            {"ours": f_ours, "agno": f_agno, "dict.pop": f_raw},
            max_n=len(ids),
            resets={"ours": reset_ours, "agno": reset_agno, "dict.pop": lambda: raw.update(saved_raw)},
        )
        add = self.report.add
        add("delete_session", self.size, r["ours"], "agno", r["agno"])
        add("delete_session", self.size, r["ours"], "dict.pop", r["dict.pop"])

    # -- flatness across store sizes -----------------------------------------------------------------------

    def at_1k(self, fn: Callable[[int], Any]) -> dict[str, Callable[[int], Any]]:
        """The same operation on a 1k-session store, timed in the same repeats (for the flatness rows)."""
        return {"ours@1k": fn} if self.n > 1_000 else {}

    def target_at_10k(self) -> tuple[str, Callable[[float], bool] | None]:
        if self.n == 10_000:
            return "≥1000x @10k", lambda x: x >= 1000
        return "", None

    def flat(self, op: str, r: dict[str, float]) -> None:
        if "ours@1k" in r:
            self.report.add(f"{op}: {self.size} vs 1k", self.size, r["ours"], "ours on a 1k store", r["ours@1k"],
                            target="≥0.5x (flat)", check=lambda x: x >= 0.5)  # fmt: skip

    def close(self) -> None:
        self.loop.run_until_complete(self.ours.aclose())
        gc.unfreeze()


def main() -> None:
    args = parse_args(__doc__)
    report = Report("Store operations: aiomemdb vs Agno InMemoryDb vs raw dict (ops/s, best of repeats)")
    print(machine())
    factory = SessionFactory()
    loop = asyncio.new_event_loop()
    small = _fill_ours(loop, factory, 1_000)
    for n in sizes(args):
        bench = Bench(n, factory, args, report, loop, small)
        bench.get_session()
        bench.get_session_window()
        bench.get_sessions_user()
        bench.get_recent()
        bench.upsert_existing()
        bench.upsert_new()
        bench.upsert_run(long_sessions=n == 1_000)
        bench.delete_session()
        bench.close()
        del bench
    loop.close()
    report.notes.append(
        "agno is called with deserialize=False (dict rows, as ours returns). For upserts both stores get the same "
        "dict (agno through an AgentSession whose to_dict returns it); 'agno incl. Session.to_dict' is agno's "
        "cost with a real AgentSession, whose dataclasses.asdict dominates."
    )
    report.notes.append("Timings: best of repeats, repeats interleaved between contenders; GC paused while timed.")
    report.print()
    report.dump(args.json)


if __name__ == "__main__":
    main()
