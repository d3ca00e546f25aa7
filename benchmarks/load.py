"""Loading a 10,000-session snapshot from a directory, in MB/s of JSON (SPEC 6: at least 50 MB/s).

Usage: ``python benchmarks/load.py [--quick]``.

The snapshot is written once by the store itself (``DirectoryPersistence``, one file per session). Each repeat
opens a new store on it and times ``await db.start()``: listing, reading and decoding every file (in worker
threads), validating and installing every session, building the indexes. The files are in the page cache
after the first repeat (the best repeat is reported), so this is our CPU cost, not the disk's. The reference is
the floor for the same work: reading every file and ``orjson.loads`` of its bytes, in one thread.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

import orjson
from _harness import Report, machine, parse_args
from sessions import SessionFactory

from aiomemdb import AsyncInMemoryDb, DirectoryPersistence

N = 10_000


async def write_snapshot(root: Path, factory: SessionFactory) -> None:
    db = AsyncInMemoryDb(persistence=DirectoryPersistence(root, fsync=False), durability="manual")
    await db.start()
    for k in range(0, N, 500):
        await db.upsert_sessions(list(factory.sessions(500, start=k)), preserve_updated_at=True)
    await db.aclose()


async def load_once(root: Path) -> float:
    db = AsyncInMemoryDb(persistence=DirectoryPersistence(root), durability="manual")
    began = time.perf_counter()
    await db.start()
    elapsed = time.perf_counter() - began
    assert db.stats().sessions == N
    await db.aclose()
    return elapsed


def read_and_decode(files: list[Path]) -> float:
    began = time.perf_counter()
    for path in files:
        orjson.loads(path.read_bytes())
    return time.perf_counter() - began


def main() -> None:
    args = parse_args(__doc__)
    repeats = 3 if args.quick else 5
    report = Report(f"Directory load of a {N:,}-session snapshot (MB/s of JSON, best of {repeats})")
    print(machine())
    root = Path(tempfile.mkdtemp(prefix="aiomemdb-load-"))
    try:
        asyncio.run(write_snapshot(root, SessionFactory()))
        files = [Path(d) / f for d, _, names in os.walk(root) for f in names if f.endswith(".json")]
        total = sum(p.stat().st_size for p in files)
        best = min(asyncio.run(load_once(root)) for _ in range(repeats))
        floor = min(read_and_decode(files) for _ in range(repeats))
        mb = total / 1e6
        report.add("load (start) from DirectoryPersistence", "10k", mb / best, "read + orjson.loads, 1 thread",
                   mb / floor, unit="MB/s", target="≥50 MB/s", check=lambda x: x >= 50, on="ours",
                   note=f"{len(files):,} files, {mb:,.0f} MB, {best:.2f} s")  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report.print()
    report.dump(args.json)


if __name__ == "__main__":
    main()
