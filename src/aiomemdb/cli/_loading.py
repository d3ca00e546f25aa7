"""How ``ls`` and ``stats`` load a whole store: through the raw scanner, so the progress line counts objects.

A persistence's ``load()`` is one opaque call; reading the objects with :func:`~aiomemdb.cli._sources.scan`
instead (the same listing and the same decoding a load does) lets the terminal show
``reading [####...] 120/1000 objects``. The decoded records are then handed to the async core through
:class:`Preloaded`, a persistence that serves them and refuses every write, so the commands still query
exactly what the core would hold.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from aiomemdb._codec import Envelope, in_write_order
from aiomemdb._exceptions import CorruptDataError, PersistenceError
from aiomemdb.cli._sources import Object, decode_object, scan
from aiomemdb.persistence._base import Changeset, Key, Persistence, Snapshot

__all__ = ["Preloaded", "read_all"]


class Preloaded:
    """A read-only persistence over records already read: ``load`` returns them, ``save`` refuses."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    async def open(self) -> None:
        """Nothing to acquire."""

    async def load(self) -> Snapshot:
        """The records read by :func:`read_all`."""
        return self._snapshot

    async def load_one(self, collection: str, record_id: str) -> dict[str, Any] | None:
        """One of those records, or None."""
        return self._snapshot.get(collection, {}).get(record_id)

    async def list_keys(self, collection: str | None = None) -> list[Key]:
        """The keys of those records."""
        return [(name, rid) for name, recs in self._snapshot.items() if collection in (None, name) for rid in recs]

    @property
    def quarantined(self) -> Sequence[tuple[str, str]]:
        """Nothing is quarantined by a snapshot already read."""
        return ()

    async def save(self, changeset: Changeset) -> Mapping[Key, dict[str, Any]] | None:
        """Refused: the commands that load this way only read."""
        raise PersistenceError("this command is read-only")

    async def aclose(self) -> None:
        """Nothing to release."""


async def read_all(persistence: Persistence, args: argparse.Namespace) -> Snapshot:
    """Read and decode every stored object as a load would, with a counted progress line on a terminal.

    Raises:
        CorruptDataError: an object that does not decode, or a layout problem, named by its key.
        PersistenceError: storage cannot be listed or read.
    """
    decoded: list[tuple[str, Envelope]] = []

    def keep(obj: Object, raw: bytes) -> None:
        decoded.append((obj.collection, decode_object(obj, raw)))

    _, problems = await scan(persistence, args, "reading", keep)
    if problems:
        where, why = problems[0]
        raise CorruptDataError(f"{where}: {why} (aiomemdb verify lists every problem)", key=where)
    return in_write_order(decoded)
