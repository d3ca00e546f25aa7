"""Fresh copies of the agno objects a read returns, so that no two readers ever share a mutable one.

The run cache keeps one deserialised ``RunOutput`` per stored run and gives every reader a copy of it. Per run of
a real agent session (``benchmarks/agno_objects.py``): ``copy.deepcopy`` ~130 µs, ``RunOutput.from_dict`` ~45 µs,
:func:`fresh_copy` ~25 µs.

:func:`fresh_copy` is a deep copy specialised for what agno's ``from_dict`` builds: plain dataclasses (runs, metrics,
tool executions), pydantic models (messages, media), lists, dicts, enums and JSON scalars. Anything else (a class
with its own copy hooks, slots, tuples, sets ...) goes to ``copy.deepcopy``, so the result is never wrong, only
slower. Like ``copy.deepcopy`` without its memo, it assumes a tree: an object built from JSON shares no
sub-object, so none is lost.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID

from pydantic import BaseModel

__all__ = ["fresh_copy"]

T = TypeVar("T")

# How each type is copied, decided once per type: _SHARE (immutable: the object itself), _LIST, _DICT,
# _DATACLASS (a new instance, its attributes copied), _MODEL (pydantic's shallow __copy__, then its fields copied),
# or _DEEP (copy.deepcopy).
_SHARE, _LIST, _DICT, _DATACLASS, _MODEL, _DEEP = range(6)


class _Kinds(dict[type, int]):
    """type -> how it is copied; a type seen for the first time is classified by :func:`_kind`."""

    def __missing__(self, cls: type) -> int:
        kind = self[cls] = _kind(cls)
        return kind


_IMMUTABLE = (str, int, float, bool, type(None), bytes, complex, Decimal, UUID, date, datetime, time, timedelta)
_KIND = _Kinds(dict.fromkeys(_IMMUTABLE, _SHARE))
# A class defining any of these says how it is copied or pickled: it is left to copy.deepcopy.
_HOOKS = ("__slots__", "__copy__", "__deepcopy__", "__reduce__", "__reduce_ex__", "__getstate__", "__setstate__")


def _plain(cls: type) -> bool:
    """Whether instances of ``cls`` are fully described by their ``__dict__`` (no copy or pickle hooks of its own)."""
    return not any(hook in vars(base) for base in cls.__mro__[:-1] for hook in _HOOKS)


def _kind(cls: type) -> int:
    if issubclass(cls, enum.Enum):
        kind = _SHARE
    elif cls is list:
        kind = _LIST
    elif cls is dict:
        kind = _DICT
    elif issubclass(cls, BaseModel):
        same_hooks = cls.__copy__ is BaseModel.__copy__ and cls.__deepcopy__ is BaseModel.__deepcopy__
        kind = _MODEL if same_hooks and not cls.__pydantic_root_model__ else _DEEP
    elif dataclasses.is_dataclass(cls) and _plain(cls):
        kind = _DATACLASS
    else:
        kind = _DEEP
    return kind


def _copy_values(values: dict[str, Any]) -> None:
    """Replace every mutable value of ``values`` (a fresh shallow copy) by its fresh copy, in place."""
    for key, value in values.items():
        if _KIND[type(value)]:  # _SHARE is 0
            values[key] = _copy(value)


def _copy(obj: Any) -> Any:
    cls = type(obj)
    kind = _KIND[cls]
    if kind == _SHARE:
        return obj
    if kind == _LIST:
        return [_copy(item) for item in obj]
    if kind == _DICT:
        return {key: _copy(value) for key, value in obj.items()}
    if kind == _DATACLASS:
        new = object.__new__(cls)
        values = new.__dict__
        values.update(obj.__dict__)
        _copy_values(values)
        return new
    if kind == _MODEL:
        model = copy.copy(obj)  # pydantic copies __dict__, extra, fields-set and private attributes shallowly
        _copy_values(model.__dict__)
        for extra in (model.__pydantic_extra__, model.__pydantic_private__):
            if extra:
                _copy_values(extra)
        return model
    return copy.deepcopy(obj)


def fresh_copy(obj: T) -> T:
    """A deep copy of ``obj``, an object tree as agno's ``from_dict`` builds it, sharing only immutable leaves."""
    result: T = _copy(obj)
    return result
