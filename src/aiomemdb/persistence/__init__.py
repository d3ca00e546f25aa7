"""Where a store keeps its data between runs: the protocol and the built-in implementations.

``S3Persistence`` is imported on first use, so the core never imports aiobotocore; without it installed the
import error names ``pip install 'aiomemdb[s3]'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiomemdb.persistence._base import Changeset, Key, Persistence, Snapshot
from aiomemdb.persistence._directory import DirectoryPersistence
from aiomemdb.persistence._hooks import HookPersistence

if TYPE_CHECKING:
    from aiomemdb.persistence._s3 import S3Persistence

__all__ = ["Changeset", "DirectoryPersistence", "HookPersistence", "Key", "Persistence", "S3Persistence", "Snapshot"]


def __getattr__(name: str) -> Any:
    if name == "S3Persistence":
        try:
            from aiomemdb.persistence._s3 import S3Persistence
        except ImportError as exc:  # pragma: no cover - exercised without aiobotocore installed
            raise ImportError(f"S3Persistence needs aiobotocore: pip install 'aiomemdb[s3]' ({exc})") from exc
        return S3Persistence
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
