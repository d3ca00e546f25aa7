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

The server is checked, not trusted
    ``open()`` verifies once per bucket and prefix that the server enforces those conditions
    (:mod:`aiomemdb.persistence._s3_probe`; the verdict is cached in ``{prefix}/v1/_meta/conditional-writes``).
    A server that ignores them is refused with :class:`~aiomemdb.UnsafeStorageError`, unless the user says
    ``single_writer=True``: then no probe runs, every write is unconditional (no other writer may share the
    prefix), and ``stats()`` reports ``single_writer=True, conditional_writes=False``. ``read_only=True``
    (the command line's read commands) neither probes nor writes.

Retries
    Transient failures are retried by :class:`~aiomemdb.persistence._s3_wire.Wire` with full-jitter backoff;
    anything else raises :class:`~aiomemdb.PersistenceError` with the ``s3://`` key and the cause. When
    ``save()`` raises, the store keeps its data dirty and sends it again later.

Names
    Bucket and prefix checks and the record keys: :mod:`aiomemdb.persistence._s3_keys`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Literal

from aiomemdb import _codec
from aiomemdb._exceptions import CorruptDataError, PersistenceError, UnsafeStorageError, ValidationError
from aiomemdb.persistence._base import Changeset, Key, Snapshot
from aiomemdb.persistence._s3_keys import Keys, check_bucket, check_prefix, name_of
from aiomemdb.persistence._s3_probe import check_conditional_writes
from aiomemdb.persistence._s3_wire import Wire, load_deps
from aiomemdb.persistence._s3_write import S3Writer

if TYPE_CHECKING:
    from botocore.config import Config

__all__ = ["S3Persistence"]

logger = logging.getLogger("aiomemdb.s3")

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
        single_writer: promise that this is the only process writing under ``bucket``/``prefix``. No
            conditional-write check runs and every write is unconditional: for servers that ignore
            ``If-Match`` / ``If-None-Match`` (s3rver, older MinIO). Two writers would overwrite each other.
        read_only: never write (``save()`` raises) and skip the conditional-write check, which writes a probe.

    Attributes:
        quarantined: ``(key, reason)`` for every object moved aside by this instance.
        single_writer: as given; reported by ``stats()``.
        conditional_writes: ``True`` once ``open()`` verified that the server enforces conditional writes;
            ``False`` under ``single_writer``; ``None`` before ``open()`` and when ``read_only``.

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
        single_writer: bool = False,
        read_only: bool = False,
    ) -> None:
        self._deps = load_deps()
        self.bucket = check_bucket(bucket)
        self.prefix = check_prefix(prefix)
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
        for name, flag in (("single_writer", single_writer), ("read_only", read_only)):
            if not isinstance(flag, bool):
                raise ValidationError(f"{name} must be a bool, got {flag!r}")
        self._on_conflict: Literal["merge", "raise"] = on_conflict
        self.on_corrupt = on_corrupt
        self.single_writer = single_writer
        self.read_only = read_only
        self.conditional_writes: bool | None = None
        self.quarantined: list[tuple[str, str]] = []
        self._keys = Keys(self.bucket, self.prefix)
        self._root = self._keys.root
        self._wire = Wire(
            self.bucket,
            max_concurrency=max_concurrency,
            retries=retries,
            backoff_base=float(backoff_base),
            backoff_max=float(backoff_max),
            conditional=not single_writer,
        )
        self._wire.client = client
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
        self._checked = False
        self._etags: dict[Key, str] = {}
        self._writer = S3Writer(
            self._wire, self._etags, on_conflict=lambda: self._on_conflict, key_of=self._keys.key, decode=self._decode
        )

    @property
    def on_conflict(self) -> Literal["merge", "raise"]:
        """The conflict policy; may be changed while open (an operator allowing a merge after a conflict)."""
        return self._on_conflict

    @on_conflict.setter
    def on_conflict(self, value: Literal["merge", "raise"]) -> None:
        if value not in ("merge", "raise"):
            raise ValidationError(f"on_conflict must be 'merge' or 'raise', got {value!r}")
        self._on_conflict = value

    @property
    def max_concurrency(self) -> int:
        """The most requests in flight at once."""
        return self._wire.max_concurrency

    @property
    def retries(self) -> int:
        """How many times a transient failure is retried."""
        return self._wire.retries

    def __repr__(self) -> str:
        # Never the credentials.
        extra = ", single_writer=True" if self.single_writer else ""
        extra += ", read_only=True" if self.read_only else ""
        return (
            f"S3Persistence(bucket={self.bucket!r}, prefix={self.prefix!r}, on_conflict={self.on_conflict!r}{extra})"
        )

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the S3 client (unless one was injected) and check the server; again while open does nothing.

        Raises:
            UnsafeStorageError: the server ignores conditional writes and ``single_writer`` is not set.
            PersistenceError: the check could not run (the bucket is missing, access is denied, ...).
        """
        stack: AsyncExitStack | None = None
        if self._wire.client is None:
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
                self._wire.client = await stack.enter_async_context(
                    session.create_client("s3", config=config, **self._client_kwargs)
                )
            except BaseException:
                await stack.aclose()
                raise
            self._stack = stack
        if self._checked:
            return
        try:
            await self._check_server()
        except BaseException:
            if stack is not None:
                await self.aclose()
            raise
        self._checked = True

    async def _check_server(self) -> None:
        if self.read_only:
            return
        if self.single_writer:
            self.conditional_writes = False
            logger.warning(
                "s3://%s/%s: single_writer=True, writes are unconditional; no other writer may share this prefix",
                self.bucket,
                self._root,
            )
            return
        verdict = await check_conditional_writes(self._wire, self._root)
        if not verdict.enforced:
            where = f"s3://{self.bucket}/{self._root}"
            raise UnsafeStorageError(
                f"the S3 server behind {where} does not enforce conditional writes: it {verdict.behaviour}. "
                "Replicas sharing this prefix would overwrite each other's writes without an error. Use a "
                "server that enforces If-Match / If-None-Match (AWS S3, a current MinIO), or, if this is the "
                "only process that ever writes under this prefix, pass S3Persistence(..., single_writer=True).",
                key=where,
                behaviour=verdict.behaviour,
            )
        self.conditional_writes = True

    async def aclose(self) -> None:
        """Close the client we created; an injected client stays open."""
        stack, self._stack = self._stack, None
        if self._owns_client:
            self._wire.client = None
            self._checked = False
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
        async for key in self._wire.keys(self._root):
            parsed = self._keys.parse(key)
            if parsed is not None:
                found.append((key, *parsed))
        logger.debug("load s3://%s/%s: %d objects", self.bucket, self._root, len(found))

        decoded: list[tuple[str, _codec.Envelope]] = []
        etags: dict[Key, str] = {}

        async def fetch(item: tuple[str, str, str]) -> None:
            key, collection, name = item
            got = await self._wire.get(key)
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

        await self._wire.pool(fetch, found, fail_fast=True)
        self._etags.clear()
        self._etags.update(etags)
        return _codec.in_write_order(decoded)

    async def load_one(self, collection: str, record_id: str) -> dict[str, Any] | None:
        """GET one record; ``None`` when there is no such object."""
        key = self._keys.key(collection, record_id)
        got = await self._wire.get(key)
        if got is None:
            self._etags.pop((collection, record_id), None)
            return None
        raw, etag = got
        env = self._decode(raw, key, collection, name_of(key))
        self._etags[(collection, record_id)] = etag
        return env.data

    async def list_keys(self, collection: str | None = None) -> list[Key]:
        """Every stored key (of ``collection``), from one LIST; a hashed (long) name's id is read with a GET."""
        prefix = self._root if collection is None else f"{self._root}{_codec.check_collection(collection)}/"
        keys: list[Key] = []
        async for key in self._wire.keys(prefix):
            parsed = self._keys.parse(key)
            if parsed is None:
                continue
            coll, name = parsed
            rid = _codec.id_from_object_name(name)
            if rid is None:
                got = await self._wire.get(key)
                if got is None:
                    continue
                rid = self._decode(got[0], key, coll, name).id
            keys.append((coll, rid))
        return keys

    async def save(self, changeset: Changeset) -> Mapping[Key, dict[str, Any]] | None:
        """Write every upsert and delete of ``changeset`` (see :meth:`S3Writer.save`).

        Raises:
            PersistenceError: an item failed, or this instance is ``read_only``.
            ConflictError: with ``on_conflict="raise"``, one or more writes met a newer version.
        """
        if self.read_only:
            raise PersistenceError(f"s3://{self.bucket}/{self._root} was opened read-only", key=self._root)
        return await self._writer.save(changeset)

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
        client = self._wire.require_client()
        target = f"{self.prefix}/quarantine/{key[len(self.prefix) + 1 :]}" if self.prefix else f"quarantine/{key}"

        async def copy() -> None:
            await client.copy_object(Bucket=self.bucket, Key=target, CopySource={"Bucket": self.bucket, "Key": key})

        try:
            await self._wire.retrying("COPY", key, copy)
        except self._deps.ClientError as cause:
            raise self._wire.error("COPY", key, cause) from cause
        await self._wire.delete(key, etag)
        self.quarantined.append((key, str(exc)))
        logger.warning("quarantined corrupt s3://%s/%s as %s: %s", self.bucket, key, target, exc)
