"""What a command refuses before it reads anything: a folder that is not a store, a malformed URL, a bad -o.

A directory **is an aiomemdb store** when it holds a ``v1/`` folder (a :class:`~aiomemdb.DirectoryPersistence`
creates it when a store opens) that is empty or holds at least one collection folder (a name matching
``[a-z][a-z0-9_]*``). An empty directory, the ``v1/`` folder itself, a collection folder, the system's temp
directory or a source tree are not stores: the read commands say so and exit 1, rather than list nothing.
A ``v1/`` folder with a stray entry beside real collections is still a store; ``verify`` names the entry.
"""

from __future__ import annotations

import os
from pathlib import Path

from aiomemdb._codec import check_collection
from aiomemdb._exceptions import PersistenceError, ValidationError
from aiomemdb.persistence import DirectoryPersistence
from aiomemdb.persistence._base import Persistence

__all__ = ["check_output", "require_store", "s3_hint"]


def _is_collection(entry: Path) -> bool:
    try:
        check_collection(entry.name)
    except ValidationError:
        return False
    return entry.is_dir()


def require_store(persistence: Persistence) -> None:
    """Refuse a directory that does not exist or is not a store (see the module docstring); S3 passes.

    Raises:
        PersistenceError: naming the directory, why it is not a store, and the store it may have meant.
    """
    if not isinstance(persistence, DirectoryPersistence):
        return
    path = persistence.path
    if not path.is_dir():
        raise PersistenceError(f"no store at {path}: not a directory", key=str(path))
    root = path / "v1"
    try:
        if root.is_dir():
            entries = list(root.iterdir())
            if not entries or any(_is_collection(entry) for entry in entries):
                return
            why = "its v1/ folder holds no collection folders"
        else:
            why = "it is empty" if next(path.iterdir(), None) is None else "it has no v1/ folder"
    except OSError as exc:
        raise PersistenceError(f"cannot read {path}: {exc}", key=str(path), cause=exc) from exc
    hint = ""
    if path.name == "v1":
        hint = f"; did you mean {path.parent}? (name the folder that holds v1/)"
    elif path.parent.name == "v1":
        hint = f"; did you mean {path.parent.parent}? (name the folder that holds v1/)"
    raise PersistenceError(f"{path} is not an aiomemdb store: {why}{hint}", key=str(path))


def s3_hint(url: str) -> str | None:
    """For an S3 URL with the wrong number of slashes or an upper-case scheme, the message suggesting the fix.

    ``s3:/bucket``, ``s3:bucket``, ``s3:///bucket`` and ``S3://bucket`` all mean ``s3://bucket``; a local
    directory of that name (it can exist) is left alone.
    """
    if url[:3].lower() != "s3:" or (url.startswith("s3://") and not url.startswith("s3:///")):
        return None
    if os.path.exists(url):
        return None
    meant = "s3://" + url[3:].lstrip("/")
    return f"malformed store URL {url!r}: did you mean {meant}?"


def check_output(output: str) -> None:
    """Refuse an output file that cannot be created, naming the path given (before any work is done).

    Raises:
        PersistenceError: its directory does not exist or is not a directory, or the path is a directory.
    """
    if output == "-":
        return
    target = Path(output)
    parent = target.parent
    if target.is_dir():
        raise PersistenceError(f"cannot write {output}: it is a directory", key=output)
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise PersistenceError(f"cannot write {output}: the directory {parent} {what}", key=output)
