"""SessionRecord's two read shapes agree: ``parts()`` decoded is ``doc_bytes()`` decoded, key for key, in order."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from aiomemdb._record import SessionRecord, decode_parts

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_ids = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12)


@st.composite
def sessions(draw: st.DrawFn) -> dict[str, Any]:
    session: dict[str, Any] = {"session_id": draw(_ids)}
    for key in draw(st.lists(st.sampled_from(["user_id", "agent_id", "session_type", "session_data", "x"]))):
        if key.endswith(("_id", "_type")):
            session[key] = draw(st.text(max_size=6))
        elif key == "session_data":
            session[key] = draw(st.dictionaries(st.text(max_size=6), _json, max_size=3))
        else:
            session[key] = draw(_json)
    runs = draw(st.none() | st.lists(_ids, unique=True, max_size=4) | st.just("absent"))
    if runs != "absent":
        session["runs"] = None if runs is None else [{"run_id": r, "n": i} for i, r in enumerate(runs)]
    return session


@given(sessions(), st.booleans())
def test_parts_decode_to_the_document_without_runs_and_each_runs_bytes(session: dict[str, Any], runs: bool) -> None:
    rec = SessionRecord.build(session, now=1_700_000_000, seq=1, previous=None)
    head, run_bytes = decode_parts(rec.parts(include_runs=runs))
    expected = orjson.loads(rec.doc_bytes(include_runs=False))
    assert list(head.items()) == list(expected.items())  # the same keys, in the same order
    full = orjson.loads(rec.doc_bytes())
    if runs and full.get("runs") is not None:
        assert run_bytes is not None
        assert [orjson.loads(b) for b in run_bytes.values()] == full["runs"]
        assert list(run_bytes) == [r["run_id"] for r in full["runs"]]
    else:
        assert run_bytes is None


def test_parts_hold_a_copy_of_the_runs_mapping_not_the_records_own() -> None:
    """A reader iterates the runs after the kernel lock is released: a later run write must not reach its copy."""
    rec = SessionRecord.build({"session_id": "s", "runs": [{"run_id": "a"}]}, now=1, seq=1, previous=None)
    _, runs = decode_parts(rec.parts())
    assert runs is not None
    rec.put_run("b", b'{"run_id":"b"}')
    assert list(runs) == ["a"]
