"""A griffe extension for the documentation build: Sphinx roles in docstrings become code spans.

The source docstrings cross-reference with Sphinx roles (``:class:`~aiomemdb.Event```), which mkdocstrings
would print literally; this shows them as ``Event`` in code style instead. It changes only what the docs
build reads, never the source.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|data|attr|mod|exc|obj|const):`([~!]?)([^`]+)`")


def _as_code(match: re.Match[str]) -> str:
    short, target = match.group(1) == "~", match.group(2).strip()
    if target.endswith(">") and "<" in target:  # :meth:`title <target>`
        return f"`{target.split('<', 1)[0].strip()}`"
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class SphinxRolesAsCode(griffe.Extension):
    """Rewrite Sphinx cross-reference roles in every docstring as Markdown code spans."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_as_code, obj.docstring.value)
