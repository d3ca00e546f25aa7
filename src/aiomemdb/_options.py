"""Checks of a store's construction arguments: the wrong kind of value fails at the call, saying what to write.

:func:`check_persistence` refuses a path given as ``persistence=`` (the plausible first try,
``persistence="./sessions"``) with a pointer to :class:`~aiomemdb.DirectoryPersistence`, and names the methods
an object lacks. :func:`check_hooks` refuses ``load=`` / ``save=`` hooks that are plainly synchronous (a named
``def``, a sync ``__call__``), because the store awaits them; what it cannot decide from the outside (a lambda
that returns a coroutine, a builtin) is wrapped so that its first call says what is wrong, instead of a bare
``TypeError`` from ``await``.

Both run before anything else in :class:`~aiomemdb.AsyncInMemoryDb`'s constructor, so nothing has been
created, opened or stored when they raise.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, cast

from aiomemdb._exceptions import ValidationError
from aiomemdb.persistence._base import Persistence

__all__ = ["LoadHook", "SaveHook", "callable_kind", "check_hooks", "check_persistence"]

LoadHook = Callable[[], Awaitable[Mapping[str, Any] | None]]
SaveHook = Callable[[dict[str, Any]], Awaitable[None]]

#: The protocol's methods, all coroutines (see :class:`~aiomemdb.Persistence`).
_METHODS = ("open", "load", "load_one", "save", "aclose")

_SHAPES = {
    "load": "async def load() -> dict | None: ...",
    "save": "async def save(snapshot: dict) -> None: ...",
}


def check_persistence(value: object) -> Persistence | None:
    """Return ``value`` if it can serve as ``persistence=``, else raise a ValidationError saying what to pass.

    Raises:
        ValidationError: a path (str, bytes, ``os.PathLike``): the message shows
            ``DirectoryPersistence('<the path>')``; a class instead of an instance; an object that lacks
            methods of the protocol (named) or whose methods are plain functions, not coroutine functions.
    """
    if value is None:
        return None
    if isinstance(value, str | bytes | os.PathLike):
        path = os.fsdecode(value)
        raise ValidationError(
            f"persistence= takes a persistence object, not a path: for a directory store write "
            f"persistence=DirectoryPersistence({path!r}) (from aiomemdb import DirectoryPersistence)"
        )
    name = f"the class {value.__name__}" if isinstance(value, type) else type(value).__name__
    missing = [method for method in _METHODS if not callable(getattr(value, method, None))]
    if isinstance(value, type) and not missing:
        raise ValidationError(f"persistence= takes an instance, got {name}: write persistence={value.__name__}(...)")
    if missing:
        hint = (
            "; to keep the sessions in a dict of yours, pass storage_dict= instead"
            if isinstance(value, Mapping)
            else ""
        )
        raise ValidationError(
            f"persistence= must implement the Persistence protocol (async open, load, load_one, save, aclose); "
            f"{name} lacks {', '.join(missing)}{hint}"
        )
    plain = [method for method in _METHODS if callable_kind(getattr(value, method)) == "sync"]
    if plain:
        raise ValidationError(
            f"persistence= methods must be coroutine functions: {', '.join(f'{name}.{m}' for m in plain)} "
            f"{'is a plain function' if len(plain) == 1 else 'are plain functions'}; define them with async def"
        )
    return cast(Persistence, value)


def check_hooks(load: object, save: object) -> tuple[LoadHook | None, SaveHook | None]:
    """Check the ``load=`` / ``save=`` hooks; returns them, or wrappers for the ones that cannot be decided.

    A coroutine function, a ``functools.partial`` of one, a decorated one (``__wrapped__``) and an object
    whose ``__call__`` is ``async def`` are returned as they are. A plain named ``def``, a sync ``__call__``, a
    generator or async generator function is refused. Anything else (a lambda, a builtin) is wrapped: its
    first call raises :class:`ValidationError` if it returns something that is not awaitable.

    Raises:
        ValidationError: a hook that is not callable, or plainly not async; the message names the hook and
            shows the ``async def`` to write.
    """
    return (
        cast("LoadHook | None", _check_hook("load", load)),
        cast("SaveHook | None", _check_hook("save", save)),
    )


def _check_hook(name: Literal["load", "save"], hook: object) -> Callable[..., Awaitable[Any]] | None:
    if hook is None:
        return None
    if not callable(hook):
        hint = (
            "; to start from a dict you already have, pass storage_dict= instead" if isinstance(hook, Mapping) else ""
        )
        raise ValidationError(f"{name}= must be an async function ({_SHAPES[name]}), got {type(hook).__name__}{hint}")
    kind = callable_kind(hook)
    if kind == "sync":
        raise ValidationError(
            f"{name}= must be an async function, and {_describe(hook)} is not: the store awaits it. "
            f"Write `{_SHAPES[name]}` (for blocking I/O inside, await asyncio.to_thread(...))"
        )
    if kind == "async":
        return cast("Callable[..., Awaitable[Any]]", hook)
    return _awaited(name, hook)


def _awaited(name: str, hook: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """Wrap a hook of unknown kind: a result that is not awaitable becomes a ValidationError naming the hook."""

    async def call(*args: Any) -> Any:
        result = hook(*args)
        if not inspect.isawaitable(result):
            raise ValidationError(
                f"the {name}= hook returned {type(result).__name__}, not an awaitable: hooks must be async "
                f"(`{_SHAPES[name]}`)"
            )
        return await result

    return call


def _describe(fn: object) -> str:
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"{name}()" if inspect.isroutine(fn) else f"{type(fn).__name__} (its __call__)"


def callable_kind(fn: object) -> Literal["async", "sync", "unknown"]:
    """Whether calling ``fn`` returns an awaitable: ``"async"``, ``"sync"``, or ``"unknown"`` (undecidable).

    ``functools.partial`` and decorators that set ``__wrapped__`` are looked through; for an object that is
    not a function, its type's ``__call__`` decides. A lambda or a builtin is ``"unknown"``: it may well return
    a coroutine. A plain named ``def`` (generators included) is ``"sync"``.
    """
    target: Any = fn
    while isinstance(target, functools.partial):
        target = target.func
    if callable(target) and not (inspect.isroutine(target) or isinstance(target, type)):
        target = type(target).__call__  # a callable object: what runs is its __call__
    target = getattr(target, "__func__", target)  # a bound method: its function
    try:
        inner = inspect.unwrap(target)
    except ValueError:  # a __wrapped__ cycle
        inner = target
    if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(inner):
        return "async"
    if inspect.isasyncgenfunction(inner) or inspect.isgeneratorfunction(inner):
        return "sync"  # calling it gives an (async) generator, which cannot be awaited
    if inspect.isfunction(target) and target is inner and target.__name__ != "<lambda>":
        return "sync"
    return "unknown"
