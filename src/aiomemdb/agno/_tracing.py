"""Traces and spans, kept in core collections (agno's InMemoryDb has none; semantics follow agno's JsonDb).

Traces are stored as ``Trace.to_dict()`` without the derived ``total_spans``/``error_count``, which reads
compute from the spans; spans as ``Span.to_dict()``. Timestamps are ISO strings, so ranges compare as strings,
exactly as agno's JsonDb does. ``agno.tracing`` needs opentelemetry, so it is imported only when a trace is read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiomemdb.agno._call import Op, call

__all__ = ["TraceOps"]


def _level(workflow_id: Any, team_id: Any, agent_id: Any, name: str) -> int:
    """How high a trace's name ranks: workflow > team > agent root spans > anything else."""
    if ".run" not in name and ".arun" not in name:
        return 0
    if workflow_id:
        return 3
    if team_id:
        return 2
    return 1 if agent_id else 0


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class TraceOps:
    """Traces and spans; mixed into both adapter classes."""

    trace_table_name: str
    span_table_name: str

    def _op_upsert_trace(self, trace: Any) -> Op[None]:
        new: dict[str, Any] = trace.to_dict()
        new.pop("total_spans", None)
        new.pop("error_count", None)

        def merge(existing: dict[str, Any] | None) -> dict[str, Any]:
            # runs inside the store's atomic read-modify-write
            if existing is None:
                return new
            merged = dict(existing)
            start = existing.get("start_time")
            began = _parse(start) if isinstance(start, str) else trace.start_time
            merged["end_time"] = trace.end_time.isoformat()
            merged["duration_ms"] = int((trace.end_time - began).total_seconds() * 1000)
            merged["status"] = trace.status
            old_level = _level(existing.get("workflow_id"), existing.get("team_id"), existing.get("agent_id"),
                               existing.get("name", ""))  # fmt: skip
            if _level(trace.workflow_id, trace.team_id, trace.agent_id, trace.name) > old_level:
                merged["name"] = trace.name
            # A later child span must not overwrite context the trace already has; it only fills blanks.
            for field in ("run_id", "session_id", "user_id", "agent_id", "team_id", "workflow_id"):
                if merged.get(field) is None and new.get(field) is not None:
                    merged[field] = new[field]
            return merged

        yield call("update_record", self.trace_table_name, trace.trace_id, merge)

    def _op_spans_by_trace(self) -> Op[dict[str, list[dict[str, Any]]]]:
        spans = yield call("list_records", self.span_table_name)
        by_trace: dict[str, list[dict[str, Any]]] = {}
        for span in spans:
            by_trace.setdefault(span.get("trace_id"), []).append(span)
        return by_trace

    @staticmethod
    def _to_trace(record: dict[str, Any], spans: list[dict[str, Any]]) -> Any:
        from agno.tracing.schemas import Trace

        record["total_spans"] = len(spans)
        record["error_count"] = sum(1 for s in spans if s.get("status_code") == "ERROR")
        return Trace.from_dict(record)

    def _op_get_trace(self, trace_id: str | None, run_id: str | None) -> Op[Any]:
        record = None
        if trace_id:
            record = yield call("get_record", self.trace_table_name, trace_id)
        elif run_id:
            traces = yield call("list_records", self.trace_table_name)
            matches = [t for t in traces if t.get("run_id") == run_id]
            matches.sort(key=lambda t: t.get("start_time", ""), reverse=True)
            record = matches[0] if matches else None
        if record is None:
            return None
        by_trace = yield from self._op_spans_by_trace()
        return self._to_trace(record, by_trace.get(record["trace_id"], []))

    def _op_get_traces(
        self,
        run_id: str | None,
        session_id: str | None,
        user_id: str | None,
        agent_id: str | None,
        team_id: str | None,
        workflow_id: str | None,
        status: str | None,
        start_time: datetime | None,
        end_time: datetime | None,
        limit: int | None,
        page_number: int | None,
    ) -> Op[tuple[list[Any], int]]:
        traces = yield call("list_records", self.trace_table_name)
        exact = {
            "run_id": run_id,
            "session_id": session_id,
            "user_id": user_id,
            "agent_id": agent_id,
            "team_id": team_id,
            "workflow_id": workflow_id,
            "status": status,
        }
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
        if limit and page_number:
            rows = rows[(page_number - 1) * limit : page_number * limit]
        by_trace = yield from self._op_spans_by_trace()
        return [self._to_trace(t, by_trace.get(t["trace_id"], [])) for t in rows], total

    def _op_get_trace_stats(
        self,
        user_id: str | None,
        agent_id: str | None,
        team_id: str | None,
        workflow_id: str | None,
        start_time: datetime | None,
        end_time: datetime | None,
        limit: int | None,
        page_number: int | None,
        group_by: str,
    ) -> Op[tuple[list[dict[str, Any]], int]]:
        if group_by != "session":
            raise NotImplementedError(
                f"get_trace_stats with group_by={group_by!r} is not supported by aiomemdb's adapter. "
                "Only the default 'session' grouping is available."
            )
        traces = yield call("list_records", self.trace_table_name)
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
            entry = stats.setdefault(
                sid,
                {
                    "session_id": sid,
                    "user_id": t.get("user_id"),
                    "agent_id": t.get("agent_id"),
                    "team_id": t.get("team_id"),
                    "workflow_id": t.get("workflow_id"),
                    "total_traces": 0,
                    "first_trace_at": created,
                    "last_trace_at": created,
                },
            )
            entry["total_traces"] += 1
            entry["first_trace_at"] = min(entry["first_trace_at"], created)
            entry["last_trace_at"] = max(entry["last_trace_at"], created)
        rows = sorted(stats.values(), key=lambda s: s["last_trace_at"], reverse=True)
        total = len(rows)
        if limit and page_number:
            rows = rows[(page_number - 1) * limit : page_number * limit]
        for row in rows:
            for key in ("first_trace_at", "last_trace_at"):
                if row[key]:
                    row[key] = _parse(row[key])
        return rows, total

    def _op_create_spans(self, spans: list[Any]) -> Op[None]:
        if spans:
            yield call("put_records", self.span_table_name, {s.span_id: s.to_dict() for s in spans})

    def _op_get_span(self, span_id: str) -> Op[Any]:
        record = yield call("get_record", self.span_table_name, span_id)
        if record is None:
            return None
        from agno.tracing.schemas import Span

        return Span.from_dict(record)

    def _op_get_spans(self, trace_id: str | None, parent_span_id: str | None, limit: int | None) -> Op[list[Any]]:
        spans = yield call("list_records", self.span_table_name)
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
