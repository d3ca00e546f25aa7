"""The names S3Persistence uses: bucket and prefix checks, and the key of each record.

A record lives at ``{prefix}/v1/{collection}/{object_name(id)}.json`` (``v1/...`` when the prefix is empty). S3
keys keep the first layout's names (:func:`aiomemdb._codec.object_name`): keys are byte strings that S3 compares
exactly, so ``Ada``/``ada`` and NFC/NFD forms are already distinct keys; the case-folding names of
:mod:`aiomemdb.persistence._names` are for file systems. ``{prefix}/v1/_meta/`` holds the store's own objects
(the conditional-write verdict and probes, :mod:`aiomemdb.persistence._s3_probe`), never a record.
"""

from __future__ import annotations

import logging
import re

from aiomemdb import _codec
from aiomemdb._exceptions import CorruptDataError, ValidationError
from aiomemdb.persistence._s3_probe import META_DIR

__all__ = ["Keys", "check_bucket", "check_prefix", "name_of"]

logger = logging.getLogger("aiomemdb.s3")

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_RE = re.compile(r"\d+\.\d+\.\d+\.\d+")


def check_bucket(bucket: object) -> str:
    """``bucket`` if it is a valid S3 bucket name, else ValidationError."""
    if not isinstance(bucket, str) or not _BUCKET_RE.fullmatch(bucket) or ".." in bucket or _IP_RE.fullmatch(bucket):
        raise ValidationError(
            f"not a valid S3 bucket name: {bucket!r} (3-63 characters: lowercase letters, digits, '.', '-')"
        )
    return bucket


def check_prefix(prefix: object) -> str:
    """The prefix without leading and trailing ``/``, else ValidationError (control characters, empty, ``.``
    or ``..`` segments, over 512 bytes)."""
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


def name_of(key: str) -> str:
    """The object name of a record key (its last segment without ``.json``)."""
    return key.rsplit("/", 1)[1][: -len(".json")]


class Keys:
    """The record keys under one bucket and (checked) prefix."""

    __slots__ = ("bucket", "root")

    def __init__(self, bucket: str, prefix: str) -> None:
        self.bucket = bucket
        self.root = f"{prefix}/v1/" if prefix else "v1/"

    def key(self, collection: str, record_id: str) -> str:
        return f"{self.root}{_codec.check_collection(collection)}/{_codec.object_name(record_id)}.json"

    def parse(self, key: str) -> tuple[str, str] | None:
        """``(collection, object name)`` of a listed key; ``None`` for the store's own or a non-record object.

        Raises:
            CorruptDataError: a ``.json`` key that is not ``{collection}/{name}.json`` under the root.
        """
        rest = key[len(self.root) :]
        if rest.startswith(META_DIR):
            return None  # the conditional-write verdict and probes
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
