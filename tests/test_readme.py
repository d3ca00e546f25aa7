"""README.md followed step by step, as a new user does: the opening commands, the install notes, then the tour,
the blocking sample, the Agno sample and the command-line block, in that order and in one directory.

(Each ```python block also runs on its own and passes mypy: tests/test_docs.py.)
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .test_docs import BLOCKS, ensure_bucket, s3_env

ROOT = Path(__file__).resolve().parent.parent
TEXT = (ROOT / "README.md").read_text()
EXAMPLE_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/python examples/quickstart.py"
TEST_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]' && .venv/bin/ruff check . && .venv/bin/mypy"
    " && .venv/bin/pytest"
)


def fences(language: str, text: str = TEXT) -> list[str]:
    """The bodies of the ```language blocks of ``text``, in order."""
    return [body.strip() for body in re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)]


def section(title: str) -> str:
    """The text of the README's ``## title`` section."""
    start = TEXT.index(f"\n## {title}\n")
    end = TEXT.find("\n## ", start + 1)
    return TEXT[start : end if end != -1 else None]


def test_the_two_opening_commands_come_first_exactly() -> None:
    """The first code on the page is the example command, then the test command (.ci/run's), both unchanged."""
    assert fences("bash")[:2] == [EXAMPLE_COMMAND, TEST_COMMAND]
    assert TEXT.index(EXAMPLE_COMMAND) < TEXT.index(TEST_COMMAND) < TEXT.index("```python")
    assert (ROOT / "examples" / "quickstart.py").is_file()  # tests/test_examples.py runs it


def test_the_agno_section_says_how_to_install_agno_before_its_sample() -> None:
    """The Agno section names the agno extra, for pip and for a checkout, before its first sample."""
    agno = section("Agno")
    first_sample = agno.index("```python")
    assert "pip install 'aiomemdb[agno]'" in agno[:first_sample]
    assert ".venv/bin/pip install -q -e '.[agno]'" in agno[:first_sample]


def test_the_command_line_section_puts_aiomemdb_on_path() -> None:
    """The command-line block first activates the venv (or names .venv/bin/aiomemdb), and says S3 needs its extra."""
    cli = section("Command line")
    (block,) = fences("bash", cli)
    assert block.splitlines()[0].startswith("source .venv/bin/activate")
    assert ".venv/bin/aiomemdb" in cli
    assert "'.[s3]'" in cli


def test_a_newcomer_follows_the_readme_in_one_directory(tmp_path: Path, s3_endpoint: str) -> None:
    """In one fresh directory, the README's samples run in order and its command-line block then runs as written."""
    if sys.prefix == sys.base_prefix:
        pytest.skip("the README's command line activates .venv: run the tests from the virtual environment")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    environ = s3_env(s3_endpoint)
    ensure_bucket(s3_endpoint)
    samples = [b for b in BLOCKS if b.page == "README.md"]
    assert len(samples) == 3  # the tour, the blocking sample, Agno
    for block in samples:
        result = subprocess.run(
            [sys.executable, "-W", "error", "-c", block.code],
            cwd=tmp_path,
            env=environ,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"README.md line {block.line}:\n{result.stderr}"
    assert (tmp_path / "sessions" / "v1").is_dir()
    assert (tmp_path / "my_sessions.json").is_file()

    (commands,) = fences("bash", section("Command line"))
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", commands],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"^s1\s+ada\s", result.stdout, flags=re.M), result.stdout  # ls ./sessions --user ada
    assert '"run_id": "r1"' in result.stdout  # show ./sessions s1 --runs 3
    assert (tmp_path / "backup.jsonl").read_text().count("\n") == 2  # export: the session and the memory
    assert "imported 1 records (sessions: 1) from my_sessions.json (seed blob)" in result.stdout
    assert "ok: all " in result.stdout  # verify s3://my-bucket/agents
