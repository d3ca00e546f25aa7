"""Secondary indexes over sessions, so listing costs O(result) instead of O(store).

Every bucket is a ``dict[session_id, None]`` whose insertion order is ascending ``(updated_at, seq)``: a write
with the newest timestamp (the common case: the store stamps ``updated_at = now``) moves the id to the end of
each bucket it belongs to, O(1). A write that lands out of order (an import preserving old timestamps, a
load) marks the index unsorted, and the next ordered query re-sorts everything once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from typing import Any

from aiomemdb._record import SessionRecord

__all__ = ["SessionIndex"]

Bucket = dict[str, None]


def _order_key(rec: SessionRecord) -> tuple[int, int]:
    return (rec.updated_at, rec.seq)


def _components(rec: SessionRecord) -> set[str]:
    return {c for c in (rec.agent_id, rec.team_id, rec.workflow_id) if c is not None}


class SessionIndex:
    """Buckets by user, component (agent/team/workflow id) and session type, plus a global recency order."""

    def __init__(self, records: Mapping[str, SessionRecord]) -> None:
        self._records = records
        self.order: Bucket = {}
        self.by_user: dict[str | None, Bucket] = {}
        self.by_component: dict[str, Bucket] = {}
        self.by_type: dict[str | None, Bucket] = {}
        self._last: tuple[int, int] = (-(2**63), 0)
        self._sorted = True

    def clear(self) -> None:
        """Forget everything."""
        self.order.clear()
        self.by_user.clear()
        self.by_component.clear()
        self.by_type.clear()
        self._last = (-(2**63), 0)
        self._sorted = True

    def put(self, old: SessionRecord | None, new: SessionRecord) -> None:
        """Index ``new``, replacing ``old`` (same session id) if given."""
        sid = new.session_id
        if old is not None and (
            old.user_id != new.user_id
            or old.session_type != new.session_type
            or old.agent_id != new.agent_id
            or old.team_id != new.team_id
            or old.workflow_id != new.workflow_id
        ):
            self._drop_from_buckets(old, keep=new)
        key = (new.updated_at, new.seq)
        if key >= self._last:
            self._last = key
        else:
            self._sorted = False
        # Each bucket: pop then re-insert, which moves the id to the newest end in O(1).
        order = self.order
        order.pop(sid, None)
        order[sid] = None
        for buckets, name in ((self.by_user, new.user_id), (self.by_type, new.session_type)):
            bucket = buckets.get(name)
            if bucket is None:
                buckets[name] = {sid: None}
            else:
                bucket.pop(sid, None)
                bucket[sid] = None
        for comp in (new.agent_id, new.team_id, new.workflow_id):
            if comp is not None:
                bucket = self.by_component.get(comp)
                if bucket is None:
                    self.by_component[comp] = {sid: None}
                else:
                    bucket.pop(sid, None)
                    bucket[sid] = None

    def remove(self, old: SessionRecord) -> None:
        """Forget ``old``."""
        sid = old.session_id
        self.order.pop(sid, None)
        self._discard(self.by_user, old.user_id, sid)
        self._discard(self.by_type, old.session_type, sid)
        for comp in (old.agent_id, old.team_id, old.workflow_id):
            if comp is not None:
                self._discard(self.by_component, comp, sid)

    def _drop_from_buckets(self, old: SessionRecord, keep: SessionRecord) -> None:
        sid = old.session_id
        if keep.user_id != old.user_id:
            self._discard(self.by_user, old.user_id, sid)
        if keep.session_type != old.session_type:
            self._discard(self.by_type, old.session_type, sid)
        for comp in _components(old) - _components(keep):
            self._discard(self.by_component, comp, sid)

    @staticmethod
    def _discard(buckets: dict[Any, Bucket], key: Any, sid: str) -> None:
        bucket = buckets.get(key)
        if bucket is not None:
            bucket.pop(sid, None)
            if not bucket:
                del buckets[key]

    def _ensure_sorted(self) -> None:
        if self._sorted:
            return
        records = self._records
        ordered = sorted(self.order, key=lambda sid: _order_key(records[sid]))
        self.order = dict.fromkeys(ordered)
        rank = {sid: i for i, sid in enumerate(ordered)}
        all_buckets: list[dict[Any, Bucket]] = [self.by_user, self.by_type, self.by_component]
        for buckets in all_buckets:
            for key, bucket in buckets.items():
                buckets[key] = dict.fromkeys(sorted(bucket, key=rank.__getitem__))
        self._last = _order_key(records[ordered[-1]]) if ordered else (-(2**63), 0)
        self._sorted = True

    def candidates(
        self,
        *,
        user_id: str | None,
        filter_user: bool,
        components: Iterable[str],
        session_type: str | None,
        filter_type: bool,
    ) -> Bucket:
        """The smallest bucket that contains every session matching the indexed filters (may be empty)."""
        self._ensure_sorted()
        choices: list[Bucket] = [self.order]
        if filter_user:
            choices.append(self.by_user.get(user_id, {}))
        if filter_type:
            choices.append(self.by_type.get(session_type, {}))
        for comp in components:
            choices.append(self.by_component.get(comp, {}))
        return min(choices, key=len)

    def newest(self, bucket: Bucket, start: int = 0, stop: int | None = None) -> Iterator[str]:
        """Ids of ``bucket`` from most to least recently updated, sliced ``[start:stop]``."""
        self._ensure_sorted()
        return islice(reversed(bucket), start, stop)
