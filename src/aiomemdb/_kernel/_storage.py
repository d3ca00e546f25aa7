"""The kernel's side of storage I/O: fetches (load tickets) and flushes (flush tickets). Synchronous.

The I/O parts (:mod:`aiomemdb._io`) call these around their awaits: a fetch is ``begin_load`` → (I/O) →
``finish_load`` / ``end_load``; a flush is ``begin_flush`` → ``encode`` slices → (I/O) → ``finish_flush`` or
``fail_flush``. A load's result is installed only if its ticket is not stale (no write or delete of the key
since it began) and memory is not authoritative for the key (dirty or being flushed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aiomemdb._codec import SESSIONS, check_collection, encode_envelope, merge_sessions
from aiomemdb._exceptions import CorruptDataError
from aiomemdb._kernel._effects import SetRecord, SetSession
from aiomemdb._kernel._kernel import FlushTicket, Kernel, Key, LoadTicket
from aiomemdb._record import SessionRecord, encode_record, record_owner

__all__ = [
    "begin_flush",
    "begin_load",
    "encode",
    "end_load",
    "fail_flush",
    "finish_flush",
    "finish_load",
    "ingest",
    "rewrite_resident",
]


# -- loads -----------------------------------------------------------------------------------------------


def begin_load(k: Kernel, key: Key) -> LoadTicket | None:
    """Start fetching ``key``, or None when memory already has what storage could give."""
    with k.lock:
        if k.authoritative(key):
            return None
        collection, rid = key
        if collection == SESSIONS:
            rec = k.sessions.get(rid)
            if rec is not None and rec.resident:
                return None
        elif rid in k.collections.get(collection, {}):
            return None
        ticket = k.loading.get(key)
        if ticket is None or ticket.stale:
            ticket = k.loading[key] = LoadTicket(key)
        return ticket


def end_load(k: Kernel, ticket: LoadTicket) -> None:
    """Forget a finished (or abandoned) fetch."""
    with k.lock:
        if k.loading.get(ticket.key) is ticket:
            del k.loading[ticket.key]


def finish_load(k: Kernel, ticket: LoadTicket, doc: dict[str, Any] | None) -> None:
    """Install what a fetch returned, unless the key was written or deleted since it began.

    Raises:
        CorruptDataError: the stored document is not a valid record for its key.
    """
    collection, rid = ticket.key
    where = f"{collection}/{rid}"
    loaded = None
    if doc is not None and collection == SESSIONS:
        loaded = SessionRecord.from_stored(doc, seq=0, key=where)  # encode outside the lock
        if loaded.session_id != rid:
            raise CorruptDataError(f"{where}: contains session_id {loaded.session_id!r}", key=where)
    blob = None
    if doc is not None and collection != SESSIONS:
        blob = (encode_record(doc, what=where), record_owner(doc), 0)
    with k.lock:
        if k.loading.get(ticket.key) is ticket:
            del k.loading[ticket.key]
        if ticket.stale or k.authoritative(ticket.key):
            return
        if collection != SESSIONS:
            table = k.collections.setdefault(collection, {})
            if blob is not None and rid not in table:
                table[rid] = (blob[0], blob[1], k.next_seq())
                _loaded(k, collection, rid)
            return
        current = k.sessions.get(rid)
        if current is not None and current.resident:
            return
        if loaded is None:
            if current is not None:  # evicted here, deleted in storage (by another replica)
                k.index.remove(current)
                del k.sessions[rid]
            return
        loaded.seq = k.next_seq() if current is None else current.seq
        if current is not None and loaded.version == current.version:
            current.refill(loaded)
            k.res.bytes += current.size
            k.res.touch(rid)
        else:
            k.set_session(rid, loaded)
        _loaded(k, collection, rid)
        k.settle()
    k.deliver()


def _loaded(k: Kernel, collection: str, rid: str) -> None:
    k.counts["lazy_loads"] += 1
    k.event("lazy_load", collection=collection, id=rid)


def ingest(k: Kernel, snapshot: Mapping[str, Mapping[str, dict[str, Any]]]) -> None:
    """Install a snapshot loaded at start (not dirty); anything written before it (dirty) wins."""
    for collection, records in snapshot.items():
        check_collection(collection)
        built: list[tuple[str, Any]] = []
        for rid, doc in records.items():
            where = f"{collection}/{rid}"
            if collection == SESSIONS:
                rec = SessionRecord.from_stored(doc, seq=0, key=where)
                if rec.session_id != rid:
                    raise CorruptDataError(f"{where}: contains session_id {rec.session_id!r}", key=where)
                built.append((rid, rec))
            else:
                built.append((rid, (encode_record(doc, what=where), record_owner(doc))))
        with k.lock:
            for rid, item in built:
                if (collection, rid) in k.dirty:
                    continue
                if collection == SESSIONS:
                    item.seq = k.next_seq()
                    k.set_session(rid, item)
                else:
                    k.collections.setdefault(collection, {})[rid] = (item[0], item[1], k.next_seq())
                k.counts["loads"] += 1
            k.settle()
    k.deliver()

# -- flushing --------------------------------------------------------------------------------------------


def begin_flush(k: Kernel) -> FlushTicket | None:
    """Take the dirty set for one flush (and rotate the journal), or None when nothing is dirty."""
    with k.lock:
        if not k.dirty:
            k.persisted_seq = k.seq
            return None
        keys = list(k.dirty)
        k.dirty = {}
        k.in_flight.update(keys)
        segment = k.journal.rotate() if k.journal is not None else None
        return FlushTicket(keys, k.seq, segment)


def encode(k: Kernel, keys: Sequence[Key]) -> tuple[dict[Key, bytes], set[Key], dict[Key, int]]:
    """Envelopes for the upserts among ``keys``, the deletes, and each session's version."""
    upserts: dict[Key, bytes] = {}
    deletes: set[Key] = set()
    versions: dict[Key, int] = {}
    with k.lock:
        for key in keys:
            collection, rid = key
            if collection == SESSIONS:
                rec = k.sessions.get(rid)
                if rec is None:
                    deletes.add(key)
                else:
                    # dirty and in-flight payloads are never evicted, so this one is resident
                    upserts[key] = encode_envelope(collection, rid, rec.doc_bytes(), seq=rec.seq)
                    versions[key] = rec.version
            else:
                blob = k.collections.get(collection, {}).get(rid)
                if blob is None:
                    deletes.add(key)
                else:
                    upserts[key] = encode_envelope(collection, rid, blob[0], seq=blob[2])
    return upserts, deletes, versions


def fail_flush(k: Kernel, ticket: FlushTicket) -> None:
    """The flush failed: its keys are dirty again, ahead of anything dirtied since."""
    with k.lock:
        k.in_flight.difference_update(ticket.keys)
        k.dirty = {**dict.fromkeys(ticket.keys), **k.dirty}


def finish_flush(
    k: Kernel, ticket: FlushTicket, merged: Mapping[Key, dict[str, Any]] | None, versions: Mapping[Key, int]
) -> int:
    """The flush succeeded: adopt what storage merged, record what is persisted, evict what may go."""
    with k.lock:
        k.in_flight.difference_update(ticket.keys)
        adopted = _adopt(k, merged, versions) if merged else 0
        k.persisted_seq = max(k.persisted_seq, ticket.covered)
        k.res.blocked = False
        k.settle()
    k.deliver()
    return adopted


def _adopt(k: Kernel, merged: Mapping[Key, dict[str, Any]], versions: Mapping[Key, int]) -> int:
    """Take in what storage holds after merging our write with another replica's (lock held)."""
    for key, doc in merged.items():
        collection, rid = key
        k.event("merge", collection=collection, id=rid)
        if collection != SESSIONS:
            if key not in k.dirty:
                blob = (encode_record(doc, what=rid), record_owner(doc), k.next_seq())
                k.commit([SetRecord(collection, rid, blob)], dirty=False)
            continue
        current = k.sessions.get(rid)
        if current is None:
            continue
        if current.version == versions.get(key) and key not in k.dirty:
            rec = SessionRecord.from_stored(doc, seq=k.next_seq(), key=rid)
            k.commit([SetSession(rid, rec)], dirty=False)
        elif current.resident:
            # Changed again while the flush ran: fold storage's merge into the newer local version.
            both = merge_sessions(current.to_dict(), doc)
            k.commit([SetSession(rid, SessionRecord.from_stored(both, seq=k.next_seq(), key=rid))])
    k.counts["merged"] += len(merged)
    return len(merged)


def rewrite_resident(k: Kernel, collection: str | None) -> tuple[int, int]:
    """Storage lost a folder (``collection``, or all of them for ``None``): mark every record memory holds dirty
    so the next flush writes it back. Returns ``(rewritten, lost)``: ``lost`` counts the sessions whose payload
    was not in memory (evicted or expired after a flush), which only the removed files held."""
    if not k.persistent:
        return 0, 0
    rewritten = lost = 0
    with k.lock:
        if collection in (None, SESSIONS):
            for sid, rec in k.sessions.items():
                if rec.resident:
                    k.dirty[(SESSIONS, sid)] = None
                    rewritten += 1
                else:
                    lost += 1
        for name, blobs in k.collections.items():
            if collection in (None, name):
                for rid in blobs:
                    k.dirty[(name, rid)] = None
                rewritten += len(blobs)
    if rewritten:
        k.wake_flusher()
    return rewritten, lost
