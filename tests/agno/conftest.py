"""Fixtures for the Agno adapter tests: the three implementations behind one ``db`` fixture.

Each test module starts with ``pytest.importorskip("agno", ...)``, so without agno they are skipped with the
reason; the fixtures import agno only when a test asks for them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

# agno posts usage telemetry from a background thread unless told not to; these tests are offline.
# Set before any Agent, Team or Workflow is built (they read it on construction); subprocesses inherit it.
os.environ["AGNO_TELEMETRY"] = "false"

IMPLEMENTATIONS = ("agno", "ours_sync", "ours_async")


@pytest.fixture(params=IMPLEMENTATIONS)
async def db(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """Agno's own InMemoryDb, our sync InMemoryDb, or our AsyncInMemoryDb; called through ``maybe``."""
    from tests.agno.helpers import close_db, make_db

    database = make_db(request.param)
    try:
        yield database
    finally:
        await close_db(database)


@pytest.fixture
def kind(db: Any) -> str:
    """Which implementation the ``db`` fixture is: ``agno``, ``ours_sync`` or ``ours_async``."""
    if type(db).__module__.startswith("agno."):
        return "agno"
    return "ours_async" if type(db).__name__.startswith("Async") else "ours_sync"
