"""The id escape behind file names and S3 keys: reversible, and never a path."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from aiomemdb._codec import MAX_ID_LENGTH, id_from_object_name, object_name

ids = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=MAX_ID_LENGTH,
)


@given(ids)
def test_object_names_are_reversible_or_hashed(record_id: str) -> None:
    """Every short escaped name decodes back to its id; long ones are hashed, marked by '~' and never decoded."""
    name = object_name(record_id)
    if "~" in name:
        assert len(name) <= 180 + 65
        assert id_from_object_name(name) is None
    else:
        assert id_from_object_name(name) == record_id


@given(ids)
def test_object_names_are_plain_file_names(record_id: str) -> None:
    """An escaped name has no separator, is never '.' or '..', and fits a file system's 255-byte limit."""
    name = object_name(record_id)
    assert "/" not in name
    assert "\\" not in name
    assert name not in {".", ".."}
    assert len(name.encode()) + len(".json") <= 255
    assert set(name) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-%~")


def test_distinct_ids_get_distinct_names() -> None:
    """Ids that differ only in case, in escaped bytes or past the hash cut-off still get different names."""
    samples = ["a", "A", "%41", "..", "%2E%2E", "x" * 400, "x" * 399 + "y", "é", "e\u0301"]
    assert len({object_name(s) for s in samples}) == len(samples)


nan_values = st.sampled_from([float("nan"), float("inf"), float("-inf")])
json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["null", "x", ""])
)
documents = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["a", "null", "b"]), inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.sampled_from(["a", "b", "null", "c"]), documents, max_size=5), nan_values, st.data())
def test_a_non_finite_float_is_refused_among_any_nulls(doc: dict[str, object], bad: float, data: st.DataObject) -> None:
    """Wherever a NaN or infinity sits (top level or nested), beside top-level Nones, nested Nones and "null"
    strings, the encoder refuses it; the same document without it encodes (the top-level-None shortcut of
    ``dumps`` never hides one)."""
    import orjson
    import pytest

    from aiomemdb._codec import dumps
    from aiomemdb._exceptions import SerializationError

    assert orjson.loads(dumps(doc)) == doc
    path = data.draw(st.lists(st.sampled_from(["a", "b", "null"]), min_size=1, max_size=3))
    spoiled: dict[str, object] = {**doc, "none": None}
    node: dict[str, object] = spoiled
    for key in path[:-1]:
        child: dict[str, object] = {"n": None}
        node[key] = child
        node = child
    node[path[-1]] = bad
    with pytest.raises(SerializationError):
        dumps(spoiled)
