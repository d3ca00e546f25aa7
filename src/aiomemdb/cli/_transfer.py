"""What ``import`` reads and ``export`` writes: the accepted input formats, the batched import, the output file.

:func:`parse_import` recognises JSON lines (what ``export`` writes), a seed-style ``{session_id: session}``
blob and a save hook's snapshot, and validates every record as the store will before anything is written;
:func:`import_records` writes them through the core in flushed batches; :func:`write_output` writes an export
to stdout or atomically to a file.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from aiomemdb._codec import SESSIONS, check_collection, check_id
from aiomemdb._exceptions import AiomemdbError, PersistenceError, ValidationError
from aiomemdb._record import SessionRecord, encode_record
from aiomemdb.cli._progress import Progress
from aiomemdb.cli._sources import message, store
from aiomemdb.persistence._base import Persistence

__all__ = ["Record", "import_records", "parse_import", "write_output"]

Record = tuple[str, str, dict[str, Any]]  # (collection, id, data)

_BATCH = 500  # records per import batch: one flush each, so progress is real and a failure loses no batch


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


async def import_records(persistence: Persistence, records: Sequence[Record], *, preserve: bool) -> Counter[str]:
    """Write records in batches, one flush each; lazy, so only the records touched are read from storage."""
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for collection, record_id, data in records:
        groups.setdefault(collection, []).append((record_id, data))
    progress = Progress("importing", len(records), unit="records")
    done = 0
    try:
        async with store(persistence, lazy=True) as db:
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
            f"{message(exc)} ({done} of {len(records)} records were imported before it; importing again is safe)"
        ) from exc
    finally:
        progress.close()
    return Counter({collection: len(dict(items)) for collection, items in groups.items()})


def write_output(path: str, chunks: Iterable[bytes]) -> None:
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
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        # the message names the file the user gave, not the hidden temporary file beside it
        raise PersistenceError(f"cannot write {path}: {exc.strerror or exc}", key=path, cause=exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
