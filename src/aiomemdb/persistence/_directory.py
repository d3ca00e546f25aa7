"""DirectoryPersistence: one JSON file per record in a local directory (the embedded default).

Layout: ``{root}/v1/{collection}/{name}.json``, where the name is :func:`~aiomemdb.persistence._names.folded_name`
of the id (distinct on case-insensitive and normalising file systems); ``{root}/LAYOUT`` records that, and a
directory written with the first layout's names is renamed once by the first writer that opens it
(:mod:`~aiomemdb.persistence._layout`). ``{root}/LOCK`` is held while open (:mod:`~aiomemdb.persistence._dirlock`):
one writer per directory. Each write goes to a temporary file in the same directory, is fsynced, then
``os.replace``-d over the target, and the directory is fsynced once per flush, so a crash at any instant leaves
either the old or the new file, never half of one. Leftover temporary files (names starting with ``.tmp-``) are
ignored and removed on load. A folder removed while the store runs is created again by the next flush (a
``recreate`` event says so, and the lock is taken again). All file I/O runs in worker threads, never on the
event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from aiomemdb._codec import (
    SESSIONS,
    Envelope,
    check_collection,
    check_stored_session,
    decode_envelope,
    id_from_object_name,
    in_write_order,
)
from aiomemdb._exceptions import AiomemdbError, CorruptDataError, PersistenceError, ValidationError
from aiomemdb.persistence._base import Changeset, Key, Snapshot
from aiomemdb.persistence._dirlock import DirectoryLock
from aiomemdb.persistence._layout import migrate, read_layout, write_layout
from aiomemdb.persistence._names import LAYOUT, LEGACY_LAYOUT, folded_name, name_for

__all__ = ["DirectoryPersistence"]

logger = logging.getLogger("aiomemdb")

_TMP_PREFIX = ".tmp-"
_SUFFIX = ".json"


class DirectoryPersistence:
    """Persist a store as files under ``path``.

    Args:
        path: the root directory (created if missing).
        fsync: fsync files and directories (turn off only for throwaway data: tests, benchmarks).
        max_workers: worker threads used for one load or save.
        on_corrupt: ``"raise"`` (default): a corrupt file stops the load with
            :class:`~aiomemdb.CorruptDataError`. ``"quarantine"``: it is moved to ``quarantine/`` under
            ``path``, listed in :attr:`quarantined`, logged, and the rest loads.
        read_only: only read: ``open()`` creates nothing, takes no lock and renames nothing; ``save()``
            raises. For tools that look at a directory another store has open (the command line's reads).

    Attributes:
        quarantined: ``(file, reason)`` for every file moved aside by this instance.
        layout: the file-name layout of the directory (2; 1 for a directory not yet migrated), known after
            ``open()``.

    Raises:
        LockedError: (from ``open()``) another store, in this process or another, has the directory open.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: bool = True,
        max_workers: int = 4,
        on_corrupt: Literal["raise", "quarantine"] = "raise",
        read_only: bool = False,
    ) -> None:
        if on_corrupt not in ("raise", "quarantine"):
            raise ValidationError(f"on_corrupt must be 'raise' or 'quarantine', got {on_corrupt!r}")
        if not isinstance(read_only, bool):
            raise ValidationError(f"read_only must be a bool, got {read_only!r}")
        self.path = Path(path)
        self.root = self.path / "v1"
        self.read_only = read_only
        self.layout: int | None = None
        self._fsync = fsync
        self._max_workers = max(1, max_workers)
        self._on_corrupt = on_corrupt
        self._made: set[str] = set()
        self._lock = DirectoryLock(self.path / "LOCK")
        self._repair = threading.Lock()  # one thread at a time re-creates missing folders
        self._emit: Callable[[str, dict[str, Any]], None] = lambda kind, data: None
        self.quarantined: list[tuple[str, str]] = []

    def __repr__(self) -> str:
        return f"DirectoryPersistence({str(self.path)!r}{', read_only=True' if self.read_only else ''})"

    @property
    def single_writer(self) -> bool:
        """Writes assume no other writer: guaranteed by the directory lock (reported by ``stats()``)."""
        return True

    @property
    def conditional_writes(self) -> bool:
        """Files are replaced without comparing versions; the lock keeps other writers out."""
        return False

    def bind_events(self, emit: Callable[[str, dict[str, Any]], None]) -> None:
        """Receive the store's event emitter (``migrate`` and ``recreate`` events), called on its loop."""
        self._emit = emit

    def file_for(self, collection: str, record_id: str) -> Path:
        """Where a record lives."""
        return self.root / collection / f"{name_for(self._current_layout(), record_id)}{_SUFFIX}"

    def _current_layout(self) -> int:
        if self.layout is None:
            self.layout = read_layout(self.path)
        return self.layout

    async def open(self) -> None:
        """Take the directory's lock, bring its names to the current layout, create the folders.

        Read-only: only find out the layout. Calling it again while open does nothing.

        Raises:
            LockedError: another store holds the directory.
            PersistenceError, CorruptDataError: the directory cannot be created, locked or migrated.
        """
        if self.read_only:
            self.layout = await asyncio.to_thread(read_layout, self.path)
            return
        migrated = await asyncio.to_thread(self._open_for_writing)
        if migrated is not None:
            logger.warning("aiomemdb: %s: renamed %d files to layout %d names", self.path, migrated, LAYOUT)
            self._emit("migrate", {"path": str(self.path), "files": migrated, "layout": LAYOUT})

    def _open_for_writing(self) -> int | None:
        self._mkdir(self.path)
        self._lock.acquire()
        try:
            layout = read_layout(self.path)
            migrated = None
            if layout == LEGACY_LAYOUT:
                migrated = migrate(self.path, fsync=self._fsync)
            elif not (self.path / "LAYOUT").exists():
                write_layout(self.path, fsync=self._fsync)
            self._mkdir(self.root)
        except BaseException:
            self._lock.release()
            raise
        self.layout = LAYOUT
        return migrated

    @staticmethod
    def _mkdir(path: Path) -> None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PersistenceError(f"cannot create {path}: {exc}", key=str(path), cause=exc) from exc

    # -- loading -------------------------------------------------------------------------------------------

    async def load(self) -> Snapshot:
        """Read every record; a missing root is an empty store, an unreadable or corrupt file raises."""
        files = await asyncio.to_thread(self._list)
        if not files:
            return {}
        chunks = [files[i :: self._max_workers] for i in range(min(self._max_workers, len(files)))]
        parts = await asyncio.gather(*(asyncio.to_thread(self._read_many, chunk) for chunk in chunks))
        return in_write_order(item for part in parts for item in part)

    def _list(self) -> list[tuple[str, Path]]:
        if not self.root.is_dir():
            return []
        out: list[tuple[str, Path]] = []
        try:
            for coll_dir in sorted(self.root.iterdir()):
                if not coll_dir.is_dir():
                    continue
                check_collection(coll_dir.name)
                with os.scandir(coll_dir) as entries:
                    for entry in entries:
                        if entry.name.startswith(_TMP_PREFIX):
                            # an interrupted write: the target file (if any) is intact
                            with contextlib.suppress(FileNotFoundError):
                                os.unlink(entry.path)
                        elif entry.name.endswith(_SUFFIX):
                            out.append((coll_dir.name, Path(entry.path)))
        except AiomemdbError as exc:
            raise CorruptDataError(f"{self.root}: unexpected entry: {exc}", key=str(self.root), cause=exc) from exc
        except OSError as exc:
            raise PersistenceError(f"cannot list {self.root}: {exc}", key=str(self.root), cause=exc) from exc
        return out

    def _read_many(self, files: Iterable[tuple[str, Path]]) -> list[tuple[str, Envelope]]:
        out = []
        for collection, path in files:
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                continue  # deleted between listing and reading
            except OSError as exc:
                raise PersistenceError(f"cannot read {path}: {exc}", key=str(path), cause=exc) from exc
            try:
                env = self._decode(raw, path, collection)
            except CorruptDataError as exc:
                if self._on_corrupt == "raise":
                    raise
                self._quarantine(path, collection, exc)
                continue
            out.append((collection, env))
        return out

    def _decode(self, raw: bytes, path: Path, collection: str) -> Envelope:
        env = decode_envelope(raw, key=str(path), collection=collection)
        check_name(self._current_layout(), path.name[: -len(_SUFFIX)], env.id, key=str(path))
        if collection == SESSIONS:
            check_stored_session(env.id, env.data, key=str(path))
        return env

    def _quarantine(self, path: Path, collection: str, exc: CorruptDataError) -> None:
        target_dir = self.path / "quarantine" / "v1" / collection
        try:
            target_dir.mkdir(parents=True, exist_ok=True)
            os.replace(path, target_dir / path.name)
        except OSError as move_exc:
            raise PersistenceError(f"cannot quarantine {path}: {move_exc}", key=str(path), cause=move_exc) from exc
        self.quarantined.append((str(path), str(exc)))
        logger.warning("aiomemdb: quarantined corrupt %s: %s", path, exc)

    async def load_one(self, collection: str, record_id: str) -> dict[str, Any] | None:
        """Read one record, or ``None`` if it has no file."""
        path = self.file_for(collection, record_id)

        def read() -> dict[str, Any] | None:
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise PersistenceError(f"cannot read {path}: {exc}", key=str(path), cause=exc) from exc
            return self._decode(raw, path, collection).data

        return await asyncio.to_thread(read)

    # -- saving --------------------------------------------------------------------------------------------

    async def save(self, changeset: Changeset) -> None:
        """Write every upsert atomically and remove every delete, in worker threads.

        A folder that disappeared (the root included) is created again first, with a ``recreate`` event.

        Raises:
            PersistenceError: a file could not be written, or this instance is read-only.
            LockedError: the root was removed and another store took the directory meanwhile.
        """
        if self.read_only:
            raise PersistenceError(f"{self.path} was opened read-only", key=str(self.path))
        items: list[tuple[Key, bytes | None]] = [*changeset.upserts.items()]
        items.extend((key, None) for key in changeset.deletes)
        recreated: list[tuple[str, str | None]] = []  # (folder, collection; None for the root)
        try:
            await asyncio.to_thread(self._ensure_root, recreated)
            if not items:
                return None
            workers = min(self._max_workers, max(1, len(items) // 8))
            chunks = [items[i::workers] for i in range(workers)]
            touched_sets = await asyncio.gather(
                *(asyncio.to_thread(self._apply, chunk, recreated) for chunk in chunks)
            )
            if self._fsync:
                touched = set().union(*touched_sets)
                await asyncio.to_thread(self._fsync_dirs, touched)
        finally:
            for where, collection in recreated:
                self._emit("recreate", {"path": where, "collection": collection})
        return None

    def _ensure_root(self, recreated: list[tuple[str, str | None]]) -> None:
        """Re-create the root, its ``LAYOUT`` and its lock if the directory was removed under us."""
        if self.path.is_dir() and not self._lock.lost():
            return
        with self._repair:
            if self.path.is_dir() and not self._lock.lost():
                return
            logger.warning("aiomemdb: %s was removed while the store was open; creating it again", self.path)
            self._mkdir(self.path)
            self._lock.release()  # the old lock guards an unlinked file
            self._lock.acquire()
            write_layout(self.path, fsync=self._fsync)
            self._mkdir(self.root)
            self._made.clear()
            recreated.append((str(self.path), None))

    def _apply(self, items: list[tuple[Key, bytes | None]], recreated: list[tuple[str, str | None]]) -> set[Path]:
        touched: set[Path] = set()
        for (collection, record_id), data in items:
            path = self.file_for(collection, record_id)
            directory = path.parent
            if collection not in self._made:
                self._mkdir(directory)
                self._made.add(collection)
            try:
                if data is None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                else:
                    try:
                        self._write_atomic(path, data)
                    except FileNotFoundError:
                        # the folder was removed while the store ran: create it again and write once more
                        with self._repair:
                            if not directory.is_dir():
                                logger.warning("aiomemdb: %s was removed; creating it again", directory)
                                self._mkdir(directory)
                                recreated.append((str(directory), collection))
                        self._write_atomic(path, data)
            except OSError as exc:
                raise PersistenceError(f"cannot write {path}: {exc}", key=str(path), cause=exc) from exc
            touched.add(directory)
        return touched

    def _write_atomic(self, path: Path, data: bytes) -> None:
        tmp = path.parent / f"{_TMP_PREFIX}{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if self._fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, path)

    @staticmethod
    def _fsync_dirs(directories: Iterable[Path]) -> None:
        for directory in directories:
            try:
                fd = os.open(directory, os.O_RDONLY)
            except OSError as exc:
                raise PersistenceError(f"cannot open {directory}: {exc}", key=str(directory), cause=exc) from exc
            try:
                os.fsync(fd)
            except OSError as exc:
                raise PersistenceError(f"cannot fsync {directory}: {exc}", key=str(directory), cause=exc) from exc
            finally:
                os.close(fd)

    async def list_keys(self, collection: str | None = None) -> list[Key]:
        """Every stored key (of ``collection``), from file names; a hashed (long) name's id is read from its file."""

        def scan() -> list[Key]:
            keys: list[Key] = []
            for coll, path in self._list():
                if collection is not None and coll != collection:
                    continue
                rid = id_from_object_name(path.name[: -len(_SUFFIX)])
                if rid is None:
                    try:
                        raw = path.read_bytes()
                    except FileNotFoundError:
                        continue
                    except OSError as exc:
                        raise PersistenceError(f"cannot read {path}: {exc}", key=str(path), cause=exc) from exc
                    rid = self._decode(raw, path, coll).id
                keys.append((coll, rid))
            return keys

        return await asyncio.to_thread(scan)

    async def aclose(self) -> None:
        """Release the directory's lock (a read-only instance holds none); idempotent."""
        if self._lock.held:
            await asyncio.to_thread(self._lock.release)


def check_name(layout: int, name: str, record_id: str, *, key: str) -> None:
    """Check that a file's name is the one its id gets in ``layout`` (either layout's while not migrated).

    Raises:
        CorruptDataError: the name belongs to another id (a file copied or renamed by hand).
    """
    if name == name_for(layout, record_id) or (layout == LEGACY_LAYOUT and name == folded_name(record_id)):
        return
    raise CorruptDataError(f"{key}: object name does not match the id it contains ({record_id!r})", key=key)
