"""How S3Persistence writes a changeset: conditionally, in parallel, resolving conflicts by policy.

See :mod:`aiomemdb.persistence._s3` for the rules (conditional writes, merge, "a delete wins"). Under
``single_writer=True`` the wire sends no conditions, so a conflict never arises and every write is plain.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from aiomemdb import _codec
from aiomemdb._exceptions import ConflictError
from aiomemdb.persistence._base import Changeset, Key
from aiomemdb.persistence._s3_keys import name_of
from aiomemdb.persistence._s3_wire import Signal, Wire

__all__ = ["S3Writer"]

logger = logging.getLogger("aiomemdb.s3")

#: Rounds of read-merge-write for one key before giving up with ConflictError (each round means that yet
#: another writer got in between our GET and our PUT).
_MAX_CONFLICT_ROUNDS = 8


@dataclass(frozen=True, slots=True)
class _Conflict:
    """A key whose conditional write lost and, under ``on_conflict="raise"``, was left as it is."""

    key: Key
    s3_key: str
    expected: str | None
    actual: str | None


def _strip(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "version"}


class S3Writer:
    """The write half of S3Persistence; shares its wire and its table of known ETags."""

    def __init__(
        self,
        wire: Wire,
        etags: dict[Key, str],
        *,
        on_conflict: Callable[[], Literal["merge", "raise"]],
        key_of: Callable[[str, str], str],
        decode: Callable[[bytes, str, str, str], _codec.Envelope],
    ) -> None:
        self._wire = wire
        self._etags = etags
        self._policy = on_conflict
        self._key_of = key_of
        self._decode = decode

    async def save(self, changeset: Changeset) -> Mapping[Key, dict[str, Any]] | None:
        """Write every upsert and delete of ``changeset`` with conditional requests, in parallel.

        Every item is attempted even when some fail. A key that is both upserted and deleted is upserted.

        Returns:
            The records S3 now holds instead of what was sent (merged sessions), or ``None``.

        Raises:
            PersistenceError: an item failed (the first failure; all are logged).
            ConflictError: with ``on_conflict="raise"``, one or more writes met a newer version; the message
                names every conflicting key, ``key`` the first.
        """
        items: list[tuple[Key, bytes | None]] = list(changeset.upserts.items())
        items.extend((key, None) for key in changeset.deletes if key not in changeset.upserts)
        if not items:
            return None

        # ETags of objects that now hold something other than what the store sent (a merge, or their version
        # adopted); they become ours only if save() succeeds, because only then does the store adopt those
        # records. Otherwise the store sends its own version again, and an If-Match on such an ETag would let
        # that older version overwrite the merge; without it, the next attempt meets the merge and merges again.
        provisional: dict[Key, str] = {}

        async def apply(item: tuple[Key, bytes | None]) -> object:
            key, body = item
            if body is None:
                return await self._delete_record(key)
            return await self._put_record(key, body, provisional)

        succeeded = False
        try:
            outcomes = await self._wire.pool(apply, items, fail_fast=False)
            merged: dict[Key, dict[str, Any]] = {}
            conflicts: list[_Conflict] = []
            errors: list[BaseException] = []
            for (key, _), outcome in zip(items, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    errors.append(outcome)
                elif isinstance(outcome, _Conflict):
                    conflicts.append(outcome)
                elif isinstance(outcome, dict):
                    merged[key] = outcome
            succeeded = not errors and not conflicts
        finally:
            for key, etag in provisional.items():
                if succeeded:
                    self._etags[key] = etag
                else:
                    self._etags.pop(key, None)
        if errors:
            for extra in errors[1:]:
                logger.error("save to s3://%s failed: %s", self._wire.bucket, extra)
            if conflicts:
                logger.error("save also met %d conflicts: %s", len(conflicts), [c.s3_key for c in conflicts])
            raise errors[0]
        if conflicts:
            first = conflicts[0]
            names = ", ".join(f"s3://{self._wire.bucket}/{c.s3_key}" for c in conflicts)
            raise ConflictError(
                f"{len(conflicts)} object(s) were changed by another writer: {names}",
                key=first.s3_key,
                expected=first.expected,
                actual=first.actual,
                keys=tuple(c.key for c in conflicts),
            )
        return merged or None

    # -- one record ----------------------------------------------------------------------------------------

    async def _put_record(
        self, key: Key, body: bytes, provisional: dict[Key, str]
    ) -> dict[str, Any] | _Conflict | None:
        """PUT one record conditionally, resolving conflicts by policy.

        Returns ``None`` when S3 holds ``body``, the record it holds instead (merge), or a _Conflict. The ETag
        of an object holding something else than ``body`` goes to ``provisional``, not to the known ETags.
        """
        collection, record_id = key
        s3_key = self._key_of(collection, record_id)
        etag = self._etags.get(key)
        to_write = body
        merged: dict[str, Any] | None = None
        ours: _codec.Envelope | None = None
        for _ in range(_MAX_CONFLICT_ROUNDS):
            result = await self._wire.put(s3_key, to_write, etag)
            if isinstance(result, str):
                self._remember(key, result, provisional if merged is not None else None)
                return merged
            current = await self._wire.get(s3_key) if result is Signal.CONFLICT else None
            if current is None:
                # Gone (deleted by another writer, or never there): write ours as a create.
                etag, to_write, merged = None, body, None
                continue
            their_bytes, their_etag = current
            if their_bytes == to_write:
                # Our earlier attempt landed; only its response was lost.
                self._remember(key, their_etag, provisional if merged is not None else None)
                return merged
            if self._policy() == "raise":
                bucket = self._wire.bucket
                logger.warning("conflict on s3://%s/%s (expected %s, found %s)", bucket, s3_key, etag, their_etag)
                return _Conflict(key, s3_key, etag, their_etag)
            logger.info("conflict on s3://%s/%s: merging with version %s", self._wire.bucket, s3_key, their_etag)
            etag = their_etag
            if collection != _codec.SESSIONS:
                to_write, merged = body, None  # last writer wins, still conditionally
                continue
            theirs = self._decode(their_bytes, s3_key, collection, name_of(s3_key))
            if ours is None:
                ours = _codec.decode_envelope(body, key=s3_key)
            candidate = _codec.merge_sessions(ours.data, theirs.data)
            if _strip(candidate) == _strip(theirs.data):
                # Theirs already contains everything of ours (e.g. our merge landed before): keep it as it is.
                self._remember(key, their_etag, provisional)
                return theirs.data
            merged = candidate
            seq = max(ours.seq, theirs.seq)
            to_write = _codec.encode_envelope(collection, record_id, _codec.dumps(merged, what=s3_key), seq=seq)
        raise ConflictError(
            f"s3://{self._wire.bucket}/{s3_key} kept changing: gave up after {_MAX_CONFLICT_ROUNDS} merge rounds",
            key=s3_key,
            expected=etag,
        )

    def _remember(self, key: Key, etag: str, provisional: dict[Key, str] | None) -> None:
        if provisional is None:
            self._etags[key] = etag
        else:
            provisional[key] = etag

    async def _delete_record(self, key: Key) -> _Conflict | None:
        s3_key = self._key_of(*key)
        etag = self._etags.get(key)
        for _ in range(_MAX_CONFLICT_ROUNDS):
            if await self._wire.delete(s3_key, etag) is not Signal.CONFLICT:
                self._etags.pop(key, None)
                return None
            current = await self._wire.get(s3_key)
            if current is None:
                self._etags.pop(key, None)
                return None
            if self._policy() == "raise":
                logger.warning(
                    "conflict deleting s3://%s/%s (expected %s, found %s)",
                    self._wire.bucket,
                    s3_key,
                    etag,
                    current[1],
                )
                return _Conflict(key, s3_key, etag, current[1])
            # A delete wins over a concurrent update: it is an explicit intent of the user.
            etag = current[1]
        raise ConflictError(
            f"s3://{self._wire.bucket}/{s3_key} kept changing: gave up deleting after {_MAX_CONFLICT_ROUNDS} tries",
            key=s3_key,
            expected=etag,
        )

