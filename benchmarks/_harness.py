"""Timing and reporting shared by the benchmark scripts.

Every comparison is measured side by side in one process: each repeat times every contender once, in turn, and
the best repeat of each is kept (the least disturbed by the other tenants of a noisy machine). Iteration counts
are calibrated per contender so that one repeat lasts about ``budget`` seconds. Results are rows of a table:
operation, size, ours, reference, ratio ours/reference, target, PASS/FAIL.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

Timed = Callable[[int], Any]  # run the operation n times (returns None or an awaitable)


@dataclass
class Row:
    """One line of a results table.

    ``ours`` and ``ref`` are rates (ops/s, MB/s) unless ``unit`` says otherwise; ``ratio`` is ours/ref.
    ``check`` decides PASS/FAIL from the ratio (or from ``ours`` for absolute targets); ``None`` means informational.
    """

    op: str
    size: str
    ours: float
    ref_name: str
    ref: float | None
    target: str = ""
    passed: bool | None = None
    unit: str = "ops/s"
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.ref is None or self.ref == 0:
            return None
        return self.ours / self.ref


@dataclass
class Report:
    """The rows one script produced, printed as a table and optionally written as JSON for run.py."""

    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(
        self,
        op: str,
        size: str,
        ours: float,
        ref_name: str,
        ref: float | None,
        *,
        target: str = "",
        check: Callable[[float], bool] | None = None,
        on: str = "ratio",
        unit: str = "ops/s",
        note: str = "",
    ) -> Row:
        row = Row(op, size, ours, ref_name, ref, target=target, unit=unit, note=note)
        value = row.ratio if on == "ratio" else ours
        if check is not None and value is not None:
            row.passed = bool(check(value))
        self.rows.append(row)
        print_rows([row], header=False)
        return row

    def print(self) -> None:
        print()
        print(f"## {self.title}")
        print()
        print_rows(self.rows, header=True, markdown=True)
        for note in self.notes:
            print(f"- {note}")
        print()

    def dump(self, path: str | None) -> None:
        if path:
            Path(path).write_text(json.dumps({"title": self.title, "rows": [asdict(r) for r in self.rows],
                                              "notes": self.notes}))  # fmt: skip


def fmt(value: float | None, unit: str = "ops/s") -> str:
    if value is None:
        return "—"
    if unit == "ratio":
        return f"{value:.2f}"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.1f}"
    return f"{value:.3g}"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:,.0f}x"
    return f"{value:.2f}x"


_COLUMNS = ("operation", "size", "ours", "reference", "ref", "ours/ref", "target", "result")


def print_rows(rows: Sequence[Row], *, header: bool, markdown: bool = False) -> None:
    lines = []
    for r in rows:
        result = "" if r.passed is None else ("PASS" if r.passed else "**FAIL**" if markdown else "FAIL")
        unit = "" if r.unit == "ops/s" else f" {r.unit}"
        op = r.op + (f" ({r.note})" if r.note and not markdown else "")
        lines.append((op, r.size, fmt(r.ours, r.unit) + unit, r.ref_name, fmt(r.ref, r.unit) + unit if r.ref else "—",
                      fmt_ratio(r.ratio), r.target, result))  # fmt: skip
    if markdown:
        if header:
            print("| " + " | ".join(_COLUMNS) + " |")
            print("|" + "|".join("---" for _ in _COLUMNS) + "|")
        for line in lines:
            print("| " + " | ".join(line) + " |")
        return
    for line in lines:
        print("  " + "  ".join(f"{c:<{w}}" for c, w in zip(line, (44, 10, 14, 26, 14, 10, 14, 6), strict=True)))
    sys.stdout.flush()


def parse_args(doc: str | None, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0] if doc else None)
    parser.add_argument("--quick", action="store_true", help="1k and 10k sessions only, shorter timings")
    parser.add_argument("--json", help="also write the rows to this JSON file (used by run.py)")
    parser.add_argument("--budget", type=float, default=None, help="seconds per timed repeat")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per contender (best is kept)")
    parser.add_argument("--sizes", help="comma-separated store sizes instead of the default ones, e.g. 1000,5000")
    args = parser.parse_args(argv)
    if args.budget is None:
        args.budget = 0.15 if args.quick else 0.3
    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
    return args


def sizes(args: argparse.Namespace) -> list[int]:
    if args.sizes:
        return [int(x) for x in args.sizes.split(",")]
    return [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]


def size_label(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def machine() -> str:
    import orjson

    try:
        from importlib.metadata import version

        agno = version("agno")
    except Exception:
        agno = "?"
    return (
        f"Python {platform.python_version()} ({platform.machine()}), {os.cpu_count()} CPUs, "
        f"orjson {orjson.__version__}, agno {agno}, load average {os.getloadavg()[0]:.1f}"
    )


def _timed_call(fn: Timed, n: int, loop: asyncio.AbstractEventLoop | None) -> float:
    began = time.perf_counter()
    result = fn(n)
    if isinstance(result, Awaitable):
        assert loop is not None, "an async contender needs the loop"
        # The timing includes run_until_complete's small constant overhead (~tens of µs per repeat).
        loop.run_until_complete(result)  # type: ignore[arg-type]
    return time.perf_counter() - began


def compare(
    contenders: dict[str, Timed],
    *,
    budget: float,
    repeats: int,
    loop: asyncio.AbstractEventLoop | None = None,
    max_n: int = 1_000_000,
    min_n: int = 1,
    fixed_n: dict[str, int] | None = None,
    resets: dict[str, Callable[[], Any]] | None = None,
) -> dict[str, float]:
    """Best ops/s of each contender; the contenders' repeats are interleaved so noise hits all of them alike.

    ``fn(n)`` performs the operation ``n`` times (a coroutine function's result is run on ``loop``). ``n`` is
    calibrated per contender from one warm-up call so that a repeat lasts about ``budget`` seconds.
    ``resets[name]()`` (untimed; may return an awaitable) restores the state after each call of a contender
    that consumes it (deletes, inserts of new ids).
    """

    def call(name: str, n: int) -> float:
        elapsed = _timed_call(contenders[name], n, loop)
        reset = (resets or {}).get(name)
        if reset is not None:
            _timed_call(lambda _: reset(), 0, loop)
        return elapsed

    counts: dict[str, int] = {}
    for name in contenders:
        if fixed_n and name in fixed_n:
            counts[name] = fixed_n[name]
            call(name, 1)  # warm-up
            continue
        n = 1
        elapsed = call(name, n)  # warm-up, and the first estimate
        while elapsed < budget / 20 and n < max_n:
            n = min(max_n, n * 10)
            elapsed = call(name, n)
        counts[name] = max(min_n, min(max_n, int(n * budget / max(elapsed, 1e-9)) or 1))
    best = dict.fromkeys(contenders, float("inf"))
    gc_was = gc.isenabled()
    for _ in range(repeats):
        for name in contenders:
            gc.collect()
            gc.disable()  # a collection of a 100k-session heap would be charged to whoever triggered it
            try:
                elapsed = call(name, counts[name])
            finally:
                if gc_was:
                    gc.enable()
            best[name] = min(best[name], elapsed / counts[name])
    return {name: 1.0 / t for name, t in best.items()}


def run_async(loop: asyncio.AbstractEventLoop, coro: Awaitable[Any]) -> Any:
    return loop.run_until_complete(coro)  # type: ignore[arg-type]
