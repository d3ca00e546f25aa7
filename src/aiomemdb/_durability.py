"""Getting changes to storage and back: the flush driver, the background flusher, loading, journal replay.

Flow of a flush (one at a time, under the flush lock)::

    swap the dirty set out (atomic) ─ rotate the journal ─ encode envelopes (yielding) ─ Persistence.save
        ok:   persisted_seq = the write sequence at the swap; adopt records storage merged; drop old journal
        fail: put the keys back in front of the dirty set; PersistenceError; the flusher backs off and retries

Loading installs records without marking them dirty, and never over a dirty key: anything written before the
load (the caller's ``storage_dict``, journal replay) wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiomemdb._codec import SESSIONS, check_collection, encode_envelope, merge_sessions
from aiomemdb._exceptions import AiomemdbError, CorruptDataError, PersistenceError
from aiomemdb._journal import Journal
from aiomemdb._record import SessionRecord, encode_record, record_owner
from aiomemdb._stats import FlushReport
from aiomemdb._store import YIELD_EVERY, StoreBase, logger
from aiomemdb.persistence._base import Changeset, Key, Persistence, Snapshot

__all__ = ["DurabilityMixin"]


class DurabilityMixin(StoreBase):
    """Flushing, the background flusher, snapshot ingestion and journal replay."""

    _flush_interval: float
    _max_backoff: float
    _lazy: bool
    _flush_lock: asyncio.Lock | None
    _flush_wake: asyncio.Event | None

    async def _after_write(self) -> None:
        """Make a finished write as durable as the policy asks before the call returns."""
        if self._journal is not None:
            await self._journal.drain(fsync=False)
        elif self._durability == "write" and self._persistence is not None:
            target = self._seq
            while self._persisted_seq < target:
                await self.flush()

    async def flush(self) -> FlushReport:
        """Write every change since the last successful flush; one flush runs at a time.

        Raises:
            PersistenceError: storage failed; every change stays dirty and is retried by the next flush.
            ConflictError: another replica's write conflicted and the persistence's policy is ``"raise"``.
        """
        if self._state not in ("open", "closing"):
            await self._ready()
        if self._persistence is None:
            return FlushReport()
        assert self._flush_lock is not None
        async with self._flush_lock:
            report = await self._flush_locked(self._persistence)
        self._after_commit()  # what was dirty is clean now, so it may be evicted
        return report

    def _flush_soon(self) -> None:
        """Ask the background flusher to flush now (used when only dirty sessions stand in eviction's way)."""
        if self._flush_wake is not None:
            self._flush_wake.set()

    async def _flush_locked(self, persistence: Persistence) -> FlushReport:
        started = time.perf_counter()
        covered = self._seq
        if not self._dirty:
            self._persisted_seq = covered
            return FlushReport()
        keys, self._dirty = self._dirty, {}
        self._in_flight = frozenset(keys)
        segment = self._journal.rotate() if self._journal is not None else None
        work = asyncio.ensure_future(self._encode_and_save(persistence, keys))
        # A save in flight is never abandoned: its worker threads or requests would land after any newer
        # flush and overwrite it. A cancelled caller waits for the save to end, then is cancelled.
        cancelled = False
        while not work.done():
            try:
                await asyncio.wait([work])
            except asyncio.CancelledError:
                cancelled = True
        self._in_flight = frozenset()
        exc = asyncio.CancelledError() if work.cancelled() else work.exception()
        if exc is not None:
            # Put the keys back (before anything dirtied since, keeping first-dirtied-first order).
            self._dirty = {**dict.fromkeys(keys), **self._dirty}
            self._flush_failures += 1
            self._last_error = repr(exc)
            self._emit("flush_failed", error=repr(exc), keys=len(keys))
            if cancelled or isinstance(exc, AiomemdbError | asyncio.CancelledError) or not isinstance(exc, Exception):
                raise asyncio.CancelledError() if cancelled else exc
            raise PersistenceError(f"flush failed: {exc!r}", cause=exc) from exc
        changeset, versions, merged = work.result()
        adopted = self._adopt(merged, versions) if merged else 0
        self._persisted_seq = covered
        if self._journal is not None and segment is not None:
            await self._journal.release(segment)
        duration = time.perf_counter() - started
        self._flushes += 1
        self._last_flush_duration = duration
        self._last_flush_at = time.time()
        self._last_error = None
        report = FlushReport(
            upserts=len(changeset.upserts),
            deletes=len(changeset.deletes),
            bytes=changeset.nbytes,
            duration=duration,
            merged=adopted,
        )
        logger.debug("aiomemdb: flushed %s", report)
        self._emit("flush", upserts=report.upserts, deletes=report.deletes, bytes=report.bytes, duration=duration)
        self._evict_blocked = False  # what was dirty is clean now
        if cancelled:
            raise asyncio.CancelledError()
        return report

    async def _encode_and_save(
        self, persistence: Persistence, keys: Iterable[Key]
    ) -> tuple[Changeset, dict[Key, int], Mapping[Key, dict[str, Any]] | None]:
        changeset, versions = await self._encode_changeset(keys)
        return changeset, versions, await persistence.save(changeset)

    async def _encode_changeset(self, keys: Iterable[Key]) -> tuple[Changeset, dict[Key, int]]:
        upserts: dict[Key, bytes] = {}
        deletes: set[Key] = set()
        versions: dict[Key, int] = {}
        for n, key in enumerate(keys, 1):
            collection, rid = key
            if collection == SESSIONS:
                rec = self._sessions.get(rid)
                if rec is None:
                    deletes.add(key)
                else:
                    upserts[key] = encode_envelope(collection, rid, rec.doc_bytes(), seq=rec.seq)
                    versions[key] = rec.version
            else:
                blob = self._collections.get(collection, {}).get(rid)
                if blob is None:
                    deletes.add(key)
                else:
                    upserts[key] = encode_envelope(collection, rid, blob[0], seq=blob[2])
            if n % YIELD_EVERY == 0:
                # A key changed after it was encoded here is dirty again, so yielding cannot lose a write.
                await asyncio.sleep(0)
        return Changeset(upserts=upserts, deletes=frozenset(deletes)), versions

    def _adopt(self, merged: Mapping[Key, dict[str, Any]], versions: Mapping[Key, int]) -> int:
        """Take in what storage holds after merging our write with another replica's."""
        count = 0
        for key, doc in merged.items():
            collection, rid = key
            count += 1
            self._emit("merge", collection=collection, id=rid)
            if collection != SESSIONS:
                if key not in self._dirty:
                    table = self._collections.setdefault(collection, {})
                    table[rid] = (encode_record(doc, what=rid), record_owner(doc), self._next_seq())
                continue
            current = self._sessions.get(rid)
            if current is not None and current.version == versions.get(key):
                self._install_session(rid, SessionRecord.from_stored(doc, seq=self._next_seq(), key=rid))
            elif current is not None and current.resident:
                # Changed again while the flush ran: fold storage's merge into the newer local version.
                both = merge_sessions(current.to_dict(), doc)
                rec = SessionRecord.from_stored(both, seq=self._next_seq(), key=rid)
                self._commit_session(rid, current, rec)
        self._merged += count
        return count

    async def _flush_forever(self) -> None:
        assert self._flush_wake is not None
        failures = 0
        while True:
            if failures:
                delay = min(self._max_backoff, self._flush_interval * 2**failures)
                delay = random.uniform(delay / 2, delay)
            else:
                delay = self._flush_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_wake.wait(), delay)
            self._flush_wake.clear()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures = min(failures + 1, 30)
                logger.warning("aiomemdb: background flush failed (attempt %d), will retry: %s", failures, exc)
            else:
                failures = 0

    # -- loading -------------------------------------------------------------------------------------------

    async def _stored_keys(self, collection: str | None = None) -> list[Key]:
        """Every key in storage (of ``collection``, if given) when this store is lazy, else nothing.

        A lazy store holds only what it was asked for, so whole-store deletes must learn the rest from
        storage; the protocol has no listing call, so this loads (and drops) the snapshot.
        """
        if not self._lazy or self._persistence is None:
            return []
        snapshot = await self._persistence.load()
        return [(name, rid) for name, records in snapshot.items() if collection in (None, name) for rid in records]

    async def _ingest(self, snapshot: Snapshot) -> None:
        """Install a loaded snapshot; anything written before the load (dirty) wins over it."""
        n = 0
        for collection, records in snapshot.items():
            check_collection(collection)
            for rid, doc in records.items():
                n += 1
                if n % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                key = (collection, rid)
                if key in self._dirty:
                    continue
                where = f"{collection}/{rid}"
                if collection == SESSIONS:
                    rec = SessionRecord.from_stored(doc, seq=self._next_seq(), key=where)
                    if rec.session_id != rid:
                        raise CorruptDataError(f"{where}: contains session_id {rec.session_id!r}", key=where)
                    self._install_session(rid, rec)
                else:
                    blob = (encode_record(doc, what=where), record_owner(doc), self._next_seq())
                    self._collections.setdefault(collection, {})[rid] = blob
                self._loads += 1

    async def _replay(self, journal: Journal) -> int:
        """Apply the journal's entries (writes not yet flushed when the last process stopped).

        Runs before ``journal`` is attached to the store, so replayed writes are not journaled twice; they
        are marked dirty, and their segments stay until the next successful flush.
        """
        entries = await journal.replay()
        for n, entry in enumerate(entries, 1):
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            await self._apply_entry(entry)
        return len(entries)

    async def _apply_entry(self, entry: dict[str, Any]) -> None:
        op, collection, rid = entry.get("op"), entry.get("c"), entry.get("id")
        where = f"journal entry {op} {collection}/{rid}"
        if op == "drop":
            for stored in await self._stored_keys():
                self._mark(stored)
            for sid in list(self._sessions):
                self._commit_session(sid, self._sessions[sid], None)
            for name, table in self._collections.items():
                for record_id in list(table):
                    self._commit_blob(name, record_id, None)
            return
        if not isinstance(collection, str) or not isinstance(rid, str):
            raise CorruptDataError(f"{where}: malformed", key=where)
        if collection != SESSIONS:
            if op == "put":
                doc = entry.get("doc")
                if not isinstance(doc, dict):
                    raise CorruptDataError(f"{where}: no document", key=where)
                self._commit_blob(collection, rid, (encode_record(doc, what=where), record_owner(doc), entry["seq"]))
            elif op == "del":
                self._commit_blob(collection, rid, None)
            return
        await self._ensure_loaded(rid)
        old = self._sessions.get(rid)
        if op == "put":
            rec = SessionRecord.from_stored(entry.get("doc"), seq=int(entry["seq"]), key=where)
            self._commit_session(rid, old, rec)
        elif op == "del":
            self._commit_session(rid, old, None)
        elif op in ("run", "delrun"):
            if old is None:
                # The session was deleted later and that delete is already persisted (a crash came between
                # the flush and the removal of this segment); the delete follows in the replay, if at all.
                return
            await self._make_resident(old)
            before = old.size
            if op == "run":
                run_id, raw = SessionRecord.encode_run(entry.get("run"))
                old.put_run(run_id, raw)
            else:
                old.remove_run(str(entry.get("run_id")))
            old.updated_at, old.version, old.seq = int(entry["updated_at"]), int(entry["version"]), int(entry["seq"])
            self._commit_session(rid, old, old, old_size=before)
        else:
            raise CorruptDataError(f"{where}: unknown operation", key=where)
