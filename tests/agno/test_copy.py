"""``fresh_copy``, the copier behind the run cache: a deep copy that shares only immutable leaves."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

pytest.importorskip("agno", reason="agno is not installed (pip install 'aiomemdb[agno]')")

from agno.metrics import MessageMetrics, RunMetrics
from agno.models.message import Message
from agno.run.agent import RunInput, RunOutput
from agno.run.base import RunStatus
from pydantic import BaseModel, ConfigDict, PrivateAttr

from aiomemdb.agno._copy import fresh_copy
from tests.agno.test_isolation import assert_distinct


def a_run() -> RunOutput:
    """A run with an input, messages, message metrics, run metrics and nested plain data."""
    return RunOutput(
        run_id="r1",
        content="hello",
        status=RunStatus.completed,
        input=RunInput(input_content="hi"),
        messages=[Message(role="user", content="hi"), Message(role="assistant", content="hello",
                                                              metrics=MessageMetrics(output_tokens=3))],
        metrics=RunMetrics(input_tokens=2, output_tokens=3, total_tokens=5),
        session_state={"nested": {"list": [1, 2]}},
        metadata={"tags": ["a"]},
    )  # fmt: skip


def test_a_copied_run_is_equal_and_shares_no_mutable_part() -> None:
    """A copy of a run serialises like the original, and no dict, list, dataclass or model is shared."""
    run = a_run()
    copied = fresh_copy(run)
    assert copied.to_dict() == run.to_dict()
    assert type(copied.messages[1].metrics) is MessageMetrics
    assert_distinct([run, copied], at_least=10)


@dataclasses.dataclass(slots=True)
class Slotted:
    """A dataclass with slots (no ``__dict__``)."""

    items: list[int]


class Hooked:
    """A class with its own ``__deepcopy__``, which must be used."""

    def __init__(self) -> None:
        self.copied = False

    def __deepcopy__(self, memo: dict[int, Any]) -> Hooked:
        new = Hooked()
        new.copied = True
        return new


class Extra(BaseModel):
    """A pydantic model with extra fields and a private attribute."""

    model_config = ConfigDict(extra="allow")
    items: list[int]
    _private: list[int] = PrivateAttr(default_factory=list)


def test_types_it_does_not_know_go_to_deepcopy() -> None:
    """Slots, tuples holding mutables and classes with copy hooks are copied by copy.deepcopy, never shared."""
    slotted = Slotted([1])
    assert fresh_copy(slotted) == slotted
    assert fresh_copy(slotted).items is not slotted.items
    pair = ([1], "x")
    assert fresh_copy(pair)[0] is not pair[0]
    assert fresh_copy(Hooked()).copied


def test_pydantic_extra_and_private_attributes_are_copied() -> None:
    """A model's fields, extra fields and private attributes are all fresh in the copy."""
    model = Extra(items=[1], more=[2])
    model._private.append(3)
    copied = fresh_copy(model)
    assert copied.model_dump() == model.model_dump()
    assert copied._private == [3]
    assert copied.items is not model.items
    assert copied.__pydantic_extra__["more"] is not model.__pydantic_extra__["more"]  # type: ignore[index]
    assert copied._private is not model._private
