"""The write-ahead journal behind ``durability="journal"``: the Redis AOF model.

Every write appends one orjson line to the current journal *segment* before the call returns; a writer task
moves batches of lines to disk in a worker thread (group commit) and fsyncs every ``fsync_interval`` seconds,
or before the writes return when ``fsync_interval`` is 0. A crash therefore loses at most the fsync window
(nothing at all on a process crash, since a returned write is already in the OS).

Segments make truncation safe: when a flush takes its changeset it calls :meth:`Journal.rotate`, so the
segment that was current holds exactly the writes that flush covers; when the flush succeeds,
:meth:`Journal.release` deletes it (and older ones). On start, :meth:`Journal.replay` returns every entry of
every remaining segment, in order. Entries set absolute values, so replaying one that a flush already
persisted is harmless.

A torn last line (the process died mid-append) is detected and dropped, and the file is truncated there; an
unreadable line anywhere else is corruption and raises :class:`~aiomemdb.CorruptDataError` with its offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from aiomemdb._exceptions import CorruptDataError, PersistenceError

__all__ = ["Journal"]

_SEGMENT = re.compile(r"journal-(\d{12})\.jsonl")


def _segment_name(number: int) -> str:
    return f"journal-{number:012d}.jsonl"


class Journal:
    """An append-only, segmented, group-committed journal in one directory.

    Args:
        directory: where the segment files live (created if missing).
        fsync_interval: seconds between fsyncs; 0 fsyncs before each write returns (still grouped).
    """

    def __init__(self, directory: str | os.PathLike[str], *, fsync_interval: float = 1.0) -> None:
        if fsync_interval < 0:
            raise ValueError("journal fsync interval must be >= 0")
        self.directory = Path(directory)
        self._fsync_interval = fsync_interval
        self._segment = 0
        self._pending: list[tuple[int, bytes]] = []
        self._batch: asyncio.Future[None] | None = None
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._syncer: asyncio.Task[None] | None = None
        self._fds: dict[int, int] = {}
        self._unsynced: set[int] = set()
        self._error: BaseException | None = None
        self._io_lock: asyncio.Lock | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def replay(self) -> list[dict[str, Any]]:
        """Read every segment (oldest first) and return its entries; start a new segment for new writes."""
        entries, last = await asyncio.to_thread(self._read_all)
        self._segment = last + 1
        return entries

    def start(self) -> None:
        """Start the writer (and the periodic fsync) on the running loop."""
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._io_lock = asyncio.Lock()
        self._writer = loop.create_task(self._write_forever(), name="aiomemdb-journal")
        if self._fsync_interval > 0:
            self._syncer = loop.create_task(self._sync_forever(), name="aiomemdb-journal-fsync")

    async def aclose(self) -> None:
        """Write and fsync what is pending, stop the tasks and close the files."""
        with contextlib.suppress(PersistenceError):
            await self.drain(fsync=True)
        for task in (self._writer, self._syncer):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._writer = self._syncer = None
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    # -- writing -------------------------------------------------------------------------------------------

    def append(self, line: bytes) -> asyncio.Future[None]:
        """Queue one entry (a complete JSON object, no newline); the future resolves once it is on disk."""
        if self._error is not None:
            raise PersistenceError(f"journal is failing: {self._error!r}", key=str(self.directory))
        self._pending.append((self._segment, line))
        if self._batch is None:
            self._batch = asyncio.get_running_loop().create_future()
        assert self._wake is not None
        self._wake.set()
        return self._batch

    def rotate(self) -> int:
        """Send later writes to a new segment; returns the segment that was current (for :meth:`release`)."""
        current = self._segment
        self._segment += 1
        return current

    async def release(self, upto: int) -> None:
        """Delete segments up to ``upto`` (their writes are persisted)."""
        await self.drain(fsync=False)
        assert self._io_lock is not None
        async with self._io_lock:
            await asyncio.to_thread(self._delete_upto, upto)

    async def drain(self, *, fsync: bool) -> None:
        """Wait until everything appended so far is written (and fsynced if asked)."""
        if self._batch is not None:
            await asyncio.shield(self._batch)
        if fsync:
            await self._fsync()

    async def _write_forever(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._batch = self._batch, None
            lines, self._pending = self._pending, []
            if not lines:
                if batch is not None and not batch.done():
                    batch.set_result(None)
                continue
            try:
                assert self._io_lock is not None
                async with self._io_lock:
                    await asyncio.to_thread(self._write_lines, lines, self._fsync_interval == 0)
            except Exception as exc:
                self._error = exc
                if batch is not None and not batch.done():
                    batch.set_exception(
                        PersistenceError(f"journal write failed: {exc!r}", key=str(self.directory), cause=exc)
                    )
                    batch.exception()  # a writer may have been cancelled; do not warn about it
                continue
            if batch is not None and not batch.done():
                batch.set_result(None)

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(self._fsync_interval)
            with contextlib.suppress(PersistenceError):
                await self._fsync()

    async def _fsync(self) -> None:
        assert self._io_lock is not None
        async with self._io_lock:
            await asyncio.to_thread(self._fsync_files)

    # -- file work (worker threads) ------------------------------------------------------------------------

    def _fd(self, segment: int) -> int:
        fd = self._fds.get(segment)
        if fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / _segment_name(segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._fds[segment] = fd
        return fd

    def _write_lines(self, lines: list[tuple[int, bytes]], fsync: bool) -> None:
        by_segment: dict[int, list[bytes]] = {}
        for segment, line in lines:
            by_segment.setdefault(segment, []).append(line)
        for segment, chunk in by_segment.items():
            fd = self._fd(segment)
            data = memoryview(b"\n".join(chunk) + b"\n")
            while data:
                data = data[os.write(fd, data) :]
            self._unsynced.add(segment)
        if fsync:
            self._fsync_files()

    def _fsync_files(self) -> None:
        for segment in sorted(self._unsynced):
            fd = self._fds.get(segment)
            if fd is not None:
                os.fsync(fd)
        self._unsynced.clear()

    def _delete_upto(self, upto: int) -> None:
        for segment in [s for s in self._fds if s <= upto]:
            os.close(self._fds.pop(segment))
            self._unsynced.discard(segment)
        for number, path in self._segments():
            if number <= upto:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def _segments(self) -> Iterator[tuple[int, Path]]:
        if not self.directory.is_dir():
            return iter(())
        found = []
        for path in self.directory.iterdir():
            match = _SEGMENT.fullmatch(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return iter(sorted(found))

    def _read_all(self) -> tuple[list[dict[str, Any]], int]:
        entries: list[dict[str, Any]] = []
        last = 0
        try:
            segments = list(self._segments())
            for index, (number, path) in enumerate(segments):
                last = number
                entries.extend(self._read_segment(path, is_last=index == len(segments) - 1))
        except PersistenceError:
            raise  # CorruptDataError already names the segment and offset (and is itself an OSError)
        except OSError as exc:
            raise PersistenceError(f"cannot read journal {self.directory}: {exc}", key=str(self.directory)) from exc
        return entries, last

    @staticmethod
    def _read_segment(path: Path, *, is_last: bool) -> list[dict[str, Any]]:
        data = path.read_bytes()
        entries: list[dict[str, Any]] = []
        offset = 0
        while offset < len(data):
            end = data.find(b"\n", offset)
            line = data[offset:] if end < 0 else data[offset:end]
            torn = end < 0
            try:
                entry = orjson.loads(line)
                if not isinstance(entry, dict) or "op" not in entry:
                    raise ValueError("not a journal entry")
            except (orjson.JSONDecodeError, ValueError) as exc:
                if is_last and torn:
                    # A torn final append: drop it and cut the file there, so new appends start clean.
                    with open(path, "r+b") as fh:
                        fh.truncate(offset)
                    break
                raise CorruptDataError(
                    f"{path}: unreadable journal entry at byte offset {offset}: {exc}",
                    key=f"{path}:{offset}",
                    cause=exc,
                ) from exc
            if torn:
                # Valid JSON but no newline: the write completed except for its terminator; keep it.
                with open(path, "ab") as fh:
                    fh.write(b"\n")
                entries.append(entry)
                break
            entries.append(entry)
            offset = end + 1
        return entries
