"""Flush cost on S3: 10 changed sessions in stores of 1k and 10k sessions (100k with --full), against the seed's way
of persisting (``json.dumps`` of every session into one object and one PUT).

Run ``python benchmarks/flush.py`` (under a minute on 2 cores; ``--full`` adds 100k sessions and needs ~16 GB of
RAM). It starts its own moto S3 server in a subprocess on 127.0.0.1, so the CPU time reported is this process's
alone: our encoding, signing, HTTP and the event loop. moto is a slow Python server, so the wall times include
its cost and are not S3's; the request counts, bytes sent and CPU time are what carries over to real S3. The
seed's single PUT of the whole store goes to a subprocess that reads and discards it (moto cannot hold a 2.6 GB
object; S3 takes up to 5 GB in one PUT), so its wall time is our encoding plus the transfer over loopback.

Sessions are realistic agno sessions (~25 KB, 10 runs; see ``benchmarks/sessions.py``). Each store is filled
without writing to S3 (its persistence is muted while seeding: the objects would be identical and moto needs ~6 ms
per PUT), so the measured flushes are creates (``If-None-Match: *``) or updates (``If-Match``) of 10 sessions:
one request each either way. A store of 10 sessions is the reference for "the cost grows with the changes, not
with the store" (SPEC 6: within 2x at 100k).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Report, machine
from sessions import SessionFactory, session_id

from aiomemdb import AsyncInMemoryDb
from aiomemdb.persistence import Changeset, Key, Snapshot
from aiomemdb.persistence._s3 import S3Persistence

CHANGED = 10
REPEATS = 7
CREDENTIALS = {"region_name": "us-east-1", "aws_access_key_id": "bench", "aws_secret_access_key": "bench"}


@dataclass
class Cost:
    requests: int
    bytes: int
    cpu: float
    wall: float


class Meter:
    """Counts the requests aiobotocore clients send and their body bytes (botocore's before-send event)."""

    def __init__(self, *clients: Any) -> None:
        self.requests = 0
        self.bytes = 0
        for client in clients:
            client.meta.events.register("before-send.s3.*", self._on_send)

    def _on_send(self, request: Any, **_: Any) -> None:
        self.requests += 1
        self.bytes += int(request.headers.get("Content-Length", 0) or 0)

    async def measure(self, work: Any) -> Cost:
        gc.collect()
        self.requests = self.bytes = 0
        cpu, wall = time.process_time(), time.perf_counter()
        await work()
        return Cost(self.requests, self.bytes, time.process_time() - cpu, time.perf_counter() - wall)


class Muted:
    """A persistence whose saves can be switched off, to fill a store without writing what S3 would hold anyway."""

    def __init__(self, inner: S3Persistence) -> None:
        self.inner = inner
        self.muted = True

    async def open(self) -> None:
        await self.inner.open()

    async def load(self) -> Snapshot:
        return {}  # a fresh prefix: nothing to load

    async def load_one(self, collection: str, record_id: str) -> dict[str, Any] | None:
        return await self.inner.load_one(collection, record_id)

    async def save(self, changeset: Changeset) -> Mapping[Key, dict[str, Any]] | None:
        return None if self.muted else await self.inner.save(changeset)

    async def list_keys(self, collection: str | None = None) -> list[Key]:
        return await self.inner.list_keys(collection)

    @property
    def quarantined(self) -> Sequence[tuple[str, str]]:
        return self.inner.quarantined

    async def aclose(self) -> None:
        await self.inner.aclose()


def median_cost(costs: list[Cost]) -> Cost:
    return Cost(
        requests=int(statistics.median(c.requests for c in costs)),
        bytes=int(statistics.median(c.bytes for c in costs)),
        cpu=statistics.median(c.cpu for c in costs),
        wall=statistics.median(c.wall for c in costs),
    )


async def flush_cost(n: int, factory: SessionFactory, client: Any, meter: Meter, bucket: str) -> Cost:
    """Median cost of flushing CHANGED changed sessions of a store holding ``n`` sessions."""
    gate = Muted(S3Persistence(bucket, f"store-{n}", client=client))
    rng = random.Random(n)
    costs: list[Cost] = []
    async with AsyncInMemoryDb(persistence=gate, durability="manual") as db:  # type: ignore[arg-type]
        for start in range(0, n, 1000):
            await db.upsert_sessions(list(factory.sessions(min(1000, n - start), start)), preserve_updated_at=True)
        await db.flush()
        gate.muted = False
        for _ in range(REPEATS):
            for i in rng.sample(range(n), min(CHANGED, n)):
                # One extra run, replaced on later repeats, so sessions keep their size however often they change.
                await db.upsert_run(session_id(i), factory.run(i, 100))
            report = None

            async def flush() -> None:
                nonlocal report
                report = await db.flush()

            costs.append(await meter.measure(flush))
            assert report is not None
            assert report.upserts == min(CHANGED, n), report
    return median_cost(costs)


async def dump_cost(n: int, factory: SessionFactory, client: Any, meter: Meter, bucket: str) -> Cost:
    """Cost of the seed's persistence: json.dumps(my_sessions, default=str) and one PUT of the whole blob."""
    my_sessions = {session_id(i): factory.session(i) for i in range(n)}
    costs: list[Cost] = []
    for _ in range(3 if n <= 1000 else 1):

        async def dump() -> None:
            text = json.dumps(my_sessions, default=str)
            blob = text.encode()
            del text
            await client.put_object(Bucket=bucket, Key=f"seed-{n}/sessions.json", Body=blob)

        costs.append(await meter.measure(dump))
    my_sessions.clear()
    gc.collect()
    return median_cost(costs)


# An HTTP server that reads every request body, throws it away and answers 200: where the seed's whole-store PUT
# goes. moto keeps objects in memory and cannot take a 2.6 GB body; S3 would (a PUT takes up to 5 GB).
_SINK = r"""
import asyncio, sys

async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            headers = {}
            for line in head.decode("latin-1").split("\r\n")[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            left = int(headers.get("content-length") or 0)
            while left:
                chunk = await reader.read(min(left, 1 << 20))
                if not chunk:
                    return
                left -= len(chunk)
            writer.write(b'HTTP/1.1 200 OK\r\nETag: "sink"\r\nContent-Length: 0\r\n\r\n')
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


def start_server(*command: str) -> tuple[subprocess.Popen[bytes], str]:
    """Run ``command`` (with the port appended) in a subprocess and wait until it accepts connections."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([*command, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"{command[:3]} did not start") from None
            time.sleep(0.1)


def kb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} KB"


async def main_async(sizes: list[int], json_out: str | None) -> None:
    from aiobotocore.session import get_session
    from botocore.config import Config

    factory = SessionFactory()
    moto, endpoint = start_server(sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p")
    sink, sink_endpoint = start_server(sys.executable, "-c", _SINK)
    try:
        async with AsyncExitStack() as stack:
            config = Config(retries={"total_max_attempts": 1}, max_pool_connections=16, read_timeout=600)
            client, sink_client = [
                await stack.enter_async_context(
                    get_session().create_client("s3", endpoint_url=url, config=config, **CREDENTIALS)
                )
                for url in (endpoint, sink_endpoint)
            ]
            meter = Meter(client, sink_client)
            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            await client.create_bucket(Bucket=bucket)
            mean = statistics.mean(len(factory.raw(i)) for i in range(100))
            print(f"# flush to S3 (moto in a subprocess) — {machine()}")
            print(f"sessions: {mean / 1e3:.1f} KB each on average, 10 runs; {CHANGED} changed per flush\n")
            reference = await flush_cost(CHANGED, factory, client, meter, bucket)
            head = ("store", "how", "requests", "bytes sent", "CPU ms", "wall ms")
            print("| " + " | ".join(head) + " |")
            print("|" + "|".join("---" for _ in head) + "|")

            def line(size: str, how: str, c: Cost) -> None:
                print(f"| {size} | {how} | {c.requests} | {kb(c.bytes)} | {c.cpu * 1e3:,.1f} | {c.wall * 1e3:,.1f} |")
                sys.stdout.flush()

            line(str(CHANGED), f"aiomemdb flush of {CHANGED} changed", reference)
            results: list[tuple[int, Cost, Cost]] = []
            for n in sizes:
                dump = await dump_cost(n, factory, sink_client, meter, bucket)
                ours = await flush_cost(n, factory, client, meter, bucket)
                line(f"{n:,}", f"aiomemdb flush of {CHANGED} changed", ours)
                line(f"{n:,}", "seed: json.dumps(all) + 1 PUT", dump)
                ratios = (dump.requests / ours.requests, dump.bytes / ours.bytes, dump.cpu / ours.cpu)
                print(f"| {n:,} | **dump / ours** | {ratios[0]:.2f}x | {ratios[1]:,.0f}x | {ratios[2]:,.0f}x"
                      f" | {dump.wall / ours.wall:,.0f}x |")  # fmt: skip
                results.append((n, ours, dump))
                gc.collect()
    finally:
        for proc in (moto, sink):
            proc.terminate()
            proc.wait(10)

    print()
    report = Report("Flush to S3: 10 changed sessions (our side; moto in a subprocess)")
    for n, ours, dump in results:
        size = f"{n // 1000}k"
        report.add(f"flush {CHANGED} changed: CPU", size, ours.cpu * 1e3, "seed full dump", dump.cpu * 1e3,
                   unit="ms", note="lower is better")  # fmt: skip
        report.add(f"flush {CHANGED} changed: bytes sent", size, ours.bytes / 1e3, "seed full dump", dump.bytes / 1e3,
                   unit="KB")  # fmt: skip
        report.add(f"flush {CHANGED} changed: CPU vs a {CHANGED}-session store", size, ours.cpu * 1e3,
                   f"{CHANGED}-session store", reference.cpu * 1e3, unit="ms", target="<= 2x",
                   check=lambda r: r <= 2.0)  # fmt: skip
    report.notes.append(
        "wall times of flushes include moto's own (slow, Python) request handling; the full dump's PUT goes to a"
        " byte sink; requests, bytes and CPU are ours alone"
    )
    report.print()
    report.dump(json_out)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also 100k sessions (needs ~16 GB RAM, ~6 minutes)")
    parser.add_argument("--json", help="also write the summary rows to this JSON file")
    args = parser.parse_args()
    sizes = [1_000, 10_000] + ([100_000] if args.full else [])
    asyncio.run(main_async(sizes, args.json))


if __name__ == "__main__":
    main()
