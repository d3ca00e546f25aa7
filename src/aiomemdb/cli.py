"""The ``aiomemdb`` command line: look into, check, back up and migrate a store without writing code.

::

    aiomemdb ls ./sessions --user ada --limit 20
    aiomemdb show s3://my-bucket/agents SESSION_ID --runs 3
    aiomemdb export ./sessions -o backup.jsonl
    aiomemdb import s3://my-bucket/agents backup.jsonl       # or a seed-style {session_id: session} blob
    aiomemdb verify s3://my-bucket/agents --endpoint-url http://127.0.0.1:9000
    aiomemdb stats ./sessions

A store is a directory (:class:`~aiomemdb.DirectoryPersistence`) or ``s3://bucket[/prefix]``
(:class:`~aiomemdb.S3Persistence`, credentials from the environment as botocore finds them; they are never
printed). ``ls``, ``show`` and ``stats`` read through the async core and never write; ``import`` writes
through it (``durability="manual"``, one explicit flush per batch); ``verify`` and ``export`` read every stored
object directly, so one corrupt object is reported with its key instead of stopping the scan.

Exit status: 0 success; 1 ``verify`` found problems, or an operation failed (one line on stderr; the traceback
with ``--debug``); 2 a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import sys
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

import orjson

from aiomemdb._codec import SESSIONS, check_collection, check_id, check_stored_session, decode_envelope_full
from aiomemdb._core import AsyncInMemoryDb
from aiomemdb._exceptions import AiomemdbError, CorruptDataError, PersistenceError, ValidationError
from aiomemdb._record import SessionRecord, encode_record
from aiomemdb._stats import Event
from aiomemdb.persistence import DirectoryPersistence
from aiomemdb.persistence._base import Changeset, Key, Persistence, Snapshot

__all__ = ["main"]

T = TypeVar("T")
Record = tuple[str, str, dict[str, Any]]  # (collection, id, data)

_BATCH = 500  # records per import batch: one flush each, so progress is real and a failure loses no batch


# -- progress ----------------------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal (never in pipes or logs)."""

    def __init__(self, label: str, total: int | None = None, *, stream: IO[str] | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.enabled = self.stream.isatty()
        self.label, self.total, self.done = label, total, 0
        self._started = time.monotonic()
        self._drawn = 0.0

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more items done; redraws at most ten times a second (and at the end)."""
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._drawn >= 0.1 or self.done == self.total):
            self._drawn = now
            elapsed = now - self._started
            if self.total:
                share = min(1.0, self.done / self.total)
                text = f"{self.label} [{'#' * int(share * 30):<30}] {self.done}/{self.total} {elapsed:.1f}s"
            else:
                text = f"{self.label}... {elapsed:.1f}s"
            self.stream.write(f"\r{text}\x1b[K")
            self.stream.flush()

    def close(self) -> None:
        """Erase the bar, leaving the line to the command's own report."""
        if self.enabled and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


async def _waiting(label: str, work: Awaitable[T]) -> T:
    """Await ``work`` with an elapsed-time indicator (for steps that report no progress of their own)."""
    progress = Progress(label)
    if not progress.enabled:
        return await work

    async def tick() -> None:
        while True:
            progress.advance(0)
            await asyncio.sleep(0.1)

    ticker = asyncio.create_task(tick())
    try:
        return await work
    finally:
        ticker.cancel()
        progress.close()


async def _pool(fn: Callable[[T], Awaitable[None]], items: Sequence[T], workers: int, progress: Progress) -> None:
    """Run ``fn`` over ``items`` with at most ``workers`` in flight; the first failure cancels the rest."""
    queue = iter(items)

    async def worker() -> None:
        for item in queue:  # one shared iterator: each item is taken by exactly one worker
            await fn(item)
            progress.advance()

    failure: BaseException | None = None
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(workers, len(items))):
                group.create_task(worker())
    except ExceptionGroup as eg:
        failure = eg.exceptions[0]
    finally:
        progress.close()
    if failure is not None:
        raise failure


# -- where the data is: the persistence for the store, and a raw object scanner ------------------------------


def _persistence(args: argparse.Namespace) -> Persistence:
    """The persistence a store URL names; raises ValidationError for a malformed one."""
    url: str = args.store
    if url.startswith("s3://"):
        bucket, _, prefix = url[len("s3://") :].partition("/")
        from aiomemdb.persistence import S3Persistence  # ImportError names the s3 extra

        persistence: Persistence = S3Persistence(
            bucket, prefix, endpoint_url=args.endpoint_url, region_name=args.region
        )
        return persistence
    if "://" in url:
        raise ValidationError(f"unsupported store URL {url!r}: use a directory path or s3://bucket/prefix")
    if args.endpoint_url or args.region:
        raise ValidationError("--endpoint-url and --region only apply to s3:// stores")
    return DirectoryPersistence(url)


def _require_existing(persistence: Persistence) -> None:
    """Read commands never create a store: a directory that does not exist is a mistake worth reporting."""
    if isinstance(persistence, DirectoryPersistence) and not persistence.path.is_dir():
        raise PersistenceError(f"no store at {persistence.path}: not a directory", key=str(persistence.path))


class _ReadOnly:
    """A persistence for commands that only read: nothing is created on open and nothing can be saved."""

    def __init__(self, inner: Persistence) -> None:
        self.inner = inner

    async def open(self) -> None:
        if not isinstance(self.inner, DirectoryPersistence):  # its open() would create directories
            await self.inner.open()

    async def load(self) -> Snapshot:
        return await self.inner.load()

    async def load_one(self, collection: str, record_id: str) -> dict[str, Any] | None:
        return await self.inner.load_one(collection, record_id)

    async def save(self, changeset: Changeset) -> Mapping[Key, dict[str, Any]] | None:
        raise PersistenceError("this command is read-only")

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclasses.dataclass(frozen=True, slots=True)
class _Object:
    """One stored object found by a scan."""

    where: str  # as reported to the user: a file path or s3://bucket/key
    ref: str  # what the scanner reads: the file path or the bare S3 key
    collection: str
    name: str  # the object name (escaped id) without ".json"


class _Source(Protocol):
    workers: int

    async def list_objects(self, problems: list[tuple[str, str]]) -> list[_Object]: ...
    async def read(self, obj: _Object) -> bytes | None: ...


class _DirectorySource:
    """Lists and reads the files of a DirectoryPersistence root, as its load() does."""

    workers = 4

    def __init__(self, persistence: DirectoryPersistence) -> None:
        self.root = persistence.root

    async def list_objects(self, problems: list[tuple[str, str]]) -> list[_Object]:
        return await asyncio.to_thread(self._list, problems)

    def _list(self, problems: list[tuple[str, str]]) -> list[_Object]:
        if not self.root.is_dir():
            return []
        found: list[_Object] = []
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
                        found.append(_Object(str(path), str(path), folder.name, path.name[: -len(".json")]))
        except OSError as exc:
            raise PersistenceError(f"cannot list {self.root}: {exc}", key=str(self.root), cause=exc) from exc
        return found

    async def read(self, obj: _Object) -> bytes | None:
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

    async def list_objects(self, problems: list[tuple[str, str]]) -> list[_Object]:
        found: list[_Object] = []
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
                    found.append(_Object(where, key, collection, name))
        except Exception as exc:
            raise self._error("LIST", self.root, exc) from exc
        return found

    async def read(self, obj: _Object) -> bytes | None:
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


def _check_object(obj: _Object, raw: bytes) -> tuple[str, int]:
    """Decode one stored object as a load would; returns ``(id, seq)`` or raises CorruptDataError."""
    env = decode_envelope_full(raw, key=obj.where, collection=obj.collection, name=obj.name)
    if obj.collection == SESSIONS:
        check_stored_session(env.id, env.data, key=obj.where)
    return env.id, env.seq


# -- the store -------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _store(
    persistence: Persistence, *, lazy: bool = False, on_event: Callable[[Event], None] | None = None
) -> AsyncIterator[AsyncInMemoryDb]:
    db = AsyncInMemoryDb(persistence=persistence, durability="manual", lazy=lazy, on_event=on_event)
    try:
        await (db.start() if lazy else _waiting("loading", db.start()))
    except BaseException:
        # A store whose start failed leaves its persistence open (an S3 client, say): release it here.
        with contextlib.suppress(Exception):
            await persistence.aclose()
        raise
    try:
        yield db
    finally:
        await db.aclose()


# -- commands --------------------------------------------------------------------------------------------


def _iso(ts: Any) -> str:
    if not isinstance(ts, int | float) or isinstance(ts, bool):
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cell(value: Any, width: int = 0) -> str:
    """Text for a table cell: control characters from stored data are escaped, never sent to the terminal."""
    text = "-" if value is None else str(value)
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    return text[: width - 1] + "…" if width and len(text) > width else text


def _row(session: Mapping[str, Any]) -> dict[str, Any]:
    data = session.get("session_data")
    name = data.get("session_name") if isinstance(data, Mapping) else None
    return {
        "session_id": session.get("session_id"),
        "user_id": session.get("user_id"),
        "session_type": session.get("session_type"),
        "agent_id": session.get("agent_id"),
        "team_id": session.get("team_id"),
        "workflow_id": session.get("workflow_id"),
        "runs": len(session.get("runs") or ()),
        "created_at": session.get("created_at"),
        "updated_at": session.get("updated_at"),
        "version": session.get("version"),
        "session_name": name,
    }


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in (header, *rows)
    )


def cmd_ls(args: argparse.Namespace, persistence: Persistence) -> int:
    _require_existing(persistence)

    async def run() -> tuple[list[dict[str, Any]], int]:
        async with _store(_ReadOnly(persistence)) as db:
            return await db.get_sessions(
                user_id=args.user,
                agent_id=args.agent,
                team_id=args.team,
                workflow_id=args.workflow,
                session_type=args.type,
                sort_by=args.sort,
                sort_order=args.order,
                limit=args.limit,
            )

    sessions, total = asyncio.run(run())
    rows = [_row(s) for s in sessions]
    if args.json:
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return 0
    header = ("ID", "USER", "TYPE", "COMPONENT", "RUNS", "UPDATED", "NAME")
    cells = [
        (
            _cell(r["session_id"]),
            _cell(r["user_id"]),
            _cell(r["session_type"]),
            _cell(r["agent_id"] or r["team_id"] or r["workflow_id"]),
            str(r["runs"]),
            _iso(r["updated_at"]),
            _cell(r["session_name"], 40),
        )
        for r in rows
    ]
    print(_table(header, cells))
    if total > len(rows):
        print(f"({len(rows)} of {total} sessions shown)", file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace, persistence: Persistence) -> int:
    _require_existing(persistence)

    async def run() -> dict[str, Any] | None:
        async with _store(_ReadOnly(persistence), lazy=True) as db:  # lazy: one object read, not the store
            return await db.get_session(args.session_id, runs_limit=args.runs)

    session = asyncio.run(run())
    if session is None:
        raise LookupError(f"no session {args.session_id!r} in {args.store}")
    print(orjson.dumps(session, option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_stats(args: argparse.Namespace, persistence: Persistence) -> int:
    _require_existing(persistence)
    loaded: list[Event] = []

    async def run() -> dict[str, Any]:
        async with _store(_ReadOnly(persistence), on_event=loaded.append) as db:
            return dataclasses.asdict(db.stats())

    stats = asyncio.run(run())
    stats["load_duration"] = next((e.data.get("duration") for e in loaded if e.kind == "load"), None)
    if args.json:
        print(orjson.dumps(stats, option=orjson.OPT_INDENT_2).decode())
        return 0
    shown = {"store": args.store, **stats}
    shown["records"] = ", ".join(f"{k}={v}" for k, v in sorted(stats["records"].items())) or "-"
    if stats["load_duration"] is not None:
        shown["load_duration"] = f"{stats['load_duration']:.3f}s"
    width = max(map(len, shown))
    for key, value in shown.items():
        print(f"{key.ljust(width)}  {_cell(value)}")
    return 0


async def _scan(
    persistence: Persistence,
    args: argparse.Namespace,
    label: str,
    handle: Callable[[_Object, bytes], None],
    *,
    unreadable: list[tuple[str, str]] | None = None,
) -> tuple[int, list[tuple[str, str]]]:
    """Read every stored object and hand it to ``handle``.

    Returns the number of objects and the layout problems met while listing. With ``unreadable`` given, an
    object that cannot be read is recorded there and the scan goes on; otherwise the error stops it.
    """
    problems: list[tuple[str, str]] = []
    async with _source(persistence, args) as source:
        objects = await _waiting("listing", source.list_objects(problems))

        async def one(obj: _Object) -> None:
            try:
                raw = await source.read(obj)
            except PersistenceError as exc:
                if unreadable is None:
                    raise
                unreadable.append((obj.where, _reason(obj.where, exc)))
                return
            if raw is not None:
                handle(obj, raw)

        await _pool(one, objects, source.workers, Progress(label, len(objects)))
    return len(objects), problems


def _reason(where: str, exc: BaseException) -> str:
    """The cause of ``exc`` without the key it starts with (the key is printed beside it)."""
    message = " ".join(str(exc).split())
    return message[len(where) :].lstrip(": ") if message.startswith(where) else message


def cmd_verify(args: argparse.Namespace, persistence: Persistence) -> int:
    _require_existing(persistence)
    bad: list[tuple[str, str]] = []

    def check(obj: _Object, raw: bytes) -> None:
        try:
            _check_object(obj, raw)
        except AiomemdbError as exc:
            bad.append((obj.where, _reason(obj.where, exc)))

    count, problems = asyncio.run(_scan(persistence, args, "verifying", check, unreadable=bad))
    problems = sorted(problems + bad)
    for where, reason in problems:
        print(f"CORRUPT {where}: {reason}")
    if problems:
        print(f"{len(problems)} problem(s) among {count} objects of {args.store}", file=sys.stderr)
        return 1
    print(f"ok: all {count} objects of {args.store} are readable")
    return 0


def _counts(counter: Mapping[str, int]) -> str:
    return ", ".join(f"{name}: {n}" for name, n in sorted(counter.items())) or "nothing"


def cmd_export(args: argparse.Namespace, persistence: Persistence) -> int:
    _require_existing(persistence)
    found: list[tuple[int, str, str, bytes]] = []  # (seq, collection, id, the stored object)

    def keep(obj: _Object, raw: bytes) -> None:
        record_id, seq = _check_object(obj, raw)
        found.append((seq, obj.collection, record_id, raw))

    _, problems = asyncio.run(_scan(persistence, args, "exporting", keep))
    if problems:
        where, reason = problems[0]
        raise CorruptDataError(f"{where}: {reason} (aiomemdb verify lists every problem)", key=where)
    found.sort(key=lambda item: item[:3])  # write order, so an import keeps "the later write first"

    def lines() -> Iterator[bytes]:
        for _, collection, record_id, raw in found:
            data = decode_envelope_full(raw, key=record_id).data
            yield orjson.dumps({"collection": collection, "id": record_id, "data": data}) + b"\n"

    _write_output(args.output, lines())
    target = "stdout" if args.output == "-" else args.output
    counts = Counter(collection for _, collection, _, _ in found)
    print(f"exported {len(found)} records ({_counts(counts)}) to {target}", file=sys.stderr)
    return 0


def _write_output(path: str, chunks: Iterable[bytes]) -> None:
    """Write to stdout, or to a file atomically (a temp file renamed into place once complete)."""
    if path == "-":
        for chunk in chunks:
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as out:
            for chunk in chunks:
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def parse_import(raw: bytes, name: str) -> tuple[str, list[Record]]:
    """Parse and validate an import file; returns its format and its records, in file order.

    Accepted: JSON lines of ``{"collection", "id", "data"}`` (what ``export`` writes); a seed-style single
    JSON object ``{session_id: session}`` (``json.dumps(my_sessions, default=str)``); the snapshot that
    :class:`~aiomemdb.HookPersistence` hands to a save hook.

    Raises:
        ValidationError: the input is malformed; the message names the line or session.
    """
    whole: Any = None
    if raw.strip():
        try:
            whole = orjson.loads(raw)
        except orjson.JSONDecodeError:
            whole = None  # several lines
    if isinstance(whole, dict) and not _is_line(whole):
        if "format_version" in whole and "collections" in whole:
            return "snapshot", _from_snapshot(whole, name)
        return "seed blob", [_checked(SESSIONS, sid, s, f"{name}[{sid!r}]") for sid, s in whole.items()]
    records: list[Record] = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{name} line {number}"
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ValidationError(
                f"{where}: not JSON ({exc}); expected JSON lines or one {{session_id: session}} object"
            ) from exc
        if not isinstance(obj, dict) or not _is_line(obj):
            raise ValidationError(f"{where}: expected an object with 'collection', 'id' and 'data'")
        records.append(_checked(obj["collection"], obj["id"], obj["data"], where))
    return "JSON lines", records


def _is_line(obj: Mapping[str, Any]) -> bool:
    return {"collection", "id", "data"} <= obj.keys() and isinstance(obj["collection"], str)


def _from_snapshot(snapshot: Mapping[str, Any], name: str) -> list[Record]:
    if snapshot["format_version"] != 1 or not isinstance(snapshot["collections"], Mapping):
        raise ValidationError(f"{name}: not a format_version 1 snapshot")
    return [
        _checked(collection, rid, data, f"{name}[{collection!r}][{rid!r}]")
        for collection, records in snapshot["collections"].items()
        for rid, data in (records.items() if isinstance(records, Mapping) else [("?", records)])
    ]


def _checked(collection: Any, record_id: Any, data: Any, where: str) -> Record:
    """Validate one record as the store will, so that a bad record stops the import before anything is written."""
    try:
        check_collection(collection)
        check_id(record_id, what="id")
        if not isinstance(data, dict):
            raise ValidationError(f"the record must be a JSON object, got {type(data).__name__}")
        if collection == SESSIONS:
            data.setdefault("session_id", record_id)
            if data["session_id"] != record_id:
                raise ValidationError(f"session_id {data['session_id']!r} differs from its id {record_id!r}")
            SessionRecord.build(data, now=0, seq=0, previous=None, preserve_timestamps=True)
        else:
            encode_record(data, what="data")
    except ValidationError as exc:
        raise ValidationError(f"{where}: {exc}") from exc
    return collection, record_id, data


async def _import(persistence: Persistence, records: Sequence[Record], *, preserve: bool) -> Counter[str]:
    """Write records in batches, one flush each; lazy, so only the records touched are read from storage."""
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for collection, record_id, data in records:
        groups.setdefault(collection, []).append((record_id, data))
    progress = Progress("importing", len(records))
    done = 0
    try:
        async with _store(persistence, lazy=True) as db:
            for collection, items in groups.items():
                for start in range(0, len(items), _BATCH):
                    batch = items[start : start + _BATCH]
                    if collection == SESSIONS:
                        await db.upsert_sessions([data for _, data in batch], preserve_updated_at=preserve)
                    else:
                        await db.put_records(collection, dict(batch))
                    await db.flush()
                    done += len(batch)
                    progress.advance(len(batch))
    except AiomemdbError as exc:
        raise AiomemdbError(
            f"{_message(exc)} ({done} of {len(records)} records were imported before it; importing again is safe)"
        ) from exc
    finally:
        progress.close()
    return Counter({collection: len(dict(items)) for collection, items in groups.items()})


def cmd_import(args: argparse.Namespace, persistence: Persistence) -> int:
    name = "stdin" if args.file == "-" else args.file
    raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    kind, records = parse_import(raw, name)
    counts = asyncio.run(_import(persistence, records, preserve=args.preserve_timestamps))
    print(f"imported {sum(counts.values())} records ({_counts(counts)}) from {name} ({kind}) into {args.store}")
    return 0


# -- argument parsing ------------------------------------------------------------------------------------


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse


def _add_common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # Defined on the main parser and on every command, so options work before or after the command name;
    # SUPPRESS keeps a command's parser from resetting what was given before it.
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument("--endpoint-url", metavar="URL", default=default, help="S3 endpoint (MinIO, R2, moto, ...)")
    parser.add_argument("--region", default=default, help="S3 region (default: from the environment)")
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="show the traceback of an error",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``aiomemdb`` command."""
    from aiomemdb import __version__

    parser = argparse.ArgumentParser(
        prog="aiomemdb",
        description="Inspect, verify, export and import an aiomemdb store.",
        epilog="STORE is a directory path or s3://bucket/prefix (credentials from the environment, as botocore "
        "finds them). Exit status: 0 ok, 1 problems found or an operation failed, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"aiomemdb {__version__}")
    _add_common(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common, suppress=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, summary: str, handler: Callable[[argparse.Namespace, Persistence], int]) -> Any:
        sub = commands.add_parser(name, help=summary, description=summary, parents=[common])
        sub.add_argument("store", metavar="STORE", help="a directory path or s3://bucket/prefix")
        sub.set_defaults(handler=handler)
        return sub

    ls = command("ls", "list sessions as a table (or JSON)", cmd_ls)
    for flag, help_ in (("user", "user_id"), ("agent", "agent_id"), ("team", "team_id"), ("workflow", "workflow_id")):
        ls.add_argument(f"--{flag}", metavar="ID", help=f"only sessions with this {help_}")
    ls.add_argument("--type", metavar="TYPE", help="only sessions of this session_type (agent, team, workflow)")
    ls.add_argument("--limit", type=_int_at_least(1), help="show at most this many sessions")
    ls.add_argument("--sort", choices=("updated_at", "created_at", "session_id"), default="updated_at")
    ls.add_argument("--order", choices=("desc", "asc"), default="desc", help="sort order (default: newest first)")
    ls.add_argument("--json", action="store_true", help="print a JSON array instead of a table")

    show = command("show", "print one session as JSON", cmd_show)
    show.add_argument("session_id", metavar="SESSION_ID")
    show.add_argument("--runs", type=_int_at_least(0), metavar="N", help="only the last N runs")

    export = command("export", "write every record as JSON lines", cmd_export)
    export.add_argument("-o", "--output", default="-", metavar="FILE", help="output file (default: stdout)")

    import_ = command("import", "read records from JSON lines or a {session_id: session} blob", cmd_import)
    import_.add_argument("file", nargs="?", default="-", metavar="FILE", help="input file (default: stdin)")
    import_.add_argument(
        "--preserve-timestamps",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep the records' created_at/updated_at (default) or stamp them now",
    )

    command("verify", "read every stored object and report the corrupt ones", cmd_verify)

    stats = command("stats", "load the store and print its counters", cmd_stats)
    stats.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _message(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, AiomemdbError | OSError | LookupError | ImportError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _fail(args: argparse.Namespace, exc: BaseException) -> int:
    if getattr(args, "debug", False):
        traceback.print_exception(exc)
    else:
        print(f"aiomemdb: error: {_message(exc)}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (argparse exits with 2 on a usage error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error("a command is required")
    try:
        persistence = _persistence(args)
    except ValidationError as exc:
        parser.error(str(exc))
    except ImportError as exc:
        return _fail(args, exc)
    try:
        return int(args.handler(args, persistence))
    except KeyboardInterrupt:
        print("aiomemdb: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`aiomemdb ls | head`): stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        return _fail(args, exc)
