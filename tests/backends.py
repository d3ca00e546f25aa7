"""The persistences every backend-parametrised test runs against, behind one small interface."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson

from aiomemdb import DirectoryPersistence, HookPersistence
from aiomemdb.persistence import Persistence


class Backend:
    """Makes fresh persistence objects that all see the same stored data (so a new one is a restart)."""

    name = "base"

    def make(self) -> Persistence:
        raise NotImplementedError

    def make_reader(self) -> Persistence:
        """A persistence that only reads, usable beside an open store (a directory's lock refuses a writer)."""
        return self.make()

    async def assert_contained(self) -> None:
        """Assert that nothing was written outside this backend's root."""


class DirectoryBackend(Backend):
    name = "directory"

    def __init__(self, root: Path) -> None:
        self.root = root / "store"
        self.sibling = root / "sibling"
        self.sibling.mkdir()

    def make(self) -> Persistence:
        return DirectoryPersistence(self.root, fsync=False)

    def make_reader(self) -> Persistence:
        return DirectoryPersistence(self.root, fsync=False, read_only=True)

    async def assert_contained(self) -> None:
        files = [p for p in self.root.parent.rglob("*") if p.is_file()]
        assert files, "nothing was written"
        files = [p for p in files if p not in (self.root / "LAYOUT", self.root / "LOCK")]  # the store's own
        for path in files:
            assert path.resolve().is_relative_to((self.root / "v1").resolve()), path
            assert path.parent.parent == self.root / "v1", path


class HooksBackend(Backend):
    """The user's own storage: one JSON blob, as in the seed recipe."""

    name = "hooks"

    def __init__(self) -> None:
        self.blob: bytes | None = None

    def make(self) -> Persistence:
        async def load() -> dict[str, Any] | None:
            return None if self.blob is None else orjson.loads(self.blob)

        async def save(snapshot: dict[str, Any]) -> None:
            self.blob = orjson.dumps(snapshot)

        return HookPersistence(load=load, save=save)

    async def assert_contained(self) -> None:
        assert self.blob is not None
        assert set(orjson.loads(self.blob)) == {"format_version", "collections"}


class S3Backend(Backend):
    name = "s3"

    def __init__(self, bucket: str, options: dict[str, Any], *, name: str = "s3") -> None:
        self.name = name
        self.bucket = bucket
        self.options = options
        self.prefix = f"tenant-{uuid.uuid4().hex[:6]}/app"

    def make(self) -> Persistence:
        from aiomemdb import S3Persistence

        return S3Persistence(self.bucket, prefix=self.prefix, **self.options)

    def make_reader(self) -> Persistence:
        from aiomemdb import S3Persistence

        return S3Persistence(self.bucket, prefix=self.prefix, **{**self.options, "read_only": True})

    async def assert_contained(self) -> None:
        from aiobotocore.session import get_session

        client_options = {k: v for k, v in self.options.items() if k != "single_writer"}
        async with get_session().create_client("s3", **client_options) as client:
            keys: list[str] = []
            paginator = client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket):
                keys.extend(o["Key"] for o in page.get("Contents", []))
        assert keys, "nothing was written"
        # the start's server check caches its verdict there; nothing else of ours lives outside the collection
        keys = [key for key in keys if key != f"{self.prefix}/v1/_meta/conditional-writes"]
        for key in keys:
            assert key.startswith(f"{self.prefix}/v1/sessions/"), key
            assert "/" not in key[len(f"{self.prefix}/v1/sessions/") :], key
