"""Session listings: which records a ``get_sessions`` query selects, in order, from the indexes.

Pure functions over the kernel's records and :class:`~aiomemdb._index.SessionIndex`; the caller holds the
kernel's lock and decides what to do with records whose payload is not resident.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from aiomemdb._exceptions import ValidationError
from aiomemdb._index import SessionIndex
from aiomemdb._record import SessionRecord

__all__ = ["Query", "SortBy", "SortOrder", "check_limit", "check_optional_str", "select"]

SortBy = Literal["updated_at", "created_at", "session_id"]
SortOrder = Literal["asc", "desc"]
_SORT_BY: Final = ("updated_at", "created_at", "session_id")


def check_limit(value: int | None, what: str) -> int | None:
    """Return ``value`` if it is None or an int in ``[0, sys.maxsize]``, else raise ValidationError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= sys.maxsize:
        raise ValidationError(f"{what} must be a non-negative int (at most {sys.maxsize}) or None, got {value!r}")
    return value


def check_optional_str(value: object, what: str) -> str | None:
    """Return ``value`` if it is None or a str, else raise ValidationError (filters, owner ids)."""
    if value is None or isinstance(value, str):
        return value
    raise ValidationError(f"{what} must be a str or None, got {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class Query:
    """A validated ``get_sessions`` query (see :meth:`aiomemdb.AsyncInMemoryDb.get_sessions`)."""

    user_id: str | None = None
    agent_id: str | None = None
    team_id: str | None = None
    workflow_id: str | None = None
    component_id: str | None = None
    session_type: str | None = None
    session_name: str | None = None
    start_timestamp: int | float | None = None
    end_timestamp: int | float | None = None
    sort_by: SortBy = "updated_at"
    order: SortOrder = "desc"
    start: int = 0
    stop: int | None = None
    include_runs: bool = True

    @classmethod
    def build(cls, *, limit: int | None, page: int | None, sort_order: Any, **fields: Any) -> Query:
        """Validate the keyword arguments of ``get_sessions``.

        Raises:
            ValidationError: a filter of the wrong type, an unknown sort, a bad limit or page.
        """
        for name in ("user_id", "agent_id", "team_id", "workflow_id", "component_id", "session_type", "session_name"):
            check_optional_str(fields.get(name), name)
        for name in ("start_timestamp", "end_timestamp"):
            value = fields.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ValidationError(f"{name} must be a number of unix seconds or None, got {value!r}")
        if fields.get("sort_by", "updated_at") not in _SORT_BY:
            raise ValidationError(f"sort_by must be one of {', '.join(_SORT_BY)}; got {fields.get('sort_by')!r}")
        order = sort_order.lower() if isinstance(sort_order, str) else sort_order
        if order not in ("asc", "desc"):
            raise ValidationError(f"sort_order must be 'asc' or 'desc'; got {sort_order!r}")
        check_limit(limit, "limit")
        if page is not None and (check_limit(page, "page") or 0) < 1:
            raise ValidationError(f"page must be an int >= 1, got {page!r}")
        start = min((page - 1) * limit, sys.maxsize) if (page is not None and limit is not None) else 0
        stop = None if limit is None else min(start + limit, sys.maxsize)
        return cls(order="asc" if order == "asc" else "desc", start=start, stop=stop, **fields)


def _residual(q: Query) -> Callable[[SessionRecord], bool] | None:
    checks: list[Callable[[SessionRecord], bool]] = []
    if q.user_id is not None:
        checks.append(lambda r: r.user_id == q.user_id)
    if q.agent_id is not None:
        checks.append(lambda r: r.agent_id == q.agent_id)
    if q.team_id is not None:
        checks.append(lambda r: r.team_id == q.team_id)
    if q.workflow_id is not None:
        checks.append(lambda r: r.workflow_id == q.workflow_id)
    if q.component_id is not None:
        checks.append(lambda r: q.component_id in (r.agent_id, r.team_id, r.workflow_id))
    if q.session_type is not None:
        checks.append(lambda r: r.session_type == q.session_type)
    if q.session_name is not None:
        needle = q.session_name.lower()
        checks.append(lambda r: r.session_name is not None and needle in r.session_name.lower())
    if q.start_timestamp is not None:
        start = q.start_timestamp
        checks.append(lambda r: r.created_at >= start)
    if q.end_timestamp is not None:
        end = q.end_timestamp
        checks.append(lambda r: r.created_at <= end)
    if not checks:
        return None
    return lambda r: all(check(r) for check in checks)


def select(q: Query, records: Mapping[str, SessionRecord], index: SessionIndex) -> tuple[list[SessionRecord], int]:
    """The page of records ``q`` selects, in order, and the total number of matches."""
    components = [c for c in (q.agent_id, q.team_id, q.workflow_id, q.component_id) if c is not None]
    bucket = index.candidates(
        user_id=q.user_id,
        filter_user=q.user_id is not None,
        components=components,
        session_type=q.session_type,
        filter_type=q.session_type is not None,
    )
    residual = _residual(q)
    # One indexed filter and nothing else: the bucket holds exactly the matches, already in update order.
    exact = residual is None or (
        bucket is not index.order
        and sum(x is not None for x in (q.user_id, q.session_type, q.component_id)) == 1
        and all(x is None for x in (q.agent_id, q.team_id, q.workflow_id, q.session_name))
        and q.start_timestamp is None
        and q.end_timestamp is None
    )
    if q.sort_by == "updated_at" and exact:
        if q.order == "desc":
            ids: Iterable[str] = index.newest(bucket, q.start, q.stop)
        else:
            ids = list(bucket)[q.start : q.stop]
        return [records[sid] for sid in ids], len(bucket)
    if q.sort_by == "updated_at":
        ordered = index.newest(bucket) if q.order == "desc" else iter(list(bucket))
        matches = [records[sid] for sid in ordered]
    else:
        key: Callable[[SessionRecord], Any] = (
            (lambda r: (r.created_at, r.seq)) if q.sort_by == "created_at" else (lambda r: r.session_id)
        )
        matches = sorted((records[sid] for sid in bucket), key=key, reverse=q.order == "desc")
    if residual is not None:
        matches = [r for r in matches if residual(r)]
    return matches[q.start : q.stop], len(matches)
