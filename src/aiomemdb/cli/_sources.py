"""Where a command's data is: the persistence a store URL names, the store opened over it, and a raw scanner.

:func:`persistence_for` turns ``STORE`` (a directory path or ``s3://bucket/prefix``) into a persistence;
:class:`ReadOnly` wraps it for the commands that must not write, and :func:`store` opens the async core over
it. :func:`scan` bypasses the core: it lists and reads every stored object itself (the directory's files, or
LIST + GET with an S3 client of its own), so ``verify`` can report each corrupt object with its key where a
load stops at the first. :func:`reason` and :func:`message` put an error on one line for the user.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Protocol

from aiomemdb._async import AsyncInMemoryDb
from aiomemdb._codec import SESSIONS, Envelope, check_collection, check_stored_session, decode_envelope
from aiomemdb._exceptions import AiomemdbError, CorruptDataError, PersistenceError, ValidationError
from aiomemdb._io._journal import Journal, has_segments
from aiomemdb._kernel import parse_entry
from aiomemdb._stats import Event
from aiomemdb.cli._progress import Progress, pool, waiting
from aiomemdb.persistence import DirectoryPersistence
from aiomemdb.persistence._base import Changeset, Key, Persistence, Snapshot
from aiomemdb.persistence._directory import check_name
from aiomemdb.persistence._layout import read_layout
from aiomemdb.persistence._names import LEGACY_LAYOUT

__all__ = [
    "Object",
    "ReadOnly",
    "check_object",
    "decode_object",
    "journal_entries",
    "journal_of",
    "message",
    "persistence_for",
    "reason",
    "require_existing",
    "scan",
    "store",
]


# -- the store a command names, and the core over it -----------------------------------------------------


#: The commands that write; every other one opens its persistence read-only (no lock, no S3 probe).
WRITING_COMMANDS = frozenset({"import"})


def persistence_for(args: argparse.Namespace) -> Persistence:
    """The persistence a store URL names; raises ValidationError for a malformed one.

    Read commands get a ``read_only`` persistence: it takes no directory lock (so it works beside an open
    store), renames nothing, and writes no conditional-write probe to S3.
    """
    url: str = args.store
    read_only = args.command not in WRITING_COMMANDS
    if url.startswith("s3://"):
        bucket, _, prefix = url[len("s3://") :].partition("/")
        from aiomemdb.persistence import S3Persistence  # ImportError names the s3 extra

        persistence: Persistence = S3Persistence(
            bucket, prefix, endpoint_url=args.endpoint_url, region_name=args.region, read_only=read_only
        )
        return persistence
    if "://" in url:
        raise ValidationError(f"unsupported store URL {url!r}: use a directory path or s3://bucket/prefix")
    if args.endpoint_url or args.region:
        raise ValidationError("--endpoint-url and --region only apply to s3:// stores")
    return DirectoryPersistence(url, read_only=read_only)


def require_existing(persistence: Persistence) -> None:
    """Read commands never create a store: a directory that does not exist is a mistake worth reporting."""
    if isinstance(persistence, DirectoryPersistence) and not persistence.path.is_dir():
        raise PersistenceError(f"no store at {persistence.path}: not a directory", key=str(persistence.path))


class ReadOnly:
    """A persistence for commands that only read: nothing is created on open and nothing can be saved."""

    def __init__(self, inner: Persistence) -> None:
        self.inner = inner

    async def open(self) -> None:
        if isinstance(self.inner, DirectoryPersistence) and not self.inner.read_only:
            return  # its open() would create directories and take the lock
        await self.inner.open()

    async def load(self) -> Snapshot:
        return await self.inner.load()

    async def load_one(self, collection: str, record_id: str) -> dict[str, Any] | None:
        return await self.inner.load_one(collection, record_id)

    async def list_keys(self, collection: str | None = None) -> list[Key]:
        return await self.inner.list_keys(collection)

    async def save(self, changeset: Changeset) -> Mapping[Key, dict[str, Any]] | None:
        raise PersistenceError("this command is read-only")

    @property
    def quarantined(self) -> Sequence[tuple[str, str]]:
        return self.inner.quarantined

    async def aclose(self) -> None:
        await self.inner.aclose()


def journal_of(persistence: Persistence) -> Path | None:
    """The journal a store over ``persistence`` replays (a directory store's ``journal/``; S3 names none)."""
    inner = persistence.inner if isinstance(persistence, ReadOnly) else persistence
    return inner.path / "journal" if isinstance(inner, DirectoryPersistence) else None


def journal_entries(journal: Path | None) -> tuple[int, list[tuple[str, str]]]:
    """How many unreplayed entries the journal holds, and the unreadable ones as ``(segment:offset, why)``.

    Blocking; read-only (a torn tail is skipped, not cut off).
    """
    if journal is None or not has_segments(journal):
        return 0, []
    try:
        entries = Journal(journal, read_only=True).read()
    except CorruptDataError as exc:
        return 0, [(exc.key, str(exc))]
    problems: list[tuple[str, str]] = []
    for where, entry in entries:
        try:
            parse_entry(entry, where)
        except CorruptDataError as exc:
            problems.append((where, str(exc)))
    return len(entries), problems


@contextlib.asynccontextmanager
async def store(
    persistence: Persistence,
    *,
    lazy: bool = False,
    on_event: Callable[[Event], None] | None = None,
    read_only_journal: Path | None = None,
) -> AsyncIterator[AsyncInMemoryDb]:
    """The async core over ``persistence`` (``durability="manual"``), closed on exit; a full load shows its time.

    ``read_only_journal``: replay that journal into memory (so what a read command shows includes writes a
    journaled writer made but did not flush yet), without flushing or truncating it; a note on stderr says so.
    """
    db = AsyncInMemoryDb(
        persistence=persistence, durability="manual", lazy=lazy, on_event=on_event, journal_path=read_only_journal
    )
    db._rt.read_only = read_only_journal is not None
    try:
        await (db.start() if lazy else waiting("loading", db.start()))
    except BaseException:
        # A store whose start failed leaves its persistence open (an S3 client, say): release it here.
        with contextlib.suppress(Exception):
            await persistence.aclose()
        raise
    if db._rt.replayed:
        print(
            f"note: including {db._rt.replayed} journaled write(s) from {read_only_journal} "
            "that are not flushed to the store's objects yet",
            file=sys.stderr,
        )
    try:
        yield db
    finally:
        await db.aclose()


# -- the raw object scanner ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Object:
    """One stored object found by a scan."""

    where: str  # as reported to the user: a file path or s3://bucket/key
    ref: str  # what the scanner reads: the file path or the bare S3 key
    collection: str
    name: str  # the object name (escaped id) without ".json"
    layout: int = LEGACY_LAYOUT  # the naming scheme it was written with (S3 keys keep layout 1)


class _Source(Protocol):
    workers: int

    async def list_objects(self, problems: list[tuple[str, str]]) -> list[Object]: ...
    async def read(self, obj: Object) -> bytes | None: ...


class _DirectorySource:
    """Lists and reads the files of a DirectoryPersistence root, as its load() does."""

    workers = 4

    def __init__(self, persistence: DirectoryPersistence) -> None:
        self.path = persistence.path
        self.root = persistence.root

    async def list_objects(self, problems: list[tuple[str, str]]) -> list[Object]:
        return await asyncio.to_thread(self._list, problems)

    def _list(self, problems: list[tuple[str, str]]) -> list[Object]:
        layout = read_layout(self.path)
        if not self.root.is_dir():
            return []
        found: list[Object] = []
        try:
            for folder in sorted(self.root.iterdir()):
                if not folder.is_dir():
                    continue
                try:
                    check_collection(folder.name)
                except ValidationError:
                    problems.append((str(folder), "not a collection directory; the store refuses to load it"))
                    continue
                for path in sorted(folder.iterdir()):
                    if path.name.endswith(".json") and not path.name.startswith(".tmp-"):
                        name = path.name[: -len(".json")]
                        found.append(Object(str(path), str(path), folder.name, name, layout))
        except OSError as exc:
            raise PersistenceError(f"cannot list {self.root}: {exc}", key=str(self.root), cause=exc) from exc
        return found

    async def read(self, obj: Object) -> bytes | None:
        def read() -> bytes | None:
            try:
                return Path(obj.ref).read_bytes()
            except FileNotFoundError:
                return None  # deleted since the listing
            except OSError as exc:
                raise PersistenceError(f"cannot read {obj.where}: {exc}", key=obj.where, cause=exc) from exc

        return await asyncio.to_thread(read)


class _S3Source:
    """Lists and GETs the objects under an S3Persistence's ``{prefix}/v1/`` with a client of its own."""

    workers = 16

    def __init__(self, persistence: Any, client: Any) -> None:
        self.bucket: str = persistence.bucket
        self.root = f"{persistence.prefix}/v1/" if persistence.prefix else "v1/"
        self.client = client

    def _error(self, what: str, key: str, exc: Exception) -> PersistenceError:
        response: Mapping[str, Any] = getattr(exc, "response", None) or {}
        if response:  # a ClientError: report S3's code and message, never request details (they carry signatures)
            error = response.get("Error", {})
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            cause = f"{error.get('Code', 'error')} (HTTP {status}): {error.get('Message', '')}".rstrip(": ")
        else:
            cause = f"{type(exc).__name__}: {exc}"
        where = f"s3://{self.bucket}/{key}"
        return PersistenceError(f"S3 {what} {where} failed: {cause}", key=where, cause=exc)

    async def list_objects(self, problems: list[tuple[str, str]]) -> list[Object]:
        found: list[Object] = []
        try:
            async for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.root
            ):
                for entry in page.get("Contents", ()):
                    key: str = entry["Key"]
                    rest = key[len(self.root) :]
                    if not rest.endswith(".json"):
                        continue  # the store skips non-record objects too (with a warning)
                    collection, sep, name = rest[: -len(".json")].partition("/")
                    where = f"s3://{self.bucket}/{key}"
                    try:
                        check_collection(collection)
                    except ValidationError:
                        sep = ""
                    if not sep or not name or "/" in name:
                        problems.append((where, "not a {collection}/{name}.json record key; the store refuses it"))
                        continue
                    found.append(Object(where, key, collection, name))
        except Exception as exc:
            raise self._error("LIST", self.root, exc) from exc
        return found

    async def read(self, obj: Object) -> bytes | None:
        try:
            response = await self.client.get_object(Bucket=self.bucket, Key=obj.ref)
            async with response["Body"] as stream:
                data: bytes = await stream.read()
        except Exception as exc:
            if (getattr(exc, "response", None) or {}).get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None  # deleted since the listing
            raise self._error("GET", obj.ref, exc) from exc
        return data


@contextlib.asynccontextmanager
async def _source(persistence: Persistence, args: argparse.Namespace) -> AsyncIterator[_Source]:
    if isinstance(persistence, DirectoryPersistence):
        yield _DirectorySource(persistence)
        return
    from aiobotocore.session import get_session
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": 5},
        max_pool_connections=_S3Source.workers,
        connect_timeout=10,
        read_timeout=60,
    )
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            get_session().create_client("s3", endpoint_url=args.endpoint_url, region_name=args.region, config=config)
        )
        yield _S3Source(persistence, client)


def decode_object(obj: Object, raw: bytes) -> Envelope:
    """Decode one stored object as a load would (its name checked in its layout), or raise CorruptDataError."""
    env = decode_envelope(raw, key=obj.where, collection=obj.collection)
    check_name(obj.layout, obj.name, env.id, key=obj.where)
    if obj.collection == SESSIONS:
        check_stored_session(env.id, env.data, key=obj.where)
    return env


def check_object(obj: Object, raw: bytes) -> tuple[str, int]:
    """Decode one stored object as a load would; returns ``(id, seq)`` or raises CorruptDataError."""
    env = decode_object(obj, raw)
    return env.id, env.seq


async def scan(
    persistence: Persistence,
    args: argparse.Namespace,
    label: str,
    handle: Callable[[Object, bytes], None],
    *,
    unreadable: list[tuple[str, str]] | None = None,
) -> tuple[int, list[tuple[str, str]]]:
    """Read every stored object and hand it to ``handle``.

    Returns the number of objects and the layout problems met while listing. With ``unreadable`` given, an
    object that cannot be read is recorded there and the scan goes on; otherwise the error stops it.
    """
    problems: list[tuple[str, str]] = []
    async with _source(persistence, args) as source:
        objects = await waiting("listing", source.list_objects(problems))

        async def one(obj: Object) -> None:
            try:
                raw = await source.read(obj)
            except PersistenceError as exc:
                if unreadable is None:
                    raise
                unreadable.append((obj.where, reason(obj.where, exc)))
                return
            if raw is not None:
                handle(obj, raw)

        await pool(one, objects, source.workers, Progress(label, len(objects), unit="objects"))
    return len(objects), problems


# -- errors on one line --------------------------------------------------------------------------------------


def reason(where: str, exc: BaseException) -> str:
    """The cause of ``exc`` without the key it starts with (the key is printed beside it)."""
    text = " ".join(str(exc).split())
    return text[len(where) :].lstrip(": ") if text.startswith(where) else text


def message(exc: BaseException) -> str:
    """``exc`` on one line: the library's and the OS's messages as they are, other errors led by their type."""
    text = " ".join(str(exc).split())
    if isinstance(exc, AiomemdbError | OSError | LookupError | ImportError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
