"""Traces and spans, kept in store collections (agno's InMemoryDb has none; semantics follow agno's JsonDb).

Traces are stored as ``Trace.to_dict()`` without the derived ``total_spans``/``error_count``, which reads
compute from the spans; spans as ``Span.to_dict()``. Timestamps are ISO strings, so ranges compare as strings,
exactly as agno's JsonDb does. ``agno.tracing`` needs opentelemetry, so it is imported only when a trace is read.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from aiomemdb.agno._rows import merge_trace, no_filter_expr, parse_time, to_trace, trace_row
from aiomemdb.agno._stores import AsyncStore

if TYPE_CHECKING:
    from agno.tracing.schemas import Span, Trace

__all__ = ["AsyncTraces"]


class AsyncTraces:
    """Traces and spans; a part of the adapter class."""

    _store: AsyncStore
    trace_table_name: str
    span_table_name: str

    async def upsert_trace(self, trace: Trace) -> None:
        """Create a trace, or extend a known one (context fields are only filled, never overwritten)."""
        new = trace_row(trace)
        # merge runs inside the store's atomic read-modify-write
        await self._store.update_record(self.trace_table_name, trace.trace_id, lambda old: merge_trace(trace, new, old))

    async def _spans_by_trace(self) -> dict[str | None, list[dict[str, Any]]]:
        spans = await self._store.list_records(self.span_table_name)
        by_trace: dict[str | None, list[dict[str, Any]]] = {}
        for span in spans:
            by_trace.setdefault(span.get("trace_id"), []).append(span)
        return by_trace

    async def get_trace(self, trace_id: str | None = None, run_id: str | None = None) -> Trace | None:
        """A trace by id (or the latest of a run), with its span and error counts; ``None`` if missing."""
        record = None
        if trace_id:
            record = await self._store.get_record(self.trace_table_name, trace_id)
        elif run_id:
            traces = await self._store.list_records(self.trace_table_name)
            found = [t for t in traces if t.get("run_id") == run_id]
            found.sort(key=lambda t: t.get("start_time", ""), reverse=True)
            record = found[0] if found else None
        if record is None:
            return None
        by_trace = await self._spans_by_trace()
        return to_trace(record, by_trace.get(record["trace_id"], []))

    async def get_traces(
        self,
        run_id: str | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        team_id: str | None = None,
        workflow_id: str | None = None,
        status: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        limit: int | None = 20,
        page: int | None = 1,
        filter_expr: dict[str, Any] | None = None,
    ) -> tuple[list[Trace], int]:
        """Traces matching the filters, newest first, with the total count (``filter_expr`` is not supported)."""
        no_filter_expr(filter_expr)
        traces = await self._store.list_records(self.trace_table_name)
        exact = {"run_id": run_id, "session_id": session_id, "user_id": user_id, "agent_id": agent_id,
                 "team_id": team_id, "workflow_id": workflow_id, "status": status}  # fmt: skip
        start = start_time.isoformat() if start_time else None
        end = end_time.isoformat() if end_time else None
        rows = [
            t
            for t in traces
            if all(not want or t.get(k) == want for k, want in exact.items())
            and (start is None or t.get("start_time", "") >= start)
            and (end is None or t.get("end_time", "") <= end)
        ]
        total = len(rows)
        rows.sort(key=lambda t: t.get("start_time", ""), reverse=True)
        if limit and page:
            rows = rows[(page - 1) * limit : page * limit]
        by_trace = await self._spans_by_trace()
        return [to_trace(t, by_trace.get(t["trace_id"], [])) for t in rows], total

    async def get_trace_stats(
        self,
        user_id: str | None = None,
        agent_id: str | None = None,
        team_id: str | None = None,
        workflow_id: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        limit: int | None = 20,
        page: int | None = 1,
        filter_expr: dict[str, Any] | None = None,
        group_by: Literal["session", "agent", "team", "workflow", "endpoint"] = "session",
    ) -> tuple[list[dict[str, Any]], int]:
        """Trace counts per session, most recent first (only ``group_by="session"``)."""
        no_filter_expr(filter_expr)
        if group_by != "session":
            raise NotImplementedError(
                f"get_trace_stats with group_by={group_by!r} is not supported by aiomemdb's adapter. "
                "Only the default 'session' grouping is available."
            )
        traces = await self._store.list_records(self.trace_table_name)
        exact = {"user_id": user_id, "agent_id": agent_id, "team_id": team_id, "workflow_id": workflow_id}
        start = start_time.isoformat() if start_time else None
        end = end_time.isoformat() if end_time else None
        stats: dict[str, dict[str, Any]] = {}
        for t in traces:
            sid = t.get("session_id")
            if not sid or not all(not want or t.get(k) == want for k, want in exact.items()):
                continue
            created = t.get("created_at", "")
            if (start and created < start) or (end and created > end):
                continue
            entry = stats.setdefault(sid, {
                "session_id": sid, "user_id": t.get("user_id"), "agent_id": t.get("agent_id"),
                "team_id": t.get("team_id"), "workflow_id": t.get("workflow_id"), "total_traces": 0,
                "first_trace_at": created, "last_trace_at": created,
            })  # fmt: skip
            entry["total_traces"] += 1
            entry["first_trace_at"] = min(entry["first_trace_at"], created)
            entry["last_trace_at"] = max(entry["last_trace_at"], created)
        rows = sorted(stats.values(), key=lambda s: s["last_trace_at"], reverse=True)
        total = len(rows)
        if limit and page:
            rows = rows[(page - 1) * limit : page * limit]
        for row in rows:
            for key in ("first_trace_at", "last_trace_at"):
                if row[key]:
                    row[key] = parse_time(row[key])
        return rows, total

    async def create_span(self, span: Span) -> None:
        """Store a span."""
        await self.create_spans([span])

    async def create_spans(self, spans: list[Span]) -> None:
        """Store several spans at once."""
        if spans:
            await self._store.put_records(self.span_table_name, {s.span_id: s.to_dict() for s in spans})

    async def get_span(self, span_id: str) -> Span | None:
        """A span by id, or ``None``."""
        record = await self._store.get_record(self.span_table_name, span_id)
        if record is None:
            return None
        from agno.tracing.schemas import Span

        return Span.from_dict(record)

    async def get_spans(
        self, trace_id: str | None = None, parent_span_id: str | None = None, limit: int | None = 1000
    ) -> list[Span]:
        """Spans of a trace and/or parent, in the order they were stored."""
        spans = await self._store.list_records(self.span_table_name)
        rows = [
            s
            for s in spans
            if (not trace_id or s.get("trace_id") == trace_id)
            and (not parent_span_id or s.get("parent_span_id") == parent_span_id)
        ]
        if limit:
            rows = rows[:limit]
        from agno.tracing.schemas import Span

        return [Span.from_dict(s) for s in rows]
