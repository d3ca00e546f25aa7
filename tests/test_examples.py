"""The examples run as users run them (a subprocess with warnings as errors), so they cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("name", ["quickstart.py", "notebook_sync.py", "bring_your_own_dict.py"])
def test_example_runs(name: str) -> None:
    """The example exits 0 (each asserts its own outcome) and prints what it promises."""
    result = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / name)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
