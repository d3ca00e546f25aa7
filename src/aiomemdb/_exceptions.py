"""The error tree of aiomemdb.

Every error the library raises on purpose derives from :class:`AiomemdbError`, and each is also a subclass of
the builtin exception a caller would naturally catch, so ``except ValueError`` keeps working::

    AiomemdbError
    ├── ValidationError(ValueError)          bad id, bad shape, bad argument
    │   └── SerializationError               a value orjson cannot encode (with its path)
    ├── ConflictError                        stale expected_version, or a write lost to another replica
    ├── OwnershipError(PermissionError)      a session owned by another user_id
    ├── NotFoundError(KeyError)              upsert_run on a session that does not exist
    ├── PersistenceError(OSError)            storage failed (key + cause)
    │   ├── CorruptDataError                 a stored object cannot be decoded (key + cause)
    │   ├── LockedError                      another writer holds the directory (its pid)
    │   └── UnsafeStorageError               the S3 server ignores conditional writes (and how to proceed)
    └── ClosedError(RuntimeError)            the store is closed (or the call would deadlock)

and one warning, :class:`UnclosedStoreWarning` (a ``RuntimeWarning``): a store garbage-collected while open.

Third-party errors (orjson, botocore, OSError) are translated at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "AiomemdbError",
    "ClosedError",
    "ConflictError",
    "CorruptDataError",
    "LockedError",
    "NotFoundError",
    "OwnershipError",
    "PersistenceError",
    "SerializationError",
    "UnclosedStoreWarning",
    "UnsafeStorageError",
    "ValidationError",
]


class AiomemdbError(Exception):
    """Root of every error aiomemdb raises on purpose."""


class ValidationError(AiomemdbError, ValueError):
    """An argument or a record does not have the required shape (bad id, missing field, wrong type)."""


class SerializationError(ValidationError):
    """A value cannot be encoded as JSON by orjson.

    Attributes:
        path: where the value sits inside the record, e.g. ``runs[3].metrics.t``.
    """

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class ConflictError(AiomemdbError):
    """A conditional write failed: a stale ``expected_version``, or another replica's concurrent write.

    Attributes:
        key: the record (or session id, or storage key) in conflict; the first one if there are several.
        expected: the version (or ETag) the writer expected, if known.
        actual: the version (or ETag) found, if known.
        keys: every conflicting record as ``(collection, id)`` when a flush met several; pass the ids to
            :meth:`~aiomemdb.AsyncInMemoryDb.refresh` to take the stored version.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str = "",
        expected: object = None,
        actual: object = None,
        keys: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.key = key
        self.expected = expected
        self.actual = actual
        self.keys = keys


class OwnershipError(AiomemdbError, PermissionError):
    """A write targeted a record owned by another ``user_id`` (the owner guard)."""


class NotFoundError(AiomemdbError, KeyError):
    """An operation that needs an existing record (such as ``upsert_run``) found none."""

    def __str__(self) -> str:
        # KeyError.__str__ repr()s its argument; a message reads better.
        return str(self.args[0]) if self.args else ""


class PersistenceError(AiomemdbError, OSError):
    """Reading or writing the persistent storage failed.

    Attributes:
        key: the object (file path or S3 key) involved, when there is one.
        cause: the underlying exception (also chained as ``__cause__``).
    """

    def __init__(self, message: str, *, key: str = "", cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.cause = cause

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CorruptDataError(PersistenceError):
    """A stored object exists but cannot be decoded or does not have the expected format."""


class LockedError(PersistenceError):
    """Another open store (in this process or another) holds the directory's ``LOCK``: one writer per directory.

    Attributes:
        pid: the holder's process id, as it wrote it into the lock file (``None`` if it could not be read).
    """

    def __init__(self, message: str, *, key: str = "", pid: int | None = None) -> None:
        super().__init__(message, key=key)
        self.pid = pid


class UnsafeStorageError(PersistenceError):
    """The S3 server does not enforce conditional writes, so replicas could overwrite each other silently.

    Attributes:
        behaviour: what the server did with the probe's conditional requests.
    """

    def __init__(self, message: str, *, key: str = "", behaviour: str = "") -> None:
        super().__init__(message, key=key)
        self.behaviour = behaviour


class ClosedError(AiomemdbError, RuntimeError):
    """The store is closed, or a blocking call was made from the store's own loop thread (it would deadlock)."""


class UnclosedStoreWarning(RuntimeWarning):
    """A store with persistence was garbage-collected while still open: unflushed changes may be lost.

    A ``RuntimeWarning`` (shown by default), not a ``ResourceWarning`` (hidden by default): losing data should be seen.
    """
