"""Plain async ``load`` / ``save`` callables as a persistence: bring your own storage.

This is the seed's "dump the dict to S3 yourself" recipe made async and consistent. ``save`` receives the whole
snapshot, taken atomically after each flush's changes are applied::

    {"format_version": 1, "collections": {"sessions": {session_id: session, ...}, "memories": {...}}}

``load`` may return that shape, a seed-style ``{session_id: session}`` dict (read as the sessions
collection, so existing blobs migrate), or ``None`` / ``{}`` for "nothing stored yet". Anything else raises
:class:`~aiomemdb.CorruptDataError`; an exception raised by ``load`` propagates as
:class:`~aiomemdb.PersistenceError`, never as an empty store. Treat the snapshot as read-only: its dicts are
the persistence's own (copying the whole store once more on every flush would buy nothing a serialiser needs).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiomemdb._codec import SESSIONS, check_collection, decode_envelope
from aiomemdb._exceptions import AiomemdbError, CorruptDataError, PersistenceError
from aiomemdb.persistence._base import Changeset, Key, Snapshot

__all__ = ["HookPersistence"]

LoadHook = Callable[[], Awaitable[Mapping[str, Any] | None]]
SaveHook = Callable[[dict[str, Any]], Awaitable[None]]


class HookPersistence:
    """Adapts two async callables to the persistence protocol.

    Args:
        load: returns the stored snapshot (see the module docstring); ``None`` means nothing is stored.
        save: receives the complete snapshot after every flush that changed something.
    """

    def __init__(self, *, load: LoadHook | None = None, save: SaveHook | None = None) -> None:
        self._load = load
        self._save = save
        self._mirror: dict[str, dict[str, dict[str, Any]]] = {}
        self._loaded = False

    async def open(self) -> None:
        """Nothing to acquire."""

    async def load(self) -> Snapshot:
        """Call the load hook and parse what it returned."""
        if self._load is None:
            return {}
        try:
            raw = await self._load()
        except AiomemdbError:
            raise
        except Exception as exc:
            raise PersistenceError(f"load hook failed: {exc!r}", key="load", cause=exc) from exc
        snapshot = self._parse(raw)
        self._mirror = {name: dict(records) for name, records in snapshot.items()}
        self._loaded = True
        return snapshot

    @staticmethod
    def _parse(raw: Any) -> Snapshot:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            raise CorruptDataError(f"load hook returned {type(raw).__name__}, expected a dict", key="load")
        if "format_version" in raw and "collections" in raw:
            if raw["format_version"] != 1:
                raise CorruptDataError(f"unsupported format_version {raw['format_version']!r}", key="load")
            collections = raw["collections"]
        else:
            collections = {SESSIONS: raw} if raw else {}
        if not isinstance(collections, Mapping):
            raise CorruptDataError("'collections' must be a dict", key="load")
        snapshot: Snapshot = {}
        for name, records in collections.items():
            try:
                check_collection(name)
            except AiomemdbError as exc:
                raise CorruptDataError(f"load: bad collection name {name!r}", key="load", cause=exc) from exc
            if not isinstance(records, Mapping):
                raise CorruptDataError(f"load: collection {name!r} is not a dict", key=f"load/{name}")
            out: dict[str, dict[str, Any]] = {}
            for rid, record in records.items():
                if not isinstance(rid, str) or not isinstance(record, dict):
                    raise CorruptDataError(f"load: {name}[{rid!r}] is not a dict record", key=f"load/{name}/{rid}")
                out[rid] = record
            snapshot[name] = out
        return snapshot

    async def load_one(self, collection: str, record_id: str) -> dict[str, Any] | None:
        """Serve from the snapshot (hooks cannot fetch one record: the first call loads the whole snapshot)."""
        if not self._loaded:
            await self.load()
        return self._mirror.get(collection, {}).get(record_id)

    async def save(self, changeset: Changeset) -> None:
        """Apply the changeset to the mirror and hand the whole snapshot to the save hook."""
        if self._save is None:
            return None
        updated: list[tuple[int, Key, dict[str, Any]]] = []
        for key, raw in changeset.upserts.items():
            env = decode_envelope(raw, key=f"{key[0]}/{key[1]}")
            updated.append((env.seq, key, env.data))
        updated.sort(key=lambda item: item[0])
        mirror = {name: dict(records) for name, records in self._mirror.items()}
        for _, (name, rid), record in updated:
            # Each collection stays in write order (oldest first), which is how the store reloads ties.
            records = mirror.setdefault(name, {})
            records.pop(rid, None)
            records[rid] = record
        for name, rid in changeset.deletes:
            mirror.get(name, {}).pop(rid, None)
        snapshot = {"format_version": 1, "collections": {n: r for n, r in mirror.items() if r}}
        try:
            await self._save(snapshot)
        except AiomemdbError:
            raise
        except Exception as exc:
            raise PersistenceError(f"save hook failed: {exc!r}", key="save", cause=exc) from exc
        self._mirror = mirror
        return None

    async def aclose(self) -> None:
        """Nothing to release."""
