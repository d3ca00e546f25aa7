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

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
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
        self._loading: asyncio.Future[Snapshot] | None = None
        self._saves = 0  # successful saves so far: a load that began before one must not replace the mirror
        self.quarantined: Sequence[tuple[str, str]] = ()

    async def open(self) -> None:
        """Nothing to acquire."""

    async def load(self) -> Snapshot:
        """Call the load hook and parse what it returned.

        The result becomes the mirror that later saves build on, unless a save completed while the hook ran
        (then the mirror already holds newer data, and this older snapshot must not replace it).
        """
        if self._load is None:
            return {}
        saves = self._saves
        try:
            raw = await self._load()
        except AiomemdbError:
            raise
        except Exception as exc:
            raise PersistenceError(f"load hook failed: {exc!r}", key="load", cause=exc) from exc
        snapshot = self._parse(raw)
        if self._saves == saves:
            self._mirror = {name: dict(records) for name, records in snapshot.items()}
            self._loaded = True
        return snapshot

    async def _ensure_loaded(self) -> None:
        """Load the snapshot once (single-flight: concurrent first reads share one call of the hook)."""
        if self._loaded or self._load is None:
            return
        if self._loading is None:
            self._loading = asyncio.ensure_future(self.load())
        loading = self._loading
        try:
            await asyncio.shield(loading)
        finally:
            if loading.done() and self._loading is loading:
                self._loading = None  # a failed load is retried by the next caller
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
        await self._ensure_loaded()
        return self._mirror.get(collection, {}).get(record_id)

    async def list_keys(self, collection: str | None = None) -> list[Key]:
        """Every key of the snapshot (of ``collection``)."""
        await self._ensure_loaded()
        return [(name, rid) for name, records in self._mirror.items() if collection in (None, name) for rid in records]

    async def save(self, changeset: Changeset) -> None:
        """Apply the changeset to the mirror and hand the whole snapshot to the save hook."""
        if self._save is None:
            return None
        # Saving a snapshot that lacks what was never loaded would delete it: load first.
        await self._ensure_loaded()
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
        self._saves += 1
        return None

    async def aclose(self) -> None:
        """Nothing to release."""
