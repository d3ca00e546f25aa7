"""The write-ahead journal behind ``durability="journal"``: the Redis AOF model.

A write's journal line is appended with ``write(2)`` inside the kernel's commit, before the write is applied
(:meth:`Journal.append`): if the append fails (a full disk, a file-size limit), it raises and nothing has
changed; the partial line is cut off again, and the next append tries afresh, so writes succeed as soon as
the fault clears. That ``write`` only copies into the page cache; the slow part, ``fsync``, runs in a worker
thread, every ``fsync_interval`` seconds or, with 0, before the writes return (concurrent writes share one
fsync: group commit, :class:`Syncer`).

Segments make truncation safe: a flush calls :meth:`Journal.rotate` as it takes its changeset, so the segment
that was current holds only writes that flush covers; when the flush succeeds, :meth:`Journal.release`
deletes it and older ones. :meth:`Journal.read` returns every entry of every remaining segment in order.
Replaying entries over storage that already holds some of them is harmless: each sets absolute values, and
the journal holds every write since the last released segment, so the last entry for a key is its newest value.

A torn last line of a segment (the process died mid-append, or an append failed and could not be cut off) is
dropped; an unreadable line anywhere else is corruption: :class:`~aiomemdb.CorruptDataError` with the
segment and byte offset.

The fsync also covers the journal's directory entries: after a segment is created the directory is fsynced
once, so a power cut cannot lose a segment whose lines were synced. A segment removed while it is open (the
journal folder, or the whole store folder, deleted by hand) would take every line since the last flush with
it, and fsync still succeeds on the unlinked file. Each sync therefore checks every open segment's link
count, and a removed one is *restored*: copied from its still-open file into a new file of the same name
(the folder created again), synced, and written to from then on. A write acknowledged after the removal is
synced only once its segment is restored, so it survives a crash; writes the sync before it acknowledged are
restored by this sync (a crash in between loses them: the folder was removed under a running store).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from aiomemdb._exceptions import CorruptDataError, PersistenceError

__all__ = ["Journal", "has_segments"]

logger = logging.getLogger("aiomemdb")

_SEGMENT = re.compile(r"journal-(\d{12})\.jsonl")
# The journal's write call, looked up at each append (a test replaces it to make the disk "full").
_write = os.write


def _segment_name(number: int) -> str:
    return f"journal-{number:012d}.jsonl"


_RESTORING = re.compile(r"(journal-\d{12}\.jsonl)\.restoring")


def _segments(directory: Path) -> list[tuple[int, Path]]:
    """The segments, oldest first. A restore's temporary copy (``*.restoring``) whose segment is missing is the
    only copy of it (the process died between the copy and its rename): it counts as that segment."""
    if not directory.is_dir():
        return []
    found: dict[int, Path] = {}
    orphans: dict[int, Path] = {}
    for path in directory.iterdir():
        match = _SEGMENT.fullmatch(path.name)
        if match:
            found[int(match.group(1))] = path
            continue
        restoring = _RESTORING.fullmatch(path.name)
        if restoring:
            segment = _SEGMENT.fullmatch(restoring.group(1))
            assert segment is not None
            orphans[int(segment.group(1))] = path
    for number, orphan in orphans.items():
        found.setdefault(number, orphan)
    return sorted(found.items())


def _adopt_restoring(directory: Path) -> None:
    """Before a writable journal reads: rename an orphaned restore copy into its segment's place, and remove one
    whose segment exists (a restore that failed before its rename; the segment was restored again later)."""
    if not directory.is_dir():
        return
    for path in directory.iterdir():
        restoring = _RESTORING.fullmatch(path.name)
        if restoring:
            target = path.with_name(restoring.group(1))
            if target.exists():
                path.unlink(missing_ok=True)
            else:
                os.replace(path, target)


def has_segments(directory: Path) -> bool:
    """True if ``directory`` holds journal segments (writes that no flush has covered yet)."""
    try:
        return bool(_segments(directory))
    except OSError as exc:
        raise PersistenceError(f"cannot list journal {directory}: {exc}", key=str(directory), cause=exc) from exc


class Journal:
    """An append-only, segmented journal in one directory.

    Args:
        directory: where the segment files live (created on the first append).
        read_only: only :meth:`read` (no truncation of a torn tail, no appends): the command line uses it.
    """

    def __init__(self, directory: str | os.PathLike[str], *, read_only: bool = False) -> None:
        self.directory = Path(directory)
        self.read_only = read_only
        self._segment = 1
        self._fds: dict[int, int] = {}
        self._offset = 0  # the end of the last complete line in the current segment
        self._unsynced: set[int] = set()
        self._created = False  # a segment was created since the directory was last fsynced
        self._fd_lock = threading.Lock()  # the fds are used by the committing thread and the fsync thread
        self.appended = 0  # lines appended so far (what a sync covers)
        self.restored = 0  # segments restored after they were removed while open

    # -- reading -----------------------------------------------------------------------------------------

    def read(self) -> list[tuple[str, Any]]:
        """Every entry of every segment, oldest first, as ``(where, entry)``; new appends go to a new segment.

        Blocking: run it in a worker thread.

        Raises:
            CorruptDataError: an unreadable entry that is not a torn tail (``where`` names segment and offset).
            PersistenceError: the directory or a segment cannot be read.
        """
        entries: list[tuple[str, Any]] = []
        try:
            if not self.read_only:
                _adopt_restoring(self.directory)
            segments = _segments(self.directory)
            for _number, path in segments:
                entries.extend(self._read_segment(path))
        except PersistenceError:
            raise
        except OSError as exc:
            raise PersistenceError(f"cannot read journal {self.directory}: {exc}", key=str(self.directory)) from exc
        if segments:
            self._segment = segments[-1][0] + 1
        return entries

    def hold_segments(self) -> None:
        """Open every existing segment, so that one removed while this journal runs is restored like the current
        one (see the module docstring): the segments a start replayed hold writes acknowledged by the process
        before, and stay until this store's first flush releases them. Blocking.

        Raises:
            PersistenceError: a segment cannot be opened.
        """
        with self._fd_lock:
            try:
                for number, path in _segments(self.directory):
                    if number not in self._fds:
                        self._fds[number] = os.open(path, os.O_RDWR | os.O_APPEND)
            except OSError as exc:
                raise PersistenceError(
                    f"cannot open journal segments of {self.directory}: {exc}", key=str(self.directory), cause=exc
                ) from exc

    def _read_segment(self, path: Path) -> Iterator[tuple[str, Any]]:
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            end = data.find(b"\n", offset)
            line = data[offset:] if end < 0 else data[offset:end]
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                if end < 0:
                    # A torn final append: drop it and (unless read-only) cut the file there.
                    if not self.read_only:
                        with open(path, "r+b") as fh:
                            fh.truncate(offset)
                    return
                raise CorruptDataError(
                    f"{path}: unreadable journal entry at byte offset {offset}: {exc}",
                    key=f"{path}:{offset}",
                    cause=exc,
                ) from exc
            yield f"{path}:{offset}", entry
            if end < 0:
                return  # complete but for its newline; the next segment starts clean anyway
            offset = end + 1

    # -- appending (in the kernel's commit, under its lock) ----------------------------------------------

    def append(self, line: bytes) -> None:
        """Write one entry (a JSON object, no newline) to the current segment, or raise with nothing written.

        Raises:
            PersistenceError: the write failed (the journal is unchanged; a later append may succeed).
        """
        data = line + b"\n"
        with self._fd_lock:
            try:
                fd = self._current_fd()
                view = memoryview(data)
                while view:
                    view = view[_write(fd, view) :]
            except OSError as exc:
                self._cut_back()
                raise PersistenceError(
                    f"journal write failed, the write was not applied: {exc}", key=str(self.directory), cause=exc
                ) from exc
            self._offset += len(data)
            self._unsynced.add(self._segment)
            self.appended += 1

    def _current_fd(self) -> int:
        fd = self._fds.get(self._segment)
        if fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / _segment_name(self._segment)
            # read-write: a segment removed while open is restored from this fd (_restore_removed)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            self._fds[self._segment] = fd
            self._created = True
            self._offset = os.fstat(fd).st_size
        return fd

    def _cut_back(self) -> None:
        """Remove a partly written line; if that fails too, leave it as a torn tail and start a new segment."""
        fd = self._fds.get(self._segment)
        if fd is None:
            return
        try:
            os.ftruncate(fd, self._offset)
        except OSError:
            self._segment += 1  # the torn tail is dropped by read(); new appends must not follow it

    def rotate(self) -> int:
        """Send later appends to a new segment; returns the segment that was current (for :meth:`release`)."""
        with self._fd_lock:
            current = self._segment
            self._segment += 1
            return current

    # -- worker-thread work ------------------------------------------------------------------------------

    def sync(self) -> int:
        """fsync every segment written since the last sync (restoring any removed one, and the directory entry of
        a new one); returns how many appends are now durable.

        Raises:
            OSError: the fsync, or the restoring of a removed segment, failed.
        """
        with self._fd_lock:
            covered = self.appended
            # Duplicates, taken under the lock: release() may close the segment's own fd (and the number be
            # reused by another open) while the fsync runs outside the lock; a duplicate stays valid.
            todo = [(s, os.dup(self._fds[s])) for s in sorted(self._unsynced) if s in self._fds]
            self._unsynced.clear()
            created, self._created = self._created, False
        try:
            for _segment, fd in todo:
                os.fsync(fd)
            if self._restore_removed() or created:
                _fsync_directory(self.directory)
        except OSError:
            with self._fd_lock:
                self._unsynced.update(s for s, _ in todo if s in self._fds)
                self._created = True
            raise
        finally:
            for _segment, fd in todo:
                os.close(fd)
        return covered

    def _restore_removed(self) -> bool:
        """Give every open segment whose file was removed a new file with its contents (see the module docstring);
        whether any was."""
        restored_any = False
        with self._fd_lock:
            for segment, fd in list(self._fds.items()):
                if os.fstat(fd).st_nlink:
                    continue
                self.directory.mkdir(parents=True, exist_ok=True)
                path = self.directory / _segment_name(segment)
                restored = _copy_to(fd, path)
                self._fds[segment] = restored
                os.close(fd)
                self.restored += 1
                restored_any = True
                logger.warning(
                    "aiomemdb: journal segment %s was removed while the store was open; restored from the open file",
                    path,
                )
        return restored_any

    def release(self, upto: int) -> None:
        """Delete segments up to ``upto`` (a flush persisted their writes). Blocking."""
        with self._fd_lock:
            for segment in [s for s in self._fds if s <= upto]:
                os.close(self._fds.pop(segment))
                self._unsynced.discard(segment)
        try:
            for number, path in _segments(self.directory):
                if number <= upto:
                    path.unlink(missing_ok=True)
        except OSError as exc:
            raise PersistenceError(
                f"cannot remove journal segments of {self.directory}: {exc}", key=str(self.directory), cause=exc
            ) from exc

    def last_segment(self) -> int:
        """The number of the newest segment that exists (0 if none)."""
        with self._fd_lock:
            return self._segment - 1

    def close(self) -> None:
        """fsync and close every open segment. Blocking.

        Raises:
            PersistenceError: the final fsync failed.
        """
        try:
            self.sync()
        except OSError as exc:
            raise PersistenceError(f"journal fsync failed: {exc}", key=str(self.directory), cause=exc) from exc
        finally:
            with self._fd_lock:
                for fd in self._fds.values():
                    os.close(fd)
                self._fds.clear()


def _copy_to(fd: int, path: Path) -> int:
    """A new file at ``path`` (through a temporary name and a rename) holding what ``fd`` holds, fsynced; its fd."""
    tmp = path.with_name(path.name + ".restoring")  # not a segment name: read() never sees it
    new = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        offset = 0
        while offset < size:
            chunk = os.pread(fd, min(size - offset, 1 << 20), offset)
            if not chunk:
                break
            view = memoryview(chunk)
            while view:
                view = view[_write(new, view) :]
            offset += len(chunk)
        os.fsync(new)
        os.replace(tmp, path)
    except BaseException:
        os.close(new)
        tmp.unlink(missing_ok=True)
        raise
    return new


def _fsync_directory(directory: Path) -> None:
    """fsync a directory, so that the entries of files created in it survive a power cut (POSIX only)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
