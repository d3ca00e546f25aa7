"""Which file names a directory holds (``{root}/LAYOUT``), and the one-time rename from layout 1 to layout 2.

``{root}/LAYOUT`` is ``{"format_version": 1, "layout": 2, "names": "folded"}`` (orjson). A directory without it
was written by a version before layout 2 (:mod:`aiomemdb.persistence._names`) if it has a ``v1/`` folder, and
is new otherwise. A writer that opens a layout-1 directory, holding its lock, renames every file to its layout-2
name (``os.rename`` within one folder: atomic), fsyncs each folder, and only then writes ``LAYOUT``. A crash in
between leaves a directory that still says layout 1 and holds both kinds of names; every file keeps exactly one
name (each id's layout-1 and layout-2 names decode to the same id), reads accept both in a layout-1 directory,
and the next writer finishes the renames.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

import orjson

from aiomemdb._codec import check_collection, decode_envelope, id_from_object_name
from aiomemdb._exceptions import AiomemdbError, CorruptDataError, PersistenceError
from aiomemdb.persistence._names import LAYOUT, LEGACY_LAYOUT, folded_name

__all__ = ["fsync_dir", "migrate", "read_layout", "write_layout"]

_SUFFIX = ".json"
_TMP_PREFIX = ".tmp-"


def read_layout(path: Path) -> int:
    """The layout of the store at ``path`` (``LAYOUT`` for a new, empty one).

    Raises:
        CorruptDataError: an unreadable ``LAYOUT`` file, or one written by a newer version.
    """
    marker = path / "LAYOUT"
    try:
        raw = marker.read_bytes()
    except FileNotFoundError:
        return LEGACY_LAYOUT if (path / "v1").is_dir() else LAYOUT
    except OSError as exc:
        raise PersistenceError(f"cannot read {marker}: {exc}", key=str(marker), cause=exc) from exc
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CorruptDataError(f"{marker}: not JSON ({exc})", key=str(marker), cause=exc) from exc
    layout = doc.get("layout") if isinstance(doc, dict) else None
    if not isinstance(layout, int) or layout < LEGACY_LAYOUT:
        raise CorruptDataError(f"{marker}: no valid 'layout' in {raw[:200]!r}", key=str(marker))
    if layout > LAYOUT:
        raise CorruptDataError(
            f"{marker}: layout {layout} was written by a newer aiomemdb (this one reads up to {LAYOUT}); upgrade",
            key=str(marker),
        )
    return layout


def write_layout(path: Path, *, fsync: bool) -> None:
    """Write ``{path}/LAYOUT`` atomically (temp file, fsync, rename, fsync of ``path``)."""
    marker = path / "LAYOUT"
    tmp = path / f"{_TMP_PREFIX}LAYOUT-{secrets.token_hex(4)}"
    body = orjson.dumps({"format_version": 1, "layout": LAYOUT, "names": "folded"})
    try:
        with open(tmp, "wb") as f:
            f.write(body)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, marker)
        if fsync:
            fsync_dir(path)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise PersistenceError(f"cannot write {marker}: {exc}", key=str(marker), cause=exc) from exc


def fsync_dir(directory: Path) -> None:
    """fsync a directory, so renames and creations in it are durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def migrate(path: Path, *, fsync: bool) -> int:
    """Rename every layout-1 file under ``{path}/v1`` to its layout-2 name, then write ``LAYOUT``.

    Returns the number of files renamed. The caller holds the directory lock.

    Raises:
        CorruptDataError: a file whose id cannot be read, or two files that claim one name.
        PersistenceError: a rename or fsync failed (nothing is lost: the next open resumes).
    """
    root = path / "v1"
    renamed = 0
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        for folder in folders:
            check_collection(folder.name)
            moved = 0
            for entry in sorted(folder.iterdir()):
                name = entry.name
                if name.startswith(_TMP_PREFIX) or not name.endswith(_SUFFIX):
                    continue
                stem = name[: -len(_SUFFIX)]
                record_id = id_from_object_name(stem)
                if record_id is None:  # a hashed (long) name: the id is inside
                    record_id = decode_envelope(entry.read_bytes(), key=str(entry), collection=folder.name).id
                target = folder / f"{folded_name(record_id)}{_SUFFIX}"
                if target.name == name:
                    continue
                if target.exists() and not os.path.samefile(target, entry):
                    raise CorruptDataError(
                        f"{entry} and {target} both hold record {record_id!r}; move one aside and reopen",
                        key=str(entry),
                    )
                os.rename(entry, target)
                moved += 1
            if moved and fsync:
                fsync_dir(folder)
            renamed += moved
    except AiomemdbError as exc:
        if isinstance(exc, PersistenceError):
            raise
        raise CorruptDataError(f"{root}: cannot migrate: {exc}", key=str(root), cause=exc) from exc
    except OSError as exc:
        raise PersistenceError(f"cannot migrate {root}: {exc}", key=str(root), cause=exc) from exc
    write_layout(path, fsync=fsync)
    return renamed
