"""A new user's plausible first mistakes fail at the call that made them, say what to write, and store nothing.

Construction arguments (``persistence=`` given a path or a wrong object, synchronous ``load=``/``save=`` hooks)
and the timestamps a caller passes (strings, datetimes, NaN …): each is converted when unambiguous or refused
with a :class:`ValidationError` naming what to do, never silently replaced.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from aiomemdb import AsyncInMemoryDb, DirectoryPersistence, InMemoryDb, ValidationError
from aiomemdb._options import callable_kind, check_hooks, check_persistence

MAY_1 = 1_714_521_600  # 2024-05-01T00:00:00Z


# -- persistence= ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["./sessions", Path("./sessions"), b"./sessions"], ids=["str", "Path", "bytes"])
@pytest.mark.parametrize("cls", [AsyncInMemoryDb, InMemoryDb], ids=["async", "sync"])
@pytest.mark.parametrize("durability", ["interval", "journal"])
def test_a_path_as_persistence_points_at_directory_persistence(
    cls: Any, path: Any, durability: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path as persistence= raises ValidationError showing DirectoryPersistence(<that path>); no folder appears."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationError) as caught:
        cls(persistence=path, durability=durability)
    assert f"persistence=DirectoryPersistence({os.fsdecode(path)!r})" in str(caught.value)
    assert "not a path" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


class _HalfPersistence:
    async def open(self) -> None: ...

    async def load(self) -> dict[str, Any]:
        return {}


class _SyncPersistence(_HalfPersistence):
    async def load_one(self, collection: str, record_id: str) -> None: ...

    def save(self, changeset: Any) -> None: ...

    async def aclose(self) -> None: ...


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (_HalfPersistence(), "_HalfPersistence lacks load_one, save, aclose"),
        (object(), "object lacks open, load, load_one, save, aclose"),
        ({}, "pass storage_dict= instead"),
        (DirectoryPersistence, "takes an instance, got the class DirectoryPersistence"),
        (_SyncPersistence(), "_SyncPersistence.save is a plain function"),
    ],
    ids=["half", "object", "dict", "class", "sync-method"],
)
def test_an_object_that_is_not_a_persistence_is_named_with_what_it_lacks(value: object, words: str) -> None:
    """A non-persistence raises ValidationError naming the missing (or non-async) methods, at construction."""
    with pytest.raises(ValidationError, match="persistence=") as caught:
        AsyncInMemoryDb(persistence=value)  # type: ignore[arg-type]
    assert words in str(caught.value)


def test_real_persistences_pass_the_check_unchanged(tmp_path: Path) -> None:
    """Built-in persistences and None are returned as they are."""
    directory = DirectoryPersistence(tmp_path)
    assert check_persistence(directory) is directory
    assert check_persistence(None) is None


# -- load= / save= hooks ---------------------------------------------------------------------------------------


def _sync_load() -> dict[str, Any]:
    return {}


def _sync_save(snapshot: dict[str, Any]) -> None:
    return None


def _gen_load() -> Any:
    yield {}


class _SyncCallable:
    def __call__(self) -> dict[str, Any]:
        return {}


@pytest.mark.parametrize(
    ("hooks", "words"),
    [
        ({"load": _sync_load}, ["load= must be an async function", "async def load() -> dict | None"]),
        ({"save": _sync_save}, ["save= must be an async function", "async def save(snapshot: dict) -> None"]),
        ({"load": _SyncCallable()}, ["load=", "_SyncCallable (its __call__)", "async def load()"]),
        ({"load": _gen_load}, ["load=", "async def load()"]),
        ({"load": {"s1": {}}}, ["load=", "got dict", "storage_dict="]),
        ({"save": 3}, ["save=", "got int"]),
    ],
    ids=["sync-load", "sync-save", "sync-call", "generator", "dict", "not-callable"],
)
@pytest.mark.parametrize("cls", [AsyncInMemoryDb, InMemoryDb], ids=["async", "sync"])
def test_a_sync_hook_is_refused_at_construction_naming_it(cls: Any, hooks: dict[str, Any], words: list[str]) -> None:
    """A plainly synchronous (or non-callable) hook raises ValidationError at construction, showing ``async def``."""
    with pytest.raises(ValidationError) as caught:
        cls(**hooks)
    for word in words:
        assert word in str(caught.value)


class _AsyncCallable:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        return {"s1": {"session_id": "s1", "created_at": 1, "updated_at": 2}}


async def _async_load(extra: str = "") -> dict[str, Any]:
    return {"s1": {"session_id": "s1", "created_at": 1, "updated_at": 2}}


def _decorated(fn: Callable[[], Awaitable[dict[str, Any]]]) -> Callable[[], Awaitable[dict[str, Any]]]:
    @functools.wraps(fn)
    def wrapper() -> Awaitable[dict[str, Any]]:  # a plain def returning the coroutine, as some decorators do
        return fn()

    return wrapper


@pytest.mark.parametrize(
    "load",
    [
        _async_load,
        functools.partial(_async_load, "x"),
        _AsyncCallable(),
        lambda: _async_load(),
        _decorated(_async_load),
    ],
    ids=["async-def", "partial", "async-call", "lambda-coroutine", "decorated"],
)
async def test_async_hooks_in_every_shape_are_accepted_and_used(load: Any) -> None:
    """An async def, a partial of one, an async __call__, a lambda returning a coroutine, a decorated one: all load."""
    async with AsyncInMemoryDb(load=load) as db:
        assert (await db.get_session("s1") or {})["updated_at"] == 2


def test_callable_kind_sees_through_partials_methods_and_call() -> None:
    """callable_kind says async, sync or unknown without calling anything."""

    class Holder:
        async def method(self) -> None: ...

        def plain(self) -> None: ...

    assert callable_kind(functools.partial(functools.partial(_async_load, "a"))) == "async"
    assert callable_kind(Holder().method) == "async"
    assert callable_kind(Holder().plain) == "sync"
    assert callable_kind(_SyncCallable()) == "sync"
    assert callable_kind(lambda: None) == "unknown"
    assert callable_kind(dict) == "unknown"
    assert check_hooks(None, None) == (None, None)


async def test_a_lambda_load_hook_returning_a_dict_fails_its_first_call_clearly() -> None:
    """A lambda (undecidable at construction) that returns a dict makes start() raise ValidationError naming load=."""
    db = AsyncInMemoryDb(load=lambda: {"s1": {"session_id": "s1"}})  # type: ignore[arg-type, return-value]
    with pytest.raises(ValidationError, match=r"the load= hook returned dict, not an awaitable.*async def load"):
        await db.start()
    assert db.stats().state == "new"


async def test_a_lambda_save_hook_returning_none_keeps_everything_dirty() -> None:
    """A sync lambda save fails the flush with ValidationError naming save=; the write stays dirty, and lands later."""
    saved: list[dict[str, Any]] = []

    async def fixed(snapshot: dict[str, Any]) -> None:
        saved.append(snapshot)

    hook: list[Callable[[dict[str, Any]], Any]] = [saved.append]  # the mistake: a sync callable
    db = AsyncInMemoryDb(save=lambda snapshot: hook[0](snapshot), durability="manual")
    await db.upsert_session({"session_id": "s1", "runs": []})
    with pytest.raises(ValidationError, match=r"the save= hook returned NoneType.*async def save"):
        await db.flush()
    with pytest.raises(ValidationError):  # the final flush fails the same way: close refuses to lose the write
        await db.aclose()
    assert db.stats().state == "open"
    assert db.stats().dirty == 1
    assert await db.get_session("s1") is not None
    hook[0] = fixed
    await db.aclose()
    assert list(saved[-1]["collections"]["sessions"]) == ["s1"]


# -- created_at / updated_at -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given",
    [
        "2024-05-01T00:00:00Z",
        "2024-05-01T02:00:00+02:00",
        "2024-05-01 00:00:00+00:00",  # str() of an aware datetime: what json.dumps(default=str) writes
        dt.datetime(2024, 5, 1, tzinfo=dt.UTC),
        dt.datetime(2024, 5, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        MAY_1 + 0.75,  # a fraction of a second is dropped
        MAY_1,
    ],
    ids=["iso-z", "iso-offset", "str-aware", "aware", "aware-offset", "float", "int"],
)
async def test_unambiguous_created_at_is_converted_never_replaced(given: Any) -> None:
    """An ISO 8601 string with a timezone, an aware datetime or unix seconds becomes that instant's unix seconds."""
    async with AsyncInMemoryDb(clock=lambda: 1_800_000_000) as db:
        stored = await db.upsert_session({"session_id": "s1", "created_at": given})
        assert stored["created_at"] == MAY_1
        assert stored["updated_at"] == 1_800_000_000  # a plain write stamps updated_at
        (imported,) = await db.upsert_sessions(
            [{"session_id": "s2", "created_at": given, "updated_at": given}], preserve_updated_at=True
        )
        assert (imported["created_at"], imported["updated_at"]) == (MAY_1, MAY_1)


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ("2024-05-01T00:00:00", "must name its timezone"),
        (dt.datetime(2024, 5, 1), "must name its timezone"),
        (dt.date(2024, 5, 1), "a date without a time"),
        ("yesterday", "not ISO 8601"),
        ("1714521600", "not ISO 8601"),
        (True, "a bool"),
        (math.nan, "finite"),
        (math.inf, "finite"),
        (-1, "from 1970 on"),
        (MAY_1 * 1000, "milliseconds?"),
        ([MAY_1], "a list"),
    ],
    ids=["naive-str", "naive", "date", "words", "digits", "bool", "nan", "inf", "negative", "millis", "list"],
)
@pytest.mark.parametrize("field", ["created_at", "updated_at"])
@pytest.mark.parametrize("preserve", [False, True], ids=["write", "import"])
async def test_ambiguous_or_impossible_timestamps_are_refused_naming_the_path(
    given: Any, words: str, field: str, preserve: bool
) -> None:
    """A naive, malformed or impossible timestamp raises ValidationError naming session.<field>; nothing changes."""
    async with AsyncInMemoryDb() as db:
        await db.upsert_session({"session_id": "kept", "summary": "before"})
        for target in ("kept", "new"):
            with pytest.raises(ValidationError) as caught:
                await db.upsert_sessions(
                    [{"session_id": target, "summary": "after", field: given}], preserve_updated_at=preserve
                )
            assert type(caught.value) is ValidationError  # not a bare ValueError from int(nan)
            assert f"session.{field}" in str(caught.value)
            assert words in str(caught.value)
        with pytest.raises(ValidationError, match=f"session.{field}"):
            await db.upsert_session({"session_id": "kept", "summary": "after", field: given})
        kept = await db.get_session("kept")
        assert kept is not None
        assert (kept["summary"], kept["version"]) == ("before", 1)
        assert await db.get_session("new") is None


def test_storage_dict_with_string_times_is_converted(tmp_path: Path) -> None:
    """A seed dict whose sessions carry ISO strings adopts them as unix seconds (and the mirror shows the ints)."""
    my_sessions: dict[str, Any] = {
        "s1": {"session_id": "s1", "created_at": "2024-05-01T00:00:00Z", "updated_at": "2024-05-01T00:01:40Z"}
    }
    with InMemoryDb(storage_dict=my_sessions) as db:
        session = db.get_session("s1")
        assert session is not None
        assert (session["created_at"], session["updated_at"]) == (MAY_1, MAY_1 + 100)


def test_the_agno_adapters_give_the_same_hints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """aiomemdb.agno's classes, built over the same options, refuse a path and a sync hook the same way."""
    pytest.importorskip("agno", reason="agno is not installed (pip install 'aiomemdb[agno]')")
    from aiomemdb.agno import AsyncInMemoryDb as AgnoAsyncDb
    from aiomemdb.agno import InMemoryDb as AgnoDb

    monkeypatch.chdir(tmp_path)
    for cls in (AgnoDb, AgnoAsyncDb):
        with pytest.raises(ValidationError, match=r"DirectoryPersistence\('./sessions'\)"):
            cls(persistence="./sessions")
        with pytest.raises(ValidationError, match="load= must be an async function"):
            cls(load=_sync_load)
    assert list(tmp_path.iterdir()) == []
