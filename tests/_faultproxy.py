"""Test harness for the S3 tests: a fault-injecting HTTP proxy, a request log read from moto, sample data.

:class:`FaultProxy` sits on 127.0.0.1 between an S3 client and moto's server and, per request, can pass it on,
reset the connection before forwarding (the request is lost), forward it and then reset instead of answering
(the request landed, its response is lost), answer ``503 SlowDown`` itself, or hold it back for a while.
It frames HTTP/1.1 requests (Content-Length or chunked bodies) so faults apply per request even on kept-alive
connections; responses are pumped back unframed, which is enough because botocore never pipelines.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import re
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from aiomemdb import _codec
from aiomemdb.persistence._base import Changeset, Key

Fault = Literal["reset", "reset_after", "503", "delay"]

_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
    b"<RequestId>FAULTPROXY</RequestId><HostId>faultproxy</HostId></Error>"
)


class FaultProxy:
    """A TCP proxy for HTTP/1.1 whose faults a test switches on and off.

    Faults are taken per request: first from the queue filled by :meth:`fail_next`, then at random with
    :attr:`chaos` probability (from :attr:`chaos_kinds`, seeded, so a run is reproducible). :attr:`injected`
    counts the faults actually applied, so a test can check that it tested something.
    """

    def __init__(self, upstream: str, *, seed: int = 0) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname, upstream
        assert parts.port, upstream
        self._upstream = (parts.hostname, parts.port)
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._queue: collections.deque[Fault | None] = collections.deque()
        self._random = random.Random(seed)
        self.chaos = 0.0
        self.chaos_kinds: tuple[Fault, ...] = ("reset", "reset_after", "503")
        self.delay = 1.0
        self.injected: collections.Counter[str] = collections.Counter()
        self.requests = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, n: int, kind: Fault) -> None:
        """Apply ``kind`` to each of the next ``n`` requests."""
        self._queue.extend([kind] * n)

    def plan(self, *kinds: Fault | None) -> None:
        """Apply these faults to the next requests in order; ``None`` lets a request through."""
        self._queue.extend(kinds)

    def heal(self) -> None:
        """Stop injecting faults."""
        self._queue.clear()
        self.chaos = 0.0

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await self._server.wait_closed()

    def _next_fault(self) -> Fault | None:
        if self._queue:
            return self._queue.popleft()  # may be None: pass this one
        if self.chaos and self._random.random() < self.chaos:
            return self._random.choice(self.chaos_kinds)
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # the client went away or sent something unparseable: drop the connection
        except asyncio.CancelledError:
            pass  # the proxy is shutting down
        finally:
            self._handlers.discard(task)
            _reset(writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        pump: asyncio.Task[None] | None = None
        drop = asyncio.Event()  # set: reset the client instead of passing on the next final response
        waiting = asyncio.Event()  # set: a request went upstream and its final response has not come back
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed its connection
                self.requests += 1
                headers = _headers(head)
                expects_continue = headers.get("expect", "").lower() == "100-continue"
                fault = self._next_fault()
                if fault is not None:
                    self.injected[fault] += 1
                if fault == "reset":
                    return  # the finally of _accept resets the connection: the request is lost
                if fault == "503":
                    if not expects_continue:  # with Expect: 100-continue the client waits: no body follows
                        await _read_body(reader, headers, None)
                    writer.write(
                        b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                        + f"Content-Length: {len(_SLOW_DOWN)}\r\nConnection: close\r\n\r\n".encode()
                        + _SLOW_DOWN
                    )
                    await writer.drain()
                    writer.close()
                    return
                body: bytearray | None = None
                if fault == "delay":
                    # Take the whole request first (as a buffering load balancer does), then hold it back: it
                    # reaches S3 even if the client has given up meanwhile.
                    if expects_continue:
                        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                        head = _without_expect(head)
                    body = bytearray()
                    await _read_body(reader, headers, body.extend)
                    await asyncio.sleep(self.delay)
                if upstream is None:
                    upstream = await asyncio.open_connection(*self._upstream)
                    pump = asyncio.create_task(_pump(upstream[0], writer, drop, waiting))
                if fault == "reset_after":
                    drop.set()
                waiting.set()
                upstream[1].write(head)
                if body is not None:
                    upstream[1].write(bytes(body))
                else:
                    await _read_body(reader, headers, upstream[1].write)
                await upstream[1].drain()
                if pump is not None and pump.done():
                    return
        finally:
            try:
                # Let a forwarded request land upstream (its answer may go nowhere) before closing.
                deadline = asyncio.get_running_loop().time() + 5
                while waiting.is_set() and pump is not None and not pump.done():
                    if asyncio.get_running_loop().time() > deadline:
                        break
                    await asyncio.sleep(0.01)
            finally:
                if upstream is not None:
                    upstream[1].close()
                if pump is not None:
                    pump.cancel()
                    await asyncio.gather(pump, return_exceptions=True)


async def _pump(
    upstream: asyncio.StreamReader, client: asyncio.StreamWriter, drop: asyncio.Event, waiting: asyncio.Event
) -> None:
    """Copy responses to the client; when ``drop`` is set, reset the client at the next final response.

    Interim ``100 Continue`` responses are always passed on, or the client would never send its body.
    """
    pending = b""
    while True:
        data = await upstream.read(65536)
        if not data:
            waiting.clear()
            client.close()
            return
        pending += data
        while pending.startswith(b"HTTP/1.1 1") and b"\r\n\r\n" in pending:
            interim, _, pending = pending.partition(b"\r\n\r\n")
            client.write(interim + b"\r\n\r\n")
        if not pending or b"HTTP/1.1 1".startswith(pending) or pending.startswith(b"HTTP/1.1 1"):
            continue  # nothing more yet, or an interim response still arriving
        waiting.clear()
        if drop.is_set():
            _reset(client)
            return
        client.write(pending)
        pending = b""
        with contextlib.suppress(OSError):
            await client.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close abruptly: RST instead of FIN, as a crashed server or a middlebox would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _headers(head: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


def _without_expect(head: bytes) -> bytes:
    lines = head.split(b"\r\n")
    return b"\r\n".join(line for line in lines if not line.lower().startswith(b"expect:"))


async def _read_body(
    reader: asyncio.StreamReader, headers: dict[str, str], sink: Callable[[bytes], object] | None
) -> None:
    """Read one request body, passing its bytes to ``sink`` when given."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            chunk = await reader.readexactly(size + 2) if size else b""
            if sink is not None:
                sink(size_line + chunk)
            if size == 0:
                while True:  # trailers, up to the empty line
                    line = await reader.readuntil(b"\r\n")
                    if sink is not None:
                        sink(line)
                    if line == b"\r\n":
                        return
    remaining = int(headers.get("content-length", "0") or 0)
    while remaining:
        data = await reader.read(min(remaining, 65536))
        if not data:
            raise asyncio.IncompleteReadError(b"", remaining)
        remaining -= len(data)
        if sink is not None:
            sink(data)


# -- moto's request log ------------------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ServerLog(logging.Handler):
    """Records ``(method, path, status)`` of every request moto's server answered for one bucket.

    werkzeug logs each request as it sends the response headers, so a request is recorded before the client
    has its answer.
    """

    def __init__(self, bucket: str) -> None:
        super().__init__(logging.INFO)
        self.bucket = bucket
        self.requests: list[tuple[str, str, int]] = []
        self._mutex = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if len(args) < 2:
            return
        parts = _ANSI.sub("", str(args[0])).split(" ")
        if len(parts) < 2:
            return
        method, target = parts[0], unquote(parts[1])
        if not (target.startswith(f"/{self.bucket}/") or target.startswith(f"/{self.bucket}?")):
            return
        try:
            status = int(str(args[1]))
        except ValueError:
            status = 0
        with self._mutex:
            self.requests.append((method, target, status))

    def count(self, method: str, *, status: int | None = None, contains: str = "") -> int:
        """How many ``method`` requests were answered (with ``status``; whose path contains ``contains``)."""
        with self._mutex:
            return sum(1 for m, t, s in self.requests if m == method and status in (None, s) and contains in t)

    def clear(self) -> None:
        with self._mutex:
            self.requests.clear()


@contextmanager
def server_log(bucket: str) -> Iterator[ServerLog]:
    """Attach a :class:`ServerLog` for ``bucket`` to the ``werkzeug`` logger for the duration of the block."""
    handler = ServerLog(bucket)
    logger = logging.getLogger("werkzeug")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


# -- sample data ---------------------------------------------------------------------------------------------------


def session(session_id: str, *, runs: int = 2, tag: str = "", updated_at: int = 1_700_000_000) -> dict[str, Any]:
    """A small agno-like session with ``runs`` runs whose ids start with ``tag``."""
    return {
        "session_id": session_id,
        "user_id": "u1",
        "agent_id": "agent-1",
        "session_type": "agent",
        "session_data": {"session_name": f"chat {session_id}"},
        "created_at": 1_700_000_000,
        "updated_at": updated_at,
        "version": 1,
        "runs": [
            {
                "run_id": f"{tag}run-{i}",
                "created_at": updated_at,
                "messages": [{"role": "user", "content": f"question {i} of {session_id}"}],
            }
            for i in range(runs)
        ],
    }


def envelope(collection: str, record_id: str, record: dict[str, Any]) -> bytes:
    """The bytes the store would hand to ``save`` for ``record``."""
    return _codec.encode_envelope(collection, record_id, _codec.dumps(record))


def changeset(
    upserts: dict[Key, dict[str, Any]] | None = None, deletes: set[Key] | frozenset[Key] = frozenset()
) -> Changeset:
    """A Changeset built the way the store builds one."""
    return Changeset(
        upserts={key: envelope(key[0], key[1], rec) for key, rec in (upserts or {}).items()},
        deletes=frozenset(deletes),
    )


def run_ids(record: dict[str, Any]) -> list[str]:
    """The run ids of a session, in order."""
    return [run["run_id"] for run in record.get("runs") or []]


async def read_all(client: Any, bucket: str, prefix: str, *, meta: bool = False) -> dict[str, bytes]:
    """Every object under ``prefix``, read with a raw client: key -> bytes.

    The store's own objects under ``v1/_meta/`` (the conditional-write verdict) are left out unless ``meta``.
    """
    out: dict[str, bytes] = {}
    paginator = client.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Contents", ()):
            if not meta and "/_meta/" in f"/{entry['Key']}":
                continue
            resp = await client.get_object(Bucket=bucket, Key=entry["Key"])
            async with resp["Body"] as stream:
                out[entry["Key"]] = await stream.read()
    return out
