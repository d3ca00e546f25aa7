"""S3Persistence: one S3 object per record, written conditionally so replicas never overwrite each other.

Layout
    ``{prefix}/v1/{collection}/{object_name(id)}.json`` (``v1/...`` when the prefix is empty), where
    :func:`aiomemdb._codec.object_name` escapes the id so that no id can leave its collection or the prefix.
    Each object holds exactly the bytes the store handed over: the format envelope
    ``{"format_version": 1, "collection": ..., "id": ..., "seq": ..., "data": {...}}``. A single PUT is atomic
    on S3, so a reader never sees half an object and no temp objects are needed. ``load()`` lists the prefix,
    GETs the objects in parallel (at most ``max_concurrency`` requests in flight) and returns each collection in
    write order (by ``seq``). Non-``.json`` objects are skipped with a warning; a ``.json`` object that cannot be
    decoded raises :class:`~aiomemdb.CorruptDataError`, or with ``on_corrupt="quarantine"`` is moved to
    ``{prefix}/quarantine/v1/...``.

Conditional writes
    The ETag of every object we read (``load``/``load_one``) or wrote is remembered per ``(collection, id)``.
    A create is sent with ``If-None-Match: *``, an update with ``If-Match: <etag>``, a delete with
    ``If-Match: <etag>`` when an ETag is known (unconditionally otherwise; deleting a missing object is fine).
    A ``412 PreconditionFailed`` or ``409 ConditionalRequestConflict`` means someone else wrote the object
    since we last saw it. We then GET their version; if its bytes are the ones we are sending, the earlier
    write of ours landed and only its response was lost, so we adopt their ETag and are done. This makes a
    repeated ``save()`` after a failure idempotent. The ETag of an object that holds something other than what
    the store sent (a merge) becomes ours only if ``save()`` succeeds, because only then does the store adopt
    the merged record; after a failed save the store sends its unmerged version again, which must meet the
    merge (412) and merge again rather than overwrite it.

Conflict policy (``on_conflict``)
    ``"merge"`` (default): sessions are reconciled with :func:`aiomemdb._codec.merge_sessions` (union of runs
    by ``run_id``, newest scalar fields) and written again with ``If-Match: <their etag>``; if the merge adds
    nothing to their version we keep theirs without writing. Other collections are last-writer-wins, still
    conditionally. ``save()`` returns the merged records so the store adopts them. A deleted-meanwhile object
    (404) is created again. A delete that meets a newer version is re-issued against that version: deletion
    is an explicit user intent, so **a delete wins** over a concurrent update. An object of theirs that
    cannot be decoded is never overwritten: the save raises :class:`~aiomemdb.CorruptDataError`.
    ``"raise"``: every non-conflicting item is applied, then one :class:`~aiomemdb.ConflictError` names all
    conflicting keys. We do not adopt their ETag, so retrying the same changeset raises again instead of
    overwriting; the conflict is resolved once the record is read again (``load``/``load_one``).

Retries
    Transient failures (HTTP 5xx, throttling, timeouts, dropped connections) are retried ``retries`` times
    with exponential backoff and full jitter (``uniform(0, min(backoff_max, backoff_base * 2**attempt))``);
    botocore's own retries are switched off so the behaviour is ours alone. Anything else, or a transient
    failure that outlives its retries, raises :class:`~aiomemdb.PersistenceError` with the ``s3://`` key and
    the cause. When ``save()`` raises, the store keeps its data dirty and sends it again later.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from aiomemdb import _codec
from aiomemdb._exceptions import (
    ClosedError,
    ConflictError,
    CorruptDataError,
    PersistenceError,
    ValidationError,
)
from aiomemdb.persistence._base import Changeset, Key, Snapshot

if TYPE_CHECKING:
    from botocore.config import Config

__all__ = ["S3Persistence"]

logger = logging.getLogger("aiomemdb.s3")

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_RE = re.compile(r"\d+\.\d+\.\d+\.\d+")
_CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
_MISSING_KEY_CODES = frozenset({"NoSuchKey", "404"})
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",
    }
)
#: Rounds of read-merge-write for one key before giving up with ConflictError (each round means that yet
#: another writer got in between our GET and our PUT).
_MAX_CONFLICT_ROUNDS = 8
_INSTALL_HINT = "S3Persistence needs aiobotocore: pip install 'aiomemdb[s3]'"


class _Deps:
    """botocore/aiohttp names, imported on first use so that aiomemdb imports without the s3 extra."""

    def __init__(self) -> None:
        try:
            import aiobotocore.session
            import aiohttp
            import botocore.config
            import botocore.exceptions as bex
        except ImportError as exc:
            raise ImportError(_INSTALL_HINT) from exc
        self.get_session: Callable[[], Any] = aiobotocore.session.get_session
        self.Config: type[Config] = botocore.config.Config
        self.ClientError: type[Exception] = bex.ClientError
        # SSLError is a ConnectionError subclass but a misconfiguration, not a blip: never retried.
        self.SSLError: type[Exception] = bex.SSLError
        self.transient: tuple[type[BaseException], ...] = (
            bex.HTTPClientError,  # ConnectionClosedError, ReadTimeoutError, ResponseStreamingError
            bex.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError
            bex.IncompleteReadError,
            bex.ChecksumError,  # a body damaged in transit
            aiohttp.ClientError,  # ServerDisconnectedError, ClientPayloadError, ...
            TimeoutError,  # asyncio.TimeoutError is TimeoutError on 3.11+
        )


_deps: _Deps | None = None


def _load_deps() -> _Deps:
    global _deps
    if _deps is None:
        _deps = _Deps()
    return _deps


@dataclass(frozen=True, slots=True)
class _Conflict:
    """A key whose conditional write lost and, under ``on_conflict="raise"``, was left as it is."""

    key: Key
    s3_key: str
    expected: str | None
    actual: str | None


class _Signal(enum.Enum):
    """What a conditional request reported instead of success."""

    CONFLICT = "conflict"  # 412 / 409: the object is not the version we named
    MISSING = "missing"  # 404 on an If-Match write: the object is gone


def _error_code(exc: BaseException) -> tuple[str, int]:
    response: Mapping[str, Any] = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def _describe(exc: BaseException) -> str:
    """A short description of ``exc`` without request details (headers carry signatures)."""
    deps = _load_deps()
    if isinstance(exc, deps.ClientError):
        code, status = _error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "")  # type: ignore[attr-defined]
        return f"{code or 'error'} (HTTP {status}){': ' + message if message else ''}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _strip(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "version"}


class S3Persistence:
    """Persist each record as one S3 object, with conditional writes for multi-replica safety.

    Args:
        bucket: the bucket name (validated against S3's naming rules).
        prefix: a key prefix shared by every object, without leading or trailing ``/``; replicas that share a
            bucket and prefix share their data.
        client: an open aiobotocore S3 client to use instead of creating one; it is never closed by us.
        session: an aiobotocore session to create the client from (default: a new one).
        endpoint_url: S3 endpoint, for S3-compatible servers (MinIO, moto, R2, ...).
        region_name: AWS region.
        aws_access_key_id: credentials; default is botocore's credential chain.
        aws_secret_access_key: see ``aws_access_key_id``.
        aws_session_token: see ``aws_access_key_id``.
        max_concurrency: the most requests in flight at once (also the client's connection pool size).
        on_conflict: ``"merge"`` or ``"raise"``; see the module documentation.
        retries: how many times a transient failure is retried before the operation fails.
        backoff_base: first backoff ceiling in seconds; it doubles per retry.
        backoff_max: the largest backoff ceiling in seconds.
        config: a ``botocore.config.Config`` merged over ours (ours switches botocore's retries off and sizes
            the pool); its values win.
        on_corrupt: ``"raise"`` (default): an object that cannot be decoded stops ``load()`` with
            :class:`~aiomemdb.CorruptDataError`. ``"quarantine"``: it is moved to ``{prefix}/quarantine/v1/...``,
            listed in :attr:`quarantined`, logged, and the rest loads.

    Attributes:
        quarantined: ``(key, reason)`` for every object moved aside by this instance.

    Raises:
        ImportError: aiobotocore is not installed.
        ValidationError: a bad bucket name, prefix or option.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        session: Any = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        max_concurrency: int = 16,
        on_conflict: Literal["merge", "raise"] = "merge",
        retries: int = 5,
        backoff_base: float = 0.05,
        backoff_max: float = 2.0,
        config: Config | None = None,
        on_corrupt: Literal["raise", "quarantine"] = "raise",
    ) -> None:
        self._deps = _load_deps()
        self.bucket = _check_bucket(bucket)
        self.prefix = _check_prefix(prefix)
        if on_conflict not in ("merge", "raise"):
            raise ValidationError(f"on_conflict must be 'merge' or 'raise', got {on_conflict!r}")
        if max_concurrency < 1:
            raise ValidationError(f"max_concurrency must be a positive int, got {max_concurrency!r}")
        if retries < 0:
            raise ValidationError(f"retries must be an int >= 0, got {retries!r}")
        if backoff_base < 0 or backoff_max < 0:
            raise ValidationError("backoff_base and backoff_max must be >= 0")
        if on_corrupt not in ("raise", "quarantine"):
            raise ValidationError(f"on_corrupt must be 'raise' or 'quarantine', got {on_corrupt!r}")
        self.on_conflict = on_conflict
        self.on_corrupt = on_corrupt
        self.quarantined: list[tuple[str, str]] = []
        self.max_concurrency = max_concurrency
        self.retries = retries
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self._root = f"{self.prefix}/v1/" if self.prefix else "v1/"
        self._client: Any = client
        self._owns_client = client is None
        self._session = session
        self._client_kwargs: dict[str, Any] = {
            k: v
            for k, v in {
                "endpoint_url": endpoint_url,
                "region_name": region_name,
                "aws_access_key_id": aws_access_key_id,
                "aws_secret_access_key": aws_secret_access_key,
                "aws_session_token": aws_session_token,
            }.items()
            if v is not None
        }
        self._config = config
        self._stack: AsyncExitStack | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._etags: dict[Key, str] = {}

    def __repr__(self) -> str:
        # Never the credentials.
        return f"S3Persistence(bucket={self.bucket!r}, prefix={self.prefix!r}, on_conflict={self.on_conflict!r})"

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the S3 client (unless one was injected); calling it again while open does nothing."""
        if self._client is not None:
            return
        ours = self._deps.Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=self.max_concurrency,
            connect_timeout=10,
            read_timeout=30,
        )
        config = ours.merge(self._config) if self._config is not None else ours
        session = self._session if self._session is not None else self._deps.get_session()
        stack = AsyncExitStack()
        try:
            self._client = await stack.enter_async_context(
                session.create_client("s3", config=config, **self._client_kwargs)
            )
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack

    async def aclose(self) -> None:
        """Close the client we created; an injected client stays open."""
        stack, self._stack = self._stack, None
        if self._owns_client:
            self._client = None
        if stack is not None:
            await stack.aclose()

    # -- the Persistence protocol --------------------------------------------------------------------------

    async def load(self) -> Snapshot:
        """List every object under ``{prefix}/v1/`` and fetch them in parallel.

        Raises:
            CorruptDataError: a ``.json`` object that does not decode or does not match its key.
            PersistenceError: the bucket is missing or unreadable, or S3 keeps failing.
        """
        found: list[tuple[str, str, str]] = []  # (s3 key, collection, object name)
        async for key in self._list(self._root):
            parsed = self._parse_key(key)
            if parsed is not None:
                found.append((key, *parsed))
        logger.debug("load s3://%s/%s: %d objects", self.bucket, self._root, len(found))

        decoded: list[tuple[str, _codec.Envelope]] = []
        etags: dict[Key, str] = {}

        async def fetch(item: tuple[str, str, str]) -> None:
            key, collection, name = item
            got = await self._get(key)
            if got is None:  # deleted between the listing and the GET
                return
            raw, etag = got
            try:
                env = self._decode(raw, key, collection, name)
            except CorruptDataError as exc:
                if self.on_corrupt == "raise":
                    raise
                await self._quarantine(key, etag, exc)
                return
            decoded.append((collection, env))
            etags[(collection, env.id)] = etag

        await self._pool(fetch, found, fail_fast=True)
        self._etags.clear()
        self._etags.update(etags)
        return _codec.in_write_order(decoded)

    async def load_one(self, collection: str, record_id: str) -> dict[str, Any] | None:
        """GET one record; ``None`` when there is no such object."""
        key = self._key(collection, record_id)
        got = await self._get(key)
        if got is None:
            self._etags.pop((collection, record_id), None)
            return None
        raw, etag = got
        env = self._decode(raw, key, collection, self._name(key))
        self._etags[(collection, record_id)] = etag
        return env.data

    async def list_keys(self, collection: str | None = None) -> list[Key]:
        """Every stored key (of ``collection``), from one LIST; a hashed (long) name's id is read with a GET."""
        prefix = self._root if collection is None else f"{self._root}{_codec.check_collection(collection)}/"
        keys: list[Key] = []
        async for key in self._list(prefix):
            parsed = self._parse_key(key)
            if parsed is None:
                continue
            coll, name = parsed
            rid = _codec.id_from_object_name(name)
            if rid is None:
                got = await self._get(key)
                if got is None:
                    continue
                rid = self._decode(got[0], key, coll, name).id
            keys.append((coll, rid))
        return keys

    @staticmethod
    def _decode(raw: bytes, key: str, collection: str, name: str) -> _codec.Envelope:
        env = _codec.decode_envelope(raw, key=key, collection=collection, name=name)
        if collection == _codec.SESSIONS:
            _codec.check_stored_session(env.id, env.data, key=key)
        return env

    async def _quarantine(self, key: str, etag: str, exc: CorruptDataError) -> None:
        """Move a corrupt object to ``{prefix}/quarantine/v1/...`` (outside what load lists) and log it.

        The original is deleted only if it is still the corrupt version we read (``If-Match``).
        """
        client = self._require_client()
        target = f"{self.prefix}/quarantine/{key[len(self.prefix) + 1 :]}" if self.prefix else f"quarantine/{key}"

        async def copy() -> None:
            await client.copy_object(Bucket=self.bucket, Key=target, CopySource={"Bucket": self.bucket, "Key": key})

        try:
            await self._retrying("COPY", key, copy)
        except self._deps.ClientError as cause:
            raise self._error("COPY", key, cause) from cause
        await self._delete(key, etag)
        self.quarantined.append((key, str(exc)))
        logger.warning("quarantined corrupt s3://%s/%s as %s: %s", self.bucket, key, target, exc)

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
            outcomes = await self._pool(apply, items, fail_fast=False)
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
                logger.error("save to s3://%s failed: %s", self.bucket, extra)
            if conflicts:
                logger.error("save also met %d conflicts: %s", len(conflicts), [c.s3_key for c in conflicts])
            raise errors[0]
        if conflicts:
            first = conflicts[0]
            names = ", ".join(f"s3://{self.bucket}/{c.s3_key}" for c in conflicts)
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
        s3_key = self._key(collection, record_id)
        etag = self._etags.get(key)
        to_write = body
        merged: dict[str, Any] | None = None
        ours: _codec.Envelope | None = None
        for _ in range(_MAX_CONFLICT_ROUNDS):
            result = await self._put(s3_key, to_write, etag)
            if isinstance(result, str):
                self._remember(key, result, provisional if merged is not None else None)
                return merged
            current = await self._get(s3_key) if result is _Signal.CONFLICT else None
            if current is None:
                # Gone (deleted by another writer, or never there): write ours as a create.
                etag, to_write, merged = None, body, None
                continue
            their_bytes, their_etag = current
            if their_bytes == to_write:
                # Our earlier attempt landed; only its response was lost.
                self._remember(key, their_etag, provisional if merged is not None else None)
                return merged
            if self.on_conflict == "raise":
                logger.warning("conflict on s3://%s/%s (expected %s, found %s)", self.bucket, s3_key, etag, their_etag)
                return _Conflict(key, s3_key, etag, their_etag)
            logger.info("conflict on s3://%s/%s: merging with version %s", self.bucket, s3_key, their_etag)
            etag = their_etag
            if collection != _codec.SESSIONS:
                to_write, merged = body, None  # last writer wins, still conditionally
                continue
            theirs = self._decode(their_bytes, s3_key, collection, self._name(s3_key))
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
            f"s3://{self.bucket}/{s3_key} kept changing: gave up after {_MAX_CONFLICT_ROUNDS} merge rounds",
            key=s3_key,
            expected=etag,
        )

    def _remember(self, key: Key, etag: str, provisional: dict[Key, str] | None) -> None:
        if provisional is None:
            self._etags[key] = etag
        else:
            provisional[key] = etag

    async def _delete_record(self, key: Key) -> _Conflict | None:
        s3_key = self._key(*key)
        etag = self._etags.get(key)
        for _ in range(_MAX_CONFLICT_ROUNDS):
            if await self._delete(s3_key, etag) is not _Signal.CONFLICT:
                self._etags.pop(key, None)
                return None
            current = await self._get(s3_key)
            if current is None:
                self._etags.pop(key, None)
                return None
            if self.on_conflict == "raise":
                logger.warning(
                    "conflict deleting s3://%s/%s (expected %s, found %s)",
                    self.bucket,
                    s3_key,
                    etag,
                    current[1],
                )
                return _Conflict(key, s3_key, etag, current[1])
            # A delete wins over a concurrent update: it is an explicit intent of the user.
            etag = current[1]
        raise ConflictError(
            f"s3://{self.bucket}/{s3_key} kept changing: gave up deleting after {_MAX_CONFLICT_ROUNDS} tries",
            key=s3_key,
            expected=etag,
        )

    # -- single requests (retried, translated) -------------------------------------------------------------

    async def _get(self, key: str) -> tuple[bytes, str] | None:
        """``(bytes, etag)`` of one object, or ``None`` when it does not exist."""
        client = self._require_client()

        async def call() -> tuple[bytes, str]:
            response = await client.get_object(Bucket=self.bucket, Key=key)
            async with response["Body"] as stream:
                data: bytes = await stream.read()
            return data, str(response["ETag"])

        try:
            data, etag = await self._retrying("GET", key, call)
        except self._deps.ClientError as exc:
            code, _ = _error_code(exc)
            if code in _MISSING_KEY_CODES:
                return None
            raise self._error("GET", key, exc) from exc
        logger.debug("GET s3://%s/%s: %d bytes, %s", self.bucket, key, len(data), etag)
        return data, etag

    async def _put(self, key: str, body: bytes, etag: str | None) -> str | _Signal:
        """PUT ``body`` if the object is at ``etag`` (absent when ``None``); the new ETag, or a _Signal."""
        client = self._require_client()
        condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}

        async def call() -> str:
            response = await client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType="application/json", **condition
            )
            return str(response["ETag"])

        try:
            new_etag = await self._retrying("PUT", key, call)
        except self._deps.ClientError as exc:
            code, status = _error_code(exc)
            if code in _CONFLICT_CODES or status == 412:
                return _Signal.CONFLICT
            if code == "NoSuchKey" and etag is not None:
                return _Signal.MISSING
            raise self._error("PUT", key, exc) from exc
        logger.debug("PUT s3://%s/%s: %d bytes, %s -> %s", self.bucket, key, len(body), condition, new_etag)
        return new_etag

    async def _delete(self, key: str, etag: str | None) -> _Signal | None:
        """DELETE the object if it is at ``etag`` (any version when ``None``); CONFLICT if it is not."""
        client = self._require_client()
        condition = {"IfMatch": etag} if etag is not None else {}

        async def call() -> None:
            await client.delete_object(Bucket=self.bucket, Key=key, **condition)

        try:
            await self._retrying("DELETE", key, call)
        except self._deps.ClientError as exc:
            code, status = _error_code(exc)
            if code in _CONFLICT_CODES or status == 412:
                return _Signal.CONFLICT
            if code == "NoSuchKey":
                return None  # already gone
            raise self._error("DELETE", key, exc) from exc
        logger.debug("DELETE s3://%s/%s %s", self.bucket, key, condition)
        return None

    async def _list(self, prefix: str) -> AsyncIterator[str]:
        """Yield every key under ``prefix``, one retried request per page."""
        client = self._require_client()
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}

            async def call(extra: dict[str, str] = extra) -> dict[str, Any]:
                page: dict[str, Any] = await client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, **extra)
                return page

            try:
                page = await self._retrying("LIST", prefix, call)
            except self._deps.ClientError as exc:
                raise self._error("LIST", prefix, exc) from exc
            for entry in page.get("Contents", ()):
                yield entry["Key"]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    async def _retrying(self, what: str, key: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` under the concurrency limit, retrying transient failures with full-jitter backoff.

        ClientErrors that are not transient propagate as they are (the caller interprets 404/412); other
        failures become PersistenceError.
        """
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.max_concurrency)
        attempt = 0
        while True:
            try:
                async with self._semaphore:
                    return await call()
            except Exception as exc:
                if not self._is_transient(exc):
                    if isinstance(exc, self._deps.ClientError):
                        raise
                    raise self._error(what, key, exc) from exc
                if attempt >= self.retries:
                    raise self._error(what, key, exc, retried=attempt) from exc
                ceiling = min(self.backoff_max, self.backoff_base * 2**attempt)
                delay = random.uniform(0, ceiling)
                attempt += 1
                logger.warning(
                    "%s s3://%s/%s failed (%s); retry %d/%d in %.3fs",
                    what,
                    self.bucket,
                    key,
                    _describe(exc),
                    attempt,
                    self.retries,
                    delay,
                )
                await asyncio.sleep(delay)

    def _is_transient(self, exc: BaseException) -> bool:
        if isinstance(exc, self._deps.ClientError):
            code, status = _error_code(exc)
            return status >= 500 or status == 429 or code in _TRANSIENT_CODES
        if isinstance(exc, self._deps.SSLError):
            return False
        return isinstance(exc, self._deps.transient)

    def _error(self, what: str, key: str, exc: BaseException, *, retried: int = 0) -> PersistenceError:
        after = f" after {retried} retries" if retried else ""
        return PersistenceError(
            f"S3 {what} s3://{self.bucket}/{key} failed{after}: {_describe(exc)}", key=key, cause=exc
        )

    # -- helpers -------------------------------------------------------------------------------------------

    def _require_client(self) -> Any:
        if self._client is None:
            raise ClosedError("S3Persistence is not open: call open() first (the store's start() does)")
        return self._client

    def _key(self, collection: str, record_id: str) -> str:
        return f"{self._root}{_codec.check_collection(collection)}/{_codec.object_name(record_id)}.json"

    @staticmethod
    def _name(key: str) -> str:
        return key.rsplit("/", 1)[1][: -len(".json")]

    def _parse_key(self, key: str) -> tuple[str, str] | None:
        """``(collection, object name)`` of a listed key; ``None`` (and a warning) for a non-record object."""
        rest = key[len(self._root) :]
        if not rest.endswith(".json"):
            logger.warning("load: skipping s3://%s/%s (not a .json record)", self.bucket, key)
            return None
        collection, sep, name = rest.partition("/")
        name = name[: -len(".json")]
        try:
            _codec.check_collection(collection)
        except ValidationError:
            sep = ""
        if not sep or not name or "/" in name:
            raise CorruptDataError(
                f"s3://{self.bucket}/{key} is not a {{collection}}/{{name}}.json record key", key=key
            )
        return collection, name

    async def _pool(
        self, fn: Callable[[I], Awaitable[T]], items: Iterable[I], *, fail_fast: bool
    ) -> list[T | BaseException]:
        """Apply ``fn`` to every item with at most ``max_concurrency`` workers, in order of results.

        With ``fail_fast`` the first failure cancels the rest and is raised; otherwise failures are returned
        in place of results.
        """
        work = list(items)
        results: list[T | BaseException] = [None] * len(work)  # type: ignore[list-item]
        queue = iter(enumerate(work))

        async def worker() -> None:
            for index, item in queue:  # one shared iterator: each item is taken by exactly one worker
                try:
                    results[index] = await fn(item)
                except Exception as exc:
                    if fail_fast:
                        raise
                    results[index] = exc

        failure: BaseException | None = None
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self.max_concurrency, len(work))):
                    group.create_task(worker())
        except ExceptionGroup as eg:
            failure = eg.exceptions[0]  # raised outside the handler, so it keeps its own __cause__
            for other in eg.exceptions[1:]:
                failure.add_note(f"also failed in the same step: {other!r}")  # none of a group is dropped
        if failure is not None:
            raise failure
        return results


def _check_bucket(bucket: object) -> str:
    if not isinstance(bucket, str) or not _BUCKET_RE.fullmatch(bucket) or ".." in bucket or _IP_RE.fullmatch(bucket):
        raise ValidationError(
            f"not a valid S3 bucket name: {bucket!r} (3-63 characters: lowercase letters, digits, '.', '-')"
        )
    return bucket


def _check_prefix(prefix: object) -> str:
    if not isinstance(prefix, str):
        raise ValidationError(f"prefix must be a str, got {type(prefix).__name__}")
    normal = prefix.strip("/")
    if len(normal.encode("utf-8", "surrogatepass")) > 512:
        raise ValidationError("prefix is longer than 512 bytes")
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in normal):
        raise ValidationError(f"prefix must not contain control characters: {prefix!r}")
    if normal and any(part in ("", ".", "..") for part in normal.split("/")):
        raise ValidationError(f"prefix must not contain empty, '.' or '..' segments: {prefix!r}")
    return normal
