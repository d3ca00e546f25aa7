"""One implementation of the Agno interface, driven synchronously or asynchronously.

Every Agno operation is written once, as a generator that *yields* the store calls it needs (a :class:`Call`:
a method name of the core plus arguments) and receives each result back. The sync adapter drives it against
the blocking :class:`aiomemdb.InMemoryDb`, the async adapter against :class:`aiomemdb.AsyncInMemoryDb`; both
expose the same method names, so the logic never knows which one it talks to. Exceptions raised by the store
are thrown back into the generator at the ``yield``, exactly as an ``await`` would raise them.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

__all__ = ["Call", "Op", "call", "drive", "drive_async"]

T = TypeVar("T")


class Call:
    """A store method to call: ``getattr(store, method)(*args, **kwargs)``."""

    __slots__ = ("args", "kwargs", "method")

    def __init__(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.method = method
        self.args = args
        self.kwargs = kwargs

    def __repr__(self) -> str:
        return f"Call({self.method!r})"


#: An operation: yields store calls, receives their results, returns the Agno-level result.
Op = Generator[Call, Any, T]


def call(method: str, *args: Any, **kwargs: Any) -> Call:
    """Describe one store call; ``result = yield call("get_session", sid)`` inside an operation."""
    return Call(method, args, kwargs)


def drive(store: Any, op: Op[T]) -> T:
    """Run an operation against a blocking store."""
    try:
        request = next(op)
        while True:
            try:
                result = getattr(store, request.method)(*request.args, **request.kwargs)
            except Exception as exc:
                request = op.throw(exc)
            else:
                request = op.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value
    finally:
        op.close()


async def drive_async(store: Any, op: Op[T]) -> T:
    """Run an operation against an async store."""
    try:
        request = next(op)
        while True:
            try:
                result = await getattr(store, request.method)(*request.args, **request.kwargs)
            except Exception as exc:
                request = op.throw(exc)
            else:
                request = op.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value
    finally:
        op.close()
