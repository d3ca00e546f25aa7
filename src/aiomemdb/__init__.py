"""aiomemdb: an async-first in-memory session store for AI agents, with incremental persistence.

``AsyncInMemoryDb`` is the core; ``InMemoryDb`` is its blocking twin. ``S3Persistence`` loads aiobotocore
only when first used.
"""

from __future__ import annotations

import logging as _logging
from typing import TYPE_CHECKING, Any

from aiomemdb._async import AsyncInMemoryDb, Durability
from aiomemdb._exceptions import (
    AiomemdbError,
    ClosedError,
    ConflictError,
    CorruptDataError,
    LockedError,
    NotFoundError,
    OwnershipError,
    PersistenceError,
    SerializationError,
    UnclosedStoreWarning,
    UnsafeStorageError,
    ValidationError,
)
from aiomemdb._stats import Event, EventKind, FlushReport, Stats
from aiomemdb._sync import InMemoryDb
from aiomemdb.persistence import Changeset, DirectoryPersistence, HookPersistence, Persistence

if TYPE_CHECKING:
    from aiomemdb.persistence import S3Persistence

# Quiet by default: applications opt in by configuring the "aiomemdb" logger.
_logging.getLogger("aiomemdb").addHandler(_logging.NullHandler())

__version__ = "0.1.0"

__all__ = [
    "AiomemdbError",
    "AsyncInMemoryDb",
    "Changeset",
    "ClosedError",
    "ConflictError",
    "CorruptDataError",
    "DirectoryPersistence",
    "Durability",
    "Event",
    "EventKind",
    "FlushReport",
    "HookPersistence",
    "InMemoryDb",
    "LockedError",
    "NotFoundError",
    "OwnershipError",
    "Persistence",
    "PersistenceError",
    "S3Persistence",
    "SerializationError",
    "Stats",
    "UnclosedStoreWarning",
    "UnsafeStorageError",
    "ValidationError",
]


def __getattr__(name: str) -> Any:
    if name == "S3Persistence":
        from aiomemdb import persistence

        return persistence.S3Persistence
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
