"""The S3 wire: one retried, translated request at a time, and a bounded pool of them.

:class:`Wire` is what :class:`~aiomemdb.persistence.S3Persistence` and its conditional-write probe use to talk
to the server. Every request runs under one concurrency limit and is retried on transient failures (HTTP 5xx,
throttling, timeouts, dropped connections) with exponential backoff and full jitter
(``uniform(0, min(backoff_max, backoff_base * 2**attempt))``); botocore's own retries are off so the behaviour
is ours alone. A 412 / 409 answer to a conditional request comes back as :data:`Signal.CONFLICT`, a missing
object as ``None`` or :data:`Signal.MISSING`; anything else raises :class:`~aiomemdb.PersistenceError` with
the ``s3://`` key and the cause, never the request's headers (they carry signatures).

With ``conditional=False`` (``S3Persistence(single_writer=True)``) puts and deletes are sent without
``If-Match`` / ``If-None-Match``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from aiomemdb._exceptions import ClosedError, PersistenceError

if TYPE_CHECKING:
    from botocore.config import Config

__all__ = ["CONFLICT_CODES", "Signal", "Wire", "describe", "error_code", "load_deps"]

logger = logging.getLogger("aiomemdb.s3")

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741

CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
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


def load_deps() -> _Deps:
    """The third-party names S3 needs; ImportError naming the extra when aiobotocore is missing."""
    global _deps
    if _deps is None:
        _deps = _Deps()
    return _deps


class Signal(enum.Enum):
    """What a conditional request reported instead of success."""

    CONFLICT = "conflict"  # 412 / 409: the object is not the version we named
    MISSING = "missing"  # 404 on an If-Match write: the object is gone


def error_code(exc: BaseException) -> tuple[str, int]:
    """S3's error code and HTTP status of a ClientError (``("", 0)`` for anything else)."""
    response: Mapping[str, Any] = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def describe(exc: BaseException) -> str:
    """A short description of ``exc`` without request details (headers carry signatures)."""
    deps = load_deps()
    if isinstance(exc, deps.ClientError):
        code, status = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "")  # type: ignore[attr-defined]
        return f"{code or 'error'} (HTTP {status}){': ' + message if message else ''}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class Wire:
    """Single S3 requests on one bucket: bounded, retried, translated.

    ``client`` is set by the owner (:meth:`S3Persistence.open`) and cleared on close; a request without it
    raises :class:`~aiomemdb.ClosedError`.
    """

    def __init__(
        self,
        bucket: str,
        *,
        max_concurrency: int,
        retries: int,
        backoff_base: float,
        backoff_max: float,
        conditional: bool,
    ) -> None:
        self.deps = load_deps()
        self.bucket = bucket
        self.max_concurrency = max_concurrency
        self.retries = retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.conditional = conditional
        self.client: Any = None
        self._semaphore: asyncio.Semaphore | None = None


    async def get(self, key: str) -> tuple[bytes, str] | None:
        """``(bytes, etag)`` of one object, or ``None`` when it does not exist."""
        client = self.require_client()

        async def call() -> tuple[bytes, str]:
            response = await client.get_object(Bucket=self.bucket, Key=key)
            async with response["Body"] as stream:
                data: bytes = await stream.read()
            return data, str(response["ETag"])

        try:
            data, etag = await self.retrying("GET", key, call)
        except self.deps.ClientError as exc:
            code, _ = error_code(exc)
            if code in _MISSING_KEY_CODES:
                return None
            raise self.error("GET", key, exc) from exc
        logger.debug("GET s3://%s/%s: %d bytes, %s", self.bucket, key, len(data), etag)
        return data, etag

    async def put(
        self, key: str, body: bytes, etag: str | None, *, condition: Mapping[str, str] | None = None
    ) -> str | Signal:
        """PUT ``body`` if the object is at ``etag`` (absent when ``None``); the new ETag, or a Signal.

        Unconditional when the wire is not ``conditional``; ``condition`` (botocore's ``IfMatch`` /
        ``IfNoneMatch`` keywords) overrides both, for the probe.
        """
        client = self.require_client()
        if condition is None and not self.conditional:
            condition = {}
        elif condition is None:
            condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}

        async def call() -> str:
            response = await client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType="application/json", **condition
            )
            return str(response["ETag"])

        try:
            new_etag = await self.retrying("PUT", key, call)
        except self.deps.ClientError as exc:
            code, status = error_code(exc)
            if code in CONFLICT_CODES or status == 412:
                return Signal.CONFLICT
            if code == "NoSuchKey" and etag is not None:
                return Signal.MISSING
            raise self.error("PUT", key, exc) from exc
        logger.debug("PUT s3://%s/%s: %d bytes, %s -> %s", self.bucket, key, len(body), condition, new_etag)
        return new_etag

    async def delete(self, key: str, etag: str | None) -> Signal | None:
        """DELETE the object if it is at ``etag`` (any version when ``None``); CONFLICT if it is not."""
        client = self.require_client()
        condition = {"IfMatch": etag} if etag is not None and self.conditional else {}

        async def call() -> None:
            await client.delete_object(Bucket=self.bucket, Key=key, **condition)

        try:
            await self.retrying("DELETE", key, call)
        except self.deps.ClientError as exc:
            code, status = error_code(exc)
            if code in CONFLICT_CODES or status == 412:
                return Signal.CONFLICT
            if code == "NoSuchKey":
                return None  # already gone
            raise self.error("DELETE", key, exc) from exc
        logger.debug("DELETE s3://%s/%s %s", self.bucket, key, condition)
        return None

    async def keys(self, prefix: str) -> AsyncIterator[str]:
        """Yield every key under ``prefix``, one retried request per page."""
        client = self.require_client()
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}

            async def call(extra: dict[str, str] = extra) -> dict[str, Any]:
                page: dict[str, Any] = await client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, **extra)
                return page

            try:
                page = await self.retrying("LIST", prefix, call)
            except self.deps.ClientError as exc:
                raise self.error("LIST", prefix, exc) from exc
            for entry in page.get("Contents", ()):
                yield entry["Key"]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    async def retrying(self, what: str, key: str, call: Callable[[], Awaitable[T]]) -> T:
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
                if not self.is_transient(exc):
                    if isinstance(exc, self.deps.ClientError):
                        raise
                    raise self.error(what, key, exc) from exc
                if attempt >= self.retries:
                    raise self.error(what, key, exc, retried=attempt) from exc
                ceiling = min(self.backoff_max, self.backoff_base * 2**attempt)
                delay = random.uniform(0, ceiling)
                attempt += 1
                logger.warning(
                    "%s s3://%s/%s failed (%s); retry %d/%d in %.3fs",
                    what,
                    self.bucket,
                    key,
                    describe(exc),
                    attempt,
                    self.retries,
                    delay,
                )
                await asyncio.sleep(delay)

    def is_transient(self, exc: BaseException) -> bool:
        if isinstance(exc, self.deps.ClientError):
            code, status = error_code(exc)
            return status >= 500 or status == 429 or code in _TRANSIENT_CODES
        if isinstance(exc, self.deps.SSLError):
            return False
        return isinstance(exc, self.deps.transient)

    def error(self, what: str, key: str, exc: BaseException, *, retried: int = 0) -> PersistenceError:
        after = f" after {retried} retries" if retried else ""
        return PersistenceError(
            f"S3 {what} s3://{self.bucket}/{key} failed{after}: {describe(exc)}", key=key, cause=exc
        )

    # -- helpers -------------------------------------------------------------------------------------------

    def require_client(self) -> Any:
        """The open client, or ClosedError."""
        if self.client is None:
            raise ClosedError("S3Persistence is not open: call open() first (the store's start() does)")
        return self.client


    async def pool(
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

