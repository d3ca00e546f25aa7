"""The store's options: their types (:class:`StoreOptions`) and their validation, once for every class.

:meth:`Config.build` turns the keyword arguments of :class:`~aiomemdb.AsyncInMemoryDb` (and of the classes that
create one: :class:`~aiomemdb.InMemoryDb`, the Agno adapters) into a checked :class:`Config`, so an invalid
combination is refused at construction with a :class:`~aiomemdb.ValidationError` that says what to do.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypedDict

from aiomemdb._exceptions import ValidationError
from aiomemdb._kernel import check_limit
from aiomemdb._options import check_hooks, check_persistence
from aiomemdb._stats import Event
from aiomemdb.persistence._base import Persistence
from aiomemdb.persistence._directory import DirectoryPersistence
from aiomemdb.persistence._hooks import HookPersistence

__all__ = ["Config", "Durability", "StoreOptions"]

Durability = Literal["interval", "write", "manual", "journal"]
_DURABILITY: Final = ("interval", "write", "manual", "journal")


class StoreOptions(TypedDict, total=False):
    """The keyword arguments of :class:`AsyncInMemoryDb`, for the classes that create one for you
    (:class:`~aiomemdb.InMemoryDb`, the Agno adapters). See :class:`AsyncInMemoryDb` for their meaning."""

    persistence: Persistence | None
    load: Callable[[], Awaitable[Mapping[str, Any] | None]] | None
    save: Callable[[dict[str, Any]], Awaitable[None]] | None
    storage_dict: dict[str, Any] | None
    durability: Durability
    flush_interval: float
    journal_path: str | Path | None
    journal_fsync: float
    lazy: bool
    max_sessions: int | None
    max_bytes: int | None
    ttl: float | None
    max_backoff: float
    on_event: Callable[[Event], None] | None
    clock: Callable[[], float]


def _positive(value: object, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValidationError(f"{what} must be a positive number, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Config:
    """Checked options (see :class:`~aiomemdb.AsyncInMemoryDb` for each)."""

    persistence: Persistence | None
    storage_dict: dict[str, Any] | None
    durability: Durability
    flush_interval: float
    journal_dir: Path | None
    journal_fsync: float
    lazy: bool
    max_sessions: int | None
    max_bytes: int | None
    ttl: float | None
    max_backoff: float
    on_event: Callable[[Event], None] | None
    clock: Callable[[], float]

    @classmethod
    def build(
        cls,
        *,
        persistence: Persistence | None = None,
        load: Callable[[], Awaitable[Mapping[str, Any] | None]] | None = None,
        save: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
        storage_dict: dict[str, Any] | None = None,
        durability: Durability = "interval",
        flush_interval: float = 1.0,
        journal_path: str | Path | None = None,
        journal_fsync: float = 1.0,
        lazy: bool = False,
        max_sessions: int | None = None,
        max_bytes: int | None = None,
        ttl: float | None = None,
        max_backoff: float = 30.0,
        on_event: Callable[[Event], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Config:
        """Validate the options.

        Raises:
            ValidationError: an option of the wrong type or value, or options that do not go together.
        """
        persistence, (load, save) = check_persistence(persistence), check_hooks(load, save)
        if persistence is not None and (load is not None or save is not None):
            raise ValidationError("pass either persistence= or load=/save= hooks, not both")
        if load is not None or save is not None:
            persistence = HookPersistence(load=load, save=save)
        if durability not in _DURABILITY:
            raise ValidationError(f"durability must be one of {', '.join(_DURABILITY)}; got {durability!r}")
        interval = _positive(flush_interval, "flush_interval")
        assert interval is not None
        if lazy and persistence is None:
            raise ValidationError("lazy=True needs a persistence to load from")
        check_limit(max_sessions, "max_sessions")
        check_limit(max_bytes, "max_bytes")
        ttl = _positive(ttl, "ttl")
        backoff = _positive(max_backoff, "max_backoff")
        assert backoff is not None
        bounded = max_sessions is not None or max_bytes is not None or ttl is not None
        if bounded and persistence is None:
            raise ValidationError("max_sessions, max_bytes and ttl need a persistence to reload evicted sessions")
        if bounded and storage_dict is not None:
            raise ValidationError("storage_dict holds every session by contract; it cannot be bounded")
        if isinstance(journal_fsync, bool) or not isinstance(journal_fsync, int | float) or not journal_fsync >= 0:
            raise ValidationError(f"journal_fsync must be >= 0 seconds, got {journal_fsync!r}")
        journal_dir = Path(journal_path).absolute() if journal_path is not None else None
        if journal_dir is not None and persistence is None:
            raise ValidationError("journal_path needs a persistence to flush the journal's writes to")
        if journal_dir is None and isinstance(persistence, DirectoryPersistence):
            # The journal belongs to the directory, whatever the mode: any store opening it replays it.
            journal_dir = persistence.path / "journal"
        if durability == "journal":
            if persistence is None:
                raise ValidationError("durability='journal' needs a persistence to flush to")
            if journal_dir is None:
                raise ValidationError("durability='journal' needs journal_path= unless the persistence is a directory")
        if on_event is not None and not callable(on_event):
            raise ValidationError(f"on_event must be callable, got {type(on_event).__name__}")
        return cls(
            persistence=persistence,
            storage_dict=storage_dict,
            durability=durability,
            flush_interval=interval,
            journal_dir=journal_dir,
            journal_fsync=float(journal_fsync),
            lazy=bool(lazy),
            max_sessions=max_sessions,
            max_bytes=max_bytes,
            ttl=ttl,
            max_backoff=backoff,
            on_event=on_event,
            clock=clock,
        )
