"""examples/agno_agent.py runs as a user runs it (a subprocess, warnings as errors), so it cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("agno", reason="agno is not installed (pip install 'aiomemdb[agno]')")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "agno_agent.py"


def test_agno_example_runs_offline() -> None:
    """The example exits 0 and both its agents answer from the stored history."""
    result = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLE)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "seed example: Your first question was: What is the capital of France?" in result.stdout
    assert "async agent after restart: Your first question was: What is the capital of France?" in result.stdout
    assert result.stdout.rstrip().endswith("OK")
