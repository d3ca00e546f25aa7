"""One writer per directory: an exclusive lock on ``{root}/LOCK``, held while the store is open.

The SQLite / LMDB model. ``fcntl.flock`` (POSIX) locks the open file description, so a second open of the same
directory is refused whether it comes from another process or from this one; the kernel releases the lock when
the holder exits, however it exits, so a crash never leaves a stale lock. On Windows ``msvcrt.locking`` locks one
byte far past the contents. The holder writes ``{"pid": ..., "hostname": ...}`` (orjson) into the file, so the
refusal names it; the file is emptied, not removed, on release (removing it would let a waiting opener lock an
unlinked inode while a third one creates a new file). Read-only use (the command line's read commands) never
takes the lock.

Not covered: network file systems whose ``flock`` is local to each client (old NFS); there two hosts can each
hold "the" lock.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import orjson

from aiomemdb._exceptions import LockedError, PersistenceError

__all__ = ["DirectoryLock"]

_WINDOWS_LOCK_OFFSET = 1 << 20  # the locked byte lies past anything written, so the pid stays readable


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


def _holder(fd: int) -> tuple[int | None, str | None]:
    """The pid and host the holder wrote, or ``(None, None)`` if it has not written them (yet)."""
    try:
        raw = os.pread(fd, 4096, 0) if hasattr(os, "pread") else b""
        doc = orjson.loads(raw)
    except (OSError, orjson.JSONDecodeError):
        return None, None
    if not isinstance(doc, dict):
        return None, None
    pid, host = doc.get("pid"), doc.get("hostname")
    return (pid if isinstance(pid, int) else None), (host if isinstance(host, str) else None)


class DirectoryLock:
    """The exclusive lock of one store directory; :meth:`acquire` and :meth:`release` run in worker threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """This instance holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise; taking it again while held does nothing.

        Raises:
            LockedError: another store holds it (naming its pid and host).
            PersistenceError: the lock file cannot be created or written.
        """
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise PersistenceError(f"cannot open {self.path}: {exc}", key=str(self.path), cause=exc) from exc
        try:
            if not _try_lock(fd):
                pid, host = _holder(fd)
                who = f"process {pid}" if pid is not None else "another process (its pid is not written yet)"
                if host is not None and host != socket.gethostname():
                    who += f" on {host}"
                raise LockedError(
                    f"{self.path.parent} is in use by {who}: one writer per directory. Close that store first, "
                    "or use the read-only command line (aiomemdb ls/show/export/verify/stats) beside it.",
                    key=str(self.path),
                    pid=pid,
                )
            body = orjson.dumps({"pid": os.getpid(), "hostname": socket.gethostname()})
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, body)
        except PersistenceError:
            os.close(fd)
            raise
        except OSError as exc:
            os.close(fd)
            raise PersistenceError(f"cannot lock {self.path}: {exc}", key=str(self.path), cause=exc) from exc
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def lost(self) -> bool:
        """The lock file was removed (or replaced) since we locked it: our lock no longer guards the path."""
        if self._fd is None:
            return False
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return True
        mine = os.fstat(self._fd)
        return (on_disk.st_dev, on_disk.st_ino) != (mine.st_dev, mine.st_ino)

    def release(self) -> None:
        """Empty the file and unlock it; releasing an unheld lock does nothing."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
            _unlock(fd)
        except OSError as exc:
            raise PersistenceError(f"cannot release {self.path}: {exc}", key=str(self.path), cause=exc) from exc
        finally:
            os.close(fd)  # closing releases the lock in any case
